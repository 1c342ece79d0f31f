//! Enough of end-to-end encryption for clients to start: device keys and one-time keys of
//! local users (upload, query, claim, changes) and to-device messages. Stored before the 200,
//! each part bounded (see `LimitsConfig`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/keys/upload", route(post(upload)))
        .route("/_matrix/client/v3/keys/query", route(post(query)))
        .route("/_matrix/client/v3/keys/claim", route(post(claim)))
        .route("/_matrix/client/v3/keys/changes", route(get(changes)))
        .route("/_matrix/client/v3/sendToDevice/{kind}/{txn}", route(put(send_to_device)))
}

#[derive(Debug, Deserialize, Default)]
struct UploadBody {
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: BTreeMap<String, Value>,
    #[serde(default)]
    fallback_keys: BTreeMap<String, Value>,
}

async fn upload(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<UploadBody>,
) -> JsonResult {
    if let Some(keys) = &body.device_keys
        && (keys["user_id"] != auth.user_id.as_str()
            || keys["device_id"] != auth.device_id.as_str())
    {
        return Err(ApiError::invalid_param("the device keys are not of this device"));
    }
    // Only uploads count: an empty body just asks for the key counts.
    if body.device_keys.is_some()
        || !body.one_time_keys.is_empty()
        || !body.fallback_keys.is_empty()
    {
        state.limiter.check(Action::KeyUpload, auth.user_id.as_str())?;
    }
    let counts = state
        .ephemeral
        .upload_keys(
            auth.user_id.as_str(),
            auth.device_id.as_str(),
            body.device_keys,
            body.one_time_keys,
            body.fallback_keys,
        )
        .await?;
    Ok(Json(json!({"one_time_key_counts": counts})))
}

#[derive(Debug, Deserialize, Default)]
struct QueryBody {
    #[serde(default)]
    device_keys: BTreeMap<String, Vec<String>>,
}

async fn query(
    State(state): AppState,
    _auth: Auth,
    JsonBody(body): JsonBody<QueryBody>,
) -> JsonResult {
    let max = state.config.limits.max_users_per_key_query;
    if body.device_keys.len() > max {
        return Err(ApiError::invalid_param(format!("a query may name at most {max} users")));
    }
    let mut device_keys = serde_json::Map::new();
    let mut failures = serde_json::Map::new();
    for (user, devices) in body.device_keys {
        match ruma::UserId::parse(&user) {
            Ok(id) if id.server_name().as_str() == state.rooms.server_name().as_str() => {
                let keys = state.ephemeral.device_keys(&user, &devices).await?;
                device_keys.insert(user, json!(keys));
            }
            Ok(id) => {
                failures.insert(
                    id.server_name().to_string(),
                    json!({"error": "federation is not available yet"}),
                );
            }
            Err(_) => return Err(ApiError::invalid_param(format!("{user:?} is not a user id"))),
        }
    }
    Ok(Json(json!({"device_keys": device_keys, "failures": failures})))
}

#[derive(Debug, Deserialize, Default)]
struct ClaimBody {
    #[serde(default)]
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

async fn claim(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<ClaimBody>,
) -> JsonResult {
    // Claiming uses keys up: limited like uploads, and bounded like queries, so that one
    // client cannot drain every device's one-time keys in a loop.
    state.limiter.check(Action::KeyUpload, auth.user_id.as_str())?;
    let max = state.config.limits.max_users_per_key_query;
    if body.one_time_keys.values().map(BTreeMap::len).sum::<usize>() > max {
        return Err(ApiError::invalid_param(format!("at most {max} devices per claim")));
    }
    let mut claimed = serde_json::Map::new();
    for (user, devices) in body.one_time_keys {
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
    Ok(Json(json!({"one_time_keys": claimed, "failures": {}})))
}

#[derive(Debug, Deserialize, Default)]
struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn changes(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<ChangesQuery>,
) -> JsonResult {
    let token = |text: Option<&str>| text.and_then(crate::services::sync::Token::parse);
    let since = token(query.from.as_deref())
        .ok_or_else(|| ApiError::invalid_param("from must be a sync token"))?;
    let upto = match query.to.as_deref() {
        Some(to) => {
            token(Some(to))
                .ok_or_else(|| ApiError::invalid_param("to must be a sync token"))?
                .stream
        }
        None => state.rooms.stream_position().await?,
    };
    let user = auth.user_id.as_str();
    let changed = state.ephemeral.device_lists_changed(user, since.stream, upto).await?;
    let left = state.ephemeral.device_lists_left(user, since.stream, upto).await?;
    Ok(Json(json!({"changed": changed, "left": left})))
}

#[derive(Debug, Deserialize)]
struct ToDeviceBody {
    messages: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Queues to-device messages for existing devices of existing local users only: a message
/// for an unknown device is dropped (as the spec says), and `*` means the devices the user
/// has now. Past a queue's bounds: 429. A transaction id seen recently from this device is
/// answered 200 without sending again.
async fn send_to_device(
    State(state): AppState,
    auth: Auth,
    Params((kind, txn)): Params<(String, String)>,
    JsonBody(body): JsonBody<ToDeviceBody>,
) -> JsonResult {
    state.limiter.check(Action::ToDevice, auth.user_id.as_str())?;
    // One device list is read per user named: as many as one key query may name.
    let max = state.config.limits.max_users_per_key_query;
    if body.messages.len() > max {
        return Err(ApiError::invalid_param(format!("at most {max} users per request")));
    }
    let mut deliveries = Vec::new();
    for (user, devices) in body.messages {
        let Ok(id) = ruma::UserId::parse(&user) else { continue };
        if id.server_name().as_str() != state.rooms.server_name().as_str() {
            continue;
        }
        // A user who does not exist (or is deactivated) has no devices.
        let existing: BTreeSet<String> =
            state.accounts.devices(&id).await?.into_iter().map(|d| d.device_id).collect();
        for (device, content) in devices {
            if device == "*" {
                for known in &existing {
                    deliveries.push((user.clone(), known.clone(), content.clone()));
                }
            } else if existing.contains(&device) {
                deliveries.push((user.clone(), device, content));
            }
        }
    }
    let sender = (auth.user_id.as_str(), auth.device_id.as_str());
    state.ephemeral.send_to_device(sender, &txn, &kind, deliveries).await?;
    Ok(Json(json!({})))
}
