//! Backfilled history ([`crate::BackfillPos`]): the `backfill` table of migration 6.

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};

use super::{Doing, to_i64, to_u64};
use crate::{BackfillItem, BackfillPos, ChangeSet, Direction, ErrorKind, Result, StorageError};

/// Gives each of the change set's backfilled events its room's next backfill position. Each
/// room's positions are handed out under a transaction-scoped advisory lock of that room, so
/// that two processes backfilling one room take turns.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing backfilled events";
    let mut rooms: Vec<&str> = changes.backfill.iter().map(|(room, _)| room.as_str()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    for room in rooms {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('backfill ' || $1, 0))")
            .bind(room)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    for (room_id, event_id) in &changes.backfill {
        let row = sqlx::query(
            "SELECT room_id, stream IS NOT NULL OR EXISTS \
             (SELECT 1 FROM backfill b WHERE b.event_id = e.event_id) \
             FROM events e WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .doing(DOING)?;
        let Some(row) = row else {
            return Err(missing(event_id, room_id));
        };
        let room: String = row.try_get(0).doing(DOING)?;
        if room != *room_id {
            return Err(missing(event_id, room_id));
        }
        if row.try_get::<bool, _>(1).doing(DOING)? {
            continue;
        }
        sqlx::query(
            "INSERT INTO backfill (room_id, pos, event_id) SELECT $1, \
             COALESCE(MAX(pos), 0) + 1, $2 FROM backfill WHERE room_id = $1",
        )
        .bind(room_id)
        .bind(event_id)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

fn missing(event_id: &str, room_id: &str) -> StorageError {
    StorageError::new(ErrorKind::MissingReference, format!("event {event_id} in room {room_id}"))
}

/// [`crate::RoomStore::backfilled`].
pub(super) async fn backfilled(
    pool: &PgPool,
    room_id: &str,
    from: BackfillPos,
    direction: Direction,
    limit: usize,
) -> Result<Vec<BackfillItem>> {
    const DOING: &str = "reading backfilled events";
    let query = match direction {
        Direction::Backwards => {
            "SELECT pos, event_id FROM backfill WHERE room_id = $1 AND pos > $2 \
             ORDER BY pos LIMIT $3"
        }
        Direction::Forwards => {
            "SELECT pos, event_id FROM backfill WHERE room_id = $1 AND pos < $2 \
             ORDER BY pos DESC LIMIT $3"
        }
    };
    let rows = sqlx::query(query)
        .bind(room_id)
        .bind(to_i64(from.0))
        .bind(to_i64(limit as u64))
        .fetch_all(pool)
        .await
        .doing(DOING)?;
    rows.iter()
        .map(|row| {
            Ok(BackfillItem {
                pos: BackfillPos(to_u64(row.try_get(0).doing(DOING)?)?),
                event_id: row.try_get(1).doing(DOING)?,
            })
        })
        .collect()
}

/// [`crate::RoomStore::backfill_position`].
pub(super) async fn position(pool: &PgPool, event_id: &str) -> Result<Option<BackfillPos>> {
    let pos: Option<i64> = sqlx::query_scalar("SELECT pos FROM backfill WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
        .doing("reading a backfill position")?;
    Ok(pos.map(to_u64).transpose()?.map(BackfillPos))
}
