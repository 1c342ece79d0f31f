//! Synapse's admin API (`/_synapse/admin/...`): shared-secret registration, and the
//! endpoints of the server's administrators (users whose `admin` flag is set; anybody else
//! gets 403 `M_FORBIDDEN`), one file per group. `docs/admin-api.md` lists what is covered.

mod destinations;
mod media;
mod moderation;
mod register;
mod reports;
mod room_reads;
mod rooms;
mod tasks;
mod tokens;
mod users;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::get;
use serde_json::json;

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_synapse/admin/v1/server_version", route(get(server_version)))
        .merge(register::routes())
        .merge(users::routes())
        .merge(moderation::routes())
        .merge(rooms::routes())
        .merge(reports::routes())
        .merge(tokens::routes())
        .merge(media::routes())
        .merge(tasks::routes())
        .merge(destinations::routes())
        .merge(room_reads::routes())
}

/// A service's answer as JSON.
fn to_json(value: impl serde::Serialize) -> JsonResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::unknown(format!("the answer does not serialise: {e}")))
}

/// The request's user, a server administrator: 401 without a valid token, 403
/// `M_FORBIDDEN` for anybody else.
struct Admin(Auth);

impl FromRequestParts<Arc<crate::State>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<crate::State>,
    ) -> Result<Self, ApiError> {
        let auth = Auth::from_request_parts(parts, state).await?;
        if !crate::services::admin::users::requester_is_admin(state, &auth.user_id).await? {
            return Err(ApiError::forbidden("You are not a server admin"));
        }
        Ok(Admin(auth))
    }
}

/// `GET /_synapse/admin/v1/server_version`: this server's version. Public, as Synapse's is
/// (the federation API's `/version` tells as much).
async fn server_version() -> JsonResult {
    Ok(Json(json!({"server_version": env!("CARGO_PKG_VERSION")})))
}
