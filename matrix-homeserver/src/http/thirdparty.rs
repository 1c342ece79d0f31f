//! Third-party networks: `/thirdparty/protocols`, `/thirdparty/protocol/{protocol}`,
//! `/thirdparty/location[/{protocol}]`, `/thirdparty/user[/{protocol}]`, answered from
//! `services::thirdparty` (the application services that list the protocol).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use super::{Auth, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;

type AppState = State<Arc<crate::State>>;
type Fields = BTreeMap<String, String>;

pub(super) fn routes() -> Routes {
    const T: &str = "/_matrix/client/v3/thirdparty";
    Router::new()
        .route(&format!("{T}/protocols"), route(get(protocols)))
        .route(&format!("{T}/protocol/{{protocol}}"), route(get(protocol)))
        .route(&format!("{T}/location/{{protocol}}"), route(get(locations)))
        .route(&format!("{T}/user/{{protocol}}"), route(get(users)))
        .route(&format!("{T}/location"), route(get(location_of_alias)))
        .route(&format!("{T}/user"), route(get(user_of_id)))
}

/// The most query fields a lookup passes on, and the longest of each.
const MAX_FIELDS: usize = 32;
const MAX_FIELD_BYTES: usize = 1024;

/// The client's lookup fields to pass on: its authentication parameters left out, bounded.
fn lookup_fields(mut fields: Fields) -> Result<Fields, ApiError> {
    for auth_param in ["access_token", "user_id", "device_id"] {
        fields.remove(auth_param);
    }
    if fields.len() > MAX_FIELDS {
        return Err(ApiError::list_too_long("fields", MAX_FIELDS));
    }
    if fields.iter().any(|(k, v)| k.len() + v.len() > MAX_FIELD_BYTES) {
        return Err(ApiError::invalid_param("a field is too long"));
    }
    Ok(fields)
}

async fn protocols(State(state): AppState, _auth: Auth) -> JsonResult {
    Ok(Json(json!(state.thirdparty.providers(&state.appservices).await)))
}

async fn protocol(
    State(state): AppState,
    _auth: Auth,
    Params(protocol): Params<String>,
) -> JsonResult {
    Ok(Json(state.thirdparty.protocol(&state.appservices, &protocol).await?))
}

async fn locations(
    State(state): AppState,
    _auth: Auth,
    Params(protocol): Params<String>,
    Query(fields): Query<Fields>,
) -> JsonResult {
    let fields = lookup_fields(fields)?;
    Ok(Json(Value::from(state.thirdparty.locations(&state.appservices, &protocol, &fields).await?)))
}

async fn users(
    State(state): AppState,
    _auth: Auth,
    Params(protocol): Params<String>,
    Query(fields): Query<Fields>,
) -> JsonResult {
    let fields = lookup_fields(fields)?;
    Ok(Json(Value::from(state.thirdparty.users(&state.appservices, &protocol, &fields).await?)))
}

#[derive(Debug, serde::Deserialize)]
struct AliasQuery {
    alias: Option<String>,
}

async fn location_of_alias(
    State(state): AppState,
    _auth: Auth,
    Query(query): Query<AliasQuery>,
) -> JsonResult {
    let alias = query.alias.ok_or_else(|| ApiError::missing_param("alias is required"))?;
    ruma::RoomAliasId::parse(&alias)
        .map_err(|e| ApiError::invalid_param(format!("not a room alias: {e}")))?;
    Ok(Json(Value::from(state.thirdparty.locations_of_alias(&state.appservices, &alias).await)))
}

#[derive(Debug, serde::Deserialize)]
struct UserIdQuery {
    userid: Option<String>,
}

async fn user_of_id(
    State(state): AppState,
    _auth: Auth,
    Query(query): Query<UserIdQuery>,
) -> JsonResult {
    let user = query.userid.ok_or_else(|| ApiError::missing_param("userid is required"))?;
    super::user_id(&user)?;
    Ok(Json(Value::from(state.thirdparty.users_of_id(&state.appservices, &user).await)))
}
