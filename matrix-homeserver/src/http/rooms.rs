//! Rooms: createRoom, membership, state, events, sending, redaction, pagination, context,
//! typing, receipts and read markers.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use matrix_storage::Direction;
use serde::Deserialize;
use serde_json::{Value, json};

use super::delayed_events::{self, DelayQuery, Schedule};
use super::{Auth, JsonBody, JsonResult, Params, Query, RawBody, Routes, room_id, route, user_id};
use crate::error::ApiError;
use crate::services::federation::fan_out;
use crate::services::rate_limit::Action;
use crate::services::rooms::relations::{self, RelationsQuery as RelationsQueryOf};
use crate::services::rooms::{CreateRoom, Draft, EventFilter, Page, Preset, Reader, parse_content};
use crate::services::sync::{parse_filter, parse_room_token, room_token};

type AppState = State<Arc<crate::State>>;

pub(super) fn routes() -> Routes {
    const R: &str = "/_matrix/client/v3/rooms/{room}";
    Router::new()
        .route("/_matrix/client/v3/createRoom", route(post(create_room)))
        .route("/_matrix/client/v3/join/{room}", route(post(join_by_id_or_alias)))
        .route("/_matrix/client/v3/knock/{room}", route(post(knock)))
        .route("/_matrix/client/v3/joined_rooms", route(get(joined_rooms)))
        .route(&format!("{R}/join"), route(post(join)))
        .route(&format!("{R}/leave"), route(post(leave)))
        .route(&format!("{R}/forget"), route(post(forget)))
        .route(&format!("{R}/upgrade"), route(post(upgrade)))
        .route(&format!("{R}/invite"), route(post(invite)))
        .route(&format!("{R}/kick"), route(post(kick)))
        .route(&format!("{R}/ban"), route(post(ban)))
        .route(&format!("{R}/unban"), route(post(unban)))
        .route(&format!("{R}/members"), route(get(members)))
        .route(&format!("{R}/joined_members"), route(get(joined_members)))
        .route(&format!("{R}/state"), route(get(state_all)))
        .route(&format!("{R}/state/{{kind}}"), route(get(state_get_empty).put(state_put_empty)))
        .route(&format!("{R}/state/{{kind}}/"), route(get(state_get_empty).put(state_put_empty)))
        .route(&format!("{R}/state/{{kind}}/{{key}}"), route(get(state_get).put(state_put)))
        .route(&format!("{R}/event/{{event}}"), route(get(event)))
        .route(&format!("{R}/send/{{kind}}/{{txn}}"), route(put(send)))
        .route(&format!("{R}/redact/{{event}}/{{txn}}"), route(put(redact)))
        .route(&format!("{R}/messages"), route(get(messages)))
        .route(&format!("{R}/context/{{event}}"), route(get(context)))
        .route(&format!("{R}/typing/{{user}}"), route(put(typing)))
        .route(&format!("{R}/receipt/{{kind}}/{{event}}"), route(post(receipt)))
        .route(&format!("{R}/read_markers"), route(post(read_markers)))
        .route(&format!("{V1}/relations/{{event}}"), route(get(relations)))
        .route(&format!("{V1}/relations/{{event}}/{{rel_type}}"), route(get(relations_of_type)))
        .route(
            &format!("{V1}/relations/{{event}}/{{rel_type}}/{{kind}}"),
            route(get(relations_of_type_and_kind)),
        )
        .route(&format!("{V1}/threads"), route(get(threads)))
        .route(&format!("{V1}/timestamp_to_event"), route(get(timestamp_to_event)))
}

/// What a shadow-banned user's event-sending request answers: success, with an event id
/// nothing has (nothing is stored or sent).
fn made_up_event() -> JsonResult {
    Ok(Json(json!({"event_id": crate::services::accounts::made_up_id('$', 43)?})))
}

fn object(value: &Value, what: &str) -> Result<matrix_core::Object, ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::bad_json(e.to_string()))?;
    let rules =
        matrix_core::RoomVersionRules::get("12").ok_or_else(|| ApiError::unknown("no rules"))?;
    parse_content(&bytes, rules).map_err(|_| {
        ApiError::bad_json(format!("{what} must be a JSON object of canonical JSON values"))
    })
}

#[derive(Debug, Deserialize)]
struct CreateRoomBody {
    #[serde(default)]
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    room_version: Option<String>,
    creation_content: Option<Value>,
    #[serde(default)]
    initial_state: Vec<InitialState>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Value,
}

async fn create_room(
    State(state): AppState,
    auth: Auth,
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> JsonResult {
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::CreateRoom)?;
    // Each entry is an event appended (and synced to disk) in turn: bounded.
    let limits = &state.config.limits;
    if body.initial_state.len() > limits.max_create_room_initial_state {
        return Err(ApiError::list_too_long("initial_state", limits.max_create_room_initial_state));
    }
    if body.invite.len() > limits.max_create_room_invites {
        return Err(ApiError::list_too_long("invite", limits.max_create_room_invites));
    }
    let preset = match body.preset.as_deref() {
        None => None,
        Some("private_chat") => Some(Preset::PrivateChat),
        Some("trusted_private_chat") => Some(Preset::TrustedPrivateChat),
        Some("public_chat") => Some(Preset::PublicChat),
        Some(other) => return Err(ApiError::invalid_param(format!("unknown preset {other:?}"))),
    };
    let public = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(format!("unknown visibility {other:?}")));
        }
    };
    let mut initial_state = Vec::new();
    for event in &body.initial_state {
        initial_state.push((
            event.kind.clone(),
            event.state_key.clone(),
            object(&event.content, "initial_state content")?,
        ));
    }
    let mut invite = body.invite.iter().map(|u| user_id(u)).collect::<Result<Vec<_>, _>>()?;
    if auth.shadow_banned() {
        // As Synapse: the room is made, the invites are dropped.
        invite.clear();
    }
    for target in &invite {
        ask_services_about(&state, target).await?;
    }
    if let Some(localpart) = &body.room_alias_name {
        let alias = format!("#{localpart}:{}", state.rooms.server_name());
        state.appservices.check_alias_creation(&alias, auth.appservice.as_deref())?;
    }
    let request = CreateRoom {
        version: body.room_version,
        preset,
        public,
        creation_content: body
            .creation_content
            .as_ref()
            .map(|c| object(c, "creation_content"))
            .transpose()?,
        power_levels_override: body
            .power_level_content_override
            .as_ref()
            .map(|c| object(c, "power_level_content_override"))
            .transpose()?,
        initial_state,
        name: body.name,
        topic: body.topic,
        alias_localpart: body.room_alias_name,
        invite,
        is_direct: body.is_direct,
    };
    let room_id = state.rooms.create_room(&auth.user_id, request).await?;
    Ok(Json(json!({"room_id": room_id})))
}

#[derive(Debug, Deserialize, Default)]
struct ReasonBody {
    reason: Option<String>,
}

async fn join(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::Join)?;
    let federation = state.federation.as_ref();
    state.rooms.join_anywhere(federation, room.as_str(), &auth.user_id, body.reason, &[]).await?;
    Ok(Json(json!({"room_id": room})))
}

/// The servers a join names (`via`, and the older `server_name`), at most [`MAX_VIA`].
pub(super) fn via_servers(uri: &http::Uri) -> Vec<String> {
    let Some(query) = uri.query() else { return Vec::new() };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "via" || key == "server_name")
        .map(|(_, value)| value.into_owned())
        .filter(|server| ruma::ServerName::parse(server).is_ok())
        .take(MAX_VIA)
        .collect()
}

/// The most servers a join tries.
const MAX_VIA: usize = 10;

/// The room a `/join` or `/knock` names (a room id, or an alias resolved here or at its
/// server), and the servers to go through: the request's `via` (or `server_name`), then
/// those the alias named, at most [`MAX_VIA`].
async fn target_room(
    state: &crate::State,
    target: &str,
    uri: &http::Uri,
) -> Result<(String, Vec<String>), ApiError> {
    let mut servers = via_servers(uri);
    let room = if target.starts_with('#') {
        let (room_id, alias_servers) = state.rooms.resolve_any_alias(state, target).await?;
        servers.extend(alias_servers);
        room_id
    } else {
        room_id(target)?.to_string()
    };
    servers.truncate(MAX_VIA);
    Ok((room, servers))
}

async fn join_by_id_or_alias(
    State(state): AppState,
    auth: Auth,
    Params(target): Params<String>,
    uri: http::Uri,
    JsonBody(body): JsonBody<ReasonBody>,
) -> JsonResult {
    auth.not_suspended()?;
    let (room, servers) = target_room(&state, &target, &uri).await?;
    auth.limit(&state.limiter, Action::Join)?;
    let federation = state.federation.as_ref();
    state.rooms.join_anywhere(federation, &room, &auth.user_id, body.reason, &servers).await?;
    Ok(Json(json!({"room_id": room})))
}

/// `POST /knock/{roomIdOrAlias}`: asks to be let in a room whose join rule is `knock` (or
/// `knock_restricted`).
async fn knock(
    State(state): AppState,
    auth: Auth,
    Params(target): Params<String>,
    uri: http::Uri,
    JsonBody(body): JsonBody<ReasonBody>,
) -> JsonResult {
    auth.not_suspended()?;
    let (room, servers) = target_room(&state, &target, &uri).await?;
    auth.limit(&state.limiter, Action::Join)?;
    let federation = state.federation.as_ref();
    state.rooms.knock_anywhere(federation, &room, &auth.user_id, body.reason, &servers).await?;
    Ok(Json(json!({"room_id": room})))
}

async fn leave(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::Membership)?;
    state.rooms.leave(room.as_str(), &auth.user_id, body.reason).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

/// `POST /rooms/{roomId}/upgrade`: a new room of `new_version` replacing this one.
async fn upgrade(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<UpgradeBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let max = crate::services::rooms::MAX_ADDITIONAL_CREATORS;
    if body.additional_creators.len() > max {
        return Err(ApiError::list_too_long("additional_creators", max));
    }
    let creators =
        body.additional_creators.iter().map(|u| user_id(u)).collect::<Result<Vec<_>, _>>()?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::CreateRoom)?;
    if auth.shadow_banned() {
        let made_up = crate::services::accounts::made_up_id('!', 18)?;
        return Ok(Json(
            json!({"replacement_room": format!("{made_up}:{}", state.rooms.server_name())}),
        ));
    }
    let replacement =
        state.rooms.upgrade(room.as_str(), &auth.user_id, &body.new_version, creators).await?;
    Ok(Json(json!({"replacement_room": replacement})))
}

async fn forget(State(state): AppState, auth: Auth, Params(room): Params<String>) -> JsonResult {
    let room = room_id(&room)?;
    // A record of the user's own, like account data.
    auth.limit(&state.limiter, Action::AccountData)?;
    state.rooms.forget(room.as_str(), &auth.user_id).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

async fn invite(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let target = user_id(&body.user_id)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::Membership)?;
    if auth.shadow_banned() {
        return Ok(Json(json!({})));
    }
    ask_services_about(&state, &target).await?;
    state.rooms.invite(room.as_str(), &auth.user_id, &target, body.reason, false).await?;
    Ok(Json(json!({})))
}

/// An unknown local user of a service's namespace, about to be invited: the service may
/// create it when asked (as Synapse asks, on `/invite` and on `createRoom`'s invitees).
async fn ask_services_about(state: &crate::State, target: &ruma::UserId) -> Result<(), ApiError> {
    if target.server_name() == state.rooms.server_name()
        && state.rooms.storage().user(target.as_str()).await?.is_none()
    {
        state.appservices.query_user(target.as_str()).await;
    }
    Ok(())
}

async fn kick(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let target = user_id(&body.user_id)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::Membership)?;
    state.rooms.kick(room.as_str(), &auth.user_id, &target, body.reason).await?;
    Ok(Json(json!({})))
}

async fn ban(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let target = user_id(&body.user_id)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::Membership)?;
    state.rooms.set_membership(room.as_str(), &auth.user_id, &target, "ban", body.reason).await?;
    Ok(Json(json!({})))
}

async fn unban(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    let target = user_id(&body.user_id)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::Membership)?;
    state.rooms.unban(room.as_str(), &auth.user_id, &target, body.reason).await?;
    Ok(Json(json!({})))
}

async fn joined_rooms(State(state): AppState, auth: Auth) -> JsonResult {
    let rooms: Vec<String> = state
        .rooms
        .storage()
        .rooms_of_user(auth.user_id.as_str())
        .await?
        .into_iter()
        .filter(|(_, m)| m == "join")
        .map(|(r, _)| r)
        .collect();
    Ok(Json(json!({"joined_rooms": rooms})))
}

#[derive(Debug, Deserialize, Default)]
struct MembersQuery {
    membership: Option<String>,
    not_membership: Option<String>,
}

async fn members(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<MembersQuery>,
) -> JsonResult {
    let room = room_id(&room)?;
    let mut chunk = Vec::new();
    for pdu in state.rooms.member_events(room.as_str(), &auth.user_id).await? {
        let membership = pdu.content().get_str("membership").unwrap_or_default();
        if query.membership.as_deref().is_some_and(|m| m != membership)
            || query.not_membership.as_deref() == Some(membership)
        {
            continue;
        }
        chunk.push(state.rooms.show(&pdu, None).await?);
    }
    Ok(Json(json!({"chunk": chunk})))
}

async fn joined_members(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
) -> JsonResult {
    let room = room_id(&room)?;
    // The spec: only current members may list them (departed ones included, it is not).
    require_joined(&state, room.as_str(), &auth.user_id).await?;
    let mut joined = serde_json::Map::new();
    for pdu in state.rooms.member_events(room.as_str(), &auth.user_id).await? {
        let content = pdu.content();
        if content.get_str("membership") == Some("join") {
            let mut member = serde_json::Map::new();
            if let Some(name) = content.get_str("displayname") {
                member.insert("display_name".to_owned(), json!(name));
            }
            if let Some(url) = content.get_str("avatar_url") {
                member.insert("avatar_url".to_owned(), json!(url));
            }
            joined.insert(pdu.state_key().unwrap_or_default().to_owned(), Value::Object(member));
        }
    }
    Ok(Json(json!({"joined": joined})))
}

async fn state_all(State(state): AppState, auth: Auth, Params(room): Params<String>) -> JsonResult {
    let room = room_id(&room)?;
    let snapshot = state.rooms.visibility(room.as_str(), &auth.user_id).await?.snapshot();
    let events = state.rooms.state_events(snapshot).await?;
    Ok(Json(Value::Array(state.rooms.show_all(&events, None).await?)))
}

#[derive(Debug, Deserialize, Default)]
struct StateQuery {
    format: Option<String>,
}

async fn get_state(
    state: &crate::State,
    user: &ruma::UserId,
    room: &str,
    kind: &str,
    key: &str,
    format: Option<&str>,
) -> JsonResult {
    let room = room_id(room)?;
    let snapshot = state.rooms.visibility(room.as_str(), user).await?.snapshot();
    let pdu = state
        .rooms
        .state_pdu(snapshot, kind, key)
        .await?
        .ok_or_else(|| ApiError::not_found("no such state event"))?;
    let event = state.rooms.show(&pdu, None).await?;
    if format == Some("event") { Ok(Json(event)) } else { Ok(Json(event["content"].clone())) }
}

async fn state_get_empty(
    State(state): AppState,
    auth: Auth,
    Params((room, kind)): Params<(String, String)>,
    Query(q): Query<StateQuery>,
) -> JsonResult {
    get_state(&state, &auth.user_id, &room, &kind, "", q.format.as_deref()).await
}

async fn state_get(
    State(state): AppState,
    auth: Auth,
    Params((room, kind, key)): Params<(String, String, String)>,
    Query(q): Query<StateQuery>,
) -> JsonResult {
    get_state(&state, &auth.user_id, &room, &kind, &key, q.format.as_deref()).await
}

async fn put_state(
    state: &crate::State,
    auth: &Auth,
    room: &str,
    kind: &str,
    key: &str,
    body: &[u8],
) -> JsonResult {
    let room = room_id(room)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::State)?;
    if kind == "m.room.member" {
        return Err(ApiError::forbidden("use the membership endpoints to change memberships"));
    }
    if auth.shadow_banned() {
        return made_up_event();
    }
    let rules = state
        .rooms
        .rules(room.as_str())
        .await?
        .ok_or_else(|| ApiError::forbidden("you are not in this room"))?;
    let content = parse_content(body, rules)?;
    let pdu =
        state.rooms.append(room.as_str(), &auth.user_id, Draft::state(kind, key, content)).await?;
    Ok(Json(json!({"event_id": pdu.event_id()})))
}

async fn state_put_empty(
    State(state): AppState,
    auth: Auth,
    Params((room, kind)): Params<(String, String)>,
    Query(delayed): Query<DelayQuery>,
    RawBody(body): RawBody,
) -> JsonResult {
    if let Some(delay) = delayed.delay {
        let request = Schedule {
            room_id: &room,
            kind: &kind,
            state_key: Some(""),
            content: &body,
            delay_ms: delay,
            txn_id: None,
        };
        return delayed_events::schedule(&state, &auth, request).await;
    }
    put_state(&state, &auth, &room, &kind, "", &body).await
}

async fn state_put(
    State(state): AppState,
    auth: Auth,
    Params((room, kind, key)): Params<(String, String, String)>,
    Query(delayed): Query<DelayQuery>,
    RawBody(body): RawBody,
) -> JsonResult {
    if let Some(delay) = delayed.delay {
        let request = Schedule {
            room_id: &room,
            kind: &kind,
            state_key: Some(&key),
            content: &body,
            delay_ms: delay,
            txn_id: None,
        };
        return delayed_events::schedule(&state, &auth, request).await;
    }
    put_state(&state, &auth, &room, &kind, &key, &body).await
}

async fn event(
    State(state): AppState,
    auth: Auth,
    Params((room, event)): Params<(String, String)>,
) -> JsonResult {
    let room = room_id(&room)?;
    let pdu = state.rooms.event_for(room.as_str(), &auth.user_id, &event).await?;
    Ok(Json(state.rooms.show(&pdu, Some(auth.viewer())).await?))
}

async fn send(
    State(state): AppState,
    auth: Auth,
    Params((room, kind, txn)): Params<(String, String, String)>,
    Query(delayed): Query<DelayQuery>,
    RawBody(body): RawBody,
) -> JsonResult {
    if let Some(delay) = delayed.delay {
        let request = Schedule {
            room_id: &room,
            kind: &kind,
            state_key: None,
            content: &body,
            delay_ms: delay,
            txn_id: Some(&txn),
        };
        return delayed_events::schedule(&state, &auth, request).await;
    }
    let room = room_id(&room)?;
    auth.not_suspended()?;
    auth.limit(&state.limiter, Action::Message)?;
    if auth.shadow_banned() {
        return made_up_event();
    }
    let rules = state
        .rooms
        .rules(room.as_str())
        .await?
        .ok_or_else(|| ApiError::forbidden("you are not in this room"))?;
    let content = parse_content(&body, rules)?;
    let event_id = state
        .rooms
        .send_once(room.as_str(), &auth.user_id, auth.scope(), &txn, Draft::message(&kind, content))
        .await?;
    state.presence.active(auth.user_id.as_str(), auth.scope()).await?;
    Ok(Json(json!({"event_id": event_id})))
}

async fn redact(
    State(state): AppState,
    auth: Auth,
    Params((room, event, txn)): Params<(String, String, String)>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    if auth.restrictions.suspended {
        // A suspended user may still take back what they said (as Synapse allows).
        let target = state.rooms.event_for(room.as_str(), &auth.user_id, &event).await?;
        if target.sender() != auth.user_id.as_str() {
            return Err(ApiError::user_suspended());
        }
    }
    auth.limit(&state.limiter, Action::Message)?;
    if auth.shadow_banned() {
        return made_up_event();
    }
    let event_id = state
        .rooms
        .redact(room.as_str(), &auth.user_id, auth.scope(), &txn, &event, body.reason)
        .await?;
    Ok(Json(json!({"event_id": event_id})))
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct MessagesQuery {
    from: Option<String>,
    pub(super) dir: Option<String>,
    limit: Option<usize>,
    filter: Option<String>,
    to: Option<String>,
}

/// A room event filter given inline as JSON (bounded as stored filters are).
fn room_event_filter(
    limits: &crate::config::LimitsConfig,
    text: Option<&str>,
) -> Result<(EventFilter, bool), ApiError> {
    let Some(text) = text else { return Ok((EventFilter::default(), false)) };
    let json: Value = serde_json::from_str(text)
        .map_err(|_| ApiError::invalid_param("the filter is not JSON"))?;
    super::user::check_filter(limits, &json)?;
    let filter = parse_filter(&json!({"room": {"timeline": json.clone()}}));
    Ok((filter.timeline, json["lazy_load_members"].as_bool().unwrap_or(false)))
}

/// A `/messages` token: `t<stream position>` (or a `/sync` token) in the timeline,
/// `b<backfill position>` in the history before it.
fn parse_page_token(text: &str) -> Option<Page> {
    match text.strip_prefix('b') {
        Some(pos) => pos.parse().ok().map(|pos| Page::Backfill(matrix_storage::BackfillPos(pos))),
        None => parse_room_token(text).map(Page::Stream),
    }
}

/// The token of a [`Page`] (read by [`parse_page_token`]).
fn page_token(page: Page) -> String {
    match page {
        Page::Stream(pos) => room_token(pos),
        Page::Backfill(pos) => format!("b{}", pos.0),
    }
}

async fn messages(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<MessagesQuery>,
) -> JsonResult {
    let room = room_id(&room)?;
    let direction = match query.dir.as_deref() {
        Some("b") => Direction::Backwards,
        Some("f") => Direction::Forwards,
        Some(_) => return Err(ApiError::invalid_param("dir must be b or f")),
        None => return Err(ApiError::missing_param("dir is required")),
    };
    let reader = Reader::User(&auth.user_id);
    messages_page(&state, reader, auth.viewer(), room.as_str(), direction, &query).await
}

/// A page of `/messages` for `reader` (a user, or an administrator through the admin API).
pub(super) async fn messages_page(
    state: &crate::State,
    reader: Reader<'_>,
    viewer: crate::services::rooms::Viewer<'_>,
    room: &str,
    direction: Direction,
    query: &MessagesQuery,
) -> JsonResult {
    let from = match query.from.as_deref() {
        Some(token) => Some(
            parse_page_token(token)
                .ok_or_else(|| ApiError::invalid_param("not a pagination token"))?,
        ),
        None => None,
    };
    let to = match query.to.as_deref() {
        Some(token) => Some(
            parse_room_token(token)
                .ok_or_else(|| ApiError::invalid_param("`to` is not a pagination token"))?,
        ),
        None => None,
    };
    let (filter, lazy) = room_event_filter(&state.config.limits, query.filter.as_deref())?;
    let (start, chunk) = state
        .rooms
        .messages(
            state.federation.as_ref(),
            room,
            reader,
            from,
            to,
            direction,
            query.limit.unwrap_or(10),
            &filter,
        )
        .await?;
    let mut response = json!({
        "start": page_token(start),
        "chunk": state.rooms.show_all(&chunk.events, Some(viewer)).await?,
    });
    if let Some(next) = chunk.next {
        response["end"] = json!(page_token(next));
    }
    if lazy {
        response["state"] = json!(lazy_members(state, reader, room, &chunk.events).await?);
    }
    Ok(Json(response))
}

/// The member events of the senders of `events` (lazy-loading members).
async fn lazy_members(
    state: &crate::State,
    reader: Reader<'_>,
    room: &str,
    events: &[Arc<matrix_core::Pdu>],
) -> Result<Vec<Value>, ApiError> {
    let snapshot = state.rooms.visibility(room, reader).await?.snapshot();
    let mut senders: Vec<&str> = events.iter().map(|e| e.sender()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut out = Vec::new();
    for sender in senders {
        if let Some(pdu) = state.rooms.state_pdu(snapshot, "m.room.member", sender).await? {
            out.push(state.rooms.show(&pdu, None).await?);
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

async fn context(
    State(state): AppState,
    auth: Auth,
    Params((room, event)): Params<(String, String)>,
    Query(query): Query<ContextQuery>,
) -> JsonResult {
    let room = room_id(&room)?;
    let reader = Reader::User(&auth.user_id);
    context_of(&state, reader, auth.viewer(), room.as_str(), &event, &query).await
}

/// `/context` for `reader` (a user, or an administrator through the admin API).
pub(super) async fn context_of(
    state: &crate::State,
    reader: Reader<'_>,
    viewer: crate::services::rooms::Viewer<'_>,
    room: &str,
    event: &str,
    query: &ContextQuery,
) -> JsonResult {
    let (filter, _) = room_event_filter(&state.config.limits, query.filter.as_deref())?;
    let rooms = &state.rooms;
    let pdu = rooms.event_for(room, reader, event).await?;
    let pos = rooms.position_of(room, reader, event).await?;
    let limit = query.limit.unwrap_or(10).min(100);
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let device = Some(viewer);
    let mut response = json!({"event": rooms.show(&pdu, device).await?});
    let mut ends = [Page::Stream(pos), Page::Stream(pos)];
    for (i, (key, direction, limit)) in [
        ("events_before", Direction::Backwards, before_limit),
        ("events_after", Direction::Forwards, after_limit),
    ]
    .into_iter()
    .enumerate()
    {
        let mut events = Vec::new();
        if limit > 0 {
            let (_, chunk) = rooms
                .messages(
                    None,
                    room,
                    reader,
                    Some(Page::Stream(pos)),
                    None,
                    direction,
                    limit,
                    &filter,
                )
                .await?;
            ends[i] = chunk.reached;
            events = rooms.show_all(&chunk.events, device).await?;
        }
        response[key] = json!(events);
    }
    let [start, end] = ends;
    response["start"] = json!(page_token(start));
    response["end"] = json!(page_token(end));
    let snapshot = rooms.state_at(pdu.event_id()).await?;
    let state_events = match snapshot {
        Some(snapshot) => rooms.show_all(&rooms.state_events(snapshot).await?, None).await?,
        None => Vec::new(),
    };
    response["state"] = json!(state_events);
    Ok(Json(response))
}

#[derive(Debug, Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

pub(super) async fn require_joined(
    state: &crate::State,
    room: &str,
    user: &ruma::UserId,
) -> Result<(), ApiError> {
    if state.rooms.storage().membership(room, user.as_str()).await?.as_deref() == Some("join") {
        Ok(())
    } else {
        Err(ApiError::forbidden("you are not in this room"))
    }
}

async fn typing(
    State(state): AppState,
    auth: Auth,
    Params((room, user)): Params<(String, String)>,
    JsonBody(body): JsonBody<TypingBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    if user != auth.user_id.as_str() {
        return Err(ApiError::forbidden("you can only set your own typing notice"));
    }
    auth.limit(&state.limiter, Action::Typing)?;
    require_joined(&state, room.as_str(), &auth.user_id).await?;
    if auth.shadow_banned() {
        return Ok(Json(json!({})));
    }
    let timeout =
        body.typing.then(|| Duration::from_millis(body.timeout.unwrap_or(30_000).min(120_000)));
    state.ephemeral.set_typing(room.as_str(), auth.user_id.as_str(), timeout).await;
    crate::services::federation::fan_out::typing(
        &state,
        room.as_str(),
        auth.user_id.as_str(),
        timeout,
    )
    .await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize, Default)]
struct ReceiptBody {
    thread_id: Option<String>,
}

async fn set_receipt(
    state: &crate::State,
    auth: &Auth,
    room: &str,
    kind: &str,
    event: &str,
    thread: Option<String>,
) -> Result<(), ApiError> {
    require_joined(state, room, &auth.user_id).await?;
    let pos = state.rooms.position_of(room, &auth.user_id, event).await?;
    if let Some(thread) = &thread
        && kind != "m.fully_read"
    {
        state.rooms.check_receipt_thread(event, thread).await?;
    }
    match kind {
        "m.fully_read" => {
            let content = serde_json::to_vec(&json!({"event_id": event})).unwrap_or_default();
            state.user_data_put(&auth.user_id, Some(room), "m.fully_read", content).await
        }
        "m.read" | "m.read.private" => {
            let ts = u64::try_from(crate::services::rooms::now_ms()).unwrap_or(0);
            let user = auth.user_id.as_str();
            // Public receipts go to the room's other servers, queued with the receipt.
            let enqueue = if kind == "m.read" {
                fan_out::receipt(state, room, user, event, thread.as_deref(), ts).await?
            } else {
                Vec::new()
            };
            let notify = enqueue.clone();
            state.ephemeral.set_receipt(room, user, kind, event, pos, thread, ts, enqueue).await?;
            fan_out::notify(state, &notify);
            Ok(())
        }
        other => Err(ApiError::invalid_param(format!("unknown receipt type {other:?}"))),
    }
}

async fn receipt(
    State(state): AppState,
    auth: Auth,
    Params((room, kind, event)): Params<(String, String, String)>,
    JsonBody(body): JsonBody<ReceiptBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::Receipt)?;
    // The spec allows `main` (the main timeline) or a thread root's event id; anything else
    // would be a new key in the room's receipts per request.
    if let Some(thread) = &body.thread_id
        && thread != "main"
        && (thread.len() < 2
            || !thread.starts_with('$')
            || ruma::EventId::parse(thread.as_str()).is_err())
    {
        return Err(ApiError::invalid_param("thread_id must be \"main\" or an event id"));
    }
    set_receipt(&state, &auth, room.as_str(), &kind, &event, body.thread_id).await?;
    Ok(Json(json!({})))
}

async fn read_markers(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> JsonResult {
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::Receipt)?;
    for kind in ["m.fully_read", "m.read", "m.read.private"] {
        if let Some(event) = body.get(kind).and_then(Value::as_str) {
            set_receipt(&state, &auth, room.as_str(), kind, event, None).await?;
        }
    }
    Ok(Json(json!({})))
}

/// The `ts` and `dir` of a `timestamp_to_event` request (either API).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct TimestampQuery {
    ts: Option<String>,
    dir: Option<String>,
}

impl TimestampQuery {
    /// `dir` as `f` when it is not given (the admin API's default).
    pub(crate) fn forwards_by_default(mut self) -> Self {
        self.dir.get_or_insert_with(|| "f".to_owned());
        self
    }

    /// The time and whether to look forwards (`M_MISSING_PARAM`, `M_INVALID_PARAM` otherwise).
    pub(crate) fn parse(&self) -> Result<(i64, bool), ApiError> {
        let ts = self.ts.as_deref().ok_or_else(|| ApiError::missing_param("`ts` is required"))?;
        let ts: i64 =
            ts.parse().ok().filter(|ts| *ts >= 0).ok_or_else(|| {
                ApiError::invalid_param("`ts` must be milliseconds since the epoch")
            })?;
        let forwards = match self.dir.as_deref() {
            Some("f") => true,
            Some("b") => false,
            Some(_) => return Err(ApiError::invalid_param("`dir` must be `f` or `b`")),
            None => return Err(ApiError::missing_param("`dir` is required")),
        };
        Ok((ts, forwards))
    }
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`.
async fn timestamp_to_event(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<TimestampQuery>,
) -> JsonResult {
    let room = room_id(&room)?;
    let (ts, forwards) = query.parse()?;
    let reader = Reader::User(&auth.user_id);
    let found = state.rooms.timestamp_to_event(room.as_str(), reader, ts, forwards).await?;
    Ok(Json(json!({"event_id": found.event_id, "origin_server_ts": found.origin_server_ts})))
}

/// The client API v1 path of a room (relations and threads).
const V1: &str = "/_matrix/client/v1/rooms/{room}";

#[derive(Debug, Deserialize, Default)]
struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
    recurse: Option<bool>,
}

async fn relations(
    State(state): AppState,
    auth: Auth,
    Params((room, event)): Params<(String, String)>,
    Query(query): Query<RelationsQuery>,
) -> JsonResult {
    related(&state, &auth, &room, &event, None, None, query).await
}

async fn relations_of_type(
    State(state): AppState,
    auth: Auth,
    Params((room, event, rel_type)): Params<(String, String, String)>,
    Query(query): Query<RelationsQuery>,
) -> JsonResult {
    related(&state, &auth, &room, &event, Some(&rel_type), None, query).await
}

async fn relations_of_type_and_kind(
    State(state): AppState,
    auth: Auth,
    Params((room, event, rel_type, kind)): Params<(String, String, String, String)>,
    Query(query): Query<RelationsQuery>,
) -> JsonResult {
    related(&state, &auth, &room, &event, Some(&rel_type), Some(&kind), query).await
}

/// A pagination token of `/relations` or `/threads` (a `/messages` or `/sync` token too).
fn parse_token(
    token: Option<&str>,
    name: &str,
) -> Result<Option<matrix_storage::StreamPos>, ApiError> {
    token
        .map(|t| {
            parse_room_token(t).ok_or_else(|| {
                ApiError::invalid_param(format!("`{name}` is not a pagination token"))
            })
        })
        .transpose()
}

#[allow(clippy::too_many_arguments)]
async fn related(
    state: &crate::State,
    auth: &Auth,
    room: &str,
    event: &str,
    rel_type: Option<&str>,
    kind: Option<&str>,
    query: RelationsQuery,
) -> JsonResult {
    let room = room_id(room)?;
    let direction = match query.dir.as_deref() {
        Some("b") | None => Direction::Backwards,
        Some("f") => Direction::Forwards,
        Some(_) => return Err(ApiError::invalid_param("dir must be b or f")),
    };
    let from = parse_token(query.from.as_deref(), "from")?;
    let to = parse_token(query.to.as_deref(), "to")?;
    let page = state
        .rooms
        .relations(
            room.as_str(),
            &auth.user_id,
            event,
            RelationsQueryOf {
                rel_type,
                kind,
                from,
                to,
                direction,
                limit: query.limit.unwrap_or(relations::DEFAULT_LIMIT),
                recurse: query.recurse.unwrap_or(false),
            },
        )
        .await?;
    let mut response = json!({
        "chunk": state.rooms.show_all(&page.events, Some(auth.viewer())).await?,
    });
    if let Some(next) = page.next {
        response["next_batch"] = json!(room_token(next));
    }
    if let Some(from) = &query.from {
        response["prev_batch"] = json!(from);
    }
    if query.recurse.is_some() {
        let depth = if query.recurse == Some(true) { relations::RECURSION_DEPTH } else { 1 };
        response["recursion_depth"] = json!(depth);
    }
    Ok(Json(response))
}

#[derive(Debug, Deserialize, Default)]
struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    limit: Option<usize>,
}

async fn threads(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    Query(query): Query<ThreadsQuery>,
) -> JsonResult {
    let room = room_id(&room)?;
    let participated = match query.include.as_deref() {
        Some("all") | None => false,
        Some("participated") => true,
        Some(_) => return Err(ApiError::invalid_param("include must be all or participated")),
    };
    if query.limit == Some(0) {
        return Err(ApiError::invalid_param("limit must be greater than zero"));
    }
    let from = parse_token(query.from.as_deref(), "from")?;
    let page = state
        .rooms
        .threads(
            room.as_str(),
            &auth.user_id,
            participated,
            from,
            query.limit.unwrap_or(relations::DEFAULT_LIMIT),
        )
        .await?;
    let mut response = json!({
        "chunk": state.rooms.show_all(&page.events, Some(auth.viewer())).await?,
    });
    if let Some(next) = page.next {
        response["next_batch"] = json!(room_token(next));
    }
    Ok(Json(response))
}
