//! Relations through the client API, in process: a `TestHomeserver` (the production router
//! and connection loop, on a loopback port) on sled, driven over HTTP by reqwest. The target
//! (issue 15): a page of 100 relations under 5 ms. The anchor in the same run is a page of
//! 100 events of `/messages` of the same room; the storage read alone is measured too.
//!
//! - `relations_page_100`: `GET /relations/{root}?limit=100` of a root with 100 thread
//!   replies (each shown with its own bundled aggregations), request to parsed answer.
//! - `messages_page_100`: `GET /messages?dir=b&limit=100` of the same room (the anchor).
//! - `store_relations_100`: `RelationStore::relations` of the same 100, from sled.
//!
//! Run: `cargo bench -p benches --bench relations`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use matrix_homeserver::testing::TestHomeserver;
use matrix_storage::{Direction, Storage, StreamPos};
use serde_json::{Value, json};

const REPLIES: usize = 100;

struct Fixture {
    server: TestHomeserver,
    storage: Arc<dyn Storage>,
    http: reqwest::Client,
    token: String,
    room: String,
    root: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory");
        let options = matrix_storage::sled::SledOptions::default();
        let store = matrix_storage::sled::SledStore::open(dir.path(), &options).expect("opens");
        let storage: Arc<dyn Storage> = Arc::new(store);
        let server = TestHomeserver::start_on(TestHomeserver::config(), storage.clone()).await;
        let alice = server.register_user("alice", "pw").await;
        let token = alice.access_token.clone();
        let room = server.create_room(&alice, None).await.to_string();
        let mut fixture = Fixture {
            server,
            storage,
            http: reqwest::Client::new(),
            token,
            room,
            root: String::new(),
            _dir: dir,
        };
        fixture.root = fixture.send(json!({"msgtype": "m.text", "body": "root"}), 0).await;
        for n in 0..REPLIES {
            let reply = json!({
                "msgtype": "m.text",
                "body": format!("reply {n}"),
                "m.relates_to": {"rel_type": "m.thread", "event_id": fixture.root},
            });
            fixture.send(reply, n + 1).await;
        }
        fixture
    }

    async fn send(&self, content: Value, txn: usize) -> String {
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/b{txn}",
            self.server.base_url(),
            self.room
        );
        let answer: Value = self
            .http
            .put(url)
            .bearer_auth(&self.token)
            .json(&content)
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
        answer["event_id"].as_str().expect("an event id").to_owned()
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.server.base_url());
        let answer = self.http.get(url).bearer_auth(&self.token).send().await.expect("answers");
        assert_eq!(answer.status(), 200);
        answer.json().await.expect("JSON")
    }
}

fn relations(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let fixture = runtime.block_on(Fixture::start());
    let relations =
        format!("/_matrix/client/v1/rooms/{}/relations/{}?limit=100", fixture.room, fixture.root);
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", fixture.room);
    let page = runtime.block_on(fixture.get(&relations));
    assert_eq!(page["chunk"].as_array().map(Vec::len), Some(REPLIES));
    let mut group = c.benchmark_group("relations");
    group.bench_function("relations_page_100", |b| {
        b.iter(|| runtime.block_on(fixture.get(&relations)));
    });
    group.bench_function("messages_page_100", |b| {
        b.iter(|| runtime.block_on(fixture.get(&messages)));
    });
    group.bench_function("store_relations_100", |b| {
        b.iter(|| {
            let page = runtime.block_on(fixture.storage.relations(
                &fixture.room,
                &fixture.root,
                None,
                StreamPos(u64::MAX),
                Direction::Backwards,
                100,
            ));
            assert_eq!(page.map(|p| p.len()).ok(), Some(REPLIES));
        });
    });
    group.finish();
}

criterion_group!(benches, relations);
criterion_main!(benches);
