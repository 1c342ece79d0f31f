//! `/sync`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::{Auth, JsonBody, JsonResult, Query, Routes, route};
use crate::error::ApiError;
use crate::services::presence::SetPresence;
use crate::services::sync::sliding::{Body, Pos, SlidingRequest};
use crate::services::sync::{SyncRequest, Token, parse_filter};

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new().route("/_matrix/client/v3/sync", route(get(sync))).route(
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        route(post(sliding_sync)),
    )
}

#[derive(Debug, Deserialize, Default)]
struct SyncQuery {
    since: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    full_state: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    use_state_after: Option<String>,
    set_presence: Option<String>,
}

async fn sync(State(state): AppState, auth: Auth, Query(query): Query<SyncQuery>) -> JsonResult {
    let since = match query.since.as_deref() {
        Some(token) => {
            Some(Token::parse(token).ok_or_else(|| ApiError::invalid_param("not a sync token"))?)
        }
        None => None,
    };
    let filter = match query.filter.as_deref() {
        None => Default::default(),
        Some(text) if text.starts_with('{') => {
            let json: Value = serde_json::from_str(text)
                .map_err(|_| ApiError::bad_json("the filter is not JSON"))?;
            super::user::check_filter(&state.config.limits, &json)?;
            parse_filter(&json)
        }
        Some(id) => {
            // A filter id holds its filter: one made by hand is bounded like any other.
            let json = super::user::decode_filter(id)
                .ok_or_else(|| ApiError::not_found("no such filter"))?;
            super::user::check_filter(&state.config.limits, &json)?;
            parse_filter(&json)
        }
    };
    let full_state = match query.full_state.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_param("full_state must be true or false")),
    };
    let state_after = match query.use_state_after.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_param("use_state_after must be true or false")),
    };
    let set_presence = set_presence(query.set_presence.as_deref())?;
    let request = SyncRequest {
        set_presence,
        since,
        full_state,
        state_after,
        timeout: Duration::from_millis(query.timeout.unwrap_or(0)),
        filter,
    };
    Ok(Json(state.sync.sync(&auth.user_id, auth.scope(), request).await?))
}

#[derive(Debug, Deserialize, Default)]
struct SlidingQuery {
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (MSC4186).
async fn sliding_sync(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<SlidingQuery>,
    JsonBody(body): JsonBody<Body>,
) -> JsonResult {
    let pos = match query.pos.as_deref() {
        Some(text) => Some(Pos::parse(text).ok_or_else(ApiError::unknown_pos)?),
        None => None,
    };
    let set_presence = set_presence(query.set_presence.as_deref())?;
    let request = SlidingRequest {
        pos,
        timeout: Duration::from_millis(query.timeout.unwrap_or(0)),
        set_presence,
        body,
    };
    let limits = &state.config.limits;
    Ok(Json(state.sync.sliding(&auth.user_id, auth.scope(), request, limits).await?))
}

/// `set_presence` of a sync (absent: online).
fn set_presence(text: Option<&str>) -> Result<SetPresence, ApiError> {
    match text {
        None => Ok(SetPresence::default()),
        Some(text) => SetPresence::parse(text).ok_or_else(|| {
            ApiError::invalid_param("set_presence must be online, unavailable or offline")
        }),
    }
}
