//! Dehydrated devices (MSC3814, unstable prefix `org.matrix.msc3814.v1`): upload, read and
//! delete the user's one dehydrated device, and read the to-device messages sent to it in
//! batches (see `services/accounts/dehydrated.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use matrix_storage::StreamPos;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::accounts::NewDehydratedDevice;
use crate::services::ephemeral::NewDeviceKeys;
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

/// How many messages a batch holds when the client does not say.
const DEFAULT_BATCH: usize = 100;

pub(super) fn routes() -> Routes {
    Router::new()
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
            route(get(get_device).put(put_device).delete(delete_device)),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{device_id}/events",
            route(post(events)),
        )
}

#[derive(Debug, Deserialize)]
struct PutBody {
    device_id: String,
    device_data: Value,
    initial_device_display_name: Option<String>,
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: BTreeMap<String, Value>,
    #[serde(default)]
    fallback_keys: BTreeMap<String, Value>,
}

/// `PUT /dehydrated_device`: the new device with its keys, replacing the user's old one.
async fn put_device(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<PutBody>,
) -> JsonResult {
    auth.limit(&state.limiter, Action::KeyUpload)?;
    let device_keys = body
        .device_keys
        .ok_or_else(|| ApiError::missing_param("a dehydrated device needs its device_keys"))?;
    let new = NewDehydratedDevice {
        device_id: body.device_id,
        device_data: body.device_data,
        display_name: body.initial_device_display_name,
        keys: NewDeviceKeys {
            device_keys,
            one_time_keys: body.one_time_keys,
            fallback_keys: body.fallback_keys,
        },
    };
    let device_id = state.accounts.put_dehydrated_device(&auth.user_id, new).await?;
    Ok(Json(json!({"device_id": device_id})))
}

/// `GET /dehydrated_device`: its id and data; 404 when the user has none.
async fn get_device(State(state): AppState, auth: Auth) -> JsonResult {
    match state.accounts.dehydrated_device(&auth.user_id).await? {
        Some((device_id, data)) => Ok(Json(json!({"device_id": device_id, "device_data": data}))),
        None => Err(ApiError::not_found("no dehydrated device")),
    }
}

/// `DELETE /dehydrated_device`: deletes it (with its keys and messages); 404 when the user
/// has none.
async fn delete_device(State(state): AppState, auth: Auth) -> JsonResult {
    match state.accounts.delete_dehydrated_device(&auth.user_id).await? {
        Some(device_id) => Ok(Json(json!({"device_id": device_id}))),
        None => Err(ApiError::not_found("no dehydrated device")),
    }
}

#[derive(Debug, Deserialize, Default)]
struct EventsBody {
    next_batch: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct EventsQuery {
    limit: Option<usize>,
}

/// `POST /dehydrated_device/{device_id}/events`: a batch of the messages sent to the device,
/// and the token of the next; a token given back deletes the messages before it (the
/// client has them). The last batch's token gives an empty batch.
async fn events(
    State(state): AppState,
    auth: Auth,
    Params(device_id): Params<String>,
    Query(query): Query<EventsQuery>,
    JsonBody(body): JsonBody<EventsBody>,
) -> JsonResult {
    let since = match body.next_batch.as_deref() {
        None => StreamPos(0),
        Some(token) => token
            .parse()
            .map(StreamPos)
            .map_err(|_| ApiError::invalid_param("next_batch is not a token of this server"))?,
    };
    let limit = query.limit.unwrap_or(DEFAULT_BATCH);
    let (messages, next) =
        state.accounts.dehydrated_events(&auth.user_id, &device_id, since, limit).await?;
    let mut events = Vec::with_capacity(messages.len());
    for m in messages {
        let content: Value = serde_json::from_slice(&m.content)
            .map_err(|_| ApiError::unknown("a stored to-device message does not parse"))?;
        events.push(json!({"sender": m.sender, "type": m.kind, "content": content}));
    }
    Ok(Json(json!({"events": events, "next_batch": next.0.to_string()})))
}
