//! Media: quarantine, protection, information, deletion, the remote media purge (Synapse's
//! media admin API), a user's media and the users' media statistics.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AppState, JsonResult, Params, Query, Routes, route, to_json};
use crate::services::admin::media::{
    self, DeleteOldParams, MediaStatisticsParams, UserMediaParams,
};
use crate::services::admin::parse_user;
use crate::services::admin::rooms::parse_room;

const V1: &str = "/_synapse/admin/v1";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(
            &format!("{V1}/users/{{user}}/media"),
            route(get(user_media).delete(delete_user_media)),
        )
        .route(&format!("{V1}/room/{{room}}/media"), route(get(room_media)))
        .route(&format!("{V1}/room/{{room}}/media/quarantine"), route(post(quarantine_room)))
        .route(&format!("{V1}/user/{{user}}/media/quarantine"), route(post(quarantine_user)))
        .route(&format!("{V1}/media/quarantine/{{server}}/{{media}}"), route(post(quarantine)))
        .route(&format!("{V1}/media/unquarantine/{{server}}/{{media}}"), route(post(unquarantine)))
        .route(&format!("{V1}/media/protect/{{media}}"), route(post(protect)))
        .route(&format!("{V1}/media/unprotect/{{media}}"), route(post(unprotect)))
        .route(&format!("{V1}/media/delete"), route(post(delete_old)))
        .route(&format!("{V1}/media/quarantine_changes"), route(get(quarantine_changes)))
        .route(&format!("{V1}/media/{{server}}/{{media}}"), route(get(info).delete(delete_one)))
        .route(&format!("{V1}/purge_media_cache"), route(post(purge_media_cache)))
        .route(&format!("{V1}/statistics/users/media"), route(get(statistics)))
}

async fn user_media(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    Query(params): Query<UserMediaParams>,
) -> JsonResult {
    to_json(media::user_media(&state, &parse_user(&user)?, &params).await?)
}

async fn delete_user_media(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    Query(params): Query<UserMediaParams>,
) -> JsonResult {
    to_json(media::delete_user_media(&state, &parse_user(&user)?, &params).await?)
}

async fn room_media(State(state): AppState, _: Admin, Params(room): Params<String>) -> JsonResult {
    to_json(media::room_media(&state, &parse_room(&room)?).await?)
}

async fn quarantine_room(
    State(state): AppState,
    Admin(auth): Admin,
    Params(room): Params<String>,
) -> JsonResult {
    let count = media::quarantine_room(&state, &auth.user_id, &parse_room(&room)?).await?;
    Ok(Json(json!({"num_quarantined": count})))
}

async fn quarantine_user(
    State(state): AppState,
    Admin(auth): Admin,
    Params(user): Params<String>,
) -> JsonResult {
    let count = media::quarantine_user(&state, &auth.user_id, &parse_user(&user)?).await?;
    Ok(Json(json!({"num_quarantined": count})))
}

async fn quarantine(
    State(state): AppState,
    Admin(auth): Admin,
    Params((server, media_id)): Params<(String, String)>,
) -> JsonResult {
    media::quarantine_one(&state, Some(&auth.user_id), &server, &media_id).await?;
    Ok(Json(json!({})))
}

async fn unquarantine(
    State(state): AppState,
    _: Admin,
    Params((server, media_id)): Params<(String, String)>,
) -> JsonResult {
    media::quarantine_one(&state, None, &server, &media_id).await?;
    Ok(Json(json!({})))
}

async fn protect(State(state): AppState, _: Admin, Params(media_id): Params<String>) -> JsonResult {
    media::protect(&state, &media_id, true).await?;
    Ok(Json(json!({})))
}

async fn unprotect(
    State(state): AppState,
    _: Admin,
    Params(media_id): Params<String>,
) -> JsonResult {
    media::protect(&state, &media_id, false).await?;
    Ok(Json(json!({})))
}

async fn info(
    State(state): AppState,
    _: Admin,
    Params((server, media_id)): Params<(String, String)>,
) -> JsonResult {
    Ok(Json(json!({"media_info": media::media_info(&state, &server, &media_id).await?})))
}

async fn delete_one(
    State(state): AppState,
    _: Admin,
    Params((server, media_id)): Params<(String, String)>,
) -> JsonResult {
    to_json(media::delete_one(&state, &server, &media_id).await?)
}

async fn delete_old(
    State(state): AppState,
    _: Admin,
    Query(params): Query<DeleteOldParams>,
) -> JsonResult {
    to_json(media::delete_old(&state, &params).await?)
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    from: Option<String>,
}

async fn quarantine_changes(
    State(state): AppState,
    _: Admin,
    Query(query): Query<ChangesQuery>,
) -> JsonResult {
    to_json(media::quarantine_changes(&state, query.from.as_deref()).await?)
}

#[derive(Debug, Deserialize)]
struct PurgeQuery {
    before_ts: Option<String>,
}

async fn purge_media_cache(
    State(state): AppState,
    _: Admin,
    Query(query): Query<PurgeQuery>,
) -> JsonResult {
    let deleted = media::purge_remote(&state, query.before_ts.as_deref()).await?;
    Ok(Json(json!({"deleted": deleted})))
}

async fn statistics(
    State(state): AppState,
    _: Admin,
    Query(params): Query<MediaStatisticsParams>,
) -> JsonResult {
    to_json(media::media_statistics(&state, &params).await?)
}
