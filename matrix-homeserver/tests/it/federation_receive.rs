//! Events with other servers while the room is in use here: the room's lock is never held
//! while another server is asked for something (its keys, its countersignature).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use matrix_homeserver::testing::{Intercepted, TestFederation};
use serde_json::json;

use crate::federation::{call, create_room};

/// How long c takes to give b its keys.
const SLOW_KEYS: Duration = Duration::from_secs(5);

/// b receives carol's join (of c, through a) and must fetch c's keys, which c is slow to
/// give; meanwhile bob sends a message in the same room on b, which completes at once; then
/// carol's join is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_key_server_does_not_hold_up_sending_in_the_room() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (net.server("a.test"), net.server("b.test"), net.server("c.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let carol = c.register_user("carol", "pw").await;
    let room = create_room(a, &alice.access_token, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    let (status, body) = call(b, &bob.access_token, reqwest::Method::POST, &join, json!({})).await;
    assert_eq!(status, 200, "{body}");

    // b has never asked c for its keys: when it does, c is slow.
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    net.intercept("c.test", move |from, request| {
        if from == "b.test" && request.uri().path().starts_with("/_matrix/key/v2/") {
            seen.store(true, Ordering::SeqCst);
            Intercepted::Delay(SLOW_KEYS)
        } else {
            Intercepted::Pass
        }
    });
    let (status, body) =
        call(c, &carol.access_token, reqwest::Method::POST, &join, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // a sends carol's join to b, which asks c for its keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !asked.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "b never asked c for its keys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // While b waits for c's keys, bob's message is sent without waiting for them.
    let started = Instant::now();
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let content = json!({"msgtype": "m.text", "body": "not held up"});
    let (status, sent) = call(b, &bob.access_token, reqwest::Method::PUT, &path, content).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{sent}");
    assert!(took < SLOW_KEYS / 2, "the send waited {took:?} for another server's keys");

    // Once c answers, b takes carol's join.
    let members = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    let deadline = Instant::now() + SLOW_KEYS + Duration::from_secs(20);
    loop {
        let (status, joined) =
            call(b, &bob.access_token, reqwest::Method::GET, &members, json!({})).await;
        assert_eq!(status, 200, "{joined}");
        if joined["joined"].get("@carol:c.test").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "carol's join never reached b: {joined}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long b takes to countersign an invite of its user.
const SLOW_INVITE: Duration = Duration::from_secs(3);

/// alice invites bob (of b, slow to countersign); meanwhile alice sends a message in the room,
/// which completes at once. The invite, built on a room that changed meanwhile, is built and
/// countersigned again, and reaches bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_invitee_server_does_not_hold_up_sending_in_the_room() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(a, &alice.access_token, json!({"preset": "private_chat"})).await;
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    net.intercept("b.test", move |_, request| {
        if request.uri().path().starts_with("/_matrix/federation/v2/invite/") {
            seen.store(true, Ordering::SeqCst);
            Intercepted::Delay(SLOW_INVITE)
        } else {
            Intercepted::Pass
        }
    });
    let invite = {
        let (base, token, room) =
            (a.base_url().to_owned(), alice.access_token.clone(), room.clone());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{base}/_matrix/client/v3/rooms/{room}/invite"))
                .bearer_auth(token)
                .json(&json!({"user_id": "@bob:b.test"}))
                .send()
                .await
                .expect("a answers");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !asked.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "a never sent the invite to b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let content = json!({"msgtype": "m.text", "body": "not held up"});
    let (status, sent) = call(a, &alice.access_token, reqwest::Method::PUT, &path, content).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{sent}");
    assert!(took < SLOW_INVITE / 2, "the send waited {took:?} for the invitee's server");

    let (status, body) = tokio::time::timeout(SLOW_INVITE * 4 + Duration::from_secs(10), invite)
        .await
        .expect("the invite completes in bounded time")
        .expect("the invite task ends");
    assert_eq!(status, 200, "{body}");
    // The invite is in the room on a, after the message, and bob has it on b.
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:b.test");
    let (status, member) =
        call(a, &alice.access_token, reqwest::Method::GET, &path, json!({})).await;
    assert_eq!((status, member["membership"].as_str()), (200, Some("invite")), "{member}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, sync) =
            call(b, &bob.access_token, reqwest::Method::GET, "/_matrix/client/v3/sync", json!({}))
                .await;
        assert_eq!(status, 200, "{sync}");
        if sync["rooms"]["invite"].get(room.as_str()).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "bob never saw the invite: {sync}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
