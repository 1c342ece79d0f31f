//! The administrators' scheduled tasks (Synapse's task scheduler): room deletions of
//! `DELETE /_synapse/admin/v2/rooms/{roomId}` and history purges. Each task is stored before
//! its id is answered, with its status (`scheduled`, `active`, `complete`, `failed`), and every
//! change of status is stored too; at start, the tasks a stop interrupted (`scheduled` or
//! `active`) run again from their beginning (each step can be done twice: kicking users who
//! left finds nobody, purging a purged room deletes nothing).
//!
//! Tasks are kept as account data of the pseudo-owner [`TASKS_OWNER`] (the task id as the
//! type, the task as JSON), as block marks are; those finished more than [`KEPT_MS`] ago are
//! deleted when a new task is scheduled. Several processes sharing one database each resume
//! the unfinished tasks at start; running one twice is harmless.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rooms::{DeleteRoom, DeletedRoom, purge_room, shutdown_room};
use crate::State;
use crate::error::ApiError;
use crate::services::rooms::now_ms;

/// The account-data owner of the tasks.
const TASKS_OWNER: &str = "!admin_tasks";

/// How long a finished task is kept (Synapse keeps them a week).
pub(crate) const KEPT_MS: i64 = 7 * 24 * 3_600_000;

/// The action of a room deletion (Synapse's name).
pub(crate) const SHUTDOWN_AND_PURGE_ROOM: &str = "shutdown_and_purge_room";

/// The action of a history purge (Synapse's name).
pub(crate) const PURGE_HISTORY: &str = "purge_history";

/// The action of a redaction of a user's events (Synapse's name).
pub(crate) const REDACT_ALL_EVENTS: &str = "redact_all_events";

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Stored, not started.
    Scheduled,
    /// Running (or interrupted by a stop, until the next start runs it again).
    Active,
    /// Done.
    Complete,
    /// Ended by an error.
    Failed,
}

impl Status {
    /// A status of Synapse's: `None` for `cancelled`, which no task here has (nothing
    /// cancels one); 400 `M_INVALID_PARAM` for anything else.
    pub(crate) fn parse(status: &str) -> Result<Option<Self>, ApiError> {
        Ok(Some(match status {
            "scheduled" => Status::Scheduled,
            "active" => Status::Active,
            "complete" => Status::Complete,
            "failed" => Status::Failed,
            "cancelled" => return Ok(None),
            _ => return Err(ApiError::invalid_param("unknown `status`")),
        }))
    }

    fn finished(self) -> bool {
        matches!(self, Status::Complete | Status::Failed)
    }
}

/// A stored task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) action: String,
    pub(crate) status: Status,
    /// When it was scheduled or last changed status (ms since the epoch).
    pub(crate) timestamp_ms: i64,
    /// The room it works on (a redaction's: the user whose events it redacts).
    pub(crate) resource_id: Option<String>,
    /// What it was asked to do.
    pub(crate) params: Value,
    /// What it did so far (a deletion's `shutdown_room` shows once users are kicked).
    pub(crate) result: Option<Value>,
    pub(crate) error: Option<String>,
}

/// What a room deletion was asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeleteParams {
    requester: OwnedUserId,
    body: DeleteRoom,
}

async fn save(state: &State, task: &Task) -> Result<(), ApiError> {
    let json = serde_json::to_vec(task)
        .map_err(|e| ApiError::unknown(format!("a task does not serialise: {e}")))?;
    let mut changes = matrix_storage::ChangeSet::new();
    changes.account_data.push((TASKS_OWNER.to_owned(), None, task.id.clone(), json));
    state.rooms.storage().apply(changes).await?;
    Ok(())
}

/// A stored task.
pub(crate) async fn task(state: &State, id: &str) -> Result<Option<Task>, ApiError> {
    let Some(bytes) = state.rooms.storage().account_data(TASKS_OWNER, None, id).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Every stored task, oldest first (then by id).
pub(crate) async fn tasks(state: &State) -> Result<Vec<Task>, ApiError> {
    let items = state.rooms.storage().all_account_data(TASKS_OWNER).await?;
    let mut tasks: Vec<Task> = items
        .iter()
        .filter(|item| item.room_id.is_none())
        .filter_map(|item| serde_json::from_slice(&item.content).ok())
        .collect();
    tasks.sort_by(|a, b| a.timestamp_ms.cmp(&b.timestamp_ms).then_with(|| a.id.cmp(&b.id)));
    Ok(tasks)
}

/// Stores a new task and starts it; answers its id.
async fn schedule(
    state: &Arc<State>,
    action: &str,
    resource_id: &str,
    params: Value,
) -> Result<String, ApiError> {
    forget_old(state).await?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let task = Task {
        id: crate::services::accounts::random_string(ALPHABET, 16)?,
        action: action.to_owned(),
        status: Status::Scheduled,
        timestamp_ms: now_ms(),
        resource_id: Some(resource_id.to_owned()),
        params,
        result: None,
        error: None,
    };
    save(state, &task).await?;
    let id = task.id.clone();
    tokio::spawn(run(state.clone(), task));
    Ok(id)
}

/// Deletes the tasks finished more than [`KEPT_MS`] ago.
async fn forget_old(state: &State) -> Result<(), ApiError> {
    let horizon = now_ms().saturating_sub(KEPT_MS);
    let mut changes = matrix_storage::ChangeSet::new();
    for task in tasks(state).await? {
        if task.status.finished() && task.timestamp_ms < horizon {
            changes.deleted_account_data.push((TASKS_OWNER.to_owned(), None, task.id));
        }
    }
    if !changes.deleted_account_data.is_empty() {
        state.rooms.storage().apply(changes).await?;
    }
    Ok(())
}

/// Runs the tasks a stop interrupted, one after the other, in the background.
pub(crate) fn resume(state: &Arc<State>) {
    let state = state.clone();
    tokio::spawn(async move {
        let unfinished = match tasks(&state).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::error!("reading the scheduled tasks to resume: {e}");
                return;
            }
        };
        for task in unfinished.into_iter().filter(|t| !t.status.finished()) {
            tracing::info!("resuming task {} ({})", task.id, task.action);
            run(state.clone(), task).await;
        }
    });
}

/// Runs a task to its end, storing each change of status.
async fn run(state: Arc<State>, mut task: Task) {
    task.status = Status::Active;
    task.timestamp_ms = now_ms();
    if let Err(e) = save(&state, &task).await {
        tracing::error!("task {} cannot be stored: {e}", task.id);
        return;
    }
    let outcome = match task.action.as_str() {
        SHUTDOWN_AND_PURGE_ROOM => delete(&state, &mut task).await,
        PURGE_HISTORY => super::purge_history::run(&state, &task).await,
        REDACT_ALL_EVENTS => super::redact::run(&state, &task).await,
        other => Err(ApiError::unknown(format!("unknown task action {other}"))),
    };
    match outcome {
        Ok(result) => {
            task.status = Status::Complete;
            if result.is_some() {
                task.result = result;
            }
        }
        Err(e) => {
            tracing::warn!("task {} ({}) failed: {e}", task.id, task.action);
            task.status = Status::Failed;
            task.error = Some(e.to_string());
        }
    }
    task.timestamp_ms = now_ms();
    if let Err(e) = save(&state, &task).await {
        tracing::error!("task {} cannot be stored: {e}", task.id);
    }
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: checks the request, stores the deletion and
/// starts it; answers its `delete_id`. 400 while another deletion of the room is unfinished.
pub(crate) async fn schedule_delete(
    state: &Arc<State>,
    requester: &OwnedUserId,
    room_id: &OwnedRoomId,
    body: DeleteRoom,
) -> Result<String, ApiError> {
    body.check()?;
    if state.rooms.storage().room(room_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found(format!("Unknown room id {room_id}")));
    }
    let running = tasks(state).await?.into_iter().any(|t| {
        t.action == SHUTDOWN_AND_PURGE_ROOM
            && t.resource_id.as_deref() == Some(room_id.as_str())
            && !t.status.finished()
    });
    if running {
        return Err(ApiError::bad_request(format!("Purge already in progress for {room_id}")));
    }
    let params = DeleteParams { requester: requester.clone(), body };
    let params = serde_json::to_value(params)
        .map_err(|e| ApiError::unknown(format!("a task does not serialise: {e}")))?;
    schedule(state, SHUTDOWN_AND_PURGE_ROOM, room_id.as_str(), params).await
}

/// Schedules a history purge (see `purge_history.rs`); answers its id.
pub(crate) async fn schedule_purge_history(
    state: &Arc<State>,
    room_id: &OwnedRoomId,
    params: Value,
) -> Result<String, ApiError> {
    schedule(state, PURGE_HISTORY, room_id.as_str(), params).await
}

/// Schedules a redaction of `user_id`'s events (see `redact.rs`); answers its id.
pub(crate) async fn schedule_redact(
    state: &Arc<State>,
    user_id: &str,
    params: Value,
) -> Result<String, ApiError> {
    schedule(state, REDACT_ALL_EVENTS, user_id, params).await
}

/// A room deletion: shuts the room down (the result stored at once, while the purge runs),
/// then purges it when asked.
async fn delete(state: &Arc<State>, task: &mut Task) -> Result<Option<Value>, ApiError> {
    let params: DeleteParams = serde_json::from_value(task.params.clone())
        .map_err(|e| ApiError::unknown(format!("a stored task does not parse: {e}")))?;
    let room_id = task
        .resource_id
        .as_deref()
        .map(super::rooms::parse_room)
        .transpose()?
        .ok_or_else(|| ApiError::unknown("a stored task names no room"))?;
    let shutdown = shutdown_room(state, &params.requester, &room_id, &params.body).await?;
    task.result = Some(shutdown_json(&shutdown)?);
    save(state, task).await?;
    if params.body.purge {
        purge_room(state, &room_id, params.body.force_purge).await?;
    }
    Ok(None)
}

fn shutdown_json(shutdown: &DeletedRoom) -> Result<Value, ApiError> {
    serde_json::to_value(shutdown)
        .map_err(|e| ApiError::unknown(format!("a task does not serialise: {e}")))
}

/// A deletion as the status endpoints show it.
pub(crate) fn delete_status(task: &Task) -> Value {
    let mut status = serde_json::json!({
        "delete_id": task.id,
        "room_id": task.resource_id,
        "status": task.status,
        "shutdown_room": task.result.clone().unwrap_or_else(|| {
            serde_json::json!({
                "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
                "new_room_id": null,
            })
        }),
    });
    if let Some(error) = &task.error {
        status["error"] = Value::from(error.as_str());
    }
    status
}

/// A task as `GET /_synapse/admin/v1/scheduled_tasks` lists it.
pub(crate) fn listed(task: &Task) -> Value {
    serde_json::json!({
        "id": task.id,
        "action": task.action,
        "status": task.status,
        "timestamp_ms": task.timestamp_ms,
        "resource_id": task.resource_id,
        "result": task.result,
        "error": task.error,
    })
}
