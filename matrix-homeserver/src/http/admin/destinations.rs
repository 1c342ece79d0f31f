//! Federation destinations: the list, one, the rooms shared with one, resetting a backoff.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::json;

use super::{Admin, AppState, JsonResult, Params, Query, Routes, route};
use crate::services::admin::destinations::{self, ListParams, RoomsParams};

const DESTINATIONS: &str = "/_synapse/admin/v1/federation/destinations";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(DESTINATIONS, route(get(list)))
        .route(&format!("{DESTINATIONS}/{{destination}}"), route(get(details)))
        .route(&format!("{DESTINATIONS}/{{destination}}/rooms"), route(get(rooms)))
        .route(
            &format!("{DESTINATIONS}/{{destination}}/reset_connection"),
            route(post(reset_connection)),
        )
}

async fn list(State(state): AppState, _: Admin, Query(params): Query<ListParams>) -> JsonResult {
    Ok(Json(destinations::list(&state, &params).await?))
}

async fn details(
    State(state): AppState,
    _: Admin,
    Params(destination): Params<String>,
) -> JsonResult {
    Ok(Json(destinations::details(&state, &destination).await?))
}

async fn rooms(
    State(state): AppState,
    _: Admin,
    Params(destination): Params<String>,
    Query(params): Query<RoomsParams>,
) -> JsonResult {
    Ok(Json(destinations::rooms(&state, &destination, &params).await?))
}

async fn reset_connection(
    State(state): AppState,
    _: Admin,
    Params(destination): Params<String>,
) -> JsonResult {
    destinations::reset_connection(&state, &destination).await?;
    Ok(Json(json!({})))
}
