//! `GET /_matrix/federation/v1/openid/userinfo`: who an OpenID token of ours belongs to.
//! Asked by third parties (integration managers), not servers: the token is the
//! authentication, there is no X-Matrix signature.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::Query;
use crate::services::openid;

#[derive(Debug, Deserialize)]
pub(super) struct UserInfoQuery {
    access_token: Option<String>,
}

pub(super) async fn userinfo(
    State(state): State<Arc<crate::State>>,
    Query(query): Query<UserInfoQuery>,
) -> Result<Json<Value>, ApiError> {
    let token = query
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::missing_param("access_token is required"))?;
    let user = openid::owner(state.rooms.storage(), &token).await?;
    Ok(Json(json!({"sub": user})))
}
