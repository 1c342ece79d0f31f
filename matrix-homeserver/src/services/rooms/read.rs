//! Reading rooms back for a user: what they may see (history visibility), state, single
//! events, pagination, context and members.

use std::sync::Arc;

use matrix_core::Pdu;
use matrix_storage::{BackfillPos, Direction, SnapshotId, StreamPos};

use super::backfill;
pub(crate) use super::visibility::Visibility;
use super::visibility::{History, Looker, Reader};
use crate::services::federation::Federation;
use ruma::UserId;
use serde_json::Value;

use super::Rooms;
use super::format::{Shown, client_event};
use crate::error::ApiError;

/// The most timeline events one page of `/messages` or `/context` reads (a filter or
/// history visibility may drop most of them; the client continues from `end`).
const MAX_SCANNED: usize = 5_000;

/// Who looks at an event (the sender's own device sees its transaction id).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Viewer<'a> {
    pub(crate) user: &'a str,
    pub(crate) device: &'a str,
}

/// Where a page of a room's timeline starts or ends: a stream position in the timeline, or a
/// backfill position in the history before it (see `backfill.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// In the timeline.
    Stream(StreamPos),
    /// In the history before the timeline (`BackfillPos(0)`: the timeline's start).
    Backfill(BackfillPos),
}

/// A page of a room's timeline.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) events: Vec<Arc<Pdu>>,
    /// Where the next page starts; `None` when there is nothing more in that direction.
    pub(crate) next: Option<Page>,
    /// The position of the last event read (kept or not), or where the page started.
    pub(crate) reached: Page,
}

/// A page being read: who reads, what is kept so far.
struct Pager<'a, 'b> {
    looker: &'a Looker<'b>,
    filter: &'a EventFilter,
    limit: usize,
    events: Vec<Arc<Pdu>>,
    scanned: usize,
}

impl Pager<'_, '_> {
    fn full(&self) -> bool {
        self.events.len() >= self.limit
    }

    fn chunk(&mut self, next: Option<Page>, reached: Page) -> Chunk {
        Chunk { events: std::mem::take(&mut self.events), next, reached }
    }
}

/// Which events a page keeps (a room event filter's `types`, `not_types`, `senders`,
/// `not_senders`; `*` matches any suffix).
#[derive(Debug, Clone, Default)]
pub(crate) struct EventFilter {
    pub(crate) types: Option<Vec<String>>,
    pub(crate) not_types: Vec<String>,
    pub(crate) senders: Option<Vec<String>>,
    pub(crate) not_senders: Vec<String>,
}

fn matches_pattern(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl EventFilter {
    /// Whether the filter's `types` and `not_types` keep an event of this type.
    pub(crate) fn keeps_type(&self, kind: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.iter().any(|p| matches_pattern(p, kind)))
            && !self.not_types.iter().any(|p| matches_pattern(p, kind))
    }

    /// Whether the filter keeps this event.
    pub(crate) fn keeps(&self, pdu: &Pdu) -> bool {
        let sender = pdu.sender();
        self.keeps_type(pdu.kind())
            && self.senders.as_ref().is_none_or(|s| s.iter().any(|u| u == sender))
            && !self.not_senders.iter().any(|u| u == sender)
    }
}

/// Whether `looker` may see `pdu`, an event of the history before the room's timeline here,
/// to which `history` applies: as an event before every membership change we know of (the
/// user's own member events are always visible).
fn sees_history(looker: &Looker<'_>, history: History, pdu: &Pdu) -> bool {
    looker.administrator
        || (pdu.kind() == "m.room.member" && pdu.state_key() == Some(looker.user.as_str()))
        || history.allows(&looker.memberships, StreamPos(0))
}

impl Rooms {
    /// The state events of a snapshot.
    pub(crate) async fn state_events(
        &self,
        snapshot: SnapshotId,
    ) -> Result<Vec<Arc<Pdu>>, ApiError> {
        let entries = self.storage().state_full(snapshot).await?;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(pdu) = self.pdu(&entry.event_id).await? {
                events.push(pdu);
            }
        }
        Ok(events)
    }

    /// The client form of an event, as `viewer` sees it, with its bundled aggregations.
    pub(crate) async fn show(
        &self,
        pdu: &Pdu,
        viewer: Option<Viewer<'_>>,
    ) -> Result<Value, ApiError> {
        self.show_with(pdu, viewer, false).await
    }

    /// [`Rooms::show`]; `edits_only`: of the bundled aggregations only `m.replace` (for an
    /// event bundled in another's).
    pub(crate) async fn show_with(
        &self,
        pdu: &Pdu,
        viewer: Option<Viewer<'_>>,
        edits_only: bool,
    ) -> Result<Value, ApiError> {
        let mut shown = self.shown(pdu, viewer).await?;
        // A redacted event has no aggregations (spec: redactions).
        if shown.redacted_because.is_none() && !shown.erased {
            shown.relations = self.bundled(pdu, viewer, edits_only).await?;
        }
        Ok(client_event(pdu, shown))
    }

    /// The client form of an event without bundled aggregations.
    pub(crate) async fn show_plain(
        &self,
        pdu: &Pdu,
        viewer: Option<Viewer<'_>>,
    ) -> Result<Value, ApiError> {
        Ok(client_event(pdu, self.shown(pdu, viewer).await?))
    }

    /// How `viewer` is shown `pdu`, but its aggregations.
    async fn shown(&self, pdu: &Pdu, viewer: Option<Viewer<'_>>) -> Result<Shown, ApiError> {
        let mut shown = Shown::default();
        if let Some(redaction) = self.storage().redaction_of(pdu.event_id()).await?
            && let Some(redaction) = self.pdu(&redaction).await?
        {
            shown.redacted_because = Some(client_event(&redaction, Shown::default()));
        }
        shown.erased = self.is_erased(pdu.sender()).await?;
        if let Some(viewer) = viewer
            && viewer.user == pdu.sender()
        {
            shown.transaction_id = self.transaction_of(pdu.event_id(), viewer.device);
        }
        if let Some(replaced) = self.replaces_state(pdu).await? {
            if let Some(previous) = self.pdu(&replaced).await? {
                // The previous content as clients would see that event (redacted or not).
                let redacted = self.storage().redaction_of(previous.event_id()).await?.is_some();
                let content = if redacted {
                    let stripped =
                        matrix_core::redaction::redact(previous.json(), previous.rules());
                    stripped.get_object("content").cloned().unwrap_or_default()
                } else {
                    previous.content().clone()
                };
                shown.prev_content = Some(Value::Object(super::format::to_serde(&content)));
            }
            shown.replaces_state = Some(replaced);
        }
        Ok(shown)
    }

    /// The state event a state event replaced (at its type and state key, in the state
    /// before it), cached: it never changes.
    async fn replaces_state(&self, pdu: &Pdu) -> Result<Option<String>, ApiError> {
        let Some(state_key) = pdu.state_key() else { return Ok(None) };
        if let Some(replaced) = self.replaced.get(pdu.event_id()) {
            return Ok(replaced.map(|id| id.to_string()));
        }
        let replaced = match self.state_before_event(pdu).await? {
            Some(before) => self
                .storage()
                .state_get(before, pdu.kind(), state_key)
                .await?
                .filter(|id| id != pdu.event_id()),
            None => None,
        };
        self.replaced.insert(pdu.event_id().to_owned(), replaced.as_deref().map(Arc::from));
        Ok(replaced)
    }

    /// The client form of many events.
    pub(crate) async fn show_all(
        &self,
        pdus: &[Arc<Pdu>],
        viewer: Option<Viewer<'_>>,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::with_capacity(pdus.len());
        for pdu in pdus {
            out.push(self.show(pdu, viewer).await?);
        }
        Ok(out)
    }

    /// An event of a room the user may see.
    pub(crate) async fn event_for<'a>(
        &self,
        room_id: &str,
        reader: impl Into<Reader<'a>>,
        event_id: &str,
    ) -> Result<Arc<Pdu>, ApiError> {
        let (visibility, looker) = self.access(room_id, reader).await?;
        let stored = self.storage().event(event_id).await?;
        let Some(stored) = stored.filter(|e| e.room_id == room_id) else {
            return Err(ApiError::not_found("no such event in this room"));
        };
        let pdu = self.pdu(event_id).await?.ok_or_else(|| ApiError::not_found("no such event"))?;
        let visible = match stored.stream {
            Some(pos) => visibility.allows(Some(pos)) && self.sees(&looker, &pdu, pos).await?,
            // Backfilled: history from before the timeline.
            None if self.storage().backfill_position(event_id).await?.is_some() => {
                let history = self.history_before_timeline(room_id).await?;
                sees_history(&looker, history, &pdu)
            }
            None => false,
        };
        if visible { Ok(pdu) } else { Err(ApiError::not_found("no such event in this room")) }
    }

    /// A page of the timeline from `from` (exclusive; `None`: the end for backwards, the
    /// start for forwards) towards `to` (backwards: down to positions at or after it;
    /// forwards: before it), at most `limit` events the filter keeps and the user may see.
    /// At most [`MAX_SCANNED`] events are read for one page, whatever the filter drops.
    ///
    /// Backwards past the timeline's first event (with no `to`), the page goes on into the
    /// history before it (backfilled events, [`Page::Backfill`]); when that is exhausted and
    /// `federation` is given, more is fetched from the servers in the room
    /// ([`Rooms::backfill`], at most [`backfill::MAX_REQUESTS_PER_PAGE`] requests).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn messages<'a>(
        &self,
        federation: Option<&Federation>,
        room_id: &str,
        reader: impl Into<Reader<'a>>,
        from: Option<Page>,
        to: Option<StreamPos>,
        direction: Direction,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<(Page, Chunk), ApiError> {
        let (visibility, looker) = self.access(room_id, reader).await?;
        let mut ceiling = match visibility {
            Visibility::Now(_) => StreamPos(self.stream_position().await?.0.saturating_add(1)),
            Visibility::Until(until, _) => StreamPos(until.0.saturating_add(1)),
        };
        let mut floor = StreamPos(0);
        match (to, direction) {
            (Some(to), Direction::Forwards) => ceiling = ceiling.min(to),
            (Some(to), Direction::Backwards) => floor = to,
            (None, _) => {}
        }
        let start = match (from, direction) {
            (Some(Page::Stream(from)), Direction::Backwards) => Page::Stream(from.min(ceiling)),
            (None, Direction::Backwards) => Page::Stream(ceiling),
            (Some(Page::Stream(from)), Direction::Forwards) => Page::Stream(from),
            (None, Direction::Forwards) => Page::Stream(StreamPos(0)),
            (Some(Page::Backfill(from)), _) => Page::Backfill(from),
        };
        let mut page = Pager {
            looker: &looker,
            filter,
            limit: limit.clamp(1, 1000),
            events: Vec::new(),
            scanned: 0,
        };
        let mut cursor = match start {
            Page::Stream(pos) => pos,
            Page::Backfill(from) => {
                // In the history; forwards, the rest of it and then the timeline.
                let done =
                    self.page_of_history(federation, room_id, from, direction, &mut page).await?;
                match done {
                    Some(chunk) => return Ok((start, chunk)),
                    None => StreamPos(0),
                }
            }
        };
        while page.scanned < MAX_SCANNED {
            let items = self.storage().timeline(room_id, cursor, direction, page.limit).await?;
            let exhausted = items.len() < page.limit;
            for item in items {
                let beyond = match direction {
                    Direction::Forwards => item.pos >= ceiling,
                    Direction::Backwards => item.pos < floor,
                };
                if beyond {
                    return Ok((start, page.chunk(None, Page::Stream(cursor))));
                }
                cursor = item.pos;
                page.scanned += 1;
                if let Some(pdu) = self.pdu(&item.event_id).await?
                    && filter.keeps(&pdu)
                    && self.sees(&looker, &pdu, item.pos).await?
                {
                    page.events.push(pdu);
                    if page.full() {
                        let at = Page::Stream(cursor);
                        return Ok((start, page.chunk(Some(at), at)));
                    }
                }
            }
            if exhausted {
                if direction == Direction::Backwards && floor == StreamPos(0) {
                    let history = BackfillPos(0);
                    let chunk = self
                        .page_of_history(federation, room_id, history, direction, &mut page)
                        .await?
                        .unwrap_or_else(|| page.chunk(None, Page::Backfill(history)));
                    return Ok((start, chunk));
                }
                return Ok((start, page.chunk(None, Page::Stream(cursor))));
            }
        }
        let at = Page::Stream(cursor);
        Ok((start, page.chunk(Some(at), at)))
    }

    /// The part of a page in the history before the timeline, from `from`: the finished page,
    /// or `None` when reading forwards reached the timeline's start with room left.
    async fn page_of_history(
        &self,
        federation: Option<&Federation>,
        room_id: &str,
        from: BackfillPos,
        direction: Direction,
        page: &mut Pager<'_, '_>,
    ) -> Result<Option<Chunk>, ApiError> {
        let history = self.history_before_timeline(room_id).await?;
        let mut cursor = from;
        let mut requests = 0;
        while page.scanned < MAX_SCANNED {
            let items = self.storage().backfilled(room_id, cursor, direction, page.limit).await?;
            let exhausted = items.len() < page.limit;
            for item in items {
                cursor = item.pos;
                page.scanned += 1;
                if let Some(pdu) = self.pdu(&item.event_id).await?
                    && page.filter.keeps(&pdu)
                    && sees_history(page.looker, history, &pdu)
                {
                    page.events.push(pdu);
                    if page.full() {
                        let at = Page::Backfill(cursor);
                        return Ok(Some(page.chunk(Some(at), at)));
                    }
                }
            }
            if !exhausted {
                continue;
            }
            if direction == Direction::Forwards {
                return Ok(None);
            }
            if let Some(federation) = federation
                && requests < backfill::MAX_REQUESTS_PER_PAGE
            {
                requests += 1;
                match self.backfill(federation, room_id).await {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(e) => tracing::warn!("federation: backfilling {room_id}: {e}"),
                }
            }
            return Ok(Some(page.chunk(None, Page::Backfill(cursor))));
        }
        let at = Page::Backfill(cursor);
        Ok(Some(page.chunk(Some(at), at)))
    }

    /// The history visibility that applies to the history before a room's timeline here:
    /// the one in the state after the timeline's first event (the oldest state held; the
    /// state at the backfilled events themselves is not).
    async fn history_before_timeline(&self, room_id: &str) -> Result<History, ApiError> {
        let first = self.storage().timeline(room_id, StreamPos(0), Direction::Forwards, 1).await?;
        let snapshot = match first.first() {
            Some(item) => self.state_after_of(&item.event_id).await?,
            None => None,
        };
        match snapshot {
            Some(snapshot) => self.history_of(snapshot).await,
            None => Ok(History::Shared),
        }
    }

    /// The position of an event in the timeline, if the user may see it.
    pub(crate) async fn position_of<'a>(
        &self,
        room_id: &str,
        reader: impl Into<Reader<'a>>,
        event_id: &str,
    ) -> Result<StreamPos, ApiError> {
        let visibility = self.visibility(room_id, reader).await?;
        let stored = self.storage().event(event_id).await?.filter(|e| e.room_id == room_id);
        match stored.and_then(|e| e.stream) {
            Some(pos) if visibility.allows(Some(pos)) => Ok(pos),
            _ => Err(ApiError::not_found("no such event in this room")),
        }
    }

    /// The state after an event.
    pub(crate) async fn state_at(&self, event_id: &str) -> Result<Option<SnapshotId>, ApiError> {
        Ok(self.storage().event(event_id).await?.and_then(|e| e.state_after))
    }

    /// The member events of a room the user may see, at the visible state.
    pub(crate) async fn member_events(
        &self,
        room_id: &str,
        user: &UserId,
    ) -> Result<Vec<Arc<Pdu>>, ApiError> {
        let snapshot = self.visibility(room_id, user).await?.snapshot();
        let entries = self.storage().state_full(snapshot).await?;
        let mut events = Vec::new();
        for entry in entries.into_iter().filter(|e| e.kind == "m.room.member") {
            if let Some(pdu) = self.pdu(&entry.event_id).await? {
                events.push(pdu);
            }
        }
        Ok(events)
    }
}

/// The member counts of a state snapshot and the first members (joined or invited), for
/// `/sync`'s room summary.
#[derive(Debug, Default)]
pub(crate) struct MemberSummary {
    pub(crate) joined: u64,
    pub(crate) invited: u64,
    /// Up to [`HERO_CANDIDATES`] joined or invited users, in state order.
    pub(crate) first: Vec<String>,
}

/// Heroes are five users other than the viewer, so six candidates always suffice.
const HERO_CANDIDATES: usize = 6;

impl Rooms {
    /// The member summary of a snapshot, cached (snapshots never change), so that a busy
    /// room's summary is not recounted from its whole state on every sync.
    pub(crate) async fn member_summary(
        &self,
        snapshot: SnapshotId,
    ) -> Result<Arc<MemberSummary>, ApiError> {
        if let Some(summary) = self.summaries.get(&snapshot) {
            return Ok(summary);
        }
        let mut summary = MemberSummary::default();
        for entry in self.storage().state_full(snapshot).await? {
            if entry.kind != "m.room.member" {
                continue;
            }
            if let Some(pdu) = self.pdu(&entry.event_id).await? {
                match pdu.content().get_str("membership") {
                    Some("join") => summary.joined += 1,
                    Some("invite") => summary.invited += 1,
                    _ => continue,
                }
                if summary.first.len() < HERO_CANDIDATES {
                    summary.first.push(entry.state_key);
                }
            }
        }
        let summary = Arc::new(summary);
        self.summaries.insert(snapshot, summary.clone());
        Ok(summary)
    }
}
