//! `/_matrix/federation/v1/user/*`: the devices and end-to-end keys of our users, for other
//! servers (their clients' `/keys/query` and `/keys/claim`, and the resync an
//! `m.device_list_update` leads to). Only users of ours are answered; a request names at most
//! `max_users_per_key_query` users (devices, for a claim).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Peer;
use crate::error::ApiError;
use crate::http::{JsonResult, Params};

type AppState = State<Arc<crate::State>>;

/// Whether `user` is one of ours.
fn ours(state: &crate::State, user: &str) -> bool {
    ruma::UserId::parse(user)
        .is_ok_and(|id| id.server_name().as_str() == state.rooms.server_name().as_str())
}

fn parse<T: serde::de::DeserializeOwned>(peer: &Peer) -> Result<T, ApiError> {
    serde_json::from_slice(&peer.body).map_err(|e| ApiError::bad_json(e.to_string()))
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// `POST /_matrix/federation/v1/user/keys/query`: device keys of our users (all their
/// devices, or those named).
pub(super) async fn query(State(state): AppState, peer: Peer) -> JsonResult {
    let body: QueryBody = parse(&peer)?;
    let max = state.config.limits.max_users_per_key_query;
    if body.device_keys.len() > max {
        return Err(ApiError::invalid_param(format!("a query may name at most {max} users")));
    }
    let mut device_keys = serde_json::Map::new();
    for (user, devices) in body.device_keys {
        if !ours(&state, &user) {
            continue;
        }
        let keys = state.ephemeral.device_keys(&user, &devices).await?;
        device_keys.insert(user, json!(keys));
    }
    Ok(Json(json!({ "device_keys": device_keys })))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one one-time key (or the fallback key) per
/// device named, of our users.
pub(super) async fn claim(State(state): AppState, peer: Peer) -> JsonResult {
    let body: ClaimBody = parse(&peer)?;
    let max = state.config.limits.max_users_per_key_query;
    if body.one_time_keys.values().map(BTreeMap::len).sum::<usize>() > max {
        return Err(ApiError::invalid_param(format!("at most {max} devices per claim")));
    }
    let mut claimed = serde_json::Map::new();
    for (user, devices) in body.one_time_keys {
        if !ours(&state, &user) {
            continue;
        }
        let mut by_device = serde_json::Map::new();
        for (device, algorithm) in devices {
            if let Some((key_id, key)) =
                state.ephemeral.claim_key(&user, &device, &algorithm).await?
            {
                by_device.insert(device, json!({ key_id: key }));
            }
        }
        claimed.insert(user, Value::Object(by_device));
    }
    Ok(Json(json!({ "one_time_keys": claimed })))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: a user of ours's devices, with their
/// keys and names.
pub(super) async fn devices(
    State(state): AppState,
    Params(user): Params<String>,
    _peer: Peer,
) -> JsonResult {
    if !ours(&state, &user) {
        return Err(ApiError::invalid_param("the user is not of this server"));
    }
    let id = crate::http::user_id(&user)?;
    let mut keys = state.ephemeral.device_keys(&user, &[]).await?;
    let mut devices = Vec::new();
    for device in state.accounts.devices(&id).await? {
        let mut entry = json!({ "device_id": device.device_id });
        if let Some(name) = device.display_name {
            entry["device_display_name"] = json!(name);
        }
        if let Some(keys) = keys.remove(&device.device_id) {
            entry["keys"] = keys;
        }
        devices.push(entry);
    }
    let stream_id = crate::services::federation::fan_out::stream_id();
    Ok(Json(json!({ "user_id": user, "stream_id": stream_id, "devices": devices })))
}
