//! Fetching what a received PDU lacks from the server that sent it: its auth events
//! (`/event_auth`), and the state at a prev event we do not have (`/state_ids`, then the
//! events we lack with `/event`, or with one `/state` when they are many). The events are
//! checked and stored as outliers by `services/rooms/outliers.rs`.
//!
//! Everything the peer controls is bounded, per received PDU ([`Budget`]): the ids of one
//! answer ([`MAX_STATE_IDS`]), the events fetched ([`MAX_FETCHED_EVENTS`]) and their bytes
//! ([`MAX_FETCHED_BYTES`]), the requests ([`MAX_REQUESTS`]), the states fetched
//! ([`MAX_STATE_FILLS`]); and the time, per transaction ([`FETCH_TIME`]): every request is
//! cut at the transaction's deadline. A peer that answers garbage or too much gets its PDU
//! refused with a reason, and nothing of that state is stored; events of an answer that fail
//! their checks are left out, and only they (`state_at`).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use matrix_core::{Object, Pdu, RoomVersionRules, Value, auth};
use matrix_federation::FederationError;
use matrix_federation::inbound::StateIds;

use crate::State;
use crate::error::ApiError;
use crate::services::federation::Federation;
use crate::services::rooms::outliers::{Held, StateAt};

/// The most event ids one `/state_ids` answer may name (state and auth chain together), and
/// the most events one `/event_auth` answer may hold; past it the answer is refused whole.
pub(crate) const MAX_STATE_IDS: usize = 100_000;

/// The most events fetched for one received PDU.
pub(crate) const MAX_FETCHED_EVENTS: usize = 10_000;

/// The most bytes (canonical JSON) of the events fetched for one received PDU.
pub(crate) const MAX_FETCHED_BYTES: usize = 64 << 20;

/// The most requests made for one received PDU (with those for the events before it that
/// `/get_missing_events` gave).
pub(crate) const MAX_REQUESTS: usize = 40;

/// The most states (`/state_ids`) fetched for one received PDU.
pub(crate) const MAX_STATE_FILLS: usize = 2;

/// The most events we lack that are fetched one by one (`/event`); more are fetched with
/// one `/state`.
const MAX_SINGLE_FETCHES: usize = 10;

/// How long the fetching for one transaction may take, all its PDUs together: the sender
/// gets its answer (with an error for each PDU left undecided) well within the minute its
/// request times out after.
pub(crate) const FETCH_TIME: Duration = Duration::from_secs(30);

/// What one received PDU may still cost (module docs).
#[derive(Debug)]
pub(crate) struct Budget {
    deadline: Instant,
    requests: usize,
    events: usize,
    bytes: usize,
    state_fills: usize,
}

impl Budget {
    /// The full budget of one PDU, whose fetching ends at `deadline`.
    pub(crate) fn new(deadline: Instant) -> Self {
        Budget {
            deadline,
            requests: MAX_REQUESTS,
            events: MAX_FETCHED_EVENTS,
            bytes: MAX_FETCHED_BYTES,
            state_fills: MAX_STATE_FILLS,
        }
    }

    /// Takes one request: the time it may take, or why there is none.
    fn request(&mut self) -> Result<Duration, String> {
        let left = self.time_left()?;
        if self.requests == 0 {
            return Err(format!("more than {MAX_REQUESTS} requests would be needed"));
        }
        self.requests -= 1;
        Ok(left)
    }

    /// The time left, or why there is none.
    fn time_left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the time for fetching what the transaction lacks is up".to_owned());
        }
        Ok(left)
    }

    /// Takes `count` events.
    fn take_events(&mut self, count: usize) -> Result<(), String> {
        self.events = self.events.checked_sub(count).ok_or_else(|| {
            format!("more than {MAX_FETCHED_EVENTS} events would have to be fetched")
        })?;
        Ok(())
    }

    /// Takes `bytes` of fetched events.
    fn take_bytes(&mut self, bytes: usize) -> Result<(), String> {
        self.bytes = self.bytes.checked_sub(bytes).ok_or_else(|| {
            format!("the events to fetch are larger than {MAX_FETCHED_BYTES} bytes")
        })?;
        Ok(())
    }

    /// Takes one state fetch, if any is left.
    pub(crate) fn take_state_fill(&mut self) -> bool {
        let left = self.state_fills > 0;
        self.state_fills = self.state_fills.saturating_sub(1);
        left
    }
}

/// The outcome of a fetch: `Ok(Ok(()))` done, `Ok(Err(reason))` refused (the peer's answer
/// was unusable), `Err` our own failure (storage).
pub(crate) type Fetched = Result<Result<(), String>, ApiError>;

/// Makes one request within the budget (its time cut at the deadline).
pub(crate) async fn ask<T>(
    budget: &mut Budget,
    what: &str,
    request: impl Future<Output = Result<T, FederationError>>,
) -> Result<T, String> {
    let left = budget.request()?;
    match tokio::time::timeout(left, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in time")),
    }
}

/// Where a fetch happens: the room, its version, the server asked.
pub(crate) struct Gap<'a> {
    pub(crate) state: &'a State,
    pub(crate) federation: &'a Federation,
    pub(crate) origin: &'a str,
    pub(crate) rules: &'static RoomVersionRules,
    pub(crate) room_id: &'a str,
}

/// Fetches the auth chain of `event_id` (`/event_auth`) and stores, as outliers, those of its
/// events we lack that pass their checks.
pub(crate) async fn auth_events(gap: &Gap<'_>, event_id: &str, budget: &mut Budget) -> Fetched {
    let client = gap.federation.client();
    let answer =
        match ask(budget, "event_auth", client.event_auth(gap.origin, gap.room_id, event_id)).await
        {
            Ok(answer) => answer,
            Err(reason) => return Ok(Err(reason)),
        };
    let Some(Value::Array(chain)) = answer.get("auth_chain") else {
        return Ok(Err("the event_auth answer has no auth_chain list".to_owned()));
    };
    if chain.len() > MAX_STATE_IDS {
        return Ok(Err(format!("the event_auth answer has more than {MAX_STATE_IDS} events")));
    }
    let mut wanted = BTreeSet::new();
    let mut objects = Vec::new();
    for object in chain.iter().filter_map(Value::as_object) {
        let Ok(pdu) = Pdu::from_object(object.clone(), gap.rules) else { continue };
        if matches!(gap.state.rooms.held(gap.room_id, pdu.event_id()).await?, Held::Unknown)
            && wanted.insert(pdu.event_id().to_owned())
        {
            objects.push(object.clone());
        }
    }
    if let Err(reason) = take(budget, &objects) {
        return Ok(Err(reason));
    }
    let rooms = &gap.state.rooms;
    let keys = gap.federation.keys();
    let checked = rooms.check_fetched(keys, gap.rules, gap.room_id, &wanted, objects).await?;
    rooms.store_outliers(gap.room_id, checked.into_values().collect(), None).await?;
    Ok(Ok(()))
}

/// Takes the events of `objects` (their count and bytes) from the budget.
fn take(budget: &mut Budget, objects: &[Object]) -> Result<(), String> {
    budget.take_events(objects.len())?;
    budget.take_bytes(objects.iter().map(Object::canonical_len).sum())
}

/// The ids of a `/state_ids` answer: the state's (`pdu_ids`) and the auth chain's.
fn state_ids_of(answer: &Object) -> Result<(Vec<String>, Vec<String>), String> {
    let list = |field: &str| -> Result<Vec<String>, String> {
        let Some(Value::Array(ids)) = answer.get(field) else {
            return Err(format!("the state_ids answer has no {field} list"));
        };
        if ids.len() > MAX_STATE_IDS {
            return Err(format!("the state_ids answer names more than {MAX_STATE_IDS} events"));
        }
        ids.iter()
            .map(|id| match id.as_str() {
                Some(id) if id.starts_with('$') => Ok(id.to_owned()),
                _ => Err(format!("the state_ids answer's {field} holds something not an id")),
            })
            .collect()
    };
    let (state, chain) = (list("pdu_ids")?, list("auth_chain_ids")?);
    if state.len() + chain.len() > MAX_STATE_IDS {
        return Err(format!("the state_ids answer names more than {MAX_STATE_IDS} events"));
    }
    Ok((state, chain))
}

/// Fetches the state at `prev` (a prev event of a received PDU that we lack, or hold without
/// its state): the ids with `/state_ids`, the events we lack, each checked; then stores them
/// as outliers, and `prev` with the state after it. An event of the state or its auth chain
/// that is not sent, fails its checks (or needs one that does) or was rejected here is left
/// out of the state, and only it (logged); the rest is taken if it is still a state of this
/// room. Refused whole if an event named is of another room (a lie about the room); if `prev`
/// itself fails its checks; if the state has no create event or another than the room's, or
/// two events for one key; or if `prev` is not authorized by it.
pub(crate) async fn state_at(gap: &Gap<'_>, prev: &str, budget: &mut Budget) -> Fetched {
    let client = gap.federation.client();
    let answer =
        match ask(budget, "state_ids", client.state_ids(gap.origin, gap.room_id, prev)).await {
            Ok(answer) => answer,
            Err(reason) => return Ok(Err(reason)),
        };
    let (state_ids, chain_ids) = match state_ids_of(&answer) {
        Ok(ids) => ids,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut held: HashMap<String, Arc<Pdu>> = HashMap::new();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut dropped: Vec<(String, String)> = Vec::new();
    let all = state_ids.iter().chain(&chain_ids).map(String::as_str);
    for (n, id) in all.chain(std::iter::once(prev)).enumerate() {
        if n % 1_000 == 999
            && let Err(reason) = budget.time_left()
        {
            return Ok(Err(reason));
        }
        if held.contains_key(id) || wanted.contains(id) {
            continue;
        }
        match gap.state.rooms.held(gap.room_id, id).await? {
            Held::Usable(pdu) => {
                held.insert(id.to_owned(), pdu);
            }
            Held::Unknown => {
                wanted.insert(id.to_owned());
            }
            Held::Refused(reason) => return Ok(Err(format!("the state at {prev}: {reason}"))),
            Held::Rejected(reason) if id != prev => dropped.push((id.to_owned(), reason)),
            Held::Rejected(reason) => return Ok(Err(format!("prev event {prev}: {reason}"))),
        }
    }
    if let Err(reason) = budget.take_events(wanted.len()) {
        return Ok(Err(reason));
    }
    let objects = match events(gap, prev, &wanted, budget).await {
        Ok(objects) => objects,
        Err(reason) => return Ok(Err(reason)),
    };
    if let Err(reason) = budget.take_bytes(objects.iter().map(Object::canonical_len).sum()) {
        return Ok(Err(reason));
    }
    let rooms = &gap.state.rooms;
    let keys = gap.federation.keys();
    let checked = rooms.check_fetched(keys, gap.rules, gap.room_id, &wanted, objects).await?;
    if wanted.contains(prev) && !checked.contains_key(prev) {
        return Ok(Err(format!("prev event {prev} was not sent or failed its checks")));
    }
    for id in wanted.iter().filter(|id| !checked.contains_key(*id)) {
        dropped.push((id.clone(), "not sent, or failed its checks".to_owned()));
    }
    log_dropped(gap, prev, &dropped);
    let event = |id: &str| checked.get(id).or_else(|| held.get(id).map(Arc::as_ref));
    let after = match state_after(gap, prev, &state_ids, &event).await? {
        Ok(after) => after,
        Err(reason) => return Ok(Err(reason)),
    };
    let state_at = StateAt { event_id: prev.to_owned(), state: after };
    rooms.store_outliers(gap.room_id, checked.into_values().collect(), Some(state_at)).await?;
    Ok(Ok(()))
}

/// The most events left out of a state that are named in the log, one line per state.
const MAX_LOGGED_DROPS: usize = 10;

/// Says which events of the state at `prev` were left out, and why (the first few).
fn log_dropped(gap: &Gap<'_>, prev: &str, dropped: &[(String, String)]) {
    if dropped.is_empty() {
        return;
    }
    let named: Vec<String> = dropped
        .iter()
        .take(MAX_LOGGED_DROPS)
        .map(|(id, reason)| format!("{id} ({reason})"))
        .collect();
    let more = dropped.len().saturating_sub(MAX_LOGGED_DROPS);
    tracing::warn!(
        "federation: the state at {prev} in {} from {}: {} events left out: {}{}",
        gap.room_id,
        gap.origin,
        dropped.len(),
        named.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    );
}

/// The events of `wanted`: one by one (`/event`) when they are few, else with one `/state` at
/// `prev` (and `prev` itself by `/event`). Only events whose id is wanted are kept.
async fn events(
    gap: &Gap<'_>,
    prev: &str,
    wanted: &BTreeSet<String>,
    budget: &mut Budget,
) -> Result<Vec<Object>, String> {
    let mut objects = Vec::with_capacity(wanted.len());
    if wanted.len() <= MAX_SINGLE_FETCHES {
        for id in wanted {
            objects.push(event(gap, id, budget).await?);
        }
        return Ok(objects);
    }
    let client = gap.federation.client();
    let answer = ask(budget, "state", client.state(gap.origin, gap.room_id, prev)).await?;
    let mut kept = BTreeSet::new();
    for field in ["pdus", "auth_chain"] {
        let Some(Value::Array(list)) = answer.get(field) else {
            return Err(format!("the state answer has no {field} list"));
        };
        for object in list.iter().take(MAX_STATE_IDS).filter_map(Value::as_object) {
            let Ok(pdu) = Pdu::from_object(object.clone(), gap.rules) else { continue };
            if wanted.contains(pdu.event_id()) && kept.insert(pdu.event_id().to_owned()) {
                objects.push(object.clone());
            }
        }
    }
    if wanted.contains(prev) && !kept.contains(prev) {
        objects.push(event(gap, prev, budget).await?);
    }
    Ok(objects)
}

/// One event by `/event/{id}`.
async fn event(gap: &Gap<'_>, id: &str, budget: &mut Budget) -> Result<Object, String> {
    let client = gap.federation.client();
    let answer = ask(budget, "event", client.event(gap.origin, id)).await?;
    match answer.get("pdus") {
        Some(Value::Array(pdus)) => pdus
            .first()
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| format!("the answer for event {id} holds no event")),
        _ => Err(format!("the answer for event {id} has no pdus list")),
    }
}

/// The state after `prev`: the state before it (`state_ids`, less the ids `event` does not
/// give: those left out), checked to be a state of this room, then `prev` checked against it
/// and applied.
async fn state_after<'e>(
    gap: &Gap<'_>,
    prev: &str,
    state_ids: &[String],
    event: &impl Fn(&str) -> Option<&'e Pdu>,
) -> Result<Result<StateIds, String>, ApiError> {
    let mut before = StateIds::new();
    for id in state_ids {
        let Some(pdu) = event(id) else { continue };
        let Some(state_key) = pdu.state_key() else {
            return Ok(Err(format!("the state at {prev} holds {id}, which is no state event")));
        };
        let key = (pdu.kind().to_owned(), state_key.to_owned());
        if before.insert(key, id.clone()).is_some() {
            return Ok(Err(format!("the state at {prev} holds two events for one key")));
        }
    }
    let create_key = ("m.room.create".to_owned(), String::new());
    let ours = gap.state.rooms.storage().room(gap.room_id).await?.and_then(|r| r.current_state);
    let our_create = match ours {
        Some(snapshot) => gap.state.rooms.state_pdu(snapshot, "m.room.create", "").await?,
        None => None,
    };
    if our_create.map(|c| c.event_id().to_owned()).as_ref() != before.get(&create_key) {
        return Ok(Err(format!("the state at {prev} has not the room's create event")));
    }
    let Some(prev_pdu) = event(prev) else {
        return Ok(Err(format!("prev event {prev} is not known")));
    };
    let mut keys = auth::auth_types_for_event(gap.rules, prev_pdu);
    keys.push(create_key);
    let auth_state: HashMap<(String, String), Pdu> = keys
        .into_iter()
        .filter_map(|key| {
            let pdu = before.get(&key).and_then(|id| event(id))?;
            Some((key, pdu.clone()))
        })
        .collect();
    if let Err(reason) = auth::check(gap.rules, prev_pdu, &auth_state) {
        return Ok(Err(format!(
            "prev event {prev} is not allowed by the state before it: {reason}"
        )));
    }
    let mut after = before;
    if let Some(state_key) = prev_pdu.state_key() {
        after.insert((prev_pdu.kind().to_owned(), state_key.to_owned()), prev.to_owned());
    }
    Ok(Ok(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(state: Value, chain: Value) -> Object {
        let mut answer = Object::new();
        answer.insert("pdu_ids", state);
        answer.insert("auth_chain_ids", chain);
        answer
    }

    fn ids(n: usize) -> Value {
        Value::Array((0..n).map(|i| Value::from(format!("$e{i}"))).collect())
    }

    #[test]
    fn a_state_ids_answer_is_taken_only_when_well_formed_and_bounded() {
        let (state, chain) = state_ids_of(&answer(ids(3), ids(2))).expect("a good answer");
        assert_eq!((state.len(), chain.len()), (3, 2));
        assert!(state_ids_of(&Object::new()).is_err(), "no lists");
        assert!(state_ids_of(&answer(Value::from(5_i64), ids(1))).is_err(), "not a list");
        let not_ids = Value::Array(vec![Value::from(1_i64), Value::from("x")]);
        assert!(state_ids_of(&answer(not_ids, ids(1))).is_err(), "not ids");
        assert!(state_ids_of(&answer(ids(MAX_STATE_IDS + 1), ids(0))).is_err(), "too many");
        assert!(state_ids_of(&answer(ids(MAX_STATE_IDS), ids(1))).is_err(), "too many together");
    }

    #[test]
    fn a_budget_runs_out() {
        let mut budget = Budget::new(Instant::now() + Duration::from_secs(60));
        assert!(budget.take_events(MAX_FETCHED_EVENTS).is_ok());
        assert!(budget.take_events(1).is_err(), "no events left");
        assert!(budget.take_bytes(MAX_FETCHED_BYTES + 1).is_err(), "too many bytes");
        for _ in 0..MAX_REQUESTS {
            assert!(budget.request().is_ok());
        }
        assert!(budget.request().is_err(), "no requests left");
        assert!((0..MAX_STATE_FILLS).all(|_| budget.take_state_fill()));
        assert!(!budget.take_state_fill(), "no state fetch left");
        let late = Budget::new(Instant::now());
        assert!(late.time_left().is_err(), "no time left");
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_is_given_up_at_the_deadline() {
        let mut budget = Budget::new(Instant::now() + Duration::from_millis(50));
        let never = std::future::pending::<Result<Object, FederationError>>();
        let started = Instant::now();
        let answer = ask(&mut budget, "state_ids", never).await;
        assert_eq!(answer, Err("state_ids: no answer in time".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(5));
        let next = ask(&mut budget, "event", async { Ok(Object::new()) }).await;
        assert!(next.is_err_and(|reason| reason.contains("time")), "no time is left");
    }
}
