//! Redacting a user's events (Synapse's `POST /_synapse/admin/v1/user/{userId}/redact`): a
//! task in the background that walks the given rooms' timelines (or those of every room the
//! user has a membership in), newest first, and redacts the user's messages, encrypted
//! messages and member events, each by the user themself (a user of ours, as Synapse puppets
//! them) or by the administrator (`use_admin`, or a user of another server).
//!
//! The task is one of the stored scheduled tasks (`tasks.rs`, action `redact_all_events`,
//! as Synapse's): stored before its id is answered, run again after a stop, listed by
//! `scheduled_tasks`, kept a week once finished.

use std::collections::BTreeMap;
use std::sync::Arc;

use matrix_storage::{Direction, StreamPos};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tasks::{self, Task};
use crate::State;
use crate::error::ApiError;

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

/// The most failed redactions a task's result lists.
const MAX_FAILED: usize = 1_000;

/// What a redaction task is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A stored redaction task's parameters: the request, and who redacts.
#[derive(Debug, Serialize, Deserialize)]
struct Params {
    request: RedactRequest,
    redactor: OwnedUserId,
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
    let ours = request.user_id.server_name().as_str() == state.config.server_name;
    let redactor =
        if request.use_admin || !ours { admin.to_owned() } else { request.user_id.clone() };
    let user_id = request.user_id.to_string();
    let params = serde_json::to_value(Params { request, redactor })
        .map_err(|e| ApiError::unknown(format!("a task does not serialise: {e}")))?;
    tasks::schedule_redact(state, &user_id, params).await
}

/// Runs a stored redaction task: answers `{"failed_redactions": {event id: why}}` (at most
/// [`MAX_FAILED`] of them).
pub(crate) async fn run(state: &State, task: &Task) -> Result<Option<Value>, ApiError> {
    let Params { request, redactor } = serde_json::from_value(task.params.clone())
        .map_err(|e| ApiError::unknown(format!("a stored task does not parse: {e}")))?;
    let mut failed = BTreeMap::new();
    redact_all(state, &task.id, &redactor, &request, &mut failed).await?;
    Ok(Some(serde_json::json!({ "failed_redactions": failed })))
}

async fn redact_all(
    state: &State,
    task: &str,
    redactor: &UserId,
    request: &RedactRequest,
    failed: &mut BTreeMap<String, String>,
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
                if let Err(e) = redacted
                    && failed.len() < MAX_FAILED
                {
                    failed.insert(item.event_id.clone(), e.to_string());
                }
                if found >= request.limit {
                    break 'room;
                }
            }
        }
    }
    Ok(())
}
