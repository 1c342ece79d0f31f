//! `GET /_homeserver/admin/v1/federation_check` (server administrators only): the federation
//! tester's checks run against this server's own name, as another server would find it (see
//! `matrix_federation::check`). Certificates are checked as `federation.verify_certificates`
//! says: with it off (test networks), an untrusted certificate is a warning.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::{Auth, JsonResult, Routes, route};
use crate::error::ApiError;
use matrix_federation::check::{CheckOptions, check_federation};

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new().route("/_homeserver/admin/v1/federation_check", route(get(federation_check)))
}

/// The report: `{"server_name", "ok", "checks": [{"name", "outcome", "detail"}]}`, 200
/// whatever it says; 403 `M_FORBIDDEN` for anyone but a server administrator.
async fn federation_check(State(state): AppState, auth: Auth) -> JsonResult {
    let admin = state.rooms.storage().user(auth.user_id.as_str()).await?.is_some_and(|u| u.admin);
    if !admin {
        return Err(ApiError::forbidden("only server administrators may run the federation check"));
    }
    let mut options = CheckOptions::default();
    options.insecure = !state.config.federation.verify_certificates;
    let report = check_federation(state.config.server_name.as_str(), &options).await;
    let body = serde_json::to_value(report)
        .map_err(|e| ApiError::unknown(format!("the federation check report: {e}")))?;
    Ok(Json(body))
}
