//! `createRoom`: the create event, the creator's join, power levels, the alias, the preset's
//! rules, the initial state, name and topic, then the invites, in the spec's order.

use matrix_core::RoomVersionRules;
use matrix_core::json::{Object, Value};
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, UserId};

use super::{Draft, Rooms, now_ms};

/// A timestamp for a create event: now, or one past the last one handed out if that is
/// later (so every create event of the process has its own).
fn create_ts() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1)))
        .unwrap_or(now);
    now.max(previous + 1)
}
use crate::error::ApiError;
use matrix_storage::{Alias, ChangeSet};

/// The room version of rooms created without one.
pub(crate) const DEFAULT_ROOM_VERSION: &str = "12";

/// A `createRoom` preset (the spec's names).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// What a `createRoom` asks for, already parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct CreateRoom {
    pub(crate) version: Option<String>,
    pub(crate) preset: Option<Preset>,
    /// Published in the room directory.
    pub(crate) public: bool,
    pub(crate) creation_content: Option<Object>,
    pub(crate) power_levels_override: Option<Object>,
    /// `(type, state_key, content)`.
    pub(crate) initial_state: Vec<(String, String, Object)>,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) alias_localpart: Option<String>,
    pub(crate) invite: Vec<OwnedUserId>,
    pub(crate) is_direct: bool,
}

fn object(entries: &[(&str, Value)]) -> Object {
    let mut object = Object::new();
    for (key, value) in entries {
        object.insert(*key, value.clone());
    }
    object
}

fn int(n: i64) -> Value {
    Value::from(n)
}

/// The power levels a room starts with (Synapse's defaults, which clients expect).
fn default_power_levels(
    rules: &RoomVersionRules,
    creator: &UserId,
    preset: Preset,
    trusted: &[OwnedUserId],
) -> Object {
    let mut users = Object::new();
    // From room version 12 the creators are above every level and may not be listed.
    if !rules.auth.privileged_creators {
        users.insert(creator.as_str(), 100);
        if preset == Preset::TrustedPrivateChat {
            for user in trusted {
                users.insert(user.as_str(), 100);
            }
        }
    }
    let events = object(&[
        ("m.room.name", int(50)),
        ("m.room.power_levels", int(100)),
        ("m.room.history_visibility", int(100)),
        ("m.room.canonical_alias", int(50)),
        ("m.room.avatar", int(50)),
        ("m.room.tombstone", int(100)),
        ("m.room.server_acl", int(100)),
        ("m.room.encryption", int(100)),
    ]);
    let invite = if preset == Preset::PublicChat { 50 } else { 0 };
    object(&[
        ("users", Value::Object(users)),
        ("users_default", int(0)),
        ("events", Value::Object(events)),
        ("events_default", int(0)),
        ("state_default", int(50)),
        ("ban", int(50)),
        ("kick", int(50)),
        ("redact", int(50)),
        ("invite", int(invite)),
        ("historical", int(100)),
    ])
}

/// Whether a power levels object is well formed for `rules`: every named level a level, and
/// `users` and `events` maps of levels (what the authorization rules would refuse later, when
/// part of the room is already stored).
fn check_levels(levels: &Object, rules: &RoomVersionRules) -> Result<(), ApiError> {
    let bad = |what: &str| {
        ApiError::bad_json(format!("power_level_content_override: {what} is not a power level"))
    };
    for (key, value) in levels.iter() {
        match key {
            "users" | "events" | "notifications" => {
                let Value::Object(map) = value else { return Err(bad(key)) };
                for (name, level) in map.iter() {
                    if matrix_core::auth::parse_level(level, rules).is_none() {
                        return Err(bad(&format!("{key}.{name}")));
                    }
                    if key == "users" && ruma::UserId::parse(name).is_err() {
                        return Err(ApiError::bad_json(format!(
                            "power_level_content_override: {name:?} is not a user id"
                        )));
                    }
                }
            }
            "users_default" | "events_default" | "state_default" | "ban" | "kick" | "redact"
            | "invite"
                if matrix_core::auth::parse_level(value, rules).is_none() =>
            {
                return Err(bad(key));
            }
            _ => {}
        }
    }
    Ok(())
}

impl Rooms {
    /// Checks what can be checked before anything is stored, so that a bad request leaves no
    /// half-made room behind.
    async fn check_create_request(
        &self,
        rules: &RoomVersionRules,
        creator: &UserId,
        request: &CreateRoom,
    ) -> Result<(), ApiError> {
        for (kind, state_key, _) in &request.initial_state {
            if kind.contains('\0') || state_key.contains('\0') {
                return Err(ApiError::invalid_param("a NUL character in initial_state"));
            }
            if kind == "m.room.create" || kind == "m.room.member" {
                return Err(ApiError::invalid_param(format!("initial_state may not set {kind}")));
            }
        }
        if let Some(levels) = &request.power_levels_override {
            check_levels(levels, rules)?;
            if rules.auth.privileged_creators
                && levels.get_object("users").is_some_and(|u| u.contains_key(creator.as_str()))
            {
                return Err(ApiError::bad_json(
                    "in room version 12 the creator cannot be given a power level",
                ));
            }
        }
        let own_alias = match &request.alias_localpart {
            Some(localpart) => Some(self.local_alias(localpart)?),
            None => None,
        };
        for (kind, state_key, content) in &request.initial_state {
            if kind == "m.room.power_levels" {
                check_levels(content, rules)?;
            }
            // A new room has no alias but the one this request makes.
            if kind == "m.room.canonical_alias" && state_key.is_empty() {
                for alias in super::authorize::aliases_named(content)? {
                    if own_alias.as_ref().is_none_or(|own| own.as_str() != alias) {
                        return Err(ApiError::bad_alias(format!(
                            "{alias} does not point at the new room"
                        )));
                    }
                }
            }
        }
        if let Some(content) = &request.creation_content
            && content.get("type").is_some_and(|t| t.as_str().is_none())
        {
            return Err(ApiError::bad_json("creation_content.type must be a string"));
        }
        for invitee in &request.invite {
            if invitee.server_name().as_str() != self.server_name().as_str() {
                if self.federation_client().is_none() {
                    return Err(ApiError::forbidden(
                        "inviting users of other servers needs federation, which is off here",
                    ));
                }
                continue;
            }
            if self.storage().user(invitee.as_str()).await?.is_none() {
                return Err(ApiError::not_found(format!("{invitee} does not exist")));
            }
        }
        Ok(())
    }

    /// The alias `#localpart:server` of this server, checked.
    pub(crate) fn local_alias(&self, localpart: &str) -> Result<OwnedRoomAliasId, ApiError> {
        if localpart.is_empty()
            || localpart.contains([':', '#'])
            || localpart.contains(char::is_whitespace)
        {
            return Err(ApiError::invalid_param("the alias name is not valid"));
        }
        RoomAliasId::parse(format!("#{localpart}:{}", self.server_name()))
            .map_err(|e| ApiError::invalid_param(format!("the alias is not valid: {e}")))
    }

    /// The `m.room.create` event of a new room of `creator` with `content` (at a time no
    /// other create event of this process has: in room version 12 the room id is the
    /// event's hash, so two rooms one user asks for in the same millisecond would otherwise
    /// be one), before it is
    /// hashed and signed (a room id made up here for versions before 12).
    pub(super) fn create_event(
        &self,
        creator: &UserId,
        rules: &'static RoomVersionRules,
        content: Object,
    ) -> Result<Object, ApiError> {
        let mut create = Object::new();
        create.insert("type", "m.room.create");
        create.insert("state_key", "");
        create.insert("sender", creator.as_str());
        create.insert("origin_server_ts", create_ts());
        create.insert("content", content);
        create.insert("depth", 1);
        create.insert("prev_events", Value::Array(Vec::new()));
        create.insert("auth_events", Value::Array(Vec::new()));
        if !rules.room_id_from_create_event {
            let mut bytes = [0u8; 12];
            getrandom::fill(&mut bytes).map_err(|_| ApiError::unknown("no randomness"))?;
            let local: String = bytes.iter().map(|b| char::from(b'a' + b % 26)).collect();
            create.insert("room_id", format!("!{local}:{}", self.server_name()));
        }
        if rules.event_format == matrix_core::room_version::EventFormat::V1 {
            create.insert("origin", self.server_name().as_str());
        }
        Ok(create)
    }

    /// Creates a room as `creator`; returns its id.
    pub(crate) async fn create_room(
        &self,
        creator: &UserId,
        request: CreateRoom,
    ) -> Result<String, ApiError> {
        let version = request.version.as_deref().unwrap_or(DEFAULT_ROOM_VERSION);
        let rules = RoomVersionRules::get(version).ok_or_else(|| {
            ApiError::unsupported_room_version(format!("room version {version:?} is not supported"))
        })?;
        self.check_create_request(rules, creator, &request).await?;
        // The alias is checked and recorded under the alias lock, held from the check until
        // the record is written (right after the create event names the room), so that an
        // alias made meanwhile by `PUT /directory/room` is never overwritten.
        let (alias, alias_guard) = match &request.alias_localpart {
            Some(localpart) => {
                let alias = self.local_alias(localpart)?;
                let guard = self.alias_lock.lock().await;
                if self.storage().alias(alias.as_str()).await?.is_some() {
                    return Err(ApiError::room_in_use());
                }
                (Some(alias), Some(guard))
            }
            None => (None, None),
        };
        let preset = request.preset.unwrap_or(if request.public {
            Preset::PublicChat
        } else {
            Preset::PrivateChat
        });
        let trusted =
            if preset == Preset::TrustedPrivateChat { request.invite.clone() } else { Vec::new() };

        // The create event.
        let mut content = request.creation_content.clone().unwrap_or_default();
        content.remove("creator");
        content.insert("room_version", rules.id);
        if !rules.auth.creator_is_sender {
            content.insert("creator", creator.as_str());
        }
        if rules.auth.privileged_creators && !trusted.is_empty() {
            let mut more: Vec<Value> = match content.get("additional_creators") {
                Some(Value::Array(more)) => more.clone(),
                _ => Vec::new(),
            };
            more.extend(trusted.iter().map(|u| Value::from(u.as_str())));
            content.insert("additional_creators", Value::Array(more));
        }
        let create = self.append_create(self.create_event(creator, rules, content)?, rules).await?;
        let room_id = create.room_id().to_owned();
        if let Some(alias) = &alias {
            let mut changes = ChangeSet::new();
            changes.aliases.push(Alias {
                alias: alias.to_string(),
                room_id: room_id.clone(),
                creator: creator.to_string(),
            });
            self.storage().apply(changes).await?;
        }
        drop(alias_guard);

        // The creator joins.
        self.append(&room_id, creator, self.member_draft(creator, "join", None).await?).await?;

        // Power levels, with the override's top-level keys replacing the defaults'.
        let mut levels = default_power_levels(rules, creator, preset, &trusted);
        if let Some(overrides) = request.power_levels_override {
            for (key, value) in overrides.iter() {
                levels.insert(key, value.clone());
            }
        }
        self.append(&room_id, creator, Draft::state("m.room.power_levels", "", levels)).await?;

        if let Some(alias) = &alias {
            let content = object(&[("alias", Value::from(alias.as_str()))]);
            self.append(&room_id, creator, Draft::state("m.room.canonical_alias", "", content))
                .await?;
        }

        // The preset's rules, unless the initial state sets them.
        let in_initial =
            |kind: &str| request.initial_state.iter().any(|(k, s, _)| k == kind && s.is_empty());
        let join_rule = if preset == Preset::PublicChat { "public" } else { "invite" };
        let guest_access = if preset == Preset::PublicChat { "forbidden" } else { "can_join" };
        for (kind, key, value) in [
            ("m.room.join_rules", "join_rule", join_rule),
            ("m.room.history_visibility", "history_visibility", "shared"),
            ("m.room.guest_access", "guest_access", guest_access),
        ] {
            if !in_initial(kind) {
                let content = object(&[(key, Value::from(value))]);
                self.append(&room_id, creator, Draft::state(kind, "", content)).await?;
            }
        }
        for (kind, state_key, content) in request.initial_state {
            self.append(&room_id, creator, Draft::state(&kind, &state_key, content)).await?;
        }
        if let Some(name) = request.name {
            let content = object(&[("name", Value::from(name))]);
            self.append(&room_id, creator, Draft::state("m.room.name", "", content)).await?;
        }
        if let Some(topic) = request.topic {
            // The spec's (v1.15) m.topic: a content block with its plain-text form.
            let text = object(&[("body", Value::from(topic.as_str()))]);
            let block = object(&[("m.text", Value::Array(vec![Value::Object(text)]))]);
            let content =
                object(&[("topic", Value::from(topic)), ("m.topic", Value::Object(block))]);
            self.append(&room_id, creator, Draft::state("m.room.topic", "", content)).await?;
        }
        for invitee in &request.invite {
            self.invite(&room_id, creator, invitee, None, request.is_direct).await?;
        }

        if request.public {
            let mut changes = ChangeSet::new();
            changes.directory.push((room_id.clone(), true));
            self.storage().apply(changes).await?;
        }
        Ok(room_id)
    }
}
