//! The search index and content reports (migrations 15 and 20): their part of a change set
//! ([`write`]) and their reads.
//!
//! The index is a posting list per token in stream order (`search_postings`: token, position,
//! room and how often the token occurs, keyed by token and position, the room and count in
//! the index) and a row per indexed event (`search_index`: its id, room, sender, type, key and
//! tokens). A query walks the postings of its rarest token (the one with the fewest
//! postings, counted up to [`PROBE`]) backwards from its cursor, reading the index alone,
//! keeps the positions where every other token has a posting too (one index probe each) in
//! the searched rooms and up to their bounds, and stops at the [`MAX_CANDIDATES`] most recent
//! matches: at a million messages that is a few thousand index entries whatever the word.
//! The rank is the number of occurrences of the query's tokens, as on the other backends.
//! Only the page's hits are then read from `search_index` (their event ids), unless the query
//! filters by key, sender or type, which the candidates are checked against there.

use async_trait::async_trait;
use sqlx::{Connection, PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{
    ChangeSet, ContentReport, ErrorKind, MAX_CANDIDATES, ReportStore, ReportTarget, Result,
    SearchCursor, SearchHit, SearchOrder, SearchPage, SearchQuery, SearchStore, StorageError,
    StoredReport, StreamPos, page_of, token_counts,
};

/// How many postings of each token are counted to pick the rarest (the walk's driver).
pub(crate) const PROBE: i64 = 10_000;

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
        let counts = token_counts(&entry.text);
        let words: Vec<&str> = counts.keys().map(String::as_str).collect();
        let ns: Vec<i32> = counts.values().map(|n| i32::try_from(*n).unwrap_or(i32::MAX)).collect();
        sqlx::query(
            "WITH doc AS ( \
               INSERT INTO search_index (pos, event_id, room_id, sender, kind, key, words) \
               SELECT $1, $2, $3, $4, $5, $6, $7 \
               WHERE NOT EXISTS (SELECT 1 FROM redactions WHERE event_id = $2) \
               ON CONFLICT DO NOTHING RETURNING pos, room_id) \
             INSERT INTO search_postings (token, pos, room_id, n) \
             SELECT t.token, doc.pos, doc.room_id, t.n \
             FROM doc, unnest($7::text[], $8::int[]) AS t(token, n)",
        )
        .bind(to_i64(*pos))
        .bind(&entry.event_id)
        .bind(&entry.room_id)
        .bind(&entry.sender)
        .bind(&entry.kind)
        .bind(&entry.key)
        .bind(&words)
        .bind(&ns)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.redactions.is_empty() {
        let redacted: Vec<&str> = changes.redactions.iter().map(|(e, _)| e.as_str()).collect();
        let gone = sqlx::query(
            "DELETE FROM search_index WHERE event_id = ANY($1::text[]) \
             RETURNING pos, coalesce(words, tsvector_to_array(tokens))",
        )
        .bind(redacted)
        .fetch_all(&mut *tx)
        .await
        .doing(DOING)?;
        for row in gone {
            let pos: i64 = row.try_get(0).doing(DOING)?;
            let words: Vec<String> = row.try_get(1).doing(DOING)?;
            sqlx::query("DELETE FROM search_postings WHERE token = ANY($1::text[]) AND pos = $2")
                .bind(words)
                .bind(pos)
                .execute(&mut *tx)
                .await
                .doing(DOING)?;
        }
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
    if !changes.deleted_reports.is_empty() {
        let ids: Vec<i64> = changes.deleted_reports.iter().map(|id| to_i64(*id)).collect();
        sqlx::query("DELETE FROM content_reports WHERE id = ANY($1::bigint[])")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .doing("deleting reports")?;
    }
    Ok(())
}

/// The candidates' walk: the driver's postings backwards, the other tokens probed by key.
/// `$1` driver, `$2` the other tokens, `$3` rooms, `$4` their bounds (when `$5`), `$6` the
/// cursor, `$7` the cap; with filters (`$8`-`$12`) each candidate's row is read too.
const CANDIDATES: &str = "SELECT p.pos, p.room_id, p.n + o.s FROM search_postings p \
     CROSS JOIN LATERAL (SELECT count(*) AS c, coalesce(sum(q.n), 0) AS s \
       FROM search_postings q WHERE q.token = ANY($2::text[]) AND q.pos = p.pos) o \
     WHERE p.token = $1 AND p.pos < $6 AND p.room_id = ANY($3::text[]) \
       AND (NOT $5 OR p.pos <= ($4::bigint[])[array_position($3::text[], p.room_id)]) \
       AND o.c = cardinality($2::text[])";
const FILTERED: &str = " AND EXISTS (SELECT 1 FROM search_index s WHERE s.pos = p.pos \
       AND ($8::text[] IS NULL OR s.key = ANY($8)) \
       AND ($9::text[] IS NULL OR s.sender = ANY($9)) \
       AND NOT (s.sender = ANY($10)) \
       AND ($11::text[] IS NULL OR s.kind = ANY($11)) \
       AND NOT (s.kind = ANY($12)))";

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
        let mut conn = self.pool.acquire().await.doing(DOING)?;
        // The rarest token drives the walk (the fewest postings, counted up to PROBE).
        let driver: String = if query.tokens.len() == 1 {
            query.tokens[0].clone()
        } else {
            sqlx::query_scalar(
                "SELECT t.token FROM unnest($1::text[]) WITH ORDINALITY AS t(token, i) \
                 ORDER BY (SELECT count(*) FROM (SELECT 1 FROM search_postings p \
                   WHERE p.token = t.token LIMIT $2) x), t.i LIMIT 1",
            )
            .bind(&query.tokens)
            .bind(PROBE)
            .fetch_one(&mut *conn)
            .await
            .doing(DOING)?
        };
        let mut others: Vec<&str> = Vec::with_capacity(query.tokens.len());
        for token in &query.tokens {
            if *token != driver && !others.contains(&token.as_str()) {
                others.push(token);
            }
        }
        let rooms: Vec<&str> = query.rooms.iter().map(|r| r.room_id.as_str()).collect();
        let bounds: Vec<i64> =
            query.rooms.iter().map(|r| r.upto.map_or(i64::MAX, |p| to_i64(p.0))).collect();
        let bounded = query.rooms.iter().any(|r| r.upto.is_some());
        let filtered = !query.keys.is_empty()
            || query.senders.is_some()
            || !query.not_senders.is_empty()
            || query.types.is_some()
            || !query.not_types.is_empty();
        let sql = if filtered {
            format!("{CANDIDATES}{FILTERED} ORDER BY p.pos DESC LIMIT $7")
        } else {
            format!("{CANDIDATES} ORDER BY p.pos DESC LIMIT $7")
        };
        // An unnamed statement, planned with its parameters each time.
        let mut statement = sqlx::query(&sql)
            .persistent(false)
            .bind(&driver)
            .bind(&others)
            .bind(&rooms)
            .bind(&bounds)
            .bind(bounded)
            .bind(before)
            .bind(MAX_CANDIDATES as i64);
        if filtered {
            let keys = (!query.keys.is_empty()).then_some(&query.keys);
            statement = statement
                .bind(keys)
                .bind(query.senders.as_ref())
                .bind(&query.not_senders)
                .bind(query.types.as_ref())
                .bind(&query.not_types);
        }
        // The walk is always the driver's postings read backwards from the index, stopping
        // at the cap: without statistics (a fresh or just-migrated table) the planner would
        // rather read every posting of a common token and sort them (hundreds of ms).
        let mut tx = conn.begin().await.doing(DOING)?;
        sqlx::query("SET LOCAL enable_bitmapscan = off").execute(&mut *tx).await.doing(DOING)?;
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.doing(DOING)?;
        let rows = statement.fetch_all(&mut *tx).await.doing(DOING)?;
        tx.commit().await.doing(DOING)?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            let pos: i64 = row.try_get(0).doing(DOING)?;
            let occurrences: i64 = row.try_get(2).doing(DOING)?;
            let hit = SearchHit {
                event_id: String::new(),
                room_id: row.try_get(1).doing(DOING)?,
                pos: StreamPos(to_u64(pos)?),
                rank: 0.0,
            };
            candidates.push((hit, to_u64(occurrences)?));
        }
        let mut page = page_of(query, candidates);
        // The page's event ids (a hit whose entry went meanwhile, by a redaction, is dropped).
        let positions: Vec<i64> = page.hits.iter().map(|h| to_i64(h.pos.0)).collect();
        let rows = sqlx::query("SELECT pos, event_id FROM search_index WHERE pos = ANY($1)")
            .bind(&positions)
            .fetch_all(&mut *conn)
            .await
            .doing(DOING)?;
        let mut ids = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let pos: i64 = row.try_get(0).doing(DOING)?;
            let id: String = row.try_get(1).doing(DOING)?;
            ids.insert(pos, id);
        }
        page.hits.retain_mut(|hit| match ids.remove(&to_i64(hit.pos.0)) {
            Some(id) => {
                hit.event_id = id;
                true
            }
            None => false,
        });
        Ok(page)
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
