//! The search index and content reports (migration 15): their part of a change set
//! ([`write`]) and their reads. The index is a `tsvector` per event (of the crate's tokens,
//! configuration `simple`) with a GIN index; a query takes the most recent matches
//! ([`crate::MAX_CANDIDATES`]) and ranks them with `ts_rank`.

use async_trait::async_trait;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{
    ChangeSet, ContentReport, ErrorKind, MAX_CANDIDATES, ReportStore, ReportTarget, Result,
    SearchCursor, SearchHit, SearchOrder, SearchPage, SearchQuery, SearchStore, StorageError,
    StoredReport, StreamPos, page_of, token_counts, tokenize,
};

/// The text PostgreSQL makes the `tsvector` of: the crate's tokens of `text` (those kept by
/// [`token_counts`]), separated by spaces.
fn indexed_text(text: &str) -> String {
    let kept = token_counts(text);
    let tokens: Vec<String> = tokenize(text).into_iter().filter(|t| kept.contains_key(t)).collect();
    tokens.join(" ")
}

/// Indexes the change set's entries (`positions`: each timeline event's position), removes
/// what it redacts, stores its reports.
pub(super) async fn write(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    positions: &[(&str, u64)],
) -> Result<()> {
    const DOING: &str = "writing the search index";
    for entry in &changes.search {
        let Some((_, pos)) = positions.iter().find(|(id, _)| *id == entry.event_id) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO search_index (pos, event_id, room_id, sender, kind, key, tokens) \
             SELECT $1, $2, $3, $4, $5, $6, to_tsvector('simple', $7) \
             WHERE NOT EXISTS (SELECT 1 FROM redactions WHERE event_id = $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(to_i64(*pos))
        .bind(&entry.event_id)
        .bind(&entry.room_id)
        .bind(&entry.sender)
        .bind(&entry.kind)
        .bind(&entry.key)
        .bind(indexed_text(&entry.text))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.redactions.is_empty() {
        let redacted: Vec<&str> = changes.redactions.iter().map(|(e, _)| e.as_str()).collect();
        sqlx::query("DELETE FROM search_index WHERE event_id = ANY($1::text[])")
            .bind(redacted)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    for report in &changes.reports {
        let (target, room, event, user) = match &report.target {
            ReportTarget::Event { room_id, event_id } => {
                ("event", Some(room_id), Some(event_id), None)
            }
            ReportTarget::Room { room_id } => ("room", Some(room_id), None, None),
            ReportTarget::User { user_id } => ("user", None, None, Some(user_id)),
        };
        sqlx::query(
            "INSERT INTO content_reports (reporter, target, room_id, event_id, user_id, reason, \
             score, received_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&report.reporter)
        .bind(target)
        .bind(room)
        .bind(event)
        .bind(user)
        .bind(report.reason.as_deref())
        .bind(report.score)
        .bind(to_i64(report.received_ts))
        .execute(&mut *tx)
        .await
        .doing("writing a report")?;
    }
    Ok(())
}

#[async_trait]
impl SearchStore for PostgresStore {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        const DOING: &str = "searching";
        if query.tokens.is_empty() || query.rooms.is_empty() {
            return Ok(SearchPage::default());
        }
        let before = match (query.order, query.from) {
            (SearchOrder::Recent, Some(SearchCursor::Before(pos))) => to_i64(pos.0),
            _ => i64::MAX,
        };
        let rooms: Vec<&str> = query.rooms.iter().map(|r| r.room_id.as_str()).collect();
        let bounds: Vec<i64> =
            query.rooms.iter().map(|r| r.upto.map_or(i64::MAX, |p| to_i64(p.0))).collect();
        let keys = (!query.keys.is_empty()).then_some(&query.keys);
        let bounded = query.rooms.iter().any(|r| r.upto.is_some());
        // The tsquery inline (not a joined function scan) and an unnamed statement (planned
        // with its parameters each time): the planner then picks the GIN index for a rare
        // word and the backward scan of positions for a common one; a generic plan of this
        // query walks every row.
        let rows = sqlx::query(
            "SELECT s.pos, s.event_id, s.room_id, ts_rank(s.tokens, plainto_tsquery('simple', $1)) \
             FROM search_index s \
             WHERE s.tokens @@ plainto_tsquery('simple', $1) AND s.room_id = ANY($2::text[]) \
               AND (NOT $11 OR s.pos <= ($3::bigint[])[array_position($2::text[], s.room_id)]) \
               AND s.pos < $4 \
               AND ($5::text[] IS NULL OR s.key = ANY($5)) \
               AND ($6::text[] IS NULL OR s.sender = ANY($6)) \
               AND NOT (s.sender = ANY($7)) \
               AND ($8::text[] IS NULL OR s.kind = ANY($8)) \
               AND NOT (s.kind = ANY($9)) \
             ORDER BY s.pos DESC LIMIT $10",
        )
        .persistent(false)
        .bind(query.tokens.join(" "))
        .bind(rooms)
        .bind(bounds)
        .bind(before)
        .bind(keys)
        .bind(query.senders.as_ref())
        .bind(&query.not_senders)
        .bind(query.types.as_ref())
        .bind(&query.not_types)
        .bind(MAX_CANDIDATES as i64)
        .bind(bounded)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            let pos: i64 = row.try_get(0).doing(DOING)?;
            let rank: f32 = row.try_get(3).doing(DOING)?;
            let hit = SearchHit {
                event_id: row.try_get(1).doing(DOING)?,
                room_id: row.try_get(2).doing(DOING)?,
                pos: StreamPos(to_u64(pos)?),
                rank: 0.0,
            };
            // ts_rank as an integer to order by (more occurrences rank higher).
            candidates.push((hit, (f64::from(rank) * 1e6).round() as u64));
        }
        Ok(page_of(query, candidates))
    }
}

#[async_trait]
impl ReportStore for PostgresStore {
    async fn reports(&self, after: u64, limit: usize) -> Result<Vec<StoredReport>> {
        const DOING: &str = "reading reports";
        let rows = sqlx::query(
            "SELECT id, reporter, target, room_id, event_id, user_id, reason, score, \
             received_ts FROM content_reports WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(to_i64(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get(0).doing(DOING)?;
            let target: String = row.try_get(2).doing(DOING)?;
            let room: Option<String> = row.try_get(3).doing(DOING)?;
            let event: Option<String> = row.try_get(4).doing(DOING)?;
            let user: Option<String> = row.try_get(5).doing(DOING)?;
            let corrupt = || StorageError::new(ErrorKind::Corrupt, format!("report {id}"));
            let target = match (target.as_str(), room, event, user) {
                ("event", Some(room_id), Some(event_id), _) => {
                    ReportTarget::Event { room_id, event_id }
                }
                ("room", Some(room_id), _, _) => ReportTarget::Room { room_id },
                ("user", _, _, Some(user_id)) => ReportTarget::User { user_id },
                _ => return Err(corrupt()),
            };
            let received: i64 = row.try_get(8).doing(DOING)?;
            out.push(StoredReport {
                id: to_u64(id)?,
                report: ContentReport {
                    reporter: row.try_get(1).doing(DOING)?,
                    target,
                    reason: row.try_get(6).doing(DOING)?,
                    score: row.try_get(7).doing(DOING)?,
                    received_ts: to_u64(received)?,
                },
            });
        }
        Ok(out)
    }
}
