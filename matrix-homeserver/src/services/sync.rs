//! `/sync`: a user's rooms (joined, invited, left) with state, timeline, ephemeral events and
//! account data, plus to-device messages and device-list changes; long-polled.
//!
//! A sync token is `s{stream}_{counter}`: the stream position the answer covers (timeline
//! events, receipts, to-device messages, device-list changes and account data, which all take
//! their positions from the storage's one stream) and the counter of [`Ephemeral`] that
//! numbers typing and presence changes.
//! Rooms whose timeline moved are found from one read of the global stream (or, past a bound,
//! by asking each room).

pub(crate) mod sliding;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use matrix_core::Pdu;
use matrix_storage::{Direction, NotificationCounts, SnapshotId, StreamPos};
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::ephemeral::Ephemeral;
use super::presence::{PresenceTracker, SetPresence};
use super::rooms::format::stripped_state;
use super::rooms::{EventFilter, Looker, Rooms, Viewer};
use crate::error::ApiError;

/// How many pages (of the timeline limit plus one) a room's sync timeline reads at most
/// while its filter or history visibility drops events.
const TIMELINE_PAGES: usize = 8;

/// How many stream items one look at the global stream reads before falling back to asking
/// every room.
const STREAM_SCAN: usize = 2_000;

/// A sync (or pagination) position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Token {
    pub(crate) stream: StreamPos,
    pub(crate) counter: u64,
}

impl Token {
    pub(crate) fn parse(text: &str) -> Option<Token> {
        let rest = text.strip_prefix('s')?;
        let (stream, counter) = rest.split_once('_')?;
        Some(Token { stream: StreamPos(stream.parse().ok()?), counter: counter.parse().ok()? })
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}", self.stream.0, self.counter)
    }
}

/// A room pagination token: `t{stream}` (a sync token or a sliding sync position is accepted
/// too).
pub(crate) fn parse_room_token(text: &str) -> Option<StreamPos> {
    if let Some(pos) = text.strip_prefix('t') {
        return pos.parse().ok().map(StreamPos);
    }
    let token = Token::parse(text).or_else(|| sliding::Pos::parse(text).map(|p| p.token))?;
    Some(StreamPos(token.stream.0.saturating_add(1)))
}

pub(crate) fn room_token(pos: StreamPos) -> String {
    format!("t{}", pos.0)
}

/// What of the rooms a sync returns (a filter, parsed).
#[derive(Debug, Clone)]
pub(crate) struct SyncFilter {
    pub(crate) timeline_limit: usize,
    pub(crate) timeline: EventFilter,
    pub(crate) state: EventFilter,
    pub(crate) lazy_load_members: bool,
    /// `room.timeline.unread_thread_notifications`: counts per thread apart.
    pub(crate) unread_thread_notifications: bool,
    pub(crate) include_leave: bool,
    pub(crate) rooms: Option<Vec<String>>,
    pub(crate) not_rooms: Vec<String>,
    /// The top-level `account_data` filter (global account data).
    pub(crate) account_data: EventFilter,
    /// `room.account_data` (each room's account data).
    pub(crate) room_account_data: EventFilter,
    /// The top-level `presence` filter.
    pub(crate) presence: EventFilter,
}

impl Default for SyncFilter {
    fn default() -> Self {
        SyncFilter {
            timeline_limit: 10,
            timeline: EventFilter::default(),
            state: EventFilter::default(),
            lazy_load_members: false,
            unread_thread_notifications: false,
            include_leave: false,
            rooms: None,
            not_rooms: Vec::new(),
            account_data: EventFilter::default(),
            room_account_data: EventFilter::default(),
            presence: EventFilter::default(),
        }
    }
}

impl SyncFilter {
    fn wants_room(&self, room_id: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.iter().any(|x| x == room_id))
            && !self.not_rooms.iter().any(|x| x == room_id)
    }
}

/// The account data one sync answer covers.
#[derive(Debug)]
enum AccountDataView {
    All(Vec<matrix_storage::AccountDataItem>),
    Changed(Vec<(Option<String>, String)>),
}

/// What state of a room the client has already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Nothing (an initial sync, or a room joined since the token).
    Nothing,
    /// Everything up to the timeline (an incremental sync whose timeline is not limited).
    UpToTimeline,
    /// The state of this snapshot (an incremental sync with a gap before the timeline).
    Snapshot(SnapshotId),
}

/// Which state section a room's answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// `state`: up to the start of the timeline.
    Before,
    /// `state_after`: up to its end.
    After,
}

/// A sync request.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncRequest {
    pub(crate) since: Option<Token>,
    pub(crate) full_state: bool,
    /// `use_state_after`: each room's state up to the end of its timeline in `state_after`
    /// (which the client takes instead of the timeline's state events), not `state`.
    pub(crate) state_after: bool,
    pub(crate) timeout: Duration,
    pub(crate) filter: SyncFilter,
    /// `set_presence`: how the sync marks the user's presence.
    pub(crate) set_presence: SetPresence,
}

/// The sync service.
#[derive(Debug)]
pub(crate) struct Sync {
    rooms: Arc<Rooms>,
    ephemeral: Arc<Ephemeral>,
    presence: Arc<PresenceTracker>,
    /// Sliding sync connections.
    connections: sliding::Connections,
    /// What sliding sync's room lists need of each room.
    metas: sliding::RoomMetas,
}

/// The longest a sync waits.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

impl Sync {
    pub(crate) fn new(
        rooms: Arc<Rooms>,
        ephemeral: Arc<Ephemeral>,
        presence: Arc<PresenceTracker>,
    ) -> Self {
        Sync {
            rooms,
            ephemeral,
            presence,
            connections: sliding::Connections::default(),
            metas: sliding::RoomMetas::default(),
        }
    }

    /// Forgets what the sync caches hold of a room purged from storage.
    pub(crate) async fn forget_room(&self, room_id: &str) {
        self.metas.forget_room(room_id).await;
    }

    /// Answers a sync, waiting up to its timeout for something to report.
    pub(crate) async fn sync(
        &self,
        user: &UserId,
        device: &str,
        request: SyncRequest,
    ) -> Result<Value, ApiError> {
        let _in_flight = crate::metrics::service().sync_started();
        let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
        // Woken only by changes that concern this user; at most a few per device at once.
        let mut waiter = self.ephemeral.waiter(user.as_str(), device)?;
        // The device counts for the user's presence while the sync runs.
        let _presence = self.presence.syncing(user.as_str(), device, request.set_presence).await?;
        loop {
            waiter.mark_seen();
            let (response, empty) = self.answer(user, device, &request).await?;
            if request.since.is_none() || request.full_state || !empty {
                return Ok(response);
            }
            if !waiter.woken_before(deadline).await {
                // Nothing happened: answer with the latest token.
                return Ok(self.answer(user, device, &request).await?.0);
            }
        }
    }

    /// One answer, and whether it reports nothing.
    async fn answer(
        &self,
        user: &UserId,
        device: &str,
        request: &SyncRequest,
    ) -> Result<(Value, bool), ApiError> {
        let rooms = &self.rooms;
        let now =
            Token { stream: rooms.stream_position().await?, counter: self.ephemeral.position() };
        let since = request.since.filter(|_| !request.full_state);
        let since_counter = request.since.map_or(0, |t| t.counter);
        let filter = &request.filter;

        // Which rooms' timelines moved since the token (None: look at every room).
        let moved: Option<HashSet<String>> = match since {
            Some(since) if since.stream < now.stream => {
                let items =
                    rooms.storage().stream_range(since.stream, now.stream, STREAM_SCAN).await?;
                (items.len() < STREAM_SCAN).then(|| items.into_iter().map(|i| i.room_id).collect())
            }
            Some(_) => Some(HashSet::new()),
            None => None,
        };

        let account_data_view = self.account_data_view(user, request.since, now.stream).await?;
        let mut join = Map::new();
        let mut invite = Map::new();
        let mut knock = Map::new();
        let mut leave = Map::new();
        for (room_id, membership) in rooms.storage().rooms_of_user(user.as_str()).await? {
            if !filter.wants_room(&room_id) {
                continue;
            }
            let has_moved = moved.as_ref().is_none_or(|m| m.contains(&room_id));
            match membership.as_str() {
                "join" => {
                    if let Some(room) = self
                        .joined_room(
                            user,
                            device,
                            &room_id,
                            since,
                            since_counter,
                            now,
                            has_moved,
                            request,
                            &account_data_view,
                        )
                        .await?
                    {
                        join.insert(room_id, room);
                    }
                }
                "invite" => {
                    if has_moved
                        && let Some(room) =
                            self.pending_room(user, &room_id, since, Pending::Invite).await?
                    {
                        invite.insert(room_id, room);
                    }
                }
                "knock" => {
                    if has_moved
                        && let Some(room) =
                            self.pending_room(user, &room_id, since, Pending::Knock).await?
                    {
                        knock.insert(room_id, room);
                    }
                }
                "leave" | "ban" => {
                    if has_moved
                        && !rooms.forgotten(&room_id, user).await?
                        && let Some(room) =
                            self.left_room(user, device, &room_id, since, now, request).await?
                    {
                        leave.insert(room_id, room);
                    }
                }
                _ => {}
            }
        }

        let mut account_data =
            self.account_data(user, None, &account_data_view, &filter.account_data).await?;
        if matches!(account_data_view, AccountDataView::All(_))
            && filter.account_data.keeps_type(super::rooms::notify::PUSH_RULES)
            && let Some(rules) =
                super::rooms::notify::default_push_rules_event(rooms.storage().as_ref(), user)
                    .await?
        {
            account_data.push(rules);
        }
        let since_stream = request.since.map_or(StreamPos(0), |t| t.stream);
        let mut to_device = Vec::new();
        for m in
            self.ephemeral.to_device_since(user.as_str(), device, since_stream, now.stream).await?
        {
            let content: Value = serde_json::from_slice(&m.content)
                .map_err(|_| ApiError::unknown("a stored to-device message does not parse"))?;
            to_device.push(json!({"sender": m.sender, "type": m.kind, "content": content}));
        }
        let (changed, left) = match request.since {
            Some(since) => {
                let (from, to) = (since.stream, now.stream);
                let ephemeral = &self.ephemeral;
                (
                    ephemeral.device_lists_changed(user.as_str(), from, to).await?,
                    ephemeral.device_lists_left(user.as_str(), from, to).await?,
                )
            }
            None => (Vec::new(), Vec::new()),
        };

        let since_presence = request.since.map(|t| t.counter);
        let presence =
            self.presence.sync_events(user.as_str(), since_presence, &filter.presence).await?;

        let empty = join.is_empty()
            && presence.is_empty()
            && invite.is_empty()
            && knock.is_empty()
            && leave.is_empty()
            && account_data.is_empty()
            && to_device.is_empty()
            && changed.is_empty()
            && left.is_empty();
        let mut response = json!({
            "next_batch": now.to_string(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": account_data},
            "to_device": {"events": to_device},
            "presence": {"events": presence},
            "device_lists": {"changed": changed, "left": left},
            "device_one_time_keys_count": self.ephemeral.one_time_key_counts(user.as_str(), device).await?,
            "device_unused_fallback_key_types": self.ephemeral.fallback_key_types(user.as_str(), device).await?,
        });
        if let Some(object) = response.as_object_mut() {
            object.retain(|_, v| !v.is_null());
        }
        Ok((response, empty))
    }

    /// The account data a sync reports: all of it (an initial sync), or what changed
    /// between the token and `upto`.
    async fn account_data_view(
        &self,
        user: &UserId,
        since: Option<Token>,
        upto: StreamPos,
    ) -> Result<AccountDataView, ApiError> {
        let storage = self.rooms.storage();
        let Some(since) = since else {
            return Ok(AccountDataView::All(storage.all_account_data(user.as_str()).await?));
        };
        let changes = storage.account_data_changes(user.as_str(), since.stream, upto).await?;
        Ok(AccountDataView::Changed(changes.into_iter().map(|c| (c.room_id, c.kind)).collect()))
    }

    /// The account data events of `room` (`None`: global) in `view`.
    async fn account_data(
        &self,
        user: &UserId,
        room: Option<&str>,
        view: &AccountDataView,
        filter: &EventFilter,
    ) -> Result<Vec<Value>, ApiError> {
        let event = |kind: &str, content: &[u8]| {
            let content = serde_json::from_slice::<Value>(content).ok()?;
            Some(json!({"type": kind, "content": content}))
        };
        let mut events = Vec::new();
        match view {
            AccountDataView::All(items) => {
                for item in items {
                    if item.room_id.as_deref() == room
                        && filter.keeps_type(&item.kind)
                        && let Some(event) = event(&item.kind, &item.content)
                    {
                        events.push(event);
                    }
                }
            }
            AccountDataView::Changed(changed) => {
                for (changed_room, kind) in changed {
                    if changed_room.as_deref() != room || !filter.keeps_type(kind) {
                        continue;
                    }
                    let storage = self.rooms.storage();
                    if let Some(bytes) = storage.account_data(user.as_str(), room, kind).await?
                        && let Some(event) = event(kind, &bytes)
                    {
                        events.push(event);
                    }
                }
            }
        }
        Ok(events)
    }

    /// The latest `limit` events the filter keeps and the user may see, up to `upto`
    /// (inclusive) and after `after`: (events oldest first, limited, the position before the
    /// first one). `limited` is true whenever events after `after` were left out, including
    /// when the scan stops at its bound with events the filter dropped: the client then
    /// paginates back from `prev_batch` rather than miss them.
    async fn timeline(
        &self,
        looker: &Looker<'_>,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
        filter: &SyncFilter,
    ) -> Result<(Vec<Arc<Pdu>>, bool, StreamPos), ApiError> {
        let (events, limited, first) =
            self.timeline_at(looker, room_id, after, upto, filter).await?;
        Ok((events.into_iter().map(|(_, pdu)| pdu).collect(), limited, first))
    }

    /// [`Sync::timeline`], each event with its stream position.
    async fn timeline_at(
        &self,
        looker: &Looker<'_>,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
        filter: &SyncFilter,
    ) -> Result<(Vec<(StreamPos, Arc<Pdu>)>, bool, StreamPos), ApiError> {
        let limit = filter.timeline_limit.clamp(1, 100);
        // An incremental sync usually has a few new events: read forwards from the token, and
        // only when more than a page came read backwards from the end.
        if after > StreamPos(0) {
            let items = self
                .rooms
                .storage()
                .timeline(room_id, after, Direction::Forwards, limit + 1)
                .await?;
            let read_all = items.len() <= limit || items.last().is_some_and(|i| i.pos > upto);
            let within: Vec<_> = items.into_iter().take_while(|i| i.pos <= upto).collect();
            if read_all && within.len() <= limit {
                let first = within.first().map_or(upto, |i| i.pos);
                let mut events = Vec::with_capacity(within.len());
                for item in within {
                    events.extend(self.shown(looker, &item, filter).await?.map(|p| (item.pos, p)));
                }
                return Ok((events, false, first));
            }
        }
        let mut events = Vec::new();
        let mut limited = false;
        let mut first = upto;
        let mut cursor = StreamPos(upto.0.saturating_add(1));
        let mut done = false;
        'pages: for _ in 0..TIMELINE_PAGES {
            let items = self
                .rooms
                .storage()
                .timeline(room_id, cursor, Direction::Backwards, limit + 1)
                .await?;
            let exhausted = items.len() <= limit;
            for item in items {
                if item.pos <= after {
                    done = true;
                    break 'pages;
                }
                if events.len() == limit {
                    (limited, done) = (true, true);
                    break 'pages;
                }
                first = item.pos;
                cursor = item.pos;
                events.extend(self.shown(looker, &item, filter).await?.map(|p| (item.pos, p)));
            }
            if exhausted {
                done = true;
                break;
            }
        }
        // The bound was reached with older events unread: a gap the client must know of.
        limited |= !done;
        events.reverse();
        Ok((events, limited, first))
    }

    /// A timeline item as the sync shows it: the event, if the filter keeps it and the user
    /// may see it.
    async fn shown(
        &self,
        looker: &Looker<'_>,
        item: &matrix_storage::StreamItem,
        filter: &SyncFilter,
    ) -> Result<Option<Arc<Pdu>>, ApiError> {
        let Some(pdu) = self.rooms.pdu(&item.event_id).await? else { return Ok(None) };
        let shown = filter.timeline.keeps(&pdu) && self.rooms.sees(looker, &pdu, item.pos).await?;
        Ok(shown.then_some(pdu))
    }

    /// The state before the timeline position `first` (the state after the event before it).
    async fn state_before(
        &self,
        room_id: &str,
        first: StreamPos,
    ) -> Result<Option<SnapshotId>, ApiError> {
        let before = self.rooms.storage().timeline(room_id, first, Direction::Backwards, 1).await?;
        match before.first() {
            Some(item) => self.rooms.state_at(&item.event_id).await,
            None => Ok(None),
        }
    }

    /// What state the client has of a room: the `known` of [`Sync::state_section`].
    async fn known_state(
        &self,
        room_id: &str,
        since: Option<StreamPos>,
        limited: bool,
    ) -> Result<Known, ApiError> {
        Ok(match since {
            None => Known::Nothing,
            Some(_) if !limited => Known::UpToTimeline,
            Some(since) => {
                match self.state_before(room_id, StreamPos(since.0.saturating_add(1))).await? {
                    Some(snapshot) => Known::Snapshot(snapshot),
                    None => Known::Nothing,
                }
            }
        })
    }

    /// What state the client has of a room when it takes no state from timelines
    /// (`use_state_after`): the state at the token (after the room's last event before it),
    /// or nothing (an initial sync, a room joined since the token).
    async fn known_at(&self, room_id: &str, since: Option<StreamPos>) -> Result<Known, ApiError> {
        let Some(since) = since else { return Ok(Known::Nothing) };
        Ok(match self.state_before(room_id, StreamPos(since.0.saturating_add(1))).await? {
            Some(snapshot) => Known::Snapshot(snapshot),
            None => Known::Nothing,
        })
    }

    /// A state section: the state of `snapshot` less what the client has (`known`),
    /// filtered, with only the timeline's senders' members when lazy-loading. For `state`
    /// ([`Section::Before`]: `snapshot` is the state at the start of the timeline) the
    /// timeline's own events are left out, the client takes them from the timeline; for
    /// `state_after` ([`Section::After`]: the state at its end) they are not.
    async fn state_section(
        &self,
        user: &UserId,
        snapshot: Option<SnapshotId>,
        known: Known,
        timeline: &[Arc<Pdu>],
        filter: &SyncFilter,
        section: Section,
    ) -> Result<Vec<Value>, ApiError> {
        let Some(snapshot) = snapshot else { return Ok(Vec::new()) };
        if known == Known::UpToTimeline && !filter.lazy_load_members {
            return Ok(Vec::new());
        }
        let senders: BTreeSet<&str> =
            timeline.iter().map(|p| p.sender()).chain([user.as_str()]).collect();
        let in_timeline: HashSet<&str> = match section {
            Section::Before => timeline.iter().map(|p| p.event_id()).collect(),
            Section::After => HashSet::new(),
        };
        if known == Known::UpToTimeline {
            // Lazy loading with nothing else missing: the senders' member events only, one
            // lookup each rather than a read of the whole state.
            let mut out = Vec::new();
            for sender in senders {
                if let Some(pdu) = self.rooms.state_pdu(snapshot, "m.room.member", sender).await?
                    && !in_timeline.contains(pdu.event_id())
                    && filter.state.keeps(&pdu)
                {
                    out.push(self.rooms.show(&pdu, None).await?);
                }
            }
            return Ok(out);
        }
        let storage = self.rooms.storage();
        let had: HashSet<(String, String, String)> = match known {
            Known::Snapshot(base) => storage
                .state_full(base)
                .await?
                .into_iter()
                .map(|e| (e.kind, e.state_key, e.event_id))
                .collect(),
            _ => HashSet::new(),
        };
        let mut out = Vec::new();
        for entry in storage.state_full(snapshot).await? {
            let lazy_member = filter.lazy_load_members && entry.kind == "m.room.member";
            if in_timeline.contains(entry.event_id.as_str())
                || (lazy_member && !senders.contains(entry.state_key.as_str()))
            {
                continue;
            }
            // What the client has already is left out; with lazy loading, the senders'
            // members are sent again (the spec allows redundant members).
            let already = match known {
                Known::Nothing => false,
                Known::UpToTimeline => !lazy_member,
                Known::Snapshot(_) => {
                    !lazy_member
                        && had.contains(&(
                            entry.kind.clone(),
                            entry.state_key.clone(),
                            entry.event_id.clone(),
                        ))
                }
            };
            if already {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu(&entry.event_id).await?
                && filter.state.keeps(&pdu)
            {
                out.push(self.rooms.show(&pdu, None).await?);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn joined_room(
        &self,
        user: &UserId,
        device: &str,
        room_id: &str,
        since: Option<Token>,
        since_counter: u64,
        now: Token,
        moved: bool,
        request: &SyncRequest,
        data: &AccountDataView,
    ) -> Result<Option<Value>, ApiError> {
        let filter = &request.filter;
        let rooms = &self.rooms;
        let info = rooms.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let current =
            info.current_state.ok_or_else(|| ApiError::unknown("a room without state"))?;
        // A room joined since the token is sent whole.
        let joined_at = match since {
            Some(since) if moved => {
                let member =
                    rooms.storage().state_get(current, "m.room.member", user.as_str()).await?;
                match member {
                    Some(id) => rooms
                        .storage()
                        .event(&id)
                        .await?
                        .and_then(|e| e.stream)
                        .filter(|p| *p > since.stream),
                    None => None,
                }
            }
            _ => None,
        };
        let since_stream = since.filter(|_| joined_at.is_none()).map(|t| t.stream);

        let mut room = Map::new();
        if moved || since.is_none() {
            let after = since_stream.unwrap_or(StreamPos(0));
            let looker = rooms.looker_at(room_id, user, current).await?;
            let (events, limited, first) =
                self.timeline(&looker, room_id, after, now.stream, filter).await?;
            if !events.is_empty() || since_stream.is_none() || limited {
                let (name, state) = if request.state_after {
                    // The end of a joined room's timeline is its current state.
                    let known = self.known_at(room_id, since_stream).await?;
                    let section = Section::After;
                    (
                        "state_after",
                        self.state_section(user, Some(current), known, &events, filter, section)
                            .await?,
                    )
                } else {
                    let state_snapshot = if events.is_empty() {
                        Some(current)
                    } else {
                        // No state known before the timeline's start, in a room that has
                        // state: the timeline starts with events that came before this server
                        // held the room (an invite from another server, ahead of the join
                        // through it). The current state stands in, less what the timeline
                        // holds (the state section leaves that out), or the client would see
                        // a room without members.
                        match self.state_before(room_id, first).await? {
                            Some(before) => Some(before),
                            None if since_stream.is_none() => Some(current),
                            None => None,
                        }
                    };
                    let known = self.known_state(room_id, since_stream, limited).await?;
                    let section = Section::Before;
                    (
                        "state",
                        self.state_section(user, state_snapshot, known, &events, filter, section)
                            .await?,
                    )
                };
                let timeline =
                    rooms.show_all(&events, Some(Viewer { user: user.as_str(), device })).await?;
                room.insert("timeline".to_owned(), json!({"events": timeline, "limited": limited, "prev_batch": room_token(first)}));
                room.insert(name.to_owned(), json!({"events": state}));
                if filter.lazy_load_members || since_stream.is_none() {
                    room.insert("summary".to_owned(), self.summary(user, current).await?);
                }
            }
        }
        let mut ephemeral = Vec::new();
        let counter = if since_stream.is_none() { 0 } else { since_counter };
        if let Some(typing) = self.ephemeral.typing_since(room_id, counter)
            && (since_stream.is_some() || !typing.is_empty())
        {
            ephemeral.push(json!({"type": "m.typing", "content": {"user_ids": typing}}));
        }
        let receipts_after = since_stream.unwrap_or(StreamPos(0));
        if let Some(receipts) = self
            .ephemeral
            .receipts_since(room_id, receipts_after, now.stream, user.as_str())
            .await?
        {
            ephemeral.push(json!({"type": "m.receipt", "content": receipts}));
        }
        if !ephemeral.is_empty() {
            room.insert("ephemeral".to_owned(), json!({"events": ephemeral}));
        }
        let account_data =
            self.account_data(user, Some(room_id), data, &filter.room_account_data).await?;
        if !account_data.is_empty() {
            room.insert("account_data".to_owned(), json!({"events": account_data}));
        }
        if room.is_empty() {
            return Ok(None);
        }
        let unread = self.rooms.unread(room_id, user).await?;
        let counts = |c: NotificationCounts| json!({"notification_count": c.notifications, "highlight_count": c.highlights});
        if filter.unread_thread_notifications {
            room.insert("unread_notifications".to_owned(), counts(unread.main));
            if !unread.threads.is_empty() {
                let threads: serde_json::Map<String, Value> =
                    unread.threads.into_iter().map(|(t, c)| (t, counts(c))).collect();
                room.insert("unread_thread_notifications".to_owned(), Value::Object(threads));
            }
        } else {
            // Without the filter's flag, threads count in the room's totals.
            room.insert("unread_notifications".to_owned(), counts(unread.total()));
        }
        Ok(Some(Value::Object(room)))
    }

    /// `m.heroes` and the member counts.
    async fn summary(&self, user: &UserId, snapshot: SnapshotId) -> Result<Value, ApiError> {
        let summary = self.rooms.member_summary(snapshot).await?;
        let heroes: Vec<&String> =
            summary.first.iter().filter(|u| u.as_str() != user.as_str()).take(5).collect();
        Ok(json!({
            "m.heroes": heroes,
            "m.joined_member_count": summary.joined,
            "m.invited_member_count": summary.invited,
        }))
    }

    /// A room the user is invited to or knocked on: its stripped state (`invite_state` or
    /// `knock_state`): for a room of other servers, what the inviting or resident server sent
    /// with the membership; the room's own stripped state kinds; for an invite, the inviter's
    /// membership; and the user's own membership event last.
    async fn pending_room(
        &self,
        user: &UserId,
        room_id: &str,
        since: Option<Token>,
        pending: Pending,
    ) -> Result<Option<Value>, ApiError> {
        let rooms = &self.rooms;
        let Some(info) = rooms.storage().room(room_id).await? else { return Ok(None) };
        let Some(current) = info.current_state else { return Ok(None) };
        let Some(own) = rooms.state_pdu(current, "m.room.member", user.as_str()).await? else {
            return Ok(None);
        };
        if let Some(since) = since {
            let pos = rooms.storage().event(own.event_id()).await?.and_then(|e| e.stream);
            if pos.is_none_or(|p| p <= since.stream) {
                return Ok(None);
            }
        }
        let mut events = Vec::new();
        // A room of other servers that no user of ours is in: the room is a stub holding the
        // membership, with the stripped state the other server sent (kept as it came, full
        // PDUs from v1.16 servers; clients get the stripped form).
        let stub = rooms.state_pdu(current, "m.room.create", "").await?.is_none();
        if stub
            && let Some(matrix_core::Value::Array(state)) =
                own.json().get_object("unsigned").and_then(|u| u.get(pending.sent_state()))
        {
            for event in state.iter().filter_map(matrix_core::Value::as_object) {
                // The user's own membership comes last, from our own copy.
                if event.get_str("type") == Some("m.room.member")
                    && event.get_str("state_key") == Some(user.as_str())
                {
                    continue;
                }
                events.push(crate::services::rooms::format::strip_object(event));
            }
        }
        for kind in STRIPPED_KINDS {
            if let Some(pdu) = rooms.state_pdu(current, kind, "").await? {
                events.push(stripped_state(&pdu));
            }
        }
        if pending == Pending::Invite
            && let Some(sender) = rooms.state_pdu(current, "m.room.member", own.sender()).await?
        {
            events.push(stripped_state(&sender));
        }
        let mut mine = stripped_state(&own);
        mine["event_id"] = json!(own.event_id());
        mine["origin_server_ts"] = json!(own.origin_server_ts());
        events.push(mine);
        let mut section = serde_json::Map::new();
        section.insert(pending.section().to_owned(), json!({"events": events}));
        Ok(Some(Value::Object(section)))
    }

    async fn left_room(
        &self,
        user: &UserId,
        device: &str,
        room_id: &str,
        since: Option<Token>,
        now: Token,
        request: &SyncRequest,
    ) -> Result<Option<Value>, ApiError> {
        let filter = &request.filter;
        if since.is_none() && !filter.include_leave {
            return Ok(None);
        }
        let rooms = &self.rooms;
        let Some(info) = rooms.storage().room(room_id).await? else { return Ok(None) };
        let Some(current) = info.current_state else { return Ok(None) };
        let Some(member) =
            rooms.storage().state_get(current, "m.room.member", user.as_str()).await?
        else {
            return Ok(None);
        };
        let Some(stored) = rooms.storage().event(&member).await? else { return Ok(None) };
        let Some(left_at) = stored.stream else { return Ok(None) };
        if let Some(since) = since
            && left_at <= since.stream
        {
            return Ok(None);
        }
        let after = since.map_or(StreamPos(0), |t| t.stream);
        let upto = left_at.min(now.stream);
        let looker = rooms.looker_at(room_id, user, current).await?;
        let (events, limited, first) = self.timeline(&looker, room_id, after, upto, filter).await?;
        // A user who never joined (a rejected or revoked invite, a ban before joining) is
        // shown their own membership events and no state at all.
        let since_stream = since.map(|t| t.stream);
        let state = if !looker.memberships.ever_joined() {
            Vec::new()
        } else if request.state_after {
            // The timeline ends with the user's leave.
            let known = self.known_at(room_id, since_stream).await?;
            let (snapshot, section) = (stored.state_after, Section::After);
            self.state_section(user, snapshot, known, &events, filter, section).await?
        } else {
            let state_snapshot = if events.is_empty() {
                stored.state_after
            } else {
                self.state_before(room_id, first).await?
            };
            let known = self.known_state(room_id, since_stream, limited).await?;
            let section = Section::Before;
            self.state_section(user, state_snapshot, known, &events, filter, section).await?
        };
        let timeline =
            rooms.show_all(&events, Some(Viewer { user: user.as_str(), device })).await?;
        let name = if request.state_after { "state_after" } else { "state" };
        Ok(Some(json!({
            "timeline": {"events": timeline, "limited": limited, "prev_batch": room_token(first)},
            name: {"events": state},
            "account_data": {"events": []},
        })))
    }
}

/// A membership waiting on others, shown with the room's stripped state in `/sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// `rooms.invite`.
    Invite,
    /// `rooms.knock`.
    Knock,
}

impl Pending {
    /// The section of the room in `/sync`.
    fn section(self) -> &'static str {
        match self {
            Pending::Invite => "invite_state",
            Pending::Knock => "knock_state",
        }
    }

    /// Where the membership event keeps the stripped state another server sent with it.
    fn sent_state(self) -> &'static str {
        match self {
            Pending::Invite => "invite_room_state",
            Pending::Knock => "knock_room_state",
        }
    }
}

/// The state types a stripped state (of an invite or a knock) shows.
const STRIPPED_KINDS: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// Parses a sync filter from its JSON (the filter API's `Filter` object).
pub(crate) fn parse_filter(json: &Value) -> SyncFilter {
    fn strings(value: &Value) -> Option<Vec<String>> {
        value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
    }
    fn event_filter(value: &Value) -> EventFilter {
        EventFilter {
            types: strings(&value["types"]),
            not_types: strings(&value["not_types"]).unwrap_or_default(),
            senders: strings(&value["senders"]),
            not_senders: strings(&value["not_senders"]).unwrap_or_default(),
        }
    }
    let room = &json["room"];
    let mut filter = SyncFilter {
        timeline: event_filter(&room["timeline"]),
        state: event_filter(&room["state"]),
        lazy_load_members: room["state"]["lazy_load_members"].as_bool().unwrap_or(false),
        unread_thread_notifications: room["timeline"]["unread_thread_notifications"]
            .as_bool()
            .unwrap_or(false),
        include_leave: room["include_leave"].as_bool().unwrap_or(false),
        rooms: strings(&room["rooms"]),
        not_rooms: strings(&room["not_rooms"]).unwrap_or_default(),
        account_data: event_filter(&json["account_data"]),
        room_account_data: event_filter(&room["account_data"]),
        presence: event_filter(&json["presence"]),
        ..SyncFilter::default()
    };
    if let Some(limit) = room["timeline"]["limit"].as_u64() {
        filter.timeline_limit = usize::try_from(limit).unwrap_or(100).clamp(1, 100);
    }
    filter
}
