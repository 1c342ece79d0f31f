//! Discovery: `/versions`, `/.well-known/matrix/*`, `/capabilities`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::RoomVersionId;
use ruma::api::client::discovery::{get_capabilities, get_supported_versions};
use serde_json::{Value, json};

use super::{Auth, JsonResult, Ruma};
use crate::error::ApiError;

/// The spec versions advertised. Clients read these to decide what to call (js-sdk turns on
/// stable threads and the thread list when it sees v1.4, for instance), so a version listed
/// must have its endpoints here.
///
/// v1.1 to v1.17: what clients switch on from these versions is served (v1.2
/// `/hierarchy`, v1.3 `/relations` with bundled aggregations, v1.4 `/threads`, thread-aware
/// receipts and unread counts, v1.6 `timestamp_to_event`, v1.7 asynchronous uploads and the
/// application service ping, v1.10 `/.well-known/matrix/support`, `erase` on deactivation and
/// `Retry-After`, v1.11 authenticated media, v1.13 and v1.14 reports, v1.15 room summaries,
/// v1.16 `use_state_after`, room version 12 and profile-field deletion, v1.17 application
/// services managing their users' devices). What these versions define and is not here is
/// listed, with the reason, in `docs/cs-api-coverage.md`: the deprecated polling `/events` and
/// `/initialSync`, peeking, `admin/whois`, SSO redirects (no SSO login type is offered),
/// invites by third-party identifier (no identity server), login tokens and custom profile
/// fields (refused through their capabilities), OAuth 2.0 (`auth_metadata` answers
/// `M_UNRECOGNIZED`, the spec's way to say so). v1.18 waits for the account moderation
/// endpoints and invite blocking (v1.19's `mutual_rooms` is served already). The r0.x
/// versions are not listed: their `/r0/` paths are not routed (only `/r0/login` is).
const VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17",
];

/// The unstable features (MSCs) advertised: only those whose endpoints are all here
/// (MSC3814, dehydrated devices: `http/dehydrated.rs`; MSC4140, delayed events:
/// `http/delayed_events.rs`; MSC4186, simplified sliding sync: `http/sync.rs`).
const UNSTABLE_FEATURES: &[&str] =
    &["org.matrix.msc3814", "org.matrix.msc4140", "org.matrix.simplified_msc3575"];

pub(super) async fn versions(Ruma(_): Ruma<get_supported_versions::Request>) -> JsonResult {
    let features: serde_json::Map<String, Value> =
        UNSTABLE_FEATURES.iter().map(|f| ((*f).to_owned(), Value::Bool(true))).collect();
    Ok(Json(json!({"versions": VERSIONS, "unstable_features": features})))
}

pub(super) async fn well_known_client(
    State(state): State<Arc<crate::State>>,
) -> Result<Json<Value>, ApiError> {
    match &state.config.well_known.client_base_url {
        Some(url) => Ok(Json(json!({"m.homeserver": {"base_url": url}}))),
        None => Err(ApiError::not_found("no client discovery is configured")),
    }
}

/// `GET /.well-known/matrix/support`: the configured contacts and page (404 when neither).
pub(super) async fn well_known_support(
    State(state): State<Arc<crate::State>>,
) -> Result<Json<Value>, ApiError> {
    let config = &state.config.well_known;
    if config.support_contacts.is_empty() && config.support_page.is_none() {
        return Err(ApiError::not_found("no support contacts are configured"));
    }
    let mut body = json!({});
    if !config.support_contacts.is_empty() {
        body["contacts"] = json!(config.support_contacts);
    }
    if let Some(page) = &config.support_page {
        body["support_page"] = json!(page);
    }
    Ok(Json(body))
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
    State(state): State<Arc<crate::State>>,
    _auth: Auth,
    Ruma(_): Ruma<get_capabilities::v3::Request>,
) -> JsonResult {
    use get_capabilities::v3::{Capabilities, RoomVersionStability, RoomVersionsCapability};
    let available: BTreeMap<RoomVersionId, RoomVersionStability> =
        matrix_core::RoomVersionRules::ALL
            .iter()
            .filter_map(|rules| RoomVersionId::try_from(rules.id).ok())
            .map(|id| (id, RoomVersionStability::Stable))
            .collect();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(RoomVersionId::V12, available);
    let mut capabilities = serde_json::to_value(capabilities)
        .map_err(|e| ApiError::unknown(format!("the capabilities did not serialise: {e}")))?;
    // `POST /account/password` is served. Said explicitly (ruma leaves the default out, and
    // some clients read a missing capability as "no").
    capabilities["m.change_password"] = json!({"enabled": true});
    // No third-party identifiers can be validated here, no login tokens are handed out, and
    // of the profile fields only the two every client knows are kept (v1.16).
    capabilities["m.3pid_changes"] = json!({"enabled": false});
    capabilities["m.get_login_token"] = json!({"enabled": false});
    capabilities["m.profile_fields"] =
        json!({"enabled": true, "allowed": ["displayname", "avatar_url"]});
    // Delayed events (MSC4140): their bounds, under the MSC's unstable name.
    let delayed = state.delayed_events.config();
    if delayed.enabled() {
        capabilities["org.matrix.msc4140.delayed_events"] = json!({
            "max_delay_ms": delayed.max_delay_ms,
            "max_scheduled": delayed.max_per_user,
        });
    }
    Ok(Json(json!({"capabilities": capabilities})))
}
