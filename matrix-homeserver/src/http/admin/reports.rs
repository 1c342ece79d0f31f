//! Event reports (Synapse's event reports admin API).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use serde_json::json;

use super::{Admin, AppState, JsonResult, Params, Query, Routes, route, to_json};
use crate::services::admin::reports::{self, ListReportsParams};

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_synapse/admin/v1/event_reports", route(get(list)))
        .route("/_synapse/admin/v1/event_reports/{id}", route(get(report).delete(delete)))
}

async fn list(
    State(state): AppState,
    _: Admin,
    Query(params): Query<ListReportsParams>,
) -> JsonResult {
    to_json(reports::list_reports(&state, &params).await?)
}

async fn delete(State(state): AppState, _: Admin, Params(id): Params<String>) -> JsonResult {
    reports::delete_report(&state, &id).await?;
    Ok(Json(json!({})))
}

async fn report(State(state): AppState, _: Admin, Params(id): Params<String>) -> JsonResult {
    to_json(reports::report(&state, &id).await?)
}
