//! Purging a room in memory ([`crate::Storage::purge_room`]).

use super::Inner;

impl Inner {
    /// Deletes an event and what is indexed under it, not its positions in its room.
    fn forget_event(&mut self, event_id: &str) -> Option<crate::StoredEvent> {
        let event = self.events.remove(event_id)?;
        self.backfill_of.remove(event_id);
        self.redactions.remove(event_id);
        self.relations.remove(event_id);
        self.search.remove(event_id);
        Some(event)
    }

    /// Deletes the events of `event_ids` stored in `room_id` (see
    /// [`crate::Storage::purge_events`]); how many.
    pub(super) fn purge_events(&mut self, room_id: &str, event_ids: &[String]) -> usize {
        let mut purged = 0;
        for event_id in event_ids {
            if self.events.get(event_id).is_none_or(|e| e.room_id != room_id) {
                continue;
            }
            let backfill = self.backfill_of.get(event_id).copied();
            let Some(event) = self.forget_event(event_id) else { continue };
            purged += 1;
            let room = self.rooms.get_mut(room_id);
            if let Some(pos) = event.stream {
                self.stream.remove(&pos.0);
                if let Some(room) = room {
                    room.timeline.remove(&pos.0);
                }
            } else if let (Some(pos), Some(room)) = (backfill, room) {
                room.backfill.remove(&pos);
            }
        }
        purged
    }

    /// Deletes what the store holds of `room_id` (see [`crate::Storage::purge_room`]); the ids
    /// of the events deleted, sorted.
    pub(super) fn purge_room(&mut self, room_id: &str) -> Vec<String> {
        let mut purged: Vec<String> = self
            .events
            .values()
            .filter(|e| e.room_id == room_id)
            .map(|e| e.event_id.clone())
            .collect();
        purged.sort();
        for event_id in &purged {
            self.forget_event(event_id);
        }
        if let Some(room) = self.rooms.remove(room_id) {
            for user in room.members.keys() {
                if let Some(rooms) = self.user_rooms.get_mut(user) {
                    rooms.remove(room_id);
                    if rooms.is_empty() {
                        self.user_rooms.remove(user);
                    }
                }
            }
            for pos in room.timeline.keys() {
                self.stream.remove(pos);
            }
        }
        self.forgotten.retain(|(room, _)| room != room_id);
        self.aliases.retain(|_, alias| alias.room_id != room_id);
        self.published.remove(room_id);
        self.appservice_listings.retain(|listing| listing.room_id != room_id);
        self.receipts.retain(|key, _| key.room_id != room_id);
        self.receipt_log.retain(|(room, _), _| room != room_id);
        self.auth_chains.purge_room(room_id);
        self.public_join_rooms.remove(room_id);
        purged
    }
}
