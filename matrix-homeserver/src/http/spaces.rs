//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (the walk is
//! `services/rooms/hierarchy.rs`), and a room's summary (`GET
//! /_matrix/client/v1/room_summary/{roomIdOrAlias}`, the hierarchy's entry of one room).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{Auth, ClientAddress, JsonResult, OptionalAuth, Params, Query, Routes, room_id, route};
use crate::services::rate_limit::Action;
use crate::services::rooms::hierarchy::HierarchyRequest;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v1/rooms/{room}/hierarchy", route(get(hierarchy)))
        .route("/_matrix/client/v1/room_summary/{room}", route(get(room_summary)))
}

/// The most `via` servers a summary asks.
const MAX_VIA: usize = 3;

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`: open to anyone for rooms anyone may
/// look at (rate limited per address then), with a token for the rest.
async fn room_summary(
    State(state): AppState,
    OptionalAuth(auth): OptionalAuth,
    ClientAddress(address): ClientAddress,
    Params(target): Params<String>,
    uri: http::Uri,
) -> JsonResult {
    match &auth {
        Some(auth) => auth.limit(&state.limiter, Action::Lookup)?,
        None => state.limiter.check(Action::Lookup, &address)?,
    }
    let mut via = super::rooms::via_servers(&uri);
    via.truncate(MAX_VIA);
    let room = if target.starts_with('#') {
        let (room, servers) = state.rooms.resolve_any_alias(&state, &target).await?;
        via.extend(servers.into_iter().take(MAX_VIA));
        room
    } else {
        room_id(&target)?.to_string()
    };
    let user = auth.as_ref().map(|auth| &*auth.user_id);
    let summary = state.rooms.room_summary(&state, user, &room, &via).await?;
    Ok(Json(summary))
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
