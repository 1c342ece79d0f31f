//! Synapse's federation admin API (`/_synapse/admin/v1/federation/destinations`...): the
//! destinations with their retry state, the rooms shared with one, resetting a backoff; on
//! every backend from a stored retry state, and with two federating servers whose link is
//! cut.

use std::time::Duration;

use matrix_homeserver::testing::TestFederation;
use reqwest::Method;
use serde_json::{Value, json};

use crate::federation::{call, create_room};
use crate::{Client, errcode};

const DESTINATIONS: &str = "/_synapse/admin/v1/federation/destinations";

fn names(body: &Value) -> Vec<&str> {
    body["destinations"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["destination"].as_str()).collect())
        .unwrap_or_default()
}

/// On every backend (federation off): destinations from queued items and stored retry
/// states, paged and sorted; details; reset; and nobody but an administrator may ask.
async fn stored_destinations(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let alice = server.register_user("alice", "pw-alice").await;
    let admin = Client::new(&server).with_token(&boss.access_token);
    let alice = Client::new(&server).with_token(&alice.access_token);
    let anonymous = Client::new(&server);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut changes = matrix_storage::ChangeSet::new();
    for destination in ["c.test", "a.test", "b.test"] {
        changes.enqueue.push((destination.to_owned(), std::sync::Arc::from(&b"{}"[..])));
    }
    // b.test failed three times: the backoff of 3 failures is 4 s, next attempt in 4 s.
    changes.retries.push((
        "b.test".to_owned(),
        Some(matrix_storage::RetryState { failures: 3, retry_after_ts: now + 4_000 }),
    ));
    server.storage().apply(changes).await.expect("stored");

    let calls: Vec<(Method, String)> = vec![
        (Method::GET, DESTINATIONS.to_owned()),
        (Method::GET, format!("{DESTINATIONS}/b.test")),
        (Method::GET, format!("{DESTINATIONS}/b.test/rooms")),
        (Method::POST, format!("{DESTINATIONS}/b.test/reset_connection")),
    ];
    for (method, path) in &calls {
        let (status, answer) = anonymous.send(method.clone(), path, Some(&json!({}))).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = alice.send(method.clone(), path, Some(&json!({}))).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }

    let (status, body) = admin.get(DESTINATIONS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), ["a.test", "b.test", "c.test"]);
    assert_eq!(body["total"], 3);
    assert!(body.get("next_token").is_none());
    let b = &body["destinations"][1];
    assert_eq!(b["retry_interval"], 4_000, "{b}");
    assert_eq!(b["retry_last_ts"], now, "{b}");
    assert_eq!(b["failure_ts"], now, "{b}");
    assert_eq!(b["last_successful_stream_ordering"], Value::Null);
    let a = &body["destinations"][0];
    assert_eq!((a["retry_last_ts"].clone(), a["retry_interval"].clone()), (json!(0), json!(0)));
    assert_eq!(a["failure_ts"], Value::Null);

    let (_, page) = admin.get(&format!("{DESTINATIONS}?limit=2")).await;
    assert_eq!(names(&page), ["a.test", "b.test"]);
    assert_eq!(page["next_token"], "2");
    let (_, page) = admin.get(&format!("{DESTINATIONS}?from=2&limit=2")).await;
    assert_eq!(names(&page), ["c.test"]);
    let (_, page) = admin.get(&format!("{DESTINATIONS}?order_by=retry_interval&dir=b")).await;
    assert_eq!(names(&page)[0], "b.test");
    let (_, page) = admin.get(&format!("{DESTINATIONS}?destination=c.")).await;
    assert_eq!(names(&page), ["c.test"]);
    for bad in ["?order_by=size", "?dir=x", "?limit=-1", "?from=z"] {
        let (status, body) = admin.get(&format!("{DESTINATIONS}{bad}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }

    let (status, one) = admin.get(&format!("{DESTINATIONS}/b.test")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, body["destinations"][1]);
    let (status, rooms) = admin.get(&format!("{DESTINATIONS}/b.test/rooms")).await;
    assert_eq!((status, rooms), (200, json!({"rooms": [], "total": 0})));
    let (status, body) = admin.get(&format!("{DESTINATIONS}/nowhere.test")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Reset: the stored backoff is gone; a destination not backing off is refused.
    let reset = format!("{DESTINATIONS}/b.test/reset_connection");
    let (status, body) = admin.post(&reset, &json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (_, one) = admin.get(&format!("{DESTINATIONS}/b.test")).await;
    assert_eq!((one["retry_last_ts"].clone(), one["retry_interval"].clone()), (json!(0), json!(0)));
    assert!(server.storage().retry("b.test").await.expect("reads").is_none());
    let (status, body) = admin.post(&reset, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    let (status, body) =
        admin.post(&format!("{DESTINATIONS}/nowhere.test/reset_connection"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

crate::on_every_backend!(stored_destinations);

/// Two servers sharing a room: each is the other's destination with the room; while the link
/// is cut, a's sends to b fail and back off; a reset after the link heals delivers at once.
#[tokio::test]
async fn a_cut_link_backs_off_and_a_reset_retries_now() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    a.homeserver().create_user("boss", Some("pw"), true).await.expect("boss is created");
    let boss = a.homeserver().login("boss", "pw").await.expect("boss logs in");
    let admin = Client::new(a).with_token(&boss.access_token);
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(a, &alice.access_token, json!({"preset": "public_chat"})).await;
    let (status, body) = call(
        b,
        &bob.access_token,
        Method::POST,
        &format!("/_matrix/client/v3/join/{room}?server_name=a.test"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = admin.get(DESTINATIONS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), ["b.test"]);
    let (_, rooms) = admin.get(&format!("{DESTINATIONS}/b.test/rooms")).await;
    assert_eq!(rooms["total"], 1, "{rooms}");
    assert_eq!(rooms["rooms"][0]["room_id"], room.as_str());

    net.cut("a.test", "b.test");
    let (status, body) = call(
        a,
        &alice.access_token,
        Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
        json!({"msgtype": "m.text", "body": "while cut"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut backing_off = Value::Null;
    for _ in 0..100 {
        let (_, one) = admin.get(&format!("{DESTINATIONS}/b.test")).await;
        if one["retry_last_ts"].as_i64().is_some_and(|ts| ts > 0) {
            backing_off = one;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(backing_off["retry_interval"].as_i64().is_some_and(|i| i > 0), "{backing_off}");

    net.heal("a.test", "b.test");
    let (status, body) =
        admin.post(&format!("{DESTINATIONS}/b.test/reset_connection"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Delivered at once (not after the backoff): the queue to b empties.
    let mut delivered = false;
    for _ in 0..100 {
        if a.storage().outbound("b.test", 1).await.expect("reads").is_empty() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(delivered, "the queue to b.test emptied after the reset");
}
