//! Lean events: what state resolution reads of an event, with ids interned to integers.
//!
//! A [`LeanRoom`] holds, per event, its ids, type, state key, sender, `origin_server_ts`,
//! `depth`, `auth_events` and `prev_events`, the servers that signed it, and only the part of
//! its content the authorization rules read (the whole content of create, power levels, join
//! rules and third-party invite events; `membership`, `third_party_invite` and
//! `join_authorised_via_users_server` of memberships; nothing of the others). Strings repeated
//! across events (room, senders, types, state keys, contents) are shared, and the auth edges
//! are kept as event indices, so [`LeanRoom::resolve`] works on integers: its state sets are
//! lists of event indices, its auth chains a [`ChainCover`].
//!
//! Events come from JSON objects ([`LeanRoomBuilder::push_object`], for a parser that reads
//! events one at a time and drops each tree) or from full PDUs ([`LeanRoomBuilder::push_pdu`]).
//!
//! ```
//! use matrix_core::{json, RoomVersionRules};
//! use matrix_stateres::lean::LeanRoom;
//!
//! let mut room = LeanRoom::builder(&RoomVersionRules::V11);
//! for (id, text) in [
//!     ("$create", r#"{"type":"m.room.create","state_key":"","sender":"@a:x","content":{},"auth_events":[],"prev_events":[],"origin_server_ts":1,"depth":1}"#),
//!     ("$join", r#"{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{"membership":"join","displayname":"A"},"auth_events":["$create"],"prev_events":["$create"],"origin_server_ts":2,"depth":2}"#),
//!     ("$t1", r#"{"type":"m.room.topic","state_key":"","sender":"@a:x","content":{"topic":"one"},"auth_events":["$create","$join"],"prev_events":["$join"],"origin_server_ts":3,"depth":3}"#),
//!     ("$t2", r#"{"type":"m.room.topic","state_key":"","sender":"@a:x","content":{"topic":"two"},"auth_events":["$create","$join"],"prev_events":["$join"],"origin_server_ts":4,"depth":3}"#),
//! ] {
//!     let mut object = json::parse_strict(text.as_bytes()).unwrap().as_object().cloned().unwrap();
//!     object.insert("room_id", "!r:x");
//!     room.push_object(&object, id)?;
//! }
//! let room = room.build();
//! let ix = |id| room.index(id).unwrap();
//! let sets = [vec![ix("$create"), ix("$join"), ix("$t1")], vec![ix("$create"), ix("$join"), ix("$t2")]];
//! let state = room.resolve(&sets, None)?;
//! assert_eq!(state.len(), 3);
//! assert!(state.contains(&ix("$t2")));
//! // Only what the rules read is kept: the display name is gone.
//! assert!(room.event(ix("$join")).unwrap().content().get("displayname").is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use matrix_core::json::{Object, Value};
use matrix_core::room_version::StateResAlgorithm;
use matrix_core::{AuthEvent, Pdu, RoomVersionRules, hash};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::chain_cover::{ChainCover, ChainReach};
use crate::graph::{Bits, Graph};
use crate::v2::{FullSet, Unconflicted, cover_error, resolve_full};
use crate::{ResolveError, StateEvent};

/// An event as state resolution reads it (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct LeanEvent {
    event_id: Arc<str>,
    room_id: Arc<str>,
    has_room_id: bool,
    sender: Arc<str>,
    kind: Arc<str>,
    state_key: Option<Arc<str>>,
    origin_server_ts: i64,
    depth: i64,
    content: Arc<Object>,
    redacts: Option<Box<str>>,
    auth_events: Box<[Arc<str>]>,
    prev_events: Box<[Arc<str>]>,
    signed_by: Box<[Arc<str>]>,
    rejected: bool,
}

impl LeanEvent {
    /// The event id.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
    /// The event type.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The state key, if a state event.
    pub fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    /// The sender.
    pub fn sender(&self) -> &str {
        &self.sender
    }
    /// What the authorization rules read of the content (see the [module docs](self)).
    pub fn content(&self) -> &Object {
        &self.content
    }
}

impl AuthEvent for LeanEvent {
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn room_id(&self) -> &str {
        &self.room_id
    }
    fn has_room_id(&self) -> bool {
        self.has_room_id
    }
    fn sender(&self) -> &str {
        &self.sender
    }
    fn kind(&self) -> &str {
        &self.kind
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn content(&self) -> &Object {
        &self.content
    }
    fn redacts(&self) -> Option<&str> {
        self.redacts.as_deref()
    }
    fn prev_event_ids(&self) -> impl Iterator<Item = &str> {
        self.prev_events.iter().map(|id| &**id)
    }
    fn has_signature_from(&self, server: &str) -> bool {
        self.signed_by.iter().any(|s| &**s == server)
    }
}

impl StateEvent for LeanEvent {
    fn origin_server_ts(&self) -> i64 {
        self.origin_server_ts
    }
    fn auth_event_ids(&self) -> impl Iterator<Item = &str> {
        self.auth_events.iter().map(|id| &**id)
    }
    fn depth(&self) -> i64 {
        self.depth
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// Why an event could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeanError {
    /// Two events have the same id.
    #[error("event {0} is listed twice")]
    DuplicateId(String),
    /// An event lacks a field state resolution needs, or has it of the wrong type.
    #[error("event {event_id} has no string {field}")]
    MissingField {
        /// The event.
        event_id: String,
        /// The field.
        field: &'static str,
    },
    /// More than `u32::MAX` events.
    #[error("too many events")]
    TooLarge,
}

/// What [`LeanRoomBuilder::push_fields`] reads of an event, borrowed from the caller's parse.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// `event_id`.
    pub event_id: &'a str,
    /// `room_id` (absent on a room version 12 create event).
    pub room_id: Option<&'a str>,
    /// `type`.
    pub kind: &'a str,
    /// `state_key`.
    pub state_key: Option<&'a str>,
    /// `sender`.
    pub sender: &'a str,
    /// `origin_server_ts`.
    pub origin_server_ts: i64,
    /// `depth`.
    pub depth: i64,
    /// `content` (whole or only its part the authorization rules read: only that is kept), for
    /// the types whose content they read (see [`reads_content`]); otherwise ignored.
    pub content: Option<&'a Object>,
    /// The event a redaction redacts (`redacts` at the top level before room version 11, in
    /// `content` from 11).
    pub redacts: Option<&'a str>,
    /// The ids of `auth_events`.
    pub auth_events: &'a [&'a str],
    /// The ids of `prev_events`.
    pub prev_events: &'a [&'a str],
    /// The servers with an entry in `signatures`.
    pub signed_by: &'a [&'a str],
}

/// Whether the authorization rules read the content of events of this type (so a parser can
/// skip the content of all others).
pub fn reads_content(kind: &str) -> bool {
    matches!(
        kind,
        "m.room.create"
            | "m.room.power_levels"
            | "m.room.join_rules"
            | "m.room.third_party_invite"
            | "m.room.member"
    )
}

/// Where a phase of [`LeanRoom::resolve_with_phases`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The states are split, the chain cover is built, and the auth difference is known.
    AuthChains,
    /// The conflicted state subgraph is known (room version 12; nothing to do before).
    Subgraph,
    /// The full conflicted set is sorted and checked: the state is resolved.
    Resolve,
}

const NONE: u32 = u32::MAX;

/// Collects events (see [`LeanRoom::builder`]).
#[derive(Debug)]
pub struct LeanRoomBuilder {
    rules: &'static RoomVersionRules,
    events: Vec<LeanEvent>,
    /// Every event id seen (defined or named as an auth event) to its slot.
    slots: FxHashMap<Arc<str>, u32>,
    /// The event of each slot, or `NONE` for an id only named.
    slot_event: Vec<u32>,
    /// Each event's auth events as slots: `auth_slots[auth_span[i].0..auth_span[i].1]`.
    auth_slots: Vec<u32>,
    auth_span: Vec<(u32, u32)>,
    strings: FxHashSet<Arc<str>>,
    contents: FxHashMap<Vec<u8>, Arc<Object>>,
    empty: Arc<Object>,
}

/// Events read for state resolution, with ids interned (see the [module docs](self)).
#[derive(Debug)]
pub struct LeanRoom {
    rules: &'static RoomVersionRules,
    events: Vec<LeanEvent>,
    ids: FxHashMap<Arc<str>, u32>,
    /// `edges[spans[i].0..spans[i].1]` are event `i`'s auth events (those in the room).
    spans: Vec<(u32, u32)>,
    edges: Vec<u32>,
    /// Events naming an auth event not in the room, with that id.
    missing: FxHashMap<u32, Arc<str>>,
    strings: FxHashSet<Arc<str>>,
    /// `(type, state_key)` (interned strings, by address) to a dense key number.
    keys: FxHashMap<(usize, usize), u32>,
    /// Each event's key number (`NONE` for events without a state key).
    event_key: Vec<u32>,
    /// The room every event is in, if they all are in one.
    single_room: Option<Arc<str>>,
    /// Each event's room, as a number (events of one room have the same).
    event_room: Vec<u32>,
}

impl LeanRoom {
    /// An empty room of this version, to push events into.
    pub fn builder(rules: &'static RoomVersionRules) -> LeanRoomBuilder {
        LeanRoomBuilder {
            rules,
            events: Vec::new(),
            slots: FxHashMap::default(),
            slot_event: Vec::new(),
            auth_slots: Vec::new(),
            auth_span: Vec::new(),
            strings: FxHashSet::default(),
            contents: FxHashMap::default(),
            empty: Arc::new(Object::new()),
        }
    }
}

/// The auth-relevant part of an event's content.
fn lean_content(kind: &str, content: Option<&Object>) -> Option<Object> {
    let content = content?;
    match kind {
        "m.room.create"
        | "m.room.power_levels"
        | "m.room.join_rules"
        | "m.room.third_party_invite" => Some(content.clone()),
        "m.room.member" => {
            let kept: Object =
                ["membership", "third_party_invite", "join_authorised_via_users_server"]
                    .into_iter()
                    .filter_map(|key| content.get(key).map(|value| (key, value.clone())))
                    .collect();
            Some(kept)
        }
        _ => None,
    }
}

fn edge_ids(field: Option<&Value>) -> impl Iterator<Item = &str> {
    field.and_then(Value::as_array).unwrap_or_default().iter().filter_map(|item| match item {
        Value::String(id) => Some(id.as_str()),
        Value::Array(pair) => pair.first().and_then(Value::as_str),
        _ => None,
    })
}

impl LeanRoomBuilder {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// The slot of an event id (and its shared string).
    fn slot(&mut self, id: &str) -> Result<(u32, Arc<str>), LeanError> {
        if let Some((shared, &slot)) = self.slots.get_key_value(id) {
            return Ok((slot, shared.clone()));
        }
        let slot = u32::try_from(self.slot_event.len()).map_err(|_| LeanError::TooLarge)?;
        let shared: Arc<str> = Arc::from(id);
        self.slots.insert(shared.clone(), slot);
        self.slot_event.push(NONE);
        Ok((slot, shared))
    }

    /// Adds an event given as its JSON object (federation format) and its id; returns its
    /// index. Only what resolution reads is kept; the object can be dropped afterwards.
    pub fn push_object(&mut self, object: &Object, event_id: &str) -> Result<u32, LeanError> {
        let missing = |field| LeanError::MissingField { event_id: event_id.to_owned(), field };
        let content = object.get_object("content");
        let auth_events: Vec<&str> = edge_ids(object.get("auth_events")).collect();
        let prev_events: Vec<&str> = edge_ids(object.get("prev_events")).collect();
        let signed_by: Vec<&str> =
            object.get_object("signatures").map(|s| s.keys().collect()).unwrap_or_default();
        let redacts = if self.rules.redacts_in_content {
            content.and_then(|c| c.get_str("redacts"))
        } else {
            object.get_str("redacts")
        };
        self.push_fields(&EventFields {
            event_id,
            room_id: object.get_str("room_id"),
            kind: object.get_str("type").ok_or_else(|| missing("type"))?,
            state_key: object.get_str("state_key"),
            sender: object.get_str("sender").ok_or_else(|| missing("sender"))?,
            origin_server_ts: object.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0),
            depth: object.get("depth").and_then(Value::as_i64).unwrap_or(0),
            content,
            redacts,
            auth_events: &auth_events,
            prev_events: &prev_events,
            signed_by: &signed_by,
        })
    }

    /// Adds an event from its fields, read by the caller's own parser (which may skip
    /// everything else); returns its index.
    pub fn push_fields(&mut self, fields: &EventFields<'_>) -> Result<u32, LeanError> {
        let index = u32::try_from(self.events.len()).map_err(|_| LeanError::TooLarge)?;
        let (slot, event_id) = self.slot(fields.event_id)?;
        if self.slot_event[slot as usize] != NONE {
            return Err(LeanError::DuplicateId(event_id.to_string()));
        }
        let (room_id, has_room_id) = match fields.room_id {
            Some(room_id) => (self.intern(room_id), true),
            None if self.rules.room_id_from_create_event => {
                (self.intern(&hash::room_id_from_create_event_id(&event_id)), false)
            }
            None => (self.intern(""), false),
        };
        let content = match lean_content(fields.kind, fields.content) {
            Some(content) if !content.is_empty() => {
                let mut bytes = Vec::new();
                content.write_canonical(&mut bytes);
                self.contents.entry(bytes).or_insert_with(|| Arc::new(content)).clone()
            }
            _ => self.empty.clone(),
        };
        let start = u32::try_from(self.auth_slots.len()).map_err(|_| LeanError::TooLarge)?;
        let mut auth_events = Vec::with_capacity(fields.auth_events.len());
        for id in fields.auth_events {
            let (slot, shared) = self.slot(id)?;
            self.auth_slots.push(slot);
            auth_events.push(shared);
        }
        let end = u32::try_from(self.auth_slots.len()).map_err(|_| LeanError::TooLarge)?;
        let mut prev_events = Vec::with_capacity(fields.prev_events.len());
        for id in fields.prev_events {
            prev_events.push(self.slot(id)?.1);
        }
        self.auth_span.push((start, end));
        self.slot_event[slot as usize] = index;
        let event = LeanEvent {
            event_id,
            room_id,
            has_room_id,
            sender: self.intern(fields.sender),
            kind: self.intern(fields.kind),
            state_key: fields.state_key.map(|k| self.intern(k)),
            origin_server_ts: fields.origin_server_ts,
            depth: fields.depth,
            content,
            redacts: fields.redacts.map(Box::from),
            auth_events: auth_events.into_boxed_slice(),
            prev_events: prev_events.into_boxed_slice(),
            signed_by: fields.signed_by.iter().map(|server| self.intern(server)).collect(),
            rejected: false,
        };
        self.events.push(event);
        Ok(index)
    }

    /// Adds a full PDU (its id as the PDU gives it); returns its index.
    pub fn push_pdu(&mut self, pdu: &Pdu) -> Result<u32, LeanError> {
        self.push_object(pdu.json(), pdu.event_id())
    }

    /// Marks an event rejected: it is then never used as an auth event.
    pub fn set_rejected(&mut self, index: u32) {
        if let Some(event) = self.events.get_mut(index as usize) {
            event.rejected = true;
        }
    }

    /// The room, with auth edges resolved to event indices.
    pub fn build(self) -> LeanRoom {
        let mut spans = Vec::with_capacity(self.events.len());
        let mut edges = Vec::with_capacity(self.auth_slots.len());
        let mut missing = FxHashMap::default();
        for (i, &(start, end)) in self.auth_span.iter().enumerate() {
            let from = edges.len() as u32;
            for (k, &slot) in self.auth_slots[start as usize..end as usize].iter().enumerate() {
                match self.slot_event[slot as usize] {
                    NONE => {
                        missing
                            .entry(i as u32)
                            .or_insert_with(|| self.events[i].auth_events[k].clone());
                    }
                    event => edges.push(event),
                }
            }
            spans.push((from, edges.len() as u32));
        }
        let mut keys: FxHashMap<(usize, usize), u32> = FxHashMap::default();
        let event_key = self
            .events
            .iter()
            .map(|e| match &e.state_key {
                Some(k) => {
                    let address = (e.kind.as_ptr() as usize, k.as_ptr() as usize);
                    let next = keys.len() as u32;
                    *keys.entry(address).or_insert(next)
                }
                None => NONE,
            })
            .collect();
        let mut rooms: FxHashMap<usize, u32> = FxHashMap::default();
        let event_room = self
            .events
            .iter()
            .map(|e| {
                let next = rooms.len() as u32;
                *rooms.entry(e.room_id.as_ptr() as usize).or_insert(next)
            })
            .collect();
        let single_room = match self.events.split_first() {
            Some((first, rest)) if rest.iter().all(|e| Arc::ptr_eq(&e.room_id, &first.room_id)) => {
                Some(first.room_id.clone())
            }
            _ => None,
        };
        let ids = self
            .slots
            .into_iter()
            .filter_map(|(id, slot)| {
                let event = self.slot_event[slot as usize];
                (event != NONE).then_some((id, event))
            })
            .collect();
        LeanRoom {
            rules: self.rules,
            events: self.events,
            ids,
            spans,
            edges,
            missing,
            strings: self.strings,
            keys,
            event_key,
            single_room,
            event_room,
        }
    }
}

/// The unconflicted state map as an event per key number.
struct KeyBase<'r> {
    room: &'r LeanRoom,
    by_key: Vec<u32>,
}

impl<'r> Unconflicted<'r, LeanEvent> for KeyBase<'r> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&'r LeanEvent> {
        let key = self.room.key(kind, state_key)?;
        match self.by_key[key as usize] {
            NONE => None,
            ix => self.room.events.get(ix as usize),
        }
    }
}

impl LeanRoom {
    /// The room version's rules.
    pub fn rules(&self) -> &'static RoomVersionRules {
        self.rules
    }
    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }
    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
    /// The index of the event with this id.
    pub fn index(&self, event_id: &str) -> Option<u32> {
        self.ids.get(event_id).copied()
    }
    /// The event at an index.
    pub fn event(&self, index: u32) -> Option<&LeanEvent> {
        self.events.get(index as usize)
    }
    /// Every event, by index.
    pub fn events(&self) -> &[LeanEvent] {
        &self.events
    }
    /// The indices of an event's auth events (those in the room).
    pub fn auth_events(&self, index: u32) -> &[u32] {
        match self.spans.get(index as usize) {
            Some(&(a, b)) => &self.edges[a as usize..b as usize],
            None => &[],
        }
    }

    fn key(&self, kind: &str, state_key: &str) -> Option<u32> {
        let kind = self.strings.get(kind)?;
        let state_key = self.strings.get(state_key)?;
        self.keys.get(&(kind.as_ptr() as usize, state_key.as_ptr() as usize)).copied()
    }

    fn graph(&self, create: Option<u32>) -> Graph<'_, LeanEvent> {
        Graph::interned(&self.events, &self.spans, &self.edges, &self.event_key, create)
    }

    /// The auth DAG's chain cover (as [`LeanRoom::resolve`] builds it).
    pub fn chain_cover(&self) -> Result<ChainCover, ResolveError> {
        let graph = self.graph(None);
        ChainCover::build(&graph).map_err(|e| cover_error(&graph, e))
    }

    /// Resolves `state_sets` (each a list of event indices, one per `(type, state_key)`) with
    /// the room version's algorithm (or `algorithm`); returns the resolved state as event
    /// indices, in no particular order. Auth chains are computed from `auth_events` as a chain
    /// cover of the whole room.
    pub fn resolve(
        &self,
        state_sets: &[Vec<u32>],
        algorithm: Option<StateResAlgorithm>,
    ) -> Result<Vec<u32>, ResolveError> {
        self.resolve_with_phases(state_sets, algorithm, &mut |_| {})
    }

    /// [`LeanRoom::resolve`], calling `phase_done` as each [`Phase`] ends (to time them).
    pub fn resolve_with_phases(
        &self,
        state_sets: &[Vec<u32>],
        algorithm: Option<StateResAlgorithm>,
        phase_done: &mut dyn FnMut(Phase),
    ) -> Result<Vec<u32>, ResolveError> {
        let Some(&first) = state_sets.iter().flatten().next() else {
            phase_done(Phase::AuthChains);
            phase_done(Phase::Subgraph);
            phase_done(Phase::Resolve);
            return Ok(Vec::new());
        };
        let room_id = self.event(first).ok_or_else(|| unknown(first))?.room_id.clone();
        let room = self.event_room[first as usize];
        match algorithm.unwrap_or(self.rules.state_res) {
            StateResAlgorithm::V1 => {
                let graph = self.graph(None);
                let sets: Vec<Vec<u32>> = state_sets.to_vec();
                self.check_sets(&sets, room)?;
                self.check_reached(&graph, &room_id, sets.iter().flatten().copied())?;
                phase_done(Phase::AuthChains);
                phase_done(Phase::Subgraph);
                let state = crate::v1::resolve(self.rules, &graph, &sets)?;
                let out = state.values().filter_map(|id| self.index(id)).collect();
                phase_done(Phase::Resolve);
                Ok(out)
            }
            algorithm => {
                let v2_1 = algorithm != StateResAlgorithm::V2;
                self.resolve_v2(state_sets, &room_id, room, v2_1, phase_done)
            }
        }
    }

    /// Every event of the sets exists, is a state event of the room, and no set has two events
    /// for one key. Returns how many sets list each event.
    fn check_sets(&self, sets: &[Vec<u32>], room: u32) -> Result<Vec<u32>, ResolveError> {
        let mut counts = vec![0u32; self.events.len()];
        let mut stamp = vec![0u32; self.keys.len()];
        let id = |ix: u32| self.events[ix as usize].event_id.to_string();
        for (i, set) in sets.iter().enumerate() {
            let mark = i as u32 + 1;
            for &ix in set {
                // Only the compact arrays are read, not the events.
                let (Some(&key), Some(&event_room)) =
                    (self.event_key.get(ix as usize), self.event_room.get(ix as usize))
                else {
                    return Err(unknown(ix));
                };
                if event_room != room {
                    return Err(ResolveError::WrongRoom { event_id: id(ix) });
                }
                if key == NONE {
                    return Err(ResolveError::NotStateEvent { event_id: id(ix) });
                }
                if std::mem::replace(&mut stamp[key as usize], mark) == mark {
                    return Err(ResolveError::DuplicateKey { event_id: id(ix) });
                }
                counts[ix as usize] += 1;
            }
        }
        Ok(counts)
    }

    fn in_room(&self, event: &LeanEvent, room_id: &Arc<str>) -> bool {
        Arc::ptr_eq(&event.room_id, room_id) || event.room_id == *room_id
    }

    /// Every event given is in the room and has all its auth events.
    fn check_reached(
        &self,
        graph: &Graph<'_, LeanEvent>,
        room_id: &Arc<str>,
        events: impl IntoIterator<Item = u32>,
    ) -> Result<(), ResolveError> {
        let all_in_room = self.single_room.as_ref().is_some_and(|r| Arc::ptr_eq(r, room_id));
        if all_in_room && self.missing.is_empty() {
            return Ok(());
        }
        for ix in events {
            let event = graph.event(ix);
            if let Some(id) = self.missing.get(&ix) {
                return Err(ResolveError::MissingEvent {
                    event_id: id.to_string(),
                    needed_by: Some(event.event_id.to_string()),
                });
            }
            if !all_in_room && !self.in_room(event, room_id) {
                return Err(ResolveError::WrongRoom { event_id: event.event_id.to_string() });
            }
        }
        Ok(())
    }

    fn resolve_v2(
        &self,
        sets: &[Vec<u32>],
        room_id: &Arc<str>,
        room: u32,
        v2_1: bool,
        phase_done: &mut dyn FnMut(Phase),
    ) -> Result<Vec<u32>, ResolveError> {
        // Unconflicted: listed by every set (so the same event for its key in each).
        let counts = self.check_sets(sets, room)?;
        let all = sets.len() as u32;
        let unconflicted: Vec<u32> =
            sets[0].iter().copied().filter(|&ix| counts[ix as usize] == all).collect();
        let conflicted_by_set: Vec<Vec<u32>> = sets
            .iter()
            .map(|set| set.iter().copied().filter(|&ix| counts[ix as usize] < all).collect())
            .collect();
        drop(counts);
        let mut in_conflicted = Bits::new(self.events.len());
        let conflicted: Vec<u32> = conflicted_by_set
            .iter()
            .flatten()
            .copied()
            .filter(|&ix| in_conflicted.insert(ix))
            .collect();
        let mut by_key = vec![NONE; self.keys.len()];
        for &ix in &unconflicted {
            by_key[self.event_key[ix as usize] as usize] = ix;
        }
        // Room version 12 events do not list the create event: found by the room id.
        let create = self
            .rules
            .room_id_from_create_event
            .then(|| self.index(&format!("${}", room_id.get(1..).unwrap_or_default())))
            .flatten();
        let graph = self.graph(create);

        // Auth chains as a chain cover; the unconflicted events' auth chain is in every set's.
        let cover = ChainCover::build(&graph).map_err(|e| cover_error(&graph, e))?;
        let common = cover.auth_chain(unconflicted.iter().copied());
        let chains: Vec<ChainReach> =
            conflicted_by_set.iter().map(|set| cover.auth_chain(set.iter().copied())).collect();
        let reached = unconflicted
            .iter()
            .chain(&conflicted)
            .copied()
            .chain(common.events(&cover))
            .chain(chains.iter().flat_map(|c| c.events(&cover)));
        self.check_reached(&graph, room_id, reached)?;
        let difference = cover.auth_chain_difference(Some(&common), &chains);
        phase_done(Phase::AuthChains);

        let subgraph = if v2_1 { cover.conflicted_subgraph(&conflicted) } else { Vec::new() };
        phase_done(Phase::Subgraph);

        let base = KeyBase { room: self, by_key };
        let power_levels = self
            .key("m.room.power_levels", "")
            .map(|key| base.by_key[key as usize])
            .filter(|&ix| ix != NONE);
        let applied = resolve_full(
            self.rules,
            &graph,
            FullSet { conflicted, difference, subgraph },
            (!v2_1).then_some(&base),
            power_levels,
        )?;
        // The unconflicted state wins.
        let mut resolved = unconflicted;
        for ((kind, state_key), ix) in applied {
            if base.get(kind, state_key).is_none() {
                resolved.push(ix);
            }
        }
        phase_done(Phase::Resolve);
        Ok(resolved)
    }
}

fn unknown(ix: u32) -> ResolveError {
    ResolveError::MissingEvent { event_id: format!("#{ix}"), needed_by: None }
}
