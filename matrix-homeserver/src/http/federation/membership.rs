//! Joins through us: `make_join`, `send_join`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::{Peer, json_response};
use crate::error::ApiError;
use crate::http::{Params, room_id, user_id};

type AppState = State<Arc<crate::State>>;

/// The values of a repeated query parameter (`ver=10&ver=11`), decoded.
fn query_values(uri: &http::Uri, name: &str) -> Vec<String> {
    let Some(query) = uri.query() else { return Vec::new() };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// A `make_*` answer: the `membership` template of `user`, a user of the requesting server
/// (`versions`: the room versions it supports, when the endpoint asks).
async fn template(
    state: &crate::State,
    peer: &Peer,
    (room, user): (String, String),
    membership: &str,
    versions: Option<&[String]>,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let user = user_id(&user)?;
    if user.server_name() != peer.origin {
        return Err(ApiError::forbidden("the user is not of the requesting server"));
    }
    let (event, version) =
        state.rooms.membership_template(room.as_str(), &user, membership, versions).await?;
    let mut body = matrix_core::Object::new();
    body.insert("event", event);
    body.insert("room_version", version);
    Ok(json_response(&body))
}

/// The JSON object of a request body (the signed event of `send_*`).
fn object_body(peer: &Peer, what: &str) -> Result<matrix_core::Object, ApiError> {
    match matrix_core::json::parse_lenient(&peer.body) {
        Ok(matrix_core::Value::Object(object)) => Ok(object),
        _ => Err(ApiError::bad_json(format!("the body must be {what}"))),
    }
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: a join template for a user of
/// the requesting server.
pub(super) async fn make_join(
    State(state): AppState,
    Params(ids): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    // Without `ver`, the requesting server supports version 1 only.
    let mut versions = query_values(&peer.uri, "ver");
    if versions.is_empty() {
        versions.push("1".to_owned());
    }
    template(&state, &peer, ids, "join", Some(&versions)).await
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`: a user of the requesting server
/// joins through us. With `omit_members=true` the answer is a partial state: no member events
/// but the ones a joining server needs first, and the servers in the room.
pub(super) async fn send_join(
    State(state): AppState,
    Params((room, event_id)): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let federation = super::federation(&state)?;
    let event = object_body(&peer, "the signed join event")?;
    let omit_members = match query_values(&peer.uri, "omit_members").last().map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_param("omit_members must be true or false")),
    };
    let (origin, keys) = (peer.origin.as_str(), federation.keys());
    let joined = state
        .rooms
        .join_through_us(keys, origin, room.as_str(), &event_id, event, omit_members)
        .await?;
    let list = |pdus: &[Arc<matrix_core::Pdu>]| -> Vec<matrix_core::Value> {
        pdus.iter().map(|p| matrix_core::Value::Object(p.json().clone())).collect()
    };
    let mut body = matrix_core::Object::new();
    body.insert("origin", state.config.server_name.as_str());
    body.insert("members_omitted", joined.members_omitted);
    if let Some(servers) = &joined.servers_in_room {
        let servers: Vec<matrix_core::Value> = servers.iter().map(|s| s.as_str().into()).collect();
        body.insert("servers_in_room", servers);
    }
    body.insert("state", list(&joined.state));
    body.insert("auth_chain", list(&joined.auth_chain));
    body.insert("event", joined.event.json().clone());
    Ok(json_response(&body))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`: a leave template for a user of
/// the requesting server (to reject an invite of ours, or leave).
pub(super) async fn make_leave(
    State(state): AppState,
    Params(ids): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    template(&state, &peer, ids, "leave", None).await
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
pub(super) async fn send_leave(
    State(state): AppState,
    Params((room, event_id)): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let federation = super::federation(&state)?;
    let event = object_body(&peer, "the signed leave event")?;
    let keys = federation.keys();
    let origin = peer.origin.as_str();
    state
        .rooms
        .membership_through_us(keys, origin, room.as_str(), &event_id, event, "leave")
        .await?;
    Ok(json_response(&matrix_core::Object::new()))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: a user of the requesting server
/// invites one of ours; we countersign.
pub(super) async fn invite(
    State(state): AppState,
    Params((room, event_id)): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let federation = super::federation(&state)?;
    let mut body = object_body(&peer, "an object")?;
    let version = body.get_str("room_version").unwrap_or("1").to_owned();
    let Some(matrix_core::Value::Object(event)) = body.remove("event") else {
        return Err(ApiError::bad_json("the body has no event"));
    };
    let invite_state = match body.remove("invite_room_state") {
        Some(matrix_core::Value::Array(list)) => list,
        _ => Vec::new(),
    };
    let signed = state
        .rooms
        .invited_from(
            federation.keys(),
            peer.origin.as_str(),
            crate::services::rooms::invite_remote::ReceivedInvite {
                room_id: room.as_str(),
                event_id: &event_id,
                room_version: &version,
                event,
                invite_state,
            },
        )
        .await?;
    let mut answer = matrix_core::Object::new();
    answer.insert("event", signed);
    Ok(json_response(&answer))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`: a knock template for a user of
/// the requesting server, when the room's join rules allow knocking.
pub(super) async fn make_knock(
    State(state): AppState,
    Params(ids): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let versions = query_values(&peer.uri, "ver");
    template(&state, &peer, ids, "knock", Some(&versions)).await
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: answers the room's stripped
/// state for the knocker.
pub(super) async fn send_knock(
    State(state): AppState,
    Params((room, event_id)): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let federation = super::federation(&state)?;
    let event = object_body(&peer, "the signed knock event")?;
    let keys = federation.keys();
    let origin = peer.origin.as_str();
    let stored = state
        .rooms
        .membership_through_us(keys, origin, room.as_str(), &event_id, event, "knock")
        .await?;
    let knock_state = state.rooms.federation_stripped_state(room.as_str(), stored.sender()).await?;
    let mut body = matrix_core::Object::new();
    body.insert("knock_room_state", knock_state);
    Ok(json_response(&body))
}
