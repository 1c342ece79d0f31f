//! Server-side search of room events (the index every backend keeps as events are stored) and
//! content reports.
//!
//! Text is cut into tokens here, once, the same way for every backend: lowercase runs of
//! letters and digits, each at most [`MAX_TOKEN_CHARS`] characters (longer runs are cut),
//! at most [`MAX_TOKENS_PER_ENTRY`] distinct tokens per indexed text (the first ones).
//! A query matches an entry holding every one of its tokens. Results come from the
//! [`MAX_CANDIDATES`] most recent matches: ordered by position (`recent`), or ranked among
//! them (`rank`: how often the tokens occur), and [`SearchPage::count`] counts them.

use std::collections::BTreeMap;

use super::StreamPos;

/// The longest token, in characters (a longer run of letters and digits is cut to this).
pub const MAX_TOKEN_CHARS: usize = 64;
/// The most distinct tokens indexed per entry (the first ones in the text).
pub const MAX_TOKENS_PER_ENTRY: usize = 1024;
/// The most tokens a query may hold.
pub const MAX_QUERY_TOKENS: usize = 16;
/// How many of the most recent matches a query looks at (ranks, counts, pages through).
pub const MAX_CANDIDATES: usize = 2000;

/// The tokens of `text`, in order (repeats kept).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = 0usize;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if chars < MAX_TOKEN_CHARS {
                current.extend(c.to_lowercase());
            }
            chars += 1;
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
            chars = 0;
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// The distinct tokens of `text` with how often each occurs, at most
/// [`MAX_TOKENS_PER_ENTRY`] (the first ones met).
pub fn token_counts(text: &str) -> BTreeMap<String, u32> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for token in tokenize(text) {
        if let Some(n) = counts.get_mut(&token) {
            *n = n.saturating_add(1);
        } else if counts.len() < MAX_TOKENS_PER_ENTRY {
            counts.insert(token, 1);
        }
    }
    counts
}

/// The distinct tokens of a query, in the order first met.
pub fn query_tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in tokenize(text) {
        if !out.contains(&token) {
            out.push(token);
        }
    }
    out
}

/// A text of a timeline event to index ([`crate::ChangeSet::search`]): the event must be a
/// timeline event of the same change set (else the entry is skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    /// The event.
    pub event_id: String,
    /// Its room.
    pub room_id: String,
    /// Its sender.
    pub sender: String,
    /// Its type.
    pub kind: String,
    /// Where the text is: `content.body`, `content.name` or `content.topic`.
    pub key: String,
    /// The text.
    pub text: String,
}

/// The order of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Most recent first.
    Recent,
    /// Most occurrences of the query's tokens first (then most recent).
    Rank,
}

/// A room to search, up to a position (a departed member's last one) or all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRoom {
    /// The room.
    pub room_id: String,
    /// Only events at or below this position.
    pub upto: Option<StreamPos>,
}

/// Where a page of results continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchCursor {
    /// `recent`: the matches below this position.
    Before(StreamPos),
    /// `rank`: the ranked matches after the first this many.
    Skip(u64),
}

/// A search of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The tokens ([`query_tokens`]); every one must occur. None: nothing matches.
    pub tokens: Vec<String>,
    /// The rooms.
    pub rooms: Vec<SearchRoom>,
    /// The keys to look in (`content.body`...); empty: all.
    pub keys: Vec<String>,
    /// Only these senders, if given.
    pub senders: Option<Vec<String>>,
    /// Not these senders.
    pub not_senders: Vec<String>,
    /// Only these event types, if given.
    pub types: Option<Vec<String>>,
    /// Not these event types.
    pub not_types: Vec<String>,
    /// The order.
    pub order: SearchOrder,
    /// Where to continue (a [`SearchPage::next`] of the same query), or from the start.
    pub from: Option<SearchCursor>,
    /// The most hits to answer.
    pub limit: usize,
}

impl SearchQuery {
    /// Whether an entry's key, sender and type pass the query's filters.
    pub fn admits(&self, key: &str, sender: &str, kind: &str) -> bool {
        (self.keys.is_empty() || self.keys.iter().any(|k| k == key))
            && self.senders.as_ref().is_none_or(|s| s.iter().any(|x| x == sender))
            && !self.not_senders.iter().any(|x| x == sender)
            && self.types.as_ref().is_none_or(|t| t.iter().any(|x| x == kind))
            && !self.not_types.iter().any(|x| x == kind)
    }

    /// The position bound of `room` in the query, if the room is searched.
    pub fn room_bound(&self, room_id: &str) -> Option<u64> {
        self.rooms.iter().find(|r| r.room_id == room_id).map(|r| r.upto.map_or(u64::MAX, |p| p.0))
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The event.
    pub event_id: String,
    /// Its room.
    pub room_id: String,
    /// Its position.
    pub pos: StreamPos,
    /// Its rank (higher is better; comparable within one answer only).
    pub rank: f64,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    /// The hits, in the query's order.
    pub hits: Vec<SearchHit>,
    /// Where the next page starts, if there are more.
    pub next: Option<SearchCursor>,
    /// How many matches there are among the [`MAX_CANDIDATES`] most recent (so at most that),
    /// from where the page starts (`recent`: at or below its cursor; `rank`: all).
    pub count: u64,
}

/// Orders candidate matches (most recent first, at most [`MAX_CANDIDATES`], each with its
/// total token count) into a page: the backends' common last step.
pub fn page_of(query: &SearchQuery, mut candidates: Vec<(SearchHit, u64)>) -> SearchPage {
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0.pos));
    candidates.truncate(MAX_CANDIDATES);
    let count = candidates.len() as u64;
    let limit = query.limit.max(1);
    match query.order {
        SearchOrder::Recent => {
            let before = match query.from {
                Some(SearchCursor::Before(pos)) => pos,
                _ => StreamPos(u64::MAX),
            };
            let mut hits: Vec<SearchHit> =
                candidates.into_iter().map(|(h, _)| h).filter(|h| h.pos < before).collect();
            let more = hits.len() > limit;
            hits.truncate(limit);
            let next = more.then(|| SearchCursor::Before(hits[hits.len() - 1].pos));
            SearchPage { hits, next, count }
        }
        SearchOrder::Rank => {
            for (hit, occurrences) in &mut candidates {
                hit.rank = *occurrences as f64;
            }
            candidates.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.pos.cmp(&a.0.pos)));
            let skip = match query.from {
                Some(SearchCursor::Skip(n)) => usize::try_from(n).unwrap_or(usize::MAX),
                _ => 0,
            };
            let rest = candidates.len().saturating_sub(skip);
            let hits: Vec<SearchHit> =
                candidates.into_iter().skip(skip).take(limit).map(|(h, _)| h).collect();
            let next = (rest > limit).then(|| SearchCursor::Skip((skip + limit) as u64));
            SearchPage { hits, next, count }
        }
    }
}

/// What is reported ([`ContentReport`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// An event of a room.
    Event {
        /// The room.
        room_id: String,
        /// The event.
        event_id: String,
    },
    /// A room.
    Room {
        /// The room.
        room_id: String,
    },
    /// A user.
    User {
        /// The user.
        user_id: String,
    },
}

/// A report of content to the server's administrators ([`crate::ChangeSet::reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentReport {
    /// Who reported it.
    pub reporter: String,
    /// What.
    pub target: ReportTarget,
    /// Why, as the reporter said.
    pub reason: Option<String>,
    /// The score the reporter gave an event (-100 most offensive to 0 inoffensive).
    pub score: Option<i64>,
    /// When (ms since the epoch).
    pub received_ts: u64,
}

/// A stored report, with the id the store gave it (increasing in the order they were stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// Its id.
    pub id: u64,
    /// The report.
    pub report: ContentReport,
}
