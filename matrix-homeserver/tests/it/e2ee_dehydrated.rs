//! Dehydrated devices (MSC3814, `/unstable/org.matrix.msc3814.v1/dehydrated_device`): upload,
//! read, replace and delete as matrix-rust-sdk and Element do; the device is one of the
//! user's (key queries, claims, to-device messages) without an access token; its messages are
//! read in batches whose tokens delete what came before; and the refusals: other users,
//! devices in use, malformed or oversized uploads, bad tokens.

use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";
const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

fn device_keys(user: &str, device: &str) -> Value {
    json!({"user_id": user, "device_id": device, "dehydrated": true,
           "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
           "keys": {format!("curve25519:{device}"): device, format!("ed25519:{device}"): "ed"},
           "signatures": {user: {format!("ed25519:{device}"): "sig"}}})
}

/// A `PUT /dehydrated_device` body for `device` of `user`, with two one-time keys and a
/// fallback key.
fn upload(user: &str, device: &str, mark: &str) -> Value {
    json!({
        "device_id": device,
        "device_data": {"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": mark},
        "initial_device_display_name": "Backup device",
        "device_keys": device_keys(user, device),
        "one_time_keys": {
            "signed_curve25519:AAAAAQ": {"key": format!("{mark}-otk1"), "signatures": {}},
            "signed_curve25519:AAAAAg": {"key": format!("{mark}-otk2"), "signatures": {}},
        },
        "fallback_keys": {
            "signed_curve25519:AAAAAw": {"key": format!("{mark}-fb"), "fallback": true,
                                          "signatures": {}},
        },
    })
}

fn remove(body: &mut Value, key: &str) {
    if let Some(object) = body.as_object_mut() {
        object.remove(key);
    }
}

async fn put(client: &Client, body: &Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, DEHYDRATED, Some(body)).await
}

async fn events(client: &Client, device: &str, query: &str, body: Value) -> (u16, Value) {
    client.post(&format!("{DEHYDRATED}/{device}/events{query}"), &body).await
}

/// The devices of `user` in a key query by `client`.
async fn queried(client: &Client, user: &str) -> Value {
    let (status, body) =
        client.post(&format!("{V3}/keys/query"), &json!({"device_keys": {user: []}})).await;
    assert_eq!(status, 200, "{body}");
    check("keys.yaml", "/keys/query", "post", 200, &body);
    body["device_keys"][user].clone()
}

async fn send_to_device(client: &Client, txn: &str, messages: Value) {
    let path = format!("{V3}/sendToDevice/m.room_key/{txn}");
    let (status, body) =
        client.send(reqwest::Method::PUT, &path, Some(&json!({"messages": messages}))).await;
    assert_eq!(status, 200, "{body}");
}

async fn sync(client: &Client, query: &str) -> Value {
    let (status, body) = client.get(&format!("{V3}/sync?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Element's round: advertised; none at first; uploaded with its keys; read back; listed
/// in key queries and `/devices`, claimed from, sent to; replaced (the old device gone with
/// its keys and messages); deleted. Users sharing a room hear of each change.
async fn dehydrated_device_put_get_replace_delete(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (status, versions) = Client::new(&server).get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    assert_eq!(versions["unstable_features"]["org.matrix.msc3814"], true, "{versions}");

    let alice_session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&alice_session.access_token);
    let alice_id = alice_session.user_id.to_string();
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"invite": [bob_id]})).await;
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200);
    let since = sync(&bob, "timeout=0").await["next_batch"].as_str().expect("a token").to_owned();

    let (status, body) = alice.get(DEHYDRATED).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let first = upload(&alice_id, "DEHYDRATED1", "one");
    let (status, body) = put(&alice, &first).await;
    assert_eq!((status, &body), (200, &json!({"device_id": "DEHYDRATED1"})));
    let (status, body) = alice.get(DEHYDRATED).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"device_id": "DEHYDRATED1", "device_data": first["device_data"]}));

    // A device of Alice's like any other, without a token.
    let devices = queried(&bob, &alice_id).await;
    assert_eq!(devices["DEHYDRATED1"], device_keys(&alice_id, "DEHYDRATED1"), "{devices}");
    let (status, listed) = alice.get(&format!("{V3}/devices/DEHYDRATED1")).await;
    assert_eq!((status, &listed["display_name"]), (200, &json!("Backup device")), "{listed}");
    let changed = sync(&bob, &format!("since={since}&timeout=0")).await;
    assert!(
        changed["device_lists"]["changed"].as_array().expect("changed").contains(&json!(alice_id)),
        "{changed}"
    );
    let claim = json!({"one_time_keys": {&alice_id: {"DEHYDRATED1": "signed_curve25519"}}});
    let (status, claimed) = bob.post(&format!("{V3}/keys/claim"), &claim).await;
    assert_eq!(status, 200, "{claimed}");
    let key = &claimed["one_time_keys"][&alice_id]["DEHYDRATED1"]["signed_curve25519:AAAAAQ"];
    assert_eq!(key["key"], "one-otk1", "{claimed}");

    // `*` reaches it and the live device.
    let initial = sync(&alice, "timeout=0").await;
    send_to_device(&bob, "t1", json!({&alice_id: {"*": {"session": "s1"}}})).await;
    let (status, batch) = events(&alice, "DEHYDRATED1", "", json!({})).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        batch["events"],
        json!([{"sender": bob_id, "type": "m.room_key", "content": {"session": "s1"}}])
    );
    let since_alice = initial["next_batch"].as_str().expect("a token");
    let live_sync = sync(&alice, &format!("since={since_alice}&timeout=0")).await;
    assert_eq!(live_sync["to_device"]["events"][0]["content"]["session"], "s1", "{live_sync}");

    // Replaced: the old device, its keys and its messages are gone.
    let since = changed["next_batch"].as_str().expect("a token").to_owned();
    let second = upload(&alice_id, "DEHYDRATED2", "two");
    let (status, body) = put(&alice, &second).await;
    assert_eq!((status, &body), (200, &json!({"device_id": "DEHYDRATED2"})));
    let (_, body) = alice.get(DEHYDRATED).await;
    assert_eq!(body["device_id"], "DEHYDRATED2");
    assert_eq!(body["device_data"]["device_pickle"], "two");
    let devices = queried(&bob, &alice_id).await;
    assert!(devices.get("DEHYDRATED1").is_none(), "{devices}");
    assert!(devices.get("DEHYDRATED2").is_some(), "{devices}");
    let (status, _) = alice.get(&format!("{V3}/devices/DEHYDRATED1")).await;
    assert_eq!(status, 404);
    let (status, body) = events(&alice, "DEHYDRATED1", "", json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let head = server.storage().stream_position().await.expect("reads");
    let zero = matrix_storage::StreamPos(0);
    let old = server.storage().to_device(&alice_id, "DEHYDRATED1", zero, head, 10).await;
    assert!(old.expect("reads").is_empty(), "the old device's messages went with it");
    let (_, batch) = events(&alice, "DEHYDRATED2", "", json!({})).await;
    assert_eq!(batch["events"], json!([]));
    let changed = sync(&bob, &format!("since={since}&timeout=0")).await;
    assert!(
        changed["device_lists"]["changed"].as_array().expect("changed").contains(&json!(alice_id)),
        "{changed}"
    );

    // The same device id again (a retry): replaced by itself, with new data and keys.
    let again = upload(&alice_id, "DEHYDRATED2", "three");
    let (status, _) = put(&alice, &again).await;
    assert_eq!(status, 200);
    let (_, body) = alice.get(DEHYDRATED).await;
    assert_eq!(body["device_data"]["device_pickle"], "three");
    let (_, claimed) = bob
        .post(
            &format!("{V3}/keys/claim"),
            &json!({"one_time_keys": {&alice_id: {"DEHYDRATED2": "signed_curve25519"}}}),
        )
        .await;
    let key = &claimed["one_time_keys"][&alice_id]["DEHYDRATED2"]["signed_curve25519:AAAAAQ"];
    assert_eq!(key["key"], "three-otk1", "{claimed}");

    // Deleted.
    let (status, body) = alice.send(reqwest::Method::DELETE, DEHYDRATED, None).await;
    assert_eq!((status, &body), (200, &json!({"device_id": "DEHYDRATED2"})));
    let (status, body) = alice.get(DEHYDRATED).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = alice.send(reqwest::Method::DELETE, DEHYDRATED, None).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let devices = queried(&bob, &alice_id).await;
    assert!(devices.get("DEHYDRATED2").is_none(), "{devices}");
    assert!(devices.as_object().is_none_or(|d| d.is_empty()), "{devices}");

    // Deleting the device through /devices deletes the record too.
    let (status, _) = put(&alice, &upload(&alice_id, "DEHYDRATED3", "four")).await;
    assert_eq!(status, 200);
    let path = format!("{V3}/devices/DEHYDRATED3");
    let (status, body) = alice.send(reqwest::Method::DELETE, &path, Some(&json!({}))).await;
    assert_eq!(status, 401, "{body}");
    let auth = json!({"auth": {"type": "m.login.password", "session": body["session"],
                               "password": "pw",
                               "identifier": {"type": "m.id.user", "user": "alice"}}});
    let (status, body) = alice.send(reqwest::Method::DELETE, &path, Some(&auth)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = alice.get(DEHYDRATED).await;
    assert_eq!(status, 404);
}

/// Messages are read in batches: each `next_batch` given back deletes the messages of the
/// batches before it (not the ones after); the last batch's token gives an empty batch.
async fn dehydrated_device_events_are_paged_and_deleted(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (status, _) = put(&alice, &upload(&alice_id, "DEHYD", "d")).await;
    assert_eq!(status, 200);
    for n in 1..=5 {
        send_to_device(&bob, &format!("t{n}"), json!({&alice_id: {"DEHYD": {"n": n}}})).await;
    }
    let numbers = |batch: &Value| -> Vec<i64> {
        batch["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["content"]["n"].as_i64().expect("n"))
            .collect()
    };
    let token = |batch: &Value| batch["next_batch"].as_str().expect("a token").to_owned();

    let (status, first) = events(&alice, "DEHYD", "?limit=2", json!({})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(numbers(&first), [1, 2]);
    let (_, second) =
        events(&alice, "DEHYD", "?limit=2", json!({"next_batch": token(&first)})).await;
    assert_eq!(numbers(&second), [3, 4]);
    // The first batch is deleted; the second is not yet (the client may not have it).
    let (_, from_start) = events(&alice, "DEHYD", "?limit=10", json!({})).await;
    assert_eq!(numbers(&from_start), [3, 4, 5]);
    let (_, third) = events(&alice, "DEHYD", "", json!({"next_batch": token(&second)})).await;
    assert_eq!(numbers(&third), [5]);
    let (_, last) = events(&alice, "DEHYD", "", json!({"next_batch": token(&third)})).await;
    assert_eq!(numbers(&last), Vec::<i64>::new(), "{last}");
    assert!(last["next_batch"].is_string(), "{last}");
    let (_, from_start) = events(&alice, "DEHYD", "", json!({})).await;
    assert_eq!(numbers(&from_start), Vec::<i64>::new(), "all delivered and deleted");
    let head = server.storage().stream_position().await.expect("reads");
    let left =
        server.storage().to_device(&alice_id, "DEHYD", matrix_storage::StreamPos(0), head, 10);
    assert!(left.await.expect("reads").is_empty());
    // A message after the last token is the next batch.
    send_to_device(&bob, "t6", json!({&alice_id: {"DEHYD": {"n": 6}}})).await;
    let (_, next) = events(&alice, "DEHYD", "", json!({"next_batch": token(&last)})).await;
    assert_eq!(numbers(&next), [6]);
}

/// Only the user's own dehydrated device is read; uploads are checked whole before anything
/// is stored (keys of this user and device, a device id not in use, bounds on every part).
async fn dehydrated_device_refusals(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let alice_session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&alice_session.access_token);
    let alice_id = alice_session.user_id.to_string();
    let live = alice_session.device_id.to_string();
    let (bob, bob_id) = user(&server, "bob").await;
    let (status, _) = put(&alice, &upload(&alice_id, "DEHYD", "d")).await;
    assert_eq!(status, 200);
    send_to_device(&bob, "t1", json!({&alice_id: {"DEHYD": {"secret": "room key"}}})).await;

    // A stranger reads nothing of Alice's: not her messages, not her device's data.
    let (status, body) = events(&bob, "DEHYD", "", json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = bob.get(DEHYDRATED).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = Client::new(&server).get(DEHYDRATED).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    // Nor does Alice read her live device's messages this way.
    let (status, body) = events(&alice, &live, "", json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // Bob cannot take Alice's device id for his own, nor upload keys in her name.
    let (status, body) = put(&bob, &upload(&alice_id, "BOBS", "b")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // Tokens that were never handed out.
    for token in ["abc", "-1", "99999999999", ""] {
        let (status, body) = events(&alice, "DEHYD", "", json!({"next_batch": token})).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{token}: {body}");
    }
    let (status, body) = events(&alice, "DEHYD", "?limit=x", json!({})).await;
    assert_eq!(status, 400, "{body}");

    let big = "x".repeat(70 * 1024);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = upload(&alice_id, "NEW", "n");
        change(&mut body);
        body
    };
    let too_many: serde_json::Map<String, Value> =
        (0..201).map(|k| (format!("signed_curve25519:K{k}"), json!({"key": "k"}))).collect();
    let fallbacks: serde_json::Map<String, Value> =
        (0..9).map(|k| (format!("alg{k}:F"), json!({"key": "k"}))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no device keys", with(&|b| remove(b, "device_keys")), "M_MISSING_PARAM"),
        ("no device id", with(&|b| remove(b, "device_id")), "M_BAD_JSON"),
        ("device data not an object", with(&|b| b["device_data"] = json!("x")), "M_BAD_JSON"),
        (
            "device data without algorithm",
            with(&|b| b["device_data"] = json!({"a": 1})),
            "M_BAD_JSON",
        ),
        ("keys not an object", with(&|b| b["device_keys"] = json!([1])), "M_BAD_JSON"),
        (
            "keys of another user",
            with(&|b| b["device_keys"]["user_id"] = json!(bob_id)),
            "M_INVALID_PARAM",
        ),
        (
            "keys of another device",
            with(&|b| b["device_keys"]["device_id"] = json!("OTHER")),
            "M_INVALID_PARAM",
        ),
        ("the live device's id", upload(&alice_id, &live, "l"), "M_INVALID_PARAM"),
        ("an empty device id", with(&|b| b["device_id"] = json!("")), "M_INVALID_PARAM"),
        ("a control character", with(&|b| b["device_id"] = json!("A\nB")), "M_INVALID_PARAM"),
        (
            "a long device id",
            with(&|b| {
                let id = "D".repeat(300);
                b["device_id"] = json!(id);
                b["device_keys"]["device_id"] = json!(id);
            }),
            "M_TOO_LARGE",
        ),
        (
            "large device data",
            with(&|b| b["device_data"]["device_pickle"] = json!(big)),
            "M_TOO_LARGE",
        ),
        (
            "a long display name",
            with(&|b| b["initial_device_display_name"] = json!("n".repeat(300))),
            "M_TOO_LARGE",
        ),
        (
            "too many one-time keys",
            with(&|b| b["one_time_keys"] = Value::Object(too_many.clone())),
            "M_TOO_LARGE",
        ),
        (
            "too many fallback algorithms",
            with(&|b| b["fallback_keys"] = Value::Object(fallbacks.clone())),
            "M_INVALID_PARAM",
        ),
        ("one-time keys not an object", with(&|b| b["one_time_keys"] = json!([])), "M_BAD_JSON"),
    ];
    for (what, body, code) in cases {
        let (status, answer) = put(&alice, &body).await;
        assert_eq!((status, errcode(&answer)), (400, code), "{what}: {answer}");
    }
    let (status, body) = alice.post_raw(DEHYDRATED, b"{not json".to_vec()).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = alice.send(reqwest::Method::PUT, DEHYDRATED, None).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "an empty body: {body}");

    // Nothing of the refused uploads was stored; the live device and the dehydrated one are
    // as they were.
    let (_, body) = alice.get(DEHYDRATED).await;
    assert_eq!(body["device_id"], "DEHYD");
    let (status, _) = alice.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "the live device keeps its token");
    let devices = queried(&bob, &alice_id).await;
    let mut ids: Vec<&String> = devices.as_object().expect("devices").keys().collect();
    ids.sort();
    assert_eq!(ids, ["DEHYD"], "{devices}");
    let (_, batch) = events(&alice, "DEHYD", "", json!({})).await;
    assert_eq!(batch["events"][0]["content"]["secret"], "room key", "{batch}");
}

/// A dehydrated device's queue fills while no client reads it: a send past its bounds still
/// reaches the user's other devices (the dehydrated device's copy is dropped), where a live
/// device's full queue refuses the send.
async fn a_full_dehydrated_queue_drops_its_messages_not_the_send(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.max_to_device_per_sender = 2).await
    else {
        return;
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (status, _) = put(&alice, &upload(&alice_id, "DEHYD", "d")).await;
    assert_eq!(status, 200);
    let mut since = sync(&alice, "timeout=0").await["next_batch"].as_str().expect("t").to_owned();
    for n in 1..=4 {
        send_to_device(&bob, &format!("t{n}"), json!({&alice_id: {"*": {"n": n}}})).await;
        let body = sync(&alice, &format!("since={since}&timeout=0")).await;
        assert_eq!(body["to_device"]["events"][0]["content"]["n"], n, "{body}");
        since = body["next_batch"].as_str().expect("t").to_owned();
    }
    let (_, batch) = events(&alice, "DEHYD", "", json!({})).await;
    let got: Vec<&Value> =
        batch["events"].as_array().expect("events").iter().map(|e| &e["content"]["n"]).collect();
    assert_eq!(got, [&json!(1), &json!(2)], "{batch}");

    // A live device that does not sync refuses past its bound, as before.
    let other = server.homeserver().login("alice", "pw").await.expect("logs in");
    let device = other.device_id.to_string();
    for n in 5..=6 {
        send_to_device(&bob, &format!("t{n}"), json!({&alice_id: {&device: {"n": n}}})).await;
    }
    let path = format!("{V3}/sendToDevice/m.room_key/t7");
    let messages = json!({"messages": {&alice_id: {&device: {"n": 7}}}});
    let (status, body) = bob.send(reqwest::Method::PUT, &path, Some(&messages)).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
}

crate::on_every_backend!(
    dehydrated_device_put_get_replace_delete,
    dehydrated_device_events_are_paged_and_deleted,
    dehydrated_device_refusals,
    a_full_dehydrated_queue_drops_its_messages_not_the_send,
);
