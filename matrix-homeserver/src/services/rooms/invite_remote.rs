//! Invites across servers, and leaving rooms this server is not in.
//!
//! - Our user invites a user of another server: the invite is built and authorized as any
//!   event of ours, sent to the invitee's server (`/invite` v2) with the room's stripped state
//!   and stored with that server's signature once it accepted it. The answer must be the same
//!   event (everything but `signatures` and `unsigned` equal) and the invitee's server's
//!   signature on it must verify with its key (fetched as for any event); otherwise the invite
//!   is refused and nothing is stored.
//! - Another server invites our user (`/invite` v2): we check and countersign the invite; when
//!   no user of ours is in the room, we keep the invite (with the stripped state it came with)
//!   in a stub of the room that holds nothing else, so that `/sync` shows it.
//!
//! **Stripped state over federation** (spec v1.16, MSC4311). The `invite_room_state` we send
//! and the `knock_room_state` we answer are full PDUs (without `unsigned`), the room's
//! `m.room.create` among them; clients still get the stripped form (`/sync` strips them).
//! What we receive may be either form (older servers, and Synapse up to at least 1.157, send
//! the stripped form, Synapse the create event of a version 12 room as a PDU): an entry in
//! PDU form (it has `auth_events`, `prev_events`, `hashes` or `signatures`) must be a valid
//! event of the invite's room (for version 12 the create event's hash is the room id) with
//! valid signatures, or the invite is refused with 400 `M_MISSING_PARAM`. A stripped state
//! without the create event is still taken, as the spec's migration allows.
//! - Our user rejects such an invite (or leaves a room we hold only a stub of): `make_leave`
//!   and `send_leave` through the inviting server.

use std::sync::Arc;

use matrix_core::{Object, Pdu, RoomVersionRules, Value};
use matrix_federation::client::FederationClient;
use matrix_federation::keys::KeyProvider;
use matrix_storage::{ChangeSet, EventStatus, NewSnapshot, RoomChanges, SnapshotRef};
use ruma::UserId;

use super::Rooms;
use super::authorize::Authorized;
use crate::error::ApiError;

/// The most stripped state events kept with an invite.
const MAX_INVITE_STATE: usize = 64;

/// The most bytes of stripped state kept with an invite (each event counted in canonical
/// JSON; an event of more than a sixteenth of it is left out).
const MAX_INVITE_STATE_BYTES: usize = 256 << 10;

/// An `/invite` v2 request.
#[derive(Debug)]
pub(crate) struct ReceivedInvite<'a> {
    /// The room, from the path.
    pub(crate) room_id: &'a str,
    /// The event id, from the path.
    pub(crate) event_id: &'a str,
    /// The room's version.
    pub(crate) room_version: &'a str,
    /// The invite, signed by the inviter's server.
    pub(crate) event: Object,
    /// The room's stripped state.
    pub(crate) invite_state: Vec<Value>,
}

/// Another server's signature an event needs before it is stored.
pub(crate) enum Countersign<'a> {
    /// An invite of a user of `server`.
    Invite {
        /// Our federation client.
        client: &'a FederationClient,
        /// Where the invitee's server's keys are found.
        keys: &'a dyn KeyProvider,
        /// The invitee's server.
        server: &'a str,
    },
}

impl std::fmt::Debug for Countersign<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Countersign::Invite { server, .. } = self;
        f.debug_struct("Countersign::Invite").field("server", server).finish_non_exhaustive()
    }
}

/// The state types a stripped state carries (the spec's recommendation; the create event
/// is required since v1.16).
const STRIPPED_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// A state event as the stripped state we send over federation carries it: the full PDU,
/// without `unsigned` (spec v1.16).
fn as_state_pdu(pdu: &Pdu) -> Value {
    let mut json = pdu.json().clone();
    json.remove("unsigned");
    Value::Object(json)
}

/// The entries of a received stripped state (an invite's or a knock's) that are kept: objects
/// with a type, at most [`MAX_INVITE_STATE`] of them and [`MAX_INVITE_STATE_BYTES`] in all.
pub(super) fn bounded_stripped_state(state: Vec<Value>) -> Vec<Value> {
    let mut budget = MAX_INVITE_STATE_BYTES;
    state
        .into_iter()
        .filter(|v| {
            let Some(event) = v.as_object().filter(|o| o.get_str("type").is_some()) else {
                return false;
            };
            let size = event.canonical_len();
            let fits = size <= MAX_INVITE_STATE_BYTES / 16 && size <= budget;
            if fits {
                budget -= size;
            }
            fits
        })
        .take(MAX_INVITE_STATE)
        .collect()
}

/// Whether a stripped state entry is in PDU form (what v1.16 servers send) rather than the
/// stripped form (`type`, `state_key`, `sender`, `content` only).
fn is_pdu_form(entry: &Object) -> bool {
    ["auth_events", "prev_events", "hashes", "signatures"].iter().any(|k| entry.contains_key(k))
}

/// Checks the stripped state of an invite to `room_id`: each entry in PDU form must be a
/// valid event of that room (a version 12 create event's hash is the room id) whose
/// signatures verify; stripped entries are taken as they are. Refused with 400
/// `M_MISSING_PARAM`, as the spec has it.
pub(super) async fn check_invite_state(
    keys: &dyn KeyProvider,
    rules: &'static RoomVersionRules,
    room_id: &str,
    state: &[Value],
) -> Result<(), ApiError> {
    check_stripped_state(keys, rules, room_id, state)
        .await?
        .map_err(|why| ApiError::missing_param(format!("invite_room_state: {why}")))
}

/// [`check_invite_state`] for any stripped state: `Ok(Err(why))` when it is refused.
pub(super) async fn check_stripped_state(
    keys: &dyn KeyProvider,
    rules: &'static RoomVersionRules,
    room_id: &str,
    state: &[Value],
) -> Result<Result<(), String>, ApiError> {
    let refused = |why: String| why;
    let mut pdus = Vec::new();
    for entry in state.iter().filter_map(Value::as_object).filter(|e| is_pdu_form(e)) {
        let pdu = match Pdu::from_object(entry.clone(), rules) {
            Ok(pdu) => pdu,
            Err(e) => return Ok(Err(refused(format!("an event is not valid: {e}")))),
        };
        if pdu.room_id() != room_id {
            return Ok(Err(refused(format!(
                "the {} event {} is of another room",
                pdu.kind(),
                pdu.event_id()
            ))));
        }
        pdus.push(pdu);
    }
    let sent: Vec<Object> = pdus.iter().map(|p| p.json().clone()).collect();
    let verified = super::join_remote::verify_all(keys, rules, pdus).await?;
    // An event whose content hash is wrong comes back redacted: it was changed, refused too.
    let all_valid = verified.len() == sent.len()
        && verified.iter().zip(&sent).all(|(checked, sent)| checked.json() == sent);
    if !all_valid {
        return Ok(Err(refused("an event fails its signature checks".to_owned())));
    }
    Ok(Ok(()))
}

/// The most key ids of the invitee's server looked up for its countersignature.
const MAX_COUNTERSIGN_KEYS: usize = 4;

/// Checks the invitee's server's answer to our invite: `signed` must be our event `sent`
/// (everything but `signatures` and `unsigned` equal, so the same content hash and redacted
/// form) and carry a signature of `server` that verifies with its key. A refusal is a 502:
/// the invitee's server misbehaved, nothing the client can change.
async fn check_countersigned(
    keys: &dyn KeyProvider,
    server: &str,
    sent: &Pdu,
    signed: &Object,
) -> Result<(), ApiError> {
    let refused =
        |why: String| ApiError::bad_gateway(format!("{server}'s answer to the invite {why}"));
    let unsigned_form = |event: &Object| {
        let mut event = event.clone();
        event.remove("signatures");
        event.remove("unsigned");
        event
    };
    if unsigned_form(signed) != unsigned_form(sent.json()) {
        return Err(refused("is not the event we sent".to_owned()));
    }
    let rules = sent.rules();
    let valid_at = if rules.enforce_key_validity { sent.origin_server_ts() } else { i64::MIN };
    let mut ring = matrix_core::KeyRing::new();
    let key_ids: Vec<&str> = signed
        .get_object("signatures")
        .and_then(|s| s.get_object(server))
        .map(|by_server| by_server.keys().take(MAX_COUNTERSIGN_KEYS).collect())
        .unwrap_or_default();
    for key_id in key_ids {
        match keys.public_key(server, key_id, valid_at).await {
            Ok(Some(key)) => ring.insert(server, key_id, key),
            Ok(None) => {}
            Err(matrix_federation::FederationError::Storage(e)) => return Err(e.into()),
            Err(e) => tracing::warn!("federation: keys of {server}: {e}"),
        }
    }
    let redacted = matrix_core::redaction::redact(signed, rules);
    matrix_core::signing::verify_json(&redacted, server, &ring)
        .map_err(|e| refused(format!("has no valid signature of its server: {e}")))
}

impl Rooms {
    /// Has `countersign`'s server sign an authorized event.
    pub(super) async fn countersign(
        &self,
        countersign: &Countersign<'_>,
        mut authorized: Authorized,
        info: &matrix_storage::RoomInfo,
    ) -> Result<Authorized, ApiError> {
        let Countersign::Invite { client, keys, server } = countersign;
        let pdu = authorized.pdu();
        let state = self.state_pdus(info.current_state, pdu.sender()).await?;
        let answer = client
            .invite(
                server,
                pdu.room_id(),
                pdu.event_id(),
                pdu.rules().id,
                pdu.json().clone(),
                state,
            )
            .await
            .map_err(|e| match e {
                matrix_federation::FederationError::Status { status: 403, body, .. } => {
                    ApiError::forbidden(format!("{server} refused the invite: {body}"))
                }
                other => other.into(),
            })?;
        let signed = answer
            .get_object("event")
            .ok_or_else(|| ApiError::unknown(format!("{server} answered no invite event")))?;
        check_countersigned(*keys, server, authorized.pdu(), signed).await?;
        authorized.add_signatures(server, signed)?;
        Ok(authorized)
    }

    /// `sender` invites `target`, a user of another server.
    pub(crate) async fn invite_remote(
        &self,
        client: &FederationClient,
        keys: &dyn KeyProvider,
        room_id: &str,
        sender: &UserId,
        draft: super::Draft,
        target_server: &str,
    ) -> Result<(), ApiError> {
        let countersign = Countersign::Invite { client, keys, server: target_server };
        self.append_recording(room_id, sender, draft, None, Some(countersign)).await?;
        Ok(())
    }

    /// `/invite` v2 from `origin`: checks an invite of one of our users, signs it, and keeps it
    /// when no user of ours is in the room. Answers the event with our signature.
    pub(crate) async fn invited_from(
        &self,
        keys: &dyn KeyProvider,
        origin: &str,
        invite: ReceivedInvite<'_>,
    ) -> Result<Object, ApiError> {
        let ReceivedInvite { room_id, event_id, room_version, event, invite_state } = invite;
        let rules = RoomVersionRules::get(room_version)
            .ok_or_else(|| ApiError::incompatible_room_version(room_version))?;
        // A room we know keeps its version; its ACL may deny the inviting server.
        if let Some(known) = self.rules(room_id).await? {
            if known.id != rules.id {
                return Err(ApiError::bad_json("the room's version is not the one we know"));
            }
            if !self.server_allowed(room_id, origin).await? {
                return Err(ApiError::forbidden("the room's server ACL denies your server"));
            }
        }
        let pdu = Pdu::from_object(event, rules)
            .map_err(|e| ApiError::bad_json(format!("the invite is not a valid event: {e}")))?;
        let target = pdu.state_key().unwrap_or_default().to_owned();
        let is_invite =
            pdu.kind() == "m.room.member" && pdu.content().get_str("membership") == Some("invite");
        if !is_invite || pdu.room_id() != room_id || pdu.event_id() != event_id {
            return Err(ApiError::bad_json("the event is not the invite the path names"));
        }
        if pdu.sender().split_once(':').map(|(_, s)| s) != Some(origin) {
            return Err(ApiError::forbidden("the inviter is not of the requesting server"));
        }
        let target_id = <&UserId>::try_from(target.as_str())
            .map_err(|_| ApiError::bad_json("the invitee is not a user id"))?;
        if target_id.server_name().as_str() != self.server_name().as_str()
            || self.storage().user(&target).await?.is_none()
        {
            return Err(ApiError::not_found("the invitee is not a user of this server"));
        }
        // The inviter's server must have signed it, with a valid content hash.
        let mut ring = matrix_core::KeyRing::new();
        let valid_at = if rules.enforce_key_validity { pdu.origin_server_ts() } else { i64::MIN };
        if let Some(signatures) =
            pdu.json().get_object("signatures").and_then(|s| s.get_object(origin))
        {
            for key_id in signatures.keys().take(8) {
                if let Some(key) = keys.public_key(origin, key_id, valid_at).await? {
                    ring.insert(origin, key_id, key);
                }
            }
        }
        match matrix_core::signing::verify_event(&pdu, &ring, rules) {
            Ok(matrix_core::Verified::All) => {}
            Ok(_) => return Err(ApiError::forbidden("the invite's content hash is wrong")),
            Err(e) => return Err(ApiError::forbidden(format!("the invite's signature: {e}"))),
        }
        let mut json = pdu.json().clone();
        matrix_core::signing::sign_event(&mut json, self.server_name().as_str(), self.key(), rules);
        let signed = Pdu::with_event_id(json.clone(), pdu.event_id().to_owned(), rules);
        let known = self.rules(room_id).await?.is_some();
        if !(known && self.is_resident(room_id).await?) {
            let state = bounded_stripped_state(invite_state);
            check_invite_state(keys, rules, room_id, &state).await?;
            self.store_stub(rules, signed, Some(("invite_room_state", state))).await?;
        }
        Ok(json)
    }

    /// Keeps one membership event of ours (an invite we received, our knock, or our leave) as
    /// the whole state of a room no user of ours is in; an invite keeps its stripped state in
    /// `unsigned.invite_room_state`, a knock in `unsigned.knock_room_state` (`stripped`: the
    /// field and the state).
    pub(super) async fn store_stub(
        &self,
        rules: &'static RoomVersionRules,
        pdu: Pdu,
        stripped: Option<(&'static str, Vec<Value>)>,
    ) -> Result<Arc<Pdu>, ApiError> {
        let room_id = pdu.room_id().to_owned();
        let pdu = match stripped {
            Some((field, state)) => {
                let mut json = pdu.json().clone();
                json.object_entry("unsigned").insert(field, state);
                Pdu::with_event_id(json, pdu.event_id().to_owned(), rules)
            }
            None => pdu,
        };
        let user = pdu.state_key().unwrap_or_default().to_owned();
        let membership = pdu.content().get_str("membership").unwrap_or("leave").to_owned();
        let lock = self.room_lock(&room_id);
        let _guard = lock.lock().await;
        if self.storage().event(pdu.event_id()).await?.is_some() {
            return self.pdu(pdu.event_id()).await?.ok_or_else(ApiError::room_not_found);
        }
        let existing = self.storage().room(&room_id).await?;
        let mut changes = ChangeSet::new();
        changes.snapshot = Some(NewSnapshot {
            parent: existing.as_ref().and_then(|i| i.current_state),
            changes: vec![(
                "m.room.member".to_owned(),
                user.clone(),
                Some(pdu.event_id().to_owned()),
            )],
        });
        changes.events.push(super::new_event(
            &pdu,
            EventStatus::Accepted,
            true,
            Some(SnapshotRef::New),
        ));
        super::relations::index(&mut changes, &pdu, EventStatus::Accepted, true);
        let mut room = RoomChanges {
            room_id: room_id.clone(),
            current_state: Some(SnapshotRef::New),
            forward_extremities: Some(vec![pdu.event_id().to_owned()]),
            memberships: vec![(user, membership)],
            ..RoomChanges::default()
        };
        super::built_on_or_created(&mut room, existing.as_ref(), rules);
        changes.rooms.push(room);
        let (applied, durable) = self.storage().apply_ordered(changes).await?;
        durable.await?;
        self.versions.insert(room_id.clone(), rules);
        let pdu = Arc::new(pdu);
        self.events.insert(pdu.event_id().to_owned(), pdu.clone());
        if let Some(snapshot) = applied.snapshot {
            self.snapshots_of.insert(pdu.event_id().to_owned(), snapshot);
        }
        if let Some(pos) = applied.stream.first().copied() {
            self.notify(&pdu, pos).await;
        }
        self.ephemeral.event_appended(&room_id, &pdu, applied.stream.first().copied()).await;
        Ok(pdu)
    }

    /// Our user leaves (or rejects an invite to) a room no user of ours is in, through
    /// `server` (the inviter's).
    pub(crate) async fn leave_remote(
        &self,
        client: &FederationClient,
        room_id: &str,
        user: &UserId,
        server: &str,
    ) -> Result<(), ApiError> {
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let template = client.make_leave(server, room_id, user.as_str()).await?;
        let leave = self.sign_template(&template, rules, room_id, user, "leave", None)?;
        client.send_leave(server, room_id, leave.event_id(), leave.json()).await?;
        self.store_stub(rules, leave, None).await?;
        Ok(())
    }
}

impl Rooms {
    /// The stripped state of a room's current state as we send it over federation (what an
    /// invitee or knocker sees of it): full PDUs, the create event first, with `user`'s own
    /// member event.
    pub(crate) async fn federation_stripped_state(
        &self,
        room_id: &str,
        user: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        self.state_pdus(info.current_state, user).await
    }

    /// The events of [`STRIPPED_TYPES`] in `snapshot`, and `user`'s member event, as PDUs.
    async fn state_pdus(
        &self,
        snapshot: Option<matrix_storage::SnapshotId>,
        user: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let mut state = Vec::new();
        let Some(snapshot) = snapshot else { return Ok(state) };
        for kind in STRIPPED_TYPES {
            if let Some(event) = self.state_pdu(snapshot, kind, "").await? {
                state.push(as_state_pdu(&event));
            }
        }
        if let Some(member) = self.state_pdu(snapshot, "m.room.member", user).await? {
            state.push(as_state_pdu(&member));
        }
        Ok(state)
    }
}
