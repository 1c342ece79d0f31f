//! Joins through us as the joining server sees them: `send_join` with and without
//! `omit_members` (a partial-state join).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use matrix_homeserver::testing::{Intercepted, TestFederation, TestHomeserver};
use serde_json::json;

use crate::federation::{call, create_room};

/// The body of the last `send_join` request to `destination` (the join, signed by the joining
/// server), captured on its way.
type Captured = Arc<Mutex<Option<matrix_core::Object>>>;

fn capture_send_join(net: &TestFederation, destination: &str) -> Captured {
    let captured: Captured = Arc::default();
    let slot = captured.clone();
    net.intercept(destination, move |_, request| {
        if request.uri().path().starts_with("/_matrix/federation/v2/send_join/")
            && let Ok(matrix_core::Value::Object(body)) =
                matrix_core::json::parse_lenient(request.body())
        {
            *slot.lock().expect("not poisoned") = Some(body);
        }
        Intercepted::Pass
    });
    captured
}

/// An event as `serde_json`.
fn as_json(pdu: &matrix_core::Pdu) -> Value {
    serde_json::from_slice(pdu.canonical_bytes()).expect("json")
}

/// The events of one list of a `send_join` answer, by id.
fn events(answer: &matrix_core::Object, field: &str, version: &str) -> BTreeMap<String, Value> {
    let rules = matrix_core::RoomVersionRules::get(version).expect("a known version");
    let Some(matrix_core::Value::Array(list)) = answer.get(field) else {
        panic!("the answer has no {field}: {answer:?}")
    };
    list.iter()
        .map(|event| {
            let matrix_core::Value::Object(object) = event else { panic!("not an event") };
            let pdu = matrix_core::Pdu::from_object(object.clone(), rules).expect("a pdu");
            (pdu.event_id().to_owned(), as_json(&pdu))
        })
        .collect()
}

type Value = serde_json::Value;

/// The auth chain (every ancestor through `auth_events`) of `from`, walking `known`.
fn auth_chain(from: &[&Value], known: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut chain = BTreeSet::new();
    let mut todo: Vec<String> = from
        .iter()
        .flat_map(|e| e["auth_events"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    while let Some(id) = todo.pop() {
        if !chain.insert(id.clone()) {
            continue;
        }
        let event = known.get(&id).unwrap_or_else(|| panic!("{id} is in no answer"));
        for parent in event["auth_events"].as_array().into_iter().flatten() {
            todo.push(parent.as_str().expect("an id").to_owned());
        }
    }
    chain
}

/// The member events of a state list, by state key, with their membership.
fn members(state: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    state
        .values()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| {
            let key = e["state_key"].as_str().expect("a state key").to_owned();
            (key, e["content"]["membership"].as_str().expect("a membership").to_owned())
        })
        .collect()
}

/// `user` (on `server`) joins `room` through a.test.
async fn join_through_a(server: &TestHomeserver, token: &str, room: &str) {
    let path = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    let (status, joined) = call(server, token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200, "{joined}");
}

/// bob of b.test joins `room` of a.test for real (b asks the full state), and the join b sent
/// is asked again, by b, with and without `omit_members`: the two answers and the room version.
async fn both_answers(
    net: &TestFederation,
    room: &str,
    bob: &str,
) -> (matrix_core::Object, matrix_core::Object, String) {
    let b = net.server("b.test");
    let captured = capture_send_join(net, "a.test");
    join_through_a(b, bob, room).await;
    net.stop_intercepting("a.test");
    let event = captured.lock().expect("not poisoned").take().expect("b sent a send_join");
    let version = version_of(net.server("a.test"), room).await;
    let rules = matrix_core::RoomVersionRules::get(&version).expect("a known version");
    let event_id =
        matrix_core::Pdu::from_object(event.clone(), rules).expect("a pdu").event_id().to_owned();
    let client = b.federation_client().expect("federation on");
    let full = client.send_join("a.test", room, &event_id, &event, false).await.expect("full");
    let partial = client.send_join("a.test", room, &event_id, &event, true).await.expect("partial");
    (full, partial, version)
}

/// Checks what holds of every partial answer against the full one: the same state but the
/// member events, no event twice, and an auth chain that is exactly the auth chain of the join
/// and of the state returned, less that state. Answers the partial state.
fn check_partial(
    full: &matrix_core::Object,
    partial: &matrix_core::Object,
    version: &str,
) -> BTreeMap<String, Value> {
    assert_eq!(full.get("members_omitted"), Some(&matrix_core::Value::Bool(false)));
    assert_eq!(partial.get("members_omitted"), Some(&matrix_core::Value::Bool(true)));
    let (full_state, partial_state) =
        (events(full, "state", version), events(partial, "state", version));
    let not_members = |state: &BTreeMap<String, Value>| -> BTreeSet<String> {
        state
            .iter()
            .filter(|(_, e)| e["type"] != "m.room.member")
            .map(|(id, _)| id.clone())
            .collect()
    };
    assert_eq!(not_members(&full_state), not_members(&partial_state));
    assert!(partial_state.keys().all(|id| full_state.contains_key(id)));

    let mut known = full_state.clone();
    known.extend(events(full, "auth_chain", version));
    let partial_chain = events(partial, "auth_chain", version);
    known.extend(partial_chain.clone());
    let rules = matrix_core::RoomVersionRules::get(version).expect("a known version");
    let join = match partial.get("event") {
        Some(matrix_core::Value::Object(event)) => {
            as_json(&matrix_core::Pdu::from_object(event.clone(), rules).expect("a pdu"))
        }
        _ => panic!("the answer has no event"),
    };
    let mut from: Vec<&Value> = partial_state.values().collect();
    from.push(&join);
    let mut expected = auth_chain(&from, &known);
    expected.retain(|id| !partial_state.contains_key(id));
    let got: BTreeSet<String> = partial_chain.keys().cloned().collect();
    assert_eq!(got, expected, "the auth chain of the partial state");
    // The full answer's auth chain covers its whole state.
    let full_from: Vec<&Value> = full_state.values().chain([&join]).collect();
    let full_chain: BTreeSet<String> = events(full, "auth_chain", version).into_keys().collect();
    assert_eq!(full_chain, auth_chain(&full_from, &known));
    partial_state
}

fn servers_in_room(answer: &matrix_core::Object) -> Vec<String> {
    let Some(matrix_core::Value::Array(list)) = answer.get("servers_in_room") else {
        panic!("no servers_in_room: {answer:?}")
    };
    list.iter().map(|s| s.as_str().expect("a server name").to_owned()).collect()
}

/// A named room: the partial answer holds the joining user's own membership (an invite) but no
/// other member event; the servers in the room are a and c (b is not in yet); without the flag
/// every member is there.
#[tokio::test]
async fn send_join_with_omit_members_leaves_out_the_members_of_a_named_room() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, c) = (net.server("a.test"), net.server("c.test"));
    let alice = a.register_user("alice", "pw").await;
    let carol = a.register_user("carol", "pw").await;
    let dave = c.register_user("dave", "pw").await;
    let bob = net.server("b.test").register_user("bob", "pw").await;
    let room =
        create_room(a, &alice.access_token, json!({"preset": "public_chat", "name": "Tea"})).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, body) =
        call(a, &carol.access_token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200, "{body}");
    join_through_a(c, &dave.access_token, &room).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    let invite = json!({"user_id": "@bob:b.test"});
    let (status, body) = call(a, &alice.access_token, reqwest::Method::POST, &path, invite).await;
    assert_eq!(status, 200, "{body}");

    let (full, partial, version) = both_answers(&net, &room, &bob.access_token).await;
    let full_members = members(&events(&full, "state", &version));
    let expected: BTreeMap<String, String> = [
        ("@alice:a.test", "join"),
        ("@bob:b.test", "invite"),
        ("@carol:a.test", "join"),
        ("@dave:c.test", "join"),
    ]
    .into_iter()
    .map(|(u, m)| (u.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(full_members, expected);
    let partial_state = check_partial(&full, &partial, &version);
    let only_bob: BTreeMap<String, String> =
        [("@bob:b.test".to_owned(), "invite".to_owned())].into_iter().collect();
    assert_eq!(members(&partial_state), only_bob);
    assert_eq!(servers_in_room(&partial), ["a.test", "c.test"]);
}

/// A room with neither name nor alias: the partial answer holds the heroes' member events
/// (five of the members, the joining user aside) and their auth chains.
#[tokio::test]
async fn send_join_with_omit_members_keeps_the_heroes_of_an_unnamed_room() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, c) = (net.server("a.test"), net.server("c.test"));
    let alice = a.register_user("alice", "pw").await;
    let room = create_room(a, &alice.access_token, json!({"preset": "public_chat"})).await;
    let mut everyone = BTreeSet::from(["@alice:a.test".to_owned()]);
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        let user = a.register_user(name, "pw").await;
        let path = format!("/_matrix/client/v3/rooms/{room}/join");
        let (status, body) =
            call(a, &user.access_token, reqwest::Method::POST, &path, json!({})).await;
        assert_eq!(status, 200, "{body}");
        everyone.insert(format!("@{name}:a.test"));
    }
    let dave = c.register_user("dave", "pw").await;
    let bob = net.server("b.test").register_user("bob", "pw").await;
    join_through_a(c, &dave.access_token, &room).await;
    everyone.insert("@dave:c.test".to_owned());

    let (full, partial, version) = both_answers(&net, &room, &bob.access_token).await;
    let full_members: BTreeSet<String> =
        members(&events(&full, "state", &version)).into_keys().collect();
    assert_eq!(full_members, everyone);
    let partial_state = check_partial(&full, &partial, &version);
    let heroes = members(&partial_state);
    assert_eq!(heroes.len(), 5, "{heroes:?}");
    assert!(heroes.values().all(|m| m == "join"), "{heroes:?}");
    assert!(heroes.keys().all(|u| everyone.contains(u)), "{heroes:?}");
    assert_eq!(servers_in_room(&partial), ["a.test", "c.test"]);
}

/// A restricted room joined as a member of its space: the join names alice as the user who
/// authorised it; her membership (an auth event of the join) is left out of the partial state
/// but is in its auth chain.
#[tokio::test]
async fn send_join_with_omit_members_keeps_the_authorising_membership_in_the_auth_chain() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let a = net.server("a.test");
    let alice = a.register_user("alice", "pw").await;
    let bob = net.server("b.test").register_user("bob", "pw").await;
    let space =
        create_room(a, &alice.access_token, json!({"preset": "public_chat", "name": "Space"}))
            .await;
    join_through_a(net.server("b.test"), &bob.access_token, &space).await;
    let room = create_room(
        a,
        &alice.access_token,
        json!({"name": "Inner", "initial_state": [{"type": "m.room.join_rules", "state_key": "",
               "content": {"join_rule": "restricted",
                           "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;

    let (full, partial, version) = both_answers(&net, &room, &bob.access_token).await;
    let partial_state = check_partial(&full, &partial, &version);
    assert!(members(&partial_state).is_empty(), "{partial_state:?}");
    let Some(matrix_core::Value::Object(join)) = partial.get("event") else {
        panic!("no event in the answer")
    };
    let via =
        join.get_object("content").and_then(|c| c.get_str("join_authorised_via_users_server"));
    assert_eq!(via, Some("@alice:a.test"));
    let full_state = events(&full, "state", &version);
    let alice_join = full_state
        .iter()
        .find(|(_, e)| e["type"] == "m.room.member" && e["state_key"] == "@alice:a.test")
        .map(|(id, _)| id.clone())
        .expect("alice's join");
    assert!(events(&partial, "auth_chain", &version).contains_key(&alice_join));
    assert_eq!(servers_in_room(&partial), ["a.test"]);
}

/// The room version of `room` on `server`, as it stored it.
async fn version_of(server: &TestHomeserver, room: &str) -> String {
    let storage = server.storage();
    let info = storage.room(room).await.expect("reads").expect("the room");
    info.version.clone()
}

/// The current state of `room` on `server` and its auth chain, as the events a `send_join`
/// answer would hold (read from its storage), by id.
async fn state_and_chain(
    server: &TestHomeserver,
    room: &str,
) -> (Vec<(String, matrix_core::Object)>, Vec<matrix_core::Object>) {
    let storage = server.storage();
    let info = storage.room(room).await.expect("reads").expect("the room");
    let entries = storage.state_full(info.current_state.expect("a state")).await.expect("reads");
    let object = |bytes: &[u8]| match matrix_core::json::parse_lenient(bytes) {
        Ok(matrix_core::Value::Object(object)) => object,
        _ => panic!("a stored event is an object"),
    };
    let mut state = Vec::new();
    for entry in &entries {
        let stored = storage.event(&entry.event_id).await.expect("reads").expect("stored");
        state.push((entry.event_id.clone(), object(&stored.json)));
    }
    let ids: Vec<&str> = entries.iter().map(|e| e.event_id.as_str()).collect();
    let mut chain = Vec::new();
    for id in storage.auth_chain(&ids).await.expect("reads") {
        let stored = storage.event(&id).await.expect("reads").expect("stored");
        chain.push(object(&stored.json));
    }
    (state, chain)
}

/// a answers every `send_join` with `state` and `chain` (a lying resident: b's join never
/// reaches a's room).
fn answer_send_join(
    net: &TestFederation,
    state: Vec<matrix_core::Object>,
    chain: Vec<matrix_core::Object>,
) {
    let list = |events: Vec<matrix_core::Object>| {
        matrix_core::Value::Array(events.into_iter().map(matrix_core::Value::Object).collect())
    };
    let mut answer = matrix_core::Object::new();
    answer.insert("origin", "a.test");
    answer.insert("members_omitted", false);
    answer.insert("state", list(state));
    answer.insert("auth_chain", list(chain));
    let body = matrix_core::json::to_canonical_vec(&matrix_core::Value::Object(answer));
    net.intercept("a.test", move |_, request| {
        if request.uri().path().starts_with("/_matrix/federation/v2/send_join/") {
            Intercepted::Answer(200, body.clone())
        } else {
            Intercepted::Pass
        }
    });
}

/// A bad signature on one event of a `send_join` answer (carol's join) leaves out that event,
/// a wrong content hash (the topic) redacts it; the join goes on with the rest. A bad
/// signature on the create event leaves no room to join: the join fails, nothing is stored.
#[tokio::test]
async fn a_join_takes_the_state_but_the_events_that_fail_their_checks() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let carol = a.register_user("carol", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let body = json!({"preset": "public_chat", "name": "Tea", "topic": "the truth"});
    let room = create_room(a, &alice.access_token, body).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, body) =
        call(a, &carol.access_token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (state, chain) = state_and_chain(a, &room).await;
    let id_of = |kind: &str, key: &str| -> String {
        let found = state
            .iter()
            .find(|(_, e)| e.get_str("type") == Some(kind) && e.get_str("state_key") == Some(key));
        found.expect("in the state").0.clone()
    };
    let (carol_join, topic, create) = (
        id_of("m.room.member", "@carol:a.test"),
        id_of("m.room.topic", ""),
        id_of("m.room.create", ""),
    );
    let bad_signature = |event: &mut matrix_core::Object| {
        let signatures = event.object_entry("signatures").object_entry("a.test");
        let key_ids: Vec<String> = signatures.keys().map(str::to_owned).collect();
        for key_id in key_ids {
            signatures.insert(&key_id, "A".repeat(86));
        }
    };
    let lie = |bad: &str| -> Vec<matrix_core::Object> {
        state
            .iter()
            .map(|(id, event)| {
                let mut event = event.clone();
                if *id == topic {
                    event.object_entry("content").insert("topic", "a lie");
                }
                if id == bad {
                    bad_signature(&mut event);
                }
                event
            })
            .collect()
    };

    // The create event badly signed: no state of the room is left; nothing is stored.
    let mut forged_chain = chain.clone();
    for event in &mut forged_chain {
        if event.get_str("type") == Some("m.room.create") {
            bad_signature(event);
        }
    }
    answer_send_join(&net, lie(&create), forged_chain);
    let join = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    let (status, body) = call(b, &bob.access_token, reqwest::Method::POST, &join, json!({})).await;
    assert_ne!(status, 200, "{body}");
    let stored = b.storage().room(&room).await.expect("reads");
    assert!(stored.as_ref().is_none_or(|r| r.current_state.is_none()), "{stored:?}");

    // carol's join badly signed, the topic with a wrong hash: the join goes on without them.
    answer_send_join(&net, lie(&carol_join), chain);
    let (status, body) = call(b, &bob.access_token, reqwest::Method::POST, &join, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let stored = |id: String| async move { b.storage().event(&id).await.expect("reads") };
    assert!(stored(carol_join.clone()).await.is_none(), "carol's forged join is not stored");
    let path = format!("/_matrix/client/v3/rooms/{room}/state");
    let (status, on_b) = call(b, &bob.access_token, reqwest::Method::GET, &path, json!({})).await;
    assert_eq!(status, 200, "{on_b}");
    let on_b = on_b.as_array().expect("a list").clone();
    let entry = |kind: &str, key: &str| {
        on_b.iter().find(|e| e["type"] == kind && e["state_key"] == key).cloned()
    };
    assert!(entry("m.room.member", "@carol:a.test").is_none(), "{on_b:?}");
    assert_eq!(
        entry("m.room.member", "@alice:a.test").expect("alice")["content"]["membership"],
        "join"
    );
    assert_eq!(
        entry("m.room.member", "@bob:b.test").expect("bob")["content"]["membership"],
        "join"
    );
    assert_eq!(entry("m.room.name", "").expect("the name")["content"]["name"], "Tea");
    let topic_on_b = entry("m.room.topic", "").expect("the topic, redacted");
    assert_eq!(topic_on_b["event_id"], topic.as_str());
    assert!(topic_on_b["content"].get("topic").is_none(), "{topic_on_b}");
}
