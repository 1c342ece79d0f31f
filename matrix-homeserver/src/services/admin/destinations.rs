//! Federation destinations (Synapse's federation admin API): the servers we federate with,
//! their retry state, the rooms we share with each, and resetting a backoff.
//!
//! The destinations are the servers with joined members in rooms a user of ours is joined
//! to, and those with queued outbound items or a worker of the sender. Their retry state is
//! the sender's stored one ([`matrix_storage::RetryState`]: consecutive failures and the time
//! of the next attempt): `retry_interval` is the backoff of those failures, `retry_last_ts`
//! the time of the last failed attempt (next attempt less the interval), and `failure_ts` the
//! same time (when the failures began is not kept). `last_successful_stream_ordering` and a
//! room's `stream_ordering` are not tracked here: `null`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{backwards, page};
use crate::State;
use crate::error::ApiError;

/// Room ids read from the store at a time while the rooms are walked.
const SCAN_BATCH: usize = 1_000;

/// The query of `GET /_synapse/admin/v1/federation/destinations`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    from: Option<String>,
    limit: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
    /// A part of the destination's name (Synapse's `destination` filter).
    destination: Option<String>,
}

/// The query of `GET .../destinations/{destination}/rooms`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RoomsParams {
    from: Option<String>,
    limit: Option<String>,
    dir: Option<String>,
}

/// A destination's retry state as Synapse shows it.
#[derive(Debug, Clone, PartialEq)]
struct Retry {
    retry_last_ts: i64,
    retry_interval: i64,
    failure_ts: Option<i64>,
}

/// The rooms shared with each remote server (servers with joined members in rooms a user of
/// ours is joined to), sorted.
async fn shared_rooms(state: &State) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let storage = state.rooms.storage();
    let ours = state.config.server_name.as_str();
    let mut servers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut after = String::new();
    loop {
        let batch = storage.room_ids(&after, SCAN_BATCH).await?;
        let done = batch.len() < SCAN_BATCH;
        if let Some(last) = batch.last() {
            after.clone_from(last);
        }
        for room_id in batch {
            let members = storage.members(&room_id).await?;
            let joined: BTreeSet<&str> = members
                .iter()
                .filter(|(_, m)| m == "join")
                .filter_map(|(user, _)| user.split_once(':').map(|(_, server)| server))
                .collect();
            if !joined.contains(ours) {
                continue;
            }
            for server in joined.into_iter().filter(|s| *s != ours) {
                servers.entry(server.to_owned()).or_default().insert(room_id.clone());
            }
        }
        if done {
            break;
        }
    }
    Ok(servers)
}

/// Every destination: shared rooms, queued items, the sender's workers.
async fn destinations(state: &State) -> Result<BTreeSet<String>, ApiError> {
    let mut all: BTreeSet<String> = shared_rooms(state).await?.into_keys().collect();
    all.extend(state.rooms.storage().outbound_destinations().await?);
    if let Some(sender) = state.rooms.outbound() {
        all.extend(sender.destinations().into_iter().map(|(name, _)| name));
    }
    all.remove(state.config.server_name.as_str());
    Ok(all)
}

async fn retry(state: &State, destination: &str) -> Result<Retry, ApiError> {
    let stored = state.rooms.storage().retry(destination).await?;
    Ok(match stored {
        Some(r) if r.failures > 0 => {
            let interval = match state.rooms.outbound() {
                Some(sender) => sender.options().backoff(r.failures),
                None => matrix_federation::sender::SenderOptions::new("").backoff(r.failures),
            };
            let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
            let last = r.retry_after_ts.saturating_sub(interval);
            Retry { retry_last_ts: last, retry_interval: interval, failure_ts: Some(last) }
        }
        _ => Retry { retry_last_ts: 0, retry_interval: 0, failure_ts: None },
    })
}

fn shown(destination: &str, retry: &Retry) -> Value {
    json!({
        "destination": destination,
        "retry_last_ts": retry.retry_last_ts,
        "retry_interval": retry.retry_interval,
        "failure_ts": retry.failure_ts,
        "last_successful_stream_ordering": null,
    })
}

/// `GET /_synapse/admin/v1/federation/destinations`.
pub(crate) async fn list(state: &State, params: &ListParams) -> Result<Value, ApiError> {
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    let backwards = backwards(params.dir.as_deref())?;
    let order = params.order_by.as_deref().unwrap_or("destination");
    if !matches!(
        order,
        "destination"
            | "retry_last_ts"
            | "retry_interval"
            | "failure_ts"
            | "last_successful_stream_ordering"
    ) {
        return Err(ApiError::invalid_param("unknown `order_by`"));
    }
    let mut rows = Vec::new();
    for destination in destinations(state).await? {
        if params.destination.as_deref().is_some_and(|part| !destination.contains(part)) {
            continue;
        }
        let retry = retry(state, &destination).await?;
        rows.push((destination, retry));
    }
    // Sorted by name already; a stable sort keeps that order among equals.
    match order {
        "retry_last_ts" => rows.sort_by_key(|(_, r)| r.retry_last_ts),
        "retry_interval" => rows.sort_by_key(|(_, r)| r.retry_interval),
        "failure_ts" => rows.sort_by_key(|(_, r)| r.failure_ts),
        _ => {}
    }
    if backwards {
        rows.reverse();
    }
    let total = rows.len();
    let shown_rows: Vec<Value> =
        rows.iter().skip(from).take(limit).map(|(d, r)| shown(d, r)).collect();
    let next = from.saturating_add(shown_rows.len());
    let mut answer = json!({"destinations": shown_rows, "total": total});
    if next < total {
        answer["next_token"] = Value::from(next.to_string());
    }
    Ok(answer)
}

/// A destination this server knows, or 404.
async fn known(state: &State, destination: &str) -> Result<(), ApiError> {
    if destinations(state).await?.contains(destination)
        || state.rooms.storage().retry(destination).await?.is_some()
    {
        return Ok(());
    }
    Err(ApiError::not_found("Unknown destination"))
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}`.
pub(crate) async fn details(state: &State, destination: &str) -> Result<Value, ApiError> {
    known(state, destination).await?;
    Ok(shown(destination, &retry(state, destination).await?))
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}/rooms`: the rooms shared
/// with it, by room id.
pub(crate) async fn rooms(
    state: &State,
    destination: &str,
    params: &RoomsParams,
) -> Result<Value, ApiError> {
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    let backwards = backwards(params.dir.as_deref())?;
    known(state, destination).await?;
    let mut rooms: Vec<String> =
        shared_rooms(state).await?.remove(destination).unwrap_or_default().into_iter().collect();
    if backwards {
        rooms.reverse();
    }
    let total = rooms.len();
    let page: Vec<Value> = rooms
        .iter()
        .skip(from)
        .take(limit)
        .map(|room| json!({"room_id": room, "stream_ordering": null}))
        .collect();
    let next = from.saturating_add(page.len());
    let mut answer = json!({"rooms": page, "total": total});
    if next < total {
        answer["next_token"] = Value::from(next.to_string());
    }
    Ok(answer)
}

/// `POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection`: forgets
/// the destination's backoff and has the sender try it now. 400 when it is not backing off.
pub(crate) async fn reset_connection(state: &State, destination: &str) -> Result<(), ApiError> {
    known(state, destination).await?;
    if retry(state, destination).await?.retry_last_ts == 0 {
        return Err(ApiError::bad_request(
            "The retry timing does not need to be reset for this destination.",
        ));
    }
    let mut changes = matrix_storage::ChangeSet::new();
    changes.retries.push((destination.to_owned(), None));
    state.rooms.storage().apply(changes).await?;
    if let Some(sender) = state.rooms.outbound() {
        sender.wake(destination);
    }
    Ok(())
}
