//! One room's answer in a sliding sync: everything (`initial`) the first time a connection
//! sends it, after that what changed since the client last had it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use matrix_core::Pdu;
use matrix_storage::{SnapshotId, StreamPos};
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::super::{Pending, Sync, SyncFilter, Token, room_token};
use super::connections::{SentRoom, Status};
use super::lists::{BUMP_TYPES, Candidate};
use super::request::{RequiredState, RoomConfig};
use crate::error::ApiError;
use crate::services::rooms::Viewer;

/// How many lazily loaded members a connection remembers sending per room; past it, it
/// forgets them all (and sends them again when needed).
const LAZY_KEPT: usize = 1_000;

/// Whether and how a room is sent.
#[derive(Debug)]
pub(super) struct Plan {
    /// Everything, as if the client had nothing of the room.
    pub(super) initial: bool,
    /// The position the client has the room up to (not initial).
    pub(super) from: Option<StreamPos>,
    /// The timeline limit grew: the latest events again, even those sent before.
    pub(super) expanded: bool,
}

/// Whether to send a room in this answer: never sent (or sent with another membership), or
/// changed since the client had it, or its timeline limit grew.
pub(super) fn plan(
    candidate: &Candidate,
    sent: Option<&SentRoom>,
    config: &RoomConfig,
    since: Option<StreamPos>,
) -> Option<Plan> {
    let initial = Plan { initial: true, from: None, expanded: false };
    let Some(sent) = sent else { return Some(initial) };
    if sent.membership != candidate.membership {
        return Some(initial);
    }
    let from = match (sent.status, since) {
        (Status::Previously(pos), _) => pos,
        (Status::Live, Some(since)) => since,
        (Status::Live, None) => return Some(initial),
    };
    let expanded = config.timeline_limit > sent.config.timeline_limit;
    if candidate.last <= from && !expanded {
        return None;
    }
    Some(Plan { initial: false, from: Some(from), expanded })
}

/// What the request shares with every room's answer.
pub(super) struct Context<'a> {
    pub(super) user: &'a UserId,
    pub(super) device: &'a str,
    /// The connection's position (none: a new connection).
    pub(super) since: Option<Token>,
    pub(super) now: Token,
    /// The user's direct-message rooms.
    pub(super) dms: &'a HashSet<String>,
    /// The rooms whose receipts changed since the position (`None`: not known, or a new
    /// connection).
    pub(super) receipt_rooms: Option<HashSet<String>>,
}

/// A room's answer, and what the connection keeps of it.
pub(super) struct RoomResult {
    pub(super) json: Value,
    pub(super) config: RoomConfig,
    pub(super) lazy: HashMap<String, String>,
    /// The events of its timeline.
    pub(super) timeline: HashSet<String>,
}

/// An event as a room's answer carries it: without `room_id` (the room's key says it), as
/// `/sync` and Synapse's sliding sync.
/// Synapse keeps it on `m.room.create` events, whose room version 12 form has none.
fn without_room_id(event: &mut Value) {
    if let Some(object) = event.as_object_mut()
        && object.get("type").and_then(Value::as_str) != Some("m.room.create")
    {
        object.remove("room_id");
    }
}

fn without_room_id_owned(mut event: Value) -> Value {
    without_room_id(&mut event);
    event
}

/// A user's unread counts in a room, threads included: `(notifications, highlights)`.
pub(super) async fn unread_totals(
    rooms: &crate::services::rooms::Rooms,
    room_id: &str,
    user: &UserId,
) -> Result<(u64, u64), ApiError> {
    let total = rooms.unread(room_id, user).await?.total();
    Ok((total.notifications, total.highlights))
}

impl Sync {
    /// A room's answer, as `plan` says.
    pub(super) async fn sliding_room(
        &self,
        ctx: &Context<'_>,
        candidate: &Candidate,
        config: &RoomConfig,
        plan: &Plan,
        sent: Option<&SentRoom>,
    ) -> Result<RoomResult, ApiError> {
        let rooms = &self.rooms;
        let room_id = candidate.room_id.as_str();
        let user = ctx.user;
        let mut out = Map::new();
        let mut lazy = match (plan.initial, sent) {
            (false, Some(sent)) => sent.lazy.clone(),
            _ => HashMap::new(),
        };
        if plan.initial {
            out.insert("initial".to_owned(), json!(true));
        }
        let (notifications, highlights) = unread_totals(rooms, room_id, user).await?;
        out.insert("notification_count".to_owned(), json!(notifications));
        out.insert("highlight_count".to_owned(), json!(highlights));
        if ctx.dms.contains(room_id) {
            out.insert("is_dm".to_owned(), json!(true));
        }
        let info = rooms.storage().room(room_id).await?;
        let current = info.and_then(|i| i.current_state);

        // Invited or knocking: the stripped state, no more.
        if let Some(pending) = match candidate.membership.as_str() {
            "invite" => Some(Pending::Invite),
            "knock" => Some(Pending::Knock),
            _ => None,
        } {
            if let Some(section) = self.pending_room(user, room_id, None, pending).await?
                && let Some(events) = section[pending.section()].get("events")
            {
                out.insert("invite_state".to_owned(), events.clone());
            }
            if plan.initial
                && let Some(current) = current
            {
                self.name_and_avatar(current, None, &mut out).await?;
            }
            if let Some(pos) = candidate.member_pos {
                out.insert("bump_stamp".to_owned(), json!(pos.0));
            }
            if plan.expanded {
                out.insert("unstable_expanded_timeline".to_owned(), json!(true));
            }
            let timeline = HashSet::new();
            return Ok(RoomResult {
                json: Value::Object(out),
                config: config.clone(),
                lazy,
                timeline,
            });
        }

        let Some(current) = current else {
            return Err(ApiError::unknown("a room without state"));
        };
        let upto = candidate.upto(ctx.now.stream);
        // The state the answer shows: the current one, or the one the user left.
        let shown_state = if candidate.joined() {
            current
        } else {
            match candidate.member_event.as_deref() {
                Some(event) => rooms.state_at(event).await?.unwrap_or(current),
                None => current,
            }
        };
        let looker = rooms.looker_at(room_id, user, current).await?;
        // A user who never joined (a revoked invite, a ban before joining) is shown their own
        // membership events and nothing of the room's state, as in /sync.
        let never_joined = !candidate.joined() && !looker.memberships.ever_joined();

        // The timeline.
        let mut events: Vec<(StreamPos, Arc<Pdu>)> = Vec::new();
        let mut limited = false;
        if config.timeline_limit > 0 {
            let after = match plan.from {
                Some(from) if !plan.expanded => from,
                _ => StreamPos(0),
            };
            let filter = SyncFilter {
                timeline_limit: usize::try_from(config.timeline_limit).unwrap_or(1),
                ..SyncFilter::default()
            };
            let (found, was_limited, first) =
                self.timeline_at(&looker, room_id, after, upto, &filter).await?;
            let pdus: Vec<Arc<Pdu>> = found.iter().map(|(_, p)| p.clone()).collect();
            let viewer = Some(Viewer { user: user.as_str(), device: ctx.device });
            let mut shown = rooms.show_all(&pdus, viewer).await?;
            shown.iter_mut().for_each(without_room_id);
            let num_live = match ctx.since {
                Some(since) => {
                    found.iter().rev().take_while(|(pos, _)| *pos > since.stream).count()
                }
                None => 0,
            };
            if !shown.is_empty() {
                out.insert("timeline".to_owned(), Value::Array(shown));
            }
            out.insert("limited".to_owned(), json!(was_limited));
            out.insert("prev_batch".to_owned(), json!(room_token(first)));
            out.insert("num_live".to_owned(), json!(num_live));
            if plan.expanded {
                out.insert("unstable_expanded_timeline".to_owned(), json!(true));
            }
            limited = was_limited;
            events = found;
        }

        // The state: what the config asks for that the client does not have.
        let previous_state = match plan.from {
            Some(from) if !plan.initial => {
                self.state_before(room_id, StreamPos(from.0.saturating_add(1))).await?
            }
            _ => None,
        };
        let now_map = self.required(shown_state, &config.state, user).await?;
        let had_map = match (previous_state, sent) {
            (Some(before), Some(sent)) => self.required(before, &sent.config.state, user).await?,
            _ => BTreeMap::new(),
        };
        let mut required = Vec::new();
        for ((kind, key), event_id) in &now_map {
            if had_map.get(&(kind.clone(), key.clone())) == Some(event_id) {
                continue;
            }
            if let Some(pdu) = rooms.pdu(event_id).await? {
                required.push(without_room_id_owned(rooms.show_plain(&pdu, None).await?));
            }
        }
        for (kind, key) in had_map.keys() {
            // Gone from the state (state resolution): a stub says so.
            if !now_map.contains_key(&(kind.clone(), key.clone()))
                && config.state.wants(kind, key, user.as_str())
                && rooms.storage().state_get(shown_state, kind, key).await?.is_none()
            {
                required.push(json!({"type": kind, "state_key": key}));
            }
        }
        if config.state.lazy {
            if limited {
                // A gap: the client forgets the members it had (MSC4186).
                lazy.clear();
            }
            let mut users: Vec<&str> = Vec::new();
            for (_, pdu) in &events {
                users.push(pdu.sender());
                if pdu.kind() == "m.room.member"
                    && let Some(target) = pdu.state_key()
                {
                    users.push(target);
                }
            }
            users.sort_unstable();
            users.dedup();
            for member in users {
                if config.state.wants("m.room.member", member, user.as_str()) {
                    continue;
                }
                let Some(event_id) =
                    rooms.storage().state_get(shown_state, "m.room.member", member).await?
                else {
                    continue;
                };
                if lazy.get(member) == Some(&event_id) {
                    continue;
                }
                if let Some(pdu) = rooms.pdu(&event_id).await? {
                    required.push(without_room_id_owned(rooms.show_plain(&pdu, None).await?));
                }
                if lazy.len() >= LAZY_KEPT {
                    lazy.clear();
                }
                lazy.insert(member.to_owned(), event_id);
            }
        }
        if never_joined {
            required.clear();
        }
        if !required.is_empty() {
            out.insert("required_state".to_owned(), Value::Array(required));
        }

        // Name, avatar, heroes and counts: on the first answer, or when they changed.
        if never_joined {
            if let Some(pos) = candidate.member_pos {
                out.insert("bump_stamp".to_owned(), json!(pos.0));
            }
            let timeline = events.iter().map(|(_, p)| p.event_id().to_owned()).collect();
            return Ok(RoomResult {
                json: Value::Object(out),
                config: config.clone(),
                lazy,
                timeline,
            });
        }
        self.name_and_avatar(shown_state, previous_state.filter(|_| !plan.initial), &mut out)
            .await?;
        let members_changed =
            plan.initial || limited || events.iter().any(|(_, p)| p.kind() == "m.room.member");
        if members_changed && candidate.joined() {
            let summary = rooms.member_summary(shown_state).await?;
            out.insert("joined_count".to_owned(), json!(summary.joined));
            out.insert("invited_count".to_owned(), json!(summary.invited));
            if !out.contains_key("name")
                && rooms.state_pdu(shown_state, "m.room.name", "").await?.is_none()
            {
                let mut heroes = Vec::new();
                for hero in summary.first.iter().filter(|u| *u != user.as_str()).take(5) {
                    let mut entry = json!({"user_id": hero});
                    if let Some(member) =
                        rooms.state_pdu(shown_state, "m.room.member", hero).await?
                    {
                        let content = member.content();
                        if let Some(name) = content.get_str("displayname") {
                            entry["displayname"] = json!(name);
                        }
                        if let Some(avatar) = content.get_str("avatar_url") {
                            entry["avatar_url"] = json!(avatar);
                        }
                    }
                    heroes.push(entry);
                }
                if !heroes.is_empty() {
                    out.insert("heroes".to_owned(), Value::Array(heroes));
                }
            }
        }

        // The bump stamp: the last event that counts as activity.
        let always = !candidate.joined() || plan.initial || limited || config.timeline_limit == 0;
        let in_timeline =
            events.iter().rev().find(|(_, p)| BUMP_TYPES.contains(&p.kind())).map(|(pos, _)| *pos);
        let bump = if !candidate.joined() {
            candidate.member_pos
        } else if let Some(pos) = in_timeline {
            Some(pos)
        } else if always {
            let meta = &candidate.meta;
            Some(if meta.bump > StreamPos(0) { meta.bump } else { meta.last })
        } else {
            None
        };
        if let Some(bump) = bump {
            out.insert("bump_stamp".to_owned(), json!(bump.0));
        }
        let timeline = events.iter().map(|(_, p)| p.event_id().to_owned()).collect();
        Ok(RoomResult { json: Value::Object(out), config: config.clone(), lazy, timeline })
    }

    /// `name` and `avatar` of the state `now`, when they differ from `before` (none: always).
    async fn name_and_avatar(
        &self,
        now: SnapshotId,
        before: Option<SnapshotId>,
        out: &mut Map<String, Value>,
    ) -> Result<(), ApiError> {
        let storage = self.rooms.storage();
        for (kind, field, content_key) in
            [("m.room.name", "name", "name"), ("m.room.avatar", "avatar", "url")]
        {
            let id = storage.state_get(now, kind, "").await?;
            if let Some(before) = before
                && storage.state_get(before, kind, "").await? == id
            {
                continue;
            }
            let Some(id) = id else { continue };
            if let Some(pdu) = self.rooms.pdu(&id).await?
                && let Some(value) = pdu.content().get_str(content_key).filter(|v| !v.is_empty())
            {
                out.insert(field.to_owned(), json!(value));
            }
        }
        Ok(())
    }

    /// The state events of `snapshot` that `state` asks for (`(type, state_key)` to event id;
    /// lazily loaded members apart).
    async fn required(
        &self,
        snapshot: SnapshotId,
        state: &RequiredState,
        user: &UserId,
    ) -> Result<BTreeMap<(String, String), String>, ApiError> {
        let storage = self.rooms.storage();
        let mut out = BTreeMap::new();
        if state.has_wildcard() {
            for entry in storage.state_full(snapshot).await? {
                if state.wants(&entry.kind, &entry.state_key, user.as_str()) {
                    out.insert((entry.kind, entry.state_key), entry.event_id);
                }
            }
            return Ok(out);
        }
        for (kind, key) in state.exact(user.as_str()) {
            if let Some(id) = storage.state_get(snapshot, kind, key).await? {
                out.insert((kind.to_owned(), key.to_owned()), id);
            }
        }
        Ok(out)
    }
}
