//! Rooms' auth-chain indexes in memory ([`crate::ChangeSet::auth_chain`]), and the batch read
//! of events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::{AuthChainEntry, ChangeSet, Result, StoredEvent};

/// Each room's index: number -> entry.
#[derive(Debug, Default)]
pub(super) struct AuthChains {
    rooms: HashMap<String, BTreeMap<u32, AuthChainEntry>>,
}

impl AuthChains {
    /// Checks that no entry of `changes` takes a number stored already, or one another entry
    /// of `changes` takes: else the whole change set is a conflict.
    pub(super) fn validate(&self, changes: &ChangeSet) -> Result<()> {
        let mut taken = HashSet::new();
        for entry in &changes.auth_chain {
            let stored =
                self.rooms.get(&entry.room_id).is_some_and(|room| room.contains_key(&entry.index));
            if stored || !taken.insert((&entry.room_id, entry.index)) {
                return Err(entry.taken());
            }
        }
        Ok(())
    }

    /// Adds validated entries.
    pub(super) fn apply(&mut self, entries: Vec<AuthChainEntry>) {
        for entry in entries {
            self.rooms.entry(entry.room_id.clone()).or_default().insert(entry.index, entry);
        }
    }

    /// [`crate::EventStore::auth_chain_index`].
    /// Forgets a room's index (the room is purged).
    pub(super) fn purge_room(&mut self, room_id: &str) {
        self.rooms.remove(room_id);
    }

    pub(super) fn range(&self, room_id: &str, from: u32, limit: usize) -> Vec<AuthChainEntry> {
        let Some(room) = self.rooms.get(room_id) else { return Vec::new() };
        room.range(from..).take(limit).map(|(_, entry)| entry.clone()).collect()
    }
}

/// [`crate::EventStore::events`] over a map of events: each stored one once.
pub(super) fn events_among(
    events: &HashMap<String, StoredEvent>,
    event_ids: &[&str],
) -> Vec<StoredEvent> {
    let wanted: BTreeSet<&str> = event_ids.iter().copied().collect();
    wanted.into_iter().filter_map(|id| events.get(id).cloned()).collect()
}
