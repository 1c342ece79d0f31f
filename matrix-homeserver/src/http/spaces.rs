//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (the walk is
//! `services/rooms/hierarchy.rs`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonResult, Params, Query, Routes, room_id, route};
use crate::services::rooms::hierarchy::HierarchyRequest;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new().route("/_matrix/client/v1/rooms/{room}/hierarchy", route(get(hierarchy)))
}

#[derive(Debug, Deserialize)]
struct HierarchyQuery {
    #[serde(default)]
    suggested_only: bool,
    max_depth: Option<usize>,
    limit: Option<usize>,
    from: Option<String>,
}

async fn hierarchy(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<HierarchyQuery>,
) -> JsonResult {
    let room = room_id(&room)?;
    let request = HierarchyRequest {
        suggested_only: query.suggested_only,
        max_depth: query.max_depth,
        limit: query.limit,
        from: query.from,
    };
    let (rooms, next_batch) =
        state.rooms.hierarchy(&state, &auth.user_id, room.as_str(), &request).await?;
    let mut body = json!({ "rooms": rooms });
    if let Some(next_batch) = next_batch {
        body["next_batch"] = json!(next_batch);
    }
    Ok(Json(body))
}
