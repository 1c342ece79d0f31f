//! matrix-stateres against ruma-state-res 0.18 on the same generated rooms, in the same run.
//!
//! End to end means: from the events in memory and the state sets (event ids) to the resolved
//! map, computing the auth chains on the way. ruma takes the auth chains as input; it is
//! measured both given them ("resolve only") and with computing them the way a server without
//! a chain index would ("with auth chains"). We are measured the same two ways.
//!
//! Run: `cargo bench -p benches --bench stateres`.

use std::hint::black_box;

use benches::rooms::{RoomSpec, generate};
use benches::ruma_stateres::RumaRoom;
use criterion::{Criterion, criterion_group, criterion_main};
use matrix_stateres::{ResolveOptions, StateMap, resolve, resolve_with, state_map_from_ids};

fn stateres(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("STATERES_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 50_000]);
    for members in sizes {
        let room =
            generate(RoomSpec { version: "11", members, servers: 100, fork_events: 60, seed: 7 });
        let events = room.by_id_fx();
        let sets: Vec<StateMap<'_>> = room
            .state_sets
            .iter()
            .map(|s| {
                let ids: Vec<&str> = s.iter().map(String::as_str).collect();
                state_map_from_ids(&ids, &events).expect("valid state")
            })
            .collect();
        let ruma = RumaRoom::new(&room.events, &room.state_sets);
        let version = ruma::RoomVersionId::V11;
        let ruma_chains = ruma.auth_chains();
        let chain_ids: Vec<Vec<String>> =
            ruma_chains.iter().map(|c| c.iter().map(|id| id.to_string()).collect()).collect();
        let chains: Vec<Vec<&str>> =
            chain_ids.iter().map(|c| c.iter().map(String::as_str).collect()).collect();

        // Same answer first.
        let ours = benches::rooms::rows(&resolve(room.rules, &sets, &events).expect("resolves"));
        let theirs =
            RumaRoom::rows(&ruma.resolve(&version, ruma_chains.clone()).expect("resolves"));
        assert_eq!(ours, theirs, "{members} members: ours and ruma's differ");
        let options = ResolveOptions { auth_chains: Some(&chains), ..ResolveOptions::default() };
        let ours_given = benches::rooms::rows(
            &resolve_with(room.rules, &sets, &events, options).expect("resolves"),
        );
        assert_eq!(
            ours_given, theirs,
            "{members} members: ours given the chains and ruma's differ"
        );

        let mut group = c.benchmark_group(format!("stateres_{members}"));
        group.sample_size(10);
        group.bench_function("with_auth_chains/ours", |b| {
            b.iter(|| resolve(room.rules, black_box(&sets), &events).expect("resolves"))
        });
        group.bench_function("with_auth_chains/ruma", |b| {
            b.iter(|| ruma.resolve(&version, ruma.auth_chains()).expect("resolves"))
        });
        group.bench_function("resolve_only/ours", |b| {
            b.iter(|| {
                resolve_with(room.rules, black_box(&sets), &events, options).expect("resolves")
            })
        });
        group.bench_function("resolve_only/ruma", |b| {
            b.iter_batched(
                || ruma_chains.clone(),
                |chains| ruma.resolve(&version, chains).expect("resolves"),
                criterion::BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, stateres);
criterion_main!(benches);
