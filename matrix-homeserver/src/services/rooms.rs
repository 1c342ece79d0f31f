//! Rooms: building, authorizing and appending our users' events, and reading rooms back.
//!
//! Every event of a room is built under that room's lock: the current state gives the auth
//! events, the forward extremities give `prev_events` and the depth, matrix-core hashes and
//! signs it and checks it against the authorization rules, and one change set stores it with
//! its state snapshot (a delta against the room's current one), the new extremity and any
//! membership change. Rooms are written in parallel with each other.

mod create;
mod directory;
pub(crate) mod format;
mod membership;
mod read;
mod send;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use matrix_core::json::{Object, Value};
use matrix_core::{Pdu, RoomVersionRules, SigningKey, auth};
use matrix_storage::{
    ChangeSet, EventStatus, NewEvent, NewSnapshot, RoomChanges, SnapshotId, SnapshotRef, Storage,
    StreamPos,
};
use ruma::{OwnedServerName, UserId};

pub(crate) use create::{CreateRoom, Preset};
pub(crate) use read::{EventFilter, Viewer};

use super::ephemeral::Ephemeral;
use super::records::Records;
use crate::error::ApiError;

/// The most `prev_events` an event names (the forward extremities beyond are left to later
/// events).
const MAX_PREV_EVENTS: usize = 10;

/// The event types the default push rules notify for (`.m.rule.message`,
/// `.m.rule.encrypted`; stickers are messages to clients).
const NOTIFYING: &[&str] = &["m.room.message", "m.room.encrypted", "m.sticker"];

/// An event to build: its type, state key, content (and for redactions what it redacts).
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) kind: String,
    pub(crate) state_key: Option<String>,
    pub(crate) content: Object,
    pub(crate) redacts: Option<String>,
}

impl Draft {
    pub(crate) fn message(kind: &str, content: Object) -> Self {
        Draft { kind: kind.to_owned(), state_key: None, content, redacts: None }
    }
    pub(crate) fn state(kind: &str, state_key: &str, content: Object) -> Self {
        Draft {
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }
}

/// The room service.
pub(crate) struct Rooms {
    storage: Arc<dyn Storage>,
    server_name: OwnedServerName,
    key: SigningKey,
    records: Records,
    ephemeral: Arc<Ephemeral>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Parsed events by id (events never change once stored).
    events: quick_cache::sync::Cache<String, Arc<Pdu>>,
    /// The state after each event (never changes).
    snapshots_of: quick_cache::sync::Cache<String, SnapshotId>,
    /// The history visibility of each state snapshot (never changes).
    visibility_at: quick_cache::sync::Cache<SnapshotId, Arc<str>>,
    /// Room versions by room id (a room's version never changes).
    versions: quick_cache::sync::Cache<String, &'static RoomVersionRules>,
    txns: send::Transactions,
    /// Serialises alias changes (check, then write).
    alias_lock: tokio::sync::Mutex<()>,
    echoes: send::Echoes,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses JSON a client sent as event content: strict canonical JSON rules for room versions
/// that require them (no floats, integers in range), and an object.
pub(crate) fn parse_content(bytes: &[u8], rules: &RoomVersionRules) -> Result<Object, ApiError> {
    let value = if rules.strict_canonical_json {
        matrix_core::json::parse_strict(bytes)
    } else {
        matrix_core::json::parse_lenient(bytes)
    }
    .map_err(|e| ApiError::bad_json(format!("the event content is not valid: {e}")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::bad_json("the event content must be an object")),
    }
}

fn pdu_error(error: matrix_core::PduError) -> ApiError {
    match error {
        matrix_core::PduError::TooLarge { .. } => ApiError::event_too_large(),
        other => ApiError::bad_json(format!("the event is not valid: {other}")),
    }
}

impl Rooms {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
        key: SigningKey,
        ephemeral: Arc<Ephemeral>,
    ) -> Self {
        Rooms {
            records: Records::new(storage.clone()),
            storage,
            server_name,
            key,
            ephemeral,
            locks: Mutex::new(HashMap::new()),
            events: quick_cache::sync::Cache::new(1_024),
            versions: quick_cache::sync::Cache::new(16_384),
            snapshots_of: quick_cache::sync::Cache::new(16_384),
            visibility_at: quick_cache::sync::Cache::new(4_096),
            txns: quick_cache::sync::Cache::new(16_384),
            alias_lock: tokio::sync::Mutex::new(()),
            echoes: quick_cache::sync::Cache::new(16_384),
        }
    }

    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(crate) fn records(&self) -> &Records {
        &self.records
    }

    pub(crate) fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    fn room_lock(&self, room_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    /// The rules of a room's version, or `None` for a room not stored here.
    pub(crate) async fn rules(
        &self,
        room_id: &str,
    ) -> Result<Option<&'static RoomVersionRules>, ApiError> {
        if let Some(rules) = self.versions.get(room_id) {
            return Ok(Some(rules));
        }
        let Some(info) = self.storage.room(room_id).await? else { return Ok(None) };
        let rules = RoomVersionRules::get(&info.version)
            .ok_or_else(|| ApiError::unknown("a stored room has an unknown version"))?;
        self.versions.insert(room_id.to_owned(), rules);
        Ok(Some(rules))
    }

    /// A stored event, parsed.
    pub(crate) async fn pdu(&self, event_id: &str) -> Result<Option<Arc<Pdu>>, ApiError> {
        if let Some(pdu) = self.events.get(event_id) {
            return Ok(Some(pdu));
        }
        let Some(stored) = self.storage.event(event_id).await? else { return Ok(None) };
        let Some(rules) = self.rules(&stored.room_id).await? else { return Ok(None) };
        let value = matrix_core::json::parse_lenient(&stored.json)
            .map_err(|_| ApiError::unknown("a stored event does not parse"))?;
        let Value::Object(json) = value else {
            return Err(ApiError::unknown("a stored event is not an object"));
        };
        let pdu = Arc::new(Pdu::with_event_id(json, stored.event_id, rules));
        self.events.insert(event_id.to_owned(), pdu.clone());
        Ok(Some(pdu))
    }

    /// The state event at `(kind, state_key)` of a snapshot.
    pub(crate) async fn state_pdu(
        &self,
        snapshot: SnapshotId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>, ApiError> {
        match self.storage.state_get(snapshot, kind, state_key).await? {
            Some(id) => self.pdu(&id).await,
            None => Ok(None),
        }
    }

    /// A new event id for room versions whose ids are not hashes (1 and 2).
    fn opaque_event_id(&self) -> Result<String, ApiError> {
        let mut bytes = [0u8; 18];
        getrandom::fill(&mut bytes).map_err(|_| ApiError::unknown("no randomness available"))?;
        Ok(format!("${}:{}", matrix_core::b64::encode_url_safe(bytes), self.server_name))
    }

    /// Hashes, signs and format-checks an event object.
    fn seal(&self, mut json: Object, rules: &'static RoomVersionRules) -> Result<Pdu, ApiError> {
        if rules.event_id_format == matrix_core::room_version::EventIdFormat::Opaque {
            json.insert("event_id", self.opaque_event_id()?);
        }
        matrix_core::signing::hash_and_sign_event(
            &mut json,
            self.server_name.as_str(),
            &self.key,
            rules,
        );
        Pdu::from_object(json, rules).map_err(pdu_error)
    }

    /// Builds, authorizes and stores an event of `sender` in `room_id`.
    pub(crate) async fn append(
        &self,
        room_id: &str,
        sender: &UserId,
        draft: Draft,
    ) -> Result<Arc<Pdu>, ApiError> {
        if draft.kind.contains('\0') || draft.state_key.as_deref().is_some_and(|k| k.contains('\0'))
        {
            return Err(ApiError::invalid_param("a NUL character in the event type or state key"));
        }
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        let info = self.storage.room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let snapshot =
            info.current_state.ok_or_else(|| ApiError::unknown("the room has no state"))?;

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
        if rules.event_format == matrix_core::room_version::EventFormat::V1 {
            json.insert("origin", self.server_name.as_str());
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
        let event_refs = |ids: Vec<String>| -> Value {
            if rules.event_format == matrix_core::room_version::EventFormat::V1 {
                // Room versions 1-2 list `[event_id, {hashes}]` pairs.
                Value::Array(
                    ids.into_iter()
                        .map(|id| Value::Array(vec![Value::from(id), Value::Object(Object::new())]))
                        .collect(),
                )
            } else {
                Value::Array(ids.into_iter().map(Value::from).collect())
            }
        };
        json.insert(
            "auth_events",
            event_refs(auth_pdus.iter().map(|p| p.event_id().to_owned()).collect()),
        );
        json.insert("prev_events", event_refs(prev_ids.clone()));
        json.insert("depth", depth.saturating_add(1));
        let pdu = self.seal(json, rules)?;

        let auth_refs: Vec<&Pdu> = auth_pdus.iter().map(|p| p.as_ref()).collect();
        auth::check_with_auth_events(rules, &pdu, &auth_refs, create.as_deref())
            .map_err(|rejection| ApiError::forbidden(format!("not allowed: {rejection}")))?;

        let mut changes = ChangeSet::new();
        let state_key = pdu.state_key().map(str::to_owned);
        let mut room = RoomChanges {
            room_id: room_id.to_owned(),
            forward_extremities: Some(vec![pdu.event_id().to_owned()]),
            ..RoomChanges::default()
        };
        let state_after = match &state_key {
            Some(state_key) => {
                changes.snapshot = Some(NewSnapshot {
                    parent: Some(snapshot),
                    changes: vec![(
                        pdu.kind().to_owned(),
                        state_key.clone(),
                        Some(pdu.event_id().to_owned()),
                    )],
                });
                room.current_state = Some(SnapshotRef::New);
                if pdu.kind() == "m.room.member"
                    && let Some(membership) = pdu.content().get_str("membership")
                {
                    room.memberships.push((state_key.clone(), membership.to_owned()));
                }
                SnapshotRef::New
            }
            None => SnapshotRef::Existing(snapshot),
        };
        changes.events.push(NewEvent {
            event_id: pdu.event_id().to_owned(),
            room_id: room_id.to_owned(),
            json: Arc::from(pdu.canonical_bytes()),
            status: EventStatus::Accepted,
            auth_events: auth_pdus.iter().map(|p| p.event_id().to_owned()).collect(),
            prev_events: prev_ids,
            in_timeline: true,
            state_after: Some(state_after),
        });
        changes.rooms.push(room);
        if let Some(redacts) = &draft.redacts {
            records_redaction(&mut changes, redacts, pdu.event_id());
        }
        let applied = self.storage.apply(changes).await?;
        let pdu = Arc::new(pdu);
        self.events.insert(pdu.event_id().to_owned(), pdu.clone());
        let state_after = match state_after {
            SnapshotRef::New => applied.snapshot,
            SnapshotRef::Existing(snapshot) => Some(snapshot),
        };
        if let Some(snapshot) = state_after {
            self.snapshots_of.insert(pdu.event_id().to_owned(), snapshot);
        }
        // Noted under the room's lock, so that a room's notices stay in stream order.
        if let Some(pos) = applied.stream.first()
            && pdu.state_key().is_none()
            && NOTIFYING.contains(&pdu.kind())
        {
            let mentions =
                match pdu.content().get_object("m.mentions").and_then(|m| m.get("user_ids")) {
                    Some(Value::Array(users)) => {
                        users.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                    }
                    _ => Vec::new(),
                };
            self.ephemeral.notice(room_id, pos.0, pdu.sender(), mentions);
        }
        drop(_guard);
        self.ephemeral.event_appended(room_id, &pdu).await;
        Ok(pdu)
    }

    /// Stores a new room's create event.
    async fn append_create(
        &self,
        json: Object,
        rules: &'static RoomVersionRules,
    ) -> Result<Arc<Pdu>, ApiError> {
        let pdu = self.seal(json, rules)?;
        auth::check(rules, &pdu, &auth::EventList::<Pdu>(Vec::new()))
            .map_err(|rejection| ApiError::bad_json(format!("not a valid room: {rejection}")))?;
        let room_id = pdu.room_id().to_owned();
        let lock = self.room_lock(&room_id);
        let _guard = lock.lock().await;
        let mut changes = ChangeSet::new();
        changes.snapshot = Some(NewSnapshot {
            parent: None,
            changes: vec![(
                "m.room.create".to_owned(),
                String::new(),
                Some(pdu.event_id().to_owned()),
            )],
        });
        changes.events.push(NewEvent {
            event_id: pdu.event_id().to_owned(),
            room_id: room_id.clone(),
            json: Arc::from(pdu.canonical_bytes()),
            status: EventStatus::Accepted,
            auth_events: Vec::new(),
            prev_events: Vec::new(),
            in_timeline: true,
            state_after: Some(SnapshotRef::New),
        });
        changes.rooms.push(RoomChanges {
            room_id: room_id.clone(),
            create_with_version: Some(rules.id.to_owned()),
            current_state: Some(SnapshotRef::New),
            forward_extremities: Some(vec![pdu.event_id().to_owned()]),
            memberships: Vec::new(),
        });
        match self.storage.apply(changes).await {
            Ok(_) => {}
            Err(e) if e.kind() == matrix_storage::ErrorKind::Conflict => {
                return Err(ApiError::room_in_use());
            }
            Err(e) => return Err(e.into()),
        }
        self.versions.insert(room_id, rules);
        let pdu = Arc::new(pdu);
        self.events.insert(pdu.event_id().to_owned(), pdu.clone());
        self.ephemeral.event_appended(pdu.room_id(), &pdu).await;
        Ok(pdu)
    }

    /// The position readers may read up to.
    pub(crate) async fn stream_position(&self) -> Result<StreamPos, ApiError> {
        Ok(self.storage.stream_position().await?)
    }
}

/// A power level the room's power levels event sets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level<'a> {
    /// Sending a state event of this type (`events`, else `state_default`).
    State(&'a str),
    /// Redacting other users' events.
    Redact,
}

impl Rooms {
    /// Whether `user` has `level` in the state `snapshot` (creators of room version 12 have
    /// every level; without a power levels event the levels are the spec's defaults, 50).
    pub(crate) async fn has_level(
        &self,
        rules: &'static RoomVersionRules,
        snapshot: SnapshotId,
        user: &UserId,
        level: Level<'_>,
    ) -> Result<bool, ApiError> {
        let levels = self.state_pdu(snapshot, "m.room.power_levels", "").await?;
        let create = self.state_pdu(snapshot, "m.room.create", "").await?;
        let has =
            auth::user_power_level(rules, levels.as_deref(), create.as_deref(), user.as_str());
        let needed = levels.as_ref().and_then(|levels| {
            let content = levels.content();
            let value = match level {
                Level::State(kind) => content
                    .get_object("events")
                    .and_then(|e| e.get(kind))
                    .or_else(|| content.get("state_default")),
                Level::Redact => content.get("redact"),
            };
            value.and_then(|v| auth::parse_level(v, rules))
        });
        Ok(has >= i128::from(needed.unwrap_or(50)))
    }
}

/// Notes in a change set that `redacted` is redacted by `redaction`.
fn records_redaction(changes: &mut ChangeSet, redacted: &str, redaction: &str) {
    Records::set(changes, super::records::REDACTIONS, redacted, Some(&redaction));
}
