//! Room upgrades (`POST /rooms/{roomId}/upgrade`), as the spec's server behaviour has it:
//!
//! 1. the user must be joined with the power to send `m.room.tombstone`;
//! 2. a new room of the asked version whose create event names the old room as its
//!    `predecessor` (with the old room's `type` and `m.federate`; from version 12 the upgrading
//!    user is its creator and `additional_creators` are those the request names);
//! 3. the transferable state copied: server ACL, encryption, name, avatar, topic, guest
//!    access, history visibility, join rules, power levels (and a space's children), then the
//!    bans. The power levels' `users` leave out the new room's creators when the new version
//!    makes creators privileged (version 12), and give the old room's creators the highest
//!    level when the old room's version made them privileged and the new one does not. While
//!    the state is copied, the upgrading user holds the level it needs (power levels sent
//!    first with it raised, the copied ones last);
//! 4. this server's aliases of the old room moved to the new one, its canonical alias copied
//!    (the aliases that now point at the new room), its place in the room directory moved;
//! 5. the tombstone sent in the old room, with `replacement_room`;
//! 6. the old room's power levels raised so that only the privileged speak or invite:
//!    `events_default` and `invite` at least 50 and above `users_default`.
//!
//! Upgrades of this process run one at a time, and a room whose current state has a
//! tombstone is not upgraded again (400 `M_BAD_STATE`), so two requests at once make one
//! new room.

use matrix_core::json::{Object, Value};
use matrix_core::{RoomVersionRules, auth};
use matrix_storage::{Alias, ChangeSet};
use ruma::UserId;

use super::{Draft, Level, Rooms};
use crate::error::ApiError;

/// The state copied to the new room (the spec's recommended list).
const TRANSFERRED: [&str; 9] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.power_levels",
];

/// The most bans copied (each is an event of the new room).
const MAX_COPIED_BANS: usize = 1_000;

/// The most children of a space copied.
const MAX_COPIED_CHILDREN: usize = 1_000;

/// The most `additional_creators` an upgrade may name.
pub(crate) const MAX_ADDITIONAL_CREATORS: usize = 50;

/// The top-level power levels that are levels.
const LEVEL_KEYS: [&str; 8] = [
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "kick",
    "redact",
    "invite",
    "historical",
];

impl Rooms {
    /// Upgrades `room_id` to `version` as `user`; answers the new room's id.
    pub(crate) async fn upgrade(
        &self,
        room_id: &str,
        user: &UserId,
        version: &str,
        additional_creators: Vec<ruma::OwnedUserId>,
    ) -> Result<String, ApiError> {
        let new_rules = RoomVersionRules::get(version).ok_or_else(|| {
            ApiError::unsupported_room_version(format!("room version {version:?} is not supported"))
        })?;
        let old_rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        if additional_creators.len() > MAX_ADDITIONAL_CREATORS {
            return Err(ApiError::list_too_long("additional_creators", MAX_ADDITIONAL_CREATORS));
        }
        let _one_at_a_time = self.upgrade_lock.lock().await;
        if self.storage().membership(room_id, user.as_str()).await?.as_deref() != Some("join") {
            return Err(ApiError::forbidden("you are not in the room"));
        }
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let snapshot = info.current_state.ok_or_else(ApiError::room_not_found)?;
        if !self.has_level(old_rules, snapshot, user, Level::State("m.room.tombstone")).await? {
            return Err(ApiError::forbidden(
                "you do not have the power to send m.room.tombstone: you cannot upgrade the room",
            ));
        }
        if let Some(tombstone) = self.state_pdu(snapshot, "m.room.tombstone", "").await?
            && let Some(replacement) = tombstone.content().get_str("replacement_room")
        {
            return Err(ApiError::bad_state(format!(
                "the room was already upgraded: its replacement is {replacement}"
            )));
        }
        let old_create = self
            .state_pdu(snapshot, "m.room.create", "")
            .await?
            .ok_or_else(|| ApiError::unknown("the room has no create event"))?;

        // The create event of the new room.
        let mut content = Object::new();
        content.insert("room_version", new_rules.id);
        for key in ["type", "m.federate"] {
            if let Some(value) = old_create.content().get(key) {
                content.insert(key, value.clone());
            }
        }
        let mut predecessor = Object::new();
        predecessor.insert("room_id", room_id);
        if !new_rules.room_id_from_create_event
            && let Some(last) = info.forward_extremities.last()
        {
            predecessor.insert("event_id", last.as_str());
        }
        content.insert("predecessor", predecessor);
        if !new_rules.auth.creator_is_sender {
            content.insert("creator", user.as_str());
        }
        let mut new_creators = vec![user.to_string()];
        if new_rules.auth.privileged_creators {
            let mut more: Vec<Value> = Vec::new();
            for creator in &additional_creators {
                if creator.as_str() != user.as_str()
                    && !more.iter().any(|m| m.as_str() == Some(creator.as_str()))
                {
                    more.push(Value::from(creator.as_str()));
                    new_creators.push(creator.to_string());
                }
            }
            if !more.is_empty() {
                content.insert("additional_creators", Value::Array(more));
            }
        }

        // The power levels: those of the old room, adjusted to the new version's creators.
        let old_levels = self.state_pdu(snapshot, "m.room.power_levels", "").await?;
        let old_creators = old_creators(old_rules, &old_create);
        let mut levels = match &old_levels {
            Some(pdu) => normalized_levels(pdu.content(), old_rules),
            None => Object::new(),
        };
        let users = levels.object_entry("users");
        if !new_rules.auth.privileged_creators {
            // Creators above every level before: the highest level now.
            let top = users
                .iter()
                .filter_map(|(_, v)| auth::parse_level(v, new_rules))
                .max()
                .unwrap_or(100)
                .max(100);
            if old_rules.auth.privileged_creators {
                for creator in &old_creators {
                    users.insert(creator.as_str(), top);
                }
            }
        } else {
            for creator in &new_creators {
                users.remove(creator);
            }
        }
        if users.is_empty() {
            levels.remove("users");
        }

        // The state copied, read before anything is made.
        let mut copied: Vec<(String, String, Object)> = Vec::new();
        for kind in TRANSFERRED.iter().filter(|k| **k != "m.room.power_levels") {
            if let Some(pdu) = self.state_pdu(snapshot, kind, "").await? {
                copied.push(((*kind).to_owned(), String::new(), pdu.content().clone()));
            }
        }
        if old_create.content().get_str("type") == Some("m.space") {
            let state = self.storage().state_full(snapshot).await?;
            let children = state.into_iter().filter(|e| e.kind == "m.space.child");
            for entry in children.take(MAX_COPIED_CHILDREN) {
                if let Some(pdu) = self.pdu(&entry.event_id).await?
                    && !pdu.content().is_empty()
                {
                    copied.push((
                        "m.space.child".to_owned(),
                        entry.state_key,
                        pdu.content().clone(),
                    ));
                }
            }
        }
        let mut bans: Vec<(String, Option<String>)> = Vec::new();
        for (member, membership) in self.storage().members(room_id).await? {
            if membership != "ban" || bans.len() >= MAX_COPIED_BANS {
                continue;
            }
            let reason = self
                .state_pdu(snapshot, "m.room.member", &member)
                .await?
                .and_then(|p| p.content().get_str("reason").map(str::to_owned));
            bans.push((member, reason));
        }

        // While copying, the upgrading user needs the levels of what is sent (unless a
        // creator of version 12).
        let mut interim = levels.clone();
        if !new_rules.auth.privileged_creators {
            let needed = needed_level(&levels, &copied, !bans.is_empty(), new_rules);
            let users = interim.object_entry("users");
            let has = users.get(user.as_str()).and_then(|v| auth::parse_level(v, new_rules));
            if has.is_none_or(|has| has < needed) {
                users.insert(user.as_str(), needed);
            }
        }

        let create = self.create_event(user, new_rules, content)?;
        let new_room = self.append_create(create, new_rules).await?.room_id().to_owned();
        self.append(&new_room, user, self.member_draft(user, "join", None).await?).await?;
        self.append(&new_room, user, Draft::state("m.room.power_levels", "", interim.clone()))
            .await?;
        for (kind, key, content) in copied {
            self.append(&new_room, user, Draft::state(&kind, &key, content)).await?;
        }
        for (banned, reason) in bans {
            let Ok(target) = <&UserId>::try_from(banned.as_str()) else { continue };
            let draft = self.member_draft(target, "ban", reason).await?;
            if let Err(e) = self.append(&new_room, user, draft).await {
                tracing::warn!("upgrade of {room_id}: the ban of {banned} not copied: {e}");
            }
        }
        if interim != levels {
            self.append(&new_room, user, Draft::state("m.room.power_levels", "", levels)).await?;
        }

        // Aliases, the canonical alias and the directory.
        self.move_aliases(room_id, &new_room).await?;
        if let Some(canonical) = self.state_pdu(snapshot, "m.room.canonical_alias", "").await?
            && let Some(content) =
                self.moved_canonical_alias(canonical.content(), &new_room).await?
            && let Err(e) = self
                .append(&new_room, user, Draft::state("m.room.canonical_alias", "", content))
                .await
        {
            tracing::warn!("upgrade of {room_id}: the canonical alias not copied: {e}");
        }
        if self.storage().published(room_id).await? {
            let mut changes = ChangeSet::new();
            changes.directory.push((room_id.to_owned(), false));
            changes.directory.push((new_room.clone(), true));
            self.storage().apply(changes).await?;
        }

        // The tombstone, then the old room quietened.
        let mut tombstone = Object::new();
        tombstone.insert("body", "This room has been replaced");
        tombstone.insert("replacement_room", new_room.as_str());
        self.append(room_id, user, Draft::state("m.room.tombstone", "", tombstone)).await?;
        self.quieten(room_id, user, old_rules).await;
        Ok(new_room)
    }

    /// Points this server's aliases of `from` at `to`.
    async fn move_aliases(&self, from: &str, to: &str) -> Result<(), ApiError> {
        let _guard = self.alias_lock.lock().await;
        let aliases = self.storage().room_aliases(from).await?;
        if aliases.is_empty() {
            return Ok(());
        }
        let mut changes = ChangeSet::new();
        changes.aliases = aliases
            .into_iter()
            .map(|a| Alias { alias: a.alias, room_id: to.to_owned(), creator: a.creator })
            .collect();
        self.storage().apply(changes).await?;
        Ok(())
    }

    /// The canonical alias content for the new room: the aliases of the old one's that point
    /// at the new room now (this server's, moved); `None` when none does.
    async fn moved_canonical_alias(
        &self,
        content: &Object,
        new_room: &str,
    ) -> Result<Option<Object>, ApiError> {
        let points_here =
            |alias: Option<matrix_storage::Alias>| alias.is_some_and(|a| a.room_id == new_room);
        let mut moved = Object::new();
        if let Some(alias) = content.get_str("alias")
            && points_here(self.storage().alias(alias).await?)
        {
            moved.insert("alias", alias);
        }
        let mut alt = Vec::new();
        if let Some(Value::Array(list)) = content.get("alt_aliases") {
            for alias in list.iter().filter_map(Value::as_str).take(100) {
                if points_here(self.storage().alias(alias).await?) {
                    alt.push(Value::from(alias));
                }
            }
        }
        if !alt.is_empty() {
            moved.insert("alt_aliases", Value::Array(alt));
        }
        Ok((!moved.is_empty()).then_some(moved))
    }

    /// The old room's `events_default` and `invite` raised to at least 50 and above
    /// `users_default`, when the user may change its power levels (else left as they are:
    /// the spec asks for it where possible).
    async fn quieten(&self, room_id: &str, user: &UserId, rules: &'static RoomVersionRules) {
        let result: Result<(), ApiError> = async {
            let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
            let snapshot = info.current_state.ok_or_else(ApiError::room_not_found)?;
            if !self.has_level(rules, snapshot, user, Level::State("m.room.power_levels")).await? {
                return Ok(());
            }
            let mut levels = match self.state_pdu(snapshot, "m.room.power_levels", "").await? {
                Some(pdu) => pdu.content().clone(),
                None => Object::new(),
            };
            let level = |key: &str, default: i64| {
                levels.get(key).and_then(|v| auth::parse_level(v, rules)).unwrap_or(default)
            };
            let floor = 50.max(level("users_default", 0).saturating_add(1));
            let (events_default, invite) = (level("events_default", 0), level("invite", 0));
            if events_default >= floor && invite >= floor {
                return Ok(());
            }
            levels.insert("events_default", events_default.max(floor));
            levels.insert("invite", invite.max(floor));
            self.append(room_id, user, Draft::state("m.room.power_levels", "", levels)).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("upgrade of {room_id}: the old room's power levels not changed: {e}");
        }
    }
}

/// The creators of a room by its create event and version.
fn old_creators(rules: &RoomVersionRules, create: &matrix_core::Pdu) -> Vec<String> {
    if !rules.auth.creator_is_sender {
        return create.content().get_str("creator").map(str::to_owned).into_iter().collect();
    }
    let mut creators = vec![create.sender().to_owned()];
    if rules.auth.privileged_creators
        && let Some(Value::Array(more)) = create.content().get("additional_creators")
    {
        creators.extend(more.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    creators
}

/// Power levels as integers (a version before 10 may hold strings or floats, which later
/// versions refuse); entries that are not levels are left out.
fn normalized_levels(content: &Object, rules: &RoomVersionRules) -> Object {
    let mut levels = Object::new();
    for (key, value) in content.iter() {
        match key {
            "users" | "events" | "notifications" => {
                let Value::Object(map) = value else { continue };
                let mut out = Object::new();
                for (name, level) in map.iter() {
                    if let Some(level) = auth::parse_level(level, rules) {
                        out.insert(name, level);
                    }
                }
                levels.insert(key, out);
            }
            _ if LEVEL_KEYS.contains(&key) => {
                if let Some(level) = auth::parse_level(value, rules) {
                    levels.insert(key, level);
                }
            }
            _ => {
                levels.insert(key, value.clone());
            }
        }
    }
    levels
}

/// The level the upgrading user needs to send the copied state, the bans and the power levels
/// themselves (at least 100).
fn needed_level(
    levels: &Object,
    copied: &[(String, String, Object)],
    bans: bool,
    rules: &RoomVersionRules,
) -> i64 {
    let level = |value: Option<&Value>, default: i64| {
        value.and_then(|v| auth::parse_level(v, rules)).unwrap_or(default)
    };
    let events = levels.get_object("events");
    let state_default = level(levels.get("state_default"), 50);
    let for_kind = |kind: &str| level(events.and_then(|e| e.get(kind)), state_default);
    let mut needed = 100.max(for_kind("m.room.power_levels"));
    for (kind, _, _) in copied {
        needed = needed.max(for_kind(kind));
    }
    if bans {
        needed = needed.max(level(levels.get("ban"), 50));
        // A ban needs more than the banned user's level.
        if let Some(users) = levels.get_object("users") {
            for (_, value) in users.iter() {
                if let Some(target) = auth::parse_level(value, rules) {
                    needed = needed.max(target.saturating_add(1));
                }
            }
        }
    }
    needed
}
