//! Jump to date (`GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`, and the
//! federation endpoint of the same name) on every backend: the nearest event in each
//! direction, exact times, times outside the room's life, a stranger, a departed member, and
//! malformed requests.

use serde_json::{Value, json};

use crate::rooms::{create, send, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

crate::on_every_backend!(
    finds_the_nearest_event_each_way,
    strangers_and_departed_members_learn_nothing_new,
    malformed_requests_are_refused,
);

async fn jump(client: &Client, room: &str, ts: i64, dir: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}");
    let (status, body) = client.get(&path).await;
    if status == 200 {
        check(
            "room_event_by_timestamp.yaml",
            "/rooms/{roomId}/timestamp_to_event",
            "get",
            200,
            &body,
        );
    }
    (status, body)
}

/// Sends `text`; answers its id and timestamp (as the server stamped it).
async fn said(client: &Client, room: &str, txn: &str, text: &str) -> (String, i64) {
    let (status, body) = send(client, room, txn, text).await;
    assert_eq!(status, 200, "{body}");
    let id = body["event_id"].as_str().expect("an event id").to_owned();
    let (status, event) = client.get(&format!("{V3}/rooms/{room}/event/{id}")).await;
    assert_eq!(status, 200, "{event}");
    let ts = event["origin_server_ts"].as_i64().expect("a timestamp");
    // Each message a few milliseconds after the last: distinct times.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    (id, ts)
}

async fn finds_the_nearest_event_each_way(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({"preset": "private_chat"})).await;
    // Another room's events interleave in the stream: never an answer here.
    let other = create(&alice, json!({"preset": "private_chat"})).await;
    let mut said_here = Vec::new();
    for i in 0..6 {
        said_here.push(said(&alice, &room, &format!("h{i}"), &format!("here {i}")).await);
        said(&alice, &other, &format!("o{i}"), &format!("there {i}")).await;
    }
    for (i, (id, ts)) in said_here.iter().enumerate() {
        // Exactly its time: itself, both ways.
        for dir in ["f", "b"] {
            let (status, body) = jump(&alice, &room, *ts, dir).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["event_id"], id.as_str(), "message {i}, {dir}");
            assert_eq!(body["origin_server_ts"], *ts);
        }
        // Just after it: backwards finds it; just before: forwards does.
        let (_, body) = jump(&alice, &room, ts + 1, "b").await;
        assert_eq!(body["event_id"], id.as_str(), "message {i}, just after, backwards");
        let (_, body) = jump(&alice, &room, ts - 1, "f").await;
        assert_eq!(body["event_id"], id.as_str(), "message {i}, just before, forwards");
    }
    // After the last message, forwards: nothing; backwards: the last.
    let (last_id, last_ts) = said_here.last().expect("six").clone();
    let (status, body) = jump(&alice, &room, last_ts + 60_000, "f").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (_, body) = jump(&alice, &room, last_ts + 60_000, "b").await;
    assert_eq!(body["event_id"], last_id.as_str());
    // Before the room was made, backwards: nothing; forwards: its first event, the create.
    let (status, body) = jump(&alice, &room, 1, "b").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = jump(&alice, &room, 1, "f").await;
    assert_eq!(status, 200, "{body}");
    let first = body["event_id"].as_str().expect("an id").to_owned();
    let (_, create_event) = alice.get(&format!("{V3}/rooms/{room}/event/{first}")).await;
    assert_eq!(create_event["type"], "m.room.create", "{create_event}");
}

async fn strangers_and_departed_members_learn_nothing_new(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (eve, _) = user(&server, "eve").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let (status, body) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (during, during_ts) = said(&alice, &room, "t1", "while bob is here").await;
    let (status, body) = bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, after_ts) = said(&alice, &room, "t2", "after bob left").await;

    // Eve never joined this (shared-history) room: refused outright.
    let (status, body) = jump(&eve, &room, during_ts, "f").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // An unknown room looks the same.
    let (status, body) = jump(&eve, "!nowhere:localhost", during_ts, "f").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // Bob finds what he saw, but not what came after he left.
    let (status, body) = jump(&bob, &room, during_ts, "f").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], during.as_str());
    let (status, body) = jump(&bob, &room, after_ts, "b").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "after the leave: {body}");
    // Alice, still joined, finds it.
    let (status, _) = jump(&alice, &room, after_ts, "b").await;
    assert_eq!(status, 200);
}

async fn malformed_requests_are_refused(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({"preset": "private_chat"})).await;
    let base = format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event");
    for (query, code) in [
        ("dir=f", "M_MISSING_PARAM"),
        ("ts=5", "M_MISSING_PARAM"),
        ("ts=5&dir=sideways", "M_INVALID_PARAM"),
        ("ts=yesterday&dir=f", "M_INVALID_PARAM"),
        ("ts=-5&dir=b", "M_INVALID_PARAM"),
        ("ts=99999999999999999999999&dir=f", "M_INVALID_PARAM"),
    ] {
        let (status, body) = alice.get(&format!("{base}?{query}")).await;
        assert_eq!((status, errcode(&body)), (400, code), "{query}: {body}");
    }
    // Without a token: 401.
    let anonymous = Client::new(&server);
    let (status, body) = anonymous.get(&format!("{base}?ts=5&dir=f")).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
}
