//! Transactions other servers send us (`PUT /send/{txnId}`): deduplicated, each PDU checked
//! and stored (events it is missing fetched from the sender first), each EDU handed to the
//! ephemeral service.

use matrix_core::{Object, Value};
use matrix_federation::inbound::{Incoming, receive_transaction};
use matrix_storage::ChangeSet;

use crate::State;
use crate::error::ApiError;
use crate::services::rooms::remote::{ReceiveError, Received};

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
    let mut results = Object::new();
    for pdu in transaction.pdus.iter().cloned() {
        let event_id = event_id_of(&pdu, state).await;
        let room_id = pdu.get_str("room_id").unwrap_or_default().to_owned();
        let result = if state.rooms.server_allowed(&room_id, origin).await? {
            receive_pdu(state, federation, origin, pdu, true).await
        } else {
            Ok(Received::Rejected("the room's server ACL denies the sending server".to_owned()))
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

/// Checks and stores one PDU; if events before it are missing, asks `origin` for them once
/// (`get_missing_events`, from the room's forward extremities to the event), stores those
/// oldest first, and checks the PDU again.
pub(crate) async fn receive_pdu(
    state: &State,
    federation: &super::Federation,
    origin: &str,
    pdu: Object,
    fetch_missing: bool,
) -> Result<Received, ReceiveError> {
    match state.rooms.receive(federation.keys(), pdu.clone()).await {
        Err(ReceiveError::Missing(_)) if fetch_missing => {}
        other => return other,
    }
    let room_id = pdu.get_str("room_id").unwrap_or_default().to_owned();
    let Some(rules) = state.rooms.rules(&room_id).await? else {
        return Err(ApiError::room_not_found().into());
    };
    let event = matrix_core::Pdu::from_object(pdu.clone(), rules)
        .map_err(|e| ApiError::bad_json(e.to_string()))?;
    let info = state.rooms.storage().room(&room_id).await?.ok_or_else(ApiError::room_not_found)?;
    let earliest: Vec<&str> = info.forward_extremities.iter().map(String::as_str).collect();
    let missing = federation
        .client()
        .get_missing_events(
            origin,
            &room_id,
            &earliest,
            &[event.event_id()],
            MISSING_EVENTS_LIMIT,
            0,
        )
        .await
        .map_err(|e| ReceiveError::Failed(e.into()))?;
    let mut events: Vec<Object> = match missing.get("events") {
        Some(Value::Array(events)) => events
            .iter()
            .filter_map(Value::as_object)
            .take(MISSING_EVENTS_LIMIT as usize)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    // Oldest first: each one's prev events are then stored before it.
    events.sort_by_key(|e| e.get("depth").and_then(Value::as_i64).unwrap_or_default());
    for missing in events {
        if missing.get_str("room_id") != Some(room_id.as_str()) {
            continue;
        }
        // A gap in the gap is not chased further.
        let _ = Box::pin(receive_pdu(state, federation, origin, missing, false)).await;
    }
    state.rooms.receive(federation.keys(), pdu).await
}
