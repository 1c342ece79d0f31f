//! State resolution v2 (room versions 2-11) and v2.1 (room version 12, MSC4297).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use matrix_core::RoomVersionRules;
use matrix_core::auth::{self, AuthState};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::chain_cover::{ChainCover, ChainCoverError, ChainReach};
use crate::graph::{Bits, Graph, Ix};
use crate::{EventSource, ResolveError, StateEvent, StateMap};

/// The state the authorization rules see during the iterative auth checks: the events applied
/// so far over the starting state (the unconflicted state map for v2, nothing for v2.1), then
/// the event's own (non-rejected) auth events, then the room's create event (which room
/// version 12 events do not list).
struct CheckState<'g, 'a, E, B> {
    graph: &'g Graph<'a, E>,
    applied: &'g FxHashMap<(&'a str, &'a str), Ix>,
    base: Option<&'g B>,
    auth: &'g [Ix],
}

/// The unconflicted state map, as the iterative auth checks look it up.
pub(crate) trait Unconflicted<'a, E> {
    /// The unconflicted event of this type and state key.
    fn get(&self, kind: &str, state_key: &str) -> Option<&'a E>;
}

/// An unconflicted state map of event ids, and where to find the events.
struct MapBase<'m, 'a, S> {
    map: &'m StateMap<'a>,
    source: &'a S,
}

impl<'a, E: 'a, S: EventSource<E>> Unconflicted<'a, E> for MapBase<'_, 'a, S> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&'a E> {
        // The map's keys, shortened to the lifetime of the question.
        let map: &StateMap<'_> = self.map;
        map.get(&(kind, state_key)).and_then(|id| self.source.event(id))
    }
}

impl<'a, E: StateEvent + 'a, B: Unconflicted<'a, E>> AuthState<E> for CheckState<'_, 'a, E, B> {
    fn get(&self, kind: &str, state_key: &str) -> Option<&E> {
        // The map's keys, shortened to the lifetime of the question.
        let applied: &FxHashMap<(&str, &str), Ix> = self.applied;
        if let Some(&ix) = applied.get(&(kind, state_key)) {
            return Some(self.graph.event(ix));
        }
        if let Some(event) = self.base.and_then(|base| base.get(kind, state_key)) {
            return Some(event);
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

pub(crate) fn is_power_event<E: StateEvent>(event: &E) -> bool {
    match (event.kind(), event.state_key()) {
        ("m.room.power_levels" | "m.room.join_rules", Some("")) => true,
        ("m.room.member", Some(target)) => {
            matches!(event.content().get_str("membership"), Some("leave" | "ban"))
                && target != event.sender()
        }
        _ => false,
    }
}

/// Whether two ids are the same: usually the very same string, else equal text.
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// The unconflicted state map, and each set's conflicted event ids.
///
/// State maps built from one event store share their id strings, so events are first counted
/// by the address of their id (no string is read); only entries not found in every set that way
/// are compared by key and text.
fn split<'a>(sets: &[StateMap<'a>]) -> Split<'a> {
    let Some((first, others)) = sets.split_first() else {
        return Split { unconflicted: StateMap::default(), conflicted: Vec::new() };
    };
    let address = |id: &str| (id.as_ptr() as usize, id.len());
    let mut counts: FxHashMap<(usize, usize), usize> =
        FxHashMap::with_capacity_and_hasher(first.len() + first.len() / 8, Default::default());
    for set in sets {
        for &id in set.values() {
            *counts.entry(address(id)).or_default() += 1;
        }
    }
    let in_all = |id: &str| counts.get(&address(id)).is_some_and(|&count| count == sets.len());
    let mut unconflicted = first.clone();
    for (key, &id) in first {
        if !in_all(id)
            && !others.iter().all(|set| set.get(key).is_some_and(|other| same(other, id)))
        {
            unconflicted.remove(key);
        }
    }
    let conflicted = sets
        .iter()
        .map(|set| {
            set.iter()
                .filter(|&(key, &id)| {
                    !in_all(id) && !unconflicted.get(key).is_some_and(|&other| same(other, id))
                })
                .map(|(_, &id)| id)
                .collect()
        })
        .collect();
    Split { unconflicted, conflicted }
}

/// The unconflicted state map, and each set's conflicted event ids.
struct Split<'a> {
    unconflicted: StateMap<'a>,
    conflicted: Vec<Vec<&'a str>>,
}

/// What the caller knows of the auth chains.
pub(crate) enum Known<'c> {
    /// Nothing: they are computed from the events' `auth_events`.
    Nothing,
    /// The full auth chain of each state set.
    Chains(&'c [Vec<&'c str>]),
    /// The auth difference itself.
    Difference(&'c [&'c str]),
}

pub(crate) fn resolve<'a, E: StateEvent + 'a, S: EventSource<E>>(
    rules: &RoomVersionRules,
    sets: &[StateMap<'a>],
    source: &'a S,
    room_id: &str,
    known: Known<'_>,
    v2_1: bool,
) -> Result<StateMap<'a>, ResolveError> {
    // Unconflicted state map and conflicted state set. Only the conflicted events (and what the
    // auth difference needs) are ever read.
    let Split { unconflicted, conflicted: conflicted_ids } = split(sets);

    // The auth difference from given chains is plain counting.
    let given_difference: Option<Vec<&str>> = match known {
        Known::Nothing => None,
        Known::Difference(difference) => Some(difference.to_vec()),
        Known::Chains(chains) => {
            let mut counts: FxHashMap<&str, usize> = FxHashMap::default();
            for chain in chains {
                for &id in chain {
                    *counts.entry(id).or_default() += 1;
                }
            }
            let differ = counts.into_iter().filter(|&(_, count)| count < chains.len());
            Some(differ.map(|(id, _)| id).collect())
        }
    };

    // Load the conflicted events, then (without chains) the unconflicted ones, whose auth
    // chains are in every set's chain; then everything their auth events reach.
    // Room version 12 events do not list the create event: load it by the room id.
    let create_id = rules
        .room_id_from_create_event
        .then(|| format!("${}", room_id.get(1..).unwrap_or_default()));
    let conflicted_roots = conflicted_ids.iter().flatten().copied();
    // Without chains: what the unconflicted events' auth chains reach is in every set's chain.
    // Only their auth events are collected (a handful of distinct ones: create, power levels,
    // join rules, earlier memberships); the unconflicted events themselves are not loaded.
    let unconflicted_auth = match given_difference {
        Some(_) => None,
        None => {
            let mut direct: FxHashSet<&'a str> = FxHashSet::default();
            for &id in unconflicted.values() {
                let event = source.event(id).ok_or_else(|| ResolveError::MissingEvent {
                    event_id: id.to_owned(),
                    needed_by: None,
                })?;
                direct.extend(event.auth_event_ids());
            }
            Some(direct)
        }
    };
    let unconflicted_roots = unconflicted_auth.iter().flatten().copied();
    let difference_roots = given_difference.iter().flatten().copied();
    // The unconflicted power levels (the mainline's start when no power event wins) and, for
    // room version 12, the create event: loaded whatever else is.
    let unconflicted_power_levels = unconflicted.get(&("m.room.power_levels", "")).copied();
    let extras = [unconflicted_power_levels, create_id.as_deref()];
    let extra_count = extras.iter().flatten().count();
    let (mut graph, roots) = Graph::load(
        source,
        conflicted_roots
            .chain(unconflicted_roots)
            .chain(difference_roots)
            .chain(extras.into_iter().flatten()),
        room_id,
    )?;
    graph.create = create_id.as_deref().and_then(|id| graph.index(id));
    let n = graph.len();
    let conflicted_count: usize = conflicted_ids.iter().map(Vec::len).sum();
    let conflicted_by_set: Vec<&[Ix]> = {
        let mut rest = &roots[..conflicted_count];
        conflicted_ids
            .iter()
            .map(|ids| {
                let (these, tail) = rest.split_at(ids.len());
                rest = tail;
                these
            })
            .collect()
    };
    let mut in_conflicted = Bits::new(n);
    let mut conflicted: Vec<Ix> = Vec::new();
    for &ix in &roots[..conflicted_count] {
        if graph.event(ix).state_key().is_none() {
            return Err(ResolveError::NotStateEvent {
                event_id: graph.event(ix).event_id().to_owned(),
            });
        }
        if in_conflicted.insert(ix) {
            conflicted.push(ix);
        }
    }

    // Full conflicted set: conflicted state, auth difference, (v2.1) conflicted subgraph.
    let others = &roots[conflicted_count..roots.len() - extra_count];
    let cover = match (&given_difference, v2_1) {
        (Some(_), false) => None,
        _ => Some(ChainCover::build(&graph).map_err(|e| cover_error(&graph, e))?),
    };
    let difference = match (given_difference, &cover) {
        (Some(_), _) => others.to_vec(),
        (None, Some(cover)) => {
            let common = cover.with_auth_chain(others.iter().copied());
            let chains: Vec<ChainReach> =
                conflicted_by_set.iter().map(|set| cover.auth_chain(set.iter().copied())).collect();
            cover.auth_chain_difference(Some(&common), &chains)
        }
        (None, None) => Vec::new(),
    };
    let subgraph = match (&cover, v2_1) {
        (Some(cover), true) => cover.conflicted_subgraph(&conflicted),
        _ => Vec::new(),
    };
    let power_levels = unconflicted_power_levels.and_then(|id| graph.index(id));
    let base = MapBase { map: &unconflicted, source };
    let applied = resolve_full(
        rules,
        &graph,
        FullSet { conflicted, difference, subgraph },
        (!v2_1).then_some(&base),
        power_levels,
    )?;

    // The unconflicted state wins.
    let mut resolved = unconflicted;
    for (key, ix) in applied {
        resolved.entry(key).or_insert(graph.event(ix).event_id());
    }
    Ok(resolved)
}

/// A cover error as a resolution error, naming the event.
pub(crate) fn cover_error<E: StateEvent>(
    graph: &Graph<'_, E>,
    error: ChainCoverError,
) -> ResolveError {
    match error {
        ChainCoverError::Cycle(ix) | ChainCoverError::UnknownEvent { event: ix, .. }
            if (ix as usize) < graph.len() =>
        {
            ResolveError::Cycle { event_id: graph.event(ix).event_id().to_owned() }
        }
        _ => ResolveError::TooLarge,
    }
}

/// The parts of the full conflicted set (they may overlap).
pub(crate) struct FullSet {
    /// The conflicted state set (deduplicated).
    pub(crate) conflicted: Vec<Ix>,
    /// The auth difference.
    pub(crate) difference: Vec<Ix>,
    /// The conflicted state subgraph (v2.1), or nothing.
    pub(crate) subgraph: Vec<Ix>,
}

/// Sorts and checks the full conflicted set: power events first in reverse topological power
/// order, then the others in mainline order. Returns the events applied, by key. `base` is the
/// unconflicted state map the checks start from (v2; `None` for v2.1) and `base_power_levels`
/// its power levels event (the mainline's start when no power event applies).
pub(crate) fn resolve_full<'a, E: StateEvent + 'a, B: Unconflicted<'a, E>>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    parts: FullSet,
    base: Option<&B>,
    base_power_levels: Option<Ix>,
) -> Result<FxHashMap<(&'a str, &'a str), Ix>, ResolveError> {
    let n = graph.len();
    let mut in_full = Bits::new(n);
    let mut full: Vec<Ix> = Vec::new();
    for ix in parts.conflicted.into_iter().chain(parts.difference).chain(parts.subgraph) {
        if in_full.insert(ix) {
            full.push(ix);
        }
    }

    // Power events and the full-conflicted-set events of their auth chains, power ordered.
    let power: Vec<Ix> =
        full.iter().copied().filter(|&ix| is_power_event(graph.event(ix))).collect();
    let (sorted_power, in_power) = reverse_topological_power_order(rules, graph, &power, &in_full)?;

    // Iterative auth checks over the power events.
    let mut applied: FxHashMap<(&'a str, &'a str), Ix> = FxHashMap::default();
    iterative_auth_checks(rules, graph, base, &mut applied, &sorted_power);

    // The other events, in mainline order of the resolved power levels.
    let rest: Vec<Ix> = full.iter().copied().filter(|&ix| !in_power.contains(ix)).collect();
    let power_levels = match applied.get(&("m.room.power_levels", "")) {
        Some(&ix) => Some(ix),
        None => base.and(base_power_levels),
    };
    let rest = mainline_order(graph, power_levels, rest);
    iterative_auth_checks(rules, graph, base, &mut applied, &rest);
    Ok(applied)
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

/// Applies each event in turn if the authorization rules allow it on the state so far.
fn iterative_auth_checks<'a, E: StateEvent + 'a, B: Unconflicted<'a, E>>(
    rules: &RoomVersionRules,
    graph: &Graph<'a, E>,
    base: Option<&B>,
    applied: &mut FxHashMap<(&'a str, &'a str), Ix>,
    events: &[Ix],
) {
    for &ix in events {
        let event = graph.event(ix);
        let (kind, Some(state_key)) = (event.kind(), event.state_key()) else { continue };
        if event.rejected() {
            continue;
        }
        let state = CheckState { graph, applied, base, auth: graph.auth(ix) };
        if auth::check(rules, event, &state).is_ok() {
            applied.insert((kind, state_key), ix);
        }
    }
}
