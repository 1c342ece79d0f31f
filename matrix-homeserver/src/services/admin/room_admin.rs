//! Room membership by the administrators, each change an event of a user sent through the
//! rooms' authorization:
//! - `POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin`: grants a user of ours
//!   the highest power a user of ours in the room has, by a power levels event that user
//!   sends; a user who is not in a room that is not public is invited by that user too.
//! - `POST /_synapse/admin/v1/join/{roomIdOrAlias}`: joins a user of ours to a room; one
//!   that is not public needs the administrator in it, who invites the user first.

use matrix_core::json::Value;
use ruma::{OwnedRoomId, UserId};

use super::rooms::parse_room;
use super::users::local_user;
use crate::State;
use crate::error::ApiError;
use crate::services::rooms::{Draft, Level};

/// A room id, or an alias this server resolves to one (404 when it does not).
pub(crate) async fn resolve(state: &State, room: &str) -> Result<OwnedRoomId, ApiError> {
    if !room.starts_with('#') {
        return parse_room(room);
    }
    let alias = state.rooms.storage().alias(room).await?;
    let alias = alias.ok_or_else(|| ApiError::not_found("Room alias not found"))?;
    parse_room(&alias.room_id)
}

/// Joins `target` to a room (see the module's doc): the room's id.
pub(crate) async fn force_join(
    state: &State,
    admin: &UserId,
    room: &str,
    target: &UserId,
) -> Result<OwnedRoomId, ApiError> {
    let room_id = resolve(state, room).await?;
    local_user(state, target).await?;
    let storage = state.rooms.storage();
    let snapshot = storage
        .room(room_id.as_str())
        .await?
        .and_then(|info| info.current_state)
        .ok_or_else(|| ApiError::not_found("Room not found"))?;
    let membership = storage.membership(room_id.as_str(), target.as_str()).await?;
    if membership.as_deref() == Some("join") {
        return Ok(room_id);
    }
    let join_rules = state.rooms.state_pdu(snapshot, "m.room.join_rules", "").await?;
    let public = join_rules.is_some_and(|j| j.content().get_str("join_rule") == Some("public"));
    if !public && membership.as_deref() != Some("invite") {
        let admin_in = storage.membership(room_id.as_str(), admin.as_str()).await?;
        if admin_in.as_deref() != Some("join") {
            return Err(ApiError::forbidden("the server administrator is not in the room"));
        }
        state.rooms.invite(room_id.as_str(), admin, target, None, false).await?;
    }
    let federation = state.federation.as_ref();
    state.rooms.join_anywhere(federation, room_id.as_str(), target, None, &[]).await?;
    Ok(room_id)
}

/// Makes `target` a room administrator (see the module's doc).
pub(crate) async fn make_room_admin(
    state: &State,
    room: &str,
    target: &UserId,
) -> Result<(), ApiError> {
    let room_id = resolve(state, room).await?;
    local_user(state, target).await?;
    let storage = state.rooms.storage();
    let info = storage.room(room_id.as_str()).await?;
    let snapshot = info
        .and_then(|info| info.current_state)
        .ok_or_else(|| ApiError::not_found("Room not found"))?;
    let rules = state.rooms.rules(room_id.as_str()).await?;
    let rules = rules.ok_or_else(|| ApiError::not_found("Room not found"))?;
    let levels = state.rooms.state_pdu(snapshot, "m.room.power_levels", "").await?;
    let create = state.rooms.state_pdu(snapshot, "m.room.create", "").await?;
    let level_of = |user: &str| {
        matrix_core::auth::user_power_level(rules, levels.as_deref(), create.as_deref(), user)
    };

    // The most powerful of our joined users.
    let local = format!(":{}", state.config.server_name);
    let members = storage.members(room_id.as_str()).await?;
    let admin = members
        .iter()
        .filter(|(user, membership)| membership == "join" && user.ends_with(&local))
        .max_by(|(a, _), (b, _)| level_of(a).cmp(&level_of(b)).then_with(|| b.cmp(a)))
        .map(|(user, _)| user.clone())
        .ok_or_else(|| ApiError::invalid_param("No local admin user in room"))?;
    let admin = UserId::parse(admin.as_str())
        .map_err(|_| ApiError::unknown("a member id does not parse"))?;
    let may_change =
        state.rooms.has_level(rules, snapshot, &admin, Level::State("m.room.power_levels")).await?;
    if !may_change {
        return Err(ApiError::invalid_param(
            "No local admin user in room with power to update power levels.",
        ));
    }

    // A creator of room version 12 has no level in `users`: the target gets the highest
    // level anybody is given there (100 at least), which is all a power levels event can give.
    let mut content = levels.as_ref().map(|l| l.content().clone()).unwrap_or_default();
    let given = content.get_object("users").map(|users| {
        users
            .iter()
            .filter_map(|(_, v)| matrix_core::auth::parse_level(v, rules))
            .max()
            .unwrap_or(0)
    });
    let wanted = match i64::try_from(level_of(admin.as_str())) {
        Ok(level) => level,
        Err(_) => given.unwrap_or(0).max(100),
    };
    if level_of(target.as_str()) < i128::from(wanted) {
        content.object_entry("users").insert(target.as_str(), Value::from(wanted));
        let draft = Draft::state("m.room.power_levels", "", content);
        state.rooms.append(room_id.as_str(), &admin, draft).await?;
    }

    let membership = storage.membership(room_id.as_str(), target.as_str()).await?;
    if !matches!(membership.as_deref(), Some("join" | "invite")) {
        let join_rules = state.rooms.state_pdu(snapshot, "m.room.join_rules", "").await?;
        let public = join_rules.is_some_and(|j| j.content().get_str("join_rule") == Some("public"));
        if !public {
            state.rooms.invite(room_id.as_str(), &admin, target, None, false).await?;
        }
    }
    Ok(())
}
