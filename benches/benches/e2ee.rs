//! End-to-end encryption through the client API, in process: a `TestHomeserver` (the
//! production router and connection loop, on a loopback port) on sled and in memory, driven
//! over HTTP by reqwest. The anchors are issue 14's targets:
//!
//! - `keys_claim_100`: one `/keys/claim` taking a one-time key of each of 100 devices (10
//!   users of 10 devices), answered: under 20 ms.
//! - `to_device_fanout_1000`: one `sendToDevice` to 1,000 devices (10 users of 100 devices,
//!   `*` for each user) while every device has a `/sync` long-poll waiting, from the send
//!   until all 1,000 syncs have answered with their message: under 200 ms.
//!
//! Run: `cargo bench -p benches --bench e2ee`. The devices are written to storage directly
//! (a device and its access token, kept by the token's SHA-256 as the server keeps it):
//! logging 1,000 devices in would hash a password 1,000 times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use matrix_homeserver::testing::TestHomeserver;
use matrix_storage::{ChangeSet, Device, Storage, TokenOwner};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const V3: &str = "/_matrix/client/v3";

/// One-time keys each device of the claim bench holds (refilled, untimed, when used up).
const KEYS_PER_DEVICE: usize = 1000;

/// A device the bench acts as.
#[derive(Debug, Clone)]
struct Login {
    user: String,
    device: String,
    token: String,
}

struct Fixture {
    server: TestHomeserver,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn start(backend: &str) -> Self {
        let mut config = TestHomeserver::config();
        config.limits.max_one_time_keys_per_device = KEYS_PER_DEVICE;
        let (storage, dir): (Arc<dyn Storage>, _) = match backend {
            "sled" => {
                let dir = tempfile::tempdir().expect("a directory");
                let options = matrix_storage::sled::SledOptions::default();
                let store = matrix_storage::sled::SledStore::open(dir.path(), &options);
                (Arc::new(store.expect("sled opens")), Some(dir))
            }
            _ => (Arc::new(matrix_storage::memory::MemoryStore::new()), None),
        };
        let server = TestHomeserver::start_on(config, storage).await;
        Fixture { server, http: reqwest::Client::new(), _dir: dir }
    }

    /// `users` users (`@{prefix}{n}`) of `per_user` devices each, written to storage.
    async fn devices(&self, prefix: &str, users: usize, per_user: usize) -> Vec<Login> {
        let mut logins = Vec::new();
        let mut changes = ChangeSet::new();
        for u in 0..users {
            let localpart = format!("{prefix}{u}");
            let homeserver = self.server.homeserver();
            homeserver.create_user(&localpart, Some("pw"), false).await.expect("created");
            let user = format!("@{localpart}:{}", self.server.server_name());
            for d in 0..per_user {
                let device = format!("{prefix}{u}D{d}");
                let token = format!("bench_{device}");
                let key: String =
                    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
                changes.devices.push(Device {
                    user_id: user.clone(),
                    device_id: device.clone(),
                    display_name: None,
                });
                let owner = TokenOwner { user_id: user.clone(), device_id: device.clone() };
                changes.new_tokens.push((key, owner));
                logins.push(Login { user: user.clone(), device, token });
            }
        }
        self.server.storage().apply(changes).await.expect("the devices are stored");
        logins
    }

    async fn call(
        &self,
        method: reqwest::Method,
        login: &Login,
        path: &str,
        body: &Value,
    ) -> Value {
        let url = format!("{}{path}", self.server.base_url());
        let response = self
            .http
            .request(method, url)
            .bearer_auth(&login.token)
            .json(body)
            .send()
            .await
            .expect("answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn post(&self, login: &Login, path: &str, body: &Value) -> Value {
        self.call(reqwest::Method::POST, login, path, body).await
    }

    async fn sync(&self, login: &Login, query: &str) -> Value {
        let url = format!("{}{V3}/sync?{query}", self.server.base_url());
        let response = self.http.get(url).bearer_auth(&login.token).send().await.expect("answers");
        assert!(response.status().is_success(), "sync: {}", response.status());
        response.json().await.expect("JSON")
    }
}

/// Uploads [`KEYS_PER_DEVICE`] one-time keys (ids starting with `round`) for each device.
async fn upload_keys(fixture: &Fixture, devices: &[Login], round: usize) {
    for login in devices {
        let keys: serde_json::Map<String, Value> = (0..KEYS_PER_DEVICE)
            .map(|k| {
                let id = format!("signed_curve25519:r{round}k{k}");
                let key = json!({"key": format!("{}{round}x{k}", login.device),
                                 "signatures": {&login.user: {format!("ed25519:{}", login.device): "sig"}}});
                (id, key)
            })
            .collect();
        let answer = fixture
            .post(login, &format!("{V3}/keys/upload"), &json!({"one_time_keys": keys}))
            .await;
        assert_eq!(answer["one_time_key_counts"]["signed_curve25519"], KEYS_PER_DEVICE, "{answer}");
    }
}

fn keys_claim(c: &mut Criterion, runtime: &tokio::runtime::Runtime, backend: &str) {
    let fixture = runtime.block_on(Fixture::start(backend));
    let devices = runtime.block_on(fixture.devices("claimee", 10, 10));
    let claimer = runtime.block_on(fixture.devices("claimer", 1, 1)).remove(0);
    let mut by_user: serde_json::Map<String, Value> = serde_json::Map::new();
    for login in &devices {
        let entry = by_user.entry(login.user.clone()).or_insert_with(|| json!({}));
        entry[&login.device] = json!("signed_curve25519");
    }
    let body = json!({"one_time_keys": by_user});
    let path = format!("{V3}/keys/claim");
    let mut round = 0;
    runtime.block_on(upload_keys(&fixture, &devices, round));
    let mut left = KEYS_PER_DEVICE;
    // Every device answers with a one-time key (not its fallback key).
    let answer = runtime.block_on(fixture.post(&claimer, &path, &body));
    left -= 1;
    let claimed: usize = answer["one_time_keys"]
        .as_object()
        .expect("by user")
        .values()
        .map(|d| d.as_object().map_or(0, |d| d.len()))
        .sum();
    assert_eq!(claimed, 100, "{answer}");

    let mut group = c.benchmark_group("keys_claim_100");
    group.sample_size(30);
    group.bench_function(backend, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if left == 0 {
                    round += 1;
                    runtime.block_on(upload_keys(&fixture, &devices, round));
                    left = KEYS_PER_DEVICE;
                }
                let start = Instant::now();
                let answer = runtime.block_on(fixture.post(&claimer, &path, &body));
                total += start.elapsed();
                left -= 1;
                assert!(answer["one_time_keys"].is_object());
            }
            total
        });
    });
    group.finish();
}

fn to_device_fanout(c: &mut Criterion, runtime: &tokio::runtime::Runtime, backend: &str) {
    let fixture = Arc::new(runtime.block_on(Fixture::start(backend)));
    let devices = runtime.block_on(fixture.devices("fan", 10, 100));
    let sender = runtime.block_on(fixture.devices("sender", 1, 1)).remove(0);
    let users: Vec<String> = {
        let mut users: Vec<String> = devices.iter().map(|d| d.user.clone()).collect();
        users.dedup();
        users
    };
    // Each device's sync token, from an initial sync.
    let mut since: Vec<String> = runtime.block_on(async {
        let mut tokens = Vec::new();
        for login in &devices {
            let body = fixture.sync(login, "timeout=0").await;
            tokens.push(body["next_batch"].as_str().expect("a token").to_owned());
        }
        tokens
    });
    let mut txn = 0u64;

    let mut group = c.benchmark_group("to_device_fanout_1000");
    // Each iteration first parks 1,000 long-polls (untimed, about a second): few of them.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function(backend, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                txn += 1;
                // Every device long-polls first (untimed), as clients wait in /sync.
                let waiting: Vec<_> = devices
                    .iter()
                    .zip(&since)
                    .map(|(login, token)| {
                        let fixture = fixture.clone();
                        let login = login.clone();
                        let query = format!("since={token}&timeout=30000");
                        runtime.spawn(async move { fixture.sync(&login, &query).await })
                    })
                    .collect();
                std::thread::sleep(Duration::from_millis(1000));
                let messages: serde_json::Map<String, Value> =
                    users.iter().map(|u| (u.clone(), json!({"*": {"n": txn}}))).collect();
                let body = json!({"messages": messages});
                let path = format!("{V3}/sendToDevice/m.bench/t{txn}");
                let start = Instant::now();
                runtime.block_on(async {
                    fixture.call(reqwest::Method::PUT, &sender, &path, &body).await;
                    for (task, token) in waiting.into_iter().zip(since.iter_mut()) {
                        let answer = task.await.expect("the sync task");
                        let events = &answer["to_device"]["events"];
                        assert_eq!(events[0]["content"]["n"], txn, "{answer}");
                        *token = answer["next_batch"].as_str().expect("a token").to_owned();
                    }
                });
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn e2ee(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    for backend in ["sled", "memory"] {
        keys_claim(c, &runtime, backend);
        to_device_fanout(c, &runtime, backend);
    }
}

criterion_group!(benches, e2ee);
criterion_main!(benches);
