//! State resolution v2 (room versions 2-11) and v2.1 (room version 12, MSC4297).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use matrix_core::RoomVersionRules;
use matrix_core::auth::{self, AuthState};
use rustc_hash::FxHashMap;

use crate::graph::{Bits, Graph, Ix};
use crate::{ResolveError, StateEvent, StateMap};

/// `(type, state_key)` interned.
type Key = u32;

/// The state keys of the events, interned.
struct Keys<'a> {
    ids: FxHashMap<(&'a str, &'a str), Key>,
    /// `of[ix]`: the key of event `ix`, if it is a state event.
    of: Vec<Option<Key>>,
}

impl<'a> Keys<'a> {
    fn new<E: StateEvent>(graph: &Graph<'a, E>) -> Self {
        let mut ids = FxHashMap::default();
        let of = graph
            .events
            .iter()
            .map(|event| {
                let state_key = event.state_key()?;
                let next = ids.len() as Key;
                Some(*ids.entry((event.kind(), state_key)).or_insert(next))
            })
            .collect();
        Keys { ids, of }
    }
    fn get(&self, kind: &str, state_key: &str) -> Option<Key> {
        self.ids.get(&(kind, state_key)).copied()
    }
}

/// The state the authorization rules see during the iterative auth checks: the partially
/// resolved state, then the event's own (non-rejected) auth events, then the room's create
/// event (which room version 12 events do not list).
struct CheckState<'g, 'a, E> {
    graph: &'g Graph<'a, E>,
    keys: &'g Keys<'a>,
    partial: &'g FxHashMap<Key, Ix>,
    auth: &'g [Ix],
}

impl<E: StateEvent> AuthState<E> for CheckState<'_, '_, E> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&E> {
        if let Some(&ix) = self.keys.get(kind, state_key).and_then(|key| self.partial.get(&key)) {
            return Some(self.graph.event(ix));
        }
        let from_auth = self.auth.iter().map(|&ix| self.graph.event(ix)).find(|event| {
            event.kind() == kind && event.state_key() == Some(state_key) && !event.rejected()
        });
        match from_auth {
            Some(event) => Some(event),
            None if kind == "m.room.create" && state_key.is_empty() => {
                self.graph.create.map(|ix| self.graph.event(ix))
            }
            None => None,
        }
    }
}

fn is_power_event<E: StateEvent>(event: &E) -> bool {
    match (event.kind(), event.state_key()) {
        ("m.room.power_levels" | "m.room.join_rules", Some("")) => true,
        ("m.room.member", Some(target)) => {
            matches!(event.content().get_str("membership"), Some("leave" | "ban"))
                && target != event.sender()
        }
        _ => false,
    }
}

pub(crate) fn resolve<'a, E: StateEvent>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    sets: &[Vec<Ix>],
    chains: Option<Vec<Vec<Ix>>>,
    v2_1: bool,
) -> Result<StateMap<'a>, ResolveError> {
    let keys = Keys::new(graph);
    let n = graph.len();

    // Unconflicted state map and conflicted state set.
    let mut first: FxHashMap<Key, (Ix, usize, bool)> = FxHashMap::default();
    for set in sets {
        let mut seen_in_set = Bits::new(keys.ids.len());
        for &ix in set {
            let key = keys.of[ix as usize].ok_or_else(|| ResolveError::NotStateEvent {
                event_id: graph.event(ix).event_id().to_owned(),
            })?;
            if !seen_in_set.insert(key) {
                return Err(ResolveError::DuplicateKey {
                    event_id: graph.event(ix).event_id().to_owned(),
                });
            }
            let entry = first.entry(key).or_insert((ix, 0, false));
            entry.1 += 1;
            entry.2 |= entry.0 != ix;
        }
    }
    let is_conflicted_key = |key: Key| {
        first.get(&key).is_some_and(|&(_, count, differs)| differs || count < sets.len())
    };
    let mut unconflicted: FxHashMap<Key, Ix> = FxHashMap::default();
    for (&key, &(ix, _, _)) in &first {
        if !is_conflicted_key(key) {
            unconflicted.insert(key, ix);
        }
    }
    let mut in_conflicted = Bits::new(n);
    let mut conflicted: Vec<Ix> = Vec::new();
    for set in sets {
        for &ix in set {
            if is_conflicted_key(keys.of[ix as usize].unwrap_or_default())
                && in_conflicted.insert(ix)
            {
                conflicted.push(ix);
            }
        }
    }

    // Full conflicted set: conflicted state, auth difference, (v2.1) conflicted subgraph.
    let mut in_full = in_conflicted.clone();
    let mut full = conflicted.clone();
    for ix in auth_difference(graph, sets, &unconflicted, &in_conflicted, chains) {
        if in_full.insert(ix) {
            full.push(ix);
        }
    }
    if v2_1 {
        for ix in conflicted_subgraph(graph, &conflicted) {
            if in_full.insert(ix) {
                full.push(ix);
            }
        }
    }

    // Power events and the full-conflicted-set events of their auth chains, power ordered.
    let power: Vec<Ix> =
        full.iter().copied().filter(|&ix| is_power_event(graph.event(ix))).collect();
    let (sorted_power, in_power) = reverse_topological_power_order(rules, graph, &power, &in_full)?;

    // Iterative auth checks over the power events.
    let mut partial: FxHashMap<Key, Ix> =
        if v2_1 { FxHashMap::default() } else { unconflicted.clone() };
    iterative_auth_checks(rules, graph, &keys, &mut partial, &sorted_power);

    // The other events, in mainline order of the resolved power levels.
    let rest: Vec<Ix> = full.iter().copied().filter(|&ix| !in_power.contains(ix)).collect();
    let power_levels =
        keys.get("m.room.power_levels", "").and_then(|key| partial.get(&key)).copied();
    let rest = mainline_order(graph, power_levels, rest);
    iterative_auth_checks(rules, graph, &keys, &mut partial, &rest);

    // The unconflicted state wins.
    partial.extend(unconflicted);
    Ok(partial
        .into_values()
        .map(|ix| {
            let event = graph.event(ix);
            ((event.kind(), event.state_key().unwrap_or_default()), event.event_id())
        })
        .collect())
}

/// The auth difference: events in some but not all state sets' full auth chains.
///
/// Without precomputed chains, the chains are split: everything the unconflicted state's auth
/// chains reach is in every set's chain (so never in the difference), and only the conflicted
/// events' chains outside it are walked per set.
fn auth_difference<E: StateEvent>(
    graph: &Graph<'_, E>,
    sets: &[Vec<Ix>],
    unconflicted: &FxHashMap<Key, Ix>,
    in_conflicted: &Bits,
    chains: Option<Vec<Vec<Ix>>>,
) -> Vec<Ix> {
    let n = graph.len();
    let mut counts = vec![0u32; n];
    let mut touched: Vec<Ix> = Vec::new();
    let chains = chains.unwrap_or_else(|| {
        let mut common = Bits::new(n);
        graph.ancestors(unconflicted.values().copied(), &mut common, None);
        sets.iter()
            .map(|set| {
                let mut seen = common.clone();
                let starts = set.iter().copied().filter(|&ix| in_conflicted.contains(ix));
                graph.ancestors(starts, &mut seen, Some(&common))
            })
            .collect()
    });
    for chain in &chains {
        for &ix in chain {
            if counts[ix as usize] == 0 {
                touched.push(ix);
            }
            counts[ix as usize] += 1;
        }
    }
    let all = chains.len() as u32;
    touched.into_iter().filter(|&ix| counts[ix as usize] < all).collect()
}

/// The conflicted state subgraph: events on an auth path from one conflicted event to another
/// (endpoints included).
fn conflicted_subgraph<E: StateEvent>(graph: &Graph<'_, E>, conflicted: &[Ix]) -> Vec<Ix> {
    let n = graph.len();
    // Backwards: the conflicted events and their auth chains.
    let mut backwards = Bits::new(n);
    let mut members: Vec<Ix> =
        conflicted.iter().copied().filter(|&ix| backwards.insert(ix)).collect();
    members.extend(graph.ancestors(conflicted.iter().copied(), &mut backwards, None));
    // Forwards within it: what a conflicted event reaches against the auth edges.
    let mut children: FxHashMap<Ix, Vec<Ix>> = FxHashMap::default();
    for &ix in &members {
        for &parent in graph.auth(ix) {
            children.entry(parent).or_default().push(ix);
        }
    }
    let mut forwards = Bits::new(n);
    let mut stack: Vec<Ix> = conflicted.iter().copied().filter(|&ix| forwards.insert(ix)).collect();
    let mut subgraph = stack.clone();
    while let Some(ix) = stack.pop() {
        for &child in children.get(&ix).map(Vec::as_slice).unwrap_or_default() {
            if forwards.insert(child) {
                subgraph.push(child);
                stack.push(child);
            }
        }
    }
    subgraph
}

/// The sender's power level as the event's own auth events give it.
fn sender_power<E: StateEvent>(rules: &RoomVersionRules, graph: &Graph<'_, E>, ix: Ix) -> i128 {
    let event = graph.event(ix);
    let find = |kind: &str| {
        graph
            .auth(ix)
            .iter()
            .map(|&a| graph.event(a))
            .find(|e| e.kind() == kind && e.state_key() == Some(""))
    };
    let create = find("m.room.create").or_else(|| graph.create.map(|c| graph.event(c)));
    auth::user_power_level(rules, find("m.room.power_levels"), create, event.sender())
}

/// Power events plus the full-conflicted-set events their auth chains reach (through full
/// conflicted set events, as Synapse and ruma walk them), in reverse topological power order.
fn reverse_topological_power_order<E: StateEvent>(
    rules: &RoomVersionRules,
    graph: &Graph<'_, E>,
    power: &[Ix],
    in_full: &Bits,
) -> Result<(Vec<Ix>, Bits), ResolveError> {
    let mut in_set = Bits::new(graph.len());
    let mut nodes: Vec<Ix> = power.iter().copied().filter(|&ix| in_set.insert(ix)).collect();
    let mut i = 0;
    while i < nodes.len() {
        for &parent in graph.auth(nodes[i]) {
            if in_full.contains(parent) && in_set.insert(parent) {
                nodes.push(parent);
            }
        }
        i += 1;
    }
    let order = kahn(graph, &nodes, &in_set, |ix| {
        let event = graph.event(ix);
        (Reverse(sender_power(rules, graph, ix)), event.origin_server_ts(), event.event_id())
    })?;
    Ok((order, in_set))
}

/// Kahn's algorithm over the auth edges among `nodes` (parents first), taking the smallest
/// `key` among the candidates at each step.
fn kahn<'a, E: StateEvent, K: Ord>(
    graph: &Graph<'a, E>,
    nodes: &[Ix],
    in_set: &Bits,
    key: impl Fn(Ix) -> K,
) -> Result<Vec<Ix>, ResolveError> {
    let mut waiting: FxHashMap<Ix, usize> = FxHashMap::default();
    let mut children: FxHashMap<Ix, Vec<Ix>> = FxHashMap::default();
    let mut ready = BinaryHeap::new();
    for &ix in nodes {
        let parents = graph.auth(ix).iter().filter(|&&p| in_set.contains(p));
        let mut count = 0;
        for &parent in parents {
            children.entry(parent).or_default().push(ix);
            count += 1;
        }
        if count == 0 {
            ready.push(Reverse((key(ix), ix)));
        } else {
            waiting.insert(ix, count);
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, ix))) = ready.pop() {
        order.push(ix);
        for &child in children.get(&ix).map(Vec::as_slice).unwrap_or_default() {
            if let Some(count) = waiting.get_mut(&child) {
                *count -= 1;
                if *count == 0 {
                    waiting.remove(&child);
                    ready.push(Reverse((key(child), child)));
                }
            }
        }
    }
    match waiting.keys().min() {
        Some(&stuck) => {
            Err(ResolveError::Cycle { event_id: graph.event(stuck).event_id().to_owned() })
        }
        None => Ok(order),
    }
}

/// Orders `events` by the mainline of `power_levels`: older mainline position first, then
/// `origin_server_ts`, then event id.
fn mainline_order<E: StateEvent>(
    graph: &Graph<'_, E>,
    power_levels: Option<Ix>,
    mut events: Vec<Ix>,
) -> Vec<Ix> {
    let pl_parent = |ix: Ix| {
        graph.auth(ix).iter().copied().find(|&a| {
            let e = graph.event(a);
            e.kind() == "m.room.power_levels" && e.state_key() == Some("")
        })
    };
    // Mainline positions, counted from the oldest (so larger is newer; none is 0, oldest of all).
    let mut mainline: Vec<Ix> = Vec::new();
    let mut seen = Bits::new(graph.len());
    let mut next = power_levels;
    while let Some(ix) = next {
        if !seen.insert(ix) {
            break;
        }
        mainline.push(ix);
        next = pl_parent(ix);
    }
    let mut depth: FxHashMap<Ix, usize> =
        mainline.iter().rev().enumerate().map(|(d, &ix)| (ix, d + 1)).collect();
    let mut position = |ix: Ix| -> usize {
        let mut walked = Vec::new();
        let mut next = pl_parent(ix);
        let found = loop {
            match next {
                None => break 0,
                Some(p) => {
                    if let Some(&d) = depth.get(&p) {
                        break d;
                    }
                    if walked.contains(&p) {
                        break 0;
                    }
                    walked.push(p);
                    next = pl_parent(p);
                }
            }
        };
        // Every power levels event walked through sits at the same position.
        for p in walked {
            depth.insert(p, found);
        }
        found
    };
    let mut keyed: Vec<(usize, i64, &str, Ix)> = events
        .drain(..)
        .map(|ix| {
            let event = graph.event(ix);
            (position(ix), event.origin_server_ts(), event.event_id(), ix)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, _, ix)| ix).collect()
}

/// Applies each event in turn to `partial` if the authorization rules allow it there.
fn iterative_auth_checks<'a, E: StateEvent>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    keys: &Keys<'a>,
    partial: &mut FxHashMap<Key, Ix>,
    events: &[Ix],
) {
    for &ix in events {
        let event = graph.event(ix);
        let Some(key) = keys.of[ix as usize] else { continue };
        if event.rejected() {
            continue;
        }
        let state = CheckState { graph, keys, partial, auth: graph.auth(ix) };
        if auth::check(rules, event, &state).is_ok() {
            partial.insert(key, ix);
        }
    }
}
