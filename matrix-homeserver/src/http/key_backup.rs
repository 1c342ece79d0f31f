//! Server-side key backups: `/room_keys/version` (create, read, update, delete a backup
//! version) and `/room_keys/keys` (store, read and delete backed-up room keys: all, a
//! room's, one session). The rules are the service's (`services/key_backup.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use matrix_storage::BackupScope;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::key_backup::BackupRooms;
use crate::services::rate_limit::Action;

type AppState = State<Arc<crate::State>>;

const V3: &str = "/_matrix/client/v3/room_keys";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{V3}/version"), route(post(create_version).get(current_version)))
        .route(
            &format!("{V3}/version/{{version}}"),
            route(get(get_version).put(update_version).delete(delete_version)),
        )
        .route(&format!("{V3}/keys"), route(get(get_all).put(put_all).delete(delete_all)))
        .route(
            &format!("{V3}/keys/{{room}}"),
            route(get(get_room).put(put_room).delete(delete_room)),
        )
        .route(
            &format!("{V3}/keys/{{room}}/{{session}}"),
            route(get(get_session).put(put_session).delete(delete_session)),
        )
}

#[derive(Debug, Deserialize)]
struct VersionBody {
    algorithm: String,
    auth_data: Value,
    version: Option<String>,
}

async fn create_version(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<VersionBody>,
) -> JsonResult {
    // Each version is kept (with its sessions) until deleted: creating them is limited.
    auth.limit(&state.limiter, Action::KeyUpload)?;
    let user = auth.user_id.as_str();
    let version = state.key_backups.create_version(user, body.algorithm, &body.auth_data).await?;
    Ok(Json(json!({"version": version})))
}

async fn current_version(State(state): AppState, auth: Auth) -> JsonResult {
    Ok(Json(state.key_backups.version(auth.user_id.as_str(), None).await?))
}

async fn get_version(
    State(state): AppState,
    auth: Auth,
    Params(version): Params<String>,
) -> JsonResult {
    Ok(Json(state.key_backups.version(auth.user_id.as_str(), Some(&version)).await?))
}

async fn update_version(
    State(state): AppState,
    auth: Auth,
    Params(version): Params<String>,
    JsonBody(body): JsonBody<VersionBody>,
) -> JsonResult {
    let (user, given) = (auth.user_id.as_str(), body.version.as_deref());
    auth.limit(&state.limiter, Action::KeyUpload)?;
    let backups = &state.key_backups;
    backups.update_version(user, &version, &body.algorithm, &body.auth_data, given).await?;
    Ok(Json(json!({})))
}

async fn delete_version(
    State(state): AppState,
    auth: Auth,
    Params(version): Params<String>,
) -> JsonResult {
    state.key_backups.delete_version(auth.user_id.as_str(), &version).await?;
    Ok(Json(json!({})))
}

/// The `version` query parameter every `/room_keys/keys` request names.
#[derive(Debug, Deserialize)]
struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn version(self) -> Result<String, ApiError> {
        self.version.ok_or_else(|| ApiError::missing_param("the version query parameter"))
    }
}

#[derive(Debug, Deserialize)]
struct RoomsBody {
    rooms: BTreeMap<String, SessionsBody>,
}

#[derive(Debug, Deserialize)]
struct SessionsBody {
    sessions: BTreeMap<String, Value>,
}

async fn put_all(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<RoomsBody>,
) -> JsonResult {
    let rooms: BackupRooms =
        body.rooms.into_iter().map(|(room, sessions)| (room, sessions.sessions)).collect();
    put(&state, &auth, query, rooms).await
}

async fn put_room(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<SessionsBody>,
) -> JsonResult {
    put(&state, &auth, query, BTreeMap::from([(room, body.sessions)])).await
}

async fn put_session(
    State(state): AppState,
    auth: Auth,
    Params((room, session)): Params<(String, String)>,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    let rooms = BTreeMap::from([(room, BTreeMap::from([(session, body)]))]);
    put(&state, &auth, query, rooms).await
}

async fn put(
    state: &crate::State,
    auth: &Auth,
    query: VersionQuery,
    rooms: BackupRooms,
) -> JsonResult {
    let version = query.version()?;
    let user = auth.user_id.as_str();
    // Limited like key uploads (a client backs up a few hundred sessions a request).
    auth.limit(&state.limiter, Action::KeyUpload)?;
    Ok(Json(state.key_backups.put_sessions(user, &version, rooms).await?))
}

async fn get_all(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<VersionQuery>,
) -> JsonResult {
    let (user, version) = (auth.user_id.as_str(), query.version()?);
    Ok(Json(state.key_backups.sessions(user, &version, None, None).await?))
}

async fn get_room(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<VersionQuery>,
) -> JsonResult {
    let (user, version) = (auth.user_id.as_str(), query.version()?);
    Ok(Json(state.key_backups.sessions(user, &version, Some(&room), None).await?))
}

async fn get_session(
    State(state): AppState,
    auth: Auth,
    Params((room, session)): Params<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> JsonResult {
    let (user, version) = (auth.user_id.as_str(), query.version()?);
    let answer = state.key_backups.sessions(user, &version, Some(&room), Some(&session));
    Ok(Json(answer.await?))
}

async fn delete_all(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<VersionQuery>,
) -> JsonResult {
    delete(&state, &auth, query, BackupScope::All).await
}

async fn delete_room(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<VersionQuery>,
) -> JsonResult {
    delete(&state, &auth, query, BackupScope::Room(room)).await
}

async fn delete_session(
    State(state): AppState,
    auth: Auth,
    Params((room, session)): Params<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> JsonResult {
    delete(&state, &auth, query, BackupScope::Session(room, session)).await
}

async fn delete(
    state: &crate::State,
    auth: &Auth,
    query: VersionQuery,
    scope: BackupScope,
) -> JsonResult {
    let (user, version) = (auth.user_id.as_str(), query.version()?);
    Ok(Json(state.key_backups.delete_sessions(user, &version, scope).await?))
}
