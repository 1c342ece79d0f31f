//! Online backup (`/_homeserver/admin/v1/backup`), for the `homeserver backup` command; how it
//! is authenticated and why: `services/backup.rs`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{JsonBody, JsonResult, Routes, route};
use crate::error::ApiError;
use crate::services::admin::same_mac;
use crate::services::backup::{backup_mac, backup_store};

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new().route("/_homeserver/admin/v1/backup", route(get(backup_nonce).post(backup)))
}

/// The shared secret; 403 when none is configured (no backups through this endpoint then).
fn secret(state: &crate::State) -> Result<&str, ApiError> {
    state.config.registration.shared_secret.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::forbidden("online backups need registration.shared_secret to be configured")
    })
}

/// `GET /_homeserver/admin/v1/backup`: a nonce for one backup request.
async fn backup_nonce(State(state): AppState) -> JsonResult {
    secret(&state)?;
    Ok(Json(json!({"nonce": state.registration_nonces.issue()?})))
}

#[derive(Debug, Deserialize)]
struct BackupBody {
    nonce: String,
    directory: String,
    mac: String,
}

/// `POST /_homeserver/admin/v1/backup`: a consistent copy of the store written into
/// `directory` on the server's machine; answers what the copy holds.
async fn backup(State(state): AppState, JsonBody(body): JsonBody<BackupBody>) -> JsonResult {
    let secret = secret(&state)?;
    if !state.registration_nonces.take(&body.nonce) {
        return Err(ApiError::bad_request("unrecognised nonce"));
    }
    if !same_mac(&backup_mac(secret, &body.nonce, &body.directory), &body.mac) {
        return Err(ApiError::forbidden("HMAC incorrect"));
    }
    let summary = backup_store(state.rooms.storage().as_ref(), &body.directory).await?;
    Ok(Json(json!({
        "server_name": state.config.server_name,
        "backend": summary.backend,
        "stream_position": summary.stream_position,
        "events": summary.events,
        "rooms": summary.rooms,
    })))
}
