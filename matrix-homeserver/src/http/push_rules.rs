//! Push rules (client-server API, "Push Rules: API"): read, add, move, remove, enable and
//! set the actions of a user's rules.
//!
//! A user has the spec's default rules (ruma's `Ruleset::server_default`) until they change
//! one; from then on the whole rule set is kept as the server-managed global account data
//! `m.push_rules` (content `{"global": ...}`, as Synapse keeps it), which `/sync` also sends,
//! so clients learn of changes made on another device. A user keeps at most
//! `limits.max_push_rules` rules of their own, in at most `limits.max_push_rules_bytes`, and
//! changes are rate limited as account-data writes.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ruma::push::{
    Action, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
    NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Auth, JsonBody, JsonResult, Params, Query, Routes, route};
use crate::error::ApiError;
use crate::services::rate_limit::Action as Limited;

type AppState = State<Arc<crate::State>>;

use crate::services::rooms::notify::PUSH_RULES;

pub(super) fn routes() -> Routes {
    const P: &str = "/_matrix/client/v3/pushrules";
    Router::new()
        .route(P, route(get(all_rules)))
        .route(&format!("{P}/"), route(get(all_rules)))
        .route(&format!("{P}/{{scope}}/"), route(get(scope_rules)))
        .route(
            &format!("{P}/{{scope}}/{{kind}}/{{rule}}"),
            route(get(get_rule).put(put_rule).delete(delete_rule)),
        )
        .route(
            &format!("{P}/{{scope}}/{{kind}}/{{rule}}/enabled"),
            route(get(get_enabled).put(put_enabled)),
        )
        .route(
            &format!("{P}/{{scope}}/{{kind}}/{{rule}}/actions"),
            route(get(get_actions).put(put_actions)),
        )
}

/// The user's rule set: what they saved, else the defaults.
async fn load(state: &crate::State, user: &ruma::UserId) -> Result<Ruleset, ApiError> {
    crate::services::rooms::notify::rules_of(state.rooms.storage().as_ref(), user).await
}

/// Changes the user's rule set with `change` and saves it, one change at a time per server.
async fn update(
    state: &crate::State,
    auth: &Auth,
    change: impl FnOnce(&mut Ruleset) -> Result<(), ApiError>,
) -> JsonResult {
    let user = &auth.user_id;
    // A change of push rules is an account-data write, and limited as one.
    auth.limit(&state.limiter, Limited::AccountData)?;
    let _guard = state.push_rules_lock.lock().await;
    let mut rules = load(state, user).await?;
    change(&mut rules)?;
    let limits = &state.config.limits;
    let own = rules.iter().filter(|r| !r.is_server_default()).count();
    if own > limits.max_push_rules {
        return Err(ApiError::limit_exceeded_with(
            0,
            format!("at most {} push rules of one's own", limits.max_push_rules),
        ));
    }
    let bytes = serde_json::to_vec(&json!({"global": rules}))
        .map_err(|e| ApiError::unknown(e.to_string()))?;
    // Each rule's actions, conditions and pattern come from the client: the whole set is
    // bounded too, as every sync of every device carries it.
    if bytes.len() > limits.max_push_rules_bytes {
        return Err(ApiError::list_too_long("the push rule set", limits.max_push_rules_bytes));
    }
    state.user_data_put(user, None, PUSH_RULES, bytes).await?;
    Ok(Json(json!({})))
}

fn to_json(rules: &Ruleset) -> Result<Value, ApiError> {
    serde_json::to_value(rules).map_err(|e| ApiError::unknown(e.to_string()))
}

/// The kind a `{scope}/{kind}` path names (the only scope is `global`).
fn rule_kind(scope: &str, kind: &str) -> Result<RuleKind, ApiError> {
    if scope != "global" {
        return Err(ApiError::invalid_param("the only push rule scope is global"));
    }
    Ok(match kind {
        "override" => RuleKind::Override,
        "underride" => RuleKind::Underride,
        "sender" => RuleKind::Sender,
        "room" => RuleKind::Room,
        "content" => RuleKind::Content,
        _ => return Err(ApiError::invalid_param(format!("{kind:?} is not a push rule kind"))),
    })
}

fn no_such_rule() -> ApiError {
    ApiError::not_found("no such push rule")
}

async fn all_rules(State(state): AppState, auth: Auth) -> JsonResult {
    Ok(Json(json!({"global": to_json(&load(&state, &auth.user_id).await?)?})))
}

async fn scope_rules(
    State(state): AppState,
    auth: Auth,
    Params(scope): Params<String>,
) -> JsonResult {
    if scope != "global" {
        return Err(ApiError::invalid_param("the only push rule scope is global"));
    }
    Ok(Json(to_json(&load(&state, &auth.user_id).await?)?))
}

async fn get_rule(
    State(state): AppState,
    auth: Auth,
    Params((scope, kind, rule)): Params<(String, String, String)>,
) -> JsonResult {
    rule_kind(&scope, &kind)?;
    let rules = to_json(&load(&state, &auth.user_id).await?)?;
    rules[kind.as_str()]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["rule_id"] == rule.as_str()))
        .map(|r| Json(r.clone()))
        .ok_or_else(no_such_rule)
}

#[derive(Debug, Deserialize, Default)]
struct Position {
    before: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NewRule {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Option<Vec<PushCondition>>,
    #[serde(default)]
    pattern: Option<String>,
}

async fn put_rule(
    State(state): AppState,
    auth: Auth,
    Params((scope, kind, rule)): Params<(String, String, String)>,
    Query(position): Query<Position>,
    JsonBody(body): JsonBody<NewRule>,
) -> JsonResult {
    let new = match rule_kind(&scope, &kind)? {
        RuleKind::Override | RuleKind::Underride => {
            let conditions = body.conditions.unwrap_or_default();
            // Bounded work per event: few conditions, short keys and patterns.
            matrix_core::push::check_conditions(&conditions)
                .map_err(|e| ApiError::invalid_param(e.to_string()))?;
            let new = NewConditionalPushRule::new(rule.clone(), conditions, body.actions);
            if kind == "override" {
                NewPushRule::Override(new)
            } else {
                NewPushRule::Underride(new)
            }
        }
        RuleKind::Content => {
            let pattern =
                body.pattern.ok_or_else(|| ApiError::bad_json("a content rule needs a pattern"))?;
            matrix_core::push::check_pattern(&pattern)
                .map_err(|e| ApiError::invalid_param(e.to_string()))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule.clone(), pattern, body.actions))
        }
        RuleKind::Room => {
            let room = ruma::RoomId::parse(&rule)
                .map_err(|_| ApiError::invalid_param("a room rule's id is a room id"))?;
            NewPushRule::Room(NewSimplePushRule::new(room, body.actions))
        }
        RuleKind::Sender => {
            let sender = ruma::UserId::parse(&rule)
                .map_err(|_| ApiError::invalid_param("a sender rule's id is a user id"))?;
            NewPushRule::Sender(NewSimplePushRule::new(sender, body.actions))
        }
        _ => return Err(ApiError::invalid_param("not a push rule kind")),
    };
    update(&state, &auth, |rules| {
        rules.insert(new, position.after.as_deref(), position.before.as_deref()).map_err(
            |e| match e {
                InsertPushRuleError::UnknownRuleId => {
                    ApiError::not_found("the before or after rule does not exist")
                }
                other => ApiError::invalid_param(other.to_string()),
            },
        )
    })
    .await
}

async fn delete_rule(
    State(state): AppState,
    auth: Auth,
    Params((scope, kind, rule)): Params<(String, String, String)>,
) -> JsonResult {
    let kind = rule_kind(&scope, &kind)?;
    update(&state, &auth, |rules| {
        rules.remove(kind, &rule).map_err(|e| match e {
            RemovePushRuleError::NotFound => no_such_rule(),
            other => ApiError::invalid_param(other.to_string()),
        })
    })
    .await
}

async fn get_enabled(
    State(state): AppState,
    auth: Auth,
    Params(path): Params<(String, String, String)>,
) -> JsonResult {
    let rules = load(&state, &auth.user_id).await?;
    let found = find(&rules, &path)?;
    Ok(Json(json!({"enabled": found.enabled()})))
}

/// The rule a `{scope}/{kind}/{ruleId}` path names.
fn find<'a>(
    rules: &'a Ruleset,
    (scope, kind, rule): &(String, String, String),
) -> Result<ruma::push::AnyPushRuleRef<'a>, ApiError> {
    rules.get(rule_kind(scope, kind)?, rule).ok_or_else(no_such_rule)
}

#[derive(Debug, Deserialize)]
struct Enabled {
    enabled: bool,
}

async fn put_enabled(
    State(state): AppState,
    auth: Auth,
    Params((scope, kind, rule)): Params<(String, String, String)>,
    JsonBody(body): JsonBody<Enabled>,
) -> JsonResult {
    let kind = rule_kind(&scope, &kind)?;
    update(&state, &auth, |rules| {
        rules.set_enabled(kind, &rule, body.enabled).map_err(|_| no_such_rule())
    })
    .await
}

async fn get_actions(
    State(state): AppState,
    auth: Auth,
    Params(path): Params<(String, String, String)>,
) -> JsonResult {
    let rules = load(&state, &auth.user_id).await?;
    let found = find(&rules, &path)?;
    Ok(Json(json!({"actions": found.actions()})))
}

#[derive(Debug, Deserialize)]
struct Actions {
    actions: Vec<Action>,
}

async fn put_actions(
    State(state): AppState,
    auth: Auth,
    Params((scope, kind, rule)): Params<(String, String, String)>,
    JsonBody(body): JsonBody<Actions>,
) -> JsonResult {
    let kind = rule_kind(&scope, &kind)?;
    update(&state, &auth, |rules| {
        rules.set_actions(kind, &rule, body.actions).map_err(|_| no_such_rule())
    })
    .await
}
