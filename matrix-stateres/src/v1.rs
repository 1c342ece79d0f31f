//! State resolution v1 (room version 1), as the spec describes it and Synapse implements it.
//!
//! A key is conflicted only if the state sets hold different events for it (a key missing from
//! some sets is not). Conflicted power levels are resolved first, then join rules, then
//! memberships, each by replaying the candidates from the lowest depth up while the
//! authorization rules allow them; every other key takes the deepest candidate the rules allow.
//! Ties in depth are broken by the SHA-1 of the event id.

use matrix_core::RoomVersionRules;
use matrix_core::auth::{self, AuthState};
use rustc_hash::FxHashMap;
use sha1::{Digest, Sha1};

use crate::graph::{Graph, Ix};
use crate::{ResolveError, StateEvent, StateMap};

type Key<'a> = (&'a str, &'a str);

struct Lookup<'g, 'a, E> {
    graph: &'g Graph<'a, E>,
    state: &'g FxHashMap<Key<'a>, Ix>,
}

impl<E: StateEvent> AuthState<E> for Lookup<'_, '_, E> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&E> {
        self.state.get(&(kind, state_key)).map(|&ix| self.graph.event(ix))
    }
}

fn key_of<'a, E: StateEvent>(graph: &Graph<'a, E>, ix: Ix) -> Result<Key<'a>, ResolveError> {
    let event = graph.event(ix);
    match event.state_key() {
        Some(state_key) => Ok((event.kind(), state_key)),
        None => Err(ResolveError::NotStateEvent { event_id: event.event_id().to_owned() }),
    }
}

pub(crate) fn resolve<'a, E: StateEvent>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    sets: &[Vec<Ix>],
) -> Result<StateMap<'a>, ResolveError> {
    // Separate: the first set's values start unconflicted; a different value makes a conflict.
    let mut unconflicted: FxHashMap<Key<'a>, Ix> = FxHashMap::default();
    let mut conflicted: FxHashMap<Key<'a>, Vec<Ix>> = FxHashMap::default();
    for set in sets {
        for &ix in set {
            let key = key_of(graph, ix)?;
            if let Some(candidates) = conflicted.get_mut(&key) {
                if !candidates.contains(&ix) {
                    candidates.push(ix);
                }
            } else if let Some(&existing) = unconflicted.get(&key) {
                if existing != ix {
                    unconflicted.remove(&key);
                    conflicted.insert(key, vec![existing, ix]);
                }
            } else {
                unconflicted.insert(key, ix);
            }
        }
    }

    // The state the candidates are checked against: the unconflicted entries of the types
    // their authorization needs.
    let mut auth_state: FxHashMap<Key<'a>, Ix> = FxHashMap::default();
    for &ix in conflicted.values().flatten() {
        for (kind, state_key) in auth::auth_types_for_event(rules, graph.event(ix)) {
            // Looked up with the map's keys shortened to the lifetime of these strings.
            let lookup: &FxHashMap<Key<'_>, Ix> = &unconflicted;
            if let Some(&value) = lookup.get(&(kind.as_str(), state_key.as_str())) {
                auth_state.entry(key_of(graph, value)?).or_insert(value);
            }
        }
    }

    // Deterministic order of the conflicted keys within each class.
    let mut keys: Vec<Key<'a>> = conflicted.keys().copied().collect();
    keys.sort_unstable();
    let mut resolved: FxHashMap<Key<'a>, Ix> = FxHashMap::default();
    let classes: [fn(&Key<'_>) -> bool; 3] = [
        |key| *key == ("m.room.power_levels", ""),
        |key| key.0 == "m.room.join_rules",
        |key| key.0 == "m.room.member",
    ];
    for class in classes {
        for key in keys.iter().filter(|key| class(key)) {
            let winner = replay(rules, graph, &conflicted[key], &auth_state);
            resolved.insert(*key, winner);
        }
        auth_state.extend(resolved.iter().map(|(&k, &v)| (k, v)));
    }
    for key in &keys {
        if !resolved.contains_key(key) {
            resolved.insert(*key, first_allowed(rules, graph, &conflicted[key], &auth_state));
        }
    }

    unconflicted.extend(resolved);
    Ok(unconflicted.into_iter().map(|(key, ix)| (key, graph.event(ix).event_id())).collect())
}

/// Deepest first; equal depths by the SHA-1 (hex) of the event id.
fn ordered<E: StateEvent>(graph: &Graph<'_, E>, candidates: &[Ix]) -> Vec<Ix> {
    let mut keyed: Vec<(std::cmp::Reverse<i64>, [u8; 20], Ix)> = candidates
        .iter()
        .map(|&ix| {
            let event = graph.event(ix);
            let sha1: [u8; 20] = Sha1::digest(event.event_id().as_bytes()).into();
            (std::cmp::Reverse(event.depth()), sha1, ix)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, ix)| ix).collect()
}

/// Replays the candidates from the shallowest: each is applied if the rules allow it on top
/// of the one before; the last allowed one wins.
fn replay<'a, E: StateEvent>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    candidates: &[Ix],
    auth_state: &FxHashMap<Key<'a>, Ix>,
) -> Ix {
    let mut order = ordered(graph, candidates);
    order.reverse();
    let wanted: Vec<(String, String)> =
        order.iter().flat_map(|&ix| auth::auth_types_for_event(rules, graph.event(ix))).collect();
    let mut state: FxHashMap<Key<'a>, Ix> = auth_state
        .iter()
        .filter(|(key, _)| wanted.iter().any(|(k, s)| k == key.0 && s == key.1))
        .map(|(&k, &v)| (k, v))
        .collect();
    let mut previous = order[0];
    for &ix in &order[1..] {
        let prev_event = graph.event(previous);
        state.insert((prev_event.kind(), prev_event.state_key().unwrap_or_default()), previous);
        if auth::check(rules, graph.event(ix), &Lookup { graph, state: &state }).is_err() {
            return previous;
        }
        previous = ix;
    }
    previous
}

/// The deepest candidate the rules allow against `auth_state`; the shallowest if none is.
fn first_allowed<'a, E: StateEvent>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    candidates: &[Ix],
    auth_state: &FxHashMap<Key<'a>, Ix>,
) -> Ix {
    let order = ordered(graph, candidates);
    let lookup = Lookup { graph, state: auth_state };
    order
        .iter()
        .copied()
        .find(|&ix| auth::check(rules, graph.event(ix), &lookup).is_ok())
        .unwrap_or(order[order.len() - 1])
}
