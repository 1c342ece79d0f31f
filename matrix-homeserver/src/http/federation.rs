//! The server-server API: the router of the federation listener, and the extractor that
//! authenticates the requesting server. Handlers live in one file per endpoint group.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::response::IntoResponse;
use axum::routing::get;

mod directory;
mod e2ee;
mod keys;
mod media;
mod membership;
mod openid;
mod query;
mod reads;

use super::route;
use crate::State;
use crate::error::ApiError;
use crate::services::federation::Federation;

/// The most bytes a request of another server may carry: a transaction holds up to 50 PDUs of
/// 64 KiB and 100 EDUs.
const MAX_FEDERATION_BODY: usize = 8 << 20;

/// The router of the federation listener.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", route(get(version)))
        .route("/_matrix/key/v2/server", route(get(keys::server)))
        .route("/_matrix/key/v2/query", route(axum::routing::post(keys::query)))
        .route("/_matrix/key/v2/query/{server}", route(get(keys::query_one)))
        .route("/_matrix/federation/v1/make_join/{room}/{user}", route(get(membership::make_join)))
        .route(
            "/_matrix/federation/v2/send_join/{room}/{event}",
            route(axum::routing::put(membership::send_join)),
        )
        .route("/_matrix/federation/v1/send/{txn}", route(axum::routing::put(send)))
        .route(
            "/_matrix/federation/v1/make_leave/{room}/{user}",
            route(get(membership::make_leave)),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room}/{event}",
            route(axum::routing::put(membership::send_leave)),
        )
        .route(
            "/_matrix/federation/v1/make_knock/{room}/{user}",
            route(get(membership::make_knock)),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room}/{event}",
            route(axum::routing::put(membership::send_knock)),
        )
        .route(
            "/_matrix/federation/v2/invite/{room}/{event}",
            route(axum::routing::put(membership::invite)),
        )
        .route("/_matrix/federation/v1/query/profile", route(get(query::profile)))
        .route("/_matrix/federation/v1/query/directory", route(get(query::directory)))
        .route("/_matrix/federation/v1/event/{event}", route(get(reads::event)))
        .route("/_matrix/federation/v1/state/{room}", route(get(reads::state)))
        .route("/_matrix/federation/v1/state_ids/{room}", route(get(reads::state_ids)))
        .route("/_matrix/federation/v1/event_auth/{room}/{event}", route(get(reads::event_auth)))
        .route("/_matrix/federation/v1/backfill/{room}", route(get(reads::backfill)))
        .route(
            "/_matrix/federation/v1/timestamp_to_event/{room}",
            route(get(reads::timestamp_to_event)),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room}",
            route(axum::routing::post(reads::get_missing_events)),
        )
        .route("/_matrix/federation/v1/user/devices/{user}", route(get(e2ee::user_devices)))
        .route(
            "/_matrix/federation/v1/user/keys/query",
            route(axum::routing::post(e2ee::user_keys_query)),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            route(axum::routing::post(e2ee::user_keys_claim)),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            route(get(directory::public_rooms_get).post(directory::public_rooms_post)),
        )
        .route("/_matrix/federation/v1/openid/userinfo", route(get(openid::userinfo)))
        .route("/_matrix/federation/v1/hierarchy/{room}", route(get(directory::hierarchy)))
        .route("/_matrix/federation/v1/media/download/{id}", route(get(media::download)))
        .route("/_matrix/federation/v1/media/thumbnail/{id}", route(get(media::thumbnail)))
        .fallback(|| async { ApiError::unrecognized() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::log::log_request))
        .with_state(state)
}

/// `GET /_matrix/federation/v1/version` (no authentication).
async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "server": { "name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION") }
    }))
}

/// `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs.
async fn send(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    super::Params(txn_id): super::Params<String>,
    peer: Peer,
) -> Result<axum::response::Response, ApiError> {
    let answer = crate::services::federation::receive::transaction(
        &state,
        peer.origin.as_str(),
        &txn_id,
        &peer.body,
    )
    .await?;
    Ok(json_response(&answer))
}

/// A JSON answer written from matrix-core's JSON (canonical, numbers as received).
pub(crate) fn json_response(body: &matrix_core::Object) -> axum::response::Response {
    let mut bytes = Vec::with_capacity(body.canonical_len());
    body.write_canonical(&mut bytes);
    ([(http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The federation service, or 404 `M_UNRECOGNIZED` when federation is off.
pub(crate) fn federation(state: &State) -> Result<&Federation, ApiError> {
    state.federation.as_ref().ok_or_else(ApiError::unrecognized)
}

/// A request signed by another server: who sent it, and its body (at most
/// [`MAX_FEDERATION_BODY`] bytes).
#[derive(Debug)]
pub(crate) struct Peer {
    /// The requesting server.
    pub(crate) origin: ruma::OwnedServerName,
    /// The body, checked to be JSON if not empty.
    pub(crate) body: bytes::Bytes,
    /// The path and query.
    pub(crate) uri: http::Uri,
}

impl FromRequest<Arc<State>> for Peer {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<State>) -> Result<Self, ApiError> {
        let federation = federation(state)?;
        let (parts, body) = request.into_parts();
        let timeout = std::time::Duration::from_secs(state.config.http.body_read_timeout_secs);
        let body = super::read_limited(body, MAX_FEDERATION_BODY, timeout).await?;
        let uri = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        let authorization =
            parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let received = matrix_federation::request::Received {
            method: parts.method.as_str(),
            uri,
            authorization,
            body: (!body.is_empty()).then_some(&body[..]),
        };
        let origin = federation.authenticate(&received).await?;
        state.rooms.wake_destination(origin.as_str());
        Ok(Peer { origin, body, uri: parts.uri })
    }
}
