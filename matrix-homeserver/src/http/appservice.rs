//! The client-server API's application service endpoint: `POST
//! /_matrix/client/v1/appservice/{appserviceId}/ping`, which a service calls with its own
//! `as_token` to check that the homeserver reaches it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonBody, JsonResult, Params, Routes, route};
use crate::error::ApiError;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new().route("/_matrix/client/v1/appservice/{appservice}/ping", route(post(ping)))
}

#[derive(Debug, Deserialize)]
struct PingBody {
    #[serde(default)]
    transaction_id: Option<String>,
}

/// The longest `transaction_id` passed on.
const MAX_TRANSACTION_ID_BYTES: usize = 255;

async fn ping(
    State(state): AppState,
    auth: Auth,
    Params(id): Params<String>,
    JsonBody(body): JsonBody<PingBody>,
) -> JsonResult {
    // Only the service itself: its as_token, whoever it acts as.
    let service = match &auth.appservice {
        Some(service) if service.id() == id => service.clone(),
        _ => return Err(ApiError::forbidden("only the application service itself may ping it")),
    };
    if body.transaction_id.as_ref().is_some_and(|t| t.len() > MAX_TRANSACTION_ID_BYTES) {
        return Err(ApiError::invalid_param(format!(
            "transaction_id is over {MAX_TRANSACTION_ID_BYTES} bytes"
        )));
    }
    let duration = state.appservices.ping(&service, body.transaction_id.as_deref()).await?;
    // It answers: what waits for it goes now, not after the rest of a backoff.
    state.ephemeral.appservice_answered(service.id());
    Ok(Json(json!({"duration_ms": duration})))
}
