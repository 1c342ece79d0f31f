//! EDUs across our server and Synapse: typing notices, read receipts and presence both ways,
//! in a room of ours a Synapse user joined.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Session, encode};
use crate::ours::OurServer;
use crate::synapse::Synapse;

const PASSWORD: &str = "a long enough password";
const WITHIN: Duration = Duration::from_secs(30);

/// The users typing in `room` according to a sync answer's ephemeral events, if it has any.
fn typing(answer: &Value, room: &str) -> Option<Vec<String>> {
    let events = answer["rooms"]["join"][room]["ephemeral"]["events"].as_array()?;
    let typing = events.iter().find(|e| e["type"] == "m.typing")?;
    let users = typing["content"]["user_ids"].as_array()?;
    Some(users.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
}

/// Whether a sync answer holds a public read receipt of `user` on `event`.
fn has_receipt(answer: &Value, room: &str, event: &str, user: &str) -> bool {
    answer["rooms"]["join"][room]["ephemeral"]["events"].as_array().is_some_and(|events| {
        events
            .iter()
            .any(|e| e["type"] == "m.receipt" && e["content"][event]["m.read"][user].is_object())
    })
}

async fn set_typing(session: &Session, room: &str, on: bool) {
    let path = format!("/rooms/{}/typing/{}", encode(room), encode(&session.user_id));
    let (status, answer) = session.put(&path, &json!({"typing": on, "timeout": 25000})).await;
    assert_eq!(status, 200, "{answer}");
}

async fn read(session: &Session, room: &str, event: &str) {
    let path = format!("/rooms/{}/receipt/m.read/{}", encode(room), encode(event));
    let (status, answer) = session.post(&path, &json!({})).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn typing_and_receipts_go_both_ways_with_synapse() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    let alias_name = crate::unique("edus");
    let room =
        mine.create_room(&json!({"preset": "public_chat", "room_alias_name": alias_name})).await;
    let alias = format!("#{alias_name}:{}", ours.server_name);
    assert_eq!(theirs.join(&alias, &[]).await, room, "{}", ours.log_text());
    let sent = mine.send_text(&room, "read me").await;
    theirs.wait_for_event(&room, WITHIN, |e| e["event_id"] == sent).await;
    let answer = theirs.send_text(&room, "read me too").await;
    mine.wait_for_event(&room, WITHIN, |e| e["event_id"] == answer).await;

    // Typing: ours to Synapse, Synapse to ours.
    set_typing(&mine, &room, true).await;
    let me = mine.user_id.clone();
    theirs.sync_until(WITHIN, |a| typing(a, &room).filter(|u| u.contains(&me)).map(|_| ())).await;
    set_typing(&theirs, &room, true).await;
    let them = theirs.user_id.clone();
    mine.sync_until(WITHIN, |a| typing(a, &room).filter(|u| u.contains(&them)).map(|_| ())).await;
    set_typing(&mine, &room, false).await;
    theirs.sync_until(WITHIN, |a| typing(a, &room).filter(|u| !u.contains(&me)).map(|_| ())).await;

    // Receipts: each reads the other's message.
    read(&theirs, &room, &sent).await;
    mine.sync_until(WITHIN, |a| has_receipt(a, &room, &sent, &them).then_some(())).await;
    read(&mine, &room, &answer).await;
    theirs.sync_until(WITHIN, |a| has_receipt(a, &room, &answer, &me).then_some(())).await;
}

/// The latest presence content of `user` in a sync answer, if it has one.
fn presence_of(answer: &Value, user: &str) -> Option<Value> {
    let events = answer["presence"]["events"].as_array()?;
    let event = events.iter().rev().find(|e| e["type"] == "m.presence" && e["sender"] == user)?;
    Some(event["content"].clone())
}

async fn set_presence(session: &Session, presence: &str, status: &str) {
    let path = format!("/presence/{}/status", encode(&session.user_id));
    let body = json!({"presence": presence, "status_msg": status});
    let (status, answer) = session.put(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn presence_goes_both_ways_with_synapse() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    let alias_name = crate::unique("presence");
    let room =
        mine.create_room(&json!({"preset": "public_chat", "room_alias_name": alias_name})).await;
    let alias = format!("#{alias_name}:{}", ours.server_name);
    assert_eq!(theirs.join(&alias, &[]).await, room, "{}", ours.log_text());
    let sent = mine.send_text(&room, "hello").await;
    theirs.wait_for_event(&room, WITHIN, |e| e["event_id"] == sent).await;

    // Ours to Synapse: a status message set on ours reaches the Synapse user's sync.
    set_presence(&mine, "online", "from ours").await;
    let me = mine.user_id.clone();
    let seen = theirs
        .sync_until(WITHIN, |a| presence_of(a, &me).filter(|c| c["status_msg"] == "from ours"))
        .await;
    assert_eq!(seen["presence"], "online", "{seen}");
    let path = format!("/presence/{}/status", encode(&me));
    let (status, read) = theirs.get(&path).await;
    assert_eq!((status, &read["status_msg"]), (200, &json!("from ours")), "{read}");

    // Synapse to ours.
    set_presence(&theirs, "unavailable", "from synapse").await;
    let them = theirs.user_id.clone();
    let seen = mine
        .sync_until(WITHIN, |a| presence_of(a, &them).filter(|c| c["status_msg"] == "from synapse"))
        .await;
    assert_eq!(seen["presence"], "unavailable", "{seen}");
    let path = format!("/presence/{}/status", encode(&them));
    let (status, read) = mine.get(&path).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        (&read["presence"], &read["status_msg"]),
        (&json!("unavailable"), &json!("from synapse"))
    );
}

/// Uploads device keys for the session's device; answers them.
async fn upload_keys(session: &Session) -> Value {
    let device = session.device_id.as_str();
    let keys = json!({
        "user_id": session.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{device}"): "Y3VydmU", format!("ed25519:{device}"): "ZWQyNTUxOQ"},
        "signatures": {}
    });
    let (status, answer) = session.post("/keys/upload", &json!({"device_keys": keys})).await;
    assert_eq!(status, 200, "{answer}");
    keys
}

/// Queries `user`'s device keys until the answer has `device` (a server may answer from a
/// cache that fills after a device-list update); answers them.
async fn query_until(session: &Session, user: &str, device: &str) -> Value {
    let deadline = std::time::Instant::now() + WITHIN;
    let mut last = Value::Null;
    while std::time::Instant::now() < deadline {
        let (status, answer) =
            session.post("/keys/query", &json!({"device_keys": {user: []}})).await;
        assert_eq!(status, 200, "{answer}");
        if answer["device_keys"][user][device].is_object() {
            return answer["device_keys"][user][device].clone();
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{user}'s device {device} never in {}'s key query: {last}", session.user_id)
}

#[tokio::test]
async fn keys_and_to_device_messages_go_both_ways_with_synapse() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let theirs = synapse.register(&crate::unique("syn"), PASSWORD, false).await;
    let mine = Session::register_open(&ours.client_url, &crate::unique("our"), PASSWORD).await;
    let alias_name = crate::unique("keys");
    let room =
        mine.create_room(&json!({"preset": "public_chat", "room_alias_name": alias_name})).await;
    let alias = format!("#{alias_name}:{}", ours.server_name);
    assert_eq!(theirs.join(&alias, &[]).await, room, "{}", ours.log_text());

    // Keys: each side's client finds the other's device keys through its server.
    let my_keys = upload_keys(&mine).await;
    let their_keys = upload_keys(&theirs).await;
    let seen = query_until(&theirs, &mine.user_id, &mine.device_id).await;
    assert_eq!(seen["keys"], my_keys["keys"], "{}", ours.log_text());
    let seen = query_until(&mine, &theirs.user_id, &theirs.device_id).await;
    assert_eq!(seen["keys"], their_keys["keys"]);

    // To-device messages both ways.
    let message = |to: &Session, txn: &str| {
        let path = format!("/sendToDevice/m.test.ping/{txn}");
        let body = json!({"messages": {to.user_id.as_str(): {to.device_id.as_str(): {"n": txn}}}});
        (path, body)
    };
    let received = |answer: &Value, sender: &str, txn: &str| {
        answer["to_device"]["events"].as_array().and_then(|events| {
            events.iter().find(|e| e["sender"] == sender && e["content"]["n"] == txn).map(|_| ())
        })
    };
    let txn = crate::unique("ping");
    let (path, body) = message(&theirs, &txn);
    let (status, answer) = mine.put(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    let me = mine.user_id.clone();
    theirs.sync_until(WITHIN, |a| received(a, &me, &txn)).await;
    let txn = crate::unique("pong");
    let (path, body) = message(&mine, &txn);
    let (status, answer) = theirs.put(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    let them = theirs.user_id.clone();
    mine.sync_until(WITHIN, |a| received(a, &them, &txn)).await;
}
