//! Events fetched from another server to fill a gap before a received event (the fetching is
//! `services/federation/receive/fill.rs`): auth events (`/event_auth`), and the state and
//! auth chain at a prev event we lack (`/state_ids`, then `/event` or `/state`).
//!
//! **What is checked.** As for the state of a `send_join` answer (`join_remote.rs`): each
//! event is parsed as the room's version, must be of this room and one of the ids asked for,
//! its signatures must verify (one batch) and it is redacted where its content hash is wrong;
//! then the authorization rules against its own auth events, which are in the batch or stored
//! here (and not rejected). What fails is not stored, and only it: the events that pass are
//! kept (as the spec asks of a server that received events failing their checks, and as
//! Synapse does), and those that need a failed one as an auth event fail with it.
//!
//! **How it is stored.** As outliers ([`EventStatus::Outlier`]): known, in no timeline, not
//! forward extremities. The prev event whose state was fetched is stored with the state after
//! it (a snapshot, as a delta against the room's current state), which is what the received
//! event's checks read as the state after its prev event. An outlier that later arrives as a
//! PDU (in a transaction, or from `/get_missing_events`) is checked again in full and then
//! takes its place in the timeline (`remote.rs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use matrix_core::{Object, Pdu, RoomVersionRules};
use matrix_federation::inbound::StateIds;
use matrix_federation::keys::KeyProvider;
use matrix_storage::{ChangeSet, EventStatus, NewSnapshot, SnapshotRef};

use super::Rooms;
use crate::error::ApiError;

/// What the room holds of an event another server names.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    /// Not stored here.
    Unknown,
    /// Stored, of this room, not rejected.
    Usable(Arc<Pdu>),
    /// Stored, but of another room: naming it is a lie. Says why.
    Refused(String),
    /// Stored, of this room, but rejected here: it may not be used. Says why.
    Rejected(String),
}

/// The state after a prev event, to store with it.
#[derive(Debug, Clone)]
pub(crate) struct StateAt {
    /// The prev event (in the batch stored with it, or stored already as an outlier).
    pub(crate) event_id: String,
    /// The state after it.
    pub(crate) state: StateIds,
}

impl Rooms {
    /// How `room_id` holds `event_id`.
    pub(crate) async fn held(&self, room_id: &str, event_id: &str) -> Result<Held, ApiError> {
        let Some(stored) = self.storage().event(event_id).await? else { return Ok(Held::Unknown) };
        if stored.room_id != room_id {
            return Ok(Held::Refused(format!("event {event_id} is of another room")));
        }
        if stored.status == EventStatus::Rejected {
            return Ok(Held::Rejected(format!("event {event_id} was rejected here")));
        }
        Ok(match self.pdu(event_id).await? {
            Some(pdu) => Held::Usable(pdu),
            None => Held::Unknown,
        })
    }

    /// Checks events fetched for `room_id` (module docs): answers those that pass, by id.
    /// Events that are not among `wanted`, not of the room, not valid, badly signed or not
    /// authorized by their auth events are left out.
    pub(crate) async fn check_fetched(
        &self,
        keys: &dyn KeyProvider,
        rules: &'static RoomVersionRules,
        room_id: &str,
        wanted: &BTreeSet<String>,
        objects: Vec<Object>,
    ) -> Result<HashMap<String, Pdu>, ApiError> {
        let mut events: HashMap<String, Pdu> = HashMap::new();
        for object in objects {
            let Some(pdu) = parse(object, rules) else { continue };
            if pdu.room_id() == room_id && wanted.contains(pdu.event_id()) {
                events.entry(pdu.event_id().to_owned()).or_insert(pdu);
            }
        }
        let verified =
            super::join_remote::verify_all(keys, rules, events.into_values().collect()).await?;
        let batch: BTreeSet<&str> = verified.iter().map(Pdu::event_id).collect();
        let mut known: HashMap<String, Pdu> = HashMap::new();
        for pdu in &verified {
            for id in pdu.auth_events() {
                if batch.contains(id) || known.contains_key(id) {
                    continue;
                }
                if let Held::Usable(auth_event) = self.held(room_id, id).await? {
                    known.insert(id.to_owned(), (*auth_event).clone());
                }
            }
        }
        let create = self.create_event_of(room_id).await?;
        Ok(super::join_remote::authorize_against(rules, verified, &known, create.as_ref()))
    }

    /// Stores checked events (of `room_id`) as outliers, those not stored yet, and with
    /// `state_at` the state after its prev event (stored with this batch, or as an outlier
    /// before). One change set, under the room's lock.
    pub(crate) async fn store_outliers(
        &self,
        room_id: &str,
        events: Vec<Pdu>,
        state_at: Option<StateAt>,
    ) -> Result<(), ApiError> {
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        let mut changes = ChangeSet::new();
        let mut stored_now = Vec::with_capacity(events.len());
        let mut with_state: Option<Pdu> = None;
        for pdu in events {
            let is_anchor = state_at.as_ref().is_some_and(|s| s.event_id == pdu.event_id());
            if is_anchor {
                with_state = Some(pdu);
            } else if self.storage().event(pdu.event_id()).await?.is_none() {
                changes.events.push(super::new_event(&pdu, EventStatus::Outlier, false, None));
                stored_now.push(pdu);
            }
        }
        if let Some(state_at) = state_at {
            let anchor = match with_state {
                Some(pdu) => Some(pdu),
                None => self.pdu(&state_at.event_id).await?.map(|pdu| (*pdu).clone()),
            };
            let anchor =
                anchor.ok_or_else(|| ApiError::unknown("the prev event to store is not known"))?;
            let stored = self.storage().event(anchor.event_id()).await?;
            // Stored meanwhile in the room's DAG, with its own state: nothing to add.
            let outlier = stored
                .as_ref()
                .is_none_or(|s| s.status == EventStatus::Outlier && s.state_after.is_none());
            if outlier {
                changes.snapshot = Some(self.snapshot_of(room_id, &state_at.state).await?);
                changes.events.push(super::new_event(
                    &anchor,
                    EventStatus::Outlier,
                    false,
                    Some(SnapshotRef::New),
                ));
            }
            stored_now.push(anchor);
        }
        if changes.events.is_empty() {
            return Ok(());
        }
        self.storage().apply(changes).await?;
        for pdu in stored_now {
            self.events.insert(pdu.event_id().to_owned(), Arc::new(pdu));
        }
        Ok(())
    }

    /// A new snapshot holding `state`, as a delta against the room's current state.
    async fn snapshot_of(&self, room_id: &str, state: &StateIds) -> Result<NewSnapshot, ApiError> {
        let parent = self.storage().room(room_id).await?.and_then(|r| r.current_state);
        let base: StateIds = match parent {
            Some(snapshot) => self
                .storage()
                .state_full(snapshot)
                .await?
                .into_iter()
                .map(|e| ((e.kind, e.state_key), e.event_id))
                .collect(),
            None => StateIds::new(),
        };
        Ok(NewSnapshot { parent, changes: super::remote::diff(&base, state) })
    }
}

/// An event of `rules`' version, parsed as strictly as the version requires (an event of a
/// transaction or an answer is parsed leniently first).
fn parse(object: Object, rules: &'static RoomVersionRules) -> Option<Pdu> {
    if rules.strict_canonical_json {
        let mut bytes = Vec::with_capacity(object.canonical_len());
        object.write_canonical(&mut bytes);
        Pdu::from_slice(&bytes, rules).ok()
    } else {
        Pdu::from_object(object, rules).ok()
    }
}
