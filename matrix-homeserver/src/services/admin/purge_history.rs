//! History purges (`POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`), run as a
//! scheduled task (`tasks.rs`): the room's events before a point, as Synapse purges them.
//!
//! The point is an event of the room's timeline (kept, as Synapse keeps it), or the newest
//! timeline event sent before `purge_up_to_ts`. Deleted: the timeline events before it and
//! the backfilled history (older than the timeline), but for
//! - state events (the room's state, current or past, and the auth events it needs: state
//!   snapshots and the auth chain index name them),
//! - the forward extremities (what our next event builds on; a room keeps a last event),
//! - redactions (the marks of the events they redact name them),
//! - our users' events, unless `delete_local_events`.
//!
//! Readers then see a shorter history; `/messages` goes back as far as what is left.

use std::collections::HashSet;
use std::sync::Arc;

use matrix_storage::{Direction, StoredEvent, StreamPos};
use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::HistoryPages;
use super::tasks::{self, Task};
use crate::State;
use crate::error::ApiError;

/// Events read (and purged) at a time.
const BATCH: usize = 500;

/// The body of `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PurgeHistoryBody {
    #[serde(default)]
    delete_local_events: bool,
    purge_up_to_event_id: Option<String>,
    purge_up_to_ts: Option<i64>,
}

/// What a purge task was asked.
#[derive(Debug, Serialize, Deserialize)]
struct Params {
    /// The point's stream position: events before it go.
    up_to: u64,
    delete_local_events: bool,
}

/// Finds the point and schedules the purge; answers the `purge_id`.
pub(crate) async fn start(
    state: &Arc<State>,
    room_id: &OwnedRoomId,
    event_id: Option<&str>,
    body: PurgeHistoryBody,
) -> Result<String, ApiError> {
    let storage = state.rooms.storage();
    if storage.room(room_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("Room not found"));
    }
    let event_id = event_id.map(str::to_owned).or(body.purge_up_to_event_id);
    let up_to = match (event_id, body.purge_up_to_ts) {
        (Some(event_id), _) => {
            let event = storage.event(&event_id).await?;
            let event = event.ok_or_else(|| ApiError::not_found("Event not found"))?;
            if event.room_id != room_id.as_str() {
                return Err(ApiError::bad_request("Event is for wrong room."));
            }
            event
                .stream
                .ok_or_else(|| ApiError::bad_request("the event is not in the room's timeline"))?
        }
        (None, Some(ts)) => newest_before(state, room_id, ts)
            .await?
            .ok_or_else(|| ApiError::not_found("there is no event to be purged"))?,
        (None, None) => {
            return Err(ApiError::missing_param(
                "must specify purge_up_to_event_id or purge_up_to_ts",
            ));
        }
    };
    let params = Params { up_to: up_to.0, delete_local_events: body.delete_local_events };
    let params = serde_json::to_value(params)
        .map_err(|e| ApiError::unknown(format!("a task does not serialise: {e}")))?;
    tasks::schedule_purge_history(state, room_id, params).await
}

/// The position of the room's newest timeline event sent before `ts`.
async fn newest_before(
    state: &State,
    room_id: &RoomId,
    ts: i64,
) -> Result<Option<StreamPos>, ApiError> {
    let storage = state.rooms.storage();
    let mut from = StreamPos(u64::MAX);
    loop {
        let items = storage.timeline(room_id.as_str(), from, Direction::Backwards, BATCH).await?;
        let ids: Vec<&str> = items.iter().map(|i| i.event_id.as_str()).collect();
        let events = storage.events(&ids).await?;
        let mut before: Vec<StreamPos> = events
            .iter()
            .filter(|e| sent_at(e).is_some_and(|sent| sent < ts))
            .filter_map(|e| e.stream)
            .collect();
        before.sort();
        if let Some(newest) = before.last() {
            return Ok(Some(*newest));
        }
        match items.last() {
            Some(last) if items.len() == BATCH => from = last.pos,
            _ => return Ok(None),
        }
    }
}

fn fields(event: &StoredEvent) -> Value {
    serde_json::from_slice(&event.json).unwrap_or_default()
}

fn sent_at(event: &StoredEvent) -> Option<i64> {
    fields(event)["origin_server_ts"].as_i64()
}

/// Runs a purge task: answers `{"purged_events": n}`.
pub(crate) async fn run(state: &State, task: &Task) -> Result<Option<Value>, ApiError> {
    let params: Params = serde_json::from_value(task.params.clone())
        .map_err(|e| ApiError::unknown(format!("a stored task does not parse: {e}")))?;
    let room_id = task.resource_id.clone().unwrap_or_default();
    let storage = state.rooms.storage();
    let Some(info) = storage.room(&room_id).await? else {
        // Deleted meanwhile: nothing is left to purge.
        return Ok(Some(serde_json::json!({"purged_events": 0})));
    };
    let extremities: HashSet<String> = info.forward_extremities.into_iter().collect();
    let local = format!(":{}", state.config.server_name);
    let purgeable = |event: &StoredEvent| {
        let fields = fields(event);
        let sender = fields["sender"].as_str().unwrap_or_default();
        fields.get("state_key").is_none()
            && fields["type"] != "m.room.redaction"
            && !extremities.contains(&event.event_id)
            && (params.delete_local_events || !sender.ends_with(&local))
    };
    let mut purged = 0;

    // The timeline before the point, newest first, then the backfilled history.
    let mut pages = HistoryPages::before(&room_id, StreamPos(params.up_to), BATCH);
    while let Some(ids) = pages.next(storage.as_ref()).await? {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let doomed: Vec<String> = storage
            .events(&ids)
            .await?
            .iter()
            .filter(|e| purgeable(e))
            .map(|e| e.event_id.clone())
            .collect();
        purged += state.rooms.purge_events(&room_id, &doomed).await?;
    }
    Ok(Some(serde_json::json!({"purged_events": purged})))
}

/// `GET /_synapse/admin/v1/purge_history_status/{purgeId}`: `active` (also while it waits
/// to start), `complete` or `failed` (with its `error`); 404 for an id that is no purge.
pub(crate) async fn status(state: &State, purge_id: &str) -> Result<Value, ApiError> {
    let task = tasks::task(state, purge_id).await?;
    let task = task
        .filter(|t| t.action == tasks::PURGE_HISTORY)
        .ok_or_else(|| ApiError::not_found("purge id not found"))?;
    let mut answer = serde_json::json!({"status": match task.status {
        tasks::Status::Scheduled | tasks::Status::Active => "active",
        tasks::Status::Complete => "complete",
        tasks::Status::Failed => "failed",
    }});
    if let Some(error) = task.error {
        answer["error"] = Value::from(error);
    }
    Ok(answer)
}
