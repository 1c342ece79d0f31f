//! Presence: `GET` and `PUT /presence/{userId}/status`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use matrix_storage::PresenceState;
use serde_json::{Value, json};

use super::{Auth, JsonResult, Params, RawBody, Routes, route, user_id};
use crate::error::ApiError;
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/presence/{user}/status", route(get(status).put(set_status)))
}

async fn status(State(state): AppState, auth: Auth, Params(user): Params<String>) -> JsonResult {
    let user = user_id(&user)?;
    Ok(Json(state.presence.status(auth.user_id.as_str(), user.as_str()).await?))
}

/// The body of a `PUT`: `presence` (required, a state of the spec) and `status_msg`
/// (optional, a string within the bound, or null). Other keys are ignored.
fn parse_status(
    body: &[u8],
    max_status: usize,
) -> Result<(PresenceState, Option<String>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::not_json())?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_json("the body must be a JSON object"));
    };
    let presence = match object.get("presence") {
        Some(Value::String(name)) => PresenceState::from_name(name).ok_or_else(|| {
            ApiError::invalid_param("presence must be online, unavailable or offline")
        })?,
        Some(_) => return Err(ApiError::bad_json("presence must be a string")),
        None => return Err(ApiError::missing_param("presence is required")),
    };
    let status_msg = match object.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.len() > max_status => {
            return Err(ApiError::list_too_long("status_msg", max_status));
        }
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(ApiError::bad_json("status_msg must be a string")),
    };
    Ok((presence, status_msg))
}

async fn set_status(
    State(state): AppState,
    auth: Auth,
    Params(user): Params<String>,
    RawBody(body): RawBody,
) -> JsonResult {
    let user = user_id(&user)?;
    if user != auth.user_id {
        return Err(ApiError::forbidden("you can only set your own presence"));
    }
    auth.limit(&state.limiter, Action::AccountData)?;
    let (presence, status_msg) = parse_status(&body, state.presence.max_status_msg_bytes())?;
    state.presence.set(user.as_str(), auth.scope(), presence, status_msg).await?;
    Ok(Json(json!({})))
}
