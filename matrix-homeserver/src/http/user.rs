//! A user's own things: account data, tags, profile, filters, devices, password and
//! deactivation (the last three behind the user-interactive password stage).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Auth, ClientAddress, JsonBody, JsonResult, Params, RawBody, Routes, room_id, route, user_id,
};
use crate::error::ApiError;
use crate::services::rate_limit::Action;
use matrix_storage::Profile;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    const U: &str = "/_matrix/client/v3/user/{user}";
    Router::new()
        .route(&format!("{U}/account_data/{{kind}}"), route(get(global_data).put(set_global_data)))
        .route(
            &format!("{U}/rooms/{{room}}/account_data/{{kind}}"),
            route(get(room_data).put(set_room_data)),
        )
        .route(&format!("{U}/rooms/{{room}}/tags"), route(get(tags)))
        .route(&format!("{U}/rooms/{{room}}/tags/{{tag}}"), route(put(set_tag).delete(delete_tag)))
        .route(&format!("{U}/filter"), route(post(create_filter)))
        .route(&format!("{U}/filter/{{id}}"), route(get(get_filter)))
        .route("/_matrix/client/v3/profile/{user}", route(get(profile)))
        .route("/_matrix/client/v1/mutual_rooms", route(get(mutual_rooms)))
        .route(
            "/_matrix/client/v3/profile/{user}/{field}",
            route(get(profile_field).put(set_profile_field).delete(delete_profile_field)),
        )
        .route("/_matrix/client/v3/devices", route(get(devices)))
        .route(
            "/_matrix/client/v3/devices/{device}",
            route(get(device).put(rename_device).delete(delete_device)),
        )
        .route("/_matrix/client/v3/delete_devices", route(post(delete_devices)))
        .route("/_matrix/client/v3/account/password", route(post(change_password)))
        .route("/_matrix/client/v3/account/deactivate", route(post(deactivate)))
}

fn own(auth: &Auth, user: &str) -> Result<(), ApiError> {
    if user == auth.user_id.as_str() {
        Ok(())
    } else {
        Err(ApiError::forbidden("this is another user's"))
    }
}

/// A JSON object body, kept as bytes.
fn json_object(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(_)) => Ok(body.to_vec()),
        Ok(_) => Err(ApiError::bad_json("the content must be a JSON object")),
        Err(e) if e.is_syntax() || e.is_eof() => Err(ApiError::not_json()),
        Err(e) => Err(ApiError::bad_json(e.to_string())),
    }
}

async fn read_data(
    state: &crate::State,
    auth: &Auth,
    user: &str,
    room: Option<&str>,
    kind: &str,
) -> JsonResult {
    own(auth, user)?;
    let bytes = state
        .rooms
        .storage()
        .account_data(user, room, kind)
        .await?
        .ok_or_else(|| ApiError::not_found("no such account data"))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::unknown("stored account data does not parse"))?;
    Ok(Json(value))
}

async fn global_data(
    State(state): AppState,
    auth: Auth,
    Params((user, kind)): Params<(String, String)>,
) -> JsonResult {
    read_data(&state, &auth, &user, None, &kind).await
}

async fn set_global_data(
    State(state): AppState,
    auth: Auth,
    Params((user, kind)): Params<(String, String)>,
    RawBody(body): RawBody,
) -> JsonResult {
    own(&auth, &user)?;
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(ApiError::server_managed_data(&kind));
    }
    auth.limit(&state.limiter, Action::AccountData)?;
    state.user_data_put(&auth.user_id, None, &kind, json_object(&body)?).await?;
    Ok(Json(json!({})))
}

async fn room_data(
    State(state): AppState,
    auth: Auth,
    Params((user, room, kind)): Params<(String, String, String)>,
) -> JsonResult {
    let room = room_id(&room)?;
    read_data(&state, &auth, &user, Some(room.as_str()), &kind).await
}

async fn set_room_data(
    State(state): AppState,
    auth: Auth,
    Params((user, room, kind)): Params<(String, String, String)>,
    RawBody(body): RawBody,
) -> JsonResult {
    own(&auth, &user)?;
    let room = room_id(&room)?;
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(ApiError::server_managed_data(&kind));
    }
    auth.limit(&state.limiter, Action::AccountData)?;
    state.user_data_put(&auth.user_id, Some(room.as_str()), &kind, json_object(&body)?).await?;
    Ok(Json(json!({})))
}

async fn current_tags(
    state: &crate::State,
    user: &ruma::UserId,
    room: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = state.rooms.storage().account_data(user.as_str(), Some(room), "m.tag").await?;
    let value: Value =
        bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| json!({}));
    Ok(value["tags"].as_object().cloned().unwrap_or_default())
}

async fn tags(
    State(state): AppState,
    auth: Auth,
    Params((user, room)): Params<(String, String)>,
) -> JsonResult {
    own(&auth, &user)?;
    let room = room_id(&room)?;
    Ok(Json(json!({"tags": current_tags(&state, &auth.user_id, room.as_str()).await?})))
}

async fn write_tags(
    state: &crate::State,
    auth: &Auth,
    room: &str,
    tags: serde_json::Map<String, Value>,
) -> JsonResult {
    let content = serde_json::to_vec(&json!({"tags": tags})).unwrap_or_default();
    state.user_data_put(&auth.user_id, Some(room), "m.tag", content).await?;
    Ok(Json(json!({})))
}

async fn set_tag(
    State(state): AppState,
    auth: Auth,
    Params((user, room, tag)): Params<(String, String, String)>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> JsonResult {
    own(&auth, &user)?;
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::AccountData)?;
    let mut tags = current_tags(&state, &auth.user_id, room.as_str()).await?;
    tags.insert(tag, Value::Object(body));
    write_tags(&state, &auth, room.as_str(), tags).await
}

async fn delete_tag(
    State(state): AppState,
    auth: Auth,
    Params((user, room, tag)): Params<(String, String, String)>,
) -> JsonResult {
    own(&auth, &user)?;
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::AccountData)?;
    let mut tags = current_tags(&state, &auth.user_id, room.as_str()).await?;
    tags.remove(&tag);
    write_tags(&state, &auth, room.as_str(), tags).await
}

/// Filters are content-addressed: the id is the filter's JSON, base64url, so it needs no
/// storage and survives restarts.
async fn create_filter(
    State(state): AppState,
    auth: Auth,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> JsonResult {
    own(&auth, &user)?;
    let body = Value::Object(body);
    check_filter(&state.config.limits, &body)?;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Ok(Json(json!({"filter_id": format!("f{}", matrix_core::b64::encode_url_safe(bytes))})))
}

/// The filter lists that events are matched against, one by one.
const FILTER_LISTS: &[&str] =
    &["types", "not_types", "senders", "not_senders", "rooms", "not_rooms"];

/// Checks a filter against the bounds (`max_filter_bytes` in all, `max_filter_list_len` per
/// list, wherever the list is nested): each entry of a list is compared with every event a
/// request reads, so an unbounded list makes one request as costly as the client likes.
pub(crate) fn check_filter(
    limits: &crate::config::LimitsConfig,
    filter: &Value,
) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(filter).map(|b| b.len()).unwrap_or(usize::MAX);
    if bytes > limits.max_filter_bytes {
        return Err(ApiError::list_too_long(
            "the filter's JSON (in bytes)",
            limits.max_filter_bytes,
        ));
    }
    fn walk(value: &Value, max: usize) -> Result<(), ApiError> {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if let Value::Array(list) = value
                        && FILTER_LISTS.contains(&key.as_str())
                        && list.len() > max
                    {
                        return Err(ApiError::list_too_long(
                            &format!("the filter list {key}"),
                            max,
                        ));
                    }
                    walk(value, max)?;
                }
                Ok(())
            }
            Value::Array(list) => list.iter().try_for_each(|v| walk(v, max)),
            _ => Ok(()),
        }
    }
    walk(filter, limits.max_filter_list_len)
}

/// The filter JSON of a filter id.
pub(crate) fn decode_filter(id: &str) -> Option<Value> {
    let encoded = id.strip_prefix('f')?;
    let bytes = base64_url_decode(encoded)?;
    serde_json::from_slice(&bytes).ok()
}

fn base64_url_decode(text: &str) -> Option<Vec<u8>> {
    let standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    matrix_core::b64::decode(&standard).ok()
}

async fn get_filter(auth: Auth, Params((user, id)): Params<(String, String)>) -> JsonResult {
    own(&auth, &user)?;
    decode_filter(&id).map(Json).ok_or_else(|| ApiError::not_found("no such filter"))
}

pub(crate) async fn stored_profile(state: &crate::State, user: &str) -> Result<Profile, ApiError> {
    let user = user_id(user)?;
    if user.server_name().as_str() != state.rooms.server_name().as_str() {
        return Err(ApiError::not_found("no such user"));
    }
    // An unknown user of a service's namespace: the service may create it when asked.
    if state.rooms.storage().user(user.as_str()).await?.is_none()
        && (!state.appservices.query_user(user.as_str()).await
            || state.rooms.storage().user(user.as_str()).await?.is_none())
    {
        return Err(ApiError::not_found("no such user"));
    }
    Ok(state.rooms.storage().profile(user.as_str()).await?.unwrap_or_default())
}

async fn profile(
    State(state): AppState,
    ClientAddress(address): ClientAddress,
    Params(user): Params<String>,
) -> JsonResult {
    // It tells whether an account exists: enumeration is rate limited.
    state.limiter.check(Action::Lookup, &address)?;
    let profile = stored_profile(&state, &user).await?;
    let mut body = serde_json::Map::new();
    if let Some(name) = profile.displayname {
        body.insert("displayname".to_owned(), Value::String(name));
    }
    if let Some(url) = profile.avatar_url {
        body.insert("avatar_url".to_owned(), Value::String(url));
    }
    Ok(Json(Value::Object(body)))
}

async fn profile_field(
    State(state): AppState,
    ClientAddress(address): ClientAddress,
    Params((user, field)): Params<(String, String)>,
) -> JsonResult {
    state.limiter.check(Action::Lookup, &address)?;
    let profile = stored_profile(&state, &user).await?;
    let value = match field.as_str() {
        "displayname" => profile.displayname,
        "avatar_url" => profile.avatar_url,
        _ => return Err(ApiError::not_found("no such profile field")),
    };
    match value {
        Some(value) => Ok(Json(json!({ field: value }))),
        None => Err(ApiError::not_found("the field is not set")),
    }
}

async fn set_profile_field(
    State(state): AppState,
    auth: Auth,
    Params((user, field)): Params<(String, String)>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> JsonResult {
    let value = match body.get(&field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return Err(ApiError::bad_json(format!("{field} must be a string"))),
    };
    change_profile_field(&state, &auth, &user, &field, value).await
}

#[derive(Debug, Deserialize)]
struct MutualRoomsQuery {
    user_id: Option<String>,
    from: Option<String>,
}

/// Rooms of one `mutual_rooms` page.
const MUTUAL_ROOMS_PAGE: usize = 100;

/// `GET /_matrix/client/v1/mutual_rooms` (v1.19): the rooms both the requester and `user_id`
/// are joined to, by room id, a page at a time (`next_batch`: the last room id of the page).
/// A user we know nothing of shares no room; the requester's own id, an id that does not
/// conform, or a token that is no room id are `M_INVALID_PARAM`.
async fn mutual_rooms(
    State(state): AppState,
    auth: Auth,
    super::Query(query): super::Query<MutualRoomsQuery>,
) -> JsonResult {
    let other = query.user_id.ok_or_else(|| ApiError::missing_param("`user_id` is required"))?;
    let other = ruma::UserId::parse(other.as_str())
        .ok()
        .filter(|user| user.validate_strict().is_ok())
        .ok_or_else(|| ApiError::invalid_param("`user_id` is not a valid user id"))?;
    if other == auth.user_id {
        return Err(ApiError::invalid_param("`user_id` is your own"));
    }
    if let Some(from) = &query.from
        && ruma::RoomId::parse(from.as_str()).is_err()
    {
        return Err(ApiError::invalid_param("`from` is not a token of this endpoint"));
    }
    auth.limit(&state.limiter, Action::Lookup)?;
    let storage = state.rooms.storage();
    let joined = |rooms: Vec<(String, String)>| -> std::collections::BTreeSet<String> {
        rooms.into_iter().filter(|(_, m)| m == "join").map(|(room, _)| room).collect()
    };
    let mine = joined(storage.rooms_of_user(auth.user_id.as_str()).await?);
    let theirs = joined(storage.rooms_of_user(other.as_str()).await?);
    let shared: Vec<&String> = mine.intersection(&theirs).collect();
    let after = query.from.as_deref().unwrap_or("");
    let page: Vec<&String> = shared
        .iter()
        .copied()
        .filter(|room| room.as_str() > after)
        .take(MUTUAL_ROOMS_PAGE)
        .collect();
    let mut body = json!({"joined": page, "count": shared.len()});
    if let Some(last) = page.last()
        && shared.last().is_some_and(|end| end != last)
    {
        body["next_batch"] = json!(last);
    }
    Ok(Json(body))
}

/// `DELETE /profile/{userId}/{keyName}` (v1.16): unsets the field.
async fn delete_profile_field(
    State(state): AppState,
    auth: Auth,
    Params((user, field)): Params<(String, String)>,
) -> JsonResult {
    change_profile_field(&state, &auth, &user, &field, None).await
}

/// Sets or unsets one of the user's own profile fields: `displayname` and `avatar_url`, the
/// only ones kept (the `m.profile_fields` capability says so); any other is refused.
async fn change_profile_field(
    state: &crate::State,
    auth: &Auth,
    user: &str,
    field: &str,
    value: Option<String>,
) -> JsonResult {
    own(auth, user)?;
    auth.not_suspended()?;
    // Bounded as Synapse bounds them: the value is copied into a member event per joined
    // room, and a long one would make every later join of the user too large.
    let limits = &state.config.limits;
    let max = match field {
        "displayname" => limits.max_displayname_chars,
        "avatar_url" => limits.max_avatar_url_chars,
        _ => return Err(ApiError::forbidden("this profile field cannot be set here")),
    };
    if value.as_ref().is_some_and(|v| v.chars().count() > max) {
        return Err(ApiError::profile_too_large(field, max));
    }
    let mut profile = stored_profile(state, user).await?;
    // Each change fans out to every joined room.
    auth.limit(&state.limiter, Action::Profile)?;
    match field {
        "displayname" => profile.displayname = value,
        _ => profile.avatar_url = value,
    }
    let mut changes = matrix_storage::ChangeSet::new();
    changes.directory_users.push(matrix_storage::DirectoryUser {
        user_id: auth.user_id.to_string(),
        displayname: profile.displayname.clone(),
        avatar_url: profile.avatar_url.clone(),
    });
    changes.profiles.push((auth.user_id.to_string(), profile));
    state.rooms.storage().apply(changes).await?;
    if auth.shadow_banned() {
        // As Synapse: the profile changes, the rooms are not told.
        return Ok(Json(json!({})));
    }
    // The member events of the rooms the user is in carry the profile.
    for (room, membership) in state.rooms.storage().rooms_of_user(auth.user_id.as_str()).await? {
        if membership == "join" {
            let draft = state.rooms.member_draft(&auth.user_id, "join", None).await?;
            if let Err(e) = state.rooms.append(&room, &auth.user_id, draft).await {
                tracing::warn!("updating the profile in {room}: {e}");
            }
        }
    }
    Ok(Json(json!({})))
}

fn device_json(device: &matrix_storage::Device) -> Value {
    let mut out = json!({"device_id": device.device_id});
    if let Some(name) = &device.display_name {
        out["display_name"] = json!(name);
    }
    out
}

async fn devices(State(state): AppState, auth: Auth) -> JsonResult {
    let devices: Vec<Value> =
        state.accounts.devices(&auth.user_id).await?.iter().map(device_json).collect();
    Ok(Json(json!({"devices": devices})))
}

async fn device(State(state): AppState, auth: Auth, Params(device): Params<String>) -> JsonResult {
    Ok(Json(device_json(&state.accounts.device(&auth.user_id, &device).await?)))
}

#[derive(Debug, Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

async fn rename_device(
    State(state): AppState,
    auth: Auth,
    Params(device): Params<String>,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    auth.limit(&state.limiter, Action::AccountData)?;
    // A service that manages its users' devices (MSC4190) creates them this way.
    if manages_devices(&auth) {
        let created = state.accounts.add_device(&auth.user_id, &device, body.display_name).await?;
        let status =
            if created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
        return Ok((status, Json(json!({}))).into_response());
    }
    state.accounts.rename_device(&auth.user_id, &device, body.display_name).await?;
    Ok(Json(json!({})).into_response())
}

/// Whether the request is an application service's that manages its users' devices itself
/// (MSC4190): it creates and deletes them without user-interactive auth.
pub(super) fn manages_devices(auth: &Auth) -> bool {
    auth.appservice.as_ref().is_some_and(|service| service.registration.msc4190)
}

/// The user-interactive auth's password stage, for the request's own user.
pub(super) async fn password_stage(
    state: &crate::State,
    auth: &Auth,
    body: &Value,
) -> Result<(), ApiError> {
    let flows = || {
        let mut session = [0u8; 16];
        let _ = getrandom::fill(&mut session);
        ApiError::auth_required(json!({
            "flows": [{"stages": ["m.login.password"]}],
            "params": {},
            "session": matrix_core::b64::encode_url_safe(session),
        }))
    };
    let given = &body["auth"];
    if given.is_null() {
        return Err(flows());
    }
    if given["type"] != "m.login.password" {
        return Err(flows());
    }
    let named = given["identifier"]["user"].as_str().or_else(|| given["user"].as_str());
    if let Some(named) = named {
        let full = if named.starts_with('@') {
            named.to_owned()
        } else {
            format!("@{named}:{}", state.rooms.server_name())
        };
        if full != auth.user_id.as_str() {
            return Err(ApiError::forbidden("the authentication is for another user"));
        }
    }
    let password =
        given["password"].as_str().ok_or_else(|| ApiError::bad_json("no password given"))?;
    super::account::check_password_length(state, password)?;
    // A stolen access token must not become a way to brute-force the password.
    auth.limit(&state.limiter, Action::UiaPassword)?;
    if state.accounts.check_password(&auth.user_id, password.to_owned()).await? {
        return Ok(());
    }
    Err(super::account::stage_failed(
        "m.login.password",
        given["session"].as_str(),
        "wrong password",
    ))
}

async fn delete_device(
    State(state): AppState,
    auth: Auth,
    Params(device): Params<String>,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    state.accounts.device(&auth.user_id, &device).await?;
    if !manages_devices(&auth) {
        password_stage(&state, &auth, &body).await?;
    }
    state.accounts.delete_devices(&auth.user_id, std::slice::from_ref(&device)).await?;
    Ok(Json(json!({})))
}

async fn delete_devices(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    let devices: Vec<String> = body["devices"]
        .as_array()
        .ok_or_else(|| ApiError::bad_json("devices must be a list"))?
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    if !manages_devices(&auth) {
        password_stage(&state, &auth, &body).await?;
    }
    state.accounts.delete_devices(&auth.user_id, &devices).await?;
    Ok(Json(json!({})))
}

async fn change_password(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    let new = body["new_password"]
        .as_str()
        .ok_or_else(|| ApiError::bad_json("new_password is required"))?
        .to_owned();
    super::account::check_password_length(&state, &new)?;
    password_stage(&state, &auth, &body).await?;
    let logout = body["logout_devices"].as_bool().unwrap_or(true);
    state
        .accounts
        .set_password(&auth.user_id, new, auth.device_id.as_deref().map(|d| d.as_str()), logout)
        .await?;
    Ok(Json(json!({})))
}

async fn deactivate(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<Value>,
) -> JsonResult {
    password_stage(&state, &auth, &body).await?;
    for (room, membership) in state.rooms.storage().rooms_of_user(auth.user_id.as_str()).await? {
        if matches!(membership.as_str(), "join" | "invite" | "knock")
            && let Err(e) = state.rooms.leave(&room, &auth.user_id, None).await
        {
            tracing::warn!("leaving {room} on deactivation: {e}");
        }
    }
    state.accounts.deactivate(&auth.user_id).await?;
    // `erase` (v1.10): the user's events are served redacted from now on.
    if body.get("erase").and_then(Value::as_bool) == Some(true) {
        state.rooms.erase(auth.user_id.as_str()).await?;
    }
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}
