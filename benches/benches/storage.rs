//! matrix-storage backends: durable appends (1 and 32 writers), state lookups in a
//! 50,000-member room, bytes on disk per message event, and bytes on disk per state change
//! in rooms of 1,000, 10,000 and 50,000 members.
//!
//! Run: `cargo bench -p benches --bench storage`; PostgreSQL is included when `DATABASE_URL`
//! is set (a schema of its own per run). The disk figures are printed, not timed.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use matrix_storage::memory::MemoryStore;
use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{SnapshotId, Storage};

fn sled_store(dir: &std::path::Path) -> Arc<dyn Storage> {
    Arc::new(SledStore::open(dir, &SledOptions::default()).expect("opens"))
}

/// A PostgreSQL store in a new schema (and the schema's name), if `DATABASE_URL` is set.
fn postgres_store(runtime: &tokio::runtime::Runtime) -> Option<(Arc<dyn Storage>, String)> {
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        println!("PostgreSQL skipped: DATABASE_URL is not set");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let schema = format!("bench_{nanos}");
    let options = PostgresOptions::new(url).with_schema(&schema);
    let store = runtime.block_on(PostgresStore::open(&options)).expect("PostgreSQL opens");
    Some((Arc::new(store), schema))
}

/// Bytes on disk of the tables (with indexes and TOAST) of a PostgreSQL schema.
async fn postgres_bytes(schema: &str) -> u64 {
    use sqlx::Connection as _;
    let url = std::env::var("DATABASE_URL").expect("set");
    let mut connection = sqlx::PgConnection::connect(&url).await.expect("connects");
    // Make the space used visible: a checkpoint writes out what is only in the WAL.
    sqlx::query("CHECKPOINT").execute(&mut connection).await.ok();
    let bytes: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(schema)
    .fetch_one(&mut connection)
    .await
    .expect("sizes");
    u64::try_from(bytes).unwrap_or(0)
}

/// A snapshot chain of `members` joins; returns the last snapshot.
async fn members(store: &Arc<dyn Storage>, count: u64) -> SnapshotId {
    let mut parent = None;
    for n in 0..count {
        let mut c = benches::storage::change(n, parent, true);
        c.events.clear();
        parent = store.apply(c).await.expect("applies").snapshot;
    }
    parent.expect("a snapshot")
}

/// A sled store with a chain of `count` joins, closed: its bytes on disk, and the bytes of
/// the keys and values it holds (what it stores, without sled's own overhead and garbage).
fn sled_chain_bytes(runtime: &tokio::runtime::Runtime, count: u64) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("dir");
    let store = sled_store(dir.path());
    if count > 0 {
        runtime.block_on(members(&store, count));
    }
    drop(store);
    // sled lets go of its lock once its own threads are done with the closed store.
    let db = (0..500)
        .find_map(|_| {
            sled::open(dir.path()).ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            })
        })
        .expect("the closed store opens");
    let disk = dir_size(dir.path());
    let tree = db.open_tree("matrix").expect("the tree");
    let stored = tree.iter().flatten().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    (disk, stored)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn storage(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("append_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let dir = tempfile::tempdir().expect("dir");
    let sled = sled_store(dir.path());
    runtime.block_on(benches::storage::create_room(&*sled));
    let mut n = 0;
    group.bench_function("sled/1_writer", |b| {
        b.iter(|| {
            n += 1;
            runtime.block_on(sled.apply(benches::storage::change(n, None, false))).expect("applies")
        })
    });
    let memory: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    runtime.block_on(benches::storage::create_room(&*memory));
    group.bench_function("memory/1_writer", |b| {
        b.iter(|| {
            n += 1;
            runtime
                .block_on(memory.apply(benches::storage::change(n, None, false)))
                .expect("applies")
        })
    });
    let postgres = postgres_store(&runtime);
    if let Some((store, _)) = &postgres {
        runtime.block_on(benches::storage::create_room(&**store));
        group.bench_function("postgres/1_writer", |b| {
            b.iter(|| {
                n += 1;
                runtime
                    .block_on(store.apply(benches::storage::change(n, None, false)))
                    .expect("applies")
            })
        });
    }
    group.throughput(Throughput::Elements(32 * 16));
    let mut many = vec![("sled/32_writers", sled.clone()), ("memory/32_writers", memory.clone())];
    if let Some((store, _)) = &postgres {
        many.push(("postgres/32_writers", store.clone()));
    }
    for (name, store) in many {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1_000;
                    n
                },
                |base| {
                    runtime.block_on(async {
                        let tasks: Vec<_> = (0..32u64)
                            .map(|w| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    for i in 0..16u64 {
                                        store
                                            .apply(benches::storage::change(
                                                base * 1_000 + w * 16 + i,
                                                None,
                                                false,
                                            ))
                                            .await
                                            .expect("applies");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("writer");
                        }
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // State lookups at the end of a 50,000-join delta chain.
    let mut group = c.benchmark_group("state_50k_members");
    let lookup_dir = tempfile::tempdir().expect("dir");
    // (name, store, PostgreSQL schema)
    let mut stores: Vec<(&str, Arc<dyn Storage>, Option<String>)> = vec![
        ("sled", sled_store(lookup_dir.path()), None),
        ("memory", Arc::new(MemoryStore::new()), None),
    ];
    if let Some((store, schema)) = postgres_store(&runtime) {
        stores.push(("postgres", store, Some(schema)));
    }
    let mut postgres_50k = None;
    for (name, store, schema) in stores {
        let head = match &schema {
            Some(schema) => runtime.block_on(async {
                let before = postgres_bytes(schema).await;
                let head = members(&store, 50_000).await;
                let grown = postgres_bytes(schema).await.saturating_sub(before);
                postgres_50k = Some(grown as f64 / 50_000.0);
                head
            }),
            None => runtime.block_on(members(&store, 50_000)),
        };
        let mut i = 0u64;
        group.bench_function(format!("lookup/{name}"), |b| {
            b.iter(|| {
                i = (i + 7_919) % 50_000;
                let key = format!("@user{i}:example.org");
                runtime
                    .block_on(store.state_get(head, "m.room.member", &key))
                    .expect("reads")
                    .expect("member")
            })
        });
        group.sample_size(10);
        group.bench_function(format!("full/{name}"), |b| {
            b.iter(|| runtime.block_on(store.state_full(head)).expect("reads").len())
        });
    }
    group.finish();

    // Bytes per state change (a join), by room size: linear growth keeps them flat.
    let (empty_disk, empty_stored) = sled_chain_bytes(&runtime, 0);
    for count in [1_000u64, 10_000, 50_000] {
        let (disk, stored) = sled_chain_bytes(&runtime, count);
        let per = |bytes: u64, empty: u64| bytes.saturating_sub(empty) as f64 / count as f64;
        println!(
            "sled: {:.0} bytes on disk and {:.0} stored (keys and values) per state change, \
             {count} members",
            per(disk, empty_disk),
            per(stored, empty_stored)
        );
        let postgres = match count {
            50_000 => postgres_50k,
            _ => postgres_store(&runtime).map(|(store, schema)| {
                runtime.block_on(async {
                    let before = postgres_bytes(&schema).await;
                    members(&store, count).await;
                    postgres_bytes(&schema).await.saturating_sub(before) as f64 / count as f64
                })
            }),
        };
        if let Some(per_change) = postgres {
            println!("postgres: {per_change:.0} bytes on disk per state change, {count} members");
        }
    }

    // Bytes on disk per message event in a 10,000-member room, beyond the event's JSON.
    let disk_dir = tempfile::tempdir().expect("dir");
    let disk = sled_store(disk_dir.path());
    runtime.block_on(async {
        benches::storage::create_room(&*disk).await;
        let head = members(&disk, 10_000).await;
        // Measured after checkpoints (sled flushed, its write-ahead log trimmed, every 2 s
        // when idle), so that neither the log of the joins nor that of the appends counts.
        let checkpoint = || tokio::time::sleep(std::time::Duration::from_millis(2_500));
        checkpoint().await;
        let before = dir_size(disk_dir.path());
        for m in 0..5_000u64 {
            disk.apply(benches::storage::change(1_000_000 + m, Some(head), false))
                .await
                .expect("applies");
        }
        checkpoint().await;
        let after = dir_size(disk_dir.path());
        let per_event = (after.saturating_sub(before)) as f64 / 5_000.0;
        println!(
            "sled: {per_event:.0} bytes on disk per 1,000-byte message event (10,000-member room)"
        );
    });
    if let Some((store, schema)) = postgres_store(&runtime) {
        runtime.block_on(async {
            benches::storage::create_room(&*store).await;
            let head = members(&store, 10_000).await;
            let before = postgres_bytes(&schema).await;
            for m in 0..5_000u64 {
                store
                    .apply(benches::storage::change(1_000_000 + m, Some(head), false))
                    .await
                    .expect("applies");
            }
            let after = postgres_bytes(&schema).await;
            let per_event = (after.saturating_sub(before)) as f64 / 5_000.0;
            println!(
                "postgres: {per_event:.0} bytes on disk per 1,000-byte message event \
                 (10,000-member room; tables, indexes and TOAST)"
            );
        });
    }
}

criterion_group!(benches, storage);
criterion_main!(benches);
