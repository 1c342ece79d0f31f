//! End-to-end encryption keys of our users, for other servers: `/user/devices/{userId}`,
//! `/user/keys/query` (with the cross-signing master and self-signing keys),
//! `/user/keys/claim`. The same services as the client API answer
//! (`http/e2ee.rs`); users of other servers are never answered for. Device display names
//! are not sent (as Synapse by default: they can say more than a server needs).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Peer;
use crate::error::ApiError;
use crate::http::{JsonResult, Params};
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

/// The most devices one user may be asked about in a key query.
const MAX_DEVICES_PER_USER: usize = 1_000;

/// `user_id` parsed, if it is one of ours.
fn local_user(state: &crate::State, user_id: &str) -> Option<ruma::OwnedUserId> {
    ruma::UserId::parse(user_id)
        .ok()
        .filter(|id| id.server_name().as_str() == state.rooms.server_name().as_str())
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: the devices of a user of ours, with
/// their keys (and the master and self-signing keys, if any); `stream_id` counts on the same clock as the `m.device_list_update` EDUs we
/// send, so that a server compares the two.
pub(super) async fn user_devices(
    State(state): AppState,
    Params(user): Params<String>,
    _peer: Peer,
) -> JsonResult {
    let id = local_user(&state, &user)
        .ok_or_else(|| ApiError::invalid_param("not a user of this server"))?;
    let mut keys = state.ephemeral.device_keys(id.as_str(), &[]).await?;
    let devices: Vec<Value> = state
        .accounts
        .devices(&id)
        .await?
        .into_iter()
        .map(|device| match keys.remove(&device.device_id) {
            Some(keys) => json!({ "device_id": device.device_id, "keys": keys }),
            None => json!({ "device_id": device.device_id }),
        })
        .collect();
    let stream_id = crate::services::federation::fan_out::stream_id();
    let mut answer = json!({ "user_id": id.as_str(), "stream_id": stream_id, "devices": devices });
    let signing = state.ephemeral.cross_signing_view(None, id.as_str()).await?;
    if let Some(master) = signing.master {
        answer["master_key"] = master;
    }
    if let Some(self_signing) = signing.self_signing {
        answer["self_signing_key"] = self_signing;
    }
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// `POST /_matrix/federation/v1/user/keys/query`: device keys of users of ours (users of
/// other servers are left out). At most `max_users_per_key_query` users, and
/// [`MAX_DEVICES_PER_USER`] devices each.
pub(super) async fn user_keys_query(State(state): AppState, peer: Peer) -> JsonResult {
    let body: QueryBody = serde_json::from_slice(&peer.body)
        .map_err(|e| ApiError::bad_json(format!("not a key query: {e}")))?;
    let max = state.config.limits.max_users_per_key_query;
    if body.device_keys.len() > max {
        return Err(ApiError::list_too_long("device_keys", max));
    }
    if body.device_keys.values().any(|devices| devices.len() > MAX_DEVICES_PER_USER) {
        return Err(ApiError::list_too_long("a user's device list", MAX_DEVICES_PER_USER));
    }
    let mut device_keys = serde_json::Map::new();
    let mut signing = crate::http::e2ee::SigningSections::default();
    for (user, devices) in body.device_keys {
        if local_user(&state, &user).is_some() {
            let keys = state.ephemeral.device_keys(&user, &devices).await?;
            device_keys.insert(user.clone(), json!(keys));
            // Another server sees the master and self-signing keys with their owner's
            // signatures, never the user-signing key.
            signing.add(&user, state.ephemeral.cross_signing_view(None, &user).await?);
        }
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": signing.master,
        "self_signing_keys": signing.self_signing,
    })))
}

#[derive(Debug, Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one one-time key (or the fallback key)
/// per device of users of ours. At most `max_users_per_key_query` devices per claim, and
/// rate-limited per requesting server like a client's claims.
pub(super) async fn user_keys_claim(State(state): AppState, peer: Peer) -> JsonResult {
    let body: ClaimBody = serde_json::from_slice(&peer.body)
        .map_err(|e| ApiError::bad_json(format!("not a key claim: {e}")))?;
    let max = state.config.limits.max_users_per_key_query;
    if body.one_time_keys.values().map(BTreeMap::len).sum::<usize>() > max {
        return Err(ApiError::list_too_long("one_time_keys", max));
    }
    state.limiter.check(Action::KeyUpload, peer.origin.as_str())?;
    let mut wanted = body.one_time_keys;
    wanted.retain(|user, _| local_user(&state, user).is_some());
    let claimed = state.ephemeral.claim_keys(wanted).await?;
    Ok(Json(json!({ "one_time_keys": claimed })))
}
