//! `/_matrix/federation/v1/publicRooms`: our room directory, for other servers (the same
//! list as the client API's, see `http/directory.rs`).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;

use super::Peer;
use crate::error::ApiError;
use crate::http::{JsonResult, Params, Query};
use crate::services::rooms::directory::Network;

type AppState = State<Arc<crate::State>>;

#[derive(Deserialize, Default)]
pub(super) struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
}

/// `GET /_matrix/federation/v1/publicRooms` (`include_all_networks` and
/// `third_party_instance_id` name the application services' network lists, as for clients).
pub(super) async fn public_rooms_get(
    State(state): AppState,
    Query(query): Query<PublicRoomsQuery>,
    _peer: Peer,
) -> JsonResult {
    let network =
        Network::of(query.include_all_networks, query.third_party_instance_id.as_deref())?;
    crate::http::directory::list(&state, query.limit, query.since.as_deref(), None, &network).await
}

#[derive(Deserialize, Default)]
struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<crate::http::directory::PublicRoomsFilter>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
}

/// `POST /_matrix/federation/v1/publicRooms`, with a filter.
pub(super) async fn public_rooms_post(State(state): AppState, peer: Peer) -> JsonResult {
    let body: PublicRoomsBody = if peer.body.is_empty() {
        PublicRoomsBody::default()
    } else {
        serde_json::from_slice(&peer.body)
            .map_err(|e| ApiError::bad_json(format!("not a publicRooms body: {e}")))?
    };
    let network = Network::of(body.include_all_networks, body.third_party_instance_id.as_deref())?;
    let filter = body.filter.as_ref();
    crate::http::directory::list(&state, body.limit, body.since.as_deref(), filter, &network).await
}

#[derive(Deserialize, Default)]
pub(super) struct HierarchyQuery {
    #[serde(default)]
    suggested_only: bool,
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space of ours and its children, as
/// the requesting server may see them (404 for a room it may not see).
pub(super) async fn hierarchy(
    State(state): AppState,
    Params(room): Params<String>,
    Query(query): Query<HierarchyQuery>,
    peer: Peer,
) -> JsonResult {
    let room = crate::http::room_id(&room)?;
    let answer = state
        .rooms
        .hierarchy_for_server(peer.origin.as_str(), room.as_str(), query.suggested_only)
        .await?;
    Ok(axum::Json(answer))
}
