//! Pushing to application services (`PUT /_matrix/app/v1/transactions/{txnId}`), against a
//! loopback service stub that records every request: the events of interest arrive in
//! order and the others never do; a service that fails (500, no answer, garbage, down) gets
//! the same transaction again with the same id until it takes it, nothing lost, across a
//! restart too; `hs_token` as bearer; ephemeral events for services that ask; for services
//! with `org.matrix.msc3202`, device-list changes and one-time key counts, and to-device
//! messages for their users' devices (MSC4203) exactly once, across a restart too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_homeserver::testing::TestHomeserver;
use matrix_homeserver::{AppserviceRegistration, Config, Namespace};
use serde_json::{Value, json};

use crate::Client;
use crate::rooms::{create, user};

const V3: &str = "/_matrix/client/v3";
const HS_TOKEN: &str = "hs_secret_token";

/// How the stub answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    Hang,
    Garbage,
}

/// One request the stub got.
#[derive(Debug, Clone)]
struct Seen {
    txn: String,
    auth: Option<String>,
    body: Value,
    mode: Mode,
}

#[derive(Clone)]
struct Stub {
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Stub {
    fn new() -> Self {
        Stub { seen: Arc::default(), mode: Arc::new(Mutex::new(Mode::Ok)) }
    }

    /// Serves on `listener`.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let stub = self.clone();
        let app = axum::Router::new()
            .route("/_matrix/app/v1/ping", axum::routing::post(|| async { "{}" }))
            .route(
                "/_matrix/app/v1/transactions/{txn}",
                axum::routing::put(
                    move |axum::extract::Path(txn): axum::extract::Path<String>,
                          headers: axum::http::HeaderMap,
                          body: axum::body::Bytes| {
                        let stub = stub.clone();
                        async move {
                            let mode = *stub.mode.lock().expect("a lock");
                            stub.seen.lock().expect("a lock").push(Seen {
                                txn,
                                auth: headers
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned),
                                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                mode,
                            });
                            match mode {
                                Mode::Ok => (axum::http::StatusCode::OK, "{}".to_owned()),
                                Mode::Fail => (
                                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                    "{\"errcode\":\"M_UNKNOWN\"}".to_owned(),
                                ),
                                Mode::Hang => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    (axum::http::StatusCode::OK, "{}".to_owned())
                                }
                                Mode::Garbage => {
                                    (axum::http::StatusCode::OK, "<html>not json".to_owned())
                                }
                            }
                        }
                    },
                ),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    async fn start() -> (Self, String) {
        let stub = Stub::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        stub.serve(listener);
        (stub, url)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("a lock") = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("a lock").clone()
    }

    /// The transactions the service took, each id once (as a service dedups), in order.
    fn taken(&self) -> Vec<Seen> {
        let mut taken: Vec<Seen> = Vec::new();
        for seen in self.seen() {
            if seen.mode == Mode::Ok && !taken.iter().any(|t| t.txn == seen.txn) {
                taken.push(seen);
            }
        }
        taken
    }

    /// The events of the transactions taken, in order.
    fn events(&self) -> Vec<Value> {
        self.taken()
            .into_iter()
            .flat_map(|t| t.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn event_ids(&self) -> Vec<String> {
        self.events().iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
    }

    /// Waits until `event` was taken.
    async fn wait_for(&self, event: &str) {
        for _ in 0..300 {
            if self.event_ids().iter().any(|e| e == event) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{event} never arrived; the stub saw {:#?}", self.seen());
    }

    /// Waits until the stub saw at least `count` requests.
    async fn wait_requests(&self, count: usize) {
        for _ in 0..300 {
            if self.seen().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {count} requests: {:#?}", self.seen());
    }
}

/// A registration for `url` with ghosts `@ghost_*` and aliases `#bridge_*` of `server`.
fn registration(url: &str, server: &str, ephemeral: bool) -> AppserviceRegistration {
    let mut r = AppserviceRegistration::new(
        "bridge",
        Some(url.to_owned()),
        "as_secret_token",
        HS_TOKEN,
        "bridgebot",
    );
    let server = regex_escape(server);
    r.namespaces.users.push(Namespace::new(format!("@ghost_.*:{server}"), false));
    r.namespaces.aliases.push(Namespace::new(format!("#bridge_.*:{server}"), false));
    r.receive_ephemeral = ephemeral;
    r
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = !c.is_ascii_alphanumeric();
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

fn config(url: &str, ephemeral: bool) -> Config {
    let mut config = TestHomeserver::config();
    let server = config.server_name.clone();
    config.appservices.push(registration(url, &server, ephemeral));
    config.limits.appservice_timeout_ms = 300;
    config
}

async fn send(client: &Client, room: &str, txn: &str, body: &str) -> String {
    let (status, answer) = crate::rooms::send(client, room, txn, body).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().expect("an event id").to_owned()
}

async fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

async fn invite(client: &Client, room: &str, who: &str) {
    let (status, body) =
        client.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": who})).await;
    assert_eq!(status, 200, "{body}");
}

/// The index of `event` among `ids`.
fn at(ids: &[String], event: &str) -> usize {
    ids.iter().position(|e| e == event).unwrap_or_else(|| panic!("{event} not in {ids:?}"))
}

async fn events_of_interest_arrive_in_order_and_others_do_not(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some(server) = crate::start_with(backend, config(&url, false)).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (ghost, ghost_id) = user(&server, "ghost_1").await;

    // A room with a ghost: its invite (a membership of a namespace user) and everything
    // after, until the ghost leaves.
    let bridged = create(&alice, json!({})).await;
    invite(&alice, &bridged, &ghost_id).await;
    join(&ghost, &bridged).await;
    let m1 = send(&alice, &bridged, "m1", "one").await;
    let m2 = send(&ghost, &bridged, "m2", "two").await;
    // A room without: nothing of it, ever (Bob's secret stays there).
    let private = create(&alice, json!({"invite": [&bob_id]})).await;
    join(&bob, &private).await;
    let secret = send(&bob, &private, "s1", "secret").await;
    // The ghost leaves: the leave goes out, what follows does not.
    let (status, _) = ghost.post(&format!("{V3}/rooms/{bridged}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let after = send(&alice, &bridged, "m3", "after the ghost left").await;
    // A room with an alias of the namespace.
    let aliased = create(&alice, json!({"room_alias_name": "bridge_lobby"})).await;
    let lobby = send(&alice, &aliased, "l1", "in the lobby").await;
    stub.wait_for(&lobby).await;

    let ids = stub.event_ids();
    let events = stub.events();
    assert!(at(&ids, &m1) < at(&ids, &m2), "in order: {ids:?}");
    assert!(!ids.contains(&secret), "a room without interest leaks: {ids:?}");
    assert!(!ids.contains(&after), "interest ends with the ghost's leave: {ids:?}");
    for event in &events {
        assert_ne!(event["room_id"], private.as_str(), "{event}");
    }
    let memberships: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == ghost_id.as_str())
        .filter_map(|e| e["content"]["membership"].as_str())
        .collect();
    assert_eq!(memberships, vec!["invite", "join", "leave"], "{events:#?}");
    let leave = events
        .iter()
        .find(|e| e["state_key"] == ghost_id.as_str() && e["content"]["membership"] == "leave")
        .and_then(|e| e["event_id"].as_str())
        .expect("the leave");
    assert!(at(&ids, &m2) < at(&ids, leave) && at(&ids, leave) < at(&ids, &lobby));
    // Client format, for no particular viewer.
    let first = &events[at(&ids, &m1)];
    assert_eq!(first["room_id"], bridged.as_str());
    assert_eq!(first["content"]["body"], "one");
    assert!(first["unsigned"]["age"].is_u64(), "{first}");
    for federation_only in ["hashes", "signatures", "auth_events", "prev_events", "depth"] {
        assert!(first.get(federation_only).is_none(), "{first}");
    }
    // Every request carries the hs_token; transaction ids only grow.
    let seen = stub.seen();
    assert!(seen.iter().all(|s| s.auth.as_deref() == Some(&format!("Bearer {HS_TOKEN}"))));
    let txns: Vec<u64> = stub.taken().iter().map(|t| t.txn.parse().expect("a number")).collect();
    assert!(txns.windows(2).all(|w| w[0] < w[1]), "{txns:?}");
    assert!(stub.taken().iter().all(|t| t.body.get("ephemeral").is_none()));
    assert!(
        stub.taken().iter().all(|t| t.body["events"].as_array().is_some_and(|e| e.len() <= 100))
    );
}

async fn failures_are_retried_with_the_same_transaction(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some(server) = crate::start_with(backend, config(&url, false)).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (ghost, ghost_id) = user(&server, "ghost_2").await;
    let room = create(&alice, json!({"invite": [&ghost_id]})).await;
    join(&ghost, &room).await;
    let warm = send(&alice, &room, "w", "warm up").await;
    stub.wait_for(&warm).await;

    // 500, then garbage, then no answer in time: the same transaction each time.
    stub.set(Mode::Fail);
    let before = stub.seen().len();
    let m1 = send(&alice, &room, "f1", "through failures").await;
    stub.wait_requests(before + 2).await;
    stub.set(Mode::Garbage);
    stub.wait_requests(before + 3).await;
    stub.set(Mode::Hang);
    let m2 = send(&alice, &room, "f2", "while it hangs").await;
    stub.wait_requests(before + 4).await;
    stub.set(Mode::Ok);
    stub.wait_for(&m2).await;

    let tries: Vec<Seen> = stub.seen().into_iter().skip(before).collect();
    let first = &tries[0];
    assert_eq!(first.body["events"][0]["event_id"], m1.as_str());
    let same: Vec<&Seen> = tries.iter().filter(|t| t.txn == first.txn).collect();
    assert!(same.len() >= 5, "every failure sent it again: {tries:#?}");
    assert!(same.iter().all(|t| t.body == first.body), "the same transaction each time");
    assert_eq!(
        same.iter().map(|t| t.mode).collect::<Vec<_>>()[..4],
        [Mode::Fail, Mode::Fail, Mode::Garbage, Mode::Hang]
    );
    let ids = stub.event_ids();
    assert!(at(&ids, &warm) < at(&ids, &m1) && at(&ids, &m1) < at(&ids, &m2), "{ids:?}");
    assert_eq!(ids.iter().filter(|e| **e == m1).count(), 1, "{ids:?}");
}

async fn a_service_down_then_up_gets_everything_in_order(backend: crate::Backend) {
    // An address nobody listens on yet.
    let reserved = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = reserved.local_addr().expect("an address");
    drop(reserved);
    let url = format!("http://{addr}");
    let Some(server) = crate::start_with(backend, config(&url, false)).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (ghost, ghost_id) = user(&server, "ghost_3").await;
    let room = create(&alice, json!({"invite": [&ghost_id]})).await;
    join(&ghost, &room).await;
    let mut sent = Vec::new();
    for i in 0..150 {
        sent.push(send(&alice, &room, &format!("d{i}"), &format!("message {i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stub = Stub::new();
    stub.serve(tokio::net::TcpListener::bind(addr).await.expect("binds again"));
    let last = sent.last().expect("sent").clone();
    stub.wait_for(&last).await;
    let ids: Vec<String> = stub.event_ids().into_iter().filter(|id| sent.contains(id)).collect();
    assert_eq!(ids, sent, "everything, once, in order");
    assert!(
        stub.taken().iter().all(|t| t.body["events"].as_array().is_some_and(|e| e.len() <= 100))
    );
}

/// A service that answers a ping (as a bridge does when it starts) gets what waited for it
/// at once, not when the backoff in progress ends.
async fn a_ping_answered_ends_the_backoff(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some(server) = crate::start_with(backend, config(&url, false)).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (ghost, ghost_id) = user(&server, "ghost_4").await;
    let room = create(&alice, json!({"invite": [&ghost_id]})).await;
    join(&ghost, &room).await;
    let warm = send(&alice, &room, "w", "warm up").await;
    stub.wait_for(&warm).await;

    // Six failures: the next try is 8 s away (250 ms doubling).
    stub.set(Mode::Fail);
    let before = stub.seen().len();
    let waiting = send(&alice, &room, "p1", "waits for the service").await;
    stub.wait_requests(before + 6).await;
    stub.set(Mode::Ok);
    let service = Client::new(&server).with_token("as_secret_token");
    let pinged = std::time::Instant::now();
    let (status, body) =
        service.post("/_matrix/client/v1/appservice/bridge/ping", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    stub.wait_for(&waiting).await;
    assert!(
        pinged.elapsed() < Duration::from_secs(4),
        "sent {:?} after the ping, not when the backoff ended",
        pinged.elapsed()
    );
    assert_eq!(stub.event_ids().iter().filter(|e| **e == waiting).count(), 1);
}

async fn a_restart_resumes_the_transaction_in_flight(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let first = TestHomeserver::start_on(config(&url, false), storage.clone()).await;
    let (alice, _) = {
        let s = first.register_user("alice", "pw").await;
        (Client::new(&first).with_token(&s.access_token), s.user_id.to_string())
    };
    let ghost_session = first.register_user("ghost_4", "pw").await;
    let ghost = Client::new(&first).with_token(&ghost_session.access_token);
    let room = create(&alice, json!({"invite": [ghost_session.user_id.to_string()]})).await;
    join(&ghost, &room).await;
    let warm = send(&alice, &room, "w", "warm up").await;
    stub.wait_for(&warm).await;

    stub.set(Mode::Fail);
    let before = stub.seen().len();
    let m1 = send(&alice, &room, "r1", "before the restart").await;
    stub.wait_requests(before + 1).await;
    let failed = stub.seen()[before].clone();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = TestHomeserver::start_on(config(&url, false), storage).await;
    let alice = Client::new(&second).with_token(alice.token.as_deref().expect("a token"));
    stub.set(Mode::Ok);
    let m2 = send(&alice, &room, "r2", "after the restart").await;
    stub.wait_for(&m2).await;
    let ids = stub.event_ids();
    assert!(at(&ids, &warm) < at(&ids, &m1) && at(&ids, &m1) < at(&ids, &m2), "{ids:?}");
    assert_eq!(ids.iter().filter(|e| **e == m1).count(), 1, "{ids:?}");
    // The transaction in flight went again with its id and its events.
    let again = stub.taken().into_iter().find(|t| t.txn == failed.txn).expect("sent again");
    let ids_of = |seen: &Seen| -> Vec<Value> {
        seen.body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["event_id"].clone())
            .collect()
    };
    assert_eq!(ids_of(&again), ids_of(&failed));
    assert_eq!(ids_of(&failed), vec![json!(m1)]);
}

async fn ephemeral_events_go_to_services_that_ask(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some(server) = crate::start_with(backend, config(&url, true)).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (ghost, ghost_id) = user(&server, "ghost_5").await;
    let bridged = create(&alice, json!({"invite": [&ghost_id]})).await;
    join(&ghost, &bridged).await;
    let private = create(&bob, json!({})).await;
    let (status, _) = bob
        .put(
            &format!("{V3}/rooms/{private}/typing/{bob_id}"),
            &json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .put(
            &format!("{V3}/rooms/{bridged}/typing/{alice_id}"),
            &json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, 200);
    let m1 = send(&alice, &bridged, "e1", "read me").await;
    let (status, _) =
        ghost.post(&format!("{V3}/rooms/{bridged}/receipt/m.read/{m1}"), &json!({})).await;
    assert_eq!(status, 200);
    let mut ephemeral = Vec::new();
    for _ in 0..200 {
        ephemeral = stub
            .taken()
            .iter()
            .flat_map(|t| t.body["ephemeral"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>();
        if ephemeral.iter().any(|e| e["type"] == "m.receipt") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let typing = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing" && e["room_id"] == bridged.as_str())
        .unwrap_or_else(|| panic!("typing: {ephemeral:#?}"));
    assert_eq!(typing["content"]["user_ids"], json!([alice_id]));
    let receipt = ephemeral
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap_or_else(|| panic!("a receipt: {ephemeral:#?}"));
    assert_eq!(receipt["room_id"], bridged.as_str());
    assert!(receipt["content"][&m1]["m.read"][&ghost_id]["ts"].is_u64(), "{receipt}");
    assert!(
        ephemeral.iter().all(|e| e["room_id"] != private.as_str()),
        "nothing of a room without interest: {ephemeral:#?}"
    );
    for taken in stub.taken() {
        assert_eq!(taken.body["ephemeral"], taken.body["de.sorunome.msc2409.ephemeral"]);
    }
}

const CRYPTO_AS_TOKEN: &str = "crypto_as_token";

/// A service with exclusive ghosts `@ghost_*`, MSC3202 and ephemeral events (as a bridge
/// with end-to-bridge encryption registers).
fn crypto_config(url: &str) -> Config {
    let mut config = TestHomeserver::config();
    let server = regex_escape(&config.server_name);
    let mut r = AppserviceRegistration::new(
        "crypto",
        Some(url.to_owned()),
        CRYPTO_AS_TOKEN,
        HS_TOKEN,
        "cryptobot",
    );
    r.namespaces.users.push(Namespace::new(format!("@ghost_.*:{server}"), true));
    r.receive_ephemeral = true;
    r.msc3202 = true;
    config.appservices.push(r);
    config.limits.appservice_timeout_ms = 300;
    config
}

/// Registers the ghost `localpart` through the service, with the device `device`: its
/// client and user id.
async fn ghost(server: &TestHomeserver, localpart: &str, device: &str) -> (Client, String) {
    let service = Client::new(server).with_token(CRYPTO_AS_TOKEN);
    let body = json!({"type": "m.login.application_service", "username": localpart,
                      "device_id": device});
    let (status, body) = service.post(&format!("{V3}/register"), &body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], device);
    let token = body["access_token"].as_str().expect("a token");
    (Client::new(server).with_token(token), body["user_id"].as_str().expect("an id").to_owned())
}

impl Stub {
    /// Waits until a transaction the service took satisfies `test`; answers its body.
    async fn wait_body(&self, what: &str, test: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..300 {
            if let Some(taken) = self.taken().into_iter().find(|t| test(&t.body)) {
                return taken.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no transaction with {what}; the stub saw {:#?}", self.seen());
    }

    /// The to-device messages of the transactions taken, in order.
    fn to_device(&self) -> Vec<Value> {
        self.taken()
            .into_iter()
            .flat_map(|t| t.body["de.sorunome.msc2409.to_device"].as_array().cloned())
            .flatten()
            .collect()
    }
}

async fn upload_keys(client: &Client, user: &str, device: &str, extra: Value) {
    let keys = json!({"user_id": user, "device_id": device,
                      "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                      "keys": {format!("curve25519:{device}"): "c", format!("ed25519:{device}"): "e"},
                      "signatures": {}});
    let mut body = json!({"device_keys": keys});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, answer) = client.post(&format!("{V3}/keys/upload"), &body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn device_of(client: &Client) -> String {
    let (status, me) = client.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "{me}");
    me["device_id"].as_str().expect("a device").to_owned()
}

async fn msc3202_services_see_device_lists_and_key_counts(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some(server) = crate::start_with(backend, crypto_config(&url)).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (ghost, ghost_id) = ghost(&server, "ghost_k", "GDEV").await;
    let room = create(&alice, json!({"invite": [&ghost_id]})).await;
    join(&ghost, &room).await;

    // The ghost uploads keys: two one-time keys and a fallback key.
    let otks = json!({
        "one_time_keys": {"signed_curve25519:AAA": {"key": "k1"}, "signed_curve25519:AAB": {"key": "k2"}},
        "fallback_keys": {"signed_curve25519:FB": {"key": "f", "fallback": true}},
    });
    upload_keys(&ghost, &ghost_id, "GDEV", otks).await;
    let counted = |n: u64| {
        let ghost_id = ghost_id.clone();
        move |body: &Value| {
            body["org.matrix.msc3202.device_one_time_keys_count"][&ghost_id]["GDEV"]["signed_curve25519"]
                == n
        }
    };
    let body = stub.wait_body("two one-time keys", counted(2)).await;
    assert_eq!(
        body["org.matrix.msc3202.device_one_time_key_counts"],
        body["org.matrix.msc3202.device_one_time_keys_count"],
        "both of Synapse's spellings"
    );
    assert_eq!(
        body["org.matrix.msc3202.device_unused_fallback_key_types"][&ghost_id]["GDEV"],
        json!(["signed_curve25519"])
    );

    // Alice (who shares the bridged room) and Bob (who shares nothing with the service)
    // upload device keys: only Alice's change reaches the service, and the ghost's own.
    upload_keys(&bob, &bob_id, &device_of(&bob).await, json!({})).await;
    upload_keys(&alice, &alice_id, &device_of(&alice).await, json!({})).await;
    let changed = |body: &Value, who: &str| {
        body["org.matrix.msc3202.device_lists"]["changed"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u == who))
    };
    let body = stub.wait_body("Alice's device list", |b| changed(b, &alice_id)).await;
    assert_eq!(body["org.matrix.msc3202.device_lists"]["left"], json!([]));
    stub.wait_body("the ghost's device list", |b| changed(b, &ghost_id)).await;

    // Alice claims one of the ghost's keys: the service learns the count went down.
    let (status, claimed) = alice
        .post(
            &format!("{V3}/keys/claim"),
            &json!({"one_time_keys": {&ghost_id: {"GDEV": "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(status, 200, "{claimed}");
    assert!(claimed["one_time_keys"][&ghost_id]["GDEV"].is_object(), "{claimed}");
    stub.wait_body("one one-time key left", counted(1)).await;
    for taken in stub.taken() {
        assert!(!changed(&taken.body, &bob_id), "Bob shares nothing with the service");
        if let Some(counts) =
            taken.body["org.matrix.msc3202.device_one_time_keys_count"].as_object()
        {
            assert!(counts.keys().all(|u| u.starts_with("@ghost_") || u.starts_with("@cryptobot")));
        }
    }
}

async fn send_to_device(client: &Client, txn: &str, messages: Value) {
    let path = format!("{V3}/sendToDevice/m.test/{txn}");
    let (status, body) = client.put(&path, &json!({ "messages": messages })).await;
    assert_eq!(status, 200, "{body}");
}

async fn to_device_reaches_the_service_once_across_a_restart(backend: crate::Backend) {
    let (stub, url) = Stub::start().await;
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let first = TestHomeserver::start_on(crypto_config(&url), storage.clone()).await;
    let session = first.register_user("alice", "pw").await;
    let alice = Client::new(&first).with_token(&session.access_token);
    let (_, bob_id) = {
        let s = first.register_user("bob", "pw").await;
        (Client::new(&first).with_token(&s.access_token), s.user_id.to_string())
    };
    let (ghost_client, ghost_id) = ghost(&first, "ghost_t", "GDEV").await;
    let n = |n: u64| {
        move |body: &Value| {
            body["de.sorunome.msc2409.to_device"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["content"]["n"] == n))
        }
    };
    send_to_device(&alice, "t1", json!({&ghost_id: {"GDEV": {"n": 1}}, &bob_id: {"*": {"n": 0}}}))
        .await;
    let body = stub.wait_body("the first message", n(1)).await;
    let message = &body["de.sorunome.msc2409.to_device"][0];
    assert_eq!(message["to_user_id"], ghost_id.as_str());
    assert_eq!(message["to_device_id"], "GDEV");
    assert_eq!(message["sender"], session.user_id.as_str());
    assert_eq!(message["type"], "m.test");

    // The service fails; the homeserver stops with the transaction in flight.
    stub.set(Mode::Fail);
    let before = stub.seen().len();
    send_to_device(&alice, "t2", json!({&ghost_id: {"GDEV": {"n": 2}}})).await;
    stub.wait_requests(before + 1).await;
    let failed = stub.seen()[before].clone();
    assert!(n(2)(&failed.body), "{:#?}", failed.body);
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = TestHomeserver::start_on(crypto_config(&url), storage).await;
    let alice = Client::new(&second).with_token(&session.access_token);
    stub.set(Mode::Ok);
    send_to_device(&alice, "t3", json!({&ghost_id: {"GDEV": {"n": 3}}})).await;
    stub.wait_body("the message after the restart", n(3)).await;
    let again = stub.taken().into_iter().find(|t| t.txn == failed.txn).expect("sent again");
    assert_eq!(
        again.body["de.sorunome.msc2409.to_device"], failed.body["de.sorunome.msc2409.to_device"],
        "the transaction in flight went again with its messages"
    );
    let numbers: Vec<Value> = stub.to_device().iter().map(|m| m["content"]["n"].clone()).collect();
    assert_eq!(
        numbers,
        vec![json!(1), json!(2), json!(3)],
        "each once, in order, only the ghost's"
    );

    // Consumed: the ghost's device queue is empty (its own first sync gets nothing).
    let token = ghost_client.token.as_deref().expect("a token");
    let ghost_client = Client::new(&second).with_token(token);
    let (status, body) = ghost_client.get(&format!("{V3}/sync?timeout=0")).await;
    assert_eq!(status, 200, "{body}");
    let events = body["to_device"]["events"].as_array().cloned().unwrap_or_default();
    assert!(events.is_empty(), "delivered messages leave the queue: {events:#?}");
}

crate::on_every_backend!(
    msc3202_services_see_device_lists_and_key_counts,
    to_device_reaches_the_service_once_across_a_restart,
    events_of_interest_arrive_in_order_and_others_do_not,
    failures_are_retried_with_the_same_transaction,
    a_ping_answered_ends_the_backoff,
    a_service_down_then_up_gets_everything_in_order,
    a_restart_resumes_the_transaction_in_flight,
    ephemeral_events_go_to_services_that_ask,
);
