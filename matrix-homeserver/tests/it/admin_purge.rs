//! Synapse's room deletion (v1 with its purge, v2 in the background), history purges, the
//! scheduled tasks and background updates of the admin API: what they delete and keep, that
//! an interrupted deletion resumes at start, and that nobody but an administrator may ask.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Client, Server, errcode};

struct Setup {
    server: Server,
    admin: Client,
    alice: Client,
    /// Alice's room "Alpha" (alice and bob joined), with three messages and an alias.
    alpha: String,
    /// The messages in Alpha, oldest first.
    messages: Vec<String>,
    /// Alice's room "Other", with one message.
    other: String,
    other_message: String,
}

async fn send(client: &Client, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = client
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            &json!({"msgtype": "m.text", "body": text}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an event id").to_owned()
}

async fn setup(backend: crate::Backend) -> Option<Setup> {
    let server = crate::start(backend).await?;
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let alice_session = server.register_user("alice", "pw-alice").await;
    let bob_session = server.register_user("bob", "pw-bob").await;
    let admin = Client::new(&server).with_token(&boss.access_token);
    let alice = Client::new(&server).with_token(&alice_session.access_token);
    let bob = Client::new(&server).with_token(&bob_session.access_token);
    let alpha = server.create_room(&alice_session, Some("Alpha")).await;
    let other = server.create_room(&alice_session, Some("Other")).await;
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{alpha}/state/m.room.join_rules"),
            &json!({"join_rule": "public"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        bob.post(&format!("/_matrix/client/v3/rooms/{alpha}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/directory/room/%23alpha:{}", server.server_name()),
            &json!({"room_id": alpha}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut messages = Vec::new();
    for n in 0..3 {
        messages.push(send(&alice, &alpha, &format!("a{n}"), &format!("alpha {n}")).await);
    }
    let other_message = send(&alice, &other, "o", "kept").await;
    Some(Setup { server, admin, alice, alpha, messages, other, other_message })
}

/// Whether the administrators' `fetch_event` finds an event.
async fn stored(s: &Setup, event_id: &str) -> bool {
    let (status, body) = s.admin.get(&format!("/_synapse/admin/v1/fetch_event/{event_id}")).await;
    assert!(status == 200 || status == 404, "{status} {body}");
    status == 200
}

/// Polls `path` until its `status` is one of `done`, at most 10 s.
async fn wait_for(client: &Client, path: &str, done: &[&str]) -> Value {
    for _ in 0..200 {
        let (status, body) = client.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        if body["status"].as_str().is_some_and(|s| done.contains(&s)) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached {done:?}");
}

async fn only_administrators(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let anonymous = Client::new(&s.server);
    let room = &s.alpha;
    let event = &s.messages[0];
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::DELETE, format!("/_synapse/admin/v2/rooms/{room}"), Some(json!({}))),
        (Method::GET, format!("/_synapse/admin/v2/rooms/{room}/delete_status"), None),
        (Method::GET, "/_synapse/admin/v2/rooms/delete_status/abc".into(), None),
        (
            Method::POST,
            format!("/_synapse/admin/v1/purge_history/{room}"),
            Some(json!({"purge_up_to_ts": 1})),
        ),
        (Method::POST, format!("/_synapse/admin/v1/purge_history/{room}/{event}"), Some(json!({}))),
        (Method::GET, "/_synapse/admin/v1/purge_history_status/abc".into(), None),
        (Method::GET, "/_synapse/admin/v1/scheduled_tasks".into(), None),
        (Method::GET, "/_synapse/admin/v1/background_updates/status".into(), None),
    ];
    for (method, path, body) in &calls {
        let (status, answer) = anonymous.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = s.alice.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }
    // Nothing happened: the room and its history are all there, and no task was made.
    assert!(stored(&s, event).await);
    let (status, _) = s.alice.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members")).await;
    assert_eq!(status, 200);
    let (_, body) = s.admin.get("/_synapse/admin/v1/scheduled_tasks").await;
    assert_eq!(body, json!({"scheduled_tasks": []}));
}

/// v1 purges by default: the room, its events and its alias are gone, another room is not;
/// with `purge: false` the room's history stays.
async fn delete_v1_purges(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let server_name = s.server.server_name().to_owned();
    let path = format!("/_synapse/admin/v1/rooms/{}", s.other);
    let (status, body) = s.admin.send(Method::DELETE, &path, Some(&json!({"purge": false}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kicked_users"], json!([format!("@alice:{server_name}")]));
    let (status, _) = s.admin.get(&path).await;
    assert_eq!(status, 200, "not purged: the room is still held");
    assert!(stored(&s, &s.other_message).await);

    let (status, before) = s.alice.get("/_matrix/client/v3/sync?timeout=0").await;
    assert_eq!(status, 200, "{before}");
    let since = before["next_batch"].as_str().expect("a token").to_owned();
    let sliding = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0";
    let lists = json!({"lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 5}}});
    let (status, first) = s.alice.post(sliding, &lists).await;
    assert_eq!(status, 200, "{first}");
    let pos = first["pos"].as_str().expect("a position").to_owned();
    let path = format!("/_synapse/admin/v1/rooms/{}", s.alpha);
    let (status, body) = s.admin.send(Method::DELETE, &path, Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kicked_users"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(body["local_aliases"], json!([format!("#alpha:{server_name}")]));
    // Syncs go on, from before the purge and from nothing; the room is not in a new one.
    let (status, body) =
        s.alice.get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.alice.get("/_matrix/client/v3/sync?timeout=0").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rooms"]["join"].get(s.alpha.as_str()).is_none(), "{body}");
    assert!(body["rooms"]["join"].get(s.other.as_str()).is_none(), "left, not purged");
    // Sliding sync too, on its connection from before and on a new one.
    let (status, body) = s.alice.post(&format!("{sliding}&pos={pos}"), &lists).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.alice.post(sliding, &lists).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rooms"].get(s.alpha.as_str()).is_none(), "{body}");
    let (status, body) = s.admin.get(&path).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "purged: {body}");
    for event in &s.messages {
        assert!(!stored(&s, event).await, "{event} is purged");
    }
    let (_, list) = s.admin.get("/_synapse/admin/v1/rooms").await;
    assert_eq!(list["total_rooms"], 1, "{list}");
    let (status, _) =
        s.alice.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", s.alpha)).await;
    assert_eq!(status, 403, "alice sees nothing of it");
    assert!(stored(&s, &s.other_message).await, "the other room keeps its history");
    // Deleting it again: it is unknown now.
    let (status, body) = s.admin.send(Method::DELETE, &path, Some(&json!({}))).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

/// v2 answers at once with a `delete_id`; its status goes to `complete` with what the
/// shutdown did, by id and by room, and the tasks list shows it.
async fn delete_v2_in_the_background(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let server_name = s.server.server_name().to_owned();
    let path = format!("/_synapse/admin/v2/rooms/{}", s.alpha);
    let (status, body) = s.admin.send(Method::DELETE, &path, Some(&json!({"block": true}))).await;
    assert_eq!(status, 200, "{body}");
    let id = body["delete_id"].as_str().expect("a delete id").to_owned();
    let status_path = format!("/_synapse/admin/v2/rooms/delete_status/{id}");
    let done = wait_for(&s.admin, &status_path, &["complete", "failed"]).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["delete_id"], id.as_str());
    assert_eq!(done["room_id"], s.alpha.as_str());
    let mut kicked: Vec<&str> = done["shutdown_room"]["kicked_users"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    kicked.sort_unstable();
    assert_eq!(kicked, [format!("@alice:{server_name}"), format!("@bob:{server_name}")]);
    assert_eq!(done["shutdown_room"]["local_aliases"], json!([format!("#alpha:{server_name}")]));
    assert!(done.get("error").is_none(), "{done}");
    for event in &s.messages {
        assert!(!stored(&s, event).await, "{event} is purged");
    }
    let (status, _) = s.admin.get(&format!("/_synapse/admin/v1/rooms/{}", s.alpha)).await;
    assert_eq!(status, 404);
    let (_, block) = s.admin.get(&format!("/_synapse/admin/v1/rooms/{}/block", s.alpha)).await;
    assert_eq!(block["block"], true, "the block mark outlives the purge");
    assert!(stored(&s, &s.other_message).await);

    let (status, by_room) =
        s.admin.get(&format!("/_synapse/admin/v2/rooms/{}/delete_status", s.alpha)).await;
    assert_eq!(status, 200, "{by_room}");
    assert_eq!(by_room["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_room["results"][0]["delete_id"], id.as_str());
    let (status, body) =
        s.admin.get(&format!("/_synapse/admin/v2/rooms/{}/delete_status", s.other)).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "no task for it: {body}");
    let (status, body) = s.admin.get("/_synapse/admin/v2/rooms/delete_status/nope").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let (status, tasks) = s.admin.get("/_synapse/admin/v1/scheduled_tasks").await;
    assert_eq!(status, 200, "{tasks}");
    let task = &tasks["scheduled_tasks"][0];
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["action"], "shutdown_and_purge_room");
    assert_eq!(task["status"], "complete");
    assert_eq!(task["resource_id"], s.alpha.as_str());
    assert!(task["timestamp_ms"].as_i64().is_some_and(|ts| ts > 0));
    for (query, count) in [
        ("?status=complete", 1),
        ("?status=failed", 0),
        ("?status=cancelled", 0),
        ("?action_name=purge_history", 0),
        ("?action_name=shutdown_and_purge_room", 1),
        (&format!("?resource_id={}", s.other) as &str, 0),
        ("?max_timestamp=1", 0),
    ] {
        let (status, body) =
            s.admin.get(&format!("/_synapse/admin/v1/scheduled_tasks{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["scheduled_tasks"].as_array().map(Vec::len), Some(count), "{query}");
    }
    let (status, body) = s.admin.get("/_synapse/admin/v1/scheduled_tasks?status=odd").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // An unknown room, a replacement room and a body that is not JSON are refused.
    let unknown = format!("/_synapse/admin/v2/rooms/!nothere:{server_name}");
    let (status, body) = s.admin.send(Method::DELETE, &unknown, Some(&json!({}))).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let other = format!("/_synapse/admin/v2/rooms/{}", s.other);
    let (status, body) =
        s.admin.send(Method::DELETE, &other, Some(&json!({"new_room_user_id": "@boss:x"}))).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) =
        s.admin.send(Method::DELETE, "/_synapse/admin/v2/rooms/nope", Some(&json!({}))).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

/// A deletion acknowledged before a stop (stored `active`) runs again when the next server
/// starts on the same store, to `complete`.
async fn an_interrupted_delete_resumes(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let storage = s.server.storage().clone();
    let task = json!({
        "id": "InterruptedTask1",
        "action": "shutdown_and_purge_room",
        "status": "active",
        "timestamp_ms": 1,
        "resource_id": s.alpha,
        "params": {
            "requester": format!("@boss:{}", s.server.server_name()),
            "body": {"block": false, "purge": true, "force_purge": false},
        },
        "result": null,
        "error": null,
    });
    let mut changes = matrix_storage::ChangeSet::new();
    changes.account_data.push((
        "!admin_tasks".to_owned(),
        None,
        "InterruptedTask1".to_owned(),
        task.to_string().into_bytes(),
    ));
    storage.apply(changes).await.expect("the task is stored");

    let again = matrix_homeserver::testing::TestHomeserver::start_on(
        matrix_homeserver::testing::TestHomeserver::config(),
        storage,
    )
    .await;
    let hs = again.homeserver();
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let admin = Client::new(&again).with_token(&boss.access_token);
    let path = "/_synapse/admin/v2/rooms/delete_status/InterruptedTask1";
    let done = wait_for(&admin, path, &["complete", "failed"]).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["shutdown_room"]["kicked_users"].as_array().map(Vec::len), Some(2));
    let (status, _) = admin.get(&format!("/_synapse/admin/v1/rooms/{}", s.alpha)).await;
    assert_eq!(status, 404, "purged");
    let (status, _) = admin.get(&format!("/_synapse/admin/v1/rooms/{}", s.other)).await;
    assert_eq!(status, 200);
}

/// A history purge deletes the messages before its point (remote ones; local ones only with
/// `delete_local_events`), keeps the point, the later events and the room's state.
async fn purge_history(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let point = &s.messages[2];
    let path = format!("/_synapse/admin/v1/purge_history/{}/{point}", s.alpha);
    // Without `delete_local_events`, our users' messages stay.
    let (status, body) = s.admin.post(&path, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["purge_id"].as_str().expect("a purge id").to_owned();
    let status_path = format!("/_synapse/admin/v1/purge_history_status/{id}");
    let done = wait_for(&s.admin, &status_path, &["complete", "failed"]).await;
    assert_eq!(done, json!({"status": "complete"}));
    for event in &s.messages {
        assert!(stored(&s, event).await, "{event} is local: kept");
    }

    let (status, body) = s.admin.post(&path, &json!({"delete_local_events": true})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["purge_id"].as_str().expect("a purge id").to_owned();
    let status_path = format!("/_synapse/admin/v1/purge_history_status/{id}");
    let done = wait_for(&s.admin, &status_path, &["complete", "failed"]).await;
    assert_eq!(done, json!({"status": "complete"}));
    assert!(!stored(&s, &s.messages[0]).await && !stored(&s, &s.messages[1]).await);
    assert!(stored(&s, point).await, "the point is kept");
    assert!(stored(&s, &s.other_message).await, "another room is untouched");
    // What alice reads: the point, and the room's state (name, members...), no purged
    // message.
    let (status, page) = s
        .alice
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", s.alpha))
        .await;
    assert_eq!(status, 200, "{page}");
    let chunk = page["chunk"].as_array().expect("a chunk");
    let bodies: Vec<&str> = chunk.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["alpha 2"]);
    assert!(chunk.iter().any(|e| e["type"] == "m.room.create"), "state is kept");
    assert!(chunk.iter().any(|e| e["type"] == "m.room.name"));
    let (status, state) = s.admin.get(&format!("/_synapse/admin/v1/rooms/{}/state", s.alpha)).await;
    assert_eq!(status, 200, "{state}");
    // The room goes on.
    send(&s.alice, &s.alpha, "after", "after the purge").await;

    // By time: everything before now but the newest event before it (the last message).
    let (status, body) = s
        .admin
        .post(
            &format!("/_synapse/admin/v1/purge_history/{}", s.other),
            &json!({"purge_up_to_ts": 1, "delete_local_events": true}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "nothing before 1970: {body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64 + 60_000)
        .unwrap_or(i64::MAX);
    let (status, body) = s
        .admin
        .post(
            &format!("/_synapse/admin/v1/purge_history/{}", s.other),
            &json!({"purge_up_to_ts": now, "delete_local_events": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["purge_id"].as_str().expect("a purge id").to_owned();
    let done = wait_for(
        &s.admin,
        &format!("/_synapse/admin/v1/purge_history_status/{id}"),
        &["complete", "failed"],
    )
    .await;
    assert_eq!(done["status"], "complete");
    assert!(stored(&s, &s.other_message).await, "the newest event is the point: kept");

    // The tasks list shows the purges.
    let (_, tasks) =
        s.admin.get("/_synapse/admin/v1/scheduled_tasks?action_name=purge_history").await;
    assert_eq!(tasks["scheduled_tasks"].as_array().map(Vec::len), Some(3), "{tasks}");

    // Refused: no point, an event of another room, an unknown event or room, an unknown id.
    let base = format!("/_synapse/admin/v1/purge_history/{}", s.alpha);
    let (status, body) = s.admin.post(&base, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) = s.admin.post(&format!("{base}/{}", s.other_message), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    let (status, body) = s.admin.post(&format!("{base}/$nothere"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let unknown = format!("/_synapse/admin/v1/purge_history/!nothere:{}", s.server.server_name());
    let (status, body) = s.admin.post(&unknown, &json!({"purge_up_to_ts": 5})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = s.admin.get("/_synapse/admin/v1/purge_history_status/nope").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

/// An administrator who is not in a room reads its messages, an event's context and the
/// event nearest a time; as a client, the same user may not; nobody else may ask.
async fn reads_without_membership(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let room = &s.alpha;
    let base = format!("/_synapse/admin/v1/rooms/{room}");
    let anonymous = Client::new(&s.server);
    for path in [
        format!("{base}/messages"),
        format!("{base}/context/{}", s.messages[1]),
        format!("{base}/timestamp_to_event?ts=0"),
    ] {
        let (status, answer) = anonymous.get(&path).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{path}");
        let (status, answer) = s.alice.get(&path).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{path}: {answer}");
    }
    let (status, body) =
        s.admin.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b")).await;
    assert_eq!(status, 403, "as a client, boss is not in the room: {body}");

    let bodies = |page: &Value| -> Vec<String> {
        page["chunk"]
            .as_array()
            .expect("a chunk")
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let (status, page) = s.admin.get(&format!("{base}/messages?dir=b&limit=2")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page), ["alpha 2", "alpha 1"]);
    let end = page["end"].as_str().expect("more").to_owned();
    let (_, page) = s.admin.get(&format!("{base}/messages?dir=b&limit=100&from={end}")).await;
    assert_eq!(bodies(&page), ["alpha 0"]);
    assert!(
        page["chunk"].as_array().is_some_and(|c| c.iter().any(|e| e["type"] == "m.room.create"))
    );
    let (_, page) = s.admin.get(&format!("{base}/messages?limit=1")).await;
    assert_eq!(page["chunk"][0]["type"], "m.room.create", "dir defaults to f: {page}");
    let (status, body) = s.admin.get(&format!("{base}/messages?dir=x")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    let (status, context) = s.admin.get(&format!("{base}/context/{}?limit=2", s.messages[1])).await;
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["event"]["event_id"], s.messages[1].as_str());
    assert_eq!(context["events_before"][0]["event_id"], s.messages[0].as_str());
    assert_eq!(context["events_after"][0]["event_id"], s.messages[2].as_str());
    assert!(context["state"].as_array().is_some_and(|st| !st.is_empty()));
    let (status, body) = s.admin.get(&format!("{base}/context/{}", s.other_message)).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "another room's event: {body}");

    let (status, found) = s.admin.get(&format!("{base}/timestamp_to_event?ts=0")).await;
    assert_eq!(status, 200, "{found}");
    let (_, first) = s.admin.get(&format!("{base}/messages?limit=1")).await;
    assert_eq!(found["event_id"], first["chunk"][0]["event_id"], "the first event, forwards");
    let (status, found) =
        s.admin.get(&format!("{base}/timestamp_to_event?ts=99999999999999&dir=b")).await;
    assert_eq!((status, found["event_id"].clone()), (200, json!(s.messages[2])), "{found}");
    let (status, body) = s.admin.get(&format!("{base}/timestamp_to_event")).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");

    let unknown = format!("/_synapse/admin/v1/rooms/!nothere:{}/messages", s.server.server_name());
    let (status, body) = s.admin.get(&unknown).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

async fn background_updates(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let (status, body) = s.admin.get("/_synapse/admin/v1/background_updates/status").await;
    assert_eq!((status, body), (200, json!({"enabled": true, "current_updates": {}})));
}

crate::on_every_backend!(
    only_administrators,
    delete_v1_purges,
    delete_v2_in_the_background,
    an_interrupted_delete_resumes,
    purge_history,
    reads_without_membership,
    background_updates
);

/// Without `delete_local_events`, a history purge deletes other servers' messages and keeps
/// ours (two federating servers).
#[tokio::test]
async fn a_purge_deletes_remote_messages_and_keeps_ours() {
    use matrix_homeserver::testing::TestFederation;

    use crate::federation::{call, create_room};

    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    a.homeserver().create_user("boss", Some("pw"), true).await.expect("boss is created");
    let boss = a.homeserver().login("boss", "pw").await.expect("boss logs in");
    let admin = Client::new(a).with_token(&boss.access_token);
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(a, &alice.access_token, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    let (status, body) = call(b, &bob.access_token, Method::POST, &join, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let send = |server, token: String, txn: &'static str, text: &'static str| {
        let room = room.clone();
        async move {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
            let body = json!({"msgtype": "m.text", "body": text});
            let (status, sent) = call(server, &token, Method::PUT, &path, body).await;
            assert_eq!(status, 200, "{sent}");
            sent["event_id"].as_str().expect("an event id").to_owned()
        }
    };
    let theirs = send(b, bob.access_token.clone(), "b1", "from b").await;
    // a holds b's message before anything else is sent.
    let fetch = format!("/_synapse/admin/v1/fetch_event/{theirs}");
    let mut arrived = false;
    for _ in 0..100 {
        if admin.get(&fetch).await.0 == 200 {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(arrived, "b's message reached a");
    let ours = send(a, alice.access_token.clone(), "a1", "from a").await;
    let point = send(a, alice.access_token.clone(), "a2", "the point").await;

    let path = format!("/_synapse/admin/v1/purge_history/{room}/{point}");
    let (status, body) = admin.post(&path, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["purge_id"].as_str().expect("a purge id").to_owned();
    let done = wait_for(
        &admin,
        &format!("/_synapse/admin/v1/purge_history_status/{id}"),
        &["complete", "failed"],
    )
    .await;
    assert_eq!(done, json!({"status": "complete"}));
    assert_eq!(admin.get(&fetch).await.0, 404, "b's message is purged");
    let (status, _) = admin.get(&format!("/_synapse/admin/v1/fetch_event/{ours}")).await;
    assert_eq!(status, 200, "ours is kept");
    let (status, _) = admin.get(&format!("/_synapse/admin/v1/fetch_event/{point}")).await;
    assert_eq!(status, 200);
}
