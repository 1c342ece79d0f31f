//! The security review's ephemeral findings, attacked over HTTP as a stranger would: wake-ups
//! (#6), to-device queues (#5, #25), receipts (#7, #36) and mentions (#20).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// Logs `name` (password `pw`) in on a new device; answers the client and the device id.
pub(crate) async fn login(server: &crate::Server, name: &str) -> (Client, String) {
    let body = json!({"type": "m.login.password", "password": "pw",
                      "identifier": {"type": "m.id.user", "user": name}});
    let (status, session) = Client::new(server).post(&format!("{V3}/login"), &body).await;
    assert_eq!(status, 200, "{session}");
    let token = session["access_token"].as_str().expect("a token");
    let device = session["device_id"].as_str().expect("a device").to_owned();
    (Client::new(server).with_token(token), device)
}

pub(crate) async fn sync(client: &Client, query: &str) -> Value {
    let (status, body) = client.get(&format!("{V3}/sync?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

pub(crate) fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("a token").to_owned()
}

/// The device id behind a client.
pub(crate) async fn device_of(client: &Client) -> String {
    let (_, me) = client.get(&format!("{V3}/account/whoami")).await;
    me["device_id"].as_str().expect("a device").to_owned()
}

async fn put(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, &format!("{V3}{path}"), Some(body)).await
}

async fn send_to_device(client: &Client, txn: &str, messages: Value) -> (u16, Value) {
    put(client, &format!("/sendToDevice/m.test/{txn}"), &json!({ "messages": messages })).await
}

fn events(body: &Value, path: &[&str]) -> Vec<Value> {
    let mut at = body;
    for key in path {
        at = &at[*key];
    }
    at.as_array().cloned().unwrap_or_default()
}

async fn finding_06_wake_ups_reach_whom_a_change_concerns_and_syncs_per_device_are_capped(
    backend: crate::Backend,
) {
    let Some(server) = crate::start_changed(backend, |c| c.limits.max_syncs_per_device = 2).await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let room = create(&alice, json!({"invite": [carol_id]})).await;
    assert_eq!(carol.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);

    // Bob shares no room yet: an invite (he is the membership event's target) wakes him.
    let since = next_batch(&sync(&bob, "").await);
    let started = Instant::now();
    let poll = {
        let bob = bob.clone();
        tokio::spawn(async move { sync(&bob, &format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let invite = json!({"user_id": bob_id});
    assert_eq!(alice.post(&format!("{V3}/rooms/{room}/invite"), &invite).await.0, 200);
    let woken = poll.await.expect("the poll");
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the invite");
    assert!(woken["rooms"]["invite"].get(&room).is_some(), "{woken}");

    // Typing wakes the joined members.
    let since = next_batch(&sync(&carol, "").await);
    let started = Instant::now();
    let poll = {
        let carol = carol.clone();
        tokio::spawn(async move { sync(&carol, &format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let typing = json!({"typing": true, "timeout": 5000});
    let me = "@alice:localhost";
    assert_eq!(put(&alice, &format!("/rooms/{room}/typing/{me}"), &typing).await.0, 200);
    let woken = poll.await.expect("the poll");
    assert!(started.elapsed() < Duration::from_secs(5), "woken by typing");
    let ephemeral = events(&woken, &["rooms", "join", &room, "ephemeral", "events"]);
    assert!(ephemeral.iter().any(|e| e["type"] == "m.typing"), "{woken}");

    // Refreshing a typing notice is no news: a flood of them wakes nobody.
    let since = next_batch(&woken);
    let started = Instant::now();
    let poll = {
        let carol = carol.clone();
        tokio::spawn(async move { sync(&carol, &format!("since={since}&timeout=1000")).await })
    };
    for _ in 0..50 {
        assert_eq!(put(&alice, &format!("/rooms/{room}/typing/{me}"), &typing).await.0, 200);
    }
    let idle = poll.await.expect("the poll");
    assert!(started.elapsed() >= Duration::from_millis(950), "not woken: {idle}");
    assert!(idle["rooms"]["join"].get(&room).is_none(), "{idle}");

    // A kick wakes the kicked user, who is no longer a member.
    let since = next_batch(&sync(&carol, "").await);
    let started = Instant::now();
    let poll = {
        let carol = carol.clone();
        tokio::spawn(async move { sync(&carol, &format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kick = json!({"user_id": "@carol:localhost"});
    assert_eq!(alice.post(&format!("{V3}/rooms/{room}/kick"), &kick).await.0, 200);
    let woken = poll.await.expect("the poll");
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the kick");
    assert!(woken["rooms"]["leave"].get(&room).is_some(), "{woken}");

    // A stranger parks long-polls on one device: past the cap, 429; other devices go on.
    let (mallory, _) = user(&server, "mallory").await;
    let since = next_batch(&sync(&mallory, "").await);
    let mut parked = Vec::new();
    for _ in 0..2 {
        let mallory = mallory.clone();
        let query = format!("{V3}/sync?since={since}&timeout=1500");
        parked.push(tokio::spawn(async move { mallory.get(&query).await.0 }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = mallory.get(&format!("{V3}/sync?since={since}&timeout=1500")).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    let (other_device, _) = login(&server, "mallory").await;
    let (status, _) = other_device.get(&format!("{V3}/sync?since={since}&timeout=0")).await;
    assert_eq!(status, 200, "the cap is per device");
    for poll in parked {
        assert_eq!(poll.await.expect("a parked poll"), 200);
    }
    // The finished polls gave their places back.
    let (status, _) = mallory.get(&format!("{V3}/sync?since={since}&timeout=0")).await;
    assert_eq!(status, 200);
}

async fn finding_05_to_device_to_unknown_devices_is_dropped_and_queues_are_bounded(
    backend: crate::Backend,
) {
    let Some(server) = crate::start_changed(backend, |c| {
        c.limits.max_to_device_per_device = 5;
        c.limits.max_to_device_per_sender = 3;
        c.limits.max_to_device_bytes_per_device = 64 * 1024;
        c.limits.max_to_device_bytes_per_sender = 8 * 1024;
    })
    .await
    else {
        return;
    };
    let (mallory, _) = user(&server, "mallory").await;
    let (carol, _) = user(&server, "carol").await;
    let (bob, _) = user(&server, "bob").await;
    let bob_device = device_of(&bob).await;
    let (bob_two, bob_two_device) = login(&server, "bob").await;
    let since = next_batch(&sync(&bob, "").await);
    let since_two = next_batch(&sync(&bob_two, "").await);

    // Messages for devices and users that do not exist are dropped (200, as the spec says),
    // however many and however large: they never count against anything.
    let big = "x".repeat(200 * 1024);
    for n in 0..20 {
        let messages = json!({"@bob:localhost": {"NODEVICE": {"pad": big}},
                              "@nobody:localhost": {"*": {"pad": big}, "D": {"pad": big}}});
        let (status, body) = send_to_device(&mallory, &format!("ghost{n}"), messages).await;
        assert_eq!(status, 200, "{body}");
    }

    // One sender fills at most its share of a device's queue.
    for n in 0..3 {
        let messages = json!({"@bob:localhost": {&bob_device: {"n": n}}});
        assert_eq!(send_to_device(&mallory, &format!("m{n}"), messages).await.0, 200);
    }
    let messages = json!({"@bob:localhost": {&bob_device: {"n": 3}}});
    let (status, body) = send_to_device(&mallory, "m3", messages).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    // ... and bytes: one message over the sender's byte bound is refused whole.
    let messages = json!({"@bob:localhost": {&bob_two_device: {"pad": "y".repeat(9 * 1024)}}});
    let (status, body) = send_to_device(&carol, "big", messages).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    // The device's whole queue is bounded too.
    for n in 0..2 {
        let messages = json!({"@bob:localhost": {&bob_device: {"from_carol": n}}});
        assert_eq!(send_to_device(&carol, &format!("c{n}"), messages).await.0, 200);
    }
    let messages = json!({"@bob:localhost": {&bob_device: {"from_carol": 2}}});
    let (status, body) = send_to_device(&carol, "c2", messages).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");

    // Bob's device gets exactly what was queued; nothing of the dropped messages.
    let got = sync(&bob, &format!("since={since}")).await;
    let delivered = events(&got, &["to_device", "events"]);
    assert_eq!(delivered.len(), 5, "{got}");
    assert!(delivered.iter().all(|m| m["content"].get("pad").is_none()));
    // Delivered messages leave the queue: the sender may send again.
    let after = next_batch(&sync(&bob, &format!("since={}", next_batch(&got))).await);
    let messages = json!({"@bob:localhost": {&bob_device: {"n": 4}}});
    assert_eq!(send_to_device(&mallory, "m4", messages).await.0, 200);

    // "*" reaches each existing device of the user, once.
    let messages = json!({"@bob:localhost": {"*": {"all": true}}});
    assert_eq!(send_to_device(&carol, "star", messages).await.0, 200);
    let one = events(&sync(&bob, &format!("since={after}")).await, &["to_device", "events"]);
    assert_eq!(one.iter().filter(|m| m["content"]["all"] == true).count(), 1, "{one:?}");
    let two =
        events(&sync(&bob_two, &format!("since={since_two}")).await, &["to_device", "events"]);
    assert_eq!(two.len(), 1, "{two:?}");
    assert_eq!(two[0]["content"]["all"], true);
}

async fn finding_25_send_to_device_is_idempotent_and_never_delivered_twice(
    backend: crate::Backend,
) {
    let Some(server) = crate::start_changed(backend, |c| {
        c.limits.max_to_device_per_device = 10_000;
        c.limits.max_to_device_per_sender = 10_000;
    })
    .await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    let (alice_two, _) = login(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let bob_device = device_of(&bob).await;
    let mut since = next_batch(&sync(&bob, "").await);

    // A retry with the same transaction id (same device) is not delivered again; the same id
    // from another device is another message.
    let messages = json!({"@bob:localhost": {&bob_device: {"n": "once"}}});
    for _ in 0..3 {
        assert_eq!(send_to_device(&alice, "t1", messages.clone()).await.0, 200);
    }
    assert_eq!(send_to_device(&alice_two, "t1", messages.clone()).await.0, 200);
    let got = sync(&bob, &format!("since={since}")).await;
    assert_eq!(events(&got, &["to_device", "events"]).len(), 2, "{got}");
    since = next_batch(&got);

    // Messages arriving while syncs are computed are delivered exactly once.
    let sender = {
        let alice = alice.clone();
        let device = bob_device.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                let messages = json!({"@bob:localhost": {&device: {"n": n}}});
                let (status, _) = send_to_device(&alice, &format!("race{n}"), messages).await;
                assert_eq!(status, 200);
            }
        })
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 300 && Instant::now() < deadline {
        let got = sync(&bob, &format!("since={since}&timeout=1000")).await;
        for message in events(&got, &["to_device", "events"]) {
            seen.push(message["content"]["n"].as_u64().expect("a number"));
        }
        since = next_batch(&got);
    }
    sender.await.expect("the sender");
    let got = sync(&bob, &format!("since={since}")).await;
    for message in events(&got, &["to_device", "events"]) {
        seen.push(message["content"]["n"].as_u64().expect("a number"));
    }
    let expected: Vec<u64> = (0..300).collect();
    assert_eq!(seen, expected, "each message once, in order");
}

async fn finding_07_36_receipt_thread_ids_are_checked_and_bounded(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.max_thread_receipts_per_room = 3).await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"invite": [bob_id]})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let mut ids = Vec::new();
    for n in 0..10 {
        let (status, body) = crate::rooms::send(&alice, &room, &format!("e{n}"), "hi").await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["event_id"].as_str().expect("an id").to_owned());
    }
    let receipt = |event: &str| format!("{V3}/rooms/{room}/receipt/m.read/{event}");

    // Anything but "main" or an event id is refused, large or small.
    for bad in ["x".repeat(100_000), "thread".to_owned(), String::new(), "$".to_owned()] {
        let (status, body) = bob.post(&receipt(&ids[0]), &json!({"thread_id": bad})).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    }
    let (status, _) = bob.post(&receipt(&ids[0]), &json!({"thread_id": "main"})).await;
    assert_eq!(status, 200);

    // A receipt must fit its thread: an event that is no reply in the named thread is refused.
    let (status, body) = bob.post(&receipt(&ids[1]), &json!({"thread_id": ids[0]})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // Threaded receipts: each user keeps the latest few per room, the oldest go. Each goes on
    // a reply in the thread of one of the messages.
    let mut replies = Vec::new();
    for (n, root) in ids.iter().enumerate() {
        let reply = json!({"msgtype": "m.text", "body": "re",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
        let path = format!("{V3}/rooms/{room}/send/m.room.message/r{n}");
        let (status, body) = alice.send(reqwest::Method::PUT, &path, Some(&reply)).await;
        assert_eq!(status, 200, "{body}");
        let reply = body["event_id"].as_str().expect("an id").to_owned();
        let (status, body) = bob.post(&receipt(&reply), &json!({"thread_id": root})).await;
        assert_eq!(status, 200, "{body}");
        replies.push(reply);
    }
    let initial = sync(&alice, "").await;
    let ephemeral = events(&initial, &["rooms", "join", &room, "ephemeral", "events"]);
    let receipts = ephemeral.iter().find(|e| e["type"] == "m.receipt").expect("receipts");
    let with_bob: Vec<&String> = receipts["content"]
        .as_object()
        .expect("content")
        .iter()
        .filter(|(_, r)| r["m.read"].get(&bob_id).is_some())
        .map(|(id, _)| id)
        .collect();
    // The three latest threaded ones (on the replies to events 7, 8, 9); the "main" one on
    // event 0 is a thread receipt too and went first.
    assert_eq!(with_bob.len(), 3, "{receipts}");
    for id in &replies[7..] {
        assert!(with_bob.contains(&id), "{receipts}");
    }
}

async fn finding_20_mentions_kept_per_message_are_bounded(backend: crate::Backend) {
    let Some(server) = crate::start_changed(backend, |c| c.limits.max_mentions_per_event = 3).await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"invite": [bob_id]})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    let send = |txn: &'static str, mentions: Vec<String>| {
        let body =
            json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": mentions}});
        let path = format!("/rooms/{room}/send/m.room.message/{txn}");
        let alice = alice.clone();
        async move { put(&alice, &path, &body).await }
    };
    let before = sync(&bob, "").await;
    let counts = |got: &Value| {
        let unread = &got["rooms"]["join"][&room]["unread_notifications"];
        (unread["notification_count"].as_u64(), unread["highlight_count"].as_u64())
    };
    let (Some(notified), Some(highlighted)) = counts(&before) else { panic!("{before}") };
    // A real mention highlights.
    let (status, _) = send("1", vec![bob_id.clone(), "@x:localhost".to_owned()]).await;
    assert_eq!(status, 200);
    // Thousands of made-up mentions: nothing is kept per mention (the push rules read the
    // event as stored, which the event size bounds), and the mention of bob at the end
    // highlights as the spec's `.m.rule.is_user_mention` says.
    let mut many: Vec<String> = (0..2000).map(|n| format!("@fake{n}:localhost")).collect();
    many.push(bob_id.clone());
    let (status, body) = send("2", many).await;
    assert_eq!(status, 200, "{body}");
    let got = sync(&bob, "").await;
    assert_eq!(counts(&got), (Some(notified + 2), Some(highlighted + 2)), "{got}");
}

crate::on_every_backend!(
    finding_06_wake_ups_reach_whom_a_change_concerns_and_syncs_per_device_are_capped,
    finding_05_to_device_to_unknown_devices_is_dropped_and_queues_are_bounded,
    finding_25_send_to_device_is_idempotent_and_never_delivered_twice,
    finding_07_36_receipt_thread_ids_are_checked_and_bounded,
    finding_20_mentions_kept_per_message_are_bounded,
);
