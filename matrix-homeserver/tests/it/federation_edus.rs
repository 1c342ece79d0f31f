//! EDUs between in-process homeservers (`TestFederation`): typing, read receipts, to-device
//! messages and device-list changes both ways, remote key queries and claims, and EDUs a
//! server must refuse (about users of another server, rooms the user is not in, oversized).

use matrix_homeserver::testing::{TestFederation, TestHomeserver};
use serde_json::{Value, json};

pub(crate) use crate::federation::call;
use crate::federation::create_room;

/// Two servers, alice on a.test in a public room of hers, bob of b.test joined to it.
pub(crate) struct Shared {
    pub(crate) net: TestFederation,
    pub(crate) alice: matrix_homeserver::Session,
    pub(crate) bob: matrix_homeserver::Session,
    pub(crate) room: String,
}

impl Shared {
    pub(crate) fn a(&self) -> &TestHomeserver {
        self.net.server("a.test")
    }
    pub(crate) fn b(&self) -> &TestHomeserver {
        self.net.server("b.test")
    }
}

pub(crate) async fn shared_room() -> Shared {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        json!({"preset": "public_chat", "room_alias_name": "tea"}),
    )
    .await;
    let (status, joined) = call(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/join/%23tea:a.test",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    Shared { net, alice, bob, room }
}

/// Syncs (bounded polling) until `found` says yes of a sync answer; answers that answer.
async fn sync_until(
    server: &TestHomeserver,
    token: &str,
    what: &str,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let mut since = String::new();
    for _ in 0..40 {
        let path = format!("/_matrix/client/v3/sync?timeout=500{since}");
        let (status, sync) = call(server, token, reqwest::Method::GET, &path, json!({})).await;
        assert_eq!(status, 200, "{sync}");
        if found(&sync) {
            return sync;
        }
        since = format!("&since={}", sync["next_batch"].as_str().expect("a next_batch"));
    }
    panic!("{what} never reached {}", server.server_name());
}

/// The room's ephemeral events of `kind` in a sync answer.
fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == kind).collect())
        .unwrap_or_default()
}

pub(crate) fn typing_users(sync: &Value, room: &str) -> Vec<String> {
    ephemeral(sync, room, "m.typing")
        .iter()
        .flat_map(|e| e["content"]["user_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect()
}

/// Whether a sync shows a public read receipt of `user` on `event`.
pub(crate) fn has_receipt(sync: &Value, room: &str, event: &str, user: &str) -> bool {
    ephemeral(sync, room, "m.receipt")
        .iter()
        .any(|e| e["content"][event]["m.read"].get(user).is_some())
}

/// Sends a message; answers its event id.
pub(crate) async fn send(server: &TestHomeserver, token: &str, room: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}");
    let content = json!({"msgtype": "m.text", "body": body});
    let (status, sent) = call(server, token, reqwest::Method::PUT, &path, content).await;
    assert_eq!(status, 200, "{sent}");
    sent["event_id"].as_str().expect("an event id").to_owned()
}

pub(crate) async fn wait_for_event(server: &TestHomeserver, token: &str, room: &str, event: &str) {
    sync_until(server, token, event, |sync| {
        sync["rooms"]["join"][room]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == event))
    })
    .await;
}

#[tokio::test]
async fn typing_and_receipts_go_both_ways() {
    let s = shared_room().await;
    let (a, b, room) = (s.a(), s.b(), s.room.as_str());
    let typing = |user: &matrix_homeserver::Session, on: bool| {
        let path = format!("/_matrix/client/v3/rooms/{room}/typing/{}", user.user_id);
        (path, json!({"typing": on, "timeout": 20000}))
    };

    // alice types: bob's sync on b shows it, then that she stopped.
    let (path, body) = typing(&s.alice, true);
    let (status, _) = call(a, &s.alice.access_token, reqwest::Method::PUT, &path, body).await;
    assert_eq!(status, 200);
    sync_until(b, &s.bob.access_token, "alice typing", |sync| {
        typing_users(sync, room).contains(&"@alice:a.test".to_owned())
    })
    .await;
    let (path, body) = typing(&s.alice, false);
    let (status, _) = call(a, &s.alice.access_token, reqwest::Method::PUT, &path, body).await;
    assert_eq!(status, 200);
    // A full sync lists who types now (an incremental one only changes).
    let mut stopped = false;
    for _ in 0..50 {
        let (status, sync) = call(
            b,
            &s.bob.access_token,
            reqwest::Method::GET,
            "/_matrix/client/v3/sync",
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{sync}");
        if !typing_users(&sync, room).contains(&"@alice:a.test".to_owned()) {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stopped, "alice's stop never reached b.test");

    // bob types: alice sees it.
    let (path, body) = typing(&s.bob, true);
    let (status, _) = call(b, &s.bob.access_token, reqwest::Method::PUT, &path, body).await;
    assert_eq!(status, 200);
    sync_until(a, &s.alice.access_token, "bob typing", |sync| {
        typing_users(sync, room).contains(&"@bob:b.test".to_owned())
    })
    .await;

    // Receipts: bob reads alice's message, alice reads bob's.
    let from_alice = send(a, &s.alice.access_token, room, "from-alice").await;
    wait_for_event(b, &s.bob.access_token, room, &from_alice).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_alice}");
    let (status, _) = call(b, &s.bob.access_token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200);
    sync_until(a, &s.alice.access_token, "bob's receipt", |sync| {
        has_receipt(sync, room, &from_alice, "@bob:b.test")
    })
    .await;

    let from_bob = send(b, &s.bob.access_token, room, "from-bob").await;
    wait_for_event(a, &s.alice.access_token, room, &from_bob).await;
    // A private receipt stays home; the public one after it travels.
    let private = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{from_bob}");
    let (status, _) =
        call(a, &s.alice.access_token, reqwest::Method::POST, &private, json!({})).await;
    assert_eq!(status, 200);
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_bob}");
    let (status, _) = call(a, &s.alice.access_token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200);
    let sync = sync_until(b, &s.bob.access_token, "alice's receipt", |sync| {
        has_receipt(sync, room, &from_bob, "@alice:a.test")
    })
    .await;
    for receipt in ephemeral(&sync, room, "m.receipt") {
        assert!(receipt["content"][&from_bob].get("m.read.private").is_none(), "{receipt}");
    }
}

#[tokio::test]
async fn to_device_messages_go_both_ways() {
    let s = shared_room().await;
    let (a, b) = (s.a(), s.b());
    let to_device = |to: &matrix_homeserver::Session, txn: &str| {
        let path = format!("/_matrix/client/v3/sendToDevice/m.test.ping/{txn}");
        let body = json!({"messages": {to.user_id.as_str(): {to.device_id.as_str(): {"n": txn}}}});
        (path, body)
    };
    let received = |sync: &Value, sender: &str, txn: &str| {
        sync["to_device"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| {
                e["sender"] == sender && e["type"] == "m.test.ping" && e["content"]["n"] == txn
            })
        })
    };

    let (path, body) = to_device(&s.bob, "t1");
    let (status, _) = call(a, &s.alice.access_token, reqwest::Method::PUT, &path, body).await;
    assert_eq!(status, 200);
    sync_until(b, &s.bob.access_token, "alice's message", |sync| {
        received(sync, "@alice:a.test", "t1")
    })
    .await;

    // `*`: every device of alice's.
    let path = "/_matrix/client/v3/sendToDevice/m.test.ping/t2";
    let body = json!({"messages": {"@alice:a.test": {"*": {"n": "t2"}}}});
    let (status, _) = call(b, &s.bob.access_token, reqwest::Method::PUT, path, body).await;
    assert_eq!(status, 200);
    sync_until(a, &s.alice.access_token, "bob's message", |sync| {
        received(sync, "@bob:b.test", "t2")
    })
    .await;
}

#[tokio::test]
async fn device_list_changes_and_remote_keys() {
    let s = shared_room().await;
    let (a, b) = (s.a(), s.b());
    // alice's first sync, so that the next ones are incremental.
    let since = first_batch(a, &s.alice.access_token).await;

    // bob uploads device keys and a one-time key.
    let device = s.bob.device_id.as_str();
    let keys = json!({
        "user_id": "@bob:b.test",
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {format!("curve25519:{device}"): "c25519", format!("ed25519:{device}"): "ed"},
        "signatures": {}
    });
    let body = json!({
        "device_keys": keys,
        "one_time_keys": {"signed_curve25519:AAAA": {"key": "otk", "signatures": {}}}
    });
    let (status, uploaded) =
        call(b, &s.bob.access_token, reqwest::Method::POST, "/_matrix/client/v3/keys/upload", body)
            .await;
    assert_eq!(status, 200, "{uploaded}");

    // alice's sync hears of it.
    wait_changed(a, &s.alice.access_token, &since, "@bob:b.test").await;

    // alice's client asks for bob's keys: a asks b.
    let body = json!({"device_keys": {"@bob:b.test": [], "@zed:nowhere.test": []}});
    let (status, queried) = call(
        a,
        &s.alice.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/keys/query",
        body,
    )
    .await;
    assert_eq!(status, 200, "{queried}");
    assert_eq!(queried["device_keys"]["@bob:b.test"][device]["keys"], keys["keys"], "{queried}");
    assert!(queried["failures"].get("nowhere.test").is_some(), "{queried}");
    assert!(queried["failures"].get("b.test").is_none(), "{queried}");

    // And claims his one-time key, once.
    let body = json!({"one_time_keys": {"@bob:b.test": {device: "signed_curve25519"}}});
    let (status, claimed) = call(
        a,
        &s.alice.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/keys/claim",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let key = &claimed["one_time_keys"]["@bob:b.test"][device]["signed_curve25519:AAAA"];
    assert_eq!(key["key"], "otk", "{claimed}");
    let (status, again) = call(
        a,
        &s.alice.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/keys/claim",
        body,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert!(
        again["one_time_keys"]["@bob:b.test"][device].get("signed_curve25519:AAAA").is_none(),
        "{again}"
    );
}

pub(crate) fn edu(kind: &str, content: Value) -> matrix_core::Value {
    let text = json!({"edu_type": kind, "content": content}).to_string();
    matrix_core::json::parse_lenient(text.as_bytes()).expect("json")
}

#[tokio::test]
async fn forged_and_oversized_edus_are_dropped() {
    let s = shared_room().await;
    let (a, b, room) = (s.a(), s.b(), s.room.as_str());
    let event = send(a, &s.alice.access_token, room, "read-me").await;
    wait_for_event(b, &s.bob.access_token, room, &event).await;
    // A room alice is in that nobody of b's has joined.
    let (status, other) = call(
        a,
        &s.alice.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        json!({"preset": "public_chat"}),
    )
    .await;
    assert_eq!(status, 200, "{other}");
    let other = other["room_id"].as_str().expect("a room id").to_owned();

    let client = b.federation_client().expect("federation is on");
    let mut too_many = serde_json::Map::new();
    too_many.insert(
        "@bob:b.test".to_owned(),
        json!({"event_ids": [event.as_str()], "data": {"ts": 1}}),
    );
    for i in 0..100 {
        too_many.insert(format!("@u{i}:b.test"), json!({"event_ids": [event], "data": {"ts": 1}}));
    }
    let edus = vec![
        // About a user of a, not of b.
        edu("m.typing", json!({"room_id": room, "user_id": "@alice:a.test", "typing": true})),
        // A user of b who is not in the room.
        edu("m.typing", json!({"room_id": room, "user_id": "@mallory:b.test", "typing": true})),
        // bob, in a room he is not in.
        edu("m.typing", json!({"room_id": other, "user_id": "@bob:b.test", "typing": true})),
        // A receipt map past the bound: dropped whole, bob's receipt with it.
        edu("m.receipt", json!({ room: {"m.read": too_many} })),
        // A receipt for a user of another server.
        edu(
            "m.receipt",
            json!({ room: {"m.read": {"@alice:a.test": {"event_ids": [event], "data": {"ts": 1}}}}}),
        ),
        // A to-device message "from" a user of a.
        edu(
            "m.direct_to_device",
            json!({"sender": "@alice:a.test", "type": "m.test.forged", "message_id": "m1",
                   "messages": {"@alice:a.test": {"*": {"forged": true}}}}),
        ),
        // A device-list change of a user of a third server.
        edu(
            "m.device_list_update",
            json!({"user_id": "@carol:c.test", "device_id": "D", "stream_id": 1}),
        ),
        // Presence of a user of a; an unknown kind.
        edu("m.presence", json!({"push": [{"user_id": "@alice:a.test", "presence": "online"}]})),
        edu("m.unknown", json!({})),
    ];
    let answer = client.send_transaction("a.test", "forged-1", Vec::new(), edus).await;
    assert!(answer.is_ok(), "{answer:?}");

    // Everything was processed when the transaction was answered: alice's full sync shows
    // none of it.
    let (status, sync) =
        call(a, &s.alice.access_token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({}))
            .await;
    assert_eq!(status, 200, "{sync}");
    assert!(typing_users(&sync, room).is_empty(), "{sync}");
    assert!(typing_users(&sync, &other).is_empty(), "{sync}");
    assert!(!has_receipt(&sync, room, &event, "@bob:b.test"), "{sync}");
    assert!(!has_receipt(&sync, room, &event, "@alice:a.test"), "{sync}");
    let to_device = sync["to_device"]["events"].as_array().cloned().unwrap_or_default();
    assert!(to_device.iter().all(|e| e["type"] != "m.test.forged"), "{sync}");

    // The same EDUs, honest, are taken: bob types and reads.
    let edus = vec![
        edu("m.typing", json!({"room_id": room, "user_id": "@bob:b.test", "typing": true})),
        edu(
            "m.receipt",
            json!({ room: {"m.read": {"@bob:b.test": {"event_ids": [event], "data": {"ts": 1}}}}}),
        ),
    ];
    let answer = client.send_transaction("a.test", "honest-1", Vec::new(), edus).await;
    assert!(answer.is_ok(), "{answer:?}");
    let (status, sync) =
        call(a, &s.alice.access_token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({}))
            .await;
    assert_eq!(status, 200, "{sync}");
    assert_eq!(typing_users(&sync, room), vec!["@bob:b.test".to_owned()], "{sync}");
    assert!(has_receipt(&sync, room, &event, "@bob:b.test"), "{sync}");
}

#[tokio::test]
async fn a_to_device_edu_is_delivered_once_and_key_queries_answer_only_for_our_users() {
    let s = shared_room().await;
    let (a, b) = (s.a(), s.b());
    let client = b.federation_client().expect("federation is on");
    let message = || {
        edu(
            "m.direct_to_device",
            json!({"sender": "@bob:b.test", "type": "m.test.once", "message_id": "same-id",
                   "messages": {"@alice:a.test": {s.alice.device_id.as_str(): {"n": 1}}}}),
        )
    };
    // The same message in two transactions (a retry the sender did not know succeeded).
    for txn in ["once-1", "once-2"] {
        let answer = client.send_transaction("a.test", txn, Vec::new(), vec![message()]).await;
        assert!(answer.is_ok(), "{answer:?}");
    }
    // A message_id past the spec's 32 codepoints is dropped.
    let long = edu(
        "m.direct_to_device",
        json!({"sender": "@bob:b.test", "type": "m.test.long", "message_id": "x".repeat(33),
               "messages": {"@alice:a.test": {"*": {"n": 2}}}}),
    );
    let answer = client.send_transaction("a.test", "long-1", Vec::new(), vec![long]).await;
    assert!(answer.is_ok(), "{answer:?}");
    let (status, sync) =
        call(a, &s.alice.access_token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({}))
            .await;
    assert_eq!(status, 200, "{sync}");
    let events = sync["to_device"]["events"].as_array().cloned().unwrap_or_default();
    let once = events.iter().filter(|e| e["type"] == "m.test.once").count();
    assert_eq!(once, 1, "{sync}");
    assert!(events.iter().all(|e| e["type"] != "m.test.long"), "{sync}");

    // a answers b's key queries for a's users only.
    let mut asked = matrix_core::Object::new();
    asked.insert("@alice:a.test", Vec::<matrix_core::Value>::new());
    asked.insert("@bob:b.test", Vec::<matrix_core::Value>::new());
    let answer = client.user_keys_query("a.test", asked).await.expect("a answers");
    let keys = answer.get_object("device_keys").expect("device_keys");
    assert!(keys.contains_key("@alice:a.test"), "{answer:?}");
    assert!(!keys.contains_key("@bob:b.test"), "{answer:?}");
    let devices = client.user_devices("a.test", "@bob:b.test").await;
    assert!(devices.is_err(), "{devices:?}");
    let devices = client.user_devices("a.test", "@alice:a.test").await.expect("a answers");
    assert_eq!(devices.get_str("user_id"), Some("@alice:a.test"));
}

/// Syncs incrementally from `since` (bounded) until `device_lists.changed` lists `user`;
/// answers the next batch after it.
pub(crate) async fn wait_changed(
    server: &TestHomeserver,
    token: &str,
    since: &str,
    user: &str,
) -> String {
    let mut since = since.to_owned();
    for _ in 0..40 {
        let path = format!("/_matrix/client/v3/sync?timeout=500&since={since}");
        let (status, sync) = call(server, token, reqwest::Method::GET, &path, json!({})).await;
        assert_eq!(status, 200, "{sync}");
        since = sync["next_batch"].as_str().expect("a next_batch").to_owned();
        let changed = sync["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
        if changed.iter().any(|u| u == user) {
            return since;
        }
    }
    panic!("{user}'s device-list change never reached {}", server.server_name());
}

/// A first sync's next batch.
pub(crate) async fn first_batch(server: &TestHomeserver, token: &str) -> String {
    let (status, sync) =
        call(server, token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({})).await;
    assert_eq!(status, 200, "{sync}");
    sync["next_batch"].as_str().expect("a next_batch").to_owned()
}

#[tokio::test]
async fn a_deleted_device_is_announced() {
    let s = shared_room().await;
    let (a, b) = (s.a(), s.b());
    let since = first_batch(a, &s.alice.access_token).await;
    // bob's second device, with keys.
    let second = b.homeserver().login("bob", "pw").await.expect("bob logs in again");
    let device = second.device_id.as_str();
    let keys = json!({
        "user_id": "@bob:b.test", "device_id": device, "algorithms": [],
        "keys": {format!("ed25519:{device}"): "ed"}, "signatures": {}
    });
    let (status, uploaded) = call(
        b,
        &second.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/keys/upload",
        json!({"device_keys": keys}),
    )
    .await;
    assert_eq!(status, 200, "{uploaded}");
    let since = wait_changed(a, &s.alice.access_token, &since, "@bob:b.test").await;
    // a knows of the device (its /keys/query asks b).
    let body = json!({"device_keys": {"@bob:b.test": []}});
    let path = "/_matrix/client/v3/keys/query";
    let (status, queried) =
        call(a, &s.alice.access_token, reqwest::Method::POST, path, body.clone()).await;
    assert_eq!(status, 200, "{queried}");
    assert!(queried["device_keys"]["@bob:b.test"].get(device).is_some(), "{queried}");

    // bob renames the device: a hears of it; the name itself stays on b (as Synapse's
    // default, `allow_device_name_lookup_over_federation: false`).
    let rename = format!("/_matrix/client/v3/devices/{device}");
    let (status, renamed) = call(
        b,
        &second.access_token,
        reqwest::Method::PUT,
        &rename,
        json!({"display_name": "bob's phone"}),
    )
    .await;
    assert_eq!(status, 200, "{renamed}");
    let since = wait_changed(a, &s.alice.access_token, &since, "@bob:b.test").await;
    let client = a.federation_client().expect("federation is on");
    let devices = client.user_devices("b.test", "@bob:b.test").await.expect("b answers");
    let listed = devices.get("devices").and_then(|d| d.as_array()).expect("devices");
    assert!(
        listed.iter().filter_map(|d| d.as_object()).any(|d| d.get_str("device_id") == Some(device)
            && !d.contains_key("device_display_name")
            && d.contains_key("keys")),
        "{devices:?}"
    );

    // bob logs the device out: a hears of it, and the device is gone from b's answer.
    let (status, _) = call(
        b,
        &second.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/logout",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_changed(a, &s.alice.access_token, &since, "@bob:b.test").await;
    let (status, queried) = call(a, &s.alice.access_token, reqwest::Method::POST, path, body).await;
    assert_eq!(status, 200, "{queried}");
    assert!(queried["device_keys"]["@bob:b.test"].get(device).is_none(), "{queried}");
}

#[tokio::test]
async fn room_edus_follow_whether_a_user_of_ours_is_in_the_room() {
    let s = shared_room().await;
    let (a, b, room) = (s.a(), s.b(), s.room.as_str());
    let client = b.federation_client().expect("federation is on");
    let typing = |on: bool| {
        vec![edu("m.typing", json!({"room_id": room, "user_id": "@bob:b.test", "typing": on}))]
    };
    let full_sync = || async {
        let path = "/_matrix/client/v3/sync";
        let (status, sync) =
            call(a, &s.alice.access_token, reqwest::Method::GET, path, json!({})).await;
        assert_eq!(status, 200, "{sync}");
        sync
    };
    // a is in the room: bob's typing is taken (and a's residency cached), then his stop.
    client.send_transaction("a.test", "in-1", Vec::new(), typing(true)).await.expect("taken");
    let sync = full_sync().await;
    assert_eq!(typing_users(&sync, room), ["@bob:b.test"], "{sync}");
    client.send_transaction("a.test", "in-2", Vec::new(), typing(false)).await.expect("taken");

    // alice leaves: a has nobody in the room any more, and drops bob's typing.
    let path = format!("/_matrix/client/v3/rooms/{room}/leave");
    let (status, left) =
        call(a, &s.alice.access_token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200, "{left}");
    client.send_transaction("a.test", "out-1", Vec::new(), typing(true)).await.expect("answered");

    // alice comes back through b: the typing sent while a was out is not there; new typing is.
    let path = format!("/_matrix/client/v3/join/{room}?server_name=b.test");
    let (status, joined) =
        call(a, &s.alice.access_token, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200, "{joined}");
    let sync = full_sync().await;
    assert!(typing_users(&sync, room).is_empty(), "taken while a was out: {sync}");
    client.send_transaction("a.test", "back-1", Vec::new(), typing(true)).await.expect("taken");
    let sync = full_sync().await;
    assert_eq!(typing_users(&sync, room), ["@bob:b.test"], "{sync}");
}
