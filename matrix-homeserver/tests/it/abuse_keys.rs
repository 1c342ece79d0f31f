//! The security review's end-to-end key findings, attacked over HTTP: devices that go keep
//! no keys (#17), one-time key bounds (#18), key queries (#19), whom device-list changes
//! reach (#29, #39) and fallback keys (#30).

use serde_json::{Value, json};

use crate::abuse_ephemeral::{device_of, login, next_batch, sync};
use crate::rooms::{create, user};
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// Uploads device keys (with `mark` in them, so each upload can differ), one one-time key
/// and a fallback key for the client's device.
async fn upload_keys(client: &Client, user: &str, mark: &str) -> String {
    let device = device_of(client).await;
    let keys = json!({"user_id": user, "device_id": device,
                      "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                      "keys": {format!("ed25519:{device}"): mark}, "signatures": {}});
    let body = json!({"device_keys": keys,
                      "one_time_keys": {format!("signed_curve25519:{mark}"): {"key": mark}},
                      "fallback_keys": {format!("signed_curve25519:F{mark}"): {"key": mark, "fallback": true}}});
    let (status, answer) = client.post(&format!("{V3}/keys/upload"), &body).await;
    assert_eq!(status, 200, "{answer}");
    device
}

async fn query(client: &Client, user: &str) -> Value {
    let body = json!({"device_keys": {user: []}});
    let (status, answer) = client.post(&format!("{V3}/keys/query"), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["device_keys"][user].clone()
}

async fn claim(client: &Client, user: &str, device: &str) -> Value {
    let body = json!({"one_time_keys": {user: {device: "signed_curve25519"}}});
    let (status, answer) = client.post(&format!("{V3}/keys/claim"), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["one_time_keys"][user][device].clone()
}

fn changed(body: &Value) -> Vec<String> {
    body["device_lists"]["changed"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn left(body: &Value) -> Vec<String> {
    body["device_lists"]["left"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn uia(password: &str) -> Value {
    json!({"type": "m.login.password", "password": password,
           "identifier": {"type": "m.id.user", "user": "bob"}})
}

async fn finding_17_logout_password_change_and_deactivation_remove_device_keys(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"invite": [&bob_id]})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let gone_after = |keys: &Value, device: &str| keys.get(device).is_none();

    // /logout: the device's keys, one-time keys and fallback key go, and Alice hears of it.
    let first = upload_keys(&bob, &bob_id, "a1").await;
    let since = next_batch(&sync(&alice, "").await);
    assert!(query(&alice, &bob_id).await.get(&first).is_some());
    assert_eq!(bob.post(&format!("{V3}/logout"), &json!({})).await.0, 200);
    assert!(gone_after(&query(&alice, &bob_id).await, &first));
    assert_eq!(claim(&alice, &bob_id, &first).await, json!(null));
    let got = sync(&alice, &format!("since={since}")).await;
    assert!(changed(&got).contains(&bob_id), "{got}");

    // /logout/all.
    let (two, _) = login(&server, "bob").await;
    let (three, _) = login(&server, "bob").await;
    let d2 = upload_keys(&two, &bob_id, "b2").await;
    let d3 = upload_keys(&three, &bob_id, "b3").await;
    let since = next_batch(&sync(&alice, "").await);
    assert_eq!(two.post(&format!("{V3}/logout/all"), &json!({})).await.0, 200);
    let keys = query(&alice, &bob_id).await;
    assert!(gone_after(&keys, &d2) && gone_after(&keys, &d3), "{keys}");
    assert_eq!(claim(&alice, &bob_id, &d3).await, json!(null));
    assert!(changed(&sync(&alice, &format!("since={since}")).await).contains(&bob_id));

    // A password change that logs out the other devices.
    let (four, _) = login(&server, "bob").await;
    let (five, _) = login(&server, "bob").await;
    let d4 = upload_keys(&four, &bob_id, "c4").await;
    let d5 = upload_keys(&five, &bob_id, "c5").await;
    let body = json!({"new_password": "pw2", "logout_devices": true, "auth": uia("pw")});
    let (status, answer) = five.post(&format!("{V3}/account/password"), &body).await;
    assert_eq!(status, 200, "{answer}");
    let keys = query(&alice, &bob_id).await;
    assert!(gone_after(&keys, &d4), "{keys}");
    assert!(keys.get(&d5).is_some(), "the device that changed it stays: {keys}");

    // Deactivation: nothing of the account's devices is left to encrypt to.
    let since = next_batch(&sync(&alice, "").await);
    let body = json!({"auth": uia("pw2")});
    let (status, answer) = five.post(&format!("{V3}/account/deactivate"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(query(&alice, &bob_id).await, json!({}));
    assert_eq!(claim(&alice, &bob_id, &d5).await, json!(null));
    // Nor can anyone queue messages for them.
    let messages = json!({"messages": {&bob_id: {"*": {"x": 1}, &d5: {"x": 2}}}});
    let path = format!("{V3}/sendToDevice/m.test/after");
    let (status, _) = alice.send(reqwest::Method::PUT, &path, Some(&messages)).await;
    assert_eq!(status, 200);
    // Bob left every room on deactivation: Alice is told he no longer shares one (#39).
    let got = sync(&alice, &format!("since={since}")).await;
    assert_eq!(left(&got), vec![bob_id.clone()], "{got}");
}

async fn finding_18_one_time_keys_per_device_are_bounded(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.max_one_time_keys_per_device = 10).await
    else {
        return;
    };
    let (mallory, mallory_id) = user(&server, "mallory").await;
    let (alice, _) = user(&server, "alice").await;
    let device = device_of(&mallory).await;
    let upload = |keys: Value| {
        let mallory = mallory.clone();
        async move { mallory.post(&format!("{V3}/keys/upload"), &json!({"one_time_keys": keys})).await }
    };
    let keys = |range: std::ops::Range<u32>| {
        let map: serde_json::Map<String, Value> = range
            .map(|n| (format!("signed_curve25519:K{n}"), json!({"key": format!("k{n}")})))
            .collect();
        Value::Object(map)
    };
    let (status, body) = upload(keys(0..10)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 10);
    // Past the bound, in one request or many: refused whole.
    let (status, body) = upload(keys(10..11)).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    let (status, body) = upload(keys(100..10_100)).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    // The same keys again (a retry) are fine; another key under a held id is not.
    assert_eq!(upload(keys(0..10)).await.0, 200);
    let (status, body) = upload(json!({"signed_curve25519:K3": {"key": "other"}})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    // A claimed key is gone from the device (storage hands it out once); its place is free
    // for a new key.
    let claimed = claim(&alice, &mallory_id, &device).await;
    assert!(claimed.as_object().is_some_and(|o| o.len() == 1), "{claimed}");
    // A claim naming a key id instead of an algorithm picks nothing out by its prefix.
    let body = json!({"one_time_keys": {&mallory_id: {&device: "signed_curve25519:K"}}});
    let (status, answer) = alice.post(&format!("{V3}/keys/claim"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["one_time_keys"][&mallory_id].get(&device).is_none(), "{answer}");
    let (status, body) = upload(keys(10..11)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 10);
}

async fn finding_19_key_queries_read_only_the_users_named_and_are_bounded(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.max_users_per_key_query = 5).await
    else {
        return;
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let alice_device = upload_keys(&alice, &alice_id, "a").await;
    let bob_device = upload_keys(&bob, &bob_id, "b").await;
    let named: serde_json::Map<String, Value> =
        (0..30_000).map(|n| (format!("@ghost{n}:localhost"), json!([]))).collect();
    let (status, body) =
        alice.post(&format!("{V3}/keys/query"), &json!({"device_keys": named})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let five = json!({"device_keys": {&bob_id: [], "@g1:localhost": [], "@g2:localhost": [],
                                      "@g3:localhost": [], "@g4:localhost": []}});
    let (status, body) = alice.post(&format!("{V3}/keys/query"), &five).await;
    assert_eq!(status, 200, "{body}");
    let bobs = body["device_keys"][&bob_id].as_object().expect("bob's devices");
    assert_eq!(bobs.keys().collect::<Vec<_>>(), vec![&bob_device], "{body}");
    assert_eq!(body["device_keys"]["@g1:localhost"], json!({}));
    // Naming devices picks those only.
    let (status, body) =
        bob.post(&format!("{V3}/keys/query"), &json!({"device_keys": {&alice_id: ["NOPE"]}})).await;
    assert_eq!(status, 200);
    assert_eq!(body["device_keys"][&alice_id], json!({}), "{body}");
    assert!(query(&bob, &alice_id).await.get(&alice_device).is_some());
}

async fn finding_29_device_list_changes_reach_only_users_sharing_a_room(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, _) = user(&server, "carol").await;
    let (mallory, mallory_id) = user(&server, "mallory").await;
    let room = create(&alice, json!({"invite": [&bob_id]})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let alice_since = next_batch(&sync(&alice, "").await);
    let carol_since = next_batch(&sync(&carol, "").await);

    upload_keys(&bob, &bob_id, "b1").await;
    upload_keys(&mallory, &mallory_id, "m0").await;
    let got = sync(&alice, &format!("since={alice_since}")).await;
    assert_eq!(changed(&got), vec![bob_id.clone()], "{got}");
    let got = sync(&carol, &format!("since={carol_since}")).await;
    assert!(changed(&got).is_empty(), "a stranger's key changes are not carol's business: {got}");
    let (status, body) =
        carol.get(&format!("{V3}/keys/changes?from={carol_since}&to={}", next_batch(&got))).await;
    assert_eq!(status, 200);
    assert_eq!(body["changed"], json!([]), "{body}");

    // The device-list stream is stored whole: after many changes of a stranger, an old
    // token still gets exactly the changes of those it shares a room with.
    for n in 0..200 {
        let device = device_of(&mallory).await;
        let keys = json!({"user_id": &mallory_id, "device_id": device, "algorithms": [],
                          "keys": {format!("ed25519:{device}"): format!("m{n}")}, "signatures": {}});
        let (status, _) =
            mallory.post(&format!("{V3}/keys/upload"), &json!({"device_keys": keys})).await;
        assert_eq!(status, 200);
    }
    let got = changed(&sync(&alice, &format!("since={alice_since}")).await);
    assert_eq!(got, vec![bob_id.clone()]);
    let got = sync(&carol, &format!("since={carol_since}")).await;
    assert!(!changed(&got).contains(&mallory_id), "{got}");
}

async fn finding_30_claimed_fallback_keys_are_marked_used(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let device = upload_keys(&bob, &bob_id, "x").await;
    let unused = |body: &Value| body["device_unused_fallback_key_types"].clone();
    assert_eq!(unused(&sync(&bob, "").await), json!(["signed_curve25519"]));
    // The one-time key goes first, then the fallback key, which stays but is used.
    let first = claim(&alice, &bob_id, &device).await;
    assert!(first.get("signed_curve25519:x").is_some(), "{first}");
    assert_eq!(unused(&sync(&bob, "").await), json!(["signed_curve25519"]));
    for _ in 0..2 {
        let fallback = claim(&alice, &bob_id, &device).await;
        assert!(fallback.get("signed_curve25519:Fx").is_some(), "{fallback}");
    }
    assert_eq!(unused(&sync(&bob, "").await), json!([]));
    // The same fallback key again stays used; a new one is unused.
    let same = json!({"fallback_keys": {"signed_curve25519:Fx": {"key": "x", "fallback": true}}});
    assert_eq!(bob.post(&format!("{V3}/keys/upload"), &same).await.0, 200);
    assert_eq!(unused(&sync(&bob, "").await), json!([]));
    let new = json!({"fallback_keys": {"signed_curve25519:Fy": {"key": "y", "fallback": true}}});
    assert_eq!(bob.post(&format!("{V3}/keys/upload"), &new).await.0, 200);
    assert_eq!(unused(&sync(&bob, "").await), json!(["signed_curve25519"]));
    let fallback = claim(&alice, &bob_id, &device).await;
    assert!(fallback.get("signed_curve25519:Fy").is_some(), "{fallback}");
}

async fn finding_39_device_lists_left_names_users_no_longer_sharing_a_room(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let (mallory, _) = user(&server, "mallory").await;
    let one = create(&alice, json!({"invite": [&bob_id]})).await;
    let two = create(&alice, json!({"invite": [&bob_id, &carol_id]})).await;
    let three = create(&alice, json!({"invite": [&carol_id]})).await;
    for (client, room) in [(&bob, &one), (&bob, &two), (&carol, &two), (&carol, &three)] {
        assert_eq!(client.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    }
    let since = next_batch(&sync(&alice, "").await);
    let carol_since = next_batch(&sync(&carol, "").await);

    // Bob leaves one room but still shares another: not left. A stranger's own room: nothing.
    let lonely = create(&mallory, json!({})).await;
    assert_eq!(mallory.post(&format!("{V3}/rooms/{lonely}/leave"), &json!({})).await.0, 200);
    assert_eq!(bob.post(&format!("{V3}/rooms/{one}/leave"), &json!({})).await.0, 200);
    let got = sync(&alice, &format!("since={since}")).await;
    assert!(left(&got).is_empty(), "{got}");
    let since = next_batch(&got);

    // Kicked from the last shared room: left.
    let kick = json!({"user_id": &bob_id});
    assert_eq!(alice.post(&format!("{V3}/rooms/{two}/kick"), &kick).await.0, 200);
    let got = sync(&alice, &format!("since={since}")).await;
    assert_eq!(left(&got), vec![bob_id.clone()], "{got}");
    let since = next_batch(&got);

    // Alice leaves the rooms she shares with Carol: both are told of the other.
    for room in [&two, &three] {
        assert_eq!(alice.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await.0, 200);
    }
    let got = sync(&alice, &format!("since={since}")).await;
    assert_eq!(left(&got), vec![carol_id.clone()], "{got}");
    // Carol's token is older: she also shared room two with Bob until his kick.
    let got = sync(&carol, &format!("since={carol_since}")).await;
    assert_eq!(left(&got), vec!["@alice:localhost".to_owned(), bob_id.clone()], "{got}");
}

/// `device_lists.changed` names the users who came to share a room with the syncing user
/// (the spec's "or who now share an encrypted room with the client"): found by matrix-nio,
/// whose users never saw a new member named there unless that member had uploaded keys in the
/// same window. Both sides are told; a stranger is not; the next sync has nothing.
async fn device_lists_changed_names_users_who_newly_share_a_room(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, _) = user(&server, "carol").await;
    let room = create(&alice, json!({"invite": [&bob_id]})).await;
    // Carol shares a room with bob only after this test's window: none now.
    let since = next_batch(&sync(&alice, "").await);
    let bob_since = next_batch(&sync(&bob, "").await);
    let carol_since = next_batch(&sync(&carol, "").await);

    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let got = sync(&alice, &format!("since={since}")).await;
    assert_eq!(changed(&got), vec![bob_id.clone()], "{got}");
    let got_bob = sync(&bob, &format!("since={bob_since}")).await;
    assert_eq!(changed(&got_bob), vec![alice_id.clone()], "{got_bob}");
    let got_carol = sync(&carol, &format!("since={carol_since}&timeout=0")).await;
    assert!(changed(&got_carol).is_empty(), "{got_carol}");
    // /keys/changes says the same.
    let (status, changes) =
        alice.get(&format!("{V3}/keys/changes?from={since}&to={}", next_batch(&got))).await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["changed"], json!([bob_id.clone()]));

    // Nothing new since: not named again.
    let (_, sent) = crate::rooms::send(&alice, &room, "m1", "hello").await;
    assert!(sent["event_id"].is_string(), "{sent}");
    let again = sync(&alice, &format!("since={}", next_batch(&got))).await;
    assert!(changed(&again).is_empty(), "{again}");

    // Bob leaves: left, not changed.
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await.0, 200);
    let gone = sync(&alice, &format!("since={}", next_batch(&again))).await;
    assert!(changed(&gone).is_empty(), "{gone}");
    assert_eq!(left(&gone), vec![bob_id], "{gone}");
}

/// A sync token older than the server's process (the joins in between are not remembered)
/// gets every user sharing a room: a client asks for keys it may have, never misses one.
async fn device_lists_changed_after_a_restart_names_everyone_sharing_a_room(
    backend: crate::Backend,
) {
    use matrix_homeserver::testing::TestHomeserver;
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let first = TestHomeserver::start_on(TestHomeserver::config(), storage.clone()).await;
    let alice_session = first.register_user("alice", "pw").await;
    let bob_session = first.register_user("bob", "pw").await;
    let carol_session = first.register_user("carol", "pw").await;
    let bob_id = bob_session.user_id.to_string();
    let alice = Client::new(&first).with_token(&alice_session.access_token);
    let bob = Client::new(&first).with_token(&bob_session.access_token);
    let room = create(&alice, json!({"invite": [&bob_id]})).await;
    let since = next_batch(&sync(&alice, "").await);
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    drop(first);

    let second = TestHomeserver::start_on(TestHomeserver::config(), storage).await;
    let alice = Client::new(&second).with_token(&alice_session.access_token);
    let got = sync(&alice, &format!("since={since}")).await;
    assert_eq!(changed(&got), vec![bob_id], "{got}");
    // Carol shares no room with alice: never named.
    assert!(!changed(&got).contains(&carol_session.user_id.to_string()), "{got}");
    // A token of the new process: nothing.
    let again = sync(&alice, &format!("since={}&timeout=0", next_batch(&got))).await;
    assert!(changed(&again).is_empty(), "{again}");
}

/// Claims, sends and fallback keys are bounded: a stranger cannot drain every device's
/// one-time keys in one request, name unbounded users in one `sendToDevice`, or grow a
/// device's fallback keys with made-up algorithms.
async fn e2ee_requests_are_bounded_for_strangers(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.max_users_per_key_query = 3).await
    else {
        return;
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let (mallory, _) = user(&server, "mallory").await;
    let device = upload_keys(&alice, &alice_id, "a").await;
    let devices: serde_json::Map<String, Value> =
        (0..4).map(|i| (format!("D{i}"), json!("signed_curve25519"))).collect();
    let body = json!({"one_time_keys": {alice_id.clone(): devices}});
    let (status, answer) = mallory.post(&format!("{V3}/keys/claim"), &body).await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");
    // Alice's key was not taken by the refused claim.
    assert!(claim(&mallory, &alice_id, &device).await.is_object());

    let messages: serde_json::Map<String, Value> =
        (0..4).map(|i| (format!("@u{i}:localhost"), json!({"*": {}}))).collect();
    let (status, answer) = mallory
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/sendToDevice/m.x/t1"),
            Some(&json!({"messages": messages})),
        )
        .await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");

    let fallback: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("alg{i}:k"), json!({"key": "k"}))).collect();
    let (status, answer) =
        mallory.post(&format!("{V3}/keys/upload"), &json!({"fallback_keys": fallback})).await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");
}

/// A receipt for the thread `main` (what thread-aware clients send) clears unread counts.
async fn a_main_thread_receipt_clears_unread_counts(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let (_, sent) = crate::rooms::send(&alice, &room, "m1", "hello").await;
    let event = sent["event_id"].as_str().expect("an id");
    let unread = |body: &Value| body["rooms"]["join"][&room]["unread_notifications"].clone();
    assert_eq!(unread(&sync(&bob, "").await)["notification_count"], 1);
    let path = format!("{V3}/rooms/{room}/receipt/m.read/{event}");
    assert_eq!(bob.post(&path, &json!({"thread_id": "main"})).await.0, 200);
    assert_eq!(unread(&sync(&bob, "").await)["notification_count"], 0);
}

crate::on_every_backend!(
    finding_39_device_lists_left_names_users_no_longer_sharing_a_room,
    device_lists_changed_names_users_who_newly_share_a_room,
    device_lists_changed_after_a_restart_names_everyone_sharing_a_room,
    finding_17_logout_password_change_and_deactivation_remove_device_keys,
    finding_18_one_time_keys_per_device_are_bounded,
    finding_19_key_queries_read_only_the_users_named_and_are_bounded,
    finding_29_device_list_changes_reach_only_users_sharing_a_room,
    finding_30_claimed_fallback_keys_are_marked_used,
    e2ee_requests_are_bounded_for_strangers,
    a_main_thread_receipt_clears_unread_counts,
);
