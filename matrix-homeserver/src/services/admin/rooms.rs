//! Rooms, as Synapse's room admin API shows and changes them: the list
//! (`/v1/rooms`), one room, its members and state, blocking, and deleting (shutting down,
//! then purging: v1 here, synchronous; v2 in `tasks.rs`, in the background).
//!
//! A blocked room is marked in storage as account data of the pseudo-owner
//! [`BLOCKED_OWNER`] (the room id as the type, `{"block": bool, "user_id": admin}` as the
//! content), as erasures are; joins of our users to it are refused
//! ([`crate::services::rooms::Rooms::join`] asks [`is_blocked`]).

use std::cmp::Ordering;
use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{backwards, flag, page};
use crate::State;
use crate::error::ApiError;

/// The account-data owner of the block marks.
const BLOCKED_OWNER: &str = "!blocked_rooms";

/// How many room ids one read of the store brings while a list is made.
const SCAN_BATCH: usize = 1_000;

/// The query of `GET /_synapse/admin/v1/rooms`, as strings: checked here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListRoomsParams {
    from: Option<String>,
    limit: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
    search_term: Option<String>,
    public_rooms: Option<String>,
    empty_rooms: Option<String>,
}

/// A room as the list shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RoomSummary {
    room_id: String,
    name: Option<String>,
    canonical_alias: Option<String>,
    joined_members: usize,
    joined_local_members: usize,
    version: String,
    creator: Option<String>,
    encryption: Option<String>,
    federatable: bool,
    public: bool,
    join_rules: Option<String>,
    guest_access: Option<String>,
    history_visibility: Option<String>,
    state_events: usize,
    room_type: Option<String>,
}

/// A room as `GET /_synapse/admin/v1/rooms/{roomId}` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct RoomDetails {
    #[serde(flatten)]
    summary: RoomSummary,
    topic: Option<String>,
    avatar: Option<String>,
    joined_local_devices: usize,
    forgotten: bool,
    tombstoned: bool,
    replacement_room: Option<String>,
}

/// One page of the room list.
#[derive(Debug, Serialize)]
pub(crate) struct RoomPage {
    rooms: Vec<RoomSummary>,
    offset: usize,
    total_rooms: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_batch: Option<usize>,
}

/// What a room list is sorted by; the counts sort largest first (as Synapse's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderBy {
    Name,
    CanonicalAlias,
    JoinedMembers,
    JoinedLocalMembers,
    Version,
    Creator,
    Encryption,
    Federatable,
    Public,
    JoinRules,
    GuestAccess,
    HistoryVisibility,
    StateEvents,
}

impl OrderBy {
    fn parse(order_by: Option<&str>) -> Result<Self, ApiError> {
        Ok(match order_by {
            None | Some("name" | "alphabetical") => OrderBy::Name,
            Some("canonical_alias") => OrderBy::CanonicalAlias,
            Some("joined_members" | "size") => OrderBy::JoinedMembers,
            Some("joined_local_members") => OrderBy::JoinedLocalMembers,
            Some("version") => OrderBy::Version,
            Some("creator") => OrderBy::Creator,
            Some("encryption") => OrderBy::Encryption,
            Some("federatable") => OrderBy::Federatable,
            Some("public") => OrderBy::Public,
            Some("join_rules") => OrderBy::JoinRules,
            Some("guest_access") => OrderBy::GuestAccess,
            Some("history_visibility") => OrderBy::HistoryVisibility,
            Some("state_events") => OrderBy::StateEvents,
            Some(_) => return Err(ApiError::invalid_param("unknown `order_by`")),
        })
    }

    fn compare(self, a: &RoomSummary, b: &RoomSummary) -> Ordering {
        match self {
            OrderBy::Name => a.name.cmp(&b.name),
            OrderBy::CanonicalAlias => a.canonical_alias.cmp(&b.canonical_alias),
            OrderBy::JoinedMembers => b.joined_members.cmp(&a.joined_members),
            OrderBy::JoinedLocalMembers => b.joined_local_members.cmp(&a.joined_local_members),
            OrderBy::Version => b.version.cmp(&a.version),
            OrderBy::Creator => a.creator.cmp(&b.creator),
            OrderBy::Encryption => a.encryption.cmp(&b.encryption),
            OrderBy::Federatable => b.federatable.cmp(&a.federatable),
            OrderBy::Public => b.public.cmp(&a.public),
            OrderBy::JoinRules => a.join_rules.cmp(&b.join_rules),
            OrderBy::GuestAccess => a.guest_access.cmp(&b.guest_access),
            OrderBy::HistoryVisibility => a.history_visibility.cmp(&b.history_visibility),
            OrderBy::StateEvents => b.state_events.cmp(&a.state_events),
        }
    }
}

/// The current state of a room, read once for its summary and details.
struct RoomState {
    entries: Vec<matrix_storage::StateEntry>,
    summary: RoomSummary,
}

/// The content field `field` of the current state event `(kind, "")`.
async fn state_str(
    state: &State,
    entries: &[matrix_storage::StateEntry],
    kind: &str,
    field: &str,
) -> Result<Option<String>, ApiError> {
    let Some(entry) = entries.iter().find(|e| e.kind == kind && e.state_key.is_empty()) else {
        return Ok(None);
    };
    Ok(state
        .rooms
        .pdu(&entry.event_id)
        .await?
        .and_then(|pdu| pdu.content().get_str(field).map(str::to_owned)))
}

/// A room's summary from its current state; `None` for a room this server does not hold.
async fn read_room(state: &State, room_id: &str) -> Result<Option<RoomState>, ApiError> {
    let storage = state.rooms.storage();
    let Some(info) = storage.room(room_id).await? else { return Ok(None) };
    let entries = match info.current_state {
        Some(snapshot) => storage.state_full(snapshot).await?,
        None => Vec::new(),
    };
    let members = storage.members(room_id).await?;
    let joined: Vec<&String> =
        members.iter().filter(|(_, m)| m == "join").map(|(user, _)| user).collect();
    let local = format!(":{}", state.config.server_name);
    let create = match entries.iter().find(|e| e.kind == "m.room.create") {
        Some(entry) => state.rooms.pdu(&entry.event_id).await?,
        None => None,
    };
    let summary = RoomSummary {
        room_id: room_id.to_owned(),
        name: state_str(state, &entries, "m.room.name", "name").await?,
        canonical_alias: state_str(state, &entries, "m.room.canonical_alias", "alias").await?,
        joined_members: joined.len(),
        joined_local_members: joined.iter().filter(|u| u.ends_with(&local)).count(),
        version: info.version,
        creator: create
            .as_ref()
            .map(|c| c.content().get_str("creator").unwrap_or_else(|| c.sender()).to_owned()),
        encryption: state_str(state, &entries, "m.room.encryption", "algorithm").await?,
        federatable: create.as_ref().is_none_or(|c| {
            !matches!(c.content().get("m.federate"), Some(matrix_core::Value::Bool(false)))
        }),
        public: storage.published(room_id).await?,
        join_rules: state_str(state, &entries, "m.room.join_rules", "join_rule").await?,
        guest_access: state_str(state, &entries, "m.room.guest_access", "guest_access").await?,
        history_visibility: state_str(
            state,
            &entries,
            "m.room.history_visibility",
            "history_visibility",
        )
        .await?,
        state_events: entries.len(),
        room_type: create.as_ref().and_then(|c| c.content().get_str("type").map(str::to_owned)),
    };
    Ok(Some(RoomState { entries, summary }))
}

/// `GET /_synapse/admin/v1/rooms`: the rooms this server holds that pass the filters,
/// sorted, a page of them from the offset `from`, with the count of all that pass.
///
/// Every request reads every room's current state (names, counts) to filter, count and sort
/// them; the rows kept are the summaries of the rooms that pass.
pub(crate) async fn list_rooms(
    state: &State,
    params: &ListRoomsParams,
) -> Result<RoomPage, ApiError> {
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    let order = OrderBy::parse(params.order_by.as_deref())?;
    let backwards = backwards(params.dir.as_deref())?;
    let public = flag("public_rooms", params.public_rooms.as_deref())?;
    let empty = flag("empty_rooms", params.empty_rooms.as_deref())?;
    let term = params.search_term.as_deref().filter(|t| !t.is_empty());
    let lower_term = term.map(str::to_lowercase);

    let mut rooms = Vec::new();
    let mut after = String::new();
    loop {
        let batch = state.rooms.storage().room_ids(&after, SCAN_BATCH).await?;
        let done = batch.len() < SCAN_BATCH;
        if let Some(last) = batch.last() {
            after.clone_from(last);
        }
        for room_id in batch {
            let Some(room) = read_room(state, &room_id).await? else { continue };
            let summary = room.summary;
            if public.is_some_and(|p| summary.public != p)
                || empty.is_some_and(|e| (summary.joined_members == 0) != e)
            {
                continue;
            }
            if let (Some(term), Some(lower)) = (term, &lower_term) {
                let in_name = summary
                    .name
                    .as_ref()
                    .is_some_and(|n| n.to_lowercase().contains(lower.as_str()));
                let in_alias = summary.canonical_alias.as_ref().is_some_and(|a| {
                    let localpart = a.trim_start_matches('#').split(':').next().unwrap_or_default();
                    localpart.to_lowercase().contains(lower.as_str())
                });
                if !(in_name || in_alias || summary.room_id.contains(term)) {
                    continue;
                }
            }
            rooms.push(summary);
        }
        if done {
            break;
        }
    }
    rooms.sort_by(|a, b| order.compare(a, b).then_with(|| a.room_id.cmp(&b.room_id)));
    if backwards {
        rooms.reverse();
    }
    let total_rooms = rooms.len();
    let rooms: Vec<RoomSummary> = rooms.into_iter().skip(from).take(limit).collect();
    let next = from.saturating_add(rooms.len());
    Ok(RoomPage {
        offset: from,
        total_rooms,
        next_batch: (next < total_rooms).then_some(next),
        prev_batch: (from > 0).then(|| from.saturating_sub(limit)),
        rooms,
    })
}

/// A room id of a path: valid, or 400 `M_INVALID_PARAM`.
pub(crate) fn parse_room(room_id: &str) -> Result<OwnedRoomId, ApiError> {
    RoomId::parse(room_id)
        .map_err(|_| ApiError::invalid_param(format!("{room_id:?} is not a room id")))
}

async fn known_room(state: &State, room_id: &RoomId) -> Result<RoomState, ApiError> {
    read_room(state, room_id.as_str()).await?.ok_or_else(|| ApiError::not_found("Room not found"))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`.
pub(crate) async fn room_details(state: &State, room_id: &RoomId) -> Result<RoomDetails, ApiError> {
    let room = known_room(state, room_id).await?;
    let storage = state.rooms.storage();
    let local = format!(":{}", state.config.server_name);
    let mut devices = 0;
    let mut forgotten = true;
    let mut any_local = false;
    for (user, membership) in storage.members(room_id.as_str()).await? {
        if !user.ends_with(&local) {
            continue;
        }
        any_local = true;
        if membership == "join" {
            devices += storage.devices(&user).await?.len();
        }
        forgotten = forgotten && storage.forgotten(room_id.as_str(), &user).await?;
    }
    let replacement_room =
        state_str(state, &room.entries, "m.room.tombstone", "replacement_room").await?;
    let tombstoned = room.entries.iter().any(|e| e.kind == "m.room.tombstone");
    Ok(RoomDetails {
        topic: state_str(state, &room.entries, "m.room.topic", "topic").await?,
        avatar: state_str(state, &room.entries, "m.room.avatar", "url").await?,
        joined_local_devices: devices,
        forgotten: any_local && forgotten,
        tombstoned,
        replacement_room,
        summary: room.summary,
    })
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/members`: the joined members, sorted.
pub(crate) async fn room_members(state: &State, room_id: &RoomId) -> Result<Vec<String>, ApiError> {
    known_room(state, room_id).await?;
    let members = state.rooms.storage().members(room_id.as_str()).await?;
    Ok(members.into_iter().filter(|(_, m)| m == "join").map(|(user, _)| user).collect())
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/state`: the current state events in the client
/// format (of type `kind` only, when given), as they are stored (not redacted for erasure:
/// the administrators see what the server holds).
pub(crate) async fn room_state(
    state: &State,
    room_id: &RoomId,
    kind: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let room = known_room(state, room_id).await?;
    let mut events = Vec::new();
    for entry in room.entries.iter().filter(|e| kind.is_none_or(|k| e.kind == k)) {
        if let Some(pdu) = state.rooms.pdu(&entry.event_id).await? {
            let shown = crate::services::rooms::format::Shown::default();
            events.push(crate::services::rooms::format::client_event(&pdu, shown));
        }
    }
    Ok(events)
}

/// Whether the room is blocked, and by whom.
pub(crate) async fn block_status(
    storage: &Arc<dyn matrix_storage::Storage>,
    room_id: &str,
) -> Result<Option<String>, ApiError> {
    let Some(bytes) = storage.account_data(BLOCKED_OWNER, None, room_id).await? else {
        return Ok(None);
    };
    let mark: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok((mark["block"] == Value::Bool(true))
        .then(|| mark["user_id"].as_str().unwrap_or_default().to_owned()))
}

/// Whether our users are kept out of the room (any room id, known here or not).
pub(crate) async fn is_blocked(
    storage: &Arc<dyn matrix_storage::Storage>,
    room_id: &str,
) -> Result<bool, ApiError> {
    Ok(block_status(storage, room_id).await?.is_some())
}

/// `PUT /_synapse/admin/v1/rooms/{roomId}/block`: blocks (by `admin`) or unblocks the room,
/// known here or not.
pub(crate) async fn set_block(
    state: &State,
    admin: &UserId,
    room_id: &RoomId,
    block: bool,
) -> Result<(), ApiError> {
    let mark = serde_json::json!({"block": block, "user_id": admin});
    let mut changes = matrix_storage::ChangeSet::new();
    changes.account_data.push((
        BLOCKED_OWNER.to_owned(),
        None,
        room_id.to_string(),
        mark.to_string().into_bytes(),
    ));
    state.rooms.storage().apply(changes).await?;
    Ok(())
}

/// The body of `DELETE /_synapse/admin/v1/rooms/{roomId}` and of its asynchronous v2.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct DeleteRoom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_room_user_id: Option<String>,
    /// The name and first message of a replacement room (taken, unused: no replacement room
    /// is made here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default)]
    block: bool,
    #[serde(default = "purge_by_default")]
    pub(crate) purge: bool,
    #[serde(default)]
    pub(crate) force_purge: bool,
}

fn purge_by_default() -> bool {
    true
}

impl DeleteRoom {
    /// 400 for what this server does not do: a replacement room (`new_room_user_id`).
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if self.new_room_user_id.is_some() {
            return Err(ApiError::invalid_param(
                "moving users to a new room (`new_room_user_id`) is not supported by this server",
            ));
        }
        Ok(())
    }
}

/// What shutting a room down did (Synapse's `shutdown_room` object).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DeletedRoom {
    kicked_users: Vec<String>,
    failed_to_kick_users: Vec<String>,
    local_aliases: Vec<String>,
    new_room_id: Option<String>,
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}` (synchronous): [`shutdown_room`], then, when
/// `purge` (the default), [`purge_room`]. A room this server does not hold is blocked when
/// `block` asks for it (and nothing else is done), else 404.
pub(crate) async fn delete_room(
    state: &State,
    admin: &UserId,
    room_id: &RoomId,
    body: DeleteRoom,
) -> Result<DeletedRoom, ApiError> {
    body.check()?;
    let known = state.rooms.storage().room(room_id.as_str()).await?.is_some();
    if !known {
        if body.block {
            set_block(state, admin, room_id, true).await?;
            return Ok(DeletedRoom::default());
        }
        return Err(ApiError::not_found("Room not found"));
    }
    let deleted = shutdown_room(state, admin, room_id, &body).await?;
    if body.purge {
        purge_room(state, room_id, body.force_purge).await?;
    }
    Ok(deleted)
}

/// Shuts a room down: blocks it when asked, makes every user of ours leave it (each leave
/// sent as the user's own, through the rooms' authorization; an invite or a knock is
/// withdrawn), takes its local aliases away and it out of the room directory. Done again on
/// a room shut down already, it finds nobody to kick and nothing to take away.
pub(crate) async fn shutdown_room(
    state: &State,
    admin: &UserId,
    room_id: &RoomId,
    body: &DeleteRoom,
) -> Result<DeletedRoom, ApiError> {
    let storage = state.rooms.storage();
    if body.block {
        set_block(state, admin, room_id, true).await?;
    }
    let local = format!(":{}", state.config.server_name);
    let mut deleted = DeletedRoom::default();
    for (user, membership) in storage.members(room_id.as_str()).await? {
        if !user.ends_with(&local) || !matches!(membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        let left = match UserId::parse(user.as_str()) {
            Ok(user_id) => state.rooms.leave(room_id.as_str(), &user_id, None).await,
            Err(_) => Err(ApiError::invalid_param("a member id does not parse")),
        };
        match left {
            Ok(()) => deleted.kicked_users.push(user),
            Err(e) => {
                tracing::warn!("{user} leaving {room_id} as it is deleted: {e}");
                deleted.failed_to_kick_users.push(user);
            }
        }
    }
    let mut changes = matrix_storage::ChangeSet::new();
    for alias in storage.room_aliases(room_id.as_str()).await? {
        changes.deleted_aliases.push(alias.alias.clone());
        deleted.local_aliases.push(alias.alias);
    }
    changes.directory.push((room_id.to_string(), false));
    storage.apply(changes).await?;
    Ok(deleted)
}

/// Deletes everything this server stores of a room ([`crate::services::rooms::Rooms::purge`];
/// a block mark stays). Refused (400) while a user of ours is still joined, unless `force`
/// (Synapse's `force_purge`). Answers how many events were deleted.
pub(crate) async fn purge_room(
    state: &State,
    room_id: &RoomId,
    force: bool,
) -> Result<usize, ApiError> {
    if !force {
        let local = format!(":{}", state.config.server_name);
        let members = state.rooms.storage().members(room_id.as_str()).await?;
        if members.iter().any(|(user, m)| m == "join" && user.ends_with(&local)) {
            return Err(ApiError::bad_request("Users are still joined to this room"));
        }
    }
    let purged = state.rooms.purge(room_id.as_str()).await?;
    state.sync.forget_room(room_id.as_str()).await;
    Ok(purged)
}

/// A room's name and canonical alias (both `None` for a room this server does not hold).
pub(super) async fn name_and_alias(
    state: &State,
    room_id: &str,
) -> Result<(Option<String>, Option<String>), ApiError> {
    Ok(match read_room(state, room_id).await? {
        Some(room) => (room.summary.name, room.summary.canonical_alias),
        None => (None, None),
    })
}

/// `GET /_synapse/admin/v1/rooms/{roomIdOrAlias}/forward_extremities`: the room's forward
/// extremities with their depths (no state groups or receipt times are kept here: `null`).
pub(crate) async fn forward_extremities(
    state: &State,
    room_id: &RoomId,
) -> Result<Vec<Value>, ApiError> {
    let info = state.rooms.storage().room(room_id.as_str()).await?;
    let info = info.ok_or_else(|| ApiError::not_found("Room not found"))?;
    let mut results = Vec::new();
    for event_id in info.forward_extremities {
        let depth = state.rooms.pdu(&event_id).await?.map(|pdu| pdu.depth());
        results.push(serde_json::json!({
            "event_id": event_id, "state_group": null, "depth": depth, "received_ts": null,
        }));
    }
    Ok(results)
}

/// `GET /_synapse/admin/v1/fetch_event/{eventId}`: an event this server holds, as stored
/// (whatever room it is in and whoever asks).
pub(crate) async fn fetch_event(state: &State, event_id: &str) -> Result<Value, ApiError> {
    let pdu =
        state.rooms.pdu(event_id).await?.ok_or_else(|| ApiError::not_found("Event not found"))?;
    let mut event: Value = serde_json::from_slice(pdu.canonical_bytes())
        .map_err(|_| ApiError::unknown("a stored event does not parse"))?;
    event["event_id"] = Value::from(pdu.event_id());
    Ok(event)
}
