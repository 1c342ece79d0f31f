//! Server-side search (`POST /search`, the `room_events` category) and reporting content
//! (events, rooms, users).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use matrix_storage::{Direction, SearchOrder};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, room_id, route, user_id};
use crate::error::ApiError;
use crate::services::rate_limit::Action;
use crate::services::rooms::search::{
    EventSearch, KEYS, MAX_LIMIT, Results, batch_token, parse_batch,
};
use crate::services::rooms::{EventFilter, Page};
use crate::services::sync::{parse_filter, room_token};

type AppState = State<Arc<crate::State>>;

/// The most events of context asked on either side of a result.
const MAX_CONTEXT: usize = 20;

pub(super) fn routes() -> Routes {
    Router::new()
        .route("/_matrix/client/v3/search", route(post(search)))
        .route("/_matrix/client/v3/rooms/{room}/report/{event}", route(post(report_event)))
        .route("/_matrix/client/v3/rooms/{room}/report", route(post(report_room)))
        .route("/_matrix/client/v3/users/{user}/report", route(post(report_user)))
}

#[derive(Debug, Deserialize)]
struct SearchBody {
    search_categories: Categories,
}

#[derive(Debug, Deserialize)]
struct Categories {
    room_events: Option<RoomEvents>,
}

#[derive(Debug, Deserialize)]
struct RoomEvents {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<Value>,
    order_by: Option<String>,
    event_context: Option<ContextSpec>,
    #[serde(default)]
    include_state: bool,
    groupings: Option<Groupings>,
}

#[derive(Debug, Deserialize)]
struct ContextSpec {
    before_limit: Option<u64>,
    after_limit: Option<u64>,
    #[serde(default)]
    include_profile: bool,
}

#[derive(Debug, Deserialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    key: String,
}

#[derive(Debug, Deserialize, Default)]
struct SearchQuery {
    next_batch: Option<String>,
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

/// The checked search of a `room_events` criteria.
fn event_search(
    limits: &crate::config::LimitsConfig,
    criteria: &RoomEvents,
    next_batch: Option<&str>,
) -> Result<EventSearch, ApiError> {
    let order = match criteria.order_by.as_deref() {
        None | Some("rank") => SearchOrder::Rank,
        Some("recent") => SearchOrder::Recent,
        Some(_) => return Err(ApiError::invalid_param("order_by must be rank or recent")),
    };
    let keys = match &criteria.keys {
        None => Vec::new(),
        Some(keys) => {
            if let Some(bad) = keys.iter().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(ApiError::invalid_param(format!(
                    "keys may hold content.body, content.name and content.topic, not {bad}"
                )));
            }
            let set: BTreeSet<&String> = keys.iter().collect();
            set.into_iter().cloned().collect()
        }
    };
    let (filter, rooms, not_rooms, limit) = match &criteria.filter {
        None => (EventFilter::default(), None, Vec::new(), 10),
        Some(json) => {
            if !json.is_object() {
                return Err(ApiError::bad_json("filter must be an object"));
            }
            super::user::check_filter(limits, json)?;
            let filter = parse_filter(&json!({"room": {"timeline": json.clone()}})).timeline;
            let limit = match &json["limit"] {
                Value::Null => 10,
                value => value
                    .as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::invalid_param("filter limit must be positive"))?,
            };
            (
                filter,
                strings(&json["rooms"]),
                strings(&json["not_rooms"]).unwrap_or_default(),
                limit,
            )
        }
    };
    let from = next_batch.map(|token| parse_batch(token, order)).transpose()?;
    Ok(EventSearch {
        term: criteria.search_term.clone(),
        keys,
        order,
        filter,
        rooms,
        not_rooms,
        limit: usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
        from,
    })
}

fn page_token(page: Page) -> String {
    match page {
        Page::Stream(pos) => room_token(pos),
        Page::Backfill(pos) => format!("b{}", pos.0),
    }
}

async fn search(
    State(state): AppState,
    auth: Auth,
    Query(query): Query<SearchQuery>,
    JsonBody(body): JsonBody<SearchBody>,
) -> JsonResult {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(json!({"search_categories": {}})));
    };
    let search = event_search(&state.config.limits, &criteria, query.next_batch.as_deref())?;
    let mut group_by = BTreeSet::new();
    for group in criteria.groupings.iter().flat_map(|g| &g.group_by) {
        if !matches!(group.key.as_str(), "room_id" | "sender") {
            return Err(ApiError::invalid_param("groupings may group by room_id or sender"));
        }
        group_by.insert(group.key.as_str());
    }
    let results = state.rooms.search(&auth.user_id, &search).await?;
    let mut answer = json!({
        "count": results.count,
        "highlights": results.highlights,
        "results": [],
    });
    let next_batch = results.next.map(batch_token);
    if let Some(next) = &next_batch {
        answer["next_batch"] = json!(next);
    }
    answer["results"] =
        json!(shown_results(&state, &auth, &results, criteria.event_context).await?);
    if !group_by.is_empty() {
        answer["groups"] = groups(&results, &group_by, next_batch.as_deref());
    }
    if criteria.include_state {
        let mut rooms_state = serde_json::Map::new();
        let shown: BTreeSet<&str> = results.found.iter().map(|f| f.pdu.room_id()).collect();
        for (room, visibility) in &results.rooms {
            if shown.contains(room.as_str()) {
                let events = state.rooms.state_events(visibility.snapshot()).await?;
                rooms_state.insert(room.clone(), json!(state.rooms.show_all(&events, None).await?));
            }
        }
        answer["state"] = Value::Object(rooms_state);
    }
    Ok(Json(json!({"search_categories": {"room_events": answer}})))
}

/// Each result with its rank and, when asked, its context.
async fn shown_results(
    state: &crate::State,
    auth: &Auth,
    results: &Results,
    context: Option<ContextSpec>,
) -> Result<Vec<Value>, ApiError> {
    let rooms = &state.rooms;
    let device = Some(auth.viewer());
    let mut out = Vec::with_capacity(results.found.len());
    for found in &results.found {
        let mut result = json!({
            "rank": found.rank,
            "result": rooms.show(&found.pdu, device).await?,
        });
        if let Some(spec) = &context {
            let before = spec.before_limit.map_or(5, |n| usize::try_from(n).unwrap_or(MAX_CONTEXT));
            let after = spec.after_limit.map_or(5, |n| usize::try_from(n).unwrap_or(MAX_CONTEXT));
            let room = found.pdu.room_id();
            let mut context = json!({});
            let mut senders = BTreeSet::from([found.pdu.sender().to_owned()]);
            for (key, end, direction, limit) in [
                ("events_before", "start", Direction::Backwards, before.min(MAX_CONTEXT)),
                ("events_after", "end", Direction::Forwards, after.min(MAX_CONTEXT)),
            ] {
                let mut events = Vec::new();
                let mut reached = Page::Stream(found.pos);
                if limit > 0 {
                    let (_, chunk) = rooms
                        .messages(
                            None,
                            room,
                            &auth.user_id,
                            Some(Page::Stream(found.pos)),
                            None,
                            direction,
                            limit,
                            &EventFilter::default(),
                        )
                        .await?;
                    reached = chunk.reached;
                    senders.extend(chunk.events.iter().map(|e| e.sender().to_owned()));
                    events = rooms.show_all(&chunk.events, device).await?;
                }
                context[key] = json!(events);
                context[end] = json!(page_token(reached));
            }
            if spec.include_profile {
                context["profile_info"] = profiles(state, &found.pdu, &senders).await?;
            }
            result["context"] = context;
        }
        out.push(result);
    }
    Ok(out)
}

/// The senders' profiles in the room as of the result (their member events then).
async fn profiles(
    state: &crate::State,
    pdu: &matrix_core::Pdu,
    senders: &BTreeSet<String>,
) -> Result<Value, ApiError> {
    let mut out = serde_json::Map::new();
    let Some(snapshot) = state.rooms.state_at(pdu.event_id()).await? else {
        return Ok(Value::Object(out));
    };
    for sender in senders {
        let mut profile = serde_json::Map::new();
        if let Some(member) = state.rooms.state_pdu(snapshot, "m.room.member", sender).await? {
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = member.content().get_str(field) {
                    profile.insert(field.to_owned(), json!(value));
                }
            }
        }
        out.insert(sender.clone(), Value::Object(profile));
    }
    Ok(Value::Object(out))
}

/// The results grouped by room or sender: each group's event ids in order, its order among
/// the groups (of first appearance).
fn groups(results: &Results, group_by: &BTreeSet<&str>, next_batch: Option<&str>) -> Value {
    let mut out = serde_json::Map::new();
    for key in group_by {
        let mut groups: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
        for found in &results.found {
            let value = if *key == "room_id" { found.pdu.room_id() } else { found.pdu.sender() };
            let order = groups.len();
            let group = groups.entry(value.to_owned()).or_insert((order, Vec::new()));
            group.1.push(found.pdu.event_id().to_owned());
        }
        let groups: serde_json::Map<String, Value> = groups
            .into_iter()
            .map(|(value, (order, ids))| {
                let mut group = json!({"order": order, "results": ids});
                if let Some(next) = next_batch {
                    group["next_batch"] = json!(next);
                }
                (value, group)
            })
            .collect();
        out.insert((*key).to_owned(), Value::Object(groups));
    }
    Value::Object(out)
}

#[derive(Debug, Deserialize)]
struct EventReportBody {
    reason: Option<String>,
    score: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ReportBody {
    reason: String,
}

async fn report_event(
    State(state): AppState,
    auth: Auth,
    Params((room, event)): Params<(String, String)>,
    JsonBody(body): JsonBody<EventReportBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::Message)?;
    // `score` left the spec in v1.18; a valid one from an older client is kept.
    let score = body.score.and_then(|s| s.as_i64()).filter(|s| (-100..=0).contains(s));
    state.rooms.report_event(&auth.user_id, room.as_str(), &event, body.reason, score).await?;
    Ok(Json(json!({})))
}

async fn report_room(
    State(state): AppState,
    auth: Auth,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> JsonResult {
    let room = room_id(&room)?;
    auth.limit(&state.limiter, Action::Message)?;
    state.rooms.report_room(&auth.user_id, room.as_str(), Some(body.reason)).await?;
    Ok(Json(json!({})))
}

async fn report_user(
    State(state): AppState,
    auth: Auth,
    Params(user): Params<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> JsonResult {
    let user = user_id(&user)?;
    auth.limit(&state.limiter, Action::Message)?;
    let ours = user.server_name().as_str() == state.rooms.server_name().as_str();
    state.rooms.report_user(&auth.user_id, &user, ours, Some(body.reason)).await?;
    Ok(Json(json!({})))
}
