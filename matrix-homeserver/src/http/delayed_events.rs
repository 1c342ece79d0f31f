//! Delayed events (MSC4140, `org.matrix.msc4140` in `/versions`): scheduling them through
//! `/send` and `/state` with `?org.matrix.msc4140.delay=` (what Element Call and Synapse use;
//! the hook is in `rooms.rs`) or the MSC's own
//! `PUT /unstable/org.matrix.msc4140/rooms/{roomId}/delayed_event/{eventType}/{txnId}`, and
//! managing them under `/_matrix/client/unstable/org.matrix.msc4140/delayed_events`: the
//! list, one by id, and the actions `send`, `cancel` and `restart`, both at their own paths
//! (`/{delay_id}/{action}`, the MSC's current shape) and with `{"action": ...}` in the body of
//! `POST /{delay_id}` (its earlier shape, which Synapse and older clients still use).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use matrix_storage::DelayedEvent;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Routes, room_id, route};
use crate::error::ApiError;
use crate::services::delayed_events::Action;
pub(super) use crate::services::delayed_events::Schedule;
use crate::services::rate_limit::Action as Limit;

type AppState = State<Arc<crate::State>>;

const U: &str = "/_matrix/client/unstable/org.matrix.msc4140";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{U}/delayed_events"), route(get(list)))
        .route(&format!("{U}/delayed_events/{{id}}"), route(get(one).post(act_in_body)))
        .route(&format!("{U}/delayed_events/{{id}}/{{action}}"), route(post(act)))
        .route(
            &format!("{U}/rooms/{{room}}/delayed_event/{{kind}}/{{txn}}"),
            route(put(schedule_put)),
        )
}

/// The query parameter of `/send` and `/state` that asks for a delay.
#[derive(Debug, Deserialize)]
pub(super) struct DelayQuery {
    #[serde(rename = "org.matrix.msc4140.delay")]
    pub(super) delay: Option<u64>,
}

/// Schedules from `/send` (with its transaction id) or `/state` (with its state key); the
/// membership endpoints own `m.room.member`. `request.room_id` is checked here.
pub(super) async fn schedule(
    state: &crate::State,
    auth: &Auth,
    request: Schedule<'_>,
) -> JsonResult {
    let room = room_id(request.room_id)?;
    auth.not_suspended()?;
    let limit = if request.state_key.is_some() { Limit::State } else { Limit::Message };
    auth.limit(&state.limiter, limit)?;
    if request.state_key.is_some() && request.kind == "m.room.member" {
        return Err(ApiError::forbidden("use the membership endpoints to change memberships"));
    }
    if auth.shadow_banned() {
        // Nothing is scheduled: the event would reach the room when it is due.
        let made_up = crate::services::accounts::made_up_id('s', 24)?;
        return Ok(Json(json!({"delay_id": made_up})));
    }
    let request = Schedule { room_id: room.as_str(), ..request };
    let delay_id = state.delayed_events.schedule(&auth.user_id, auth.scope(), request).await?;
    Ok(Json(json!({"delay_id": delay_id})))
}

#[derive(Debug, Deserialize)]
struct ScheduleBody {
    delay_ms: u64,
    state_key: Option<String>,
    content: Map<String, Value>,
}

async fn schedule_put(
    State(state): AppState,
    auth: Auth,
    Params((room, kind, txn)): Params<(String, String, String)>,
    JsonBody(body): JsonBody<ScheduleBody>,
) -> JsonResult {
    let content =
        serde_json::to_vec(&body.content).map_err(|e| ApiError::bad_json(e.to_string()))?;
    // A state event has no transaction id of its own (as `/state`); a message keeps its.
    let txn = body.state_key.is_none().then_some(txn.as_str());
    let request = Schedule {
        room_id: &room,
        kind: &kind,
        state_key: body.state_key.as_deref(),
        content: &content,
        delay_ms: body.delay_ms,
        txn_id: txn,
    };
    schedule(&state, &auth, request).await
}

/// One delayed event as listed: Synapse's fields (`delay`, `running_since`) and the MSC's
/// current ones (`delay_ms`, `scheduled_at`).
fn describe(event: &DelayedEvent) -> Value {
    let content: Value = serde_json::from_slice(&event.content).unwrap_or_else(|_| json!({}));
    let mut out = json!({
        "delay_id": event.delay_id,
        "room_id": event.room_id,
        "type": event.kind,
        "delay": event.delay_ms,
        "delay_ms": event.delay_ms,
        "running_since": event.scheduled_at,
        "scheduled_at": event.scheduled_at,
        "content": content,
    });
    if let Some(key) = &event.state_key {
        out["state_key"] = Value::from(key.as_str());
    }
    out
}

async fn list(State(state): AppState, auth: Auth) -> JsonResult {
    let events = state.delayed_events.list(&auth.user_id).await?;
    Ok(Json(json!({"delayed_events": events.iter().map(describe).collect::<Vec<_>>()})))
}

async fn one(State(state): AppState, auth: Auth, Params(id): Params<String>) -> JsonResult {
    let events = state.delayed_events.list(&auth.user_id).await?;
    let event = events
        .iter()
        .find(|e| e.delay_id == id)
        .ok_or_else(|| ApiError::not_found("no such delayed event"))?;
    Ok(Json(describe(event)))
}

async fn run(state: &crate::State, auth: &Auth, id: &str, action: Action) -> JsonResult {
    if action == Action::Send {
        auth.limit(&state.limiter, Limit::Message)?;
    }
    state.delayed_events.act(&auth.user_id, id, action).await?;
    Ok(Json(json!({})))
}

async fn act(
    State(state): AppState,
    auth: Auth,
    Params((id, action)): Params<(String, String)>,
    JsonBody(_body): JsonBody<Map<String, Value>>,
) -> JsonResult {
    // Only the three actions are paths; anything else is no endpoint.
    let action = Action::parse(&action).map_err(|_| ApiError::unrecognized())?;
    run(&state, &auth, &id, action).await
}

#[derive(Debug, Deserialize)]
struct ActionBody {
    action: Option<String>,
}

async fn act_in_body(
    State(state): AppState,
    auth: Auth,
    Params(id): Params<String>,
    JsonBody(body): JsonBody<ActionBody>,
) -> JsonResult {
    let action = body.action.ok_or_else(|| ApiError::missing_param("'action' is missing"))?;
    run(&state, &auth, &id, Action::parse(&action)?).await
}
