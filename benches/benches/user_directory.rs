//! The user directory's reads at 10,000 users (memory, sled, and PostgreSQL when
//! `DATABASE_URL` is set): what one `/user_directory/search` asks of storage (the members of
//! the public rooms, the public rooms, the matching index entries) against the anchor of
//! reading the 10,000 members of one room, which any answer of "who may this user find"
//! needs. Terms: `user1234` (one match by id), `number 77` (111 by display name) and
//! `user` (all 10,000: the worst case, cut at the service's scan bound).
//!
//! Run: `cargo bench -p benches --bench user_directory`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use matrix_storage::memory::MemoryStore;
use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{ChangeSet, DirectoryUser, RoomChanges, Storage};

const USERS: usize = 10_000;
/// The service's bound on entries read per search (`MAX_SCANNED`).
const SCANNED: usize = 20_000;

async fn fill(store: &dyn Storage) {
    let mut changes = ChangeSet::new();
    changes.rooms.push(RoomChanges {
        room_id: "!public:example.org".into(),
        create_with_version: Some("12".into()),
        memberships: (0..USERS).map(|n| (format!("@user{n}:example.org"), "join".into())).collect(),
        ..RoomChanges::default()
    });
    changes.directory_users = (0..USERS)
        .map(|n| DirectoryUser {
            user_id: format!("@user{n}:example.org"),
            displayname: Some(format!("Number {n}")),
            avatar_url: None,
        })
        .collect();
    changes.public_join_rules.push(("!public:example.org".into(), true));
    store.apply(changes).await.expect("fills");
}

/// What one search reads: the public rooms, their members, the matching entries; answers
/// how many it found (visible and matching).
async fn search(store: &dyn Storage, term: &str) -> usize {
    let mut visible = std::collections::HashSet::new();
    for room in store.public_join_rooms().await.expect("reads") {
        for (user, membership) in store.members(&room).await.expect("reads") {
            if membership == "join" {
                visible.insert(user);
            }
        }
    }
    let found = store.search_user_directory(term, SCANNED).await.expect("reads");
    found.iter().filter(|u| visible.contains(&u.user_id)).count()
}

fn user_directory(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("dir");
    let mut stores: Vec<(&str, Arc<dyn Storage>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("sled", Arc::new(SledStore::open(dir.path(), &SledOptions::default()).expect("opens"))),
    ];
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let options = PostgresOptions::new(url).with_schema(format!("bench_ud_{nanos}"));
        let store = runtime.block_on(PostgresStore::open(&options)).expect("PostgreSQL opens");
        stores.push(("postgres", Arc::new(store)));
    } else {
        println!("PostgreSQL skipped: DATABASE_URL is not set");
    }
    let mut group = c.benchmark_group("user_directory");
    group.sample_size(20);
    for (name, store) in &stores {
        runtime.block_on(fill(store.as_ref()));
        assert_eq!(runtime.block_on(search(store.as_ref(), "user1234")), 1);
        assert_eq!(runtime.block_on(search(store.as_ref(), "number 77")), 111);
        assert_eq!(runtime.block_on(search(store.as_ref(), "user")), USERS);
        group.bench_function(format!("{name}/anchor_members_10k"), |b| {
            b.iter(|| runtime.block_on(store.members("!public:example.org")).expect("reads").len());
        });
        for (label, term) in
            [("one_by_id", "user1234"), ("111_by_name", "number 77"), ("all_10k", "user")]
        {
            group.bench_function(format!("{name}/search_{label}"), |b| {
                b.iter(|| runtime.block_on(search(store.as_ref(), term)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, user_directory);
criterion_main!(benches);
