//! Discovery: `/versions`, `/.well-known/matrix/*`, `/capabilities`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::RoomVersionId;
use ruma::api::client::discovery::{get_capabilities, get_supported_versions};
use serde_json::{Value, json};

use super::{ApiResult, Auth, Ruma, RumaResponse};
use crate::error::ApiError;

/// The spec versions advertised. Clients read these to decide what to call; each one added
/// must have its endpoints here.
const VERSIONS: &[&str] = &["v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6"];

pub(super) async fn versions(
    Ruma(_): Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let versions = VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    Ok(RumaResponse(get_supported_versions::Response::new(versions)))
}

pub(super) async fn well_known_client(
    State(state): State<Arc<crate::State>>,
) -> Result<Json<Value>, ApiError> {
    match &state.config.well_known.client_base_url {
        Some(url) => Ok(Json(json!({"m.homeserver": {"base_url": url}}))),
        None => Err(ApiError::not_found("no client discovery is configured")),
    }
}

pub(super) async fn well_known_server(
    State(state): State<Arc<crate::State>>,
) -> Result<Json<Value>, ApiError> {
    match &state.config.well_known.server {
        Some(server) => Ok(Json(json!({"m.server": server}))),
        None => Err(ApiError::not_found("no server discovery is configured")),
    }
}

pub(super) async fn capabilities(
    _auth: Auth,
    Ruma(_): Ruma<get_capabilities::v3::Request>,
) -> ApiResult<get_capabilities::v3::Response> {
    use get_capabilities::v3::{
        Capabilities, ChangePasswordCapability, RoomVersionStability, RoomVersionsCapability,
    };
    let available: BTreeMap<RoomVersionId, RoomVersionStability> =
        matrix_core::RoomVersionRules::ALL
            .iter()
            .filter_map(|rules| RoomVersionId::try_from(rules.id).ok())
            .map(|id| (id, RoomVersionStability::Stable))
            .collect();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(RoomVersionId::V12, available);
    // Password changes are not served yet.
    capabilities.change_password = ChangePasswordCapability::new(false);
    Ok(RumaResponse(get_capabilities::v3::Response::new(capabilities)))
}
