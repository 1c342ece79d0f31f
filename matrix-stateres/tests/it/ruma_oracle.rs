//! Differential tests: random forked rooms of room versions 6, 11 and 12 resolve to the same
//! state with ruma-state-res 0.18 (given the auth chains a server computes, and for v2.1 the
//! conflicted state subgraph it asks for).

use benches::rooms::{self, RoomSpec, generate};
use benches::ruma_stateres::RumaRoom;
use matrix_stateres::chain_cover::ChainCover;
use matrix_stateres::lean::LeanRoom;
use matrix_stateres::{
    EventSource, ResolveOptions, StateMap, resolve, resolve_with, state_map_from_ids,
};
use proptest::prelude::*;

/// The state sets as state maps over `events`.
fn maps<'a>(events: &'a Events, sets: &[Vec<String>]) -> Vec<StateMap<'a>> {
    sets.iter()
        .map(|set| {
            let ids: Vec<&str> = set.iter().map(String::as_str).collect();
            state_map_from_ids(&ids, events).expect("valid state")
        })
        .collect()
}

type Events = std::collections::HashMap<String, matrix_core::Pdu, rustc_hash::FxBuildHasher>;

fn ours(room: &rooms::Room, sets: &[Vec<String>]) -> Vec<(String, String, String)> {
    let events = room.by_id_fx();
    rooms::rows(&resolve(room.rules, &maps(&events, sets), &events).expect("resolves"))
}

/// Ours again, given the auth chains (as a server that keeps them would).
fn ours_with_chains(room: &rooms::Room, sets: &[Vec<String>]) -> Vec<(String, String, String)> {
    let events = room.by_id_fx();
    let chain_ids: Vec<Vec<String>> = RumaRoom::new(&room.events, sets)
        .auth_chains()
        .iter()
        .map(|chain| chain.iter().map(|id| id.to_string()).collect())
        .collect();
    let chains: Vec<Vec<&str>> =
        chain_ids.iter().map(|c| c.iter().map(String::as_str).collect()).collect();
    let options = ResolveOptions { auth_chains: Some(&chains), ..ResolveOptions::default() };
    rooms::rows(
        &resolve_with(room.rules, &maps(&events, sets), &events, options).expect("resolves"),
    )
}

/// Ours again, given only the auth difference (as a server with a persisted chain cover
/// would), reading events through a source that counts what is read.
fn ours_with_difference(
    room: &rooms::Room,
    sets: &[Vec<String>],
) -> (Vec<(String, String, String)>, usize) {
    let events = room.by_id_fx();
    let index: std::collections::HashMap<&str, u32> =
        room.events.iter().enumerate().map(|(i, e)| (e.event_id(), i as u32)).collect();
    let auth: Vec<Vec<u32>> =
        room.events.iter().map(|e| e.auth_events().map(|a| index[a]).collect()).collect();
    let cover = ChainCover::build(&auth).expect("a DAG");
    let sets_ix: Vec<Vec<u32>> =
        sets.iter().map(|set| set.iter().map(|id| index[id.as_str()]).collect()).collect();
    let difference: Vec<&str> = cover
        .state_auth_difference(&sets_ix, &[])
        .into_iter()
        .map(|ix| room.events[ix as usize].event_id())
        .collect();
    let counted = Counted { events: &events, read: Default::default() };
    let options = ResolveOptions { auth_difference: Some(&difference), ..Default::default() };
    let resolved =
        resolve_with(room.rules, &maps(&events, sets), &counted, options).expect("resolves");
    (rooms::rows(&resolved), counted.read.borrow().len())
}

/// A source that notes the ids it was asked for.
struct Counted<'e> {
    events: &'e Events,
    read: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl EventSource<matrix_core::Pdu> for Counted<'_> {
    fn event(&self, event_id: &str) -> Option<&matrix_core::Pdu> {
        self.read.borrow_mut().insert(event_id.to_owned());
        self.events.get(event_id)
    }
}

/// Given the auth difference, resolution reads the conflicted events, the difference and
/// their auth chains, and the unconflicted events the rules look up: not the room.
#[test]
fn given_the_difference_the_room_is_not_read() {
    for version in ["6", "11", "12"] {
        let room =
            generate(RoomSpec { version, members: 2000, servers: 4, fork_events: 10, seed: 7 });
        let (rows, read) = ours_with_difference(&room, &room.state_sets);
        assert_eq!(rows, theirs(&room, &room.state_sets), "room version {version}");
        assert!(read < room.events.len() / 10, "v{version}: {read} of {} read", room.events.len());
    }
}

/// Ours through lean events (interned ids, chain cover), from the same PDUs.
fn ours_lean(room: &rooms::Room, sets: &[Vec<String>]) -> Vec<(String, String, String)> {
    let mut builder = LeanRoom::builder(room.rules);
    for event in &room.events {
        builder.push_pdu(event).expect("distinct ids");
    }
    let lean = builder.build();
    let sets: Vec<Vec<u32>> = sets
        .iter()
        .map(|set| set.iter().map(|id| lean.index(id).expect("in the room")).collect())
        .collect();
    crate::fixtures::lean_rows(&lean, &lean.resolve(&sets, None).expect("resolves"))
}

fn theirs(room: &rooms::Room, sets: &[Vec<String>]) -> Vec<(String, String, String)> {
    RumaRoom::resolved_rows(room, sets)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn same_state_as_ruma(
        version in prop::sample::select(vec!["6", "11", "12"]),
        members in 2usize..30,
        servers in 1usize..6,
        fork_events in 1usize..20,
        seed in any::<u64>(),
        rotate in 0usize..3,
    ) {
        let room = generate(RoomSpec { version, members, servers, fork_events, seed });
        let mut sets = room.state_sets.clone();
        sets.rotate_left(rotate);
        let expected = theirs(&room, &sets);
        prop_assert_eq!(ours(&room, &sets), expected.clone());
        prop_assert_eq!(ours_with_chains(&room, &sets), expected.clone());
        prop_assert_eq!(ours_with_difference(&room, &sets).0, expected.clone());
        prop_assert_eq!(ours_lean(&room, &sets), expected);
    }
}

/// The generated forks really conflict, so the comparison above exercises resolution.
#[test]
fn generated_forks_conflict() {
    let room =
        generate(RoomSpec { version: "12", members: 20, servers: 3, fork_events: 15, seed: 1 });
    let [a, b, c] =
        [0, 1, 2].map(|i| room.state_sets[i].iter().collect::<std::collections::BTreeSet<_>>());
    assert!(a != b && b != c && a != c);
    let resolved = ours(&room, &room.state_sets);
    // Power levels, join rules and topic are each contested by some fork.
    for kind in ["m.room.power_levels", "m.room.join_rules", "m.room.topic"] {
        assert!(resolved.iter().any(|(k, _, _)| k == kind), "{kind} missing");
    }
}

/// The generator writes the same bytes for the same spec, and other bytes for another seed.
#[test]
fn generator_is_deterministic() {
    let spec = RoomSpec { version: "11", members: 50, servers: 7, fork_events: 10, seed: 42 };
    let json = generate(spec).to_json();
    assert_eq!(json, generate(spec).to_json());
    assert_ne!(json, generate(RoomSpec { seed: 43, ..spec }).to_json());
}
