//! Push notifications: unread counts from each user's push rules (durable, per thread,
//! cleared by receipts), `/notifications`, pushers and delivery to a push gateway stub.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_homeserver::testing::TestHomeserver;
use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

async fn sync(client: &Client, query: &str) -> Value {
    let (status, body) = client.get(&format!("{V3}/sync?{query}")).await;
    assert_eq!(status, 200, "{body}");
    check("sync.yaml", "/sync", "get", 200, &body);
    body
}

async fn send(client: &Client, room: &str, txn: &str, content: Value) -> String {
    let (status, body) = client
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(&content),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an event id").to_owned()
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

fn counts(sync: &Value, room: &str) -> Value {
    sync["rooms"]["join"][room]["unread_notifications"].clone()
}

fn n(notifications: u64, highlights: u64) -> Value {
    json!({"notification_count": notifications, "highlight_count": highlights})
}

/// Alice and Bob in a room Alice made.
async fn pair(server: &TestHomeserver) -> (Client, String, Client, String, String) {
    let a = server.register_user("alice", "pw").await;
    let b = server.register_user("bob", "pw").await;
    let alice = Client::new(server).with_token(&a.access_token);
    let bob = Client::new(server).with_token(&b.access_token);
    let bob_id = b.user_id.to_string();
    let room = create(&alice, json!({"invite": [&bob_id]})).await;
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await.0, 200);
    (alice, a.user_id.to_string(), bob, bob_id, room)
}

async fn counts_follow_the_rules_and_survive_a_restart(backend: crate::Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let first = TestHomeserver::start_on(TestHomeserver::config(), storage.clone()).await;
    let (alice, _, bob, bob_id, room) = pair(&first).await;
    send(&alice, &room, "1", text("hello")).await;
    let root = send(&alice, &room, "2", text("root")).await;
    send(
        &alice,
        &room,
        "3",
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [&bob_id]}}),
    )
    .await;
    // A notice does not notify (.m.rule.suppress_notices).
    send(&alice, &room, "4", json!({"msgtype": "m.notice", "body": "bot"})).await;
    // A reply in a thread.
    send(
        &alice,
        &room,
        "5",
        json!({"msgtype": "m.text", "body": "in thread",
               "m.relates_to": {"rel_type": "m.thread", "event_id": &root}}),
    )
    .await;
    let got = sync(&bob, "").await;
    // Without the filter's flag, threads count in the room's totals; Bob's invite notified
    // him too (.m.rule.invite_for_me).
    assert_eq!(counts(&got, &room), n(5, 1), "{got}");
    assert!(got["rooms"]["join"][&room].get("unread_thread_notifications").is_none());
    // The sender is never notified of their own events.
    assert_eq!(counts(&sync(&alice, "").await, &room), n(0, 0));
    drop(first);

    // A restart keeps them, as the notifications are stored.
    let second = TestHomeserver::start_on(TestHomeserver::config(), storage).await;
    let bob = Client::new(&second).with_token(bob.token.as_deref().expect("a token"));
    let filter = json!({"room": {"timeline": {"unread_thread_notifications": true}}});
    let query = format!("filter={}", urlencode(&filter.to_string()));
    let got = sync(&bob, &query).await;
    assert_eq!(counts(&got, &room), n(4, 1), "{got}");
    assert_eq!(got["rooms"]["join"][&room]["unread_thread_notifications"][&root], n(1, 0));

    // A receipt on the main timeline reads it; the thread stays unread until read.
    let last_main = send(&bob, &room, "b1", text("reading")).await;
    let (status, body) = bob
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{last_main}"),
            &json!({"thread_id": "main"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = sync(&bob, &query).await;
    assert_eq!(counts(&got, &room), n(0, 0), "{got}");
    assert_eq!(got["rooms"]["join"][&room]["unread_thread_notifications"][&root], n(1, 0));
    // An unthreaded receipt reads everything before it.
    let (status, _) =
        bob.post(&format!("{V3}/rooms/{room}/receipt/m.read/{last_main}"), &json!({})).await;
    assert_eq!(status, 200);
    let got = sync(&bob, &query).await;
    assert_eq!(counts(&got, &room), n(0, 0), "{got}");
    assert!(got["rooms"]["join"][&room].get("unread_thread_notifications").is_none(), "{got}");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn strangers_and_leavers_get_no_notifications(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _, bob, _, room) = pair(&server).await;
    let (carol, carol_id) = user(&server, "carol").await;
    send(&alice, &room, "1", text("for members")).await;
    let (status, body) = carol.get(&format!("{V3}/notifications")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["notifications"], json!([]));
    assert!(sync(&carol, "").await["rooms"]["join"].get(&room).is_none());

    // An invitee is told nothing of the room's messages.
    let (status, _) =
        alice.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": &carol_id})).await;
    assert_eq!(status, 200);
    send(&alice, &room, "2", text("carol is only invited")).await;
    let (_, body) = carol.get(&format!("{V3}/notifications")).await;
    // Invited only: the visibility rules let her read none of the room's events yet.
    assert_eq!(body["notifications"], json!([]), "{body}");

    // Bob leaves: what comes after is not his.
    assert_eq!(bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await.0, 200);
    let (_, before) = bob.get(&format!("{V3}/notifications")).await;
    send(&alice, &room, "3", text("after bob left")).await;
    let (_, after) = bob.get(&format!("{V3}/notifications")).await;
    assert_eq!(
        before["notifications"].as_array().map(Vec::len),
        after["notifications"].as_array().map(Vec::len)
    );
    let bodies: Vec<&str> = after["notifications"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|n| n["event"]["content"]["body"].as_str())
        .collect();
    assert!(!bodies.contains(&"after bob left"), "{after}");
}

async fn notifications_page_and_filter_highlights(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _, bob, bob_id, room) = pair(&server).await;
    for i in 0..3 {
        send(&alice, &room, &format!("m{i}"), text(&format!("message {i}"))).await;
    }
    let mention = send(
        &alice,
        &room,
        "m9",
        json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [&bob_id]}}),
    )
    .await;
    let (status, page) = bob.get(&format!("{V3}/notifications?limit=3")).await;
    assert_eq!(status, 200, "{page}");
    check("notifications.yaml", "/notifications", "get", 200, &page);
    let list = page["notifications"].as_array().expect("a list");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["event"]["event_id"], mention.as_str(), "newest first");
    assert_eq!(list[0]["read"], false);
    assert_eq!(list[0]["room_id"], room.as_str());
    let token = page["next_token"].as_str().expect("more to come");
    let (status, rest) = bob.get(&format!("{V3}/notifications?limit=3&from={token}")).await;
    assert_eq!(status, 200);
    // The first message, then Bob's invite (.m.rule.invite_for_me).
    let rest = rest["notifications"].as_array().expect("a list");
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(rest[0]["event"]["content"]["body"], "message 0");
    assert_eq!(rest[1]["event"]["content"]["membership"], "invite");
    let (_, highlights) = bob.get(&format!("{V3}/notifications?only=highlight")).await;
    let highlights = highlights["notifications"].as_array().expect("a list");
    assert_eq!(highlights.len(), 1);
    assert_eq!(highlights[0]["event"]["event_id"], mention.as_str());

    // A receipt marks them read.
    assert_eq!(
        bob.post(&format!("{V3}/rooms/{room}/receipt/m.read/{mention}"), &json!({})).await.0,
        200
    );
    let (_, page) = bob.get(&format!("{V3}/notifications")).await;
    assert!(page["notifications"].as_array().expect("a list").iter().all(|n| n["read"] == true));

    // Bad parameters.
    let (status, body) = bob.get(&format!("{V3}/notifications?limit=abc")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = bob.get(&format!("{V3}/notifications?from=x")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    // Alice has none (her own events).
    let (_, mine) = alice.get(&format!("{V3}/notifications")).await;
    assert_eq!(mine["notifications"], json!([]));
}

fn pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "pushkey": pushkey, "kind": "http", "app_id": "org.example.app",
        "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url},
    })
}

const GATEWAY: &str = "https://push.example.org/_matrix/push/v1/notify";

async fn pushers_are_checked_and_private(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (status, body) = alice.get(&format!("{V3}/pushers")).await;
    assert_eq!(status, 200);
    check("pusher.yaml", "/pushers", "get", 200, &body);
    assert_eq!(body["pushers"], json!([]));

    let set = |client: &Client, body: Value| {
        let client = client.clone();
        async move { client.post(&format!("{V3}/pushers/set"), &body).await }
    };
    // Failure cases.
    let mut bad_kind = pusher("k", GATEWAY);
    bad_kind["kind"] = json!("carrier-pigeon");
    let (status, body) = set(&alice, bad_kind).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    for url in [
        "ftp://push.example.org/_matrix/push/v1/notify",
        "https://push.example.org/notify",
        "https://push.example.org/_matrix/push/v1/notify/extra",
        "not a url",
    ] {
        let (status, body) = set(&alice, pusher("k", url)).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{url}: {body}");
    }
    let mut no_url = pusher("k", GATEWAY);
    no_url["data"] = json!({});
    let (status, body) = set(&alice, no_url).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) = set(&alice, pusher(&"k".repeat(513), GATEWAY)).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = set(&alice, json!({"kind": "http"})).await;
    assert_eq!(status, 400, "{body}");

    // Set, listed, never visible to another user.
    let (status, body) = set(&alice, pusher("alice-key", GATEWAY)).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = alice.get(&format!("{V3}/pushers")).await;
    check("pusher.yaml", "/pushers", "get", 200, &list);
    assert_eq!(list["pushers"][0]["pushkey"], "alice-key");
    assert_eq!(list["pushers"][0]["data"]["url"], GATEWAY);
    let (_, theirs) = bob.get(&format!("{V3}/pushers")).await;
    assert_eq!(theirs["pushers"], json!([]));

    // The same pushkey set by bob without append takes it from alice.
    assert_eq!(set(&bob, pusher("alice-key", GATEWAY)).await.0, 200);
    let (_, list) = alice.get(&format!("{V3}/pushers")).await;
    assert_eq!(list["pushers"], json!([]), "{list}");
    // kind null deletes.
    let mut delete = pusher("alice-key", GATEWAY);
    delete["kind"] = Value::Null;
    assert_eq!(set(&bob, delete).await.0, 200);
    let (_, list) = bob.get(&format!("{V3}/pushers")).await;
    assert_eq!(list["pushers"], json!([]));

    // Bounded per user.
    for i in 0..10 {
        assert_eq!(set(&alice, pusher(&format!("k{i}"), GATEWAY)).await.0, 200);
    }
    let (status, body) = set(&alice, pusher("one-too-many", GATEWAY)).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    // Replacing one is not a new one.
    assert_eq!(set(&alice, pusher("k3", GATEWAY)).await.0, 200);
}

/// A push gateway on loopback that records what it is sent and rejects the pushkeys it is
/// told to.
async fn gateway(rejected: Arc<Mutex<Vec<String>>>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/_matrix/push/v1/notify",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let record = record.clone();
            let rejected = rejected.clone();
            async move {
                record.lock().expect("a lock").push(body);
                let rejected = rejected.lock().expect("a lock").clone();
                axum::Json(json!({"rejected": rejected}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/_matrix/push/v1/notify"), seen)
}

async fn wait_for(seen: &Arc<Mutex<Vec<Value>>>, count: usize) -> Vec<Value> {
    for _ in 0..100 {
        let got = seen.lock().expect("a lock").clone();
        if got.len() >= count {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway got {:?}", seen.lock().expect("a lock"));
}

async fn the_gateway_is_sent_notifications(backend: crate::Backend) {
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.allow_private_push_gateways = true).await
    else {
        return;
    };
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let (url, seen) = gateway(rejected.clone()).await;
    let (alice, _, bob, _, room) = pair(&server).await;
    let (status, body) = bob.post(&format!("{V3}/pushers/set"), &pusher("full", &url)).await;
    assert_eq!(status, 200, "{body}");
    let mut short = pusher("short", &url);
    short["data"]["format"] = json!("event_id_only");
    short["append"] = json!(true);
    assert_eq!(bob.post(&format!("{V3}/pushers/set"), &short).await.0, 200);

    let event = send(&alice, &room, "1", text("ping")).await;
    let got = wait_for(&seen, 2).await;
    let by_key = |key: &str| {
        got.iter()
            .find(|b| b["notification"]["devices"][0]["pushkey"] == key)
            .unwrap_or_else(|| panic!("{key}: {got:?}"))
            .clone()
    };
    let full = by_key("full");
    assert_eq!(full["notification"]["event_id"], event.as_str());
    assert_eq!(full["notification"]["room_id"], room.as_str());
    assert_eq!(full["notification"]["type"], "m.room.message");
    assert_eq!(full["notification"]["content"]["body"], "ping");
    // The message and Bob's invite.
    assert_eq!(full["notification"]["counts"]["unread"], 2);
    assert_eq!(full["notification"]["devices"][0]["app_id"], "org.example.app");
    assert!(full["notification"]["devices"][0]["data"].get("url").is_none());
    let short = by_key("short");
    assert_eq!(short["notification"]["event_id"], event.as_str());
    assert!(short["notification"].get("content").is_none(), "{short}");
    assert!(short["notification"].get("type").is_none(), "{short}");

    // A pushkey the gateway rejects loses its pusher.
    rejected.lock().expect("a lock").push("full".to_owned());
    send(&alice, &room, "2", text("again")).await;
    wait_for(&seen, 4).await;
    let mut left = Value::Null;
    for _ in 0..50 {
        left = bob.get(&format!("{V3}/pushers")).await.1;
        if left["pushers"].as_array().is_some_and(|p| p.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left["pushers"].as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left["pushers"][0]["pushkey"], "short");
}

async fn private_gateways_are_refused_by_default(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (url, seen) = gateway(Arc::new(Mutex::new(Vec::new()))).await;
    let (alice, _, bob, _, room) = pair(&server).await;
    assert_eq!(bob.post(&format!("{V3}/pushers/set"), &pusher("k", &url)).await.0, 200);
    send(&alice, &room, "1", text("ping")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(seen.lock().expect("a lock").is_empty(), "loopback is not a public gateway");
}

async fn bad_push_rules_are_refused(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let put = |path: &str, body: Value| {
        let alice = alice.clone();
        let path = format!("{V3}/pushrules/global/{path}");
        async move { alice.send(reqwest::Method::PUT, &path, Some(&body)).await }
    };
    let long = "*a".repeat(300);
    let (status, body) = put("content/long", json!({"actions": ["notify"], "pattern": long})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let many: Vec<Value> =
        (0..33).map(|_| json!({"kind": "event_match", "key": "type", "pattern": "x"})).collect();
    let (status, body) = put("override/many", json!({"actions": [], "conditions": many})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let bad_key = json!({"actions": [], "conditions": [{"kind": "event_match", "key": "content..body", "pattern": "x"}]});
    let (status, body) = put("override/badkey", bad_key).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let bad_pattern = json!({"actions": [], "conditions": [{"kind": "event_match", "key": "type", "pattern": 5}]});
    let (status, body) = put("override/badpattern", bad_pattern).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) = put("bogus/x", json!({"actions": []})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, _) = alice.get(&format!("{V3}/pushrules/global/bogus/x")).await;
    assert_eq!(status, 400);
}

async fn a_muted_room_counts_nothing(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _, bob, _, room) = pair(&server).await;
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/room/{room}"),
            Some(&json!({"actions": []})),
        )
        .await;
    assert_eq!(status, 200);
    send(&alice, &room, "1", text("quiet")).await;
    // Only Bob's invite, from before the room rule.
    assert_eq!(counts(&sync(&bob, "").await, &room), n(1, 0));
    // A keyword rule highlights, through the user's own rules.
    let (status, _) = bob
        .send(reqwest::Method::DELETE, &format!("{V3}/pushrules/global/room/{room}"), None)
        .await;
    assert_eq!(status, 200);
    let keyword = json!({"actions": ["notify", {"set_tweak": "highlight"}], "pattern": "tea"});
    let (status, _) = bob
        .send(reqwest::Method::PUT, &format!("{V3}/pushrules/global/content/tea"), Some(&keyword))
        .await;
    assert_eq!(status, 200);
    send(&alice, &room, "2", text("Tea time")).await;
    assert_eq!(counts(&sync(&bob, "").await, &room), n(2, 1));
}

crate::on_every_backend!(
    counts_follow_the_rules_and_survive_a_restart,
    strangers_and_leavers_get_no_notifications,
    notifications_page_and_filter_highlights,
    pushers_are_checked_and_private,
    the_gateway_is_sent_notifications,
    private_gateways_are_refused_by_default,
    bad_push_rules_are_refused,
    a_muted_room_counts_nothing,
);
