//! Invites across servers, and leaving rooms this server is not in.
//!
//! - Our user invites a user of another server: the invite is built and authorized as any
//!   event of ours, sent to the invitee's server (`/invite` v2) with the room's stripped state
//!   and stored with that server's signature once it accepted it.
//! - Another server invites our user (`/invite` v2): we check and countersign the invite; when
//!   no user of ours is in the room, we keep the invite (with the stripped state it came with)
//!   in a stub of the room that holds nothing else, so that `/sync` shows it.
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
#[derive(Debug)]
pub(crate) enum Countersign<'a> {
    /// An invite of a user of `server`.
    Invite {
        /// Our federation client.
        client: &'a FederationClient,
        /// The invitee's server.
        server: &'a str,
    },
}

/// The state types a stripped state carries (the spec's recommendation).
const STRIPPED_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

fn stripped(pdu: &Pdu) -> Value {
    let mut event = Object::new();
    event.insert("type", pdu.kind());
    event.insert("state_key", pdu.state_key().unwrap_or_default());
    event.insert("sender", pdu.sender());
    event.insert("content", pdu.content().clone());
    Value::Object(event)
}

impl Rooms {
    /// Has `countersign`'s server sign an authorized event.
    pub(super) async fn countersign(
        &self,
        countersign: &Countersign<'_>,
        mut authorized: Authorized,
        info: &matrix_storage::RoomInfo,
    ) -> Result<Authorized, ApiError> {
        let Countersign::Invite { client, server } = countersign;
        let pdu = authorized.pdu();
        let mut state = Vec::new();
        if let Some(snapshot) = info.current_state {
            for kind in STRIPPED_TYPES {
                if let Some(event) = self.state_pdu(snapshot, kind, "").await? {
                    state.push(stripped(&event));
                }
            }
            if let Some(member) = self.state_pdu(snapshot, "m.room.member", pdu.sender()).await? {
                state.push(stripped(&member));
            }
        }
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
        authorized.add_signatures(server, signed)?;
        Ok(authorized)
    }

    /// `sender` invites `target`, a user of another server.
    pub(crate) async fn invite_remote(
        &self,
        client: &FederationClient,
        room_id: &str,
        sender: &UserId,
        draft: super::Draft,
        target_server: &str,
    ) -> Result<(), ApiError> {
        let countersign = Countersign::Invite { client, server: target_server };
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
        matrix_core::signing::sign_json(&mut json, self.server_name().as_str(), self.key());
        let signed = Pdu::with_event_id(json.clone(), pdu.event_id().to_owned(), rules);
        let known = self.rules(room_id).await?.is_some();
        if !(known && self.is_resident(room_id).await?) {
            let mut budget = MAX_INVITE_STATE_BYTES;
            let state: Vec<Value> = invite_state
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
                .collect();
            self.store_stub(rules, signed, Some(state)).await?;
        }
        Ok(json)
    }

    /// Keeps one membership event of ours (an invite we received, or our leave) as the whole
    /// state of a room no user of ours is in; an invite keeps its stripped state in
    /// `unsigned.invite_room_state`.
    async fn store_stub(
        &self,
        rules: &'static RoomVersionRules,
        pdu: Pdu,
        invite_state: Option<Vec<Value>>,
    ) -> Result<Arc<Pdu>, ApiError> {
        let room_id = pdu.room_id().to_owned();
        let pdu = match invite_state {
            Some(state) => {
                let mut json = pdu.json().clone();
                json.object_entry("unsigned").insert("invite_room_state", state);
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
        let leave = self.sign_template(&template, rules, room_id, user, "leave")?;
        client.send_leave(server, room_id, leave.event_id(), leave.json()).await?;
        self.store_stub(rules, leave, None).await?;
        Ok(())
    }
}

impl Rooms {
    /// The stripped state of a room's current state (what an invitee or knocker sees of it),
    /// with `user`'s own member event.
    pub(crate) async fn stripped_state(
        &self,
        room_id: &str,
        user: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let mut state = Vec::new();
        if let Some(snapshot) = info.current_state {
            for kind in STRIPPED_TYPES {
                if let Some(event) = self.state_pdu(snapshot, kind, "").await? {
                    state.push(stripped(&event));
                }
            }
            if let Some(member) = self.state_pdu(snapshot, "m.room.member", user).await? {
                state.push(stripped(&member));
            }
        }
        Ok(state)
    }
}
