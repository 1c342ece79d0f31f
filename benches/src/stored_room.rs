//! A generated room in a store, resolved as the homeserver resolves forks: through the
//! persisted auth-chain index (`matrix_federation::auth_index`) and
//! `matrix_federation::inbound::resolve` (the `stateres_storage` bench and its test).

use std::sync::Arc;

use async_trait::async_trait;
use matrix_core::json::Value;
use matrix_core::{Pdu, RoomVersionRules};
use matrix_federation::FederationError;
use matrix_federation::auth_index::{AuthIndexes, CACHED_ENTRIES};
use matrix_federation::inbound::{KnownEvent, ResolutionPlan, RoomContext, StateIds, StateSplit};
use matrix_storage::{ChangeSet, EventStatus, NewEvent, RoomChanges, Storage, StoredEvent};

use crate::rooms::Room;

/// A room in a store, as resolution reads it.
pub struct StoredRoom {
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// The room's index (and the others' of the store).
    pub indexes: AuthIndexes,
    /// The room.
    pub room_id: String,
    /// Its version's rules.
    pub rules: &'static RoomVersionRules,
}

impl std::fmt::Debug for StoredRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRoom").field("room_id", &self.room_id).finish_non_exhaustive()
    }
}

impl StoredRoom {
    /// The room of `room`'s events in `storage`, with an index not read yet.
    pub fn new(storage: Arc<dyn Storage>, room: &Room) -> Self {
        StoredRoom {
            indexes: AuthIndexes::new(storage.clone(), CACHED_ENTRIES),
            storage,
            room_id: room.events[0].room_id().to_owned(),
            rules: room.rules,
        }
    }

    fn parse(&self, stored: StoredEvent) -> KnownEvent {
        let Ok(Value::Object(json)) = matrix_core::json::parse_lenient(&stored.json) else {
            panic!("a stored event does not parse");
        };
        KnownEvent {
            pdu: Pdu::with_event_id(json, stored.event_id, self.rules),
            rejected: stored.status == EventStatus::Rejected,
        }
    }
}

#[async_trait]
impl RoomContext for StoredRoom {
    async fn event(&self, event_id: &str) -> Result<Option<KnownEvent>, FederationError> {
        Ok(self.storage.event(event_id).await?.map(|stored| self.parse(stored)))
    }
    async fn state_after(&self, _event_id: &str) -> Result<Option<StateIds>, FederationError> {
        Ok(None)
    }
    async fn current_state(&self) -> Result<StateIds, FederationError> {
        Ok(StateIds::new())
    }
    async fn auth_chain(&self, event_ids: &[String]) -> Result<Vec<String>, FederationError> {
        let ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
        Ok(self.storage.auth_chain(&ids).await?)
    }
    async fn events(&self, event_ids: &[String]) -> Result<Vec<KnownEvent>, FederationError> {
        let ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
        let stored = self.storage.events(&ids).await?;
        Ok(stored.into_iter().map(|e| self.parse(e)).collect())
    }
    async fn resolution_plan(
        &self,
        split: &StateSplit<'_>,
    ) -> Result<Option<ResolutionPlan>, FederationError> {
        self.indexes.plan(&self.room_id, split, None).await
    }
}

/// Stores the room's events (2,000 a change set, the first creating the room).
pub async fn store_room(storage: &Arc<dyn Storage>, room: &Room) {
    let room_id = room.events[0].room_id().to_owned();
    for (n, chunk) in room.events.chunks(2_000).enumerate() {
        let mut changes = ChangeSet::new();
        if n == 0 {
            changes.rooms.push(RoomChanges {
                room_id: room_id.clone(),
                create_with_version: Some(room.rules.id.to_owned()),
                ..RoomChanges::default()
            });
        }
        changes.events = chunk
            .iter()
            .map(|pdu| NewEvent {
                event_id: pdu.event_id().to_owned(),
                room_id: room_id.clone(),
                json: Arc::from(pdu.canonical_bytes()),
                status: EventStatus::Accepted,
                auth_events: pdu.auth_events().map(str::to_owned).collect(),
                prev_events: pdu.prev_events().map(str::to_owned).collect(),
                in_timeline: false,
                state_after: None,
            })
            .collect();
        storage.apply(changes).await.expect("stores the events");
    }
}

/// The state sets as the homeserver holds them.
pub fn state_ids(room: &Room) -> Vec<StateIds> {
    let by_id = room.by_id();
    room.state_sets
        .iter()
        .map(|set| {
            set.iter()
                .map(|id| {
                    let event = &by_id[id];
                    let key = (event.kind().to_owned(), event.state_key().unwrap_or("").to_owned());
                    (key, id.clone())
                })
                .collect()
        })
        .collect()
}

pub fn rows(state: &StateIds) -> Vec<(String, String, String)> {
    state.iter().map(|((kind, key), id)| (kind.clone(), key.clone(), id.clone())).collect()
}
