//! Gaps before a received PDU: prev events deeper than `/get_missing_events` reaches (the state
//! at them fetched with `/state_ids`), auth events we lack (`/event_auth`), and peers that
//! answer those requests with garbage, too much, badly signed events or events of another
//! room.
//!
//! a's transactions to b are lost (an interceptor drops them) while a's users write; the test
//! then hands b only the last event, in a transaction of a's own, as a server that comes back
//! after downtime would see it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use matrix_core::{Object, Value as CoreValue};
use matrix_homeserver::testing::{Intercepted, TestFederation, TestHomeserver};
use matrix_storage::EventStatus;
use serde_json::{Value, json};

use crate::Client;

/// A room of alice (on a) that bob (on b) joined, with the clients of both.
struct Room {
    net: TestFederation,
    id: String,
    alice: Client,
    bob: Client,
}

impl Room {
    fn a(&self) -> &TestHomeserver {
        self.net.server("a.test")
    }

    fn b(&self) -> &TestHomeserver {
        self.net.server("b.test")
    }

    /// alice says `body`; answers the event id.
    async fn say(&self, body: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{body}", self.id);
        let content = json!({"msgtype": "m.text", "body": body});
        let (status, sent) = self.alice.send(reqwest::Method::PUT, &path, Some(&content)).await;
        assert_eq!(status, 200, "{sent}");
        sent["event_id"].as_str().expect("an event id").to_owned()
    }

    /// alice sets a state event; answers its id.
    async fn set_state(&self, kind: &str, content: Value) -> String {
        self.set_state_key(kind, "", content).await
    }

    /// alice sets a state event under a state key; answers its id.
    async fn set_state_key(&self, kind: &str, key: &str, content: Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/{key}", self.id);
        let (status, sent) = self.alice.send(reqwest::Method::PUT, &path, Some(&content)).await;
        assert_eq!(status, 200, "{sent}");
        sent["event_id"].as_str().expect("an event id").to_owned()
    }

    /// An event of a as a's server sends it.
    async fn pdu(&self, event_id: &str) -> Object {
        let client = self.a().federation_client().expect("federation is on");
        let answer = client.event("a.test", event_id).await.expect("a reads its own event");
        match answer.get("pdus") {
            Some(CoreValue::Array(pdus)) => pdus[0].as_object().expect("an event").clone(),
            _ => panic!("no event in {answer:?}"),
        }
    }

    /// a sends b one event in a transaction of its own (which the interceptor lets through);
    /// answers b's verdict on it (`None`: accepted).
    async fn push(&self, txn_id: &str, event_id: &str) -> Option<String> {
        let pdu = self.pdu(event_id).await;
        let client = self.a().federation_client().expect("federation is on");
        let answer = client
            .send_transaction("b.test", txn_id, vec![CoreValue::Object(pdu)], Vec::new())
            .await
            .expect("b answers the transaction");
        let result = answer.get_object("pdus").and_then(|p| p.get_object(event_id));
        let result = result.unwrap_or_else(|| panic!("no verdict on {event_id}: {answer:?}"));
        result.get_str("error").map(str::to_owned)
    }

    /// Whether bob can read `event_id` on b (and b stored it as accepted).
    async fn b_has(&self, event_id: &str) -> bool {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{event_id}", self.id);
        let readable = self.bob.get(&path).await.0 == 200;
        let stored = self.b_stored(event_id).await;
        assert_eq!(readable, stored == Some(EventStatus::Accepted), "{event_id}: {stored:?}");
        readable
    }

    /// How b stored `event_id`, if it did.
    async fn b_stored(&self, event_id: &str) -> Option<EventStatus> {
        let stored = self.b().storage().event(event_id).await.expect("b's storage reads");
        stored.map(|e| e.status)
    }

    /// The content of a state event on `server` as `client` reads it (`None`: not there).
    async fn state(&self, client: &Client, kind: &str) -> Option<Value> {
        let (status, content) =
            client.get(&format!("/_matrix/client/v3/rooms/{}/state/{kind}/", self.id)).await;
        (status == 200).then_some(content)
    }

    /// The room's current state as `client` reads it: `(type, state_key) -> event_id`.
    async fn state_ids(&self, client: &Client) -> Vec<(String, String, String)> {
        let (status, state) =
            client.get(&format!("/_matrix/client/v3/rooms/{}/state", self.id)).await;
        assert_eq!(status, 200, "{state}");
        let mut ids: Vec<(String, String, String)> = state
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| {
                let text = |field: &str| e[field].as_str().expect("a string").to_owned();
                (text("type"), text("state_key"), text("event_id"))
            })
            .collect();
        ids.sort();
        ids
    }

    /// The bodies of the last `limit` messages of bob's timeline on b, oldest first.
    async fn b_timeline(&self, limit: usize) -> Vec<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}", self.id);
        let (status, page) = self.bob.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let mut bodies: Vec<String> = page["chunk"]
            .as_array()
            .expect("a chunk")
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        bodies.reverse();
        bodies
    }
}

/// alice's public room on a, joined by bob of b; from then on a's transactions to b are
/// lost, except those whose id starts with `manual-`.
async fn room_with_lost_transactions() -> Room {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let alice = Client::new(a).with_token(&alice.access_token);
    let bob = Client::new(b).with_token(&bob.access_token);
    let (status, created) = alice
        .post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat", "name": "Gap"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["room_id"].as_str().expect("a room id").to_owned();
    let (status, joined) =
        bob.post(&format!("/_matrix/client/v3/join/{id}?server_name=a.test"), &json!({})).await;
    assert_eq!(status, 200, "{joined}");
    net.intercept("b.test", |from, request| {
        let path = request.uri().path();
        let queued = path.starts_with("/_matrix/federation/v1/send/")
            && !path.starts_with("/_matrix/federation/v1/send/manual-");
        if from == "a.test" && queued { Intercepted::Drop } else { Intercepted::Pass }
    });
    Room { net, id, alice, bob }
}

/// Counts b's requests to a whose path starts with each of `prefixes` (all pass).
fn count_requests_to_a(room: &Room, prefixes: &'static [&'static str]) -> Arc<Vec<AtomicUsize>> {
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new(prefixes.iter().map(|_| AtomicUsize::new(0)).collect());
    let seen = counts.clone();
    room.net.intercept("a.test", move |from, request| {
        for (prefix, count) in prefixes.iter().zip(seen.iter()) {
            if from == "b.test" && request.uri().path().starts_with(prefix) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Intercepted::Pass
    });
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_deeper_than_get_missing_events_is_filled_with_the_state_at_it() {
    let room = room_with_lost_transactions().await;
    let counts = count_requests_to_a(&room, &["/_matrix/federation/v1/state_ids/"]);
    room.set_state("m.room.topic", json!({"topic": "set in the gap"})).await;
    for n in 0..60 {
        room.say(&format!("gap {n}")).await;
    }
    let last = room.say("after the gap").await;
    assert!(!room.b_has(&last).await);

    assert_eq!(room.push("manual-1", &last).await, None, "b accepts the last event");
    assert!(counts[0].load(Ordering::Relaxed) >= 1, "b fetched the state at the gap");
    // The last event and the 20 before it (from /get_missing_events) are in bob's timeline.
    let timeline = room.b_timeline(21).await;
    assert_eq!(timeline.last().map(String::as_str), Some("after the gap"), "{timeline:?}");
    assert_eq!(timeline.first().map(String::as_str), Some("gap 40"), "{timeline:?}");
    // b has the room's current state, the topic set in the gap with it.
    let topic = room.state(&room.bob, "m.room.topic").await;
    assert_eq!(topic.map(|t| t["topic"].clone()), Some(json!("set in the gap")));
    assert_eq!(room.state_ids(&room.alice).await, room.state_ids(&room.bob).await);

    // bob's answer builds on it, and reaches a.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/reply", room.id);
    let content = json!({"msgtype": "m.text", "body": "bob replies"});
    let (status, sent) = room.bob.send(reqwest::Method::PUT, &path, Some(&content)).await;
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event_id"].as_str().expect("an event id").to_owned();
    for _ in 0..100 {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{reply}", room.id);
        if room.alice.get(&path).await.0 == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("bob's reply never reached a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_state_events_of_a_gap_come_in_one_state_request() {
    let room = room_with_lost_transactions().await;
    let counts = count_requests_to_a(
        &room,
        &["/_matrix/federation/v1/state/", "/_matrix/federation/v1/event/"],
    );
    for n in 0..15 {
        room.set_state_key("org.example.gap", &format!("k{n}"), json!({"n": n})).await;
    }
    for n in 0..25 {
        room.say(&format!("gap {n}")).await;
    }
    let last = room.say("after the gap").await;

    assert_eq!(room.push("manual-1", &last).await, None, "b accepts the last event");
    assert_eq!(counts[0].load(Ordering::Relaxed), 1, "one /state for the 15 state events");
    assert!(counts[1].load(Ordering::Relaxed) <= 1, "at most the prev event by /event");
    assert_eq!(room.state_ids(&room.alice).await, room.state_ids(&room.bob).await);
    let path = format!("/_matrix/client/v3/rooms/{}/state/org.example.gap/k14", room.id);
    let (status, content) = room.bob.get(&path).await;
    assert_eq!((status, content), (200, json!({"n": 14})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_events_a_pdu_names_that_we_lack_are_fetched_with_event_auth() {
    let room = room_with_lost_transactions().await;
    let counts = count_requests_to_a(&room, &["/_matrix/federation/v1/event_auth/"]);
    let (status, mut levels) = room
        .alice
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", room.id))
        .await;
    assert_eq!(status, 200, "{levels}");
    levels["users"]["@bob:b.test"] = json!(50);
    let new_levels = room.set_state("m.room.power_levels", levels).await;
    room.say("between").await;
    // Its auth events name the new power levels, which b lacks; they are not its prev event.
    let last = room.say("names the new levels").await;
    let pdu = room.pdu(&last).await;
    let auth_events = format!("{:?}", pdu.get("auth_events"));
    assert!(auth_events.contains(&new_levels), "{auth_events}");

    assert_eq!(room.push("manual-1", &last).await, None, "b accepts the event");
    assert!(counts[0].load(Ordering::Relaxed) >= 1, "b fetched the auth events");
    let levels = room.state(&room.bob, "m.room.power_levels").await.expect("power levels");
    assert_eq!(levels["users"]["@bob:b.test"], 50, "{levels}");
    assert!(room.b_has(&new_levels).await);
    // The power levels, fetched as an outlier first, then came by /get_missing_events: they
    // are in the timeline, with the messages.
    let timeline = room.b_timeline(2).await;
    assert_eq!(timeline, ["between", "names the new levels"]);
    assert_eq!(room.state_ids(&room.alice).await, room.state_ids(&room.bob).await);
}

/// A room with a gap: a topic set, then 25 messages, then the last event, which b lacks all
/// of. Answers the last event's id and the topic's.
async fn room_with_a_gap() -> (Room, String, String) {
    let room = room_with_lost_transactions().await;
    let topic = room.set_state("m.room.topic", json!({"topic": "set in the gap"})).await;
    for n in 0..25 {
        room.say(&format!("gap {n}")).await;
    }
    let last = room.say("after the gap").await;
    (room, last, topic)
}

/// b refused `last` and stored nothing wrong: it has neither the event nor the topic; once a
/// answers honestly again, b takes the event and the state.
async fn refused_then_taken(room: &Room, last: &str, verdict: Option<String>) {
    let reason = verdict.expect("b refuses the event");
    assert_eq!(room.b_stored(last).await, None, "{reason}");
    assert_eq!(room.state(&room.bob, "m.room.topic").await, None, "{reason}");
    room.net.stop_intercepting("a.test");
    assert_eq!(room.push("manual-2", last).await, None, "refused before for: {reason}");
    let topic = room.state(&room.bob, "m.room.topic").await.expect("a topic");
    assert_eq!(topic["topic"], "set in the gap");
}

/// a answers b's `/state_ids` with `body`; every other request goes through.
fn answer_state_ids(room: &Room, body: Vec<u8>) {
    room.net.intercept("a.test", move |_, request| {
        if request.uri().path().starts_with("/_matrix/federation/v1/state_ids/") {
            Intercepted::Answer(200, body.clone())
        } else {
            Intercepted::Pass
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_ids_answer_that_is_garbage_or_too_large_is_refused() {
    let (room, last, _) = room_with_a_gap().await;
    let fake = |count: usize| (0..count).map(|n| format!("$fake{n}")).collect::<Vec<_>>();
    let (too_many, too_many_to_fetch) = (fake(100_001), fake(10_001));
    let answers = [
        (b"not json at all".to_vec(), "not JSON"),
        (br#"{"pdu_ids": 5, "auth_chain_ids": []}"#.to_vec(), "no pdu_ids list"),
        (br#"{"pdu_ids": [1, {"a": 2}], "auth_chain_ids": []}"#.to_vec(), "not an id"),
        (br#"{"pdu_ids": ["$nowhere"], "auth_chain_ids": []}"#.to_vec(), "404"),
        (br#"{"pdu_ids": [], "auth_chain_ids": []}"#.to_vec(), "not the room's create event"),
        (
            serde_json::to_vec(&json!({"pdu_ids": too_many, "auth_chain_ids": []})).expect("json"),
            "more than 100000 events",
        ),
        (
            serde_json::to_vec(&json!({"pdu_ids": [], "auth_chain_ids": too_many_to_fetch}))
                .expect("json"),
            "more than 10000 events would have to be fetched",
        ),
    ];
    for (n, (body, expected)) in answers.into_iter().enumerate() {
        answer_state_ids(&room, body);
        let verdict = room.push(&format!("manual-garbage-{n}"), &last).await;
        let reason = verdict.expect("b refuses the event");
        assert!(reason.contains(expected), "answer {n}: {reason}");
        assert_eq!(room.b_stored(&last).await, None, "answer {n}: {reason}");
    }
    refused_then_taken(&room, &last, Some("garbage".to_owned())).await;
}

/// a answers b's `/event/{id}` for `id` with `event` (a lying peer); every other request goes
/// through.
fn answer_event(room: &Room, id: &str, event: Object) {
    let mut answer = Object::new();
    answer.insert("origin", "a.test");
    answer.insert("origin_server_ts", 1_i64);
    answer.insert("pdus", CoreValue::Array(vec![CoreValue::Object(event)]));
    let body = matrix_core::json::to_canonical_vec(&CoreValue::Object(answer));
    let path = format!("/_matrix/federation/v1/event/{}", encode(id));
    room.net.intercept("a.test", move |_, request| {
        if request.uri().path() == path {
            Intercepted::Answer(200, body.clone())
        } else {
            Intercepted::Pass
        }
    });
}

/// b's state is a's, but for `topic`'s entry: `None` left out, or another event id.
async fn same_state_but_the_topic(room: &Room) -> Vec<(String, String, String)> {
    let ours: Vec<_> = room
        .state_ids(&room.alice)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind != "m.room.topic")
        .collect();
    let theirs = room.state_ids(&room.bob).await;
    let rest: Vec<_> =
        theirs.iter().filter(|(kind, _, _)| kind != "m.room.topic").cloned().collect();
    assert_eq!(ours, rest, "b has the rest of the state");
    theirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_event_whose_signature_is_bad_is_left_out_and_the_rest_is_taken() {
    let (room, last, topic) = room_with_a_gap().await;
    // The topic, signed by a, with its signature changed: the same event id, a bad signature.
    let mut forged = room.pdu(&topic).await;
    let signatures = forged.object_entry("signatures").object_entry("a.test");
    let key_ids: Vec<String> = signatures.keys().map(str::to_owned).collect();
    assert!(!key_ids.is_empty());
    for key_id in key_ids {
        signatures.insert(&key_id, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    }
    answer_event(&room, &topic, forged);
    // Only the topic is refused: the last event and the state without the topic are taken.
    assert_eq!(room.push("manual-1", &last).await, None, "b takes the event");
    assert!(room.b_has(&last).await);
    assert_eq!(room.b_stored(&topic).await, None, "the forged topic is not stored");
    assert_eq!(room.state(&room.bob, "m.room.topic").await, None);
    let state = same_state_but_the_topic(&room).await;
    assert!(state.iter().all(|(kind, _, _)| kind != "m.room.topic"), "{state:?}");
    let name = room.state(&room.bob, "m.room.name").await.expect("the name is there");
    assert_eq!(name["name"], "Gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_event_whose_content_hash_is_wrong_is_taken_redacted() {
    let (room, last, topic) = room_with_a_gap().await;
    // The topic with its content changed: the signature (of the redacted event) and the
    // event id still hold, the content hash does not.
    let mut forged = room.pdu(&topic).await;
    forged.object_entry("content").insert("topic", "a lie");
    answer_event(&room, &topic, forged);
    assert_eq!(room.push("manual-1", &last).await, None, "b takes the event");
    assert!(room.b_has(&last).await);
    // The topic is in the state, redacted: neither the lie nor the truth.
    let state = same_state_but_the_topic(&room).await;
    assert!(state.iter().any(|(kind, _, id)| kind == "m.room.topic" && *id == topic), "{state:?}");
    let content = room.state(&room.bob, "m.room.topic").await;
    assert!(content.as_ref().is_none_or(|c| c.get("topic").is_none()), "{content:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_of_events_of_another_room_is_refused() {
    let (room, last, _) = room_with_a_gap().await;
    // Another room of alice: b joined it (so holds its events), and a third it never joined.
    let (status, other) =
        room.alice.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{other}");
    let other = other["room_id"].as_str().expect("a room id").to_owned();
    let join = format!("/_matrix/client/v3/join/{other}?server_name=a.test");
    let (status, joined) = room.bob.post(&join, &json!({})).await;
    assert_eq!(status, 200, "{joined}");
    let (status, third) =
        room.alice.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{third}");
    let third = third["room_id"].as_str().expect("a room id").to_owned();

    // The state of the other room, which b holds.
    let ids = |state: Value| -> Vec<String> {
        state
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| e["event_id"].as_str().expect("an id").to_owned())
            .collect()
    };
    let (status, state) = room.alice.get(&format!("/_matrix/client/v3/rooms/{other}/state")).await;
    assert_eq!(status, 200, "{state}");
    let held = ids(state);
    answer_state_ids(
        &room,
        serde_json::to_vec(&json!({"pdu_ids": held, "auth_chain_ids": []})).expect("json"),
    );
    let verdict = room.push("manual-1", &last).await;
    let reason = verdict.expect("b refuses a state of another room it holds");
    assert!(reason.contains("is of another room"), "{reason}");
    assert_eq!(room.b_stored(&last).await, None, "{reason}");

    // The state of the third room, which b lacks: a serves its events when b asks.
    let (status, state) = room.alice.get(&format!("/_matrix/client/v3/rooms/{third}/state")).await;
    assert_eq!(status, 200, "{state}");
    let lacked = ids(state);
    let mut events = std::collections::HashMap::new();
    for id in &lacked {
        let mut answer = Object::new();
        answer.insert("origin", "a.test");
        answer.insert("origin_server_ts", 1_i64);
        answer.insert("pdus", CoreValue::Array(vec![CoreValue::Object(room.pdu(id).await)]));
        let path = format!("/_matrix/federation/v1/event/{}", encode(id));
        events.insert(path, matrix_core::json::to_canonical_vec(&CoreValue::Object(answer)));
    }
    let state_ids =
        serde_json::to_vec(&json!({"pdu_ids": lacked, "auth_chain_ids": []})).expect("json");
    room.net.intercept("a.test", move |_, request| {
        let path = request.uri().path();
        if path.starts_with("/_matrix/federation/v1/state_ids/") {
            return Intercepted::Answer(200, state_ids.clone());
        }
        match events.get(path) {
            Some(body) => Intercepted::Answer(200, body.clone()),
            None => Intercepted::Pass,
        }
    });
    let verdict = room.push("manual-third", &last).await;
    // Every event is left out (of another room): no create event of this room is left.
    let reason = verdict.expect("b refuses a state of another room it lacks");
    assert!(reason.contains("not the room's create event"), "{reason}");
    for id in &lacked {
        assert_eq!(
            room.b_stored(id).await,
            None,
            "an event of the third room was stored: {reason}"
        );
    }
    room.net.stop_intercepting("a.test");
    refused_then_taken(&room, &last, Some(reason)).await;
}

/// A path segment percent-encoded as the federation client sends it.
fn encode(text: &str) -> String {
    matrix_homeserver::matrix_federation::client::encode(text)
}
