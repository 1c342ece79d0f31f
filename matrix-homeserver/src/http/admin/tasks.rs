//! Work in the background: room deletion (v2) and its status, history purges and their
//! status, the scheduled tasks, and background updates (none here).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AppState, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::admin::purge_history::{self, PurgeHistoryBody};
use crate::services::admin::rooms::{DeleteRoom, parse_room};
use crate::services::admin::{MAX_PAGE, tasks};

const V1: &str = "/_synapse/admin/v1";
const V2: &str = "/_synapse/admin/v2";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{V2}/rooms/{{room}}"), route(delete(delete_room)))
        .route(&format!("{V2}/rooms/{{room}}/delete_status"), route(get(delete_status_of_room)))
        .route(&format!("{V2}/rooms/delete_status/{{id}}"), route(get(delete_status)))
        .route(&format!("{V1}/purge_history/{{room}}"), route(post(purge_history)))
        .route(&format!("{V1}/purge_history/{{room}}/{{event}}"), route(post(purge_history_to)))
        .route(&format!("{V1}/purge_history_status/{{id}}"), route(get(purge_history_status)))
        .route(&format!("{V1}/scheduled_tasks"), route(get(scheduled_tasks)))
        .route(&format!("{V1}/background_updates/status"), route(get(background_updates)))
}

async fn delete_room(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<DeleteRoom>,
) -> JsonResult {
    let room_id = parse_room(&room)?;
    let id = tasks::schedule_delete(&state, &auth.user_id, &room_id, body).await?;
    Ok(Json(json!({"delete_id": id})))
}

async fn delete_status_of_room(
    State(state): AppState,
    _: Admin,
    Params(room): Params<String>,
) -> JsonResult {
    let room_id = parse_room(&room)?;
    let results: Vec<Value> = tasks::tasks(&state)
        .await?
        .iter()
        .filter(|t| {
            t.action == tasks::SHUTDOWN_AND_PURGE_ROOM
                && t.resource_id.as_deref() == Some(room_id.as_str())
        })
        .map(tasks::delete_status)
        .collect();
    if results.is_empty() {
        return Err(ApiError::not_found("No delete task for room"));
    }
    Ok(Json(json!({"results": results})))
}

async fn delete_status(State(state): AppState, _: Admin, Params(id): Params<String>) -> JsonResult {
    let task = tasks::task(&state, &id).await?;
    let task = task
        .filter(|t| t.action == tasks::SHUTDOWN_AND_PURGE_ROOM)
        .ok_or_else(|| ApiError::not_found("delete id not found"))?;
    Ok(Json(tasks::delete_status(&task)))
}

async fn purge_history(
    State(state): AppState,
    _: Admin,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<PurgeHistoryBody>,
) -> JsonResult {
    let id = purge_history::start(&state, &parse_room(&room)?, None, body).await?;
    Ok(Json(json!({"purge_id": id})))
}

async fn purge_history_to(
    State(state): AppState,
    _: Admin,
    Params((room, event)): Params<(String, String)>,
    JsonBody(body): JsonBody<PurgeHistoryBody>,
) -> JsonResult {
    let id = purge_history::start(&state, &parse_room(&room)?, Some(&event), body).await?;
    Ok(Json(json!({"purge_id": id})))
}

async fn purge_history_status(
    State(state): AppState,
    _: Admin,
    Params(id): Params<String>,
) -> JsonResult {
    Ok(Json(purge_history::status(&state, &id).await?))
}

/// The query of `GET /_synapse/admin/v1/scheduled_tasks`.
#[derive(Debug, Deserialize)]
struct TaskQuery {
    action_name: Option<String>,
    resource_id: Option<String>,
    status: Option<String>,
    max_timestamp: Option<String>,
}

/// `GET /_synapse/admin/v1/scheduled_tasks`: the stored tasks passing the filters, newest
/// first, at most [`MAX_PAGE`] (finished tasks are kept a week).
async fn scheduled_tasks(
    State(state): AppState,
    _: Admin,
    Query(query): Query<TaskQuery>,
) -> JsonResult {
    // `Some(None)`: a status no task has here (`cancelled`).
    let status = query.status.as_deref().map(tasks::Status::parse).transpose()?;
    let max_timestamp = match query.max_timestamp.as_deref() {
        None => None,
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| ApiError::invalid_param("`max_timestamp` must be an integer"))?,
        ),
    };
    let mut listed: Vec<Value> = Vec::new();
    if status != Some(None) {
        let status = status.flatten();
        listed = tasks::tasks(&state)
            .await?
            .iter()
            .rev()
            .filter(|t| query.action_name.as_deref().is_none_or(|a| t.action == a))
            .filter(|t| {
                query.resource_id.as_deref().is_none_or(|r| t.resource_id.as_deref() == Some(r))
            })
            .filter(|t| status.is_none_or(|s| t.status == s))
            .filter(|t| max_timestamp.is_none_or(|max| t.timestamp_ms < max))
            .take(MAX_PAGE)
            .map(tasks::listed)
            .collect();
    }
    Ok(Json(json!({"scheduled_tasks": listed})))
}

/// `GET /_synapse/admin/v1/background_updates/status`: this server runs no background
/// updates of its database (its migrations run at start, before it serves), so none is ever
/// in progress.
async fn background_updates(_: Admin) -> JsonResult {
    Ok(Json(json!({"enabled": true, "current_updates": {}})))
}
