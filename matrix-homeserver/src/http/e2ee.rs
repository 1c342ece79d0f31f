//! Enough of end-to-end encryption for clients to start: device keys and one-time keys
//! (upload, query, claim, changes; other servers' users through their servers) and to-device
//! messages (other servers' users' through theirs). Stored before the 200,
//! each part bounded (see `LimitsConfig`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::ephemeral::{CrossSigningView, SigningKeysUpload};
use crate::services::federation::fan_out;
use crate::services::federation::remote_keys::{self, KeysRequest};
use crate::services::rate_limit::Action;
use matrix_core::{Object, Value as CoreValue};

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/keys/upload", route(post(upload)))
        .route("/_matrix/client/v3/keys/query", route(post(query)))
        .route("/_matrix/client/v3/keys/claim", route(post(claim)))
        .route("/_matrix/client/v3/keys/changes", route(get(changes)))
        .route("/_matrix/client/v3/keys/device_signing/upload", route(post(upload_signing_keys)))
        .route("/_matrix/client/v3/keys/signatures/upload", route(post(upload_signatures)))
        .route("/_matrix/client/v3/sendToDevice/{kind}/{txn}", route(put(send_to_device)))
}

#[derive(Debug, Deserialize, Default)]
struct UploadBody {
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: BTreeMap<String, Value>,
    #[serde(default)]
    fallback_keys: BTreeMap<String, Value>,
}

async fn upload(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<UploadBody>,
) -> JsonResult {
    let device_id = auth.device()?;
    if let Some(keys) = &body.device_keys
        && (keys["user_id"] != auth.user_id.as_str() || keys["device_id"] != device_id.as_str())
    {
        return Err(ApiError::invalid_param("the device keys are not of this device"));
    }
    // Only uploads count: an empty body just asks for the key counts.
    if body.device_keys.is_some()
        || !body.one_time_keys.is_empty()
        || !body.fallback_keys.is_empty()
    {
        auth.limit(&state.limiter, Action::KeyUpload)?;
    }
    // The servers sharing a room with the user hear of new device keys, queued with them.
    let announce = match &body.device_keys {
        Some(keys) => {
            let device = state.accounts.device(&auth.user_id, device_id.as_str()).await?;
            let change = fan_out::DeviceChange::Keys {
                device_id: device_id.to_string(),
                display_name: device.display_name,
                keys: keys.clone(),
            };
            fan_out::device_list(&state, auth.user_id.as_str(), &[change]).await?
        }
        None => Vec::new(),
    };
    let notify = announce.clone();
    let (counts, changed) = state
        .ephemeral
        .upload_keys(
            auth.user_id.as_str(),
            device_id.as_str(),
            body.device_keys,
            body.one_time_keys,
            body.fallback_keys,
            announce,
        )
        .await?;
    if changed {
        fan_out::notify(&state, &notify);
    }
    Ok(Json(json!({"one_time_key_counts": counts})))
}

#[derive(Debug, Deserialize, Default)]
struct QueryBody {
    #[serde(default)]
    device_keys: BTreeMap<String, Vec<String>>,
}

async fn query(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<QueryBody>,
) -> JsonResult {
    let max = state.config.limits.max_users_per_key_query;
    if body.device_keys.len() > max {
        return Err(ApiError::invalid_param(format!("a query may name at most {max} users")));
    }
    let mut device_keys = serde_json::Map::new();
    let mut signing = SigningSections::default();
    let mut remote: BTreeMap<String, Object> = BTreeMap::new();
    for (user, devices) in body.device_keys {
        match ruma::UserId::parse(&user) {
            Ok(id) if id.server_name().as_str() == state.rooms.server_name().as_str() => {
                let keys = state.ephemeral.device_keys(&user, &devices).await?;
                device_keys.insert(user.clone(), json!(keys));
                let view = state.ephemeral.cross_signing_view(Some(auth.user_id.as_str()), &user);
                signing.add(&user, view.await?);
            }
            Ok(id) => {
                let devices: Vec<CoreValue> = devices.into_iter().map(CoreValue::from).collect();
                remote.entry(id.server_name().to_string()).or_default().insert(user, devices);
            }
            Err(_) => return Err(ApiError::invalid_param(format!("{user:?} is not a user id"))),
        }
    }
    let mut answer = json!({"device_keys": device_keys, "failures": {},
                            "master_keys": signing.master, "self_signing_keys": signing.self_signing,
                            "user_signing_keys": signing.user_signing});
    if !remote.is_empty() {
        let mut answers = remote_keys::ask(&state, KeysRequest::Query, remote).await;
        // The requester's own signatures on other servers' users' master keys are kept
        // here (their servers never saw them).
        if let Some(masters) = answers.sections.get_mut("master_keys") {
            for (user, master) in masters.iter_mut() {
                let requester = auth.user_id.as_str();
                state.ephemeral.merge_own_signatures(requester, user, master).await?;
            }
        }
        for (section, by_user) in answers.sections {
            if matches!(
                section.as_str(),
                // Another user's user-signing key is never shown.
                "device_keys" | "master_keys" | "self_signing_keys"
            ) && let Some(ours) = answer
                .as_object_mut()
                .map(|a| a.entry(section).or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            {
                ours.extend(by_user);
            }
        }
        answer["failures"] = Value::Object(answers.failures);
    }
    Ok(Json(answer))
}

/// The cross-signing sections of a key query's answer, user by user.
#[derive(Debug, Default)]
pub(super) struct SigningSections {
    pub(super) master: serde_json::Map<String, Value>,
    pub(super) self_signing: serde_json::Map<String, Value>,
    pub(super) user_signing: serde_json::Map<String, Value>,
}

impl SigningSections {
    /// Adds the keys `user` has.
    pub(super) fn add(&mut self, user: &str, view: CrossSigningView) {
        let sections = [
            (&mut self.master, view.master),
            (&mut self.self_signing, view.self_signing),
            (&mut self.user_signing, view.user_signing),
        ];
        for (section, key) in sections {
            if let Some(key) = key {
                section.insert(user.to_owned(), key);
            }
        }
    }
}

/// `POST /keys/device_signing/upload`: the user's cross-signing keys, checked (see
/// `services/ephemeral/cross_signing.rs`). The user-interactive auth is asked for unless no
/// master key is stored or the upload holds no new key (the spec's rule).
async fn upload_signing_keys(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    let key = |name: &str| -> Result<Option<Value>, ApiError> {
        match &body[name] {
            Value::Null => Ok(None),
            key @ Value::Object(_) => Ok(Some(key.clone())),
            _ => Err(ApiError::bad_json(format!("{name} must be an object"))),
        }
    };
    let upload = SigningKeysUpload {
        master: key("master_key")?,
        self_signing: key("self_signing_key")?,
        user_signing: key("user_signing_key")?,
    };
    auth.limit(&state.limiter, Action::KeyUpload)?;
    let user = auth.user_id.as_str();
    let authenticate = state.ephemeral.signing_keys_need_auth(user, &upload).await?;
    // A service managing its users' devices (MSC4190, spec v1.17) is not asked.
    if authenticate && !super::user::manages_devices(&auth) {
        super::user::password_stage(&state, &auth, &body).await?;
    }
    state.ephemeral.upload_signing_keys(user, &upload, authenticate).await?;
    Ok(Json(json!({})))
}

/// `POST /keys/signatures/upload`: signatures on the user's own keys and on other users'
/// master keys; those that do not verify are answered in `failures`.
async fn upload_signatures(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<BTreeMap<String, BTreeMap<String, Value>>>,
) -> JsonResult {
    auth.limit(&state.limiter, Action::KeyUpload)?;
    let ours = state.rooms.server_name().as_str();
    let failures = state.ephemeral.upload_signatures(auth.user_id.as_str(), ours, body).await?;
    Ok(Json(json!({"failures": failures})))
}

#[derive(Debug, Deserialize, Default)]
struct ClaimBody {
    #[serde(default)]
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

async fn claim(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<ClaimBody>,
) -> JsonResult {
    // Claiming uses keys up: limited like uploads, and bounded like queries, so that one
    // client cannot drain every device's one-time keys in a loop.
    auth.limit(&state.limiter, Action::KeyUpload)?;
    let max = state.config.limits.max_users_per_key_query;
    if body.one_time_keys.values().map(BTreeMap::len).sum::<usize>() > max {
        return Err(ApiError::invalid_param(format!("at most {max} devices per claim")));
    }
    let mut remote: BTreeMap<String, Object> = BTreeMap::new();
    let mut local = BTreeMap::new();
    let ours = state.rooms.server_name().as_str();
    for (user, devices) in body.one_time_keys {
        if let Some((_, server)) = user.split_once(':')
            && server != ours
        {
            let mut by_device = Object::new();
            for (device, algorithm) in devices {
                by_device.insert(device, algorithm);
            }
            remote.entry(server.to_owned()).or_default().insert(user, by_device);
            continue;
        }
        local.insert(user, devices);
    }
    let mut claimed = state.ephemeral.claim_keys(local).await?;
    let mut failures = serde_json::Map::new();
    if !remote.is_empty() {
        let mut answers = remote_keys::ask(&state, KeysRequest::Claim, remote).await;
        if let Some(by_user) = answers.sections.remove("one_time_keys") {
            claimed.extend(by_user);
        }
        failures = answers.failures;
    }
    Ok(Json(json!({"one_time_keys": claimed, "failures": failures})))
}

#[derive(Debug, Deserialize, Default)]
struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn changes(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<ChangesQuery>,
) -> JsonResult {
    let token = |text: Option<&str>| text.and_then(crate::services::sync::Token::parse);
    let since = token(query.from.as_deref())
        .ok_or_else(|| ApiError::invalid_param("from must be a sync token"))?;
    let upto = match query.to.as_deref() {
        Some(to) => {
            token(Some(to))
                .ok_or_else(|| ApiError::invalid_param("to must be a sync token"))?
                .stream
        }
        None => state.rooms.stream_position().await?,
    };
    let user = auth.user_id.as_str();
    let changed = state.ephemeral.device_lists_changed(user, since.stream, upto).await?;
    let left = state.ephemeral.device_lists_left(user, since.stream, upto).await?;
    Ok(Json(json!({"changed": changed, "left": left})))
}

#[derive(Debug, Deserialize)]
struct ToDeviceBody {
    messages: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Queues to-device messages for existing devices of existing local users only: a message
/// for an unknown device is dropped (as the spec says), and `*` means the devices the user
/// has now. Past a queue's bounds: 429. A transaction id seen recently from this device is
/// answered 200 without sending again.
async fn send_to_device(
    State(state): AppState,
    auth: Auth,
    Params((kind, txn)): Params<(String, String)>,
    JsonBody(body): JsonBody<ToDeviceBody>,
) -> JsonResult {
    auth.limit(&state.limiter, Action::ToDevice)?;
    // One device list is read per user named: as many as one key query may name.
    let max = state.config.limits.max_users_per_key_query;
    if body.messages.len() > max {
        return Err(ApiError::invalid_param(format!("at most {max} users per request")));
    }
    let mut deliveries = Vec::new();
    let mut remote = BTreeMap::new();
    for (user, devices) in body.messages {
        let Ok(id) = ruma::UserId::parse(&user) else { continue };
        if id.server_name().as_str() != state.rooms.server_name().as_str() {
            remote.insert(user, devices);
            continue;
        }
        // A user who does not exist (or is deactivated) has no devices.
        let existing: BTreeSet<String> =
            state.accounts.devices(&id).await?.into_iter().map(|d| d.device_id).collect();
        for (device, content) in devices {
            if device == "*" {
                for known in &existing {
                    deliveries.push((user.clone(), known.clone(), content.clone()));
                }
            } else if existing.contains(&device) {
                deliveries.push((user.clone(), device, content));
            }
        }
    }
    let sender = (auth.user_id.as_str(), auth.scope());
    // Other servers' users get theirs through their server: one EDU per server, queued
    // with the send (and its transaction id).
    let enqueue = fan_out::to_device(&state, sender.0, &kind, remote);
    let notify = enqueue.clone();
    state.ephemeral.send_to_device(sender, &txn, &kind, deliveries, enqueue).await?;
    fan_out::notify(&state, &notify);
    Ok(Json(json!({})))
}
