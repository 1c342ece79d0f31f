//! Purging a room ([`crate::Storage::purge_room`]): one transaction of deletions, the room's
//! row locked first so that no change set of another process builds on it meanwhile.

use super::{Doing, PostgresStore};
use crate::Result;

/// The room's rows other than its events, by table (each keyed or indexed by room id, but
/// `search_postings` and `appservice_room_list`, which a purge scans).
const BY_ROOM: &[&str] = &[
    "DELETE FROM relations WHERE room_id = $1",
    "DELETE FROM backfill WHERE room_id = $1",
    "DELETE FROM search_postings WHERE room_id = $1",
    "DELETE FROM search_index WHERE room_id = $1",
    "DELETE FROM redactions WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
    "DELETE FROM memberships WHERE room_id = $1",
    "DELETE FROM forgotten WHERE room_id = $1",
    "DELETE FROM receipts WHERE room_id = $1",
    "DELETE FROM aliases WHERE room_id = $1",
    "DELETE FROM directory WHERE room_id = $1",
    "DELETE FROM appservice_room_list WHERE room_id = $1",
    "DELETE FROM auth_chain WHERE room_id = $1",
    "DELETE FROM public_join_rooms WHERE room_id = $1",
];

/// The rows of some events of a room (`$1` the room, `$2` the ids) other than the events.
const BY_EVENT: &[&str] = &[
    "DELETE FROM relations WHERE room_id = $1 AND event_id = ANY($2)",
    "DELETE FROM backfill WHERE room_id = $1 AND event_id = ANY($2)",
    "DELETE FROM search_postings WHERE room_id = $1 AND pos IN \
     (SELECT pos FROM search_index WHERE room_id = $1 AND event_id = ANY($2))",
    "DELETE FROM search_index WHERE room_id = $1 AND event_id = ANY($2)",
    "DELETE FROM redactions WHERE event_id IN \
     (SELECT event_id FROM events WHERE room_id = $1 AND event_id = ANY($2))",
];

impl PostgresStore {
    pub(super) async fn purge_some(&self, room_id: &str, event_ids: &[String]) -> Result<usize> {
        const DOING: &str = "purging events";
        let mut tx = self.pool.begin().await.doing(DOING)?;
        for statement in BY_EVENT {
            sqlx::query(statement)
                .bind(room_id)
                .bind(event_ids)
                .execute(&mut *tx)
                .await
                .doing(DOING)?;
        }
        let purged = sqlx::query("DELETE FROM events WHERE room_id = $1 AND event_id = ANY($2)")
            .bind(room_id)
            .bind(event_ids)
            .execute(&mut *tx)
            .await
            .doing(DOING)?
            .rows_affected();
        tx.commit().await.doing(DOING)?;
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }

    pub(super) async fn purge(&self, room_id: &str) -> Result<Vec<String>> {
        const DOING: &str = "purging a room";
        let mut tx = self.pool.begin().await.doing(DOING)?;
        sqlx::query("SELECT 1 FROM rooms WHERE room_id = $1 FOR UPDATE")
            .bind(room_id)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
        for statement in BY_ROOM {
            sqlx::query(statement).bind(room_id).execute(&mut *tx).await.doing(DOING)?;
        }
        let mut purged: Vec<String> =
            sqlx::query_scalar("DELETE FROM events WHERE room_id = $1 RETURNING event_id")
                .bind(room_id)
                .fetch_all(&mut *tx)
                .await
                .doing(DOING)?;
        sqlx::query("DELETE FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
        tx.commit().await.doing(DOING)?;
        purged.sort();
        Ok(purged)
    }
}
