//! Server notices (Synapse's `send_server_notice`): a message from the server's
//! administrators to one of its users, sent by the system user of the `server_notices`
//! settings into the recipient's notice room. That room is the system user's, made on the
//! first notice (private, named from the settings, the recipient invited, or joined with
//! `auto_join`, and tagged `m.server_notice` in the recipient's account data), where
//! `users_default` is -10 so that the recipient reads but cannot send. A recipient who left
//! it gets a new one with the next notice.

use matrix_core::json::Value;
use ruma::{OwnedUserId, UserId};

use super::users::local_user;
use crate::State;
use crate::error::ApiError;
use crate::services::rooms::{CreateRoom, Draft, Preset, parse_content};

/// The tag of notice rooms (the spec's server notices module).
const NOTICE_TAG: &str = "m.server_notice";

/// Serialises the making of notice rooms, so that two notices at once make one room.
static NOTICE_ROOMS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What `send_server_notice` asks for.
pub(crate) struct Notice<'a> {
    pub(crate) user_id: &'a UserId,
    /// The event's type (`m.room.message` unless given).
    pub(crate) kind: &'a str,
    /// A state key makes the notice a state event.
    pub(crate) state_key: Option<&'a str>,
    /// The content, as JSON bytes.
    pub(crate) content: &'a [u8],
}

/// Sends `notice`; answers the event id. With `txn` (the `PUT` form, and the administrator
/// who sent it), a repeated request answers the first one's event id and sends nothing.
pub(crate) async fn send(
    state: &State,
    notice: Notice<'_>,
    txn: Option<(&UserId, &str)>,
) -> Result<String, ApiError> {
    let config = &state.config.server_notices;
    let Some(localpart) = config.system_mxid_localpart.as_deref() else {
        return Err(ApiError::bad_request("Server notices are not enabled on this server"));
    };
    if notice.user_id.server_name().as_str() != state.config.server_name {
        return Err(ApiError::bad_request("Server notices can only be sent to local users"));
    }
    let recipient = local_user(state, notice.user_id).await?;
    if recipient.deactivated {
        return Err(ApiError::bad_request("the user is deactivated"));
    }
    let rules = matrix_core::RoomVersionRules::get(crate::services::rooms::DEFAULT_ROOM_VERSION)
        .ok_or_else(|| ApiError::unknown("no rules for the default room version"))?;
    let content = parse_content(notice.content, rules)?;
    let system = state.accounts.local_user_id(localpart)?;
    let room = notice_room(state, &system, notice.user_id).await?;
    let draft = match notice.state_key {
        Some(key) => Draft::state(notice.kind, key, content),
        None => Draft::message(notice.kind, content),
    };
    match txn {
        Some((admin, txn)) => {
            // Transaction ids are kept per sender and device: the administrator's name
            // stands for the device, so that two administrators' ids never meet.
            let scope = format!("!notice:{admin}");
            state.rooms.send_once(&room, &system, &scope, txn, draft).await
        }
        None => Ok(state.rooms.append(&room, &system, draft).await?.event_id().to_owned()),
    }
}

/// The recipient's notice room: one the system user is joined to and the recipient is
/// invited to or joined, else a new one.
async fn notice_room(
    state: &State,
    system: &UserId,
    recipient: &UserId,
) -> Result<String, ApiError> {
    let _guard = NOTICE_ROOMS.lock().await;
    let storage = state.rooms.storage();
    for (room, membership) in storage.rooms_of_user(recipient.as_str()).await? {
        if matches!(membership.as_str(), "join" | "invite")
            && storage.membership(&room, system.as_str()).await?.as_deref() == Some("join")
        {
            return Ok(room);
        }
    }
    system_user(state, system).await?;
    let config = &state.config.server_notices;
    let mut power_levels = matrix_core::json::Object::new();
    power_levels.insert("users_default", Value::from(-10i64));
    let mut initial_state = Vec::new();
    if let Some(url) = &config.room_avatar_url {
        let mut avatar = matrix_core::json::Object::new();
        avatar.insert("url", Value::from(url.as_str()));
        initial_state.push(("m.room.avatar".to_owned(), String::new(), avatar));
    }
    let request = CreateRoom {
        version: None,
        preset: Some(Preset::PrivateChat),
        public: false,
        creation_content: None,
        power_levels_override: Some(power_levels),
        initial_state,
        name: Some(config.room_name.clone()),
        topic: config.room_topic.clone(),
        alias_localpart: None,
        invite: vec![OwnedUserId::from(recipient)],
        is_direct: false,
    };
    let room = state.rooms.create_room(system, request).await?;
    let tags = serde_json::json!({"tags": {NOTICE_TAG: {}}});
    let tags = serde_json::to_vec(&tags).map_err(|e| ApiError::unknown(e.to_string()))?;
    state.user_data_put(recipient, Some(&room), "m.tag", tags).await?;
    if config.auto_join {
        state.rooms.join(&room, recipient, None).await?;
    }
    Ok(room)
}

/// Creates the system user when it does not exist yet, with the profile of the settings.
async fn system_user(state: &State, system: &UserId) -> Result<(), ApiError> {
    let storage = state.rooms.storage();
    if storage.user(system.as_str()).await?.is_some() {
        return Ok(());
    }
    state.accounts.create_user(Some(system.localpart()), None, false, None).await?;
    let config = &state.config.server_notices;
    if config.system_mxid_display_name.is_some() || config.system_mxid_avatar_url.is_some() {
        let mut profile = storage.profile(system.as_str()).await?.unwrap_or_default();
        if let Some(name) = &config.system_mxid_display_name {
            profile.displayname = Some(name.clone());
        }
        if let Some(url) = &config.system_mxid_avatar_url {
            profile.avatar_url = Some(url.clone());
        }
        let mut changes = matrix_storage::ChangeSet::new();
        changes.profiles.push((system.to_string(), profile));
        storage.apply(changes).await?;
    }
    Ok(())
}
