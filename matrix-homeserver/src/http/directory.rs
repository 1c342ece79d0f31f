//! Room aliases, room directory visibility and the local `publicRooms` list.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, room_id, route};
use crate::error::ApiError;
use crate::services::rate_limit::Action;
use crate::services::rooms::directory::Network;

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    Router::new()
        .route(
            "/_matrix/client/v3/directory/room/{alias}",
            route(get(resolve_alias).put(create_alias).delete(delete_alias)),
        )
        .route("/_matrix/client/v3/rooms/{room}/aliases", route(get(room_aliases)))
        .route(
            "/_matrix/client/v3/directory/list/room/{room}",
            route(get(visibility).put(set_visibility)),
        )
        .route(
            "/_matrix/client/v3/directory/list/appservice/{network}/{room}",
            route(put(set_appservice_listed).delete(unset_appservice_listed)),
        )
        .route("/_matrix/client/v3/user_directory/search", route(post(search_users)))
        .route(
            "/_matrix/client/v3/publicRooms",
            route(get(public_rooms_get).post(public_rooms_post)),
        )
}

async fn resolve_alias(State(state): AppState, Params(alias): Params<String>) -> JsonResult {
    let (room_id, servers) = state.rooms.resolve_any_alias(&state, &alias).await?;
    Ok(Json(json!({"room_id": room_id, "servers": servers})))
}

#[derive(Debug, Deserialize)]
struct AliasBody {
    room_id: String,
}

async fn create_alias(
    State(state): AppState,
    auth: Auth,
    Params(alias): Params<String>,
    JsonBody(body): JsonBody<AliasBody>,
) -> JsonResult {
    let room = room_id(&body.room_id)?;
    auth.limit(&state.limiter, Action::State)?;
    state.appservices.check_alias_creation(&alias, auth.appservice.as_deref())?;
    state.rooms.create_alias(&alias, room.as_str(), &auth.user_id).await?;
    Ok(Json(json!({})))
}

async fn is_admin(state: &crate::State, user: &ruma::UserId) -> Result<bool, ApiError> {
    Ok(state.rooms.storage().user(user.as_str()).await?.is_some_and(|u| u.admin))
}

async fn delete_alias(
    State(state): AppState,
    auth: Auth,
    Params(alias): Params<String>,
) -> JsonResult {
    auth.limit(&state.limiter, Action::State)?;
    let admin = is_admin(&state, &auth.user_id).await?;
    state.rooms.delete_alias(&alias, &auth.user_id, admin).await?;
    Ok(Json(json!({})))
}

async fn room_aliases(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
) -> JsonResult {
    let room = room_id(&room)?;
    // The spec: only current members may list them (one who left is refused, though they
    // still see the room's history up to their leave).
    super::rooms::require_joined(&state, room.as_str(), &auth.user_id).await?;
    Ok(Json(json!({"aliases": state.rooms.aliases_of(room.as_str()).await?})))
}

async fn visibility(State(state): AppState, Params(room): Params<String>) -> JsonResult {
    let room = room_id(&room)?;
    if state.rooms.rules(room.as_str()).await?.is_none() {
        return Err(ApiError::room_not_found());
    }
    let public = state.rooms.published(room.as_str()).await?;
    Ok(Json(json!({"visibility": if public { "public" } else { "private" }})))
}

#[derive(Debug, Deserialize)]
struct VisibilityBody {
    visibility: String,
}

async fn set_visibility(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let public = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => return Err(ApiError::invalid_param("visibility must be public or private")),
    };
    auth.limit(&state.limiter, Action::State)?;
    let admin = is_admin(&state, &auth.user_id).await?;
    state.rooms.set_published(room.as_str(), &auth.user_id, admin, public).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct AppserviceVisibilityBody {
    /// Synapse's default: public.
    #[serde(default = "public")]
    visibility: String,
}

fn public() -> String {
    "public".to_owned()
}

/// `PUT /directory/list/appservice/{networkId}/{roomId}`: an application service publishes
/// a room in (or takes it out of) the room list of one of its networks. Only a service may.
async fn set_appservice_listed(
    State(state): AppState,
    auth: Auth,
    Params((network, room)): Params<(String, String)>,
    JsonBody(body): JsonBody<AppserviceVisibilityBody>,
) -> JsonResult {
    let public = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => return Err(ApiError::invalid_param("visibility must be public or private")),
    };
    edit_appservice_list(&state, &auth, &network, &room, public).await
}

/// `DELETE` of the same (Synapse's): takes the room out.
async fn unset_appservice_listed(
    State(state): AppState,
    auth: Auth,
    Params((network, room)): Params<(String, String)>,
) -> JsonResult {
    edit_appservice_list(&state, &auth, &network, &room, false).await
}

async fn edit_appservice_list(
    state: &crate::State,
    auth: &Auth,
    network: &str,
    room: &str,
    public: bool,
) -> JsonResult {
    let Some(service) = auth.appservice.as_deref() else {
        return Err(ApiError::forbidden(
            "Only application services can edit the room lists of their networks",
        ));
    };
    let room = room_id(room)?;
    if network.is_empty() || network.len() > 255 {
        return Err(ApiError::invalid_param("the network id must be 1 to 255 bytes"));
    }
    state.rooms.set_appservice_listed(service.id(), network, room.as_str(), public).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize, Default)]
struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
}

/// The `filter` of a `publicRooms` request (for clients and other servers).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct PublicRoomsFilter {
    /// Matched, ignoring case, in the name, topic and canonical alias.
    pub(crate) generic_search_term: Option<String>,
    /// The room types to list (`null` in the list: rooms without a type); absent: all.
    pub(crate) room_types: Option<Vec<Option<String>>>,
}

/// The most rooms one page lists.
const MAX_PUBLIC_ROOMS_LIMIT: usize = 500;
/// The most room types a filter names.
const MAX_ROOM_TYPES: usize = 50;

/// A position in the directory's order (most joined members first, then room id): a token
/// `n{joined}_{room}` pages on after that room, `b{joined}_{room}` back before it. Tokens
/// name a room, not an offset, so rooms joining or leaving the list do not shift a page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirectoryToken {
    forwards: bool,
    joined: u64,
    room_id: String,
}

impl DirectoryToken {
    fn parse(token: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid_param("not a directory token of this server");
        let forwards = match token.as_bytes().first() {
            Some(b'n') => true,
            Some(b'b') => false,
            _ => return Err(bad()),
        };
        let (joined, room_id) = token[1..].split_once('_').ok_or_else(bad)?;
        let joined = joined.parse().map_err(|_| bad())?;
        ruma::RoomId::parse(room_id).map_err(|_| bad())?;
        Ok(DirectoryToken { forwards, joined, room_id: room_id.to_owned() })
    }

    fn of(forwards: bool, entry: &serde_json::Value) -> String {
        let joined = entry["num_joined_members"].as_u64().unwrap_or(0);
        let room = entry["room_id"].as_str().unwrap_or_default();
        format!("{}{joined}_{room}", if forwards { 'n' } else { 'b' })
    }

    /// Whether `entry` comes after this position in the directory's order.
    fn before(&self, entry: &serde_json::Value) -> bool {
        let joined = entry["num_joined_members"].as_u64().unwrap_or(0);
        let room = entry["room_id"].as_str().unwrap_or_default();
        joined < self.joined || (joined == self.joined && room > self.room_id.as_str())
    }
}

/// One page of our `publicRooms` list `network` (`since` is a token of an earlier page), for
/// the client API and for other servers.
pub(crate) async fn list(
    state: &crate::State,
    limit: Option<usize>,
    since: Option<&str>,
    filter: Option<&PublicRoomsFilter>,
    network: &Network,
) -> JsonResult {
    let search = filter.and_then(|f| f.generic_search_term.as_deref());
    let room_types = filter.and_then(|f| f.room_types.as_deref());
    if room_types.is_some_and(|types| types.len() > MAX_ROOM_TYPES) {
        return Err(ApiError::invalid_param(format!(
            "room_types names more than {MAX_ROOM_TYPES} types"
        )));
    }
    let token = since.map(DirectoryToken::parse).transpose()?;
    let mut rooms = state.rooms.public_rooms(search, network).await?;
    if let Some(types) = room_types {
        rooms.retain(|entry| {
            let kind = entry["room_type"].as_str();
            types.iter().any(|wanted| wanted.as_deref() == kind)
        });
    }
    let total = rooms.len();
    let limit = limit.unwrap_or(100).clamp(1, MAX_PUBLIC_ROOMS_LIMIT);
    let (start, end) = match &token {
        None => (0, limit.min(total)),
        Some(token) if token.forwards => {
            let start = rooms.iter().position(|e| token.before(e)).unwrap_or(total);
            (start, start.saturating_add(limit).min(total))
        }
        Some(token) => {
            let end = rooms.iter().position(|e| token.before(e)).unwrap_or(total);
            let end = if rooms
                .get(end.wrapping_sub(1))
                .is_some_and(|e| e["room_id"].as_str() == Some(token.room_id.as_str()))
            {
                end - 1
            } else {
                end
            };
            (end.saturating_sub(limit), end)
        }
    };
    let chunk = rooms.get(start..end).unwrap_or_default().to_vec();
    let mut response = json!({"chunk": chunk, "total_room_count_estimate": total});
    if end < total
        && let Some(last) = chunk.last()
    {
        response["next_batch"] = json!(DirectoryToken::of(true, last));
    }
    if start > 0
        && let Some(first) = chunk.first()
    {
        response["prev_batch"] = json!(DirectoryToken::of(false, first));
    }
    Ok(Json(response))
}

/// The most entries of another server's directory page passed on.
const MAX_REMOTE_CHUNK: usize = MAX_PUBLIC_ROOMS_LIMIT;

/// The `publicRooms` of another server, asked over federation and passed on (the entries
/// that are objects with a room id, the tokens that are strings).
async fn remote_list(
    state: &crate::State,
    server: &str,
    limit: Option<usize>,
    since: Option<&str>,
    filter: Option<&PublicRoomsFilter>,
) -> JsonResult {
    ruma::ServerName::parse(server)
        .map_err(|_| ApiError::invalid_param("server is not a server name"))?;
    let federation = state
        .federation
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this server does not talk to other servers"))?;
    let limit = limit.map(|l| l.clamp(1, MAX_PUBLIC_ROOMS_LIMIT));
    let answer = if filter.is_some() {
        let mut body = matrix_core::Object::new();
        if let Some(limit) = limit {
            body.insert("limit", matrix_core::Value::from(i64::try_from(limit).unwrap_or(100)));
        }
        if let Some(since) = since {
            body.insert("since", matrix_core::Value::String(since.to_owned()));
        }
        let mut remote_filter = matrix_core::Object::new();
        if let Some(term) = filter.and_then(|f| f.generic_search_term.as_deref()) {
            remote_filter
                .insert("generic_search_term", matrix_core::Value::String(term.to_owned()));
        }
        if let Some(types) = filter.and_then(|f| f.room_types.as_ref()) {
            let types = types
                .iter()
                .take(MAX_ROOM_TYPES)
                .map(|t| t.clone().map_or(matrix_core::Value::Null, matrix_core::Value::String))
                .collect();
            remote_filter.insert("room_types", matrix_core::Value::Array(types));
        }
        body.insert("filter", matrix_core::Value::Object(remote_filter));
        federation.client().public_rooms_filtered(server, &body).await
    } else {
        let limit = limit.and_then(|l| u32::try_from(l).ok());
        federation.client().public_rooms(server, limit, since).await
    }
    .map_err(|e| match e {
        matrix_federation::FederationError::Status { status: 404, .. } => {
            ApiError::not_found("the server has no room directory")
        }
        other => other.into(),
    })?;
    let answer = serde_json::Value::Object(crate::services::rooms::format::to_serde(&answer));
    let chunk: Vec<serde_json::Value> = answer["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["room_id"].as_str().is_some_and(|id| ruma::RoomId::parse(id).is_ok()))
        .take(MAX_REMOTE_CHUNK)
        .cloned()
        .collect();
    let mut response = json!({"chunk": chunk});
    for key in ["next_batch", "prev_batch"] {
        if let Some(token) = answer[key].as_str() {
            response[key] = json!(token);
        }
    }
    if let Some(total) = answer["total_room_count_estimate"].as_u64() {
        response["total_room_count_estimate"] = json!(total);
    }
    Ok(Json(response))
}

/// Whether `server` names another server than ours.
fn remote<'a>(state: &crate::State, server: Option<&'a str>) -> Option<&'a str> {
    server.filter(|s| *s != state.rooms.server_name().as_str())
}

/// `GET /publicRooms`: ours without authentication; another server's (`server=`) only for
/// a user of ours, so that strangers cannot make us send requests.
async fn public_rooms_get(
    State(state): AppState,
    auth: Result<Auth, ApiError>,
    Query(query): Query<PublicRoomsQuery>,
) -> JsonResult {
    if let Some(server) = remote(&state, query.server.as_deref()) {
        let auth = auth?;
        auth.limit(&state.limiter, Action::Lookup)?;
        return remote_list(&state, server, query.limit, query.since.as_deref(), None).await;
    }
    list(&state, query.limit, query.since.as_deref(), None, &Network::Main).await
}

async fn public_rooms_post(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<PublicRoomsQuery>,
    JsonBody(body): JsonBody<PublicRoomsBody>,
) -> JsonResult {
    if let Some(server) = remote(&state, query.server.as_deref()) {
        auth.limit(&state.limiter, Action::Lookup)?;
        let filter = body.filter.as_ref();
        return remote_list(&state, server, body.limit, body.since.as_deref(), filter).await;
    }
    let network = Network::of(body.include_all_networks, body.third_party_instance_id.as_deref())?;
    list(&state, body.limit, body.since.as_deref(), body.filter.as_ref(), &network).await
}

/// The most results one user directory search answers (the spec's default is 10).
const MAX_USER_SEARCH_LIMIT: u64 = 100;

#[derive(Debug, Deserialize)]
struct UserSearchBody {
    search_term: String,
    limit: Option<u64>,
}

/// `POST /user_directory/search`: the users the searcher may find (see
/// `services/rooms/user_directory.rs`), at most `limit` (10 by default, 100 at most).
async fn search_users(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<UserSearchBody>,
) -> JsonResult {
    auth.limit(&state.limiter, Action::Lookup)?;
    if body.search_term.chars().count() > 256 {
        return Err(ApiError::invalid_param("search_term is longer than 256 characters"));
    }
    let limit = usize::try_from(body.limit.unwrap_or(10).min(MAX_USER_SEARCH_LIMIT)).unwrap_or(10);
    let all_local = state.config.user_directory.search_all_local_users;
    let (users, limited) =
        state.rooms.search_users(&auth.user_id, &body.search_term, limit, all_local).await?;
    let results: Vec<serde_json::Value> = users
        .into_iter()
        .map(|user| {
            let mut entry = json!({"user_id": user.user_id});
            if let Some(name) = user.displayname {
                entry["display_name"] = json!(name);
            }
            if let Some(url) = user.avatar_url {
                entry["avatar_url"] = json!(url);
            }
            entry
        })
        .collect();
    Ok(Json(json!({"results": results, "limited": limited})))
}
