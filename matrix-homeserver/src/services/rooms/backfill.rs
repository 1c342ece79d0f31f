//! Backfilling: the history of a room from before its timeline here (a room we joined through
//! another server starts at our join), fetched with `/backfill` from the servers in the room
//! when `/messages` pages back past the oldest event we hold.
//!
//! **Where it goes.** Backfilled events take no stream position (they are not new, `/sync`
//! never shows them): the storage gives them per-room backfill positions counting backwards
//! from the timeline's start ([`matrix_storage::BackfillPos`]), and `/messages` reads them
//! after the timeline's first event. Each batch is stored newest first (by depth), below what
//! is there already.
//!
//! **What is checked.** The events are older than every state we hold, so the checks that need
//! the state before an event (`check_pdu`'s step against the state at the event, soft failure
//! against the current state) cannot run without fetching that state; each event is checked
//! as the state of a `send_join` answer is (`join_remote.rs`): signatures, content hash
//! (redacted when it differs), and the authorization rules against its own auth events (in the
//! batch or stored and not rejected). An event that fails, or whose auth events are neither in
//! the batch nor stored, is dropped (so is a peer's event of another room, one that is not
//! older than the events whose history we asked for, and one not reachable from the events
//! asked for through `prev_events` within the answer: a peer cannot slip in signed events of
//! the room that hang off nothing we asked for).
//!
//! **Bounds.** At most [`REQUEST_LIMIT`] events per request (more are cut), [`MAX_SERVERS`]
//! servers tried per request, [`MAX_FRONTIER`] events asked about, and the caller
//! (`read.rs`) makes at most [`MAX_REQUESTS_PER_PAGE`] requests per `/messages` call.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use matrix_core::{Object, Pdu, RoomVersionRules, Value, auth};
use matrix_storage::{BackfillPos, ChangeSet, Direction, EventStatus, StreamPos};

use super::Rooms;
use crate::error::ApiError;
use crate::services::federation::Federation;

/// The most events asked of a server in one `/backfill` request (and kept of its answer).
pub(crate) const REQUEST_LIMIT: usize = 100;

/// The most `/backfill` requests one `/messages` call makes.
pub(crate) const MAX_REQUESTS_PER_PAGE: usize = 3;

/// The most servers asked for one batch (the next is tried when one fails or gives nothing).
const MAX_SERVERS: usize = 3;

/// The most events at the history's edge whose missing `prev_events` are asked for.
const MAX_FRONTIER: usize = 20;

/// Where the history held here ends: the `prev_events` that are missing, and the highest depth
/// of the events that cite them (what a server sends must be below it).
#[derive(Debug, Default)]
struct Frontier {
    missing: Vec<String>,
    depth: i64,
}

impl Rooms {
    /// Fetches and stores the history before what a room holds, when its oldest events cite
    /// events not held (or held only as outliers). Answers how many events were added (0:
    /// nothing is missing, or no server gave anything usable).
    pub(crate) async fn backfill(
        &self,
        federation: &Federation,
        room_id: &str,
    ) -> Result<usize, ApiError> {
        let Some(rules) = self.rules(room_id).await? else { return Ok(0) };
        let frontier = self.frontier(room_id).await?;
        if frontier.missing.is_empty() {
            return Ok(0);
        }
        let Some(current) = self.storage().room(room_id).await?.and_then(|r| r.current_state)
        else {
            return Ok(0);
        };
        let servers = self.remote_servers(room_id, current).await?;
        let ids: Vec<&str> = frontier.missing.iter().map(String::as_str).collect();
        for server in servers.iter().take(MAX_SERVERS) {
            let answer = match federation
                .client()
                .backfill(server, room_id, &ids, REQUEST_LIMIT as u32)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!("federation: backfilling {room_id} from {server}: {e}");
                    continue;
                }
            };
            let candidates = self.candidates(rules, room_id, &frontier, &answer).await?;
            let added = self.store_backfilled(federation, rules, room_id, candidates).await?;
            if added > 0 {
                return Ok(added);
            }
        }
        Ok(0)
    }

    /// Whether an event is in the room's history here (timeline or backfill).
    async fn in_history(&self, event_id: &str) -> Result<bool, ApiError> {
        let Some(stored) = self.storage().event(event_id).await? else { return Ok(false) };
        Ok(stored.stream.is_some() || self.storage().backfill_position(event_id).await?.is_some())
    }

    /// The `prev_events` of the oldest events held that are not in the history here.
    async fn frontier(&self, room_id: &str) -> Result<Frontier, ApiError> {
        let storage = self.storage();
        let mut edge: Vec<String> = storage
            .backfilled(room_id, BackfillPos(u64::MAX), Direction::Forwards, MAX_FRONTIER)
            .await?
            .into_iter()
            .map(|item| item.event_id)
            .collect();
        edge.extend(
            storage
                .timeline(room_id, StreamPos(0), Direction::Forwards, MAX_FRONTIER)
                .await?
                .into_iter()
                .map(|item| item.event_id),
        );
        let mut frontier = Frontier::default();
        let mut missing = BTreeSet::new();
        for id in edge {
            let Some(pdu) = self.pdu(&id).await? else { continue };
            for prev in pdu.prev_events() {
                let rejected = storage
                    .event(prev)
                    .await?
                    .is_some_and(|stored| stored.status == EventStatus::Rejected);
                if rejected || self.in_history(prev).await? {
                    continue;
                }
                if missing.len() < MAX_FRONTIER && missing.insert(prev.to_owned()) {
                    frontier.depth = frontier.depth.max(pdu.depth());
                }
            }
        }
        frontier.missing = missing.into_iter().collect();
        Ok(frontier)
    }

    /// The events of a `/backfill` answer worth checking: at most [`REQUEST_LIMIT`], parsed,
    /// of this room, below the frontier's depth, reachable from the events asked for through
    /// `prev_events` within the answer ([`reachable_from`]), not in the history here already
    /// nor stored as rejected, each once.
    async fn candidates(
        &self,
        rules: &'static RoomVersionRules,
        room_id: &str,
        frontier: &Frontier,
        answer: &Object,
    ) -> Result<Vec<Pdu>, ApiError> {
        let Some(Value::Array(pdus)) = answer.get("pdus") else { return Ok(Vec::new()) };
        let mut seen = BTreeSet::new();
        let mut parsed = Vec::new();
        for object in pdus.iter().take(REQUEST_LIMIT).filter_map(Value::as_object) {
            let Ok(pdu) = Pdu::from_object(object.clone(), rules) else { continue };
            if is_older_history_of(&pdu, room_id, frontier.depth)
                && seen.insert(pdu.event_id().to_owned())
            {
                parsed.push(pdu);
            }
        }
        let mut out = Vec::new();
        for pdu in reachable_from(&frontier.missing, parsed) {
            let rejected = self
                .storage()
                .event(pdu.event_id())
                .await?
                .is_some_and(|stored| stored.status == EventStatus::Rejected);
            if !rejected && !self.in_history(pdu.event_id()).await? {
                out.push(pdu);
            }
        }
        Ok(out)
    }

    /// Checks the candidates and stores those that pass, newest first before the history
    /// here; answers how many were added.
    async fn store_backfilled(
        &self,
        federation: &Federation,
        rules: &'static RoomVersionRules,
        room_id: &str,
        candidates: Vec<Pdu>,
    ) -> Result<usize, ApiError> {
        // Events stored already (the room's state from our join, as outliers) were checked.
        let mut known = Vec::new();
        let mut fresh = Vec::new();
        for pdu in candidates {
            match self.pdu(pdu.event_id()).await? {
                Some(stored) => known.push((*stored).clone()),
                None => fresh.push(pdu),
            }
        }
        let verified = super::join_remote::verify_all(federation.keys(), rules, fresh).await?;
        let mut stored_auth: HashMap<String, Pdu> = HashMap::new();
        let batch: BTreeSet<&str> = verified.iter().map(Pdu::event_id).collect();
        for pdu in &verified {
            for id in pdu.auth_events() {
                if batch.contains(id) || stored_auth.contains_key(id) {
                    continue;
                }
                let usable = self
                    .storage()
                    .event(id)
                    .await?
                    .is_some_and(|s| s.room_id == room_id && s.status != EventStatus::Rejected);
                if usable && let Some(auth_event) = self.pdu(id).await? {
                    stored_auth.insert(id.to_owned(), (*auth_event).clone());
                }
            }
        }
        let create = self.create_event_of(room_id).await?;
        let accepted = authorize_against_auth_events(rules, verified, stored_auth, create);
        let fresh_ids: BTreeSet<String> =
            accepted.iter().map(|p| p.event_id().to_owned()).collect();
        let mut history: Vec<Pdu> = accepted.into_iter().chain(known).collect();
        history
            .sort_by(|a, b| b.depth().cmp(&a.depth()).then_with(|| a.event_id().cmp(b.event_id())));

        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        let mut changes = ChangeSet::new();
        for pdu in &history {
            if self.in_history(pdu.event_id()).await? {
                continue;
            }
            if fresh_ids.contains(pdu.event_id())
                && self.storage().event(pdu.event_id()).await?.is_none()
            {
                changes.events.push(super::new_event(pdu, EventStatus::Accepted, false, None));
                if let Some(redacts) = pdu.redacts()
                    && let Some(target) = self.pdu(redacts).await?
                    && target.room_id() == room_id
                {
                    changes.redactions.push((redacts.to_owned(), pdu.event_id().to_owned()));
                }
            }
            changes.backfill.push((room_id.to_owned(), pdu.event_id().to_owned()));
        }
        let added = changes.backfill.len();
        if added == 0 {
            return Ok(0);
        }
        self.storage().apply(changes).await?;
        for pdu in history {
            self.events.insert(pdu.event_id().to_owned(), Arc::new(pdu));
        }
        Ok(added)
    }

    /// The room's create event, if stored.
    pub(super) async fn create_event_of(&self, room_id: &str) -> Result<Option<Pdu>, ApiError> {
        let Some(current) = self.storage().room(room_id).await?.and_then(|r| r.current_state)
        else {
            return Ok(None);
        };
        Ok(self.state_pdu(current, "m.room.create", "").await?.map(|pdu| (*pdu).clone()))
    }
}

/// Whether a peer's event may be history before events of depth `depth` in `room_id`: of
/// that room, and strictly shallower (an event's depth is above each of its `prev_events`').
pub(crate) fn is_older_history_of(pdu: &Pdu, room_id: &str, depth: i64) -> bool {
    pdu.room_id() == room_id && pdu.depth() < depth
}

/// The events of a `/backfill` answer that hang off the events asked for: those `asked`
/// names, and (transitively) the `prev_events` of those kept, within `events`. The spec has a
/// server answer the history reachable from the events asked for; anything else (signed
/// events of the room that belong elsewhere in its graph, picked by the peer) is dropped.
/// Keeps the answer's order. From room version 3 an event id is the hash of the event with
/// its `prev_events` (signatures aside), so a peer cannot forge a link between events; the
/// checks that follow drop a badly signed event itself.
pub(crate) fn reachable_from(asked: &[String], events: Vec<Pdu>) -> Vec<Pdu> {
    let by_id: HashMap<&str, &Pdu> = events.iter().map(|p| (p.event_id(), p)).collect();
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut queue: Vec<&str> = asked.iter().map(String::as_str).collect();
    while let Some(id) = queue.pop() {
        let Some(pdu) = by_id.get(id) else { continue };
        if reached.insert(pdu.event_id()) {
            queue.extend(pdu.prev_events());
        }
    }
    let reached: BTreeSet<String> = reached.into_iter().map(str::to_owned).collect();
    events.into_iter().filter(|p| reached.contains(p.event_id())).collect()
}

/// The events that pass the authorization rules against their own auth events, each checked
/// after those of its auth events that are in the batch (`known`: auth events stored here,
/// trusted as checked; `create`: the room's create event, which room version 12 checks every
/// event against).
fn authorize_against_auth_events(
    rules: &'static RoomVersionRules,
    events: Vec<Pdu>,
    known: HashMap<String, Pdu>,
    create: Option<Pdu>,
) -> Vec<Pdu> {
    let mut pending: HashMap<String, Pdu> =
        events.into_iter().map(|p| (p.event_id().to_owned(), p)).collect();
    let mut accepted: HashMap<String, Pdu> = HashMap::with_capacity(pending.len());
    let mut order = Vec::with_capacity(pending.len());
    loop {
        let ready: Vec<String> = pending
            .iter()
            .filter(|(_, pdu)| pdu.auth_events().all(|a| !pending.contains_key(a)))
            .map(|(id, _)| id.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for id in ready {
            let Some(pdu) = pending.remove(&id) else { continue };
            let auth_events: Option<Vec<&Pdu>> =
                pdu.auth_events().map(|a| accepted.get(a).or_else(|| known.get(a))).collect();
            let Some(auth_events) = auth_events else { continue };
            let create_event = if rules.room_id_from_create_event && pdu.kind() != "m.room.create" {
                create.as_ref()
            } else {
                None
            };
            if auth::check_with_auth_events(rules, &pdu, &auth_events, create_event).is_ok() {
                order.push(id.clone());
                accepted.insert(id, pdu);
            }
        }
    }
    order.into_iter().filter_map(|id| accepted.remove(&id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(room: &str, depth: i64) -> Pdu {
        let mut json = Object::new();
        json.insert("type", "m.room.message");
        json.insert("room_id", room);
        json.insert("sender", "@a:a.test");
        json.insert("depth", depth);
        json.insert("prev_events", Value::Array(Vec::new()));
        json.insert("auth_events", Value::Array(Vec::new()));
        json.insert("content", Object::new());
        json.insert("origin_server_ts", 1_i64);
        let rules = RoomVersionRules::get("10").expect("version 10");
        Pdu::with_event_id(json, format!("$d{depth}"), rules)
    }

    #[test]
    fn a_peer_s_events_of_another_room_or_not_older_are_dropped() {
        assert!(is_older_history_of(&pdu("!r:a.test", 4), "!r:a.test", 5));
        assert!(!is_older_history_of(&pdu("!r:a.test", 5), "!r:a.test", 5), "not older");
        assert!(!is_older_history_of(&pdu("!r:a.test", 9), "!r:a.test", 5), "newer");
        assert!(!is_older_history_of(&pdu("!other:a.test", 1), "!r:a.test", 5), "another room");
    }

    /// A message of `!r:a.test` with the given id, depth and prev events.
    fn linked(id: &str, depth: i64, prev: &[&str]) -> Pdu {
        let mut json = pdu("!r:a.test", depth).into_json();
        let prev = prev.iter().map(|p| Value::from(*p)).collect();
        json.insert("prev_events", Value::Array(prev));
        let rules = RoomVersionRules::get("10").expect("version 10");
        Pdu::with_event_id(json, id.to_owned(), rules)
    }

    #[test]
    fn only_events_reachable_from_those_asked_for_are_kept() {
        // $asked <- $p1 <- $p2 (a chain); $lone and $lone_parent hang off nothing asked.
        let events = vec![
            linked("$lone", 3, &["$lone_parent"]),
            linked("$p2", 2, &[]),
            linked("$asked", 4, &["$p1"]),
            linked("$lone_parent", 2, &[]),
            linked("$p1", 3, &["$p2", "$not_in_answer"]),
        ];
        let kept = reachable_from(&["$asked".to_owned(), "$absent".to_owned()], events);
        let ids: Vec<&str> = kept.iter().map(Pdu::event_id).collect();
        assert_eq!(ids, ["$p2", "$asked", "$p1"]);
        assert!(reachable_from(&[], vec![linked("$x", 1, &[])]).is_empty());
    }

    #[test]
    fn events_whose_auth_events_are_unknown_are_dropped() {
        let mut orphan = pdu("!r:a.test", 3).into_json();
        orphan.insert("auth_events", Value::Array(vec![Value::from("$nowhere")]));
        let rules = RoomVersionRules::get("10").expect("version 10");
        let orphan = Pdu::with_event_id(orphan, "$orphan".to_owned(), rules);
        let kept = authorize_against_auth_events(rules, vec![orphan], HashMap::new(), None);
        assert!(kept.is_empty());
    }
}
