//! Server-side search at 1,000,000 messages (issue 15: under 50 ms on sled and PostgreSQL):
//! `SearchStore::search` as one `/search` asks it (limit 10, the first page and the page
//! after its `next_batch`), in both orders, for a rare, a mid-frequency and a common word and
//! a two-word query of a common and a rare word.
//!
//! The fixture: `SEARCH_MESSAGES` messages (default 1,000,000) in 20 rooms, each of 6-14
//! words drawn from a 20,000-word vocabulary with Zipf frequencies (the word of rank `r`
//! weighs `1/(r+1)`), written through `Storage::apply` in change sets of 2,000 events. The
//! searcher is in 15 of the 20 rooms. `w0` is then in about 60% of the messages, `w50` in
//! about 2%, `w5000` in about 200. The stores are kept between runs (sled under
//! `$CARGO_TARGET_DIR/search-bench`, PostgreSQL in the schema `bench_search_<messages>`),
//! and refilled only when their last message is missing.
//!
//! Run: `DATABASE_URL=postgres://... cargo bench -p benches --bench search` (PostgreSQL is
//! skipped without `DATABASE_URL`). The first run fills (minutes); later runs only search.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};
use matrix_storage::{
    ChangeSet, EventStatus, NewEvent, RoomChanges, SearchEntry, SearchOrder, SearchPage,
    SearchQuery, SearchRoom, Storage, query_tokens,
};

const ROOMS: usize = 20;
/// The rooms searched (the searcher's).
const SEARCHED: usize = 15;
const VOCABULARY: usize = 20_000;
const BATCH: usize = 2_000;

fn messages() -> usize {
    std::env::var("SEARCH_MESSAGES").ok().and_then(|m| m.parse().ok()).unwrap_or(1_000_000)
}

fn room(n: usize) -> String {
    format!("!room{n}:example.org")
}

/// A seeded xorshift generator (the fixture is the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The texts of the messages, in order: Zipf-distributed words.
struct Texts {
    rng: Rng,
    cumulative: Vec<f64>,
}

impl Texts {
    fn new() -> Self {
        let mut total = 0.0;
        let cumulative = (0..VOCABULARY)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect();
        Texts { rng: Rng(0x9E37_79B9_7F4A_7C15), cumulative }
    }
    fn next(&mut self) -> String {
        let words = 6 + (self.rng.next() % 9) as usize;
        let total = *self.cumulative.last().expect("a vocabulary");
        let mut text = String::new();
        for i in 0..words {
            let at = self.rng.unit() * total;
            let rank = self.cumulative.partition_point(|c| *c < at).min(VOCABULARY - 1);
            if i > 0 {
                text.push(' ');
            }
            text.push('w');
            text.push_str(&rank.to_string());
        }
        text
    }
}

fn event_id(n: usize) -> String {
    format!("$m{n}")
}

/// Whether the store holds the whole fixture (its last message).
async fn filled(store: &dyn Storage, total: usize) -> bool {
    store.event(&event_id(total - 1)).await.expect("reads").is_some()
}

async fn fill(store: &dyn Storage, total: usize) {
    let started = Instant::now();
    let mut changes = ChangeSet::new();
    changes.rooms = (0..ROOMS)
        .map(|r| RoomChanges {
            room_id: room(r),
            create_with_version: Some("12".into()),
            ..RoomChanges::default()
        })
        .collect();
    store.apply(changes).await.expect("creates the rooms");
    let mut texts = Texts::new();
    let mut n = 0;
    while n < total {
        let mut changes = ChangeSet::new();
        for m in n..(n + BATCH).min(total) {
            let id = event_id(m);
            let room_id = room(m % ROOMS);
            changes.events.push(NewEvent {
                event_id: id.clone(),
                room_id: room_id.clone(),
                json: Arc::from(format!(r#"{{"event_id":"{id}"}}"#).as_bytes()),
                status: EventStatus::Accepted,
                auth_events: Vec::new(),
                prev_events: Vec::new(),
                in_timeline: true,
                state_after: None,
            });
            changes.search.push(SearchEntry {
                event_id: id,
                room_id,
                sender: format!("@user{}:example.org", m % 50),
                kind: "m.room.message".into(),
                key: "content.body".into(),
                text: texts.next(),
            });
        }
        n += changes.events.len();
        store.apply(changes).await.expect("fills");
        if n % 100_000 == 0 {
            println!("  {n} messages in {:.0?}", started.elapsed());
        }
    }
    println!("filled {total} messages in {:.1?}", started.elapsed());
}

fn query(term: &str, order: SearchOrder) -> SearchQuery {
    SearchQuery {
        tokens: query_tokens(term),
        rooms: (0..SEARCHED).map(|r| SearchRoom { room_id: room(r), upto: None }).collect(),
        keys: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        types: None,
        not_types: Vec::new(),
        order,
        from: None,
        limit: 10,
    }
}

const TERMS: [(&str, &str); 4] =
    [("rare", "w5000"), ("mid", "w50"), ("common", "w0"), ("common_and_rare", "w0 w5000")];

fn ids(page: &SearchPage) -> Vec<String> {
    page.hits.iter().map(|h| h.event_id.clone()).collect()
}

fn search(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let total = messages();
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = std::path::Path::new(&target).join("search-bench").join(format!("sled-{total}"));
    let mut stores: Vec<(&str, Arc<dyn Storage>)> = Vec::new();
    let sled = || SledStore::open(&dir, &SledOptions::default()).expect("sled opens");
    let mut store = sled();
    if !runtime.block_on(filled(&store, total)) {
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        store = sled();
        println!("filling sled at {}", dir.display());
        runtime.block_on(fill(&store, total));
    }
    stores.push(("sled", Arc::new(store)));
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let schema = format!("bench_search_{total}");
        let options = PostgresOptions::new(url.clone()).with_schema(schema.clone());
        let mut store = runtime.block_on(PostgresStore::open(&options)).expect("PostgreSQL opens");
        if !runtime.block_on(filled(&store, total)) {
            drop(store);
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connects");
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .expect("drops the partial fixture");
            });
            store = runtime.block_on(PostgresStore::open(&options)).expect("PostgreSQL opens");
            println!("filling PostgreSQL schema {schema}");
            runtime.block_on(fill(&store, total));
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connects");
                sqlx::query(&format!("VACUUM ANALYZE {schema}.search_index"))
                    .execute(&mut conn)
                    .await
                    .expect("analyzes");
            });
        }
        stores.push(("postgres", Arc::new(store)));
    } else {
        println!("PostgreSQL skipped: DATABASE_URL is not set");
    }

    // The backends agree on the `recent` pages (the same fixture, the same order).
    for (_, term) in TERMS {
        let q = query(term, SearchOrder::Recent);
        let pages: Vec<SearchPage> =
            stores.iter().map(|(_, s)| runtime.block_on(s.search(&q)).expect("searches")).collect();
        for (page, (name, _)) in pages.iter().zip(&stores) {
            println!("{name} {term}: count {}, first {:?}", page.count, ids(page).first());
            assert_eq!(page.hits.len(), 10, "{name} {term}: a full page");
            assert!(page.next.is_some(), "{name} {term}: a next page");
        }
        for page in &pages[1..] {
            assert_eq!(ids(page), ids(&pages[0]), "{term}: the backends agree");
        }
    }

    let mut group = c.benchmark_group("search");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for (name, store) in &stores {
        for (label, term) in TERMS {
            for (order_name, order) in
                [("recent", SearchOrder::Recent), ("rank", SearchOrder::Rank)]
            {
                let first = query(term, order);
                group.bench_function(format!("{name}/{label}/{order_name}"), |b| {
                    b.iter(|| runtime.block_on(store.search(&first)).expect("searches"));
                });
                let page = runtime.block_on(store.search(&first)).expect("searches");
                let mut second = first.clone();
                second.from = page.next;
                let next = runtime.block_on(store.search(&second)).expect("searches");
                assert!(
                    next.hits.iter().all(|h| !page.hits.contains(h)),
                    "{name} {term} {order_name}: no repeats"
                );
                group.bench_function(format!("{name}/{label}/{order_name}_next"), |b| {
                    b.iter(|| runtime.block_on(store.search(&second)).expect("searches"));
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
