//! Rooms: the list, one room, its members and state, blocking, deleting (Synapse's room
//! admin API).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AppState, JsonBody, JsonResult, Params, Query, Routes, route, to_json};
use crate::error::ApiError;
use crate::services::admin::rooms::{self, DeleteRoom, ListRoomsParams, parse_room};
use crate::services::admin::{parse_user, room_admin};

const V1: &str = "/_synapse/admin/v1";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{V1}/rooms"), route(get(list)))
        .route(&format!("{V1}/rooms/{{room}}"), route(get(details).delete(delete)))
        .route(&format!("{V1}/rooms/{{room}}/members"), route(get(members)))
        .route(&format!("{V1}/rooms/{{room}}/state"), route(get(room_state)))
        .route(&format!("{V1}/rooms/{{room}}/block"), route(get(block_status).put(set_block)))
        .route(&format!("{V1}/rooms/{{room}}/make_room_admin"), route(post(make_room_admin)))
        .route(&format!("{V1}/join/{{room}}"), route(post(force_join)))
        .route(&format!("{V1}/rooms/{{room}}/forward_extremities"), route(get(extremities)))
        .route(&format!("{V1}/fetch_event/{{event}}"), route(get(fetch_event)))
}

async fn list(
    State(state): AppState,
    _: Admin,
    Query(params): Query<ListRoomsParams>,
) -> JsonResult {
    to_json(rooms::list_rooms(&state, &params).await?)
}

async fn details(State(state): AppState, _: Admin, Params(room): Params<String>) -> JsonResult {
    to_json(rooms::room_details(&state, &parse_room(&room)?).await?)
}

async fn members(State(state): AppState, _: Admin, Params(room): Params<String>) -> JsonResult {
    let members = rooms::room_members(&state, &parse_room(&room)?).await?;
    Ok(Json(json!({"total": members.len(), "members": members})))
}

#[derive(Debug, Deserialize)]
struct StateQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn room_state(
    State(state): AppState,
    _: Admin,
    Params(room): Params<String>,
    Query(query): Query<StateQuery>,
) -> JsonResult {
    let events = rooms::room_state(&state, &parse_room(&room)?, query.kind.as_deref()).await?;
    Ok(Json(json!({"state": events})))
}

async fn block_status(
    State(state): AppState,
    _: Admin,
    Params(room): Params<String>,
) -> JsonResult {
    let room = parse_room(&room)?;
    Ok(Json(match rooms::block_status(state.rooms.storage(), room.as_str()).await? {
        Some(by) => json!({"block": true, "user_id": by}),
        None => json!({"block": false}),
    }))
}

#[derive(Debug, Deserialize)]
struct BlockBody {
    block: Option<bool>,
}

async fn set_block(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<BlockBody>,
) -> JsonResult {
    let block = body.block.ok_or_else(|| ApiError::missing_param("`block` is required"))?;
    rooms::set_block(&state, &auth.user_id, &parse_room(&room)?, block).await?;
    Ok(Json(json!({"block": block})))
}

async fn delete(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<DeleteRoom>,
) -> JsonResult {
    to_json(rooms::delete_room(&state, &auth.user_id, &parse_room(&room)?, body).await?)
}

#[derive(Debug, Deserialize)]
struct MakeRoomAdmin {
    user_id: Option<String>,
}

async fn make_room_admin(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<MakeRoomAdmin>,
) -> JsonResult {
    let target = match body.user_id {
        Some(user) => parse_user(&user)?,
        None => auth.user_id.clone(),
    };
    room_admin::make_room_admin(&state, &room, &target).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ForceJoin {
    user_id: Option<String>,
}

async fn force_join(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<ForceJoin>,
) -> JsonResult {
    let user = body.user_id.ok_or_else(|| ApiError::missing_param("`user_id` is required"))?;
    let room_id = room_admin::force_join(&state, &auth.user_id, &room, &parse_user(&user)?).await?;
    Ok(Json(json!({"room_id": room_id})))
}

async fn extremities(State(state): AppState, _: Admin, Params(room): Params<String>) -> JsonResult {
    let room_id = room_admin::resolve(&state, &room).await?;
    let results = rooms::forward_extremities(&state, &room_id).await?;
    Ok(Json(json!({"count": results.len(), "results": results})))
}

async fn fetch_event(
    State(state): AppState,
    _: Admin,
    Params(event): Params<String>,
) -> JsonResult {
    Ok(Json(json!({"event": rooms::fetch_event(&state, &event).await?})))
}
