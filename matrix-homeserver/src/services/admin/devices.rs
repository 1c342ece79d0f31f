//! A user's devices, rooms and data, as Synapse's admin API shows and changes them: devices
//! (`/v2/users/{userId}/devices...`), `whois`, joined rooms, memberships, account data and
//! pushers.
//!
//! This server keeps no last-seen address, agent or time of a device: those read `null`.

use std::collections::BTreeMap;

use ruma::UserId;
use serde::Serialize;

use super::MAX_PAGE;
use super::users::local_user;
use crate::State;
use crate::error::ApiError;

/// A device as the admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AdminDevice {
    device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    last_seen_ip: Option<String>,
    last_seen_user_agent: Option<String>,
    last_seen_ts: Option<u64>,
    user_id: String,
    dehydrated: bool,
}

impl From<matrix_storage::Device> for AdminDevice {
    fn from(device: matrix_storage::Device) -> Self {
        AdminDevice {
            device_id: device.device_id,
            display_name: device.display_name,
            last_seen_ip: None,
            last_seen_user_agent: None,
            last_seen_ts: None,
            user_id: device.user_id,
            dehydrated: false,
        }
    }
}

/// `GET /_synapse/admin/v2/users/{userId}/devices`.
pub(crate) async fn devices(state: &State, user_id: &UserId) -> Result<Vec<AdminDevice>, ApiError> {
    local_user(state, user_id).await?;
    Ok(state.accounts.devices(user_id).await?.into_iter().map(AdminDevice::from).collect())
}

/// `GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}`: 404 for no such device.
pub(crate) async fn device(
    state: &State,
    user_id: &UserId,
    device_id: &str,
) -> Result<AdminDevice, ApiError> {
    local_user(state, user_id).await?;
    Ok(state.accounts.device(user_id, device_id).await?.into())
}

/// `POST /_synapse/admin/v2/users/{userId}/devices`: a device without an access token;
/// nothing happens when it exists.
pub(crate) async fn create_device(
    state: &State,
    user_id: &UserId,
    device_id: &str,
) -> Result<(), ApiError> {
    local_user(state, user_id).await?;
    if state.accounts.device(user_id, device_id).await.is_ok() {
        return Ok(());
    }
    state.accounts.add_device(user_id, device_id, None).await?;
    Ok(())
}

/// `PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}`: renames it (`None` leaves
/// the name as it is); 404 for no such device.
pub(crate) async fn rename_device(
    state: &State,
    user_id: &UserId,
    device_id: &str,
    display_name: Option<String>,
) -> Result<(), ApiError> {
    local_user(state, user_id).await?;
    state.accounts.device(user_id, device_id).await?;
    let Some(name) = display_name else { return Ok(()) };
    let max = state.config.limits.max_displayname_chars;
    if name.chars().count() > max {
        return Err(ApiError::list_too_long("display_name", max));
    }
    state.accounts.rename_device(user_id, device_id, Some(name)).await
}

/// `DELETE .../devices/{deviceId}` and `POST .../delete_devices`: deletes the devices with
/// their access tokens and keys; unknown ones are skipped. At most [`MAX_PAGE`] at once.
pub(crate) async fn delete_devices(
    state: &State,
    user_id: &UserId,
    device_ids: &[String],
) -> Result<(), ApiError> {
    if device_ids.len() > MAX_PAGE {
        return Err(ApiError::list_too_long("devices", MAX_PAGE));
    }
    local_user(state, user_id).await?;
    state.accounts.delete_devices(user_id, device_ids).await
}

/// One device in `whois`: its sessions, and their connections (none kept here).
#[derive(Debug, Serialize)]
pub(crate) struct WhoisDevice {
    sessions: Vec<WhoisSession>,
}

/// A session of `whois`.
#[derive(Debug, Serialize)]
pub(crate) struct WhoisSession {
    connections: Vec<serde_json::Value>,
}

/// `GET /_synapse/admin/v1/whois/{userId}`: the user's devices, by id.
pub(crate) async fn whois(
    state: &State,
    user_id: &UserId,
) -> Result<BTreeMap<String, WhoisDevice>, ApiError> {
    local_user(state, user_id).await?;
    Ok(state
        .accounts
        .devices(user_id)
        .await?
        .into_iter()
        .map(|d| {
            let session = WhoisSession { connections: Vec::new() };
            (d.device_id, WhoisDevice { sessions: vec![session] })
        })
        .collect())
}

/// `GET /_synapse/admin/v1/users/{userId}/memberships`: the rooms this server knows the user
/// to have a membership in (any user's, ours or not), with it.
pub(crate) async fn memberships(
    state: &State,
    user_id: &UserId,
) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(state.rooms.storage().rooms_of_user(user_id.as_str()).await?.into_iter().collect())
}

/// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`: the rooms the user is joined to,
/// as far as this server knows (any user's; an unknown user of ours is 404).
pub(crate) async fn joined_rooms(state: &State, user_id: &UserId) -> Result<Vec<String>, ApiError> {
    if user_id.server_name().as_str() == state.config.server_name {
        local_user(state, user_id).await?;
    }
    Ok(memberships(state, user_id)
        .await?
        .into_iter()
        .filter(|(_, membership)| membership == "join")
        .map(|(room, _)| room)
        .collect())
}

/// A JSON value stored as bytes (written by this server, so it parses; `{}` if not).
fn stored_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| serde_json::json!({}))
}

/// `GET /_synapse/admin/v1/users/{userId}/accountdata`: the user's global and per-room
/// account data, by type.
pub(crate) async fn account_data(
    state: &State,
    user_id: &UserId,
) -> Result<serde_json::Value, ApiError> {
    local_user(state, user_id).await?;
    let mut global = serde_json::Map::new();
    let mut rooms: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for item in state.rooms.storage().all_account_data(user_id.as_str()).await? {
        let content = stored_json(&item.content);
        match item.room_id {
            Some(room) => {
                rooms.entry(room).or_default().insert(item.kind, content);
            }
            None => {
                global.insert(item.kind, content);
            }
        }
    }
    Ok(serde_json::json!({"account_data": {"global": global, "rooms": rooms}}))
}

/// `GET /_synapse/admin/v1/users/{userId}/pushers`: the user's pushers as the client API
/// lists them.
pub(crate) async fn pushers(
    state: &State,
    user_id: &UserId,
) -> Result<Vec<serde_json::Value>, ApiError> {
    local_user(state, user_id).await?;
    let pushers = state.rooms.storage().pushers(user_id.as_str()).await?;
    Ok(pushers
        .into_iter()
        .map(|pusher| {
            let mut shown = match stored_json(&pusher.data) {
                serde_json::Value::Object(rest) => rest,
                _ => serde_json::Map::new(),
            };
            shown.insert("app_id".to_owned(), pusher.app_id.into());
            shown.insert("pushkey".to_owned(), pusher.pushkey.into());
            serde_json::Value::Object(shown)
        })
        .collect())
}
