//! Purging a room: deleting it from storage (the server administrators' room deletion) and
//! forgetting what the caches hold of it.

use super::Rooms;
use crate::error::ApiError;

impl Rooms {
    /// Deletes everything stored for the room ([`matrix_storage::Storage::purge_room`]) under
    /// the room's lock, so that no event of ours is appended meanwhile, then drops the room and
    /// its events from the caches. Answers how many events were deleted.
    pub(crate) async fn purge(&self, room_id: &str) -> Result<usize, ApiError> {
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        let purged = self.storage.purge_room(room_id).await?;
        for event_id in &purged {
            self.events.remove(event_id);
            self.snapshots_of.remove(event_id);
            self.replaced.remove(event_id);
        }
        self.versions.remove(room_id);
        self.directory_entries.remove(room_id);
        self.remote_servers.remove(room_id);
        self.residency.remove(room_id);
        self.memberships.retain(|(room, _), _| room != room_id);
        self.auth_indexes.forget(room_id);
        Ok(purged.len())
    }
}

impl Rooms {
    /// Deletes some events of the room ([`matrix_storage::Storage::purge_events`]: the caller
    /// chooses ones nothing kept needs) and drops them from the caches; how many.
    pub(crate) async fn purge_events(
        &self,
        room_id: &str,
        event_ids: &[String],
    ) -> Result<usize, ApiError> {
        if event_ids.is_empty() {
            return Ok(0);
        }
        let purged = self.storage.purge_events(room_id, event_ids).await?;
        for event_id in event_ids {
            self.events.remove(event_id);
            self.snapshots_of.remove(event_id);
            self.replaced.remove(event_id);
        }
        Ok(purged)
    }
}
