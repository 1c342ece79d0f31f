//! Registration tokens (Synapse's registration tokens admin API).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AppState, JsonBody, JsonResult, Params, Query, Routes, route, to_json};
use crate::services::admin::tokens::{self, NewToken, TokenChange};

const TOKENS: &str = "/_synapse/admin/v1/registration_tokens";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(TOKENS, route(get(list)))
        .route(&format!("{TOKENS}/new"), route(post(create)))
        .route(&format!("{TOKENS}/{{token}}"), route(get(one).put(update).delete(delete)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    valid: Option<String>,
}

async fn list(State(state): AppState, _: Admin, Query(query): Query<ListQuery>) -> JsonResult {
    let tokens = tokens::list(&state, query.valid.as_deref()).await?;
    Ok(Json(json!({"registration_tokens": to_json(tokens)?.0})))
}

async fn create(
    State(state): AppState,
    _: Admin,
    JsonBody(body): JsonBody<NewToken>,
) -> JsonResult {
    to_json(tokens::create(&state, body).await?)
}

async fn one(State(state): AppState, _: Admin, Params(token): Params<String>) -> JsonResult {
    to_json(tokens::get(&state, &token).await?)
}

async fn update(
    State(state): AppState,
    _: Admin,
    Params(token): Params<String>,
    JsonBody(change): JsonBody<TokenChange>,
) -> JsonResult {
    to_json(tokens::update(&state, &token, change).await?)
}

async fn delete(State(state): AppState, _: Admin, Params(token): Params<String>) -> JsonResult {
    tokens::delete(&state, &token).await?;
    Ok(Json(json!({})))
}
