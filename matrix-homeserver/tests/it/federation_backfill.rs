//! Backfilling: the history of a room from before our user joined it through another server,
//! fetched with `/backfill` when `/messages` pages back past the join.

use matrix_homeserver::testing::{TestFederation, TestHomeserver};
use serde_json::{Value, json};

pub(crate) use crate::federation::call;
use crate::federation::create_room;

/// Pages `/messages` backwards from the end to the start (at most `max_pages` pages); answers
/// the events, newest first, and how many pages it took.
async fn page_back(
    server: &TestHomeserver,
    token: &str,
    room: &str,
    max_pages: usize,
) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut from = String::new();
    for page in 1..=max_pages {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50{from}");
        let (status, answer) = call(server, token, reqwest::Method::GET, &path, json!({})).await;
        assert_eq!(status, 200, "{answer}");
        events.extend(answer["chunk"].as_array().expect("a chunk").iter().cloned());
        match answer["end"].as_str() {
            Some(end) => from = format!("&from={end}"),
            None => return (events, page),
        }
    }
    panic!("the history of {room} did not end within {max_pages} pages");
}

/// The bodies of the messages among `events`, in their order.
fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn messages_backfill_the_history_from_before_a_remote_join() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        json!({"preset": "public_chat", "room_alias_name": "history", "name": "History"}),
    )
    .await;
    for i in 0..150 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
        let content = json!({"msgtype": "m.text", "body": format!("m{i}")});
        let (status, sent) =
            call(a, &alice.access_token, reqwest::Method::PUT, &path, content).await;
        assert_eq!(status, 200, "{sent}");
    }

    let (status, joined) = call(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/join/%23history:a.test",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    let (status, first_sync) =
        call(b, &bob.access_token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({}))
            .await;
    assert_eq!(status, 200, "{first_sync}");
    let since = first_sync["next_batch"].as_str().expect("a next_batch").to_owned();

    // All 150, newest first, each once, then the room's creation; in a bounded number of pages.
    let (events, pages) = page_back(b, &bob.access_token, &room, 12).await;
    let expected: Vec<String> = (0..150).rev().map(|i| format!("m{i}")).collect();
    let got = bodies(&events);
    let kinds: Vec<&str> =
        events.iter().rev().take(12).filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(got, expected, "{} of {}; oldest: {kinds:?}", got.len(), expected.len());
    assert!(pages <= 6, "{pages} pages");
    let ids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    assert_eq!(events.last().expect("events")["type"], "m.room.create", "back to the start");
    assert_eq!(events[0]["type"], "m.room.member", "bob's join is the newest");

    // A backfilled event reads alone too.
    let oldest = events.iter().rfind(|e| e["content"]["body"] == "m0").expect("m0");
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/event/{}",
        oldest["event_id"].as_str().expect("an id")
    );
    let (status, read) = call(b, &bob.access_token, reqwest::Method::GET, &path, json!({})).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["content"]["body"], "m0");

    // Paging again needs no server: the history is stored.
    net.cut("a.test", "b.test");
    let (again, _) = page_back(b, &bob.access_token, &room, 12).await;
    let event_ids = |events: &[Value]| -> Vec<String> {
        events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(event_ids(&again), event_ids(&events));

    // Backfilled events are old, not new: an incremental sync does not show them.
    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=0");
    let (status, sync) = call(b, &bob.access_token, reqwest::Method::GET, &path, json!({})).await;
    assert_eq!(status, 200, "{sync}");
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert!(timeline.as_array().is_none_or(Vec::is_empty), "{timeline}");
    net.heal("a.test", "b.test");

    // Forwards from a token in the history: the rest of it, then the timeline.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
    let (_, page) = call(b, &bob.access_token, reqwest::Method::GET, &path, json!({})).await;
    let end = page["end"].as_str().expect("more history");
    assert!(end.starts_with('b'), "{end}");
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=200&from={end}");
    let (status, forward) =
        call(b, &bob.access_token, reqwest::Method::GET, &path, json!({})).await;
    assert_eq!(status, 200, "{forward}");
    let forward = forward["chunk"].as_array().expect("a chunk").clone();
    let mut newest: Vec<String> = bodies(&page["chunk"].as_array().expect("a chunk").clone());
    newest.reverse();
    assert_eq!(bodies(&forward), newest[1..].to_vec(), "forwards from the page's end");
    assert_eq!(forward.last().expect("events")["type"], "m.room.member");
}

#[tokio::test]
async fn a_local_room_pages_to_its_start_without_asking_anyone() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let a = net.server("a.test");
    let alice = a.register_user("alice", "pw").await;
    let room = a.create_room(&alice, Some("Local")).await;
    net.cut("a.test", "b.test");
    let (events, pages) = page_back(a, &alice.access_token, &room, 4).await;
    assert_eq!(pages, 1);
    assert_eq!(events.last().expect("events")["type"], "m.room.create");
}

#[tokio::test]
async fn a_backfill_answer_keeps_only_the_history_of_the_events_asked_for() {
    use matrix_core::Value as CoreValue;
    use matrix_homeserver::testing::Intercepted;

    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        json!({"preset": "public_chat", "room_alias_name": "forged"}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
        let content = json!({"msgtype": "m.text", "body": format!("m{i}")});
        let (status, sent) =
            call(a, &alice.access_token, reqwest::Method::PUT, &path, content).await;
        assert_eq!(status, 200, "{sent}");
        ids.push(sent["event_id"].as_str().expect("an event id").to_owned());
    }
    let (status, joined) = call(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/join/%23forged:a.test",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");

    // a's own, validly signed events of the room: the last message (which b asks about: it is
    // the prev event of bob's join), and m10..m20, which hang off nothing b asked for (the
    // events between them and m39 are left out of the answer).
    let client = a.federation_client().expect("federation is on");
    let pdus_of = |answer: matrix_core::Object| match answer.get("pdus") {
        Some(CoreValue::Array(pdus)) => pdus.clone(),
        _ => panic!("no pdus in {answer:?}"),
    };
    let last = client.backfill("a.test", &room, &[ids[39].as_str()], 1).await.expect("a answers");
    let detached =
        client.backfill("a.test", &room, &[ids[20].as_str()], 11).await.expect("a answers");
    let mut pdus = pdus_of(last);
    let detached = pdus_of(detached);
    assert_eq!((pdus.len(), detached.len()), (1, 11));
    pdus.extend(detached);
    let mut answer = matrix_core::Object::new();
    answer.insert("origin", "a.test");
    answer.insert("origin_server_ts", 1_i64);
    answer.insert("pdus", CoreValue::Array(pdus));
    let body = matrix_core::json::to_canonical_vec(&CoreValue::Object(answer));
    net.intercept("a.test", move |from, request| {
        if from == "b.test" && request.uri().path().starts_with("/_matrix/federation/v1/backfill/")
        {
            Intercepted::Answer(200, body.clone())
        } else {
            Intercepted::Pass
        }
    });

    let (events, _) = page_back(b, &bob.access_token, &room, 4).await;
    assert_eq!(bodies(&events), ["m39"], "only the event asked for is taken");
    let stored = |id: &str| {
        let storage = b.storage().clone();
        let id = id.to_owned();
        async move { storage.event(&id).await.expect("b's storage reads").is_some() }
    };
    assert!(stored(&ids[39]).await);
    for id in &ids[10..=20] {
        assert!(!stored(id).await, "{id} hangs off nothing b asked for, yet b stored it");
    }

    // An honest answer is taken whole.
    net.stop_intercepting("a.test");
    let (events, _) = page_back(b, &bob.access_token, &room, 6).await;
    let expected: Vec<String> = (0..40).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&events), expected);
}
