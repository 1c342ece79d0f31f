//! Server-side search (`POST /search`, category `room_events`) and content reports.
//!
//! Every timeline event's searchable text (`content.body` of `m.room.message`,
//! `content.name` of `m.room.name`, `content.topic` of `m.room.topic`) goes into the store's
//! index in the change set that stores the event ([`search_entry`], for our events and
//! received ones alike); a redaction takes it out in its own change set. A search asks the
//! index for the rooms the user may see (their departure bounding a room they left), then
//! asks the one visibility function ([`Rooms::sees`]) about each hit, so what the index holds
//! never decides what a user is shown.

use std::sync::Arc;

use matrix_core::Pdu;
use matrix_storage::{
    ContentReport, ReportTarget, SearchCursor, SearchEntry, SearchOrder, SearchQuery, SearchRoom,
    StreamPos,
};
use ruma::UserId;

use super::visibility::Visibility;
use super::{EventFilter, Rooms};
use crate::error::ApiError;

/// The longest search term, in bytes.
pub(crate) const MAX_TERM_BYTES: usize = 1024;
/// The most results a page answers (a filter's `limit` above it is lowered to it).
pub(crate) const MAX_LIMIT: usize = 50;
/// The most pages of the index one request reads while visibility drops hits (the client
/// continues from `next_batch`).
const MAX_INDEX_PAGES: usize = 8;
/// The longest `reason` of a report, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 4096;

/// The keys a search may look in.
pub(crate) const KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];

/// The searchable text of a timeline event, for the store's index.
pub(crate) fn search_entry(pdu: &Pdu) -> Option<SearchEntry> {
    let (key, field) = match (pdu.kind(), pdu.state_key()) {
        ("m.room.message", None) => ("content.body", "body"),
        ("m.room.name", Some("")) => ("content.name", "name"),
        ("m.room.topic", Some("")) => ("content.topic", "topic"),
        _ => return None,
    };
    let text = pdu.content().get_str(field)?;
    Some(SearchEntry {
        event_id: pdu.event_id().to_owned(),
        room_id: pdu.room_id().to_owned(),
        sender: pdu.sender().to_owned(),
        kind: pdu.kind().to_owned(),
        key: key.to_owned(),
        text: text.to_owned(),
    })
}

/// A search of room events, checked.
#[derive(Debug, Clone)]
pub(crate) struct EventSearch {
    pub(crate) term: String,
    pub(crate) keys: Vec<String>,
    pub(crate) order: SearchOrder,
    pub(crate) filter: EventFilter,
    pub(crate) rooms: Option<Vec<String>>,
    pub(crate) not_rooms: Vec<String>,
    pub(crate) limit: usize,
    pub(crate) from: Option<SearchCursor>,
}

/// One result: the event, its rank, its position.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) pdu: Arc<Pdu>,
    pub(crate) rank: f64,
    pub(crate) pos: StreamPos,
}

/// A page of results.
#[derive(Debug, Clone, Default)]
pub(crate) struct Results {
    pub(crate) found: Vec<Found>,
    pub(crate) next: Option<SearchCursor>,
    pub(crate) count: u64,
    /// The words searched for (the term's tokens).
    pub(crate) highlights: Vec<String>,
    /// The rooms searched, with what the user may see of each.
    pub(crate) rooms: Vec<(String, Visibility)>,
}

/// The `next_batch` of a cursor.
pub(crate) fn batch_token(cursor: SearchCursor) -> String {
    match cursor {
        SearchCursor::Before(pos) => format!("r{}", pos.0),
        SearchCursor::Skip(n) => format!("k{n}"),
    }
}

/// The cursor of a `next_batch` made for `order`.
pub(crate) fn parse_batch(token: &str, order: SearchOrder) -> Result<SearchCursor, ApiError> {
    let bad = || ApiError::invalid_param("next_batch is not a token of this search");
    let (kind, n) = token.split_at_checked(1).ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    match (kind, order) {
        ("r", SearchOrder::Recent) => Ok(SearchCursor::Before(StreamPos(n))),
        ("k", SearchOrder::Rank) => Ok(SearchCursor::Skip(n)),
        _ => Err(bad()),
    }
}

impl Rooms {
    /// Searches the rooms `user` is or was in for `search`: only events they may see.
    pub(crate) async fn search(
        &self,
        user: &UserId,
        search: &EventSearch,
    ) -> Result<Results, ApiError> {
        if search.term.len() > MAX_TERM_BYTES {
            return Err(ApiError::invalid_param(format!(
                "search_term is longer than {MAX_TERM_BYTES} bytes"
            )));
        }
        let tokens = matrix_storage::query_tokens(&search.term);
        if tokens.len() > matrix_storage::MAX_QUERY_TOKENS {
            return Err(ApiError::invalid_param(format!(
                "search_term has more than {} words",
                matrix_storage::MAX_QUERY_TOKENS
            )));
        }
        let mut results = Results { highlights: tokens.clone(), ..Results::default() };
        let mut lookers = std::collections::HashMap::new();
        let mut rooms = Vec::new();
        for (room_id, _) in self.storage().rooms_of_user(user.as_str()).await? {
            if search.rooms.as_ref().is_some_and(|r| !r.contains(&room_id))
                || search.not_rooms.contains(&room_id)
                || self.storage().forgotten(&room_id, user.as_str()).await?
            {
                continue;
            }
            // Rooms the user never joined (an invite, a refused knock) give nothing.
            let Ok((visibility, looker)) = self.access(&room_id, user).await else { continue };
            let upto = match visibility {
                Visibility::Now(_) => None,
                Visibility::Until(pos, _) => Some(pos),
            };
            rooms.push(SearchRoom { room_id: room_id.clone(), upto });
            results.rooms.push((room_id.clone(), visibility));
            lookers.insert(room_id, (visibility, looker));
        }
        if tokens.is_empty() || rooms.is_empty() {
            return Ok(results);
        }
        // What the index can filter exactly; patterns (`m.room.*`) are left to `keeps`.
        let exact = |list: &[String]| list.iter().all(|t| !t.contains('*'));
        let types = search.filter.types.clone().filter(|t| exact(t));
        let not_types =
            if exact(&search.filter.not_types) { search.filter.not_types.clone() } else { vec![] };
        let mut query = SearchQuery {
            tokens,
            rooms,
            keys: search.keys.clone(),
            senders: search.filter.senders.clone(),
            not_senders: search.filter.not_senders.clone(),
            types,
            not_types,
            order: search.order,
            from: search.from,
            limit: search.limit,
        };
        for page_number in 0..MAX_INDEX_PAGES {
            query.limit = search.limit - results.found.len();
            let page = self.storage().search(&query).await?;
            if page_number == 0 {
                results.count = page.count;
            }
            for hit in page.hits {
                let Some((visibility, looker)) = lookers.get(&hit.room_id) else { continue };
                if !visibility.allows(Some(hit.pos))
                    || self.storage().redaction_of(&hit.event_id).await?.is_some()
                {
                    continue;
                }
                let Some(pdu) = self.pdu(&hit.event_id).await? else { continue };
                if pdu.room_id() != hit.room_id
                    || self.is_erased(pdu.sender()).await?
                    || !search.filter.keeps(&pdu)
                    || !self.sees(looker, &pdu, hit.pos).await?
                {
                    continue;
                }
                results.found.push(Found { pdu, rank: hit.rank, pos: hit.pos });
            }
            results.next = page.next;
            match page.next {
                Some(next) if results.found.len() < search.limit => query.from = Some(next),
                _ => break,
            }
        }
        Ok(results)
    }

    /// Stores a report of an event of a room `reporter` is joined to and may see; 404
    /// `M_NOT_FOUND` alike for an unknown room or event, one not seen, one redacted and a
    /// room the reporter is not joined to (so a report says nothing of what exists).
    pub(crate) async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &str,
        event_id: &str,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<(), ApiError> {
        let not_found =
            || ApiError::not_found("the event was not found or you are not joined to the room");
        let joined = self.storage().membership(room_id, reporter.as_str()).await?;
        if joined.as_deref() != Some("join") {
            return Err(not_found());
        }
        let pdu = match self.event_for(room_id, reporter, event_id).await {
            Ok(pdu) => pdu,
            Err(e) if matches!(e.errcode(), "M_NOT_FOUND" | "M_FORBIDDEN") => {
                return Err(not_found());
            }
            Err(e) => return Err(e),
        };
        if self.storage().redaction_of(pdu.event_id()).await?.is_some() {
            return Err(not_found());
        }
        let target =
            ReportTarget::Event { room_id: room_id.to_owned(), event_id: event_id.to_owned() };
        self.store_report(reporter, target, reason, score).await
    }

    /// Stores a report of a room this server knows (404 `M_NOT_FOUND` for another).
    pub(crate) async fn report_room(
        &self,
        reporter: &UserId,
        room_id: &str,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if self.storage().room(room_id).await?.is_none() {
            return Err(ApiError::not_found("the room was not found"));
        }
        let target = ReportTarget::Room { room_id: room_id.to_owned() };
        self.store_report(reporter, target, reason, None).await
    }

    /// Stores a report of a user: one of ours that exists, or another server's (which we
    /// cannot check); 404 `M_NOT_FOUND` for an unknown user of ours.
    pub(crate) async fn report_user(
        &self,
        reporter: &UserId,
        user: &UserId,
        ours: bool,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if ours && self.storage().user(user.as_str()).await?.is_none() {
            return Err(ApiError::not_found("the user was not found"));
        }
        let target = ReportTarget::User { user_id: user.as_str().to_owned() };
        self.store_report(reporter, target, reason, None).await
    }

    async fn store_report(
        &self,
        reporter: &UserId,
        target: ReportTarget,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<(), ApiError> {
        if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(ApiError::invalid_param(format!(
                "reason is longer than {MAX_REASON_BYTES} bytes"
            )));
        }
        let received_ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut changes = matrix_storage::ChangeSet::new();
        changes.reports.push(ContentReport {
            reporter: reporter.as_str().to_owned(),
            target,
            reason,
            score,
            received_ts,
        });
        self.storage().apply(changes).await?;
        Ok(())
    }
}
