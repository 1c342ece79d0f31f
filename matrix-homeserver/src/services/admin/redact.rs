//! Redacting a user's events (Synapse's `POST /_synapse/admin/v1/user/{userId}/redact`): a
//! task in the background that walks the given rooms' timelines (or those of every room the
//! user has a membership in), newest first, and redacts the user's messages, encrypted
//! messages and member events, each by the user themself (a user of ours, as Synapse puppets
//! them) or by the administrator (`use_admin`, or a user of another server).
//!
//! The tasks' statuses are kept in memory (bounded, the oldest finished ones dropped first),
//! so they do not survive a restart, nor does a task in progress: Synapse keeps them in its
//! scheduled tasks table for a week.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use matrix_storage::{Direction, StreamPos};
use ruma::{OwnedUserId, UserId};
use serde::Serialize;

use crate::State;
use crate::error::ApiError;
use crate::services::accounts::random_string;

/// The event types redacted (Synapse's).
const TYPES: [&str; 3] = ["m.room.message", "m.room.encrypted", "m.room.member"];

/// How many of a room's timeline events one read brings.
const PAGE: usize = 500;

/// The most timeline events looked at per room (past it the room counts as done: its older
/// events are not looked at).
const MAX_SCANNED: usize = 200_000;

/// The most rooms one request names.
pub(crate) const MAX_ROOMS: usize = 1_000;

/// The largest `limit` (the user's events redacted per room).
pub(crate) const MAX_LIMIT: usize = 100_000;

/// The most statuses kept.
const KEPT: usize = 1_000;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Scheduled,
    Active,
    Completed,
    Failed,
}

/// A task's status, as `redact_status` answers it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskStatus {
    pub(crate) status: Status,
    /// Event id -> why its redaction failed.
    pub(crate) failed_redactions: BTreeMap<String, String>,
}

/// The statuses of the redaction tasks, by id.
#[derive(Debug, Default)]
pub(crate) struct RedactTasks {
    tasks: Mutex<(BTreeMap<String, TaskStatus>, VecDeque<String>)>,
}

impl RedactTasks {
    fn update(&self, id: &str, change: impl FnOnce(&mut TaskStatus)) {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(task) = tasks.0.get_mut(id) {
            change(task);
        }
    }

    fn insert(&self, id: String) {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *tasks;
        while order.len() >= KEPT {
            // The oldest finished task goes; with none finished, the oldest.
            let finished = order.iter().position(|id| {
                map.get(id).is_some_and(|t| matches!(t.status, Status::Completed | Status::Failed))
            });
            let Some(old) = order.remove(finished.unwrap_or(0)) else { break };
            map.remove(&old);
        }
        map.insert(
            id.clone(),
            TaskStatus { status: Status::Scheduled, failed_redactions: BTreeMap::new() },
        );
        order.push_back(id);
    }

    /// A task's status.
    pub(crate) fn status(&self, id: &str) -> Option<TaskStatus> {
        let tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.0.get(id).cloned()
    }
}

/// What a redaction task is asked to do.
pub(crate) struct RedactRequest {
    pub(crate) user_id: OwnedUserId,
    /// The rooms; none: every room the user has a membership in.
    pub(crate) rooms: Vec<String>,
    pub(crate) reason: Option<String>,
    /// The most of the user's events redacted per room.
    pub(crate) limit: usize,
    /// The administrator redacts (rather than the user).
    pub(crate) use_admin: bool,
}

/// Starts a task redacting `request.user_id`'s events for the administrator `admin`;
/// answers its id.
pub(crate) async fn start(
    state: &Arc<State>,
    admin: &UserId,
    mut request: RedactRequest,
) -> Result<String, ApiError> {
    let storage = state.rooms.storage();
    if request.rooms.is_empty() {
        request.rooms = storage
            .rooms_of_user(request.user_id.as_str())
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
    }
    let id = random_string(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 16)?;
    state.redactions.insert(id.clone());
    let ours = request.user_id.server_name().as_str() == state.config.server_name;
    let redactor =
        if request.use_admin || !ours { admin.to_owned() } else { request.user_id.clone() };
    let (state, task) = (state.clone(), id.clone());
    tokio::spawn(async move {
        state.redactions.update(&task, |t| t.status = Status::Active);
        let status = match run(&state, &task, &redactor, &request).await {
            Ok(()) => Status::Completed,
            Err(e) => {
                tracing::warn!("redacting the events of {}: {e}", request.user_id);
                Status::Failed
            }
        };
        state.redactions.update(&task, |t| t.status = status);
    });
    Ok(id)
}

async fn run(
    state: &State,
    task: &str,
    redactor: &UserId,
    request: &RedactRequest,
) -> Result<(), ApiError> {
    let storage = state.rooms.storage();
    // Transaction ids are kept per sender and device: the task's id stands for the device.
    let scope = format!("!redact:{task}");
    for room in &request.rooms {
        let mut from = StreamPos(u64::MAX);
        let (mut scanned, mut found) = (0, 0);
        'room: while scanned < MAX_SCANNED && found < request.limit {
            let page = storage.timeline(room, from, Direction::Backwards, PAGE).await?;
            let Some(last) = page.last() else { break };
            from = last.pos;
            scanned += page.len();
            for item in page {
                let Some(pdu) = state.rooms.pdu(&item.event_id).await? else { continue };
                if pdu.sender() != request.user_id.as_str() || !TYPES.contains(&pdu.kind()) {
                    continue;
                }
                if storage.redaction_of(&item.event_id).await?.is_some() {
                    continue;
                }
                found += 1;
                let redacted = state
                    .rooms
                    .redact(
                        room,
                        redactor,
                        &scope,
                        &item.event_id,
                        &item.event_id,
                        request.reason.clone(),
                    )
                    .await;
                if let Err(e) = redacted {
                    let why = e.to_string();
                    state.redactions.update(task, |t| {
                        t.failed_redactions.insert(item.event_id.clone(), why);
                    });
                }
                if found >= request.limit {
                    break 'room;
                }
            }
        }
    }
    Ok(())
}
