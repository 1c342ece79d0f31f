//! VoIP: `GET /voip/turnServer` (the TURN server of `[turn]`, credentials as Synapse makes
//! them; `{}` without one).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::{Auth, JsonResult, Routes, route};
use crate::services::voip::turn_server;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/voip/turnServer", route(get(turn)))
        // Synapse serves it on the older prefixes too; clients still call r0.
        .route("/_matrix/client/r0/voip/turnServer", route(get(turn)))
}

async fn turn(State(state): State<Arc<crate::State>>, auth: Auth) -> JsonResult {
    let now = crate::services::delayed_events::now_ms() / 1000;
    Ok(Json(turn_server(&state.config.turn, auth.user_id.as_str(), now)))
}
