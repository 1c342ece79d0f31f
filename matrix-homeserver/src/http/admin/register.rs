//! Shared-secret registration (`/_synapse/admin/v1/register`): no access token, the
//! registration shared secret instead.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{AppState, JsonBody, JsonResult, Routes, route};
use crate::error::ApiError;
use crate::services::accounts::DeviceRequest;
use crate::services::admin::{registration_mac, same_mac};

pub(super) fn routes() -> Routes {
    Router::new().route("/_synapse/admin/v1/register", route(get(register_nonce).post(register)))
}

/// The shared secret, or 400 as Synapse answers when it is not configured.
fn secret(state: &crate::State) -> Result<&str, ApiError> {
    state
        .config
        .registration
        .shared_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("shared secret registration is not enabled"))
}

/// `GET /_synapse/admin/v1/register`: a nonce for one registration.
async fn register_nonce(State(state): AppState) -> JsonResult {
    secret(&state)?;
    Ok(Json(json!({"nonce": state.registration_nonces.issue()?})))
}

#[derive(Debug, Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    user_type: Option<String>,
    mac: String,
}

/// `POST /_synapse/admin/v1/register`: a user (an administrator if asked), with a device and
/// an access token, when the MAC proves the shared secret.
async fn register(State(state): AppState, JsonBody(body): JsonBody<RegisterBody>) -> JsonResult {
    let secret = secret(&state)?;
    if !state.registration_nonces.take(&body.nonce) {
        return Err(ApiError::bad_request("unrecognised nonce"));
    }
    let expected = registration_mac(
        secret,
        &body.nonce,
        &body.username,
        &body.password,
        body.admin,
        body.user_type.as_deref(),
    );
    if !same_mac(&expected, &body.mac) {
        return Err(ApiError::forbidden("HMAC incorrect"));
    }
    if body.password.len() > state.config.limits.max_password_bytes {
        return Err(ApiError::invalid_param("the password is too long"));
    }
    let (user_id, session) = state
        .accounts
        .create_user(
            Some(&body.username),
            Some(body.password),
            body.admin,
            Some(DeviceRequest::default()),
        )
        .await?;
    let session = session.ok_or_else(|| ApiError::unknown("no session was made"))?;
    Ok(Json(json!({
        "user_id": user_id,
        "home_server": user_id.server_name(),
        "access_token": session.access_token,
        "device_id": session.device_id,
    })))
}
