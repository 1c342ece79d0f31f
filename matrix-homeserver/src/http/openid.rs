//! OpenID: `POST /user/{userId}/openid/request_token` (a token a third party checks with our
//! federation endpoint `/openid/userinfo`, in `federation/openid.rs`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Routes, route, user_id};
use crate::error::ApiError;
use crate::services::openid;
use crate::services::rate_limit::Action;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/user/{user}/openid/request_token", route(post(request_token)))
}

async fn request_token(
    State(state): State<Arc<crate::State>>,
    auth: Auth,
    Params(user): Params<String>,
    JsonBody(_body): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let user = user_id(&user)?;
    if user != auth.user_id {
        return Err(ApiError::forbidden("cannot request tokens for other users"));
    }
    auth.limit(&state.limiter, Action::AccountData)?;
    let token = openid::issue(state.rooms.storage(), &auth.user_id).await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": state.config.server_name,
        "expires_in": openid::LIFETIME_SECS,
    })))
}
