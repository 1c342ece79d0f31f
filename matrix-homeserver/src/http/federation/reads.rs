//! Reading rooms over federation: `/event`, `/state`, `/state_ids`, `/event_auth`,
//! `/backfill`, `/get_missing_events`. What a server may read is decided by
//! `services/rooms/server_visibility.rs` (history visibility for servers, server ACLs).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use matrix_core::{Object, Value};
use serde::Deserialize;

use super::{Peer, json_response};
use crate::error::ApiError;
use crate::http::{Params, Query, room_id};
use crate::services::rooms::{MAX_BACKFILL, MAX_MISSING, MAX_START_EVENTS};

type AppState = State<Arc<crate::State>>;

/// A transaction-shaped answer: `origin`, `origin_server_ts`, `pdus`.
fn transaction(state: &crate::State, pdus: Vec<Object>) -> Response {
    let mut body = Object::new();
    body.insert("origin", state.rooms.server_name().as_str());
    body.insert("origin_server_ts", crate::services::rooms::now_ms());
    body.insert("pdus", pdus.into_iter().map(Value::Object).collect::<Vec<_>>());
    json_response(&body)
}

fn list(items: Vec<Object>) -> Value {
    Value::Array(items.into_iter().map(Value::Object).collect())
}

fn id_list(ids: Vec<String>) -> Value {
    Value::Array(ids.into_iter().map(Value::from).collect())
}

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub(super) async fn event(
    State(state): AppState,
    Params(event_id): Params<String>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let pdu = state.rooms.event_for_server(peer.origin.as_str(), &event_id).await?;
    Ok(transaction(&state, vec![pdu]))
}

#[derive(Deserialize)]
pub(super) struct AtEvent {
    event_id: String,
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`.
pub(super) async fn state(
    State(state): AppState,
    Params(room): Params<String>,
    Query(at): Query<AtEvent>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let (pdus, auth_chain) =
        state.rooms.state_for_server(peer.origin.as_str(), room.as_str(), &at.event_id).await?;
    let mut body = Object::new();
    body.insert("pdus", list(pdus));
    body.insert("auth_chain", list(auth_chain));
    Ok(json_response(&body))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`.
pub(super) async fn state_ids(
    State(state): AppState,
    Params(room): Params<String>,
    Query(at): Query<AtEvent>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let (pdu_ids, auth_chain_ids) =
        state.rooms.state_ids_for_server(peer.origin.as_str(), room.as_str(), &at.event_id).await?;
    let mut body = Object::new();
    body.insert("pdu_ids", id_list(pdu_ids));
    body.insert("auth_chain_ids", id_list(auth_chain_ids));
    Ok(json_response(&body))
}

/// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`: the event nearest a time that the
/// requesting server may have.
pub(super) async fn timestamp_to_event(
    State(state): AppState,
    Params(room): Params<String>,
    Query(query): Query<crate::http::rooms::TimestampQuery>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let (ts, forwards) = query.parse()?;
    let found = state
        .rooms
        .timestamp_to_event_for_server(room.as_str(), peer.origin.as_str(), ts, forwards)
        .await?;
    let mut body = Object::new();
    body.insert("event_id", found.event_id.as_str());
    body.insert("origin_server_ts", found.origin_server_ts);
    Ok(json_response(&body))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub(super) async fn event_auth(
    State(state): AppState,
    Params((room, event_id)): Params<(String, String)>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let chain =
        state.rooms.event_auth_for_server(peer.origin.as_str(), room.as_str(), &event_id).await?;
    let mut body = Object::new();
    body.insert("auth_chain", list(chain));
    Ok(json_response(&body))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=`: `v` repeated (at most
/// [`MAX_START_EVENTS`]), `limit` required (above [`MAX_BACKFILL`] it is lowered).
pub(super) async fn backfill(
    State(state): AppState,
    Params(room): Params<String>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let mut from = Vec::new();
    let mut limit = None;
    for (key, value) in form_urlencoded::parse(peer.uri.query().unwrap_or_default().as_bytes()) {
        match &*key {
            "v" => from.push(value.into_owned()),
            "limit" => {
                let parsed = value
                    .parse::<u64>()
                    .map_err(|_| ApiError::invalid_param("limit must be a non-negative integer"))?;
                limit = Some(usize::try_from(parsed).unwrap_or(MAX_BACKFILL));
            }
            _ => {}
        }
        if from.len() > MAX_START_EVENTS {
            return Err(ApiError::list_too_long("v", MAX_START_EVENTS));
        }
    }
    let limit = limit.ok_or_else(|| ApiError::missing_param("limit is required"))?;
    if from.is_empty() {
        return Err(ApiError::missing_param("v is required"));
    }
    let pdus =
        state.rooms.backfill_for_server(peer.origin.as_str(), room.as_str(), &from, limit).await?;
    Ok(transaction(&state, pdus))
}

#[derive(Deserialize)]
struct MissingEventsBody {
    #[serde(default)]
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    min_depth: Option<i64>,
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}` (`limit` defaults to 10 and is
/// lowered to [`MAX_MISSING`]).
pub(super) async fn get_missing_events(
    State(state): AppState,
    Params(room): Params<String>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let body: MissingEventsBody = serde_json::from_slice(&peer.body)
        .map_err(|e| ApiError::bad_json(format!("not a get_missing_events body: {e}")))?;
    if body.earliest_events.len() > MAX_START_EVENTS {
        return Err(ApiError::list_too_long("earliest_events", MAX_START_EVENTS));
    }
    if body.latest_events.len() > MAX_START_EVENTS {
        return Err(ApiError::list_too_long("latest_events", MAX_START_EVENTS));
    }
    let limit = body.limit.map_or(10, |l| usize::try_from(l).unwrap_or(MAX_MISSING));
    let events = state
        .rooms
        .missing_events_for_server(
            peer.origin.as_str(),
            room.as_str(),
            &body.earliest_events,
            &body.latest_events,
            limit,
            body.min_depth.unwrap_or(0),
        )
        .await?;
    let mut answer = Object::new();
    answer.insert("events", list(events));
    Ok(json_response(&answer))
}
