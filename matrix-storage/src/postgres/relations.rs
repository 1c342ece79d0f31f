//! The relations index (migration 12): its part of a change set ([`write`]) and its reads.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{ChangeSet, Direction, Relation, RelationStore, RelationSummary, Result, StreamPos};

/// Indexes the change set's relations (after its events and redactions are written: each
/// takes its event's stored position), and takes its redacted events out.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing relations";
    for new in &changes.relations {
        sqlx::query(
            "INSERT INTO relations (event_id, room_id, parent, rel_type, kind, sender, pos) \
             SELECT e.event_id, $2, $3, $4, $5, $6, e.stream FROM events e \
             WHERE e.event_id = $1 AND e.stream IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.event_id = e.event_id) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&new.event_id)
        .bind(&new.room_id)
        .bind(&new.parent)
        .bind(&new.rel_type)
        .bind(&new.kind)
        .bind(&new.sender)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.redactions.is_empty() {
        let redacted: Vec<&str> = changes.redactions.iter().map(|(e, _)| e.as_str()).collect();
        sqlx::query("DELETE FROM relations WHERE event_id = ANY($1)")
            .bind(redacted)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    Ok(())
}

const COLUMNS: &str = "event_id, parent, rel_type, kind, sender, pos";

fn relation(row: &PgRow) -> Result<Relation> {
    const DOING: &str = "reading a relation";
    Ok(Relation {
        event_id: row.try_get(0).doing(DOING)?,
        parent: row.try_get(1).doing(DOING)?,
        rel_type: row.try_get(2).doing(DOING)?,
        kind: row.try_get(3).doing(DOING)?,
        sender: row.try_get(4).doing(DOING)?,
        pos: StreamPos(to_u64(row.try_get(5).doing(DOING)?)?),
    })
}

#[async_trait]
impl RelationStore for PostgresStore {
    async fn relations(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Relation>> {
        let order = match direction {
            Direction::Backwards => "pos < $3 ORDER BY pos DESC",
            Direction::Forwards => "pos > $3 ORDER BY pos",
        };
        let query = format!(
            "SELECT {COLUMNS} FROM relations WHERE room_id = $1 AND parent = $2 \
             AND ($4::text IS NULL OR rel_type = $4) AND {order} LIMIT $5"
        );
        let rows = sqlx::query(&query)
            .bind(room_id)
            .bind(parent)
            .bind(to_i64(from.0))
            .bind(rel_type)
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .doing("reading relations")?;
        rows.iter().map(relation).collect()
    }

    async fn relation_summary(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: &str,
        upto: StreamPos,
        sender: &str,
    ) -> Result<RelationSummary> {
        const DOING: &str = "reading a relation summary";
        let row = sqlx::query(
            "SELECT count(*), COALESCE(bool_or(sender = $5), false) FROM relations \
             WHERE room_id = $1 AND parent = $2 AND rel_type = $3 AND pos <= $4",
        )
        .bind(room_id)
        .bind(parent)
        .bind(rel_type)
        .bind(to_i64(upto.0))
        .bind(sender)
        .fetch_one(&self.pool)
        .await
        .doing(DOING)?;
        let count = to_u64(row.try_get(0).doing(DOING)?)?;
        let by_sender: bool = row.try_get(1).doing(DOING)?;
        let latest = if count == 0 {
            None
        } else {
            let query = format!(
                "SELECT {COLUMNS} FROM relations WHERE room_id = $1 AND parent = $2 \
                 AND rel_type = $3 AND pos <= $4 ORDER BY pos DESC LIMIT 1"
            );
            let row = sqlx::query(&query)
                .bind(room_id)
                .bind(parent)
                .bind(rel_type)
                .bind(to_i64(upto.0))
                .fetch_optional(&self.pool)
                .await
                .doing(DOING)?;
            row.as_ref().map(relation).transpose()?
        };
        Ok(RelationSummary { count, latest, by_sender })
    }

    async fn thread_replies(
        &self,
        room_id: &str,
        from: StreamPos,
        limit: usize,
    ) -> Result<Vec<Relation>> {
        let query = format!(
            "SELECT {COLUMNS} FROM relations WHERE room_id = $1 AND rel_type = 'm.thread' \
             AND pos < $2 ORDER BY pos DESC LIMIT $3"
        );
        let rows = sqlx::query(&query)
            .bind(room_id)
            .bind(to_i64(from.0))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .doing("reading thread replies")?;
        rows.iter().map(relation).collect()
    }

    async fn relation_of(&self, event_id: &str) -> Result<Option<Relation>> {
        let query = format!("SELECT {COLUMNS} FROM relations WHERE event_id = $1");
        let row = sqlx::query(&query)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
            .doing("reading a relation")?;
        row.as_ref().map(relation).transpose()
    }
}
