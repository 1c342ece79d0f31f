#![doc = include_str!("../README.md")]

pub mod chain_cover;
mod graph;
pub mod lean;
mod v1;
mod v2;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use matrix_core::room_version::StateResAlgorithm;
use matrix_core::{AuthEvent, Pdu, RoomVersionRules};
use rustc_hash::FxHashMap;

/// What state resolution reads of an event, on top of what the authorization rules read.
pub trait StateEvent: AuthEvent {
    /// `origin_server_ts`.
    fn origin_server_ts(&self) -> i64;
    /// The ids of `auth_events` (for room version 12, without the create event, which the
    /// room id names).
    fn auth_event_ids(&self) -> impl Iterator<Item = &str>;
    /// `depth` (only state resolution v1 reads it).
    fn depth(&self) -> i64;
    /// Whether the event was rejected: rejected events are never used as auth events.
    fn rejected(&self) -> bool {
        false
    }
}

impl StateEvent for Pdu {
    fn origin_server_ts(&self) -> i64 {
        Pdu::origin_server_ts(self)
    }
    fn auth_event_ids(&self) -> impl Iterator<Item = &str> {
        self.auth_events()
    }
    fn depth(&self) -> i64 {
        Pdu::depth(self)
    }
}

/// Where state resolution finds events by id.
pub trait EventSource<E> {
    /// The event with this id, if known.
    fn event(&self, event_id: &str) -> Option<&E>;
}

impl<E, S: BuildHasher> EventSource<E> for HashMap<String, E, S> {
    fn event(&self, event_id: &str) -> Option<&E> {
        self.get(event_id)
    }
}

impl<E> EventSource<E> for BTreeMap<String, E> {
    fn event(&self, event_id: &str) -> Option<&E> {
        self.get(event_id)
    }
}

/// A resolved state: `(type, state_key)` to event id, borrowed from the events.
pub type StateMap<'a> = FxHashMap<(&'a str, &'a str), &'a str>;

/// Why states could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// An event (of a state set, or an auth event of one) is not in the source.
    #[error("event {event_id} is missing{}", needed_by.as_ref().map(|by| format!(" (an auth event of {by})")).unwrap_or_default())]
    MissingEvent {
        /// The missing event.
        event_id: String,
        /// The event whose auth event it is, if any.
        needed_by: Option<String>,
    },
    /// An event belongs to another room than the first state event.
    #[error("event {event_id} is in another room")]
    WrongRoom {
        /// The event.
        event_id: String,
    },
    /// A state set lists a message event (no state key).
    #[error("event {event_id} in a state set is not a state event")]
    NotStateEvent {
        /// The event.
        event_id: String,
    },
    /// A state set lists two events for the same `(type, state_key)`.
    #[error("a state set lists two events for the key of {event_id}")]
    DuplicateKey {
        /// The second event.
        event_id: String,
    },
    /// The auth events form a cycle.
    #[error("auth events form a cycle through {event_id}")]
    Cycle {
        /// An event on the cycle.
        event_id: String,
    },
    /// More than `u32::MAX` events.
    #[error("too many events")]
    TooLarge,
}

/// Optional inputs of [`resolve_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveOptions<'c> {
    /// The algorithm, instead of the room version's.
    pub algorithm: Option<StateResAlgorithm>,
    /// The full auth chain of each state set (the union of its events' auth chains), for callers
    /// that keep them; otherwise they are computed from the events' `auth_events`.
    pub auth_chains: Option<&'c [Vec<&'c str>]>,
    /// The auth difference of the state sets (the events in some but not all of their full
    /// auth chains), for callers that keep an index of auth chains (a persisted
    /// [`chain_cover`]): then neither the unconflicted events nor whole auth chains are read,
    /// only the conflicted events, this difference, their auth events, and the unconflicted
    /// events the authorization rules look up. Takes the place of `auth_chains`.
    pub auth_difference: Option<&'c [&'c str]>,
}

/// Resolves `state_sets` (the state of each fork: `(type, state_key)` to event id) with the room
/// version's algorithm, loading events and their auth events from `source`.
pub fn resolve<'a, E: StateEvent + 'a>(
    rules: &RoomVersionRules,
    state_sets: &[StateMap<'a>],
    source: &'a impl EventSource<E>,
) -> Result<StateMap<'a>, ResolveError> {
    resolve_with(rules, state_sets, source, ResolveOptions::default())
}

/// [`resolve`] with options: another algorithm, or precomputed auth chains.
pub fn resolve_with<'a, E: StateEvent + 'a>(
    rules: &RoomVersionRules,
    state_sets: &[StateMap<'a>],
    source: &'a impl EventSource<E>,
    options: ResolveOptions<'_>,
) -> Result<StateMap<'a>, ResolveError> {
    let Some(first) = state_sets.iter().flat_map(|set| set.values()).next() else {
        return Ok(StateMap::default());
    };
    // The room of the events: from one the source holds, the create event first (a caller
    // that loads only what resolution reads, given the auth difference, loads it).
    let create = state_sets.iter().filter_map(|set| set.get(&("m.room.create", ""))).copied();
    let difference = options.auth_difference.into_iter().flatten().copied();
    let room_id = create
        .chain(difference)
        .chain(std::iter::once(*first))
        .find_map(|id| source.event(id))
        .ok_or_else(|| ResolveError::MissingEvent {
            event_id: (*first).to_owned(),
            needed_by: None,
        })?
        .room_id();
    match options.algorithm.unwrap_or(rules.state_res) {
        StateResAlgorithm::V1 => {
            let roots = state_sets.iter().flat_map(|set| set.values().copied());
            let (graph, _) = graph::Graph::load(source, roots, room_id)?;
            let sets: Vec<Vec<graph::Ix>> = state_sets
                .iter()
                .map(|set| set.values().filter_map(|id| graph.index(id)).collect())
                .collect();
            v1::resolve(rules, &graph, &sets)
        }
        algorithm => {
            let v2_1 = algorithm != StateResAlgorithm::V2;
            let known = match (options.auth_difference, options.auth_chains) {
                (Some(difference), _) => v2::Known::Difference(difference),
                (None, Some(chains)) => v2::Known::Chains(chains),
                (None, None) => v2::Known::Nothing,
            };
            v2::resolve(rules, state_sets, source, room_id, known, v2_1)
        }
    }
}

/// A state map built from a list of state event ids (each event's `(type, state_key)` read
/// from `source`), for callers that hold state as lists.
pub fn state_map_from_ids<'a, E: StateEvent + 'a>(
    ids: &[&str],
    source: &'a impl EventSource<E>,
) -> Result<StateMap<'a>, ResolveError> {
    let mut map = StateMap::with_capacity_and_hasher(ids.len(), Default::default());
    for id in ids {
        let event = source.event(id).ok_or_else(|| ResolveError::MissingEvent {
            event_id: (*id).to_owned(),
            needed_by: None,
        })?;
        let state_key = event
            .state_key()
            .ok_or_else(|| ResolveError::NotStateEvent { event_id: (*id).to_owned() })?;
        if map.insert((event.kind(), state_key), event.event_id()).is_some() {
            return Err(ResolveError::DuplicateKey { event_id: (*id).to_owned() });
        }
    }
    Ok(map)
}
