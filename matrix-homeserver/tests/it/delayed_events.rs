//! Delayed events (MSC4140): scheduling through `/send` and `/state`, the management
//! endpoints, bounds, authority at send time, and durability across a restart.

use std::time::Duration;

use matrix_homeserver::testing::TestHomeserver;
use serde_json::{Value, json};

use crate::{Backend, Client, errcode, on_every_backend, start, start_changed};

on_every_backend!(
    a_delayed_message_is_sent_at_its_time,
    restart_cancel_and_send_now,
    delayed_state_events,
    bounds_and_bad_input,
    an_event_no_longer_allowed_is_dropped_quietly,
    delayed_events_survive_a_restart,
    advertised_in_versions_and_capabilities,
);

const U: &str = "/_matrix/client/unstable/org.matrix.msc4140";

/// The bodies of a room's messages of `kind` (newest first).
async fn bodies(client: &Client, room: &str, kind: &str) -> Vec<Value> {
    let (status, page) =
        client.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50")).await;
    assert_eq!(status, 200, "{page}");
    page["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["content"].clone())
        .collect()
}

/// Waits (at most 15 s) until the room has `count` messages of `kind`.
async fn wait_for(client: &Client, room: &str, kind: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = bodies(client, room, kind).await;
        if found.len() >= count || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn schedule(client: &Client, room: &str, txn: &str, delay: u64, body: &str) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}?org.matrix.msc4140.delay={delay}"
    );
    let (status, answer) = client.put(&path, &json!({"msgtype": "m.text", "body": body})).await;
    assert_eq!(status, 200, "{answer}");
    answer["delay_id"].as_str().expect("a delay_id").to_owned()
}

async fn list(client: &Client) -> Vec<Value> {
    let (status, body) = client.get(&format!("{U}/delayed_events")).await;
    assert_eq!(status, 200, "{body}");
    body["delayed_events"].as_array().expect("a list").clone()
}

async fn a_delayed_message_is_sent_at_its_time(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let room = server.create_room(&alice, None).await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let id = schedule(&client, &room, "t1", 400, "later").await;
    // The same transaction id answers the same delay id.
    assert_eq!(schedule(&client, &room, "t1", 400, "later").await, id);
    let listed = list(&client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["delay_id"], id.as_str());
    assert_eq!(listed[0]["room_id"], room.as_str());
    assert_eq!(listed[0]["type"], "m.room.message");
    assert_eq!(listed[0]["delay"], 400);
    assert_eq!(listed[0]["content"]["body"], "later");
    assert!(listed[0].get("state_key").is_none());
    let (status, one) = client.get(&format!("{U}/delayed_events/{id}")).await;
    assert_eq!((status, &one["delay_id"]), (200, &json!(id)));
    assert!(bodies(&client, &room, "m.room.message").await.is_empty(), "not sent early");

    let sent = wait_for(&client, &room, "m.room.message", 1).await;
    assert_eq!(sent, vec![json!({"msgtype": "m.text", "body": "later"})]);
    assert!(list(&client).await.is_empty(), "gone once sent");
    let (status, body) = client.post(&format!("{U}/delayed_events/{id}/cancel"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies(&client, &room, "m.room.message").await.len(), 1, "sent once");
}

async fn restart_cancel_and_send_now(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let room = server.create_room(&alice, None).await;
    let client = Client::new(&server).with_token(&alice.access_token);

    // Restarted before its time, again and again: not sent meanwhile.
    let kept = schedule(&client, &room, "k", 800, "kept alive").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) =
            client.post(&format!("{U}/delayed_events/{kept}/restart"), &json!({})).await;
        assert_eq!((status, &body), (200, &json!({})));
    }
    assert!(bodies(&client, &room, "m.room.message").await.is_empty(), "restarts hold it");

    // Cancelled (the body form of the action, as Synapse takes it): never sent.
    let cancelled = schedule(&client, &room, "c", 300, "cancelled").await;
    let (status, body) =
        client.post(&format!("{U}/delayed_events/{cancelled}"), &json!({"action": "cancel"})).await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, body) =
        client.post(&format!("{U}/delayed_events/{cancelled}"), &json!({"action": "cancel"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Sent now, long before its time.
    let now = schedule(&client, &room, "n", 3_600_000, "right now").await;
    let (status, body) = client.post(&format!("{U}/delayed_events/{now}/send"), &json!({})).await;
    assert_eq!((status, &body), (200, &json!({})));
    assert_eq!(
        bodies(&client, &room, "m.room.message").await,
        vec![json!({"msgtype": "m.text", "body": "right now"})]
    );

    // The kept one goes at last, 800 ms after its last restart; the cancelled one never.
    let sent = wait_for(&client, &room, "m.room.message", 2).await;
    assert_eq!(sent[0]["body"], "kept alive", "{sent:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = bodies(&client, &room, "m.room.message").await;
    assert!(all.iter().all(|b| b["body"] != "cancelled"), "{all:?}");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(list(&client).await.is_empty());
}

async fn delayed_state_events(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let room = server.create_room(&alice, None).await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let kind = "org.matrix.msc3401.call.member";
    let key = format!("_{}_DEVICE", alice.user_id);
    let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}");
    // Joined the call now; the "hang up" scheduled.
    let (status, body) = client.put(&path, &json!({"call_id": "c", "device_id": "D"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        client.put(&format!("{path}?org.matrix.msc4140.delay=300"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["delay_id"].as_str().expect("a delay id").to_owned();
    let listed = list(&client).await;
    assert_eq!(listed[0]["state_key"], key.as_str());
    // Also with an empty state key, and through the MSC's own endpoint.
    let (status, body) = client
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.example.flag?org.matrix.msc4140.delay=300"),
            &json!({"on": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client
        .put(
            &format!("{U}/rooms/{room}/delayed_event/org.example.other/txn1"),
            &json!({"delay_ms": 300, "state_key": "k", "content": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&client).await.len(), 3);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, content) = client.get(&path).await;
        assert_eq!(status, 200, "{content}");
        if content == json!({}) || tokio::time::Instant::now() > deadline {
            assert_eq!(content, json!({}), "the hang-up was sent");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !list(&client).await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, flag) =
        client.get(&format!("/_matrix/client/v3/rooms/{room}/state/org.example.flag/")).await;
    assert_eq!((status, flag), (200, json!({"on": false})));
    let (status, other) =
        client.get(&format!("/_matrix/client/v3/rooms/{room}/state/org.example.other/k")).await;
    assert_eq!((status, other), (200, json!({"n": 1})));
    let (status, _) = client.post(&format!("{U}/delayed_events/{id}/restart"), &json!({})).await;
    assert_eq!(status, 404, "sent: no longer there");
}

async fn bounds_and_bad_input(backend: Backend) {
    let Some(server) = start_changed(backend, |c| {
        c.delayed_events.max_delay_ms = 60_000;
        c.delayed_events.max_per_user = 2;
    })
    .await
    else {
        return;
    };
    let alice = server.register_user("alice", "secret-pw").await;
    let bob = server.register_user("bob", "secret-pw").await;
    let room = server.create_room(&alice, None).await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let send = |txn: &str, delay: &str| {
        format!(
            "/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}?org.matrix.msc4140.delay={delay}"
        )
    };
    let message = json!({"msgtype": "m.text", "body": "x"});
    for (delay, want) in [
        ("60001", (403, "M_FORBIDDEN")),
        ("0", (400, "M_INVALID_PARAM")),
        ("soon", (400, "M_INVALID_PARAM")),
        ("-5", (400, "M_INVALID_PARAM")),
    ] {
        let (status, body) = client.put(&send("b", delay), &message).await;
        assert_eq!((status, errcode(&body)), want, "{delay}: {body}");
    }
    let (status, body) = client.put(&send("j", "1000"), &json!([1])).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    // Not in the room: refused now, not only at send time.
    let bobs = Client::new(&server).with_token(&bob.access_token);
    let (status, body) = bobs.put(&send("s", "1000"), &message).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = bobs
        .put(
            "/_matrix/client/v3/rooms/!nowhere:localhost/send/m.room.message/s?org.matrix.msc4140.delay=5",
            &message,
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // Memberships go through their own endpoints.
    let (status, body) = client
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}?org.matrix.msc4140.delay=5",
                bob.user_id
            ),
            &json!({"membership": "invite"}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // At most two waiting.
    let first = schedule(&client, &room, "1", 50_000, "one").await;
    schedule(&client, &room, "2", 40_000, "two").await;
    let (status, body) = client.put(&send("3", "1000"), &message).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    let retry = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((30_000..=40_000).contains(&retry), "until the next is sent: {retry}");
    let listed = list(&client).await;
    assert_eq!(listed[0]["content"]["body"], "two", "by send time: {listed:?}");

    // Another user cannot see or touch them.
    for action in ["cancel", "restart", "send"] {
        let (status, body) =
            bobs.post(&format!("{U}/delayed_events/{first}/{action}"), &json!({})).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{action}: {body}");
    }
    let (status, _) = bobs.get(&format!("{U}/delayed_events/{first}")).await;
    assert_eq!(status, 404);
    assert!(list(&bobs).await.is_empty());
    let (status, body) = Client::new(&server).get(&format!("{U}/delayed_events")).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    // Bad actions.
    let (status, body) =
        client.post(&format!("{U}/delayed_events/{first}/explode"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"), "{body}");
    let (status, body) = client.post(&format!("{U}/delayed_events/{first}"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) =
        client.post(&format!("{U}/delayed_events/{first}"), &json!({"action": "explode"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = client.post(&format!("{U}/delayed_events/nope/cancel"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = client
        .put(&format!("{U}/rooms/{room}/delayed_event/m.room.message/z"), &json!({"content": {}}))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "delay_ms is required: {body}");
    drop(server);

    // Turned off: 403.
    let Some(server) = start_changed(backend, |c| c.delayed_events.max_per_user = 0).await else {
        return;
    };
    let alice = server.register_user("alice", "secret-pw").await;
    let room = server.create_room(&alice, None).await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/send/m.room.message/t?org.matrix.msc4140.delay=1000"
    );
    let (status, body) = client.put(&path, &message).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

async fn an_event_no_longer_allowed_is_dropped_quietly(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let bob = server.register_user("bob", "secret-pw").await;
    let room = server.create_room(&alice, None).await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let bobs = Client::new(&server).with_token(&bob.access_token);
    let (status, _) = client
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), &json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = bobs.post(&format!("/_matrix/client/v3/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200);
    schedule(&bobs, &room, "b", 300, "from bob").await;
    let (status, _) =
        bobs.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !list(&bobs).await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(list(&bobs).await.is_empty(), "finalised");
    assert!(bodies(&client, &room, "m.room.message").await.is_empty(), "not sent: bob left");
}

async fn delayed_events_survive_a_restart(backend: Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let first = TestHomeserver::start_on(TestHomeserver::config(), storage.clone()).await;
    let alice = first.register_user("alice", "secret-pw").await;
    let room = first.create_room(&alice, None).await;
    let client = Client::new(&first).with_token(&alice.access_token);
    // One due while the server is down, one after it is back.
    schedule(&client, &room, "down", 200, "while down").await;
    schedule(&client, &room, "up", 2_500, "after the restart").await;
    drop(client);
    drop(first);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let second = TestHomeserver::start_on(TestHomeserver::config(), storage).await;
    let client = Client::new(&second).with_token(&alice.access_token);
    let sent = wait_for(&client, &room, "m.room.message", 1).await;
    assert_eq!(sent.last().map(|b| b["body"].clone()), Some(json!("while down")), "{sent:?}");
    let sent = wait_for(&client, &room, "m.room.message", 2).await;
    assert_eq!(sent[0]["body"], "after the restart", "{sent:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies(&client, &room, "m.room.message").await.len(), 2, "each sent once");
    assert!(list(&client).await.is_empty());
}

async fn advertised_in_versions_and_capabilities(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let (status, versions) = client.get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    assert_eq!(versions["unstable_features"]["org.matrix.msc4140"], true);
    let (status, capabilities) = client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(status, 200);
    assert_eq!(
        capabilities["capabilities"]["org.matrix.msc4140.delayed_events"],
        json!({"max_delay_ms": 86_400_000, "max_scheduled": 100})
    );
}
