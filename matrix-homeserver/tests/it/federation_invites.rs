//! Invites across servers: the stripped state sent with them as full PDUs (spec v1.16), what a
//! server checks of a stripped state it receives, and of the invitee's countersignature.

use std::sync::{Arc, Mutex};

use matrix_core::{Object, Value as CoreValue};
use matrix_homeserver::matrix_federation::FederationError;
use matrix_homeserver::testing::{Intercepted, TestFederation, TestHomeserver};
use matrix_storage::EventStatus;
use serde_json::{Value, json};

use crate::Client;

const INVITE_PATH: &str = "/_matrix/federation/v2/invite/";

/// serde JSON as matrix-core's JSON.
fn core(value: &Value) -> CoreValue {
    let bytes = serde_json::to_vec(value).expect("JSON");
    matrix_core::json::parse_lenient(&bytes).expect("JSON")
}

/// matrix-core's JSON as serde JSON.
fn serde(value: CoreValue) -> Value {
    serde_json::from_slice(&matrix_core::json::to_canonical_vec(&value)).expect("JSON")
}

/// A room of alice (on a) named "Secret", private, with her client; b has users bob and carol
/// (their clients follow).
async fn secret_room(net: &TestFederation) -> (Client, String, Client, Client) {
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = Client::new(b).with_token(&b.register_user("bob", "pw").await.access_token);
    let carol = Client::new(b).with_token(&b.register_user("carol", "pw").await.access_token);
    let alice = Client::new(a).with_token(&alice.access_token);
    let (status, created) = alice
        .post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    assert_eq!(status, 200, "{created}");
    (alice, created["room_id"].as_str().expect("a room id").to_owned(), bob, carol)
}

/// alice invites `user` to `room`; answers the status and body.
async fn invite(alice: &Client, room: &str, user: &str) -> (u16, Value) {
    alice.post(&format!("/_matrix/client/v3/rooms/{room}/invite"), &json!({"user_id": user})).await
}

/// Remembers the body of every `/invite` request to b; answers them with `answer` (passes them
/// on when `None`).
fn capture_invites(net: &TestFederation, answer: Option<(u16, Vec<u8>)>) -> Arc<Mutex<Vec<Value>>> {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let bodies = seen.clone();
    net.intercept("b.test", move |_, request| {
        if !request.uri().path().starts_with(INVITE_PATH) {
            return Intercepted::Pass;
        }
        let body = serde_json::from_slice(request.body()).expect("an invite body is JSON");
        bodies.lock().expect("not poisoned").push(body);
        match &answer {
            Some((status, body)) => Intercepted::Answer(*status, body.clone()),
            None => Intercepted::Pass,
        }
    });
    seen
}

/// The invite to `room` as a sync of `client` shows it (bounded polling).
async fn invite_state(client: &Client, room: &str) -> Vec<Value> {
    for _ in 0..40 {
        let (status, sync) = client.get("/_matrix/client/v3/sync?timeout=200").await;
        assert_eq!(status, 200, "{sync}");
        if let Some(events) = sync["rooms"]["invite"][room]["invite_state"]["events"].as_array() {
            return events.clone();
        }
    }
    panic!("the invite to {room} never came");
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

#[tokio::test]
async fn invites_carry_full_pdus_and_clients_get_the_stripped_form() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (alice, room, bob, _) = secret_room(&net).await;
    let seen = capture_invites(&net, None);
    let (status, answer) = invite(&alice, &room, "@bob:b.test").await;
    assert_eq!(status, 200, "{answer}");

    let body = seen.lock().expect("not poisoned")[0].clone();
    let state = body["invite_room_state"].as_array().expect("a stripped state").clone();
    for kind in ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.member"] {
        assert!(types(&state).contains(&kind), "{kind} missing: {state:?}");
    }
    for event in &state {
        for field in ["auth_events", "prev_events", "hashes", "signatures", "depth"] {
            assert!(event.get(field).is_some(), "not a full PDU ({field}): {event}");
        }
        assert!(event.get("unsigned").is_none(), "{event}");
        if event["type"] == "m.room.create" {
            assert!(event.get("room_id").is_none(), "a version 12 create event: {event}");
        } else {
            assert_eq!(event["room_id"], room.as_str(), "{event}");
        }
    }

    // bob's client gets the stripped form, the create event with it.
    let shown = invite_state(&bob, &room).await;
    assert!(types(&shown).contains(&"m.room.create"), "{shown:?}");
    assert!(shown.iter().any(|e| e["content"]["name"] == "Secret"), "{shown:?}");
    let allowed = ["type", "state_key", "sender", "content", "event_id", "origin_server_ts"];
    for event in &shown {
        let keys = event.as_object().expect("an object").keys();
        assert!(keys.into_iter().all(|k| allowed.contains(&k.as_str())), "{event}");
    }
}

/// An event of a, as a's server sends it over federation.
async fn pdu_of(a: &TestHomeserver, event_id: &str) -> Object {
    let client = a.federation_client().expect("federation is on");
    let answer = client.event("a.test", event_id).await.expect("a reads its own event");
    match answer.get("pdus") {
        Some(CoreValue::Array(pdus)) => pdus[0].as_object().expect("an event").clone(),
        _ => panic!("no event in {answer:?}"),
    }
}

/// The id of the state event `kind` of `room`, as alice reads it.
async fn state_event_id(alice: &Client, room: &str, kind: &str) -> String {
    let (status, state) = alice.get(&format!("/_matrix/client/v3/rooms/{room}/state")).await;
    assert_eq!(status, 200, "{state}");
    let event = state.as_array().expect("a list").iter().find(|e| e["type"] == kind);
    event.and_then(|e| e["event_id"].as_str()).expect("the state event").to_owned()
}

#[tokio::test]
async fn an_invite_whose_stripped_state_is_of_another_room_is_refused() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let a = net.server("a.test");
    let (alice, room, _, carol) = secret_room(&net).await;
    let (status, other) = alice
        .post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat", "name": "Other"}))
        .await;
    assert_eq!(status, 200, "{other}");
    let other = other["room_id"].as_str().expect("a room id").to_owned();

    // a's invite of carol, signed by a, as a sends it; b never sees it (the request fails).
    let seen = capture_invites(&net, Some((500, b"{}".to_vec())));
    let (status, _) = invite(&alice, &room, "@carol:b.test").await;
    assert_ne!(status, 200);
    net.stop_intercepting("b.test");
    let body = seen.lock().expect("not poisoned")[0].clone();
    let event_id = pdu_event_id(&body);
    let event: Object = core(&body["event"]).as_object().cloned().expect("an event");
    let honest: Vec<Value> = body["invite_room_state"].as_array().expect("a state").clone();

    let other_create = pdu_of(a, &state_event_id(&alice, &other, "m.room.create").await).await;
    let other_name = pdu_of(a, &state_event_id(&alice, &other, "m.room.name").await).await;
    let to_value = |o: Object| serde(CoreValue::Object(o));
    let mut changed_create = honest[0].clone();
    assert_eq!(changed_create["type"], "m.room.create", "{changed_create}");
    changed_create["content"]["org.example.changed"] = json!(true);

    let replaced = |at: usize, with: Value| {
        let mut state = honest.clone();
        state[at] = with;
        state
    };
    let name_at = honest.iter().position(|e| e["type"] == "m.room.name").expect("a name");
    let forgeries = [
        ("the create event of another room", replaced(0, to_value(other_create))),
        ("the name of another room", replaced(name_at, to_value(other_name))),
        ("a changed create event", replaced(0, changed_create)),
    ];
    let client = a.federation_client().expect("federation is on");
    let send = |state: Vec<Value>| {
        let state: Vec<CoreValue> = state.iter().map(core).collect();
        client.invite("b.test", &room, &event_id, "12", event.clone(), state)
    };
    for (what, state) in forgeries {
        let refused = send(state).await;
        assert!(
            matches!(&refused, Err(FederationError::Status { status: 400, body, .. })
                if body.contains("M_MISSING_PARAM")),
            "{what}: {refused:?}"
        );
    }
    let stored = net.server("b.test").storage().event(&event_id).await.expect("b reads");
    assert!(stored.is_none(), "b kept a refused invite");

    // An older server's stripped form is taken.
    let stripped: Vec<Value> = honest
        .iter()
        .map(|e| {
            json!({"type": e["type"], "state_key": e["state_key"], "sender": e["sender"],
                        "content": e["content"]})
        })
        .collect();
    let taken = send(stripped).await;
    assert!(taken.is_ok(), "{taken:?}");
    let shown = invite_state(&carol, &room).await;
    assert!(shown.iter().any(|e| e["content"]["name"] == "Secret"), "{shown:?}");
}

/// The event id an `/invite` request body's event has (its reference hash, version 12).
fn pdu_event_id(body: &Value) -> String {
    let object = core(&body["event"]).as_object().expect("an event").clone();
    let rules = matrix_core::RoomVersionRules::get("12").expect("version 12");
    let pdu = matrix_core::Pdu::from_object(object, rules).expect("a valid event");
    pdu.event_id().to_owned()
}

#[tokio::test]
async fn an_invite_answer_changed_or_badly_signed_is_refused() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (alice, room, bob, _) = secret_room(&net).await;
    let keys = net.server("a.test").federation_client().expect("federation is on");
    let keys = keys.server_keys("b.test").await.expect("b answers");
    let key_id = keys
        .get_object("verify_keys")
        .and_then(|k| k.keys().next().map(str::to_owned))
        .expect("a key of b");
    let zeros = "A".repeat(86);

    type Forge = Box<dyn Fn(&mut Value) + Send + Sync>;
    let (k1, k2, z1, z2) = (key_id.clone(), key_id.clone(), zeros.clone(), zeros.clone());
    let forgeries: Vec<(&str, Forge)> = vec![
        ("not signed by b", Box::new(|_: &mut Value| {})),
        (
            "a bad signature",
            Box::new(move |event: &mut Value| {
                event["signatures"]["b.test"] = json!({ k1.as_str(): z1.as_str() });
            }),
        ),
        (
            "an unknown key",
            Box::new(move |event: &mut Value| {
                event["signatures"]["b.test"] = json!({ "ed25519:nope": z2.as_str() });
            }),
        ),
        (
            "a changed event",
            Box::new(move |event: &mut Value| {
                event["content"]["displayname"] = json!("Mallory");
                event["signatures"]["b.test"] = json!({ k2.as_str(): "A" });
            }),
        ),
    ];
    for (what, forge) in forgeries {
        let forge = Arc::new(forge);
        net.intercept("b.test", move |_, request| {
            if !request.uri().path().starts_with(INVITE_PATH) {
                return Intercepted::Pass;
            }
            let body: Value = serde_json::from_slice(request.body()).expect("JSON");
            let mut event = body["event"].clone();
            forge(&mut event);
            Intercepted::Answer(200, serde_json::to_vec(&json!({ "event": event })).expect("JSON"))
        });
        let (status, answer) = invite(&alice, &room, "@bob:b.test").await;
        assert_eq!(status, 502, "{what}: {answer}");
        let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:b.test");
        let (status, member) = alice.get(&path).await;
        assert_eq!(status, 404, "{what}: a stored the invite: {member}");
    }

    // b's honest countersignature is taken.
    net.stop_intercepting("b.test");
    let (status, answer) = invite(&alice, &room, "@bob:b.test").await;
    assert_eq!(status, 200, "{answer}");
    invite_state(&bob, &room).await;
}

/// b hands a the event `id` of b's in a transaction of its own; answers how a stored it.
async fn push_to_a(net: &TestFederation, txn: &str, id: &str) -> Option<EventStatus> {
    let client = net.server("b.test").federation_client().expect("federation is on");
    let answer = client.event("b.test", id).await.expect("b reads its own event");
    let Some(CoreValue::Array(pdus)) = answer.get("pdus") else { panic!("{answer:?}") };
    client
        .send_transaction("a.test", txn, pdus.clone(), Vec::new())
        .await
        .expect("a answers the transaction");
    let stored = net.server("a.test").storage().event(id).await.expect("a reads");
    stored.map(|e| e.status)
}

/// Received PDUs are checked against the current state at the keys the authorization rules
/// read (`RoomContext::current_state_at` over storage, the current state being another
/// snapshot than the one the event builds on): an event the current state allows is
/// accepted; one allowed by the state before it but not by the current state is soft failed.
#[tokio::test]
async fn received_events_are_checked_against_the_current_state_at_the_keys_needed() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = Client::new(a).with_token(&a.register_user("alice", "pw").await.access_token);
    let bob = Client::new(b).with_token(&b.register_user("bob", "pw").await.access_token);
    let (status, created) =
        alice.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().expect("a room id").to_owned();
    let (status, joined) =
        bob.post(&format!("/_matrix/client/v3/join/{room}?server_name=a.test"), &json!({})).await;
    assert_eq!(status, 200, "{joined}");
    let say = |body: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}");
        let bob = &bob;
        async move {
            let content = json!({"msgtype": "m.text", "body": body});
            let (status, sent) = bob.send(reqwest::Method::PUT, &path, Some(&content)).await;
            assert_eq!(status, 200, "{sent}");
            sent["event_id"].as_str().expect("an event id").to_owned()
        }
    };

    // While the link is cut, alice sets a topic on a and bob speaks on b: allowed.
    net.cut("a.test", "b.test");
    let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    let (status, set) =
        alice.send(reqwest::Method::PUT, &topic, Some(&json!({"topic": "t"}))).await;
    assert_eq!(status, 200, "{set}");
    let early = say("early").await;
    net.heal("a.test", "b.test");
    assert_eq!(push_to_a(&net, "early-1", &early).await, Some(EventStatus::Accepted));

    // While the link is cut, alice bans bob and bob speaks (not knowing the ban).
    net.cut("a.test", "b.test");
    let ban = format!("/_matrix/client/v3/rooms/{room}/ban");
    let (status, banned) = alice.post(&ban, &json!({"user_id": "@bob:b.test"})).await;
    assert_eq!(status, 200, "{banned}");
    let late = say("late").await;
    net.heal("a.test", "b.test");
    assert_eq!(push_to_a(&net, "late-1", &late).await, Some(EventStatus::SoftFailed));
    let (status, _) = alice.get(&format!("/_matrix/client/v3/rooms/{room}/event/{late}")).await;
    assert_eq!(status, 404, "a soft-failed event is not shown");
}

/// bob, invited to a room of a, joins it through b: the sync that tells him of his join gives
/// him the room's state (found by matrix-nio against Synapse: the state was empty, since the
/// invite, the first event of the room on b, came before b held any of its state, and nio saw
/// an encrypted room with no members to share keys with). The state and the timeline together
/// hold the room's creation, its encryption, alice's membership and bob's join, each once.
#[tokio::test]
async fn a_room_joined_after_a_remote_invite_syncs_with_its_state() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (alice, room, bob, _) = secret_room(&net).await;
    let encryption = format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/");
    let content = json!({"algorithm": "m.megolm.v1.aes-sha2"});
    let (status, set) = alice.send(reqwest::Method::PUT, &encryption, Some(&content)).await;
    assert_eq!(status, 200, "{set}");
    let (status, first) = bob.get("/_matrix/client/v3/sync").await;
    assert_eq!(status, 200, "{first}");
    let mut since = first["next_batch"].as_str().expect("a token").to_owned();

    let (status, answer) = invite(&alice, &room, "@bob:b.test").await;
    assert_eq!(status, 200, "{answer}");
    let mut invited = false;
    for _ in 0..40 {
        let (status, sync) =
            bob.get(&format!("/_matrix/client/v3/sync?timeout=200&since={since}")).await;
        assert_eq!(status, 200, "{sync}");
        since = sync["next_batch"].as_str().expect("a token").to_owned();
        if sync["rooms"]["invite"].get(&room).is_some() {
            invited = true;
            break;
        }
    }
    assert!(invited, "the invite to {room} never came to bob");
    let (status, joined) = bob.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{joined}");

    let (status, sync) = bob.get(&format!("/_matrix/client/v3/sync?since={since}")).await;
    assert_eq!(status, 200, "{sync}");
    let joined_room = &sync["rooms"]["join"][&room];
    let mut seen: Vec<(String, String)> = Vec::new();
    for section in ["state", "timeline"] {
        for event in joined_room[section]["events"].as_array().expect("events") {
            if let Some(key) = event["state_key"].as_str() {
                let kind = event["type"].as_str().expect("a type").to_owned();
                let membership = event["content"]["membership"].as_str().unwrap_or("");
                seen.push((format!("{kind} {key} {membership}"), section.to_owned()));
            }
        }
    }
    let has = |what: &str| seen.iter().filter(|(s, _)| s == what).count();
    for what in [
        "m.room.create  ",
        "m.room.encryption  ",
        "m.room.join_rules  ",
        "m.room.power_levels  ",
        "m.room.member @alice:a.test join",
        "m.room.member @bob:b.test join",
    ] {
        assert_eq!(has(what), 1, "{what:?} once in the state and timeline: {seen:?}");
    }
    let state = joined_room["state"]["events"].as_array().expect("state events");
    assert!(
        !state.iter().any(|e| e["state_key"] == "@bob:b.test"),
        "bob's membership is in the timeline, not before it: {state:?}"
    );
}
