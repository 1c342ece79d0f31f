//! Users: the list, one user, deactivation, passwords, the administrator flag, devices,
//! `whois`, rooms (Synapse's user admin API).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AppState, JsonBody, JsonResult, Params, Query, Routes, route, to_json};
use crate::error::ApiError;
use crate::services::admin::users::{ListUsersParams, ListVersion, UserChange};
use crate::services::admin::{devices, parse_user, users};

const V1: &str = "/_synapse/admin/v1";
const V2: &str = "/_synapse/admin/v2";

pub(super) fn routes() -> Routes {
    Router::new()
        .route(&format!("{V2}/users"), route(get(list_v2)))
        .route("/_synapse/admin/v3/users", route(get(list_v3)))
        .route(&format!("{V2}/users/{{user}}"), route(get(user).put(put_user)))
        .route(&format!("{V1}/deactivate/{{user}}"), route(post(deactivate)))
        .route(&format!("{V1}/reset_password/{{user}}"), route(post(reset_password)))
        .route(&format!("{V1}/users/{{user}}/admin"), route(get(is_admin).put(set_admin)))
        .route(&format!("{V1}/username_available"), route(get(username_available)))
        .route(&format!("{V1}/whois/{{user}}"), route(get(whois)))
        .route(&format!("{V1}/users/{{user}}/joined_rooms"), route(get(joined_rooms)))
        .route(&format!("{V1}/users/{{user}}/memberships"), route(get(memberships)))
        .route(&format!("{V1}/users/{{user}}/accountdata"), route(get(account_data)))
        .route(&format!("{V1}/users/{{user}}/pushers"), route(get(pushers)))
        .route(&format!("{V2}/users/{{user}}/devices"), route(get(list_devices).post(add_device)))
        .route(
            &format!("{V2}/users/{{user}}/devices/{{device}}"),
            route(get(device).put(rename_device).delete(delete_device)),
        )
        .route(&format!("{V2}/users/{{user}}/delete_devices"), route(post(delete_devices)))
}

async fn list_v2(
    State(state): AppState,
    _: Admin,
    Query(params): Query<ListUsersParams>,
) -> JsonResult {
    to_json(users::list_users(&state, &params, ListVersion::V2).await?)
}

async fn list_v3(
    State(state): AppState,
    _: Admin,
    Query(params): Query<ListUsersParams>,
) -> JsonResult {
    to_json(users::list_users(&state, &params, ListVersion::V3).await?)
}

async fn user(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    to_json(users::user_details(&state, &parse_user(&user)?).await?)
}

/// `PUT /_synapse/admin/v2/users/{userId}`: 201 when the user was created, 200 when changed.
async fn put_user(
    State(state): AppState,
    Admin(auth): Admin,
    Params(user): Params<String>,
    JsonBody(change): JsonBody<UserChange>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let user = parse_user(&user)?;
    let (created, details) = users::put_user(&state, &auth.user_id, &user, change).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, to_json(details)?))
}

#[derive(Debug, Default, Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> JsonResult {
    users::deactivate(&state, &parse_user(&user)?, body.erase).await?;
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}

#[derive(Debug, Deserialize)]
struct ResetPasswordBody {
    new_password: Option<String>,
    logout_devices: Option<bool>,
}

async fn reset_password(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<ResetPasswordBody>,
) -> JsonResult {
    let user = parse_user(&user)?;
    let password =
        body.new_password.ok_or_else(|| ApiError::missing_param("`new_password` is required"))?;
    let logout = body.logout_devices.unwrap_or(true);
    users::reset_password(&state, &user, password, logout).await?;
    Ok(Json(json!({})))
}

async fn is_admin(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    Ok(Json(json!({"admin": users::is_admin(&state, &parse_user(&user)?).await?})))
}

#[derive(Debug, Deserialize)]
struct AdminBody {
    admin: Option<bool>,
}

async fn set_admin(
    State(state): AppState,
    Admin(auth): Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<AdminBody>,
) -> JsonResult {
    let user = parse_user(&user)?;
    let admin = body.admin.ok_or_else(|| ApiError::missing_param("`admin` is required"))?;
    users::set_admin(&state, &auth.user_id, &user, admin).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct UsernameQuery {
    username: Option<String>,
}

async fn username_available(
    State(state): AppState,
    _: Admin,
    Query(query): Query<UsernameQuery>,
) -> JsonResult {
    let name = query.username.ok_or_else(|| ApiError::missing_param("`username` is required"))?;
    Ok(Json(json!({"available": users::username_available(&state, &name).await?})))
}

async fn whois(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    let user = parse_user(&user)?;
    let devices = devices::whois(&state, &user).await?;
    Ok(Json(json!({"user_id": user, "devices": to_json(devices)?.0})))
}

async fn joined_rooms(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
) -> JsonResult {
    let rooms = devices::joined_rooms(&state, &parse_user(&user)?).await?;
    Ok(Json(json!({"total": rooms.len(), "joined_rooms": rooms})))
}

async fn memberships(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    let memberships = devices::memberships(&state, &parse_user(&user)?).await?;
    Ok(Json(json!({"memberships": memberships})))
}

async fn account_data(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
) -> JsonResult {
    Ok(Json(devices::account_data(&state, &parse_user(&user)?).await?))
}

async fn pushers(State(state): AppState, _: Admin, Params(user): Params<String>) -> JsonResult {
    let pushers = devices::pushers(&state, &parse_user(&user)?).await?;
    Ok(Json(json!({"total": pushers.len(), "pushers": pushers})))
}

async fn list_devices(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
) -> JsonResult {
    let devices = devices::devices(&state, &parse_user(&user)?).await?;
    Ok(Json(json!({"total": devices.len(), "devices": to_json(devices)?.0})))
}

#[derive(Debug, Deserialize)]
struct NewDevice {
    device_id: Option<String>,
}

async fn add_device(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<NewDevice>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let user = parse_user(&user)?;
    let device =
        body.device_id.ok_or_else(|| ApiError::missing_param("`device_id` is required"))?;
    devices::create_device(&state, &user, &device).await?;
    Ok((StatusCode::CREATED, Json(json!({}))))
}

async fn device(
    State(state): AppState,
    _: Admin,
    Params((user, device)): Params<(String, String)>,
) -> JsonResult {
    to_json(devices::device(&state, &parse_user(&user)?, &device).await?)
}

#[derive(Debug, Deserialize)]
struct DeviceChange {
    display_name: Option<String>,
}

async fn rename_device(
    State(state): AppState,
    _: Admin,
    Params((user, device)): Params<(String, String)>,
    JsonBody(body): JsonBody<DeviceChange>,
) -> JsonResult {
    devices::rename_device(&state, &parse_user(&user)?, &device, body.display_name).await?;
    Ok(Json(json!({})))
}

async fn delete_device(
    State(state): AppState,
    _: Admin,
    Params((user, device)): Params<(String, String)>,
) -> JsonResult {
    devices::delete_devices(&state, &parse_user(&user)?, &[device]).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct DeleteDevices {
    devices: Option<Vec<String>>,
}

async fn delete_devices(
    State(state): AppState,
    _: Admin,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<DeleteDevices>,
) -> JsonResult {
    let list = body.devices.ok_or_else(|| ApiError::missing_param("`devices` is required"))?;
    devices::delete_devices(&state, &parse_user(&user)?, &list).await?;
    Ok(Json(json!({})))
}
