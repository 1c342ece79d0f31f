//! Spaces: the room hierarchy under a space (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`)
//! and our part of it for other servers (`GET /_matrix/federation/v1/hierarchy/{roomId}`).
//!
//! A room's entry is its `publicRooms` entry with `room_version`, `encryption`,
//! `allowed_room_ids` and `children_state` (its `m.space.child` events with a `via`, stripped,
//! with `origin_server_ts`). Rooms we do not have are asked of the servers their parent's
//! `m.space.child` names (then of the server in the room id) over federation, at most
//! [`MAX_REMOTE_FETCHES`] a request. Who may see a room is decided from its entry the same way
//! for local and remote rooms: joined or invited, a `public`, `knock` or `knock_restricted`
//! join rule, `world_readable` history, or a restricted join rule with the user joined to an
//! allowed room.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use ruma::UserId;
use serde_json::{Value, json};

use super::Rooms;
use crate::error::ApiError;

/// The deepest a walk goes (also the default).
pub(crate) const MAX_DEPTH: usize = 10;
/// The most rooms one page answers (the default is 50).
pub(crate) const MAX_LIMIT: usize = 100;
/// The default page size.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// The most rooms one walk looks at (pages past it are not offered).
const MAX_WALKED: usize = 1_000;
/// The most federation requests one walk makes.
const MAX_REMOTE_FETCHES: usize = 10;
/// The most servers asked about one room.
const MAX_VIA: usize = 3;

/// A room of a space tree: its entry and its children.
#[derive(Debug, Clone)]
pub(crate) struct SpaceRoom {
    /// The summary as answered (with `children_state`).
    pub(crate) entry: Value,
    /// The children, in the spec's order.
    pub(crate) children: Vec<SpaceChild>,
}

/// One `m.space.child` of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpaceChild {
    pub(crate) room_id: String,
    pub(crate) via: Vec<String>,
    pub(crate) suggested: bool,
    order: Option<String>,
    ts: i64,
}

impl SpaceRoom {
    /// A room from its entry: the children read from its `children_state`, ordered as the
    /// spec says (a valid `order` first, by `order`; then by the child event's
    /// `origin_server_ts`; then by room id).
    pub(crate) fn from_entry(entry: Value) -> Self {
        let mut children: Vec<SpaceChild> = entry["children_state"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|event| event["type"] == "m.space.child")
            .filter_map(|event| {
                let room_id = event["state_key"].as_str()?;
                ruma::RoomId::parse(room_id).ok()?;
                let via: Vec<String> = event["content"]["via"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| ruma::ServerName::parse(*s).is_ok())
                    .map(str::to_owned)
                    .collect();
                if via.is_empty() {
                    return None;
                }
                let order = event["content"]["order"]
                    .as_str()
                    .filter(|o| o.len() <= 50 && o.chars().all(|c| (' '..='~').contains(&c)))
                    .map(str::to_owned);
                Some(SpaceChild {
                    room_id: room_id.to_owned(),
                    via,
                    suggested: event["content"]["suggested"] == true,
                    order,
                    ts: event["origin_server_ts"].as_i64().unwrap_or(0),
                })
            })
            .collect();
        children.sort_by(|a, b| {
            let order = match (&a.order, &b.order) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            order.then(a.ts.cmp(&b.ts)).then_with(|| a.room_id.cmp(&b.room_id))
        });
        children.dedup_by(|a, b| a.room_id == b.room_id);
        SpaceRoom { entry, children }
    }

    fn room_id(&self) -> &str {
        self.entry["room_id"].as_str().unwrap_or_default()
    }

    /// Whether anyone may see the room from its entry alone (join rule or history).
    fn open(&self) -> bool {
        matches!(self.entry["join_rule"].as_str(), Some("public" | "knock" | "knock_restricted"))
            || self.entry["world_readable"] == true
    }

    /// The rooms a restricted join rule allows members of.
    fn allowed_rooms(&self) -> Vec<&str> {
        if !matches!(self.entry["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            return Vec::new();
        }
        self.entry["allowed_room_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }
}

/// Where a page of the hierarchy starts, and what it was asked with (a `from` token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HierarchyPage {
    offset: usize,
    max_depth: usize,
    suggested_only: bool,
    root: u64,
}

impl HierarchyPage {
    fn root_hash(room_id: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        room_id.hash(&mut hasher);
        hasher.finish()
    }

    /// The token of the page starting at `offset`.
    fn token(self) -> String {
        format!(
            "h{}_{}_{}_{:x}",
            self.offset,
            self.max_depth,
            u8::from(self.suggested_only),
            self.root
        )
    }

    /// The page a `from` token names, checked against this request's parameters.
    fn parse(
        token: &str,
        room_id: &str,
        max_depth: usize,
        suggested_only: bool,
    ) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid_param("not a hierarchy token of this server");
        let mut parts = token.strip_prefix('h').ok_or_else(bad)?.split('_');
        let mut next = || parts.next().ok_or_else(bad);
        let offset: usize = next()?.parse().map_err(|_| bad())?;
        let depth: usize = next()?.parse().map_err(|_| bad())?;
        let suggested = match next()? {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        };
        let root = u64::from_str_radix(next()?, 16).map_err(|_| bad())?;
        if parts.next().is_some() {
            return Err(bad());
        }
        if root != Self::root_hash(room_id) {
            return Err(ApiError::invalid_param("the token is of another room's hierarchy"));
        }
        if depth != max_depth || suggested != suggested_only {
            return Err(ApiError::invalid_param(
                "suggested_only and max_depth cannot change on paginated requests",
            ));
        }
        Ok(HierarchyPage { offset, max_depth, suggested_only, root })
    }
}

/// What a client asked of `/hierarchy`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HierarchyRequest {
    pub(crate) suggested_only: bool,
    pub(crate) max_depth: Option<usize>,
    pub(crate) limit: Option<usize>,
    pub(crate) from: Option<String>,
}

/// One walk: what it asks other servers with, and what it found out about rooms (by room
/// id; `None`: unknown or unreachable).
struct Walk<'a> {
    state: &'a crate::State,
    suggested_only: bool,
    found: HashMap<String, Option<SpaceRoom>>,
    fetches: usize,
}

impl Rooms {
    /// A room we have, as the hierarchy shows it (`None` for a room we do not have).
    pub(crate) async fn local_space_room(
        &self,
        room_id: &str,
    ) -> Result<Option<SpaceRoom>, ApiError> {
        let Some(info) = self.storage().room(room_id).await? else { return Ok(None) };
        let Some(snapshot) = info.current_state else { return Ok(None) };
        let mut entry = Value::clone(&*self.cached_directory_entry(room_id, snapshot).await?);
        entry["room_version"] = json!(info.version);
        if let Some(encryption) = self.state_pdu(snapshot, "m.room.encryption", "").await?
            && let Some(algorithm) = encryption.content().get_str("algorithm")
        {
            entry["encryption"] = json!(algorithm);
        }
        let mut allowed = Vec::new();
        if let Some(join_rules) = self.state_pdu(snapshot, "m.room.join_rules", "").await?
            && let Some(matrix_core::Value::Array(allow)) = join_rules.content().get("allow")
        {
            for condition in allow.iter().filter_map(matrix_core::Value::as_object) {
                if condition.get_str("type") == Some("m.room_membership")
                    && let Some(room) = condition.get_str("room_id")
                {
                    allowed.push(room.to_owned());
                }
            }
        }
        if matches!(entry["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            entry["allowed_room_ids"] = json!(allowed);
        }
        let mut children_state = Vec::new();
        for state in self.storage().state_full(snapshot).await? {
            if state.kind != "m.space.child" {
                continue;
            }
            let Some(pdu) = self.pdu(&state.event_id).await? else { continue };
            let content = super::format::to_serde(pdu.content());
            if content.get("via").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                continue;
            }
            children_state.push(json!({
                "type": "m.space.child",
                "state_key": state.state_key,
                "content": content,
                "sender": pdu.sender(),
                "origin_server_ts": pdu.origin_server_ts(),
            }));
        }
        entry["children_state"] = json!(children_state);
        Ok(Some(SpaceRoom::from_entry(entry)))
    }

    /// Whether `user` may see a room of the hierarchy: see the module's docs.
    async fn user_sees(&self, user: &UserId, room: &SpaceRoom) -> Result<bool, ApiError> {
        if room.open() {
            return Ok(true);
        }
        let membership = self.storage().membership(room.room_id(), user.as_str()).await?;
        if matches!(membership.as_deref(), Some("join" | "invite")) {
            return Ok(true);
        }
        for allowed in room.allowed_rooms() {
            if self.storage().membership(allowed, user.as_str()).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether users of `server` may see a room of ours in the hierarchy: the room is open,
    /// a user of the server is joined or invited, or (restricted) joined to an allowed room.
    async fn server_sees(&self, server: &str, room: &SpaceRoom) -> Result<bool, ApiError> {
        if room.open() {
            return Ok(true);
        }
        let of_server = |user: &str| user.rsplit_once(':').is_some_and(|(_, s)| s == server);
        let has_member = |members: Vec<(String, String)>, memberships: &[&str]| {
            members.iter().any(|(user, m)| of_server(user) && memberships.contains(&m.as_str()))
        };
        if has_member(self.storage().members(room.room_id()).await?, &["join", "invite"]) {
            return Ok(true);
        }
        for allowed in room.allowed_rooms() {
            if has_member(self.storage().members(allowed).await?, &["join"]) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `GET /_matrix/federation/v1/hierarchy/{roomId}` for `server`: the room and those of
    /// its children we have, split into those the server may see and the rest. 404 for a
    /// room we do not have or the server may not see.
    pub(crate) async fn hierarchy_for_server(
        &self,
        server: &str,
        room_id: &str,
        suggested_only: bool,
    ) -> Result<Value, ApiError> {
        let not_found = || ApiError::not_found("no such room, or it is not visible to your server");
        let room = self.local_space_room(room_id).await?.ok_or_else(not_found)?;
        if !self.server_allowed(room_id, server).await? || !self.server_sees(server, &room).await? {
            return Err(not_found());
        }
        let mut children = Vec::new();
        let mut inaccessible = Vec::new();
        for child in room.children.iter().filter(|c| c.suggested || !suggested_only).take(MAX_LIMIT)
        {
            let Some(child_room) = self.local_space_room(&child.room_id).await? else { continue };
            if self.server_allowed(&child.room_id, server).await?
                && self.server_sees(server, &child_room).await?
            {
                let mut entry = child_room.entry;
                if let Some(object) = entry.as_object_mut() {
                    object.remove("children_state");
                }
                children.push(entry);
            } else {
                inaccessible.push(child.room_id.clone());
            }
        }
        Ok(json!({"room": room.entry, "children": children, "inaccessible_children": inaccessible}))
    }

    /// A room of another server as `via` (then the room id's server) describes it, with the
    /// summaries of its children it gave noted in `found` (as rooms without children).
    async fn remote_space_room(
        &self,
        walk: &mut Walk<'_>,
        room_id: &str,
        via: &[String],
    ) -> Option<SpaceRoom> {
        let client = walk.state.federation.as_ref().map(|f| f.client())?;
        let mut servers: Vec<String> = via.iter().take(MAX_VIA).cloned().collect();
        if let Ok(id) = ruma::RoomId::parse(room_id)
            && let Some(server) = id.server_name()
        {
            servers.push(server.to_string());
        }
        let ours = self.server_name().as_str();
        let mut tried = HashSet::new();
        for server in &servers {
            if server == ours || !tried.insert(server) || walk.fetches >= MAX_REMOTE_FETCHES {
                continue;
            }
            walk.fetches += 1;
            let Ok(answer) = client.hierarchy(server, room_id, walk.suggested_only).await else {
                continue;
            };
            let answer = Value::Object(super::format::to_serde(&answer));
            if answer["room"]["room_id"] != room_id {
                continue;
            }
            for child in answer["children"].as_array().into_iter().flatten().take(MAX_LIMIT) {
                if let Some(id) = child["room_id"].as_str()
                    && ruma::RoomId::parse(id).is_ok()
                {
                    walk.found.entry(id.to_owned()).or_insert_with(|| {
                        Some(SpaceRoom { entry: child.clone(), children: Vec::new() })
                    });
                }
            }
            for id in answer["inaccessible_children"].as_array().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    walk.found.entry(id.to_owned()).or_insert(None);
                }
            }
            return Some(SpaceRoom::from_entry(answer["room"].clone()));
        }
        None
    }

    /// A room of the walk: ours, or asked of other servers (a child summary another server
    /// gave is used as it is when the walk does not go below it).
    async fn space_room(
        &self,
        walk: &mut Walk<'_>,
        room_id: &str,
        via: &[String],
        walk_children: bool,
    ) -> Result<Option<SpaceRoom>, ApiError> {
        if let Some(room) = self.local_space_room(room_id).await? {
            return Ok(Some(room));
        }
        match walk.found.get(room_id) {
            Some(None) => return Ok(None),
            Some(Some(room)) if !walk_children || !room.children.is_empty() => {
                return Ok(Some(room.clone()));
            }
            _ => {}
        }
        let room = self.remote_space_room(walk, room_id, via).await;
        if room.is_none() {
            // A summary another server gave is better than nothing.
            return Ok(walk.found.get(room_id).cloned().flatten());
        }
        Ok(room)
    }

    /// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`: the room's hierarchy entry
    /// (without its children), ours or asked of `via` and the room id's server, with the
    /// user's `membership` when there is one. Without a user, only rooms anyone may look at
    /// (public, knock, knock_restricted, world-readable); with one, also rooms they are
    /// joined, invited or knocking to, or may join as members of an allowed room. Any other
    /// room is not found, as an unknown one.
    pub(crate) async fn room_summary(
        &self,
        state: &crate::State,
        user: Option<&UserId>,
        room_id: &str,
        via: &[String],
    ) -> Result<Value, ApiError> {
        let not_found = || ApiError::not_found("no such room, or it is not visible to you");
        let room = match self.local_space_room(room_id).await? {
            Some(room) => room,
            None => {
                let mut walk =
                    Walk { state, suggested_only: false, found: HashMap::new(), fetches: 0 };
                self.remote_space_room(&mut walk, room_id, via).await.ok_or_else(not_found)?
            }
        };
        let membership = match user {
            Some(user) => self.storage().membership(room_id, user.as_str()).await?,
            None => None,
        };
        let visible = match user {
            _ if room.open() => true,
            Some(_) if matches!(membership.as_deref(), Some("knock")) => true,
            Some(user) => self.user_sees(user, &room).await?,
            None => false,
        };
        if !visible {
            return Err(not_found());
        }
        let mut entry = room.entry;
        if let Some(object) = entry.as_object_mut() {
            object.remove("children_state");
        }
        if let Some(membership) = membership {
            entry["membership"] = json!(membership);
        }
        Ok(entry)
    }

    /// One page of the hierarchy under `room_id` as `user` may see it: the rooms (depth first,
    /// children in the spec's order) and the token of the next page.
    pub(crate) async fn hierarchy(
        &self,
        state: &crate::State,
        user: &UserId,
        room_id: &str,
        request: &HierarchyRequest,
    ) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let max_depth = request.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
        let limit = match request.limit {
            Some(0) => return Err(ApiError::invalid_param("limit must be greater than zero")),
            Some(limit) => limit.min(MAX_LIMIT),
            None => DEFAULT_LIMIT,
        };
        let root = HierarchyPage::root_hash(room_id);
        let page = match &request.from {
            Some(token) => HierarchyPage::parse(token, room_id, max_depth, request.suggested_only)?,
            None => {
                HierarchyPage { offset: 0, max_depth, suggested_only: request.suggested_only, root }
            }
        };
        let forbidden = || ApiError::forbidden("you may not see this room");
        let mut walk =
            Walk { state, suggested_only: page.suggested_only, found: HashMap::new(), fetches: 0 };
        let top = self.space_room(&mut walk, room_id, &[], true).await?.ok_or_else(forbidden)?;
        if !self.user_sees(user, &top).await? {
            return Err(forbidden());
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack: Vec<(String, usize, Vec<String>)> = Vec::new();
        let mut rooms: Vec<Value> = Vec::new();
        let mut walked = 0usize;
        let mut next = Some((top, 0usize));
        let wanted = page.offset.saturating_add(limit);
        while rooms.len() <= wanted && walked < MAX_WALKED {
            let (room, depth) = match next.take() {
                Some(first) => first,
                None => {
                    let Some((id, depth, via)) = stack.pop() else { break };
                    if seen.contains(&id) {
                        continue;
                    }
                    let deeper = depth < page.max_depth;
                    let room = self.space_room(&mut walk, &id, &via, deeper).await?;
                    let Some(room) = room else { continue };
                    if !self.user_sees(user, &room).await? {
                        seen.insert(id);
                        continue;
                    }
                    (room, depth)
                }
            };
            walked += 1;
            seen.insert(room.room_id().to_owned());
            if depth < page.max_depth {
                let children = room
                    .children
                    .iter()
                    .filter(|c| c.suggested || !page.suggested_only)
                    .filter(|c| !seen.contains(&c.room_id));
                let children: Vec<_> = children.collect();
                for child in children.into_iter().rev() {
                    stack.push((child.room_id.clone(), depth + 1, child.via.clone()));
                }
            }
            let mut entry = room.entry;
            if entry.get("children_state").is_none() {
                entry["children_state"] = json!([]);
            }
            rooms.push(entry);
        }
        let more = rooms.len() > wanted;
        let chunk: Vec<Value> = rooms.into_iter().skip(page.offset).take(limit).collect();
        let next_batch = more.then(|| HierarchyPage { offset: wanted, ..page }.token());
        Ok((chunk, next_batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(id: &str, order: Option<&str>, ts: i64) -> Value {
        let mut content = json!({"via": ["a.test"]});
        if let Some(order) = order {
            content["order"] = json!(order);
        }
        json!({"type": "m.space.child", "state_key": id, "content": content,
               "sender": "@a:a.test", "origin_server_ts": ts})
    }

    #[test]
    fn children_follow_the_spec_order_and_need_a_via() {
        let entry = json!({"room_id": "!s:a.test", "children_state": [
            child("!d:a.test", None, 1),
            child("!c:a.test", None, 1),
            child("!b:a.test", Some("b"), 9),
            child("!a:a.test", Some("\u{7f}bad"), 0),
            child("!e:a.test", Some("a"), 10),
            {"type": "m.space.child", "state_key": "!gone:a.test", "content": {},
             "origin_server_ts": 0},
            {"type": "m.space.child", "state_key": "!novia:a.test", "content": {"via": []},
             "origin_server_ts": 0},
        ]});
        let room = SpaceRoom::from_entry(entry);
        let ids: Vec<&str> = room.children.iter().map(|c| c.room_id.as_str()).collect();
        assert_eq!(ids, ["!e:a.test", "!b:a.test", "!a:a.test", "!c:a.test", "!d:a.test"]);
    }

    #[test]
    fn tokens_round_trip_and_refuse_changed_parameters() {
        let page = HierarchyPage {
            offset: 7,
            max_depth: 3,
            suggested_only: true,
            root: HierarchyPage::root_hash("!r:x"),
        };
        let token = page.token();
        assert_eq!(HierarchyPage::parse(&token, "!r:x", 3, true).expect("parses"), page);
        assert!(HierarchyPage::parse(&token, "!r:x", 4, true).is_err());
        assert!(HierarchyPage::parse(&token, "!r:x", 3, false).is_err());
        assert!(HierarchyPage::parse(&token, "!other:x", 3, true).is_err());
        for bad in ["", "h", "hx_1_0_0", "h1_1_2_0", "h1_1_0_0_0", "p1"] {
            assert!(HierarchyPage::parse(bad, "!r:x", 1, false).is_err(), "{bad}");
        }
    }
}
