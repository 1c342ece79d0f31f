//! Simplified sliding sync (MSC4186), as Synapse serves it at
//! `/_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: the client names lists
//! (ranges over its rooms, most recent first, filtered) and room subscriptions, each with a
//! timeline limit and the state it wants; every answer carries only what changed for the
//! rooms in them since the position (`pos`) the client sent, which names the connection's
//! state: what each room was last sent with.
//!
//! A connection's state lives in memory ([`connections`]): a restart (or a position the
//! server no longer holds) answers 400 `M_UNKNOWN_POS` and the client starts the connection
//! again, losing nothing (everything it is sent comes from storage). A position belongs to
//! one user and device: another's is unknown.
//!
//! The rooms' order comes from [`lists`], which keeps the last positions of rooms in a cache
//! brought up to date from the stream, so that ordering thousands of rooms costs no storage
//! read per room; [`room`] builds each room's answer and [`extensions`] the extensions'.

mod connections;
mod extensions;
mod lists;
mod request;
mod room;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ruma::UserId;
use serde_json::{Map, Value, json};

pub(crate) use connections::Connections;
pub(crate) use lists::RoomMetas;
pub(crate) use request::{Body, Pos};

use self::connections::{ConnState, SentRoom, Status};
use self::lists::Candidate;
use self::request::RoomConfig;
use super::{Sync, Token};
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::services::presence::SetPresence;

/// A sliding sync request.
#[derive(Debug)]
pub(crate) struct SlidingRequest {
    /// The position of the last answer the client processed (`None`: a new connection).
    pub(crate) pos: Option<Pos>,
    pub(crate) timeout: Duration,
    pub(crate) set_presence: SetPresence,
    pub(crate) body: Body,
}

/// The longest a sliding sync waits.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// What one answer was computed from and leads to.
struct Answer {
    response: Value,
    /// The stream token it covers.
    now: Token,
    state: ConnState,
    /// Nothing in it for the client (it may wait).
    empty: bool,
}

impl Sync {
    /// Answers a sliding sync request, waiting up to its timeout (when it has a position) for
    /// something to report.
    pub(crate) async fn sliding(
        &self,
        user: &UserId,
        device: &str,
        request: SlidingRequest,
        limits: &LimitsConfig,
    ) -> Result<Value, ApiError> {
        request.body.check(limits)?;
        let _in_flight = crate::metrics::service().sync_started();
        let conn_id = request.body.conn_id.clone().unwrap_or_default();
        let key = (user.as_str().to_owned(), device.to_owned(), conn_id);
        // The state the client's position names (a new connection: none).
        let previous = match request.pos {
            Some(pos) => {
                Some(self.connections.take(&key, pos.seq).ok_or_else(ApiError::unknown_pos)?)
            }
            None => None,
        };
        let since = request.pos.map(|p| p.token);
        let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
        let mut waiter = self.ephemeral.waiter(user.as_str(), device)?;
        let _presence = self.presence.syncing(user.as_str(), device, request.set_presence).await?;
        let answer = loop {
            waiter.mark_seen();
            let answer = self
                .sliding_answer(user, device, &request.body, since, previous.as_deref())
                .await?;
            if since.is_none() || !answer.empty || !waiter.woken_before(deadline).await {
                break answer;
            }
        };
        let Answer { mut response, now, state, .. } = answer;
        let seq = match (&previous, request.pos) {
            // Nothing changed in the connection's state: the same state goes on.
            (Some(previous), Some(pos)) if **previous == state => {
                self.connections.keep(key, pos.seq, previous.clone(), limits)
            }
            _ => self.connections.record(key, previous, request.pos, state, limits),
        };
        response["pos"] = json!(Pos { token: now, seq }.to_string());
        Ok(response)
    }

    /// One answer from the connection's `previous` state (and the position `since` it was
    /// sent at).
    async fn sliding_answer(
        &self,
        user: &UserId,
        device: &str,
        body: &Body,
        since: Option<Token>,
        previous: Option<&ConnState>,
    ) -> Result<Answer, ApiError> {
        let now = Token {
            stream: self.rooms.stream_position().await?,
            counter: self.ephemeral.position(),
        };
        let empty_state = ConnState::default();
        let previous = previous.unwrap_or(&empty_state);
        let since_stream = since.map(|t| t.stream);

        // Every room the user may be shown, with what lists need to order and filter it.
        let candidates = self.candidates(user, since_stream, now.stream).await?;
        let by_room: HashMap<&str, &Candidate> =
            candidates.iter().map(|c| (c.room_id.as_str(), c)).collect();

        // Which rooms the lists and subscriptions take, each with its combined config.
        let mut wanted: BTreeMap<String, (RoomConfig, Vec<String>)> = BTreeMap::new();
        let mut lists_out = Map::new();
        for (name, list) in &body.lists {
            let matching = self.filter_list(user, &candidates, list.filters.as_ref()).await?;
            let mut ops = Vec::new();
            let config = list.config();
            for &(start, asked_end) in list.ranges() {
                let mut room_ids = Vec::new();
                let end = asked_end.min(matching.len().saturating_sub(1) as u64);
                if (start as usize) < matching.len() {
                    for candidate in &matching[start as usize..=end as usize] {
                        room_ids.push(candidate.room_id.clone());
                        let entry = wanted
                            .entry(candidate.room_id.clone())
                            .or_insert_with(|| (config.clone(), Vec::new()));
                        if entry.0 != config {
                            entry.0 = entry.0.combine(&config);
                        }
                        if !entry.1.contains(name) {
                            entry.1.push(name.clone());
                        }
                    }
                }
                // The range as asked (as Synapse echoes it), the rooms as found; a list
                // without ranges has no operations.
                if list.ranges.is_some() {
                    let op =
                        json!({"op": "SYNC", "range": [start, asked_end], "room_ids": room_ids});
                    ops.push(op);
                }
            }
            lists_out.insert(name.clone(), json!({"count": matching.len(), "ops": ops}));
        }
        // Subscribed rooms outside the lists' candidates (a room the user left).
        let mut subscribed = HashMap::new();
        for (room_id, subscription) in &body.room_subscriptions {
            // Only rooms the user has (or had) a membership in.
            if !by_room.contains_key(room_id.as_str()) {
                match self.candidate(user, room_id, since_stream, now.stream).await? {
                    Some(candidate) => subscribed.insert(room_id.clone(), candidate),
                    None => continue,
                };
            }
            let config = subscription.config();
            let entry =
                wanted.entry(room_id.clone()).or_insert_with(|| (config.clone(), Vec::new()));
            entry.0 = entry.0.combine(&config);
        }

        // The rooms to send: new to the connection, or changed since it was last sent.
        let dms = self.dm_rooms(user).await?;
        // Rooms whose receipts changed since the position (one read for the counts below and
        // the receipts extension).
        let receipt_rooms = match since_stream {
            Some(since) => self.ephemeral.receipt_rooms_since(since, now.stream).await,
            None => None,
        };
        let ctx = room::Context { user, device, since, now, dms: &dms, receipt_rooms };
        let mut state = previous.clone();
        let mut rooms_out = Map::new();
        let mut shown: HashMap<&str, (bool, HashSet<String>)> = HashMap::new();
        let mut covered_candidates = Vec::with_capacity(wanted.len());
        for (room_id, (config, lists)) in &wanted {
            let Some(candidate) =
                by_room.get(room_id.as_str()).copied().or_else(|| subscribed.get(room_id))
            else {
                continue;
            };
            covered_candidates.push((candidate, lists));
            let sent = previous.rooms.get(room_id);
            let Some(plan) = room::plan(candidate, sent, config, since_stream) else { continue };
            let result = self.sliding_room(&ctx, candidate, config, &plan, sent).await?;
            shown.insert(room_id.as_str(), (plan.initial, result.timeline));
            state.rooms.insert(
                room_id.clone(),
                SentRoom {
                    status: Status::Live,
                    config: result.config,
                    membership: candidate.membership.clone(),
                    lazy: result.lazy,
                },
            );
            rooms_out.insert(room_id.clone(), result.json);
        }
        // Rooms the client has, not sent now, where the user's own read receipt moved: their
        // unread counts changed (read on another device, or marked read here).
        if let (Some(since), Some(receipt_rooms)) = (since_stream, &ctx.receipt_rooms) {
            for room_id in receipt_rooms {
                if rooms_out.contains_key(room_id)
                    || !wanted.contains_key(room_id)
                    || !by_room.get(room_id.as_str()).is_some_and(|c| c.joined())
                    || !previous.rooms.contains_key(room_id)
                {
                    continue;
                }
                let own = self.rooms.storage().user_receipts(room_id, user.as_str()).await?;
                if !own.iter().any(|r| r.pos > since) {
                    continue;
                }
                let (notifications, highlights) =
                    room::unread_totals(&self.rooms, room_id, user).await?;
                rooms_out.insert(
                    room_id.clone(),
                    json!({"notification_count": notifications, "highlight_count": highlights}),
                );
            }
        }

        // Rooms sent before that changed and were not sent now: their next answer starts
        // from what the client has, not from this position.
        if let Some(since) = since_stream {
            let unsent: Vec<&str> = state
                .rooms
                .iter()
                .filter(|(room_id, sent)| {
                    sent.status == Status::Live && !rooms_out.contains_key(room_id.as_str())
                })
                .map(|(room_id, _)| room_id.as_str())
                .collect();
            // Rooms outside the candidates (a subscription dropped, a room left) are looked
            // up in the cache of last positions.
            let outside: Vec<&str> =
                unsent.iter().copied().filter(|r| !by_room.contains_key(r)).collect();
            let metas = self.metas(&outside, now.stream).await?;
            let changed: Vec<String> = unsent
                .iter()
                .filter(|r| {
                    let last = match by_room.get(*r) {
                        Some(candidate) => Some(candidate.last),
                        None => metas.get(**r).map(|m| m.last),
                    };
                    last.is_some_and(|last| last > since)
                })
                .map(|r| (*r).to_owned())
                .collect();
            for room_id in changed {
                if let Some(sent) = state.rooms.get_mut(&room_id) {
                    sent.status = Status::Previously(since);
                }
            }
        }

        let no_events = HashSet::new();
        let covered: Vec<extensions::Covered<'_>> = covered_candidates
            .iter()
            .map(|(candidate, lists)| {
                let room_id = candidate.room_id.as_str();
                let (initial, timeline) =
                    shown.get(room_id).map_or((false, &no_events), |(i, t)| (*i, t));
                extensions::Covered {
                    room_id,
                    lists,
                    subscribed: body.room_subscriptions.contains_key(room_id),
                    joined: candidate.joined(),
                    initial,
                    timeline,
                }
            })
            .collect();
        let extensions = self.sliding_extensions(&ctx, &body.extensions, &covered).await?;
        let empty = rooms_out.is_empty() && extensions.empty;
        let mut response =
            json!({"pos": now.to_string(), "rooms": rooms_out, "extensions": extensions.json});
        if !lists_out.is_empty() {
            response["lists"] = Value::Object(lists_out);
        }
        Ok(Answer { response, now, state, empty })
    }
}
