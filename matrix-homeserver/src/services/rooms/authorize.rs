//! The one authorization path for events our users cause.
//!
//! [`Rooms::authorize`] builds an event from a [`Draft`] under the room's lock, hashes and
//! signs it, and checks it: first the room version's authorization rules (matrix-core), then
//! the rules the spec leaves to the server. Only it makes an [`Authorized`], and storing an
//! event takes only an [`Authorized`], so no handler can store an event that skipped a check.
//!
//! The server's rules:
//! - a redaction of another user's event needs the `redact` power level, whatever the room
//!   version (from v3 the authorization rules leave this to the server), and names an event of
//!   the same room;
//! - `m.room.canonical_alias` may name only aliases that exist and point at this room
//!   (`M_BAD_ALIAS`).
//!
//! Power-level changes beyond the sender's own level and everything about memberships are in
//! the authorization rules themselves.

use std::sync::Arc;

use matrix_core::json::{Object, Value};
use matrix_core::room_version::{EventFormat, EventIdFormat};
use matrix_core::{Pdu, RoomVersionRules, auth};
use matrix_storage::{ExpectedRoom, RoomInfo, SnapshotId};
use ruma::UserId;

use super::{Draft, Level, MAX_PREV_EVENTS, Rooms, now_ms, pdu_error};
use crate::error::ApiError;

/// An event that passed every check, ready to store. Only [`Rooms::authorize`] and
/// [`Rooms::authorize_create`] make one.
#[derive(Debug)]
pub(crate) struct Authorized {
    pdu: Pdu,
    auth_ids: Vec<String>,
    prev_ids: Vec<String>,
    /// The room's state before the event (`None` for a create event).
    state_before: Option<SnapshotId>,
    /// The event of this room it redacts, when it is a redaction of a stored event.
    redacts: Option<String>,
    /// What of the room it was built on (`None` for a create event): it is stored only if
    /// the room is still that (another process may have appended meanwhile).
    built_on: Option<ExpectedRoom>,
}

impl Authorized {
    pub(crate) fn pdu(&self) -> &Pdu {
        &self.pdu
    }
    pub(crate) fn auth_ids(&self) -> &[String] {
        &self.auth_ids
    }
    pub(crate) fn prev_ids(&self) -> &[String] {
        &self.prev_ids
    }
    pub(crate) fn state_before(&self) -> Option<SnapshotId> {
        self.state_before
    }
    pub(crate) fn redacts(&self) -> Option<&str> {
        self.redacts.as_deref()
    }
    pub(crate) fn built_on(&self) -> Option<&ExpectedRoom> {
        self.built_on.as_ref()
    }
    pub(crate) fn into_pdu(self) -> Pdu {
        self.pdu
    }
    /// Adds the signatures of `server` from `signed`, the same event as another server
    /// returned it (an invitee's server signs the invite). Nothing else of `signed` is taken.
    pub(crate) fn add_signatures(&mut self, server: &str, signed: &Object) -> Result<(), ApiError> {
        let theirs = signed
            .get_object("signatures")
            .and_then(|s| s.get_object(server))
            .ok_or_else(|| ApiError::unknown(format!("{server} did not sign the event")))?
            .clone();
        let rules = self.pdu.rules();
        let mut json = self.pdu.json().clone();
        json.object_entry("signatures").insert(server, theirs);
        self.pdu = Pdu::with_event_id(json, self.pdu.event_id().to_owned(), rules);
        Ok(())
    }
}

/// An event built on a room's state, before it is hashed and signed ([`Rooms::build`]).
#[derive(Debug)]
pub(crate) struct Built {
    /// The event, without hashes, signatures or (room versions 1-2) event id.
    pub(crate) json: Object,
    /// Its auth events.
    pub(crate) auth_pdus: Vec<Arc<Pdu>>,
    /// Their ids.
    pub(crate) auth_ids: Vec<String>,
    /// Its prev events.
    pub(crate) prev_ids: Vec<String>,
    /// The room's create event, for room versions whose room id is its hash.
    pub(crate) create: Option<Arc<Pdu>>,
}

/// Proof that the caller holds a room's lock (events are built and stored under it).
#[derive(Debug)]
pub(crate) struct RoomGuard<'a> {
    pub(crate) room_id: &'a str,
    pub(crate) _guard: tokio::sync::MutexGuard<'a, ()>,
}

impl Rooms {
    /// Builds `draft` as an event of `sender` in the room `info` describes and checks it.
    pub(crate) async fn authorize(
        &self,
        guard: &RoomGuard<'_>,
        info: &RoomInfo,
        rules: &'static RoomVersionRules,
        sender: &UserId,
        draft: Draft,
    ) -> Result<Authorized, ApiError> {
        let room_id = guard.room_id;
        if draft.kind.contains('\0') || draft.state_key.as_deref().is_some_and(|k| k.contains('\0'))
        {
            return Err(ApiError::invalid_param("a NUL character in the event type or state key"));
        }
        let snapshot =
            info.current_state.ok_or_else(|| ApiError::unknown("the room has no state"))?;
        let built = self.build(room_id, info, snapshot, rules, sender, draft).await?;
        let Built { json, auth_pdus, auth_ids, prev_ids, create } = built;
        let pdu = self.seal(json, rules)?;

        let auth_refs: Vec<&Pdu> = auth_pdus.iter().map(|p| p.as_ref()).collect();
        auth::check_with_auth_events(rules, &pdu, &auth_refs, create.as_deref())
            .map_err(|rejection| ApiError::forbidden(format!("not allowed: {rejection}")))?;
        let redacts = self.server_rules(rules, room_id, snapshot, &pdu).await?;

        let built_on = ExpectedRoom {
            current_state: info.current_state,
            forward_extremities: info.forward_extremities.clone(),
        };
        Ok(Authorized {
            pdu,
            auth_ids,
            prev_ids,
            state_before: Some(snapshot),
            redacts,
            built_on: Some(built_on),
        })
    }

    /// The event `sender` would send with `draft` on the room's current state `snapshot`:
    /// its JSON (not yet hashed or signed), its auth events (what the selection algorithm
    /// picks from the state) and its prev events (the forward extremities).
    pub(crate) async fn build(
        &self,
        room_id: &str,
        info: &RoomInfo,
        snapshot: SnapshotId,
        rules: &'static RoomVersionRules,
        sender: &UserId,
        draft: Draft,
    ) -> Result<Built, ApiError> {
        let mut json = Object::new();
        json.insert("type", draft.kind.as_str());
        json.insert("sender", sender.as_str());
        json.insert("room_id", room_id);
        json.insert("origin_server_ts", now_ms());
        if let Some(state_key) = &draft.state_key {
            json.insert("state_key", state_key.as_str());
        }
        if let Some(redacts) = &draft.redacts
            && !rules.redacts_in_content
        {
            json.insert("redacts", redacts.as_str());
        }
        if rules.event_format == EventFormat::V1 {
            json.insert("origin", self.server_name().as_str());
        }
        json.insert("content", draft.content);

        // The auth events: what the selection algorithm picks, from the current state.
        let provisional = Pdu::with_event_id(json.clone(), String::new(), rules);
        let mut auth_pdus: Vec<Arc<Pdu>> = Vec::new();
        let mut types = auth::auth_types_for_event(rules, &provisional);
        // A user's own membership change names their member event twice.
        let mut seen = std::collections::HashSet::new();
        types.retain(|t| seen.insert(t.clone()));
        for (kind, state_key) in types {
            if let Some(pdu) = self.state_pdu(snapshot, &kind, &state_key).await? {
                auth_pdus.push(pdu);
            }
        }
        let create = if rules.room_id_from_create_event {
            self.state_pdu(snapshot, "m.room.create", "").await?
        } else {
            None
        };

        let mut depth = 0;
        let mut prev_ids = Vec::new();
        for id in info.forward_extremities.iter().take(MAX_PREV_EVENTS) {
            if let Some(prev) = self.pdu(id).await? {
                depth = depth.max(prev.depth());
            }
            prev_ids.push(id.clone());
        }
        let auth_ids: Vec<String> = auth_pdus.iter().map(|p| p.event_id().to_owned()).collect();
        json.insert("auth_events", event_refs(rules, &auth_ids));
        json.insert("prev_events", event_refs(rules, &prev_ids));
        json.insert("depth", depth.saturating_add(1));
        Ok(Built { json, auth_pdus, auth_ids, prev_ids, create })
    }

    /// Seals and checks a new room's create event.
    pub(crate) fn authorize_create(
        &self,
        json: Object,
        rules: &'static RoomVersionRules,
    ) -> Result<Authorized, ApiError> {
        let pdu = self.seal(json, rules)?;
        auth::check(rules, &pdu, &auth::EventList::<Pdu>(Vec::new()))
            .map_err(|rejection| ApiError::bad_json(format!("not a valid room: {rejection}")))?;
        Ok(Authorized {
            pdu,
            auth_ids: Vec::new(),
            prev_ids: Vec::new(),
            state_before: None,
            redacts: None,
            built_on: None,
        })
    }

    /// The rules the authorization rules leave to the server; answers the stored event of
    /// this room that a redaction redacts.
    async fn server_rules(
        &self,
        rules: &'static RoomVersionRules,
        room_id: &str,
        snapshot: SnapshotId,
        pdu: &Pdu,
    ) -> Result<Option<String>, ApiError> {
        let sender = <&UserId>::try_from(pdu.sender())
            .map_err(|_| ApiError::unknown("an event of ours has an invalid sender"))?;
        match pdu.kind() {
            "m.room.redaction" => {
                let target_id = pdu
                    .redacts()
                    .ok_or_else(|| ApiError::bad_json("a redaction names the event it redacts"))?;
                let target = match self.pdu(target_id).await? {
                    Some(target) if target.room_id() == room_id => Some(target),
                    Some(_) => {
                        return Err(ApiError::forbidden("the redacted event is of another room"));
                    }
                    None => None,
                };
                // One's own events may always be redacted; anyone else's (or an event this
                // server does not have) needs the `redact` level.
                let own = target.as_ref().is_some_and(|t| t.sender() == pdu.sender());
                if !own && !self.has_level(rules, snapshot, sender, Level::Redact).await? {
                    return Err(ApiError::forbidden("you may not redact other users' events here"));
                }
                Ok(target.map(|t| t.event_id().to_owned()))
            }
            "m.room.canonical_alias" if pdu.state_key() == Some("") => {
                self.check_canonical_alias(room_id, pdu.content()).await?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// `alias` and `alt_aliases` must be valid aliases of this server that point at the room
    /// (aliases of other servers cannot be checked without federation, so they are refused).
    async fn check_canonical_alias(&self, room_id: &str, content: &Object) -> Result<(), ApiError> {
        let aliases = aliases_named(content)?;
        for alias in aliases {
            let parsed = ruma::RoomAliasId::parse(alias)
                .map_err(|e| ApiError::invalid_param(format!("{alias:?} is not an alias: {e}")))?;
            if parsed.server_name().as_str() != self.server_name().as_str() {
                return Err(ApiError::bad_alias(format!(
                    "{alias} is of another server, which cannot be checked without federation"
                )));
            }
            let record = self.storage().alias(alias).await?;
            if record.is_none_or(|r| r.room_id != room_id) {
                return Err(ApiError::bad_alias(format!("{alias} does not point at this room")));
            }
        }
        Ok(())
    }

    /// Hashes, signs and format-checks an event object.
    pub(super) fn seal(
        &self,
        mut json: Object,
        rules: &'static RoomVersionRules,
    ) -> Result<Pdu, ApiError> {
        if rules.event_id_format == EventIdFormat::Opaque {
            json.insert("event_id", self.opaque_event_id()?);
        }
        matrix_core::signing::hash_and_sign_event(
            &mut json,
            self.server_name().as_str(),
            self.key(),
            rules,
        );
        Pdu::from_object(json, rules).map_err(pdu_error)
    }

    /// A new event id for room versions whose ids are not hashes (1 and 2).
    fn opaque_event_id(&self) -> Result<String, ApiError> {
        let mut bytes = [0u8; 18];
        getrandom::fill(&mut bytes).map_err(|_| ApiError::unknown("no randomness available"))?;
        Ok(format!("${}:{}", matrix_core::b64::encode_url_safe(bytes), self.server_name()))
    }
}

/// `auth_events` or `prev_events` as the room version writes them (versions 1-2 list
/// `[event_id, {hashes}]` pairs).
fn event_refs(rules: &RoomVersionRules, ids: &[String]) -> Value {
    if rules.event_format == EventFormat::V1 {
        Value::Array(
            ids.iter()
                .map(|id| {
                    Value::Array(vec![Value::from(id.as_str()), Value::Object(Object::new())])
                })
                .collect(),
        )
    } else {
        Value::Array(ids.iter().map(|id| Value::from(id.as_str())).collect())
    }
}

/// The aliases an `m.room.canonical_alias` content names (`alias` and `alt_aliases`).
pub(super) fn aliases_named(content: &Object) -> Result<Vec<&str>, ApiError> {
    let mut aliases = Vec::new();
    match content.get("alias") {
        None | Some(Value::Null) => {}
        Some(Value::String(alias)) => aliases.push(alias.as_str()),
        Some(_) => return Err(ApiError::invalid_param("`alias` must be a string")),
    }
    match content.get("alt_aliases") {
        None => {}
        Some(Value::Array(alt)) => {
            for alias in alt {
                let alias = alias.as_str().ok_or_else(|| {
                    ApiError::invalid_param("`alt_aliases` must be a list of strings")
                })?;
                aliases.push(alias);
            }
        }
        Some(_) => return Err(ApiError::invalid_param("`alt_aliases` must be a list")),
    }
    Ok(aliases)
}
