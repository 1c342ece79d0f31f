//! Reading rooms back for other servers: single events, the state at an event, auth chains,
//! backfill and missing events. Each read first asks [`Rooms::server_access`] (unknown room,
//! server ACL, never in the room) and then [`Rooms::pdu_for_server`] for every event it
//! answers with: `server_visibility.rs` decides, nothing here does.

use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use matrix_core::{Object, Pdu};
use matrix_storage::StreamPos;

use super::Rooms;
use super::server_visibility::{ServerLooker, ServerView};
use crate::error::ApiError;

/// The most events one `/backfill` answers with (Synapse caps it at 100 too).
pub(crate) const MAX_BACKFILL: usize = 100;

/// The most events one `/get_missing_events` answers with.
pub(crate) const MAX_MISSING: usize = 20;

/// The most event ids a request may start from (`v` of `/backfill`, `earliest_events` and
/// `latest_events` of `/get_missing_events`).
pub(crate) const MAX_START_EVENTS: usize = 100;

/// How many events one walk reads per event it may answer with (hidden events are read and
/// walked through, but not answered with).
const SCAN_FACTOR: usize = 10;

/// An event read for a server, with its place in the DAG.
struct Found {
    pdu: Arc<Pdu>,
    pos: Option<StreamPos>,
}

/// An event on the walk's frontier, ordered by depth (deepest first), then id.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Frontier {
    depth: i64,
    event_id: String,
}

impl Rooms {
    /// An event of `room_id` (any room when `None`) with its position, or `None` when it is
    /// unknown or of another room.
    async fn found(
        &self,
        room_id: Option<&str>,
        event_id: &str,
    ) -> Result<Option<Found>, ApiError> {
        let Some(stored) = self.storage().event(event_id).await? else { return Ok(None) };
        if room_id.is_some_and(|room| room != stored.room_id) {
            return Ok(None);
        }
        Ok(self.pdu(event_id).await?.map(|pdu| Found { pdu, pos: stored.stream }))
    }

    /// `GET /event/{eventId}`: the event as `server` may have it, with its room (404 when
    /// unknown or hidden from the server; 403 when the server may read nothing of its room).
    pub(crate) async fn event_for_server(
        &self,
        server: &str,
        event_id: &str,
    ) -> Result<Object, ApiError> {
        let not_found = || ApiError::not_found("no such event");
        let found = self.found(None, event_id).await?.ok_or_else(not_found)?;
        let looker = self.server_access(found.pdu.room_id(), server).await?;
        self.pdu_for_server(&looker, &found.pdu, found.pos).await?.ok_or_else(not_found)
    }

    /// The event of `room_id` a state read is anchored at, if `looker` may have it at all
    /// (404 otherwise, as for an unknown event).
    async fn anchor(
        &self,
        looker: &ServerLooker,
        room_id: &str,
        event_id: &str,
    ) -> Result<Arc<Pdu>, ApiError> {
        let not_found = || ApiError::not_found("no such event in this room");
        let found = self.found(Some(room_id), event_id).await?.ok_or_else(not_found)?;
        match self.server_view(looker, &found.pdu, found.pos).await? {
            ServerView::Hidden => Err(not_found()),
            ServerView::Full | ServerView::Redacted => Ok(found.pdu),
        }
    }

    /// `GET /state_ids/{roomId}?event_id=`: the ids of the room's state before the event
    /// and of its auth chain.
    pub(crate) async fn state_ids_for_server(
        &self,
        server: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let looker = self.server_access(room_id, server).await?;
        let anchor = self.anchor(&looker, room_id, event_id).await?;
        let Some(before) = self.state_before_event(&anchor).await? else {
            return Err(ApiError::not_found("the state at this event is not known"));
        };
        let state: Vec<String> =
            self.storage().state_full(before).await?.into_iter().map(|e| e.event_id).collect();
        let ids: Vec<&str> = state.iter().map(String::as_str).collect();
        let auth_chain = self.storage().auth_chain(&ids).await?;
        Ok((state, auth_chain))
    }

    /// `GET /state/{roomId}?event_id=`: the room's state before the event and its auth
    /// chain, as events (state is what the server needs to follow the room: it is sent as
    /// stored to a server that may read the anchor).
    pub(crate) async fn state_for_server(
        &self,
        server: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<(Vec<Object>, Vec<Object>), ApiError> {
        let (state, auth_chain) = self.state_ids_for_server(server, room_id, event_id).await?;
        Ok((self.jsons(&state).await?, self.jsons(&auth_chain).await?))
    }

    /// `GET /event_auth/{roomId}/{eventId}`: the event's auth chain.
    pub(crate) async fn event_auth_for_server(
        &self,
        server: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Vec<Object>, ApiError> {
        let looker = self.server_access(room_id, server).await?;
        let anchor = self.anchor(&looker, room_id, event_id).await?;
        let chain = self.storage().auth_chain(&[anchor.event_id()]).await?;
        self.jsons(&chain).await
    }

    /// The stored JSON of events (ids not stored are skipped).
    async fn jsons(&self, ids: &[String]) -> Result<Vec<Object>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(pdu) = self.pdu(id).await? {
                out.push(pdu.json().clone());
            }
        }
        Ok(out)
    }

    /// `GET /backfill/{roomId}?v=&limit=`: up to `limit` (at most [`MAX_BACKFILL`]) events
    /// from `from` (included) back through `prev_events`, deepest first. Ids unknown or of
    /// another room are skipped; events the server may not see are redacted or left out.
    pub(crate) async fn backfill_for_server(
        &self,
        server: &str,
        room_id: &str,
        from: &[String],
        limit: usize,
    ) -> Result<Vec<Object>, ApiError> {
        let looker = self.server_access(room_id, server).await?;
        let limit = limit.clamp(1, MAX_BACKFILL);
        let mut seen: HashSet<String> = HashSet::new();
        let mut frontier = BinaryHeap::new();
        for id in from.iter().take(MAX_START_EVENTS) {
            if seen.insert(id.clone())
                && let Some(found) = self.found(Some(room_id), id).await?
            {
                frontier.push(Frontier { depth: found.pdu.depth(), event_id: id.clone() });
            }
        }
        let mut out = Vec::new();
        let mut scanned = 0;
        while let Some(next) = frontier.pop() {
            if out.len() == limit || scanned == limit * SCAN_FACTOR {
                break;
            }
            scanned += 1;
            let Some(found) = self.found(Some(room_id), &next.event_id).await? else { continue };
            if let Some(json) = self.pdu_for_server(&looker, &found.pdu, found.pos).await? {
                out.push(json);
            }
            for prev in found.pdu.prev_events() {
                if seen.insert(prev.to_owned())
                    && let Some(stored) = self.pdu(prev).await?
                    && stored.room_id() == room_id
                {
                    frontier.push(Frontier { depth: stored.depth(), event_id: prev.to_owned() });
                }
            }
        }
        Ok(out)
    }

    /// `POST /get_missing_events/{roomId}`: events before `latest` (excluded) back through
    /// `prev_events`, not going past `earliest` (excluded) nor below `min_depth`, at most
    /// `limit` (at most [`MAX_MISSING`]), oldest first. Events the server may not see are
    /// redacted or left out.
    pub(crate) async fn missing_events_for_server(
        &self,
        server: &str,
        room_id: &str,
        earliest: &[String],
        latest: &[String],
        limit: usize,
        min_depth: i64,
    ) -> Result<Vec<Object>, ApiError> {
        let looker = self.server_access(room_id, server).await?;
        let limit = limit.clamp(1, MAX_MISSING);
        let mut seen: HashSet<String> = earliest.iter().take(MAX_START_EVENTS).cloned().collect();
        let mut queue = std::collections::VecDeque::new();
        for id in latest.iter().take(MAX_START_EVENTS) {
            if seen.insert(id.clone())
                && let Some(found) = self.found(Some(room_id), id).await?
            {
                queue.extend(found.pdu.prev_events().map(str::to_owned));
            }
        }
        let mut found_events: Vec<(i64, Object)> = Vec::new();
        let mut scanned = 0;
        while let Some(id) = queue.pop_front() {
            if found_events.len() == limit || scanned == limit * SCAN_FACTOR {
                break;
            }
            if !seen.insert(id.clone()) {
                continue;
            }
            scanned += 1;
            let Some(found) = self.found(Some(room_id), &id).await? else { continue };
            if found.pdu.depth() < min_depth {
                continue;
            }
            if let Some(json) = self.pdu_for_server(&looker, &found.pdu, found.pos).await? {
                found_events.push((found.pdu.depth(), json));
            }
            queue.extend(found.pdu.prev_events().filter(|p| !seen.contains(*p)).map(str::to_owned));
        }
        found_events.sort_by_key(|(depth, _)| *depth);
        Ok(found_events.into_iter().map(|(_, json)| json).collect())
    }
}
