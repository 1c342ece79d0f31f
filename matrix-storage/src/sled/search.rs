//! The search index: an inverted index maintained in each change set ([`apply_in`]), and the
//! reports. Tables added without a new schema number: a store written before them has no
//! index entries and no reports.
//!
//! - `SEARCH` (postings): `token, room, position` -> how often the token occurs there;
//! - `SEARCH_DOC`: `position` -> the indexed event: id, room, sender, type, key and its
//!   tokens (so that a redaction finds its postings);
//! - `REPORT`: `id` -> a report.
//!
//! A query walks the postings of its tokens in each room from the top down, all at once (a
//! zig-zag join: each token's next position at or below the highest any other token allows,
//! one tree descent per step), so a rare token bounds the walk for a common one; the rooms'
//! walks are merged by position and stop at the [`MAX_CANDIDATES`] most recent matches of
//! them all (so a search reads about that many entries, however many rooms it spans).

use async_trait::async_trait;

use super::batch::Tx;
use super::engine::Tree;
use super::records::decode_event;
use super::{EVENT, REDACTION, REPORT, SEARCH, SEARCH_DOC, SledStore, bump, unavailable};
use crate::codec::{Dec, Enc};
use crate::{
    Applied, ChangeSet, ContentReport, ErrorKind, MAX_CANDIDATES, ReportStore, ReportTarget,
    Result, SearchCursor, SearchHit, SearchOrder, SearchPage, SearchQuery, SearchStore,
    StorageError, StoredReport, StreamPos, page_of, token_counts,
};

fn posting(token: &str, room: &str, pos: u64) -> Vec<u8> {
    Enc::table(SEARCH).str(token).str(room).u64(pos).done()
}

fn doc_key(pos: u64) -> Vec<u8> {
    Enc::table(SEARCH_DOC).u64(pos).done()
}

/// Takes the entry at `pos` out of the index, if one is there (its room is purged).
pub(super) fn unindex(tx: &Tx<'_>, pos: u64) -> Result<()> {
    if let Some(doc) = tx.remove(doc_key(pos))? {
        let doc = decode_doc(&doc)?;
        for token in &doc.tokens {
            tx.remove(posting(token, &doc.room_id, pos))?;
        }
    }
    Ok(())
}

struct Doc {
    event_id: String,
    room_id: String,
    sender: String,
    kind: String,
    key: String,
    tokens: Vec<String>,
}

fn decode_doc(bytes: &[u8]) -> Result<Doc> {
    let mut dec = Dec::new(bytes);
    let mut read = || -> Result<Doc> {
        let (event_id, room_id, sender, kind, key) =
            (dec.str()?, dec.str()?, dec.str()?, dec.str()?, dec.str()?);
        let n = dec.var()?;
        let mut tokens = Vec::new();
        for _ in 0..n {
            tokens.push(dec.str()?);
        }
        Ok(Doc { event_id, room_id, sender, kind, key, tokens })
    };
    read().map_err(|e| {
        StorageError::with_source(ErrorKind::Corrupt, "a search entry does not decode", e)
    })
}

/// Indexes the change set's entries, removes what it redacts, stores its reports.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet, applied: &Applied) -> Result<()> {
    if !changes.search.is_empty() {
        let timeline = changes.events.iter().filter(|e| e.in_timeline).zip(&applied.stream);
        let positions: Vec<(&str, u64)> =
            timeline.map(|(e, pos)| (e.event_id.as_str(), pos.0)).collect();
        for entry in &changes.search {
            let Some((_, pos)) = positions.iter().find(|(id, _)| *id == entry.event_id) else {
                continue;
            };
            let redacted = tx.get(Enc::table(REDACTION).str(&entry.event_id).done())?.is_some();
            if redacted || tx.get(doc_key(*pos))?.is_some() {
                continue;
            }
            let counts = token_counts(&entry.text);
            let mut doc = Enc::default()
                .str(&entry.event_id)
                .str(&entry.room_id)
                .str(&entry.sender)
                .str(&entry.kind)
                .str(&entry.key)
                .var(counts.len() as u64);
            for (token, n) in &counts {
                tx.insert(
                    posting(token, &entry.room_id, *pos),
                    Enc::default().var(u64::from(*n)).done(),
                )?;
                doc = doc.str(token);
            }
            tx.insert(doc_key(*pos), doc.done())?;
        }
    }
    for (redacted, _) in &changes.redactions {
        let Some(bytes) = tx.get(Enc::table(EVENT).str(redacted).done())? else { continue };
        let Some(pos) = decode_event(redacted, &bytes)?.stream else { continue };
        let Some(doc) = tx.remove(doc_key(pos.0))? else { continue };
        let doc = decode_doc(&doc)?;
        for token in &doc.tokens {
            tx.remove(posting(token, &doc.room_id, pos.0))?;
        }
    }
    for report in &changes.reports {
        let id = bump(tx, "next_report", 1, 1)?;
        tx.insert(Enc::table(REPORT).u64(id).done(), encode_report(report))?;
    }
    for id in &changes.deleted_reports {
        tx.remove(Enc::table(REPORT).u64(*id).done())?;
    }
    Ok(())
}

/// The highest posting of `token` in `room` at or below `at`: its position and count.
fn seek(tree: &Tree, token: &str, room: &str, at: u64) -> Result<Option<(u64, u64)>> {
    let low = posting(token, room, 0);
    let high = posting(token, room, at);
    match tree.range(low..=high).next_back() {
        None => Ok(None),
        Some(entry) => {
            let (key, value) = entry.map_err(unavailable)?;
            let pos =
                u64::from_be_bytes(key[key.len() - 8..].try_into().map_err(|_| corrupt_posting())?);
            Ok(Some((pos, Dec::new(&value).var()?)))
        }
    }
}

fn corrupt_posting() -> StorageError {
    StorageError::new(ErrorKind::Corrupt, "a search posting does not decode")
}

/// The walk of one room's matches, from the top down: each token's postings joined zig-zag
/// (each token's next position at or below the highest any other token allows, one tree
/// descent per step), so that a rare token bounds the walk for a common one.
struct RoomWalk<'q> {
    room: &'q str,
    /// The next position to look at (at or below); 0: done.
    target: u64,
}

impl RoomWalk<'_> {
    /// The room's next match (highest first) with the sum of its tokens' counts.
    /// Without `filtered` (no key, sender or type filter) the entry is not read: the hit has
    /// no event id yet.
    fn next(
        &mut self,
        store: &SledStore,
        query: &SearchQuery,
        filtered: bool,
    ) -> Result<Option<(SearchHit, u64)>> {
        'walk: while self.target > 0 {
            let mut total = 0u64;
            for token in &query.tokens {
                match seek(&store.tree, token, self.room, self.target)? {
                    None => break 'walk,
                    Some((pos, n)) if pos == self.target => total += n,
                    Some((pos, _)) => {
                        self.target = pos;
                        continue 'walk;
                    }
                }
            }
            let at = self.target;
            self.target = at - 1;
            if !filtered {
                // The entry is read for the page's hits only (see `search`).
                let hit = SearchHit {
                    event_id: String::new(),
                    room_id: self.room.to_owned(),
                    pos: StreamPos(at),
                    rank: 0.0,
                };
                return Ok(Some((hit, total)));
            }
            let Some(bytes) = store.get(&doc_key(at))? else { continue };
            let doc = decode_doc(&bytes)?;
            if doc.room_id == self.room && query.admits(&doc.key, &doc.sender, &doc.kind) {
                let hit = SearchHit {
                    event_id: doc.event_id,
                    room_id: doc.room_id,
                    pos: StreamPos(at),
                    rank: 0.0,
                };
                return Ok(Some((hit, total)));
            }
        }
        self.target = 0;
        Ok(None)
    }
}

#[async_trait]
impl SearchStore for SledStore {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        self.flusher.check()?;
        if query.tokens.is_empty() {
            return Ok(SearchPage::default());
        }
        let before = match (query.order, query.from) {
            (SearchOrder::Recent, Some(SearchCursor::Before(pos))) => pos.0,
            _ => u64::MAX,
        };
        // The rooms' walks merged, highest position first, until the most recent
        // MAX_CANDIDATES matches of all the rooms are found (not that many per room).
        let filtered = !query.keys.is_empty()
            || query.senders.is_some()
            || !query.not_senders.is_empty()
            || query.types.is_some()
            || !query.not_types.is_empty();
        let mut walks: Vec<RoomWalk<'_>> = Vec::with_capacity(query.rooms.len());
        let mut heads: Vec<Option<(SearchHit, u64)>> = Vec::with_capacity(query.rooms.len());
        let mut queue = std::collections::BinaryHeap::new();
        for (n, room) in query.rooms.iter().enumerate() {
            // A room named twice is walked once, with its first bound (as `room_bound`).
            if query.rooms[..n].iter().any(|r| r.room_id == room.room_id) {
                continue;
            }
            let upto = room.upto.map_or(u64::MAX, |p| p.0);
            let mut walk =
                RoomWalk { room: &room.room_id, target: upto.min(before.saturating_sub(1)) };
            let head = walk.next(self, query, filtered)?;
            if let Some((hit, _)) = &head {
                queue.push((hit.pos.0, walks.len()));
            }
            walks.push(walk);
            heads.push(head);
        }
        let mut candidates = Vec::new();
        while candidates.len() < MAX_CANDIDATES {
            let Some((_, i)) = queue.pop() else { break };
            let Some(found) = heads[i].take() else { continue };
            candidates.push(found);
            heads[i] = walks[i].next(self, query, filtered)?;
            if let Some((hit, _)) = &heads[i] {
                queue.push((hit.pos.0, i));
            }
        }
        let mut page = page_of(query, candidates);
        if !filtered {
            // The page's entries (their event ids); postings and entry go together.
            let mut hits = Vec::with_capacity(page.hits.len());
            for mut hit in std::mem::take(&mut page.hits) {
                let Some(bytes) = self.get(&doc_key(hit.pos.0))? else { continue };
                let doc = decode_doc(&bytes)?;
                if doc.room_id == hit.room_id {
                    hit.event_id = doc.event_id;
                    hits.push(hit);
                }
            }
            page.hits = hits;
        }
        Ok(page)
    }
}

fn encode_report(report: &ContentReport) -> Vec<u8> {
    let enc = match &report.target {
        ReportTarget::Event { room_id, event_id } => {
            Enc::default().u64(0).str(room_id).str(event_id)
        }
        ReportTarget::Room { room_id } => Enc::default().u64(1).str(room_id),
        ReportTarget::User { user_id } => Enc::default().u64(2).str(user_id),
    };
    enc.str(&report.reporter)
        .opt_str(report.reason.as_deref())
        .bool(report.score.is_some())
        .i64(report.score.unwrap_or(0))
        .u64(report.received_ts)
        .done()
}

fn decode_report(id: u64, bytes: &[u8]) -> Result<StoredReport> {
    let mut dec = Dec::new(bytes);
    let mut read = || -> Result<ContentReport> {
        let target = match dec.u64()? {
            0 => ReportTarget::Event { room_id: dec.str()?, event_id: dec.str()? },
            1 => ReportTarget::Room { room_id: dec.str()? },
            2 => ReportTarget::User { user_id: dec.str()? },
            _ => return Err(StorageError::new(ErrorKind::Corrupt, "unknown report kind")),
        };
        let reporter = dec.str()?;
        let reason = dec.opt_str()?;
        let has_score = dec.bool()?;
        let score = dec.i64()?;
        Ok(ContentReport {
            reporter,
            target,
            reason,
            score: has_score.then_some(score),
            received_ts: dec.u64()?,
        })
    };
    let report = read().map_err(|e| {
        StorageError::with_source(ErrorKind::Corrupt, format!("report {id} does not decode"), e)
    })?;
    Ok(StoredReport { id, report })
}

#[async_trait]
impl ReportStore for SledStore {
    async fn reports(&self, after: u64, limit: usize) -> Result<Vec<StoredReport>> {
        self.flusher.check()?;
        let start = Enc::table(REPORT).u64(after.saturating_add(1)).done();
        let end = Enc::table(REPORT).u64(u64::MAX).done();
        let mut out = Vec::new();
        for entry in self.tree.range(start..=end).take(limit) {
            let (key, value) = entry.map_err(unavailable)?;
            let id = Dec::new(&key).skip_table()?.u64()?;
            out.push(decode_report(id, &value)?);
        }
        Ok(out)
    }
}
