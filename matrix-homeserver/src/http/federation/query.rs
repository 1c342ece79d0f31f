//! `/_matrix/federation/v1/query/*`: profiles and aliases of our users and rooms.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Peer;
use crate::error::ApiError;
use crate::http::{JsonResult, Query};

type AppState = State<Arc<crate::State>>;

#[derive(Deserialize)]
pub(super) struct ProfileQuery {
    user_id: String,
    field: Option<String>,
}

/// `GET /_matrix/federation/v1/query/profile`: a user of ours, whole or one field.
pub(super) async fn profile(
    State(state): AppState,
    Query(query): Query<ProfileQuery>,
    _peer: Peer,
) -> JsonResult {
    let profile = crate::http::user::stored_profile(&state, &query.user_id).await?;
    let mut body = serde_json::Map::new();
    let want = |field: &str| query.field.as_deref().is_none_or(|f| f == field);
    if let Some(field) = query.field.as_deref()
        && field != "displayname"
        && field != "avatar_url"
    {
        return Err(ApiError::invalid_param("field must be displayname or avatar_url"));
    }
    if want("displayname")
        && let Some(name) = profile.displayname
    {
        body.insert("displayname".to_owned(), Value::String(name));
    }
    if want("avatar_url")
        && let Some(url) = profile.avatar_url
    {
        body.insert("avatar_url".to_owned(), Value::String(url));
    }
    Ok(Json(Value::Object(body)))
}

#[derive(Deserialize)]
pub(super) struct DirectoryQuery {
    room_alias: String,
}

/// `GET /_matrix/federation/v1/query/directory`: where an alias of ours points.
pub(super) async fn directory(
    State(state): AppState,
    Query(query): Query<DirectoryQuery>,
    _peer: Peer,
) -> JsonResult {
    let alias = state.rooms.resolve_alias(&query.room_alias).await?;
    Ok(Json(json!({ "room_id": alias.room_id, "servers": [state.rooms.server_name().as_str()] })))
}
