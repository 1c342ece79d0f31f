//! Pushers (`GET /pushers`, `POST /pushers/set`) and `GET /notifications` (client-server
//! API, "Push Notifications"). The logic is in `services/push.rs` (pushers, the sender) and
//! `services/rooms/notify.rs` (what notifies whom).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use matrix_storage::{ChangeSet, Pusher, StreamPos};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Auth, JsonBody, JsonResult, Query, Routes, route};
use crate::error::ApiError;
use crate::services::push::{check_url, cursor_at};
use crate::services::rate_limit::Action as Limited;
use crate::services::rooms::format::{Shown, client_event};
use crate::services::rooms::notify::read_up_to;

type AppState = State<Arc<crate::State>>;

/// The most notifications one `/notifications` page holds.
const MAX_PAGE: usize = 100;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/pushers", route(get(get_pushers)))
        .route("/_matrix/client/v3/pushers/set", route(post(set_pusher)))
        .route("/_matrix/client/v3/notifications", route(get(notifications)))
}

/// A stored pusher as the API shows it.
fn shown(pusher: &Pusher) -> Value {
    let mut out = match serde_json::from_slice::<Value>(&pusher.data) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    out.insert("app_id".to_owned(), json!(pusher.app_id));
    out.insert("pushkey".to_owned(), json!(pusher.pushkey));
    Value::Object(out)
}

async fn get_pushers(State(state): AppState, auth: Auth) -> JsonResult {
    let pushers = state.rooms.storage().pushers(auth.user_id.as_str()).await?;
    Ok(Json(json!({"pushers": pushers.iter().map(shown).collect::<Vec<_>>()})))
}

#[derive(Debug, Deserialize)]
struct SetPusher {
    pushkey: String,
    /// `null` deletes.
    kind: Option<String>,
    app_id: String,
    app_display_name: Option<String>,
    device_display_name: Option<String>,
    profile_tag: Option<String>,
    lang: Option<String>,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    append: bool,
}

fn too_long(what: &str, max: usize) -> ApiError {
    ApiError::invalid_param(format!("{what} is longer than {max} bytes"))
}

async fn set_pusher(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<SetPusher>,
) -> JsonResult {
    auth.limit(&state.limiter, Limited::AccountData)?;
    let user = auth.user_id.as_str();
    // The spec's bounds: pushkey 512 bytes, app_id 64 characters.
    if body.pushkey.is_empty() || body.pushkey.len() > 512 {
        return Err(too_long("pushkey", 512));
    }
    if body.app_id.is_empty() || body.app_id.chars().count() > 64 {
        return Err(ApiError::invalid_param("app_id has 1 to 64 characters"));
    }
    let storage = state.rooms.storage();
    let Some(kind) = body.kind else {
        // `kind: null` deletes the pusher (if there is one).
        let mut changes = ChangeSet::new();
        let key = (user.to_owned(), body.app_id.clone(), body.pushkey.clone());
        changes.deleted_pushers.push(key.clone());
        changes.deleted_push_cursors.push(key);
        storage.apply(changes).await?;
        return Ok(Json(json!({})));
    };
    match kind.as_str() {
        "http" => {}
        "email" => {
            return Err(ApiError::invalid_param("email pushers are not supported here"));
        }
        _ => return Err(ApiError::invalid_param(format!("{kind:?} is not a pusher kind"))),
    }
    let missing = |what: &str| ApiError::missing_param(format!("{what} is required"));
    let app_display_name = body.app_display_name.ok_or_else(|| missing("app_display_name"))?;
    let device_display_name =
        body.device_display_name.ok_or_else(|| missing("device_display_name"))?;
    let lang = body.lang.ok_or_else(|| missing("lang"))?;
    let data = body.data.ok_or_else(|| missing("data"))?;
    let url = data.get("url").and_then(Value::as_str).ok_or_else(|| missing("data.url"))?;
    check_url(url)?;
    if let Some(format) = data.get("format")
        && format.as_str() != Some("event_id_only")
    {
        return Err(ApiError::invalid_param("data.format can only be event_id_only"));
    }
    for (what, value) in [
        ("app_display_name", &app_display_name),
        ("device_display_name", &device_display_name),
        ("lang", &lang),
    ] {
        if value.len() > 512 {
            return Err(too_long(what, 512));
        }
    }
    let mut stored = json!({
        "kind": kind,
        "app_display_name": app_display_name,
        "device_display_name": device_display_name,
        "lang": lang,
        "data": data,
    });
    if let Some(tag) = body.profile_tag {
        if tag.len() > 512 {
            return Err(too_long("profile_tag", 512));
        }
        stored["profile_tag"] = json!(tag);
    }
    let data = serde_json::to_vec(&stored).map_err(|e| ApiError::unknown(e.to_string()))?;
    if data.len() > 8192 {
        return Err(too_long("the pusher", 8192));
    }
    let pusher = Pusher {
        user_id: user.to_owned(),
        app_id: body.app_id,
        pushkey: body.pushkey,
        device_id: auth.scope().to_owned(),
        data,
    };
    let _guard = state.push_rules_lock.lock().await;
    let existing = storage.pushers(user).await?;
    let replaces =
        existing.iter().any(|p| p.app_id == pusher.app_id && p.pushkey == pusher.pushkey);
    if !replaces && existing.len() >= state.config.limits.max_pushers_per_user {
        return Err(ApiError::limit_exceeded_with(
            0,
            format!("at most {} pushers per user", state.config.limits.max_pushers_per_user),
        ));
    }
    let mut changes = ChangeSet::new();
    if !body.append {
        changes.exclusive_pushers.push((
            user.to_owned(),
            pusher.app_id.clone(),
            pusher.pushkey.clone(),
        ));
    }
    if !replaces {
        let head = storage.stream_position().await?;
        changes.push_cursors.push(cursor_at(&pusher, head));
    }
    changes.pushers.push(pusher);
    storage.apply(changes).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct NotificationsQuery {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

async fn notifications(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<NotificationsQuery>,
) -> JsonResult {
    let before = match query.from.as_deref() {
        None => None,
        Some(token) => Some(StreamPos(
            token.parse().map_err(|_| ApiError::invalid_param("from is not a token we gave"))?,
        )),
    };
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_param("limit is not a number"))?
            .clamp(1, MAX_PAGE),
    };
    let highlights_only = query.only.as_deref() == Some("highlight");
    let user = &auth.user_id;
    let storage = state.rooms.storage();
    let found = storage.notifications(user.as_str(), before, limit, highlights_only).await?;
    let mut receipts = HashMap::new();
    let mut out = Vec::new();
    for n in &found {
        if !receipts.contains_key(&n.room_id) {
            let stored = storage.user_receipts(&n.room_id, user.as_str()).await?;
            receipts.insert(n.room_id.clone(), stored);
        }
        let upto = read_up_to(&receipts[&n.room_id]).of(n.thread_id.as_deref());
        // Only what the user may still see (the one visibility function decides).
        let Ok(pdu) = state.rooms.event_for(&n.room_id, user, &n.event_id).await else {
            continue;
        };
        let actions: Value = serde_json::from_slice(&n.actions).unwrap_or(json!([]));
        out.push(json!({
            "actions": actions,
            "event": client_event(&pdu, Shown::default()),
            "read": n.pos <= upto,
            "room_id": n.room_id,
            "ts": n.ts,
        }));
    }
    let mut answer = json!({"notifications": out});
    if found.len() == limit
        && let Some(last) = found.last()
    {
        answer["next_token"] = json!(last.pos.0.to_string());
    }
    Ok(Json(answer))
}
