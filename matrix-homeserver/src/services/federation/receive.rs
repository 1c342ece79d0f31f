//! Transactions other servers send us (`PUT /send/{txnId}`): deduplicated, each PDU checked
//! and stored (what it lacks fetched from the sender first: [`receive_pdu`]), each EDU handed
//! to the ephemeral service.
//!
//! The fetching is bounded per PDU and in time per transaction (`receive/fill.rs`), so that
//! a sender that answers slowly, wrongly or never still gets its answer: each PDU that could
//! not be decided has an `error` in it, and the sender may send it again later.

use matrix_core::{Object, Value};
use matrix_federation::inbound::{Incoming, receive_transaction};
use matrix_storage::ChangeSet;

use crate::State;
use crate::error::ApiError;
use crate::services::rooms::remote::{ReceiveError, Received};

mod fill;

use fill::{Budget, Gap};

/// The most events fetched with `get_missing_events` to fill one gap before a received event.
const MISSING_EVENTS_LIMIT: u32 = 20;

/// Handles a transaction from `origin`; answers the body of the 200 (`{"pdus": {id: {}}}`,
/// with an `error` for each PDU that was not accepted).
pub(crate) async fn transaction(
    state: &State,
    origin: &str,
    txn_id: &str,
    body: &[u8],
) -> Result<Object, ApiError> {
    let _timer = crate::metrics::service().inbound_transaction.start_timer();
    let federation = crate::http::federation::federation(state)?;
    let incoming = receive_transaction(state.rooms.storage().as_ref(), origin, txn_id, body)
        .await?
        .map_err(|e| ApiError::with_code(e.status(), e.errcode(), e.to_string()))?;
    let transaction = match incoming {
        Incoming::New(transaction) => transaction,
        // Processed before: every PDU was answered then.
        Incoming::Duplicate => return Ok(answer(Object::new())),
        _ => return Err(ApiError::unknown("a transaction state this server does not know")),
    };
    crate::metrics::service().transaction_received(transaction.pdus.len(), transaction.edus.len());
    let mut results = Object::new();
    let deadline = std::time::Instant::now() + fill::FETCH_TIME;
    for pdu in transaction.pdus.iter().cloned() {
        let event_id = event_id_of(&pdu, state).await;
        let room_id = pdu.get_str("room_id").unwrap_or_default().to_owned();
        let result = if !state.rooms.server_allowed(&room_id, origin).await? {
            Ok(Received::Rejected("the room's server ACL denies the sending server".to_owned()))
        } else if let Some(received) =
            state.rooms.out_of_band_membership(federation.keys(), origin, &pdu).await?
        {
            // A denied knock or revoked invite of our user, in a room we are not in.
            Ok(received)
        } else {
            receive_pdu(state, federation, origin, pdu, &mut Budget::new(deadline)).await
        };
        let mut entry = Object::new();
        match result {
            Ok(Received::Accepted(_) | Received::Known) => {}
            Ok(Received::SoftFailed(reason)) => {
                // Stored, not shown: for the sender it was received.
                let _ = reason;
            }
            Ok(Received::Rejected(reason)) => {
                entry.insert("error", reason);
            }
            Err(ReceiveError::Missing(id)) => {
                entry.insert("error", format!("event {id} is missing and could not be fetched"));
            }
            // Our failure (storage, a busy room), not the event's: the whole transaction is
            // answered with an error and not marked seen, so the sender sends it again (what
            // was stored of it is then known).
            Err(ReceiveError::Transient(e)) => return Err(e),
            Err(ReceiveError::Failed(e)) => {
                entry.insert("error", e.to_string());
            }
        }
        if let Some(event_id) = event_id {
            results.insert(event_id, entry);
        }
    }
    for edu in &transaction.edus {
        super::edus::received(state, origin, edu).await?;
    }
    let mut seen = ChangeSet::new();
    seen.seen_transactions.push(transaction.seen());
    state.rooms.storage().apply(seen).await?;
    Ok(answer(results))
}

fn answer(results: Object) -> Object {
    let mut body = Object::new();
    body.insert("pdus", results);
    body
}

/// The id of a received event, for the answer (computed as its room version computes it).
async fn event_id_of(pdu: &Object, state: &State) -> Option<String> {
    let room_id = pdu.get_str("room_id")?;
    let rules = state.rooms.rules(room_id).await.ok().flatten()?;
    let parsed = matrix_core::Pdu::from_object(pdu.clone(), rules).ok()?;
    Some(parsed.event_id().to_owned())
}

/// How far [`receive_filling`] goes to fetch what an event lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// `/get_missing_events`, then the state at the prev events still missing (a received
    /// PDU).
    Full,
    /// The state at its prev events (the oldest event `/get_missing_events` gave).
    State,
    /// Only its auth events (the other events `/get_missing_events` gave).
    Auth,
}

/// Checks and stores one PDU of a transaction from `origin`, fetching from `origin` first what
/// it lacks, within `budget`:
///
/// - auth events we do not have: its auth chain (`/event_auth`), checked and stored as
///   outliers;
/// - prev events we do not have: the events between the room's forward extremities and it
///   (`/get_missing_events`, at most [`MISSING_EVENTS_LIMIT`]), each received oldest first;
///   when that does not reach what we hold (a gap deeper than the limit, or a peer that does
///   not answer), the state at each prev event still missing (`/state_ids`, `fill.rs`),
///   checked and stored with it as an outlier.
///
/// The PDU is then checked as every received event is, against the state before it resolved
/// from the states after its prev events, and accepted, soft failed or rejected.
pub(crate) async fn receive_pdu(
    state: &State,
    federation: &super::Federation,
    origin: &str,
    pdu: Object,
    budget: &mut Budget,
) -> Result<Received, ReceiveError> {
    receive_filling(state, federation, origin, pdu, budget, Reach::Full).await
}

/// [`receive_pdu`], fetching at most as far as `reach` says. Each kind of fetch is made once.
async fn receive_filling(
    state: &State,
    federation: &super::Federation,
    origin: &str,
    pdu: Object,
    budget: &mut Budget,
    mut reach: Reach,
) -> Result<Received, ReceiveError> {
    let mut auth_fetched = false;
    loop {
        let missing = match state.rooms.receive(federation.keys(), pdu.clone()).await {
            Err(ReceiveError::Missing(id)) => id,
            other => return other,
        };
        let room_id = pdu.get_str("room_id").unwrap_or_default();
        let Some(rules) = state.rooms.rules(room_id).await? else {
            return Err(ApiError::room_not_found().into());
        };
        let event = matrix_core::Pdu::from_object(pdu.clone(), rules)
            .map_err(|e| ApiError::bad_json(e.to_string()))?;
        let gap = Gap { state, federation, origin, rules, room_id };
        if !event.prev_events().any(|prev| prev == missing) {
            if auth_fetched {
                return Err(ReceiveError::Missing(missing));
            }
            auth_fetched = true;
            refused(fill::auth_events(&gap, event.event_id(), budget).await)?;
            continue;
        }
        match reach {
            Reach::Full => {
                reach = Reach::State;
                missing_events(&gap, &event, budget).await?;
            }
            Reach::State if budget.take_state_fill() => {
                reach = Reach::Auth;
                for prev in event.prev_events() {
                    if lacks_state(state, prev).await? {
                        refused(fill::state_at(&gap, prev, budget).await)?;
                    }
                }
            }
            _ => return Err(ReceiveError::Missing(missing)),
        }
    }
}

/// A fetch's refusal as the received event's error.
fn refused(fetched: fill::Fetched) -> Result<(), ReceiveError> {
    match fetched {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(ReceiveError::Failed(ApiError::unknown(reason))),
        Err(e) => Err(ReceiveError::Transient(e)),
    }
}

/// Whether the state after `event_id` is not known here (the event is not stored, or stored
/// without it).
async fn lacks_state(state: &State, event_id: &str) -> Result<bool, ReceiveError> {
    let stored = state.rooms.storage().event(event_id).await?;
    Ok(stored.is_none_or(|stored| stored.state_after.is_none()))
}

/// Asks `origin` for the events between the room's forward extremities and `event`
/// (`/get_missing_events`) and receives them oldest first: the oldest may fetch the state at
/// its prev events, the others only their auth events. An event of the gap that fails is
/// left; the caller's check of `event` decides.
async fn missing_events(
    gap: &Gap<'_>,
    event: &matrix_core::Pdu,
    budget: &mut Budget,
) -> Result<(), ReceiveError> {
    let info =
        gap.state.rooms.storage().room(gap.room_id).await?.ok_or_else(ApiError::room_not_found)?;
    let earliest: Vec<&str> = info.forward_extremities.iter().map(String::as_str).collect();
    let latest = [event.event_id()];
    let request = gap.federation.client().get_missing_events(
        gap.origin,
        gap.room_id,
        &earliest,
        &latest,
        MISSING_EVENTS_LIMIT,
        0,
    );
    let missing = match fill::ask(budget, "get_missing_events", request).await {
        Ok(missing) => missing,
        // The state at the prev events may still be had.
        Err(_) => return Ok(()),
    };
    let mut events: Vec<Object> = match missing.get("events") {
        Some(Value::Array(events)) => events
            .iter()
            .filter_map(Value::as_object)
            .filter(|e| e.get_str("room_id") == Some(gap.room_id))
            .take(MISSING_EVENTS_LIMIT as usize)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    // Oldest first: each one's prev events are then stored before it.
    events.sort_by_key(|e| e.get("depth").and_then(Value::as_i64).unwrap_or_default());
    for (n, missing) in events.into_iter().enumerate() {
        let reach = if n == 0 { Reach::State } else { Reach::Auth };
        let received = Box::pin(receive_filling(
            gap.state,
            gap.federation,
            gap.origin,
            missing,
            budget,
            reach,
        ))
        .await;
        if let Err(ReceiveError::Transient(e)) = received {
            return Err(ReceiveError::Transient(e));
        }
    }
    Ok(())
}
