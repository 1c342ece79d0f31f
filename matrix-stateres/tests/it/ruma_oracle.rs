//! Differential tests: random forked rooms of room versions 6, 11 and 12 resolve to the same
//! state with ruma-state-res 0.18 (given the auth chains a server computes, and for v2.1 the
//! conflicted state subgraph it asks for).

use benches::rooms::{self, RoomSpec, generate};
use benches::ruma_stateres::RumaRoom;
use matrix_stateres::lean::LeanRoom;
use matrix_stateres::{ResolveOptions, StateMap, resolve, resolve_with, state_map_from_ids};
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
    let ruma = RumaRoom::new(&room.events, sets);
    let version = ruma::RoomVersionId::try_from(room.rules.id).expect("known");
    RumaRoom::rows(&ruma.resolve(&version, ruma.auth_chains()).expect("ruma resolves"))
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
