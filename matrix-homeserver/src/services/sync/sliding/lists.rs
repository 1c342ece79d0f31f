//! The rooms a sliding sync may show (the user's memberships), their order (most recent
//! activity first) and the lists' filters.
//!
//! Ordering needs each room's last position, and filters its type and encryption: these are
//! kept in [`RoomMetas`], a cache of storage brought up to date on every use from the stream
//! since it was last read (one read of the stream, not one per room), and emptied when more
//! happened than one read covers. A room not in it is read from storage once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use matrix_storage::{Direction, StreamPos};
use ruma::UserId;
use serde_json::Value;

use super::super::Sync;
use super::request::Filters;
use crate::error::ApiError;

/// The event types whose arrival moves a room's `bump_stamp` (MSC4186).
pub(crate) const BUMP_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// How many stream items one refresh of the cache reads; more happened: it starts over.
const REFRESH_SCAN: usize = 5_000;

/// How many timeline events are read back to find a room's last bump event.
const BUMP_SCAN: usize = 200;

/// How many rooms the cache holds before it starts over.
const METAS_KEPT: usize = 200_000;

/// How many users' room lists the cache holds before it starts over.
const MEMBERSHIPS_KEPT: usize = 10_000;

/// What ordering and filtering need of a room, as of the cache's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomMeta {
    /// The position of its last timeline event.
    pub(crate) last: StreamPos,
    /// The position of its last event of a [`BUMP_TYPES`] type (0: none found).
    pub(crate) bump: StreamPos,
    /// Its `m.room.create` content's `type`.
    pub(crate) room_type: Option<String>,
    /// Whether it has an `m.room.encryption` state event.
    pub(crate) encrypted: bool,
}

#[derive(Debug, Default)]
struct Metas {
    /// The stream position the entries are up to date with.
    upto: StreamPos,
    rooms: HashMap<String, Arc<RoomMeta>>,
    /// Users' rooms and memberships ([`matrix_storage::RoomStore::rooms_of_user`]), dropped
    /// when a membership event of theirs comes in the stream.
    memberships: HashMap<String, Arc<Vec<(String, String)>>>,
}

/// The cache of [`RoomMeta`]s.
#[derive(Debug, Default)]
pub(crate) struct RoomMetas {
    inner: tokio::sync::Mutex<Metas>,
}

impl RoomMetas {
    /// Forgets a room that was purged from storage, and every user's cached memberships
    /// (which may name it: the purge took its membership events out of the stream, which
    /// would otherwise have dropped them).
    pub(crate) async fn forget_room(&self, room_id: &str) {
        let mut metas = self.inner.lock().await;
        metas.rooms.remove(room_id);
        metas.memberships.clear();
    }
}

/// A room a sliding sync may show.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) room_id: String,
    /// The user's membership.
    pub(crate) membership: String,
    /// The user's membership event, when not joined.
    pub(crate) member_event: Option<String>,
    /// Its position: for a departed user the timeline stops there.
    pub(crate) member_pos: Option<StreamPos>,
    /// Where the room sorts: its last event, or (not joined) the user's membership event.
    pub(crate) last: StreamPos,
    pub(crate) meta: Arc<RoomMeta>,
}

impl Candidate {
    pub(crate) fn joined(&self) -> bool {
        self.membership == "join"
    }

    /// The position the room's answer covers to: now, or the departure.
    pub(crate) fn upto(&self, now: StreamPos) -> StreamPos {
        match (self.joined(), self.member_pos) {
            (false, Some(pos)) if matches!(self.membership.as_str(), "leave" | "ban") => {
                pos.min(now)
            }
            _ => now,
        }
    }
}

impl Sync {
    /// The rooms a sliding sync may show `user`, most recent first: joined, invited, knocked,
    /// banned and kicked-from rooms, and rooms the user left after `since` (so the client
    /// sees the leave), not forgotten ones.
    pub(super) async fn candidates(
        &self,
        user: &UserId,
        since: Option<StreamPos>,
        now: StreamPos,
    ) -> Result<Vec<Candidate>, ApiError> {
        let memberships = self.memberships(user, now).await?;
        let room_ids: Vec<&str> = memberships.iter().map(|(r, _)| r.as_str()).collect();
        let metas = self.metas(&room_ids, now).await?;
        let mut out = Vec::with_capacity(memberships.len());
        for (room_id, membership) in memberships.iter().cloned() {
            let Some(meta) = metas.get(room_id.as_str()).cloned() else { continue };
            if membership == "join" {
                out.push(Candidate {
                    last: meta.last,
                    room_id,
                    membership,
                    member_event: None,
                    member_pos: None,
                    meta,
                });
                continue;
            }
            if let Some(candidate) =
                self.departed_candidate(user, room_id, membership, meta, since, false).await?
            {
                out.push(candidate);
            }
        }
        // Most recent first; ties (never in one stream) by room id, for a stable order.
        out.sort_by(|a, b| b.last.cmp(&a.last).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(out)
    }

    /// One room as a candidate for a subscription: any membership the user has or had
    /// (a room they left themselves too).
    pub(super) async fn candidate(
        &self,
        user: &UserId,
        room_id: &str,
        since: Option<StreamPos>,
        now: StreamPos,
    ) -> Result<Option<Candidate>, ApiError> {
        let Some(membership) = self.rooms.storage().membership(room_id, user.as_str()).await?
        else {
            return Ok(None);
        };
        let metas = self.metas(&[room_id], now).await?;
        let Some(meta) = metas.get(room_id).cloned() else { return Ok(None) };
        if membership == "join" {
            return Ok(Some(Candidate {
                last: meta.last,
                room_id: room_id.to_owned(),
                membership,
                member_event: None,
                member_pos: None,
                meta,
            }));
        }
        self.departed_candidate(user, room_id.to_owned(), membership, meta, since, true).await
    }

    /// A room the user is not joined to: where their membership event is; a room they left
    /// themselves only if `any_leave` or they left after `since`.
    async fn departed_candidate(
        &self,
        user: &UserId,
        room_id: String,
        membership: String,
        meta: Arc<RoomMeta>,
        since: Option<StreamPos>,
        any_leave: bool,
    ) -> Result<Option<Candidate>, ApiError> {
        let rooms = &self.rooms;
        let Some(info) = rooms.storage().room(&room_id).await? else { return Ok(None) };
        let Some(current) = info.current_state else { return Ok(None) };
        let Some(event_id) =
            rooms.storage().state_get(current, "m.room.member", user.as_str()).await?
        else {
            return Ok(None);
        };
        let Some(pdu) = rooms.pdu(&event_id).await? else { return Ok(None) };
        let pos = rooms.storage().event(&event_id).await?.and_then(|e| e.stream);
        if matches!(membership.as_str(), "leave" | "ban") && rooms.forgotten(&room_id, user).await?
        {
            return Ok(None);
        }
        if membership == "leave" && pdu.sender() == user.as_str() && !any_leave {
            // Left by the user: shown only once, as news.
            let news = match (since, pos) {
                (Some(since), Some(pos)) => pos > since,
                _ => false,
            };
            if !news {
                return Ok(None);
            }
        }
        let last = pos.unwrap_or(meta.last);
        Ok(Some(Candidate {
            room_id,
            membership,
            member_event: Some(event_id),
            member_pos: pos,
            last,
            meta,
        }))
    }

    /// The rooms of `user` with their membership, as of `now` (or a little later): cached
    /// until a membership event of theirs comes in the stream.
    async fn memberships(
        &self,
        user: &UserId,
        now: StreamPos,
    ) -> Result<Arc<Vec<(String, String)>>, ApiError> {
        // Brings the cache up to `now` (dropping what changed).
        self.metas(&[], now).await?;
        let mut metas = self.metas.inner.lock().await;
        if let Some(memberships) = metas.memberships.get(user.as_str()) {
            return Ok(memberships.clone());
        }
        let memberships = Arc::new(self.rooms.storage().rooms_of_user(user.as_str()).await?);
        if metas.memberships.len() >= MEMBERSHIPS_KEPT {
            metas.memberships.clear();
        }
        metas.memberships.insert(user.as_str().to_owned(), memberships.clone());
        Ok(memberships)
    }

    /// The [`RoomMeta`]s of rooms, as of `now` (or a little later).
    pub(super) async fn metas(
        &self,
        room_ids: &[&str],
        now: StreamPos,
    ) -> Result<HashMap<String, Arc<RoomMeta>>, ApiError> {
        let mut metas = self.metas.inner.lock().await;
        if metas.upto < now {
            let items = self.rooms.storage().stream_range(metas.upto, now, REFRESH_SCAN).await?;
            if items.len() >= REFRESH_SCAN || metas.rooms.len() > METAS_KEPT {
                metas.rooms.clear();
                metas.memberships.clear();
            } else {
                for item in items {
                    let cached = metas.rooms.get(&item.room_id).cloned();
                    if cached.is_none() && metas.memberships.is_empty() {
                        continue;
                    }
                    let pdu = self.rooms.pdu(&item.event_id).await?;
                    if let Some(pdu) = &pdu
                        && pdu.kind() == "m.room.member"
                        && let Some(target) = pdu.state_key()
                    {
                        metas.memberships.remove(target);
                    }
                    let Some(meta) = cached else { continue };
                    let mut meta = RoomMeta::clone(&meta);
                    meta.last = meta.last.max(item.pos);
                    if let Some(pdu) = &pdu {
                        if BUMP_TYPES.contains(&pdu.kind()) {
                            meta.bump = meta.bump.max(item.pos);
                        }
                        if pdu.kind() == "m.room.encryption" && pdu.state_key() == Some("") {
                            meta.encrypted = true;
                        }
                    }
                    metas.rooms.insert(item.room_id, Arc::new(meta));
                }
            }
            metas.upto = now;
        }
        let mut out = HashMap::with_capacity(room_ids.len());
        for room_id in room_ids {
            if let Some(meta) = metas.rooms.get(*room_id) {
                out.insert((*room_id).to_owned(), meta.clone());
                continue;
            }
            if let Some(meta) = self.read_meta(room_id, metas.upto).await? {
                let meta = Arc::new(meta);
                metas.rooms.insert((*room_id).to_owned(), meta.clone());
                out.insert((*room_id).to_owned(), meta);
            }
        }
        Ok(out)
    }

    /// A room's [`RoomMeta`] from storage, up to `upto`.
    async fn read_meta(
        &self,
        room_id: &str,
        upto: StreamPos,
    ) -> Result<Option<RoomMeta>, ApiError> {
        let rooms = &self.rooms;
        let storage = rooms.storage();
        let Some(info) = storage.room(room_id).await? else { return Ok(None) };
        let mut meta =
            RoomMeta { last: StreamPos(0), bump: StreamPos(0), room_type: None, encrypted: false };
        if let Some(current) = info.current_state {
            if let Some(create) = rooms.state_pdu(current, "m.room.create", "").await? {
                meta.room_type = create.content().get_str("type").map(str::to_owned);
            }
            meta.encrypted = storage.state_get(current, "m.room.encryption", "").await?.is_some();
        }
        let mut cursor = StreamPos(upto.0.saturating_add(1));
        let mut scanned = 0;
        while scanned < BUMP_SCAN {
            let items = storage.timeline(room_id, cursor, Direction::Backwards, 20).await?;
            let exhausted = items.len() < 20;
            for item in items {
                scanned += 1;
                meta.last = meta.last.max(item.pos);
                cursor = item.pos;
                if let Some(pdu) = rooms.pdu(&item.event_id).await?
                    && BUMP_TYPES.contains(&pdu.kind())
                {
                    meta.bump = item.pos;
                    return Ok(Some(meta));
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(Some(meta))
    }

    /// The candidates that pass a list's filters, in order.
    pub(super) async fn filter_list<'c>(
        &self,
        user: &UserId,
        candidates: &'c [Candidate],
        filters: Option<&Filters>,
    ) -> Result<Vec<&'c Candidate>, ApiError> {
        let Some(filters) = filters else { return Ok(candidates.iter().collect()) };
        let dms = match filters.is_dm {
            Some(_) => self.dm_rooms(user).await?,
            None => HashSet::new(),
        };
        let children = match &filters.spaces {
            Some(spaces) => Some(self.space_children(user, spaces).await?),
            None => None,
        };
        let mut out = Vec::new();
        for candidate in candidates {
            let meta = &candidate.meta;
            if let Some(is_dm) = filters.is_dm
                && dms.contains(&candidate.room_id) != is_dm
            {
                continue;
            }
            if let Some(children) = &children
                && !children.contains(&candidate.room_id)
            {
                continue;
            }
            if let Some(encrypted) = filters.is_encrypted
                && meta.encrypted != encrypted
            {
                continue;
            }
            if let Some(invite) = filters.is_invite
                && (candidate.membership == "invite") != invite
            {
                continue;
            }
            if let Some(types) = &filters.room_types
                && !types.contains(&meta.room_type)
            {
                continue;
            }
            if let Some(types) = &filters.not_room_types
                && types.contains(&meta.room_type)
            {
                continue;
            }
            if filters.tags.is_some() || filters.not_tags.is_some() {
                let tags = self.room_tags(user, &candidate.room_id).await?;
                if let Some(not) = &filters.not_tags
                    && not.iter().any(|t| tags.contains(t))
                {
                    continue;
                }
                if let Some(wanted) = &filters.tags
                    && !wanted.iter().any(|t| tags.contains(t))
                {
                    continue;
                }
            }
            out.push(candidate);
        }
        Ok(out)
    }

    /// The rooms of the user's `m.direct` account data.
    pub(super) async fn dm_rooms(&self, user: &UserId) -> Result<HashSet<String>, ApiError> {
        let stored = self.rooms.storage().account_data(user.as_str(), None, "m.direct").await?;
        let Some(bytes) = stored else { return Ok(HashSet::new()) };
        let Ok(Value::Object(direct)) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(HashSet::new());
        };
        Ok(direct
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// The children (`m.space.child` with a `via`) of the spaces the user is joined to.
    async fn space_children(
        &self,
        user: &UserId,
        spaces: &[String],
    ) -> Result<HashSet<String>, ApiError> {
        let storage = self.rooms.storage();
        let mut children = HashSet::new();
        for space in spaces {
            if storage.membership(space, user.as_str()).await?.as_deref() != Some("join") {
                continue;
            }
            let Some(current) = storage.room(space).await?.and_then(|i| i.current_state) else {
                continue;
            };
            for entry in storage.state_full(current).await? {
                if entry.kind != "m.space.child" {
                    continue;
                }
                if let Some(pdu) = self.rooms.pdu(&entry.event_id).await?
                    && pdu
                        .content()
                        .get("via")
                        .and_then(matrix_core::Value::as_array)
                        .is_some_and(|via| !via.is_empty())
                {
                    children.insert(entry.state_key);
                }
            }
        }
        Ok(children)
    }

    /// The tags of a room (its `m.tag` room account data).
    async fn room_tags(&self, user: &UserId, room_id: &str) -> Result<Vec<String>, ApiError> {
        let storage = self.rooms.storage();
        let Some(bytes) = storage.account_data(user.as_str(), Some(room_id), "m.tag").await? else {
            return Ok(Vec::new());
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(value["tags"].as_object().map(|t| t.keys().cloned().collect()).unwrap_or_default())
    }
}
