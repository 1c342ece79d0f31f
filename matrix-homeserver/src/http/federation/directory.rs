//! `/_matrix/federation/v1/publicRooms`: our room directory, for other servers (the same
//! list as the client API's, see `http/directory.rs`).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;

use super::Peer;
use crate::error::ApiError;
use crate::http::{JsonResult, Query};

type AppState = State<Arc<crate::State>>;

#[derive(Deserialize, Default)]
pub(super) struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
}

/// `GET /_matrix/federation/v1/publicRooms` (`include_all_networks` and
/// `third_party_instance_id` name networks we do not bridge: our list is the same).
pub(super) async fn public_rooms_get(
    State(state): AppState,
    Query(query): Query<PublicRoomsQuery>,
    _peer: Peer,
) -> JsonResult {
    crate::http::directory::list(&state, query.limit, query.since.as_deref(), None).await
}

#[derive(Deserialize, Default)]
struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
}

#[derive(Deserialize, Default)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

/// `POST /_matrix/federation/v1/publicRooms`, with a filter.
pub(super) async fn public_rooms_post(State(state): AppState, peer: Peer) -> JsonResult {
    let body: PublicRoomsBody = if peer.body.is_empty() {
        PublicRoomsBody::default()
    } else {
        serde_json::from_slice(&peer.body)
            .map_err(|e| ApiError::bad_json(format!("not a publicRooms body: {e}")))?
    };
    let search = body.filter.as_ref().and_then(|f| f.generic_search_term.as_deref());
    crate::http::directory::list(&state, body.limit, body.since.as_deref(), search).await
}
