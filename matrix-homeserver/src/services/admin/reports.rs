//! Event reports (`POST /rooms/{roomId}/report/{eventId}`), as Synapse's admin API lists
//! them (`/v1/event_reports`). Reports of rooms and users are not event reports and are not
//! listed here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{page, rooms};
use crate::State;
use crate::error::ApiError;

/// How many reports one read of the store brings while a list is made.
const SCAN_BATCH: usize = 1_000;

/// The query of `GET /_synapse/admin/v1/event_reports`, as strings: checked here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListReportsParams {
    from: Option<String>,
    limit: Option<String>,
    dir: Option<String>,
    user_id: Option<String>,
    room_id: Option<String>,
    event_sender_user_id: Option<String>,
}

/// An event report as the admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct EventReport {
    id: u64,
    received_ts: u64,
    room_id: String,
    name: Option<String>,
    canonical_alias: Option<String>,
    event_id: String,
    user_id: String,
    reason: Option<String>,
    score: Option<i64>,
    sender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_json: Option<Value>,
}

/// One page of event reports.
#[derive(Debug, Serialize)]
pub(crate) struct ReportPage {
    event_reports: Vec<EventReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<usize>,
    total: usize,
}

/// The event reports in the store, oldest first, as `(id, report, room, event)`.
async fn event_reports(
    state: &State,
) -> Result<Vec<(u64, matrix_storage::ContentReport, String, String)>, ApiError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = state.rooms.storage().reports(after, SCAN_BATCH).await?;
        let done = batch.len() < SCAN_BATCH;
        for stored in batch {
            after = stored.id;
            if let matrix_storage::ReportTarget::Event { room_id, event_id } =
                stored.report.target.clone()
            {
                out.push((stored.id, stored.report, room_id, event_id));
            }
        }
        if done {
            return Ok(out);
        }
    }
}

async fn shown(
    state: &State,
    rooms_seen: &mut HashMap<String, (Option<String>, Option<String>)>,
    (id, report, room_id, event_id): (u64, matrix_storage::ContentReport, String, String),
    with_event: bool,
) -> Result<EventReport, ApiError> {
    let (name, canonical_alias) = match rooms_seen.get(&room_id) {
        Some(known) => known.clone(),
        None => {
            let found = rooms::name_and_alias(state, &room_id).await?;
            rooms_seen.insert(room_id.clone(), found.clone());
            found
        }
    };
    let pdu = state.rooms.pdu(&event_id).await?;
    Ok(EventReport {
        id,
        received_ts: report.received_ts,
        room_id,
        name,
        canonical_alias,
        event_id,
        user_id: report.reporter,
        reason: report.reason,
        score: report.score,
        sender: pdu.as_ref().map(|p| p.sender().to_owned()),
        event_json: match (with_event, &pdu) {
            (true, Some(pdu)) => serde_json::from_slice(pdu.canonical_bytes()).ok(),
            _ => None,
        },
    })
}

/// `GET /_synapse/admin/v1/event_reports`: newest first unless `dir=f`, filtered by reporter,
/// room and sender of the event, a page from the offset `from`.
pub(crate) async fn list_reports(
    state: &State,
    params: &ListReportsParams,
) -> Result<ReportPage, ApiError> {
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    let forwards = match params.dir.as_deref() {
        None | Some("b") => false,
        Some("f") => true,
        Some(_) => return Err(ApiError::invalid_param("`dir` must be f or b")),
    };
    let mut reports = Vec::new();
    for (id, report, room_id, event_id) in event_reports(state).await? {
        if params.user_id.as_ref().is_some_and(|u| *u != report.reporter)
            || params.room_id.as_ref().is_some_and(|r| *r != room_id)
        {
            continue;
        }
        if let Some(sender) = &params.event_sender_user_id {
            let pdu = state.rooms.pdu(&event_id).await?;
            if pdu.is_none_or(|p| p.sender() != sender.as_str()) {
                continue;
            }
        }
        reports.push((id, report, room_id, event_id));
    }
    if !forwards {
        reports.reverse();
    }
    let total = reports.len();
    let mut rooms_seen = HashMap::new();
    let mut event_reports = Vec::new();
    for report in reports.into_iter().skip(from).take(limit) {
        event_reports.push(shown(state, &mut rooms_seen, report, false).await?);
    }
    let next = from.saturating_add(event_reports.len());
    Ok(ReportPage { event_reports, next_token: (next < total).then_some(next), total })
}

/// The stored event report with the id of a path: 400 for an id that is not a positive
/// integer, 404 for no such event report.
async fn stored_report(state: &State, id: &str) -> Result<matrix_storage::StoredReport, ApiError> {
    let id: u64 = id
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid_param("the report id must be a positive integer"))?;
    let found = state.rooms.storage().reports(id - 1, 1).await?.into_iter().next();
    found
        .filter(|r| {
            r.id == id && matches!(r.report.target, matrix_storage::ReportTarget::Event { .. })
        })
        .ok_or_else(|| ApiError::not_found("Event report not found"))
}

/// `DELETE /_synapse/admin/v1/event_reports/{reportId}`.
pub(crate) async fn delete_report(state: &State, id: &str) -> Result<(), ApiError> {
    let stored = stored_report(state, id).await?;
    let mut changes = matrix_storage::ChangeSet::new();
    changes.deleted_reports.push(stored.id);
    state.rooms.storage().apply(changes).await?;
    Ok(())
}

/// `GET /_synapse/admin/v1/event_reports/{reportId}`: one event report, with the event.
pub(crate) async fn report(state: &State, id: &str) -> Result<EventReport, ApiError> {
    let stored = stored_report(state, id).await?;
    let id = stored.id;
    let matrix_storage::ReportTarget::Event { room_id, event_id } = stored.report.target.clone()
    else {
        return Err(ApiError::not_found("Event report not found"));
    };
    shown(state, &mut HashMap::new(), (id, stored.report, room_id, event_id), true).await
}
