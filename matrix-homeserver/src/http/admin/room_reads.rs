//! A room's events as an administrator reads them, without being in the room: `/messages`,
//! `/context` and `/timestamp_to_event` of the client API, through the same readers asked
//! for [`Reader::Administrator`] (who sees every event this server holds of the room).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use matrix_storage::Direction;
use serde_json::json;

use super::{Admin, AppState, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::http::rooms::{ContextQuery, MessagesQuery, TimestampQuery, context_of, messages_page};
use crate::services::admin::rooms::parse_room;
use crate::services::rooms::Reader;

const ROOM: &str = "/_synapse/admin/v1/rooms/{room}";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{ROOM}/messages"), route(get(messages)))
        .route(&format!("{ROOM}/context/{{event}}"), route(get(context)))
        .route(&format!("{ROOM}/timestamp_to_event"), route(get(timestamp_to_event)))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/messages`: the client API's `/messages` (`dir`
/// defaults to `f`, as Synapse's admin API has it).
async fn messages(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    Query(query): Query<MessagesQuery>,
) -> JsonResult {
    let room = parse_room(&room)?;
    let direction = match query.dir.as_deref() {
        Some("b") => Direction::Backwards,
        None | Some("f") => Direction::Forwards,
        Some(_) => return Err(ApiError::invalid_param("`dir` must be f or b")),
    };
    let reader = Reader::Administrator(&auth.user_id);
    messages_page(&state, reader, auth.viewer(), room.as_str(), direction, &query).await
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/context/{eventId}`.
async fn context(
    State(state): AppState,
    Admin(auth): Admin,
    Params((room, event)): Params<(String, String)>,
    Query(query): Query<ContextQuery>,
) -> JsonResult {
    let room = parse_room(&room)?;
    let reader = Reader::Administrator(&auth.user_id);
    context_of(&state, reader, auth.viewer(), room.as_str(), &event, &query).await
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/timestamp_to_event` (`dir` defaults to `f`).
async fn timestamp_to_event(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    Query(query): Query<TimestampQuery>,
) -> JsonResult {
    let room = parse_room(&room)?;
    let (ts, forwards) = query.forwards_by_default().parse()?;
    let reader = Reader::Administrator(&auth.user_id);
    let found = state.rooms.timestamp_to_event(room.as_str(), reader, ts, forwards).await?;
    Ok(Json(json!({"event_id": found.event_id, "origin_server_ts": found.origin_server_ts})))
}
