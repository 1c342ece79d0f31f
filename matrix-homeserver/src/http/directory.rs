//! Room aliases, room directory visibility and the local `publicRooms` list.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, room_id, route};
use crate::error::ApiError;
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route(
            "/_matrix/client/v3/directory/room/{alias}",
            route(get(resolve_alias).put(create_alias).delete(delete_alias)),
        )
        .route("/_matrix/client/v3/rooms/{room}/aliases", route(get(room_aliases)))
        .route(
            "/_matrix/client/v3/directory/list/room/{room}",
            route(get(visibility).put(set_visibility)),
        )
        .route(
            "/_matrix/client/v3/publicRooms",
            route(get(public_rooms_get).post(public_rooms_post)),
        )
}

async fn resolve_alias(State(state): AppState, Params(alias): Params<String>) -> JsonResult {
    let (room_id, servers) = state.rooms.resolve_any_alias(&state, &alias).await?;
    Ok(Json(json!({"room_id": room_id, "servers": servers})))
}

#[derive(Debug, Deserialize)]
struct AliasBody {
    room_id: String,
}

async fn create_alias(
    State(state): AppState,
    auth: Auth,
    Params(alias): Params<String>,
    JsonBody(body): JsonBody<AliasBody>,
) -> JsonResult {
    let room = room_id(&body.room_id)?;
    state.limiter.check(Action::State, auth.user_id.as_str())?;
    state.rooms.create_alias(&alias, room.as_str(), &auth.user_id).await?;
    Ok(Json(json!({})))
}

async fn is_admin(state: &crate::State, user: &ruma::UserId) -> Result<bool, ApiError> {
    Ok(state.rooms.storage().user(user.as_str()).await?.is_some_and(|u| u.admin))
}

async fn delete_alias(
    State(state): AppState,
    auth: Auth,
    Params(alias): Params<String>,
) -> JsonResult {
    state.limiter.check(Action::State, auth.user_id.as_str())?;
    let admin = is_admin(&state, &auth.user_id).await?;
    state.rooms.delete_alias(&alias, &auth.user_id, admin).await?;
    Ok(Json(json!({})))
}

async fn room_aliases(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
) -> JsonResult {
    let room = room_id(&room)?;
    // The spec: only current members may list them (one who left is refused, though they
    // still see the room's history up to their leave).
    super::rooms::require_joined(&state, room.as_str(), &auth.user_id).await?;
    Ok(Json(json!({"aliases": state.rooms.aliases_of(room.as_str()).await?})))
}

async fn visibility(State(state): AppState, Params(room): Params<String>) -> JsonResult {
    let room = room_id(&room)?;
    if state.rooms.rules(room.as_str()).await?.is_none() {
        return Err(ApiError::room_not_found());
    }
    let public = state.rooms.published(room.as_str()).await?;
    Ok(Json(json!({"visibility": if public { "public" } else { "private" }})))
}

#[derive(Debug, Deserialize)]
struct VisibilityBody {
    visibility: String,
}

async fn set_visibility(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let public = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => return Err(ApiError::invalid_param("visibility must be public or private")),
    };
    state.limiter.check(Action::State, auth.user_id.as_str())?;
    let admin = is_admin(&state, &auth.user_id).await?;
    state.rooms.set_published(room.as_str(), &auth.user_id, admin, public).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize, Default)]
struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
}

#[derive(Debug, Deserialize, Default)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

/// One page of our `publicRooms` list (`since` is a token of an earlier page), for the
/// client API and for other servers.
pub(crate) async fn list(
    state: &crate::State,
    limit: Option<usize>,
    since: Option<&str>,
    search: Option<&str>,
) -> JsonResult {
    let rooms = state.rooms.public_rooms(search).await?;
    let total = rooms.len();
    let offset = match since {
        Some(token) => token
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid_param("not a directory token"))?,
        None => 0,
    };
    let limit = limit.unwrap_or(100).clamp(1, 500);
    let end = offset.saturating_add(limit).min(total);
    let chunk = rooms.get(offset.min(total)..end).unwrap_or_default().to_vec();
    let mut response = json!({"chunk": chunk, "total_room_count_estimate": total});
    if end < total {
        response["next_batch"] = json!(format!("p{end}"));
    }
    if offset > 0 {
        response["prev_batch"] = json!(format!("p{}", offset.saturating_sub(limit)));
    }
    Ok(Json(response))
}

fn local_only(state: &crate::State, server: Option<&str>) -> Result<(), ApiError> {
    match server {
        Some(server) if server != state.rooms.server_name().as_str() => Err(ApiError::not_found(
            "other servers' room directories are not asked by this server yet",
        )),
        _ => Ok(()),
    }
}

async fn public_rooms_get(
    State(state): AppState,
    Query(query): Query<PublicRoomsQuery>,
) -> JsonResult {
    local_only(&state, query.server.as_deref())?;
    list(&state, query.limit, query.since.as_deref(), None).await
}

async fn public_rooms_post(
    State(state): AppState,
    _auth: Auth,
    Query(query): Query<PublicRoomsQuery>,
    JsonBody(body): JsonBody<PublicRoomsBody>,
) -> JsonResult {
    local_only(&state, query.server.as_deref())?;
    let search = body.filter.as_ref().and_then(|f| f.generic_search_term.as_deref());
    list(&state, body.limit, body.since.as_deref(), search).await
}
