//! Moderating a user: shadow bans, suspensions, rate-limit overrides, logging in as them
//! (Synapse's user admin API); server notices; the client API's `whois`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use matrix_storage::RatelimitOverride;
use serde_json::{Value, json};

use super::{Admin, AppState, Auth, JsonBody, JsonResult, Params, Routes, route};
use crate::error::ApiError;
use crate::services::admin::redact::{self, RedactRequest};
use crate::services::admin::server_notices::{self, Notice};
use crate::services::admin::{devices, moderation, parse_user, users};

const V1: &str = "/_synapse/admin/v1";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{V1}/users/{{user}}/login"), route(post(login_as)))
        .route(
            &format!("{V1}/users/{{user}}/shadow_ban"),
            route(post(shadow_ban).delete(lift_shadow_ban)),
        )
        .route(
            &format!("{V1}/users/{{user}}/override_ratelimit"),
            route(post(set_ratelimit).get(ratelimit).delete(delete_ratelimit)),
        )
        .route(&format!("{V1}/suspend/{{user}}"), route(put(suspend)))
        .route(
            &format!("{V1}/users/{{user}}/cumulative_joined_room_count"),
            route(get(cumulative_joined_room_count)),
        )
        .route(&format!("{V1}/send_server_notice"), route(post(send_notice)))
        .route(&format!("{V1}/send_server_notice/{{txn}}"), route(put(send_notice_once)))
        .route("/_matrix/client/v3/admin/whois/{user}", route(get(client_whois)))
        .route(&format!("{V1}/user/{{user}}/redact"), route(post(redact)))
        .route(&format!("{V1}/user/redact_status/{{id}}"), route(get(redact_status)))
}

/// A field of a JSON object body that must be a non-negative integer when present (Synapse's
/// checks of `valid_until_ms`, `messages_per_second` and `burst_count`).
fn count(body: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid_param(format!("`{field}` must be a non-negative integer"))
        }),
    }
}

fn object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() { Ok(()) } else { Err(ApiError::bad_json("the body must be an object")) }
}

/// `POST /_synapse/admin/v1/users/{userId}/login`: `{"access_token": ...}`.
async fn login_as(
    State(state): AppState,
    Admin(auth): Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    object(&body)?;
    let user = parse_user(&user)?;
    let valid_until_ms = count(&body, "valid_until_ms")?;
    let token = moderation::login_as(&state, &auth.user_id, &user, valid_until_ms).await?;
    Ok(Json(json!({"access_token": token})))
}

async fn shadow_ban(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    moderation::set_shadow_banned(&state, &parse_user(&user)?, true).await?;
    Ok(Json(json!({})))
}

async fn lift_shadow_ban(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
) -> JsonResult {
    moderation::set_shadow_banned(&state, &parse_user(&user)?, false).await?;
    Ok(Json(json!({})))
}

fn ratelimit_json(limit: Option<RatelimitOverride>) -> Value {
    match limit {
        Some(limit) => json!({
            "messages_per_second": limit.messages_per_second,
            "burst_count": limit.burst_count,
        }),
        None => json!({}),
    }
}

/// `GET .../override_ratelimit`: the override, or `{}` without one.
async fn ratelimit(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    let restrictions = moderation::restrictions(&state, &parse_user(&user)?).await?;
    Ok(Json(ratelimit_json(restrictions.ratelimit)))
}

/// `POST .../override_ratelimit`: `messages_per_second` and `burst_count` (each 0 when
/// absent; 0 and 0 exempt the user); answers the override.
async fn set_ratelimit(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    object(&body)?;
    let user = parse_user(&user)?;
    let limit = RatelimitOverride {
        messages_per_second: count(&body, "messages_per_second")?.unwrap_or(0),
        burst_count: count(&body, "burst_count")?.unwrap_or(0),
    };
    moderation::set_ratelimit(&state, &user, Some(limit)).await?;
    Ok(Json(ratelimit_json(Some(limit))))
}

async fn delete_ratelimit(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
) -> JsonResult {
    moderation::set_ratelimit(&state, &parse_user(&user)?, None).await?;
    Ok(Json(json!({})))
}

/// `PUT /_synapse/admin/v1/suspend/{userId}` with `{"suspend": bool}`: answers
/// `{"user_{userId}_suspended": bool}`, as Synapse does.
async fn suspend(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    object(&body)?;
    let user = parse_user(&user)?;
    let suspend = body
        .get("suspend")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::bad_json("`suspend` must be a boolean"))?;
    moderation::set_suspended(&state, &user, suspend).await?;
    Ok(Json(json!({ format!("user_{user}_suspended"): suspend })))
}

/// The body of `send_server_notice`: `user_id`, `content`, and optionally `type` (default
/// `m.room.message`) and `state_key`; answers `{"event_id": ...}`.
async fn notice(
    state: &crate::State,
    body: &Value,
    txn: Option<(&ruma::UserId, &str)>,
) -> JsonResult {
    object(body)?;
    let user = body
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::missing_param("`user_id` is required"))?;
    let user = parse_user(user)?;
    let content =
        body.get("content").ok_or_else(|| ApiError::missing_param("`content` is required"))?;
    let kind = match body.get("type") {
        None => "m.room.message",
        Some(kind) => kind.as_str().ok_or_else(|| ApiError::bad_json("`type` must be a string"))?,
    };
    let state_key = match body.get("state_key") {
        None | Some(Value::Null) => None,
        Some(key) => {
            Some(key.as_str().ok_or_else(|| ApiError::bad_json("`state_key` must be a string"))?)
        }
    };
    let content = serde_json::to_vec(content).map_err(|e| ApiError::bad_json(e.to_string()))?;
    let notice = Notice { user_id: &user, kind, state_key, content: &content };
    let event_id = server_notices::send(state, notice, txn).await?;
    Ok(Json(json!({"event_id": event_id})))
}

/// `POST /_synapse/admin/v1/send_server_notice`.
async fn send_notice(
    State(state): AppState,
    _: Admin,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    notice(&state, &body, None).await
}

/// `PUT /_synapse/admin/v1/send_server_notice/{txnId}`: once per administrator and `txnId`.
async fn send_notice_once(
    State(state): AppState,
    Admin(auth): Admin,
    Params(txn): Params<String>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    notice(&state, &body, Some((&auth.user_id, &txn))).await
}

/// `GET /_matrix/client/v3/admin/whois/{userId}`: what the admin API's `whois` answers, for
/// an administrator or a user asking about themself (the spec allows both).
async fn client_whois(
    State(state): AppState,
    auth: Auth,
    Params(user): Params<String>,
) -> JsonResult {
    let user = parse_user(&user)?;
    if user != auth.user_id && !users::requester_is_admin(&state, &auth.user_id).await? {
        return Err(ApiError::forbidden("You are not a server admin"));
    }
    let devices = devices::whois(&state, &user).await?;
    let devices = serde_json::to_value(devices)
        .map_err(|e| ApiError::unknown(format!("the answer does not serialise: {e}")))?;
    Ok(Json(json!({"user_id": user, "devices": devices})))
}

/// `GET .../cumulative_joined_room_count`: `{"cumulative_joined_room_count": n}`.
async fn cumulative_joined_room_count(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
) -> JsonResult {
    let count = moderation::cumulative_joined_rooms(&state, &parse_user(&user)?).await?;
    Ok(Json(json!({"cumulative_joined_room_count": count})))
}

/// `POST /_synapse/admin/v1/user/{userId}/redact`: `rooms` (required; empty: every room the
/// user has a membership in), `reason`, `limit` (per room, default 1000), `use_admin`;
/// answers `{"redact_id": ...}` and redacts in the background.
async fn redact(
    State(state): AppState,
    Admin(auth): Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    object(&body)?;
    let user_id = parse_user(&user)?;
    let rooms = body
        .get("rooms")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid_param("`rooms` must be a list of room ids"))?;
    if rooms.len() > redact::MAX_ROOMS {
        return Err(ApiError::list_too_long("rooms", redact::MAX_ROOMS));
    }
    let rooms = rooms
        .iter()
        .map(|room| {
            let room = room
                .as_str()
                .ok_or_else(|| ApiError::invalid_param("`rooms` must hold room ids"))?;
            Ok(crate::http::room_id(room)?.to_string())
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(reason) => Some(
            reason
                .as_str()
                .ok_or_else(|| ApiError::invalid_param("`reason` must be a string"))?
                .to_owned(),
        ),
    };
    let limit = match count(&body, "limit")? {
        None => 1_000,
        Some(0) => return Err(ApiError::invalid_param("`limit` must be a positive integer")),
        Some(limit) => usize::try_from(limit).unwrap_or(usize::MAX).min(redact::MAX_LIMIT),
    };
    let use_admin = match body.get("use_admin") {
        None | Some(Value::Null) => false,
        Some(flag) => flag
            .as_bool()
            .ok_or_else(|| ApiError::invalid_param("`use_admin` must be a boolean"))?,
    };
    let request = RedactRequest { user_id, rooms, reason, limit, use_admin };
    let id = redact::start(&state, &auth.user_id, request).await?;
    Ok(Json(json!({"redact_id": id})))
}

/// `GET /_synapse/admin/v1/user/redact_status/{redactId}`: `status` (`scheduled`, `active`,
/// `completed`, `failed`) and `failed_redactions` (event id -> why).
async fn redact_status(State(state): AppState, _: Admin, Params(id): Params<String>) -> JsonResult {
    use crate::services::admin::tasks::{self, Status};
    let task = tasks::task(&state, &id)
        .await?
        .filter(|t| t.action == tasks::REDACT_ALL_EVENTS)
        .ok_or_else(|| ApiError::not_found("redact id not found"))?;
    let status = match task.status {
        Status::Scheduled => "scheduled",
        Status::Active => "active",
        Status::Complete => "completed",
        Status::Failed => "failed",
    };
    let failed = task
        .result
        .as_ref()
        .and_then(|r| r.get("failed_redactions"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({"status": status, "failed_redactions": failed})))
}
