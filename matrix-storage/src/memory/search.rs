//! The in-memory search index (every entry looked at per query: for tests and embedding) and
//! the reports.

use std::collections::{BTreeMap, HashMap};

use crate::{
    ContentReport, MAX_CANDIDATES, SearchCursor, SearchEntry, SearchHit, SearchOrder, SearchPage,
    SearchQuery, StoredReport, StreamPos, page_of, token_counts,
};

#[derive(Debug)]
struct Indexed {
    entry: SearchEntry,
    counts: BTreeMap<String, u32>,
}

#[derive(Debug, Default)]
pub(super) struct SearchIndex {
    /// position -> entries of the event there.
    entries: BTreeMap<u64, Vec<Indexed>>,
    /// event -> its position.
    positions: HashMap<String, u64>,
    reports: Vec<StoredReport>,
    /// The id of the last report stored (ids are not reused when reports are deleted).
    last_report: u64,
}

impl SearchIndex {
    pub(super) fn add(&mut self, pos: StreamPos, entry: SearchEntry) {
        let counts = token_counts(&entry.text);
        self.positions.insert(entry.event_id.clone(), pos.0);
        self.entries.entry(pos.0).or_default().push(Indexed { entry, counts });
    }

    pub(super) fn remove(&mut self, event_id: &str) {
        if let Some(pos) = self.positions.remove(event_id) {
            self.entries.remove(&pos);
        }
    }

    pub(super) fn search(&self, query: &SearchQuery) -> SearchPage {
        if query.tokens.is_empty() || query.rooms.is_empty() {
            return SearchPage::default();
        }
        let before = match (query.order, query.from) {
            (SearchOrder::Recent, Some(SearchCursor::Before(pos))) => pos.0,
            _ => u64::MAX,
        };
        let mut candidates = Vec::new();
        for (pos, entries) in self.entries.range(..before).rev() {
            if candidates.len() == MAX_CANDIDATES {
                break;
            }
            let mut best: Option<u64> = None;
            for Indexed { entry, counts } in entries {
                let Some(upto) = query.room_bound(&entry.room_id) else { continue };
                if *pos > upto || !query.admits(&entry.key, &entry.sender, &entry.kind) {
                    continue;
                }
                let found: Option<u64> =
                    query.tokens.iter().map(|t| counts.get(t).map(|n| u64::from(*n))).sum();
                if let Some(n) = found {
                    best = Some(best.unwrap_or(0).max(n));
                }
            }
            if let (Some(n), Some(first)) = (best, entries.first()) {
                let hit = SearchHit {
                    event_id: first.entry.event_id.clone(),
                    room_id: first.entry.room_id.clone(),
                    pos: StreamPos(*pos),
                    rank: 0.0,
                };
                candidates.push((hit, n));
            }
        }
        page_of(query, candidates)
    }

    pub(super) fn report(&mut self, reports: Vec<ContentReport>, deleted: &[u64]) {
        for report in reports {
            self.last_report += 1;
            self.reports.push(StoredReport { id: self.last_report, report });
        }
        self.reports.retain(|r| !deleted.contains(&r.id));
    }

    pub(super) fn reports(&self, after: u64, limit: usize) -> Vec<StoredReport> {
        self.reports.iter().filter(|r| r.id > after).take(limit).cloned().collect()
    }
}
