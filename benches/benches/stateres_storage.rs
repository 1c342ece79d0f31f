//! State resolution from storage, with the persisted auth-chain index, against ruma-state-res
//! resolving from memory, on the generated forked rooms of 10,000 and 50,000 members (the
//! rooms of the `stateres` bench), in the same run.
//!
//! Ours: the room's events and its auth-chain index (`matrix_federation::auth_index`) are in a
//! store (sled, PostgreSQL when `DATABASE_URL` is set, in-memory). Each resolution is what the
//! homeserver does when a room forks: the index gives a plan (the auth difference, the events
//! to read), those events are read from the store and parsed, then the unconflicted events the
//! authorization rules look up, then resolution (`matrix_federation::inbound::resolve`). "warm"
//! keeps the index cached, as a running server does; "cold index" reads the room's index from
//! the store again on every resolution, as the first fork after a restart does.
//!
//! ruma: every event already parsed in memory, the auth chain of each state set computed from
//! the events' `auth_events`, then `state_res::resolve` (the `stateres` bench's
//! `with_auth_chains/ruma`).
//!
//! Indexing a room the first time (reading every state event once) is printed, not timed by
//! criterion: it happens once per room.
//!
//! Run: `cargo bench -p benches --bench stateres_storage` (`STATERES_SIZES=10000` to choose).

use std::sync::Arc;
use std::time::Instant;

use benches::rooms::{RoomSpec, generate};
use benches::ruma_stateres::RumaRoom;
use benches::stored_room::{StoredRoom, rows, state_ids, store_room};
use criterion::{Criterion, criterion_group, criterion_main};
use matrix_federation::inbound::{self, RoomContext, StateSplit};
use matrix_storage::Storage;
use matrix_storage::memory::MemoryStore;
use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};

/// The stores to measure: sled in a temporary directory, PostgreSQL in a schema of its own
/// when `DATABASE_URL` is set, and the in-memory store.
fn stores(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    members: usize,
) -> Vec<(&'static str, Arc<dyn Storage>)> {
    let mut stores: Vec<(&'static str, Arc<dyn Storage>)> = Vec::new();
    let sled = SledStore::open(dir.join(format!("sled-{members}")), &SledOptions::default())
        .expect("sled opens");
    stores.push(("sled", Arc::new(sled)));
    match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let options = PostgresOptions::new(url).with_schema(format!("stateres_{nanos}"));
            let store = runtime.block_on(PostgresStore::open(&options)).expect("PostgreSQL opens");
            stores.push(("postgres", Arc::new(store)));
        }
        None => println!("PostgreSQL skipped: DATABASE_URL is not set"),
    }
    stores.push(("memory", Arc::new(MemoryStore::new())));
    stores
}

fn stateres_storage(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("STATERES_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 50_000]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    for members in sizes {
        let room =
            generate(RoomSpec { version: "11", members, servers: 100, fork_events: 60, seed: 7 });
        let states = state_ids(&room);
        let ruma = RumaRoom::new(&room.events, &room.state_sets);
        let version = ruma::RoomVersionId::V11;
        let theirs = RumaRoom::rows(&ruma.resolve(&version, ruma.auth_chains()).expect("resolves"));

        let mut group = c.benchmark_group(format!("stateres_storage_{members}"));
        group.sample_size(10);
        group.bench_function("ruma/with_auth_chains", |b| {
            b.iter(|| ruma.resolve(&version, ruma.auth_chains()).expect("resolves"))
        });
        for (name, storage) in stores(&runtime, dir.path(), members) {
            runtime.block_on(store_room(&storage, &room));
            let stored = StoredRoom::new(storage.clone(), &room);
            // The first resolution indexes the room (every state event read once).
            let start = Instant::now();
            let plan = runtime
                .block_on(stored.resolution_plan(&StateSplit::new(&states)))
                .expect("plans")
                .expect("every event indexed");
            println!(
                "{members} members, {name}: indexing the room once: {:.0} ms ({} events in the \
                 auth difference, {} to read)",
                start.elapsed().as_secs_f64() * 1000.0,
                plan.auth_difference.len(),
                plan.events.len(),
            );
            let ours =
                runtime.block_on(inbound::resolve(room.rules, &states, &stored)).expect("resolves");
            assert_eq!(rows(&ours), theirs, "{members} members on {name}: ours and ruma's differ");

            group.bench_function(format!("ours/{name}/warm"), |b| {
                b.iter(|| {
                    runtime
                        .block_on(inbound::resolve(room.rules, &states, &stored))
                        .expect("resolves")
                })
            });
            group.bench_function(format!("ours/{name}/cold_index"), |b| {
                b.iter(|| {
                    let cold = StoredRoom::new(storage.clone(), &room);
                    runtime
                        .block_on(inbound::resolve(room.rules, &states, &cold))
                        .expect("resolves")
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, stateres_storage);
criterion_main!(benches);
