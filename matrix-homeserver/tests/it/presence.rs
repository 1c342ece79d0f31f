//! Presence: set and read by the user, by a room-mate and (refused) by a stranger; bad
//! bodies; `/sync`'s presence section (room-mates' changes, not strangers'; long-polls woken;
//! `set_presence`); the idle and offline timers; a restart keeps the set status; presence
//! turned off; and over federation, both ways between servers sharing a room only, with
//! forged updates dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use matrix_homeserver::testing::{Intercepted, TestFederation, TestHomeserver};
use serde_json::{Value, json};

use crate::{Client, errcode};

fn status_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{user}/status")
}

async fn put_status(client: &Client, user: &str, body: Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, &status_path(user), Some(&body)).await
}

async fn get_status(client: &Client, user: &str) -> (u16, Value) {
    client.get(&status_path(user)).await
}

/// A user on `server` with a client.
async fn user(server: &TestHomeserver, name: &str) -> (String, Client) {
    let session = server.register_user(name, "pw").await;
    (session.user_id.to_string(), Client::new(server).with_token(&session.access_token))
}

/// alice's room, which bob joined; carol shares no room with them.
async fn room_of_three(server: &TestHomeserver) -> [(String, Client); 3] {
    let alice = user(server, "alice").await;
    let bob = user(server, "bob").await;
    let carol = user(server, "carol").await;
    let (status, room) =
        alice.1.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().expect("a room id");
    let (status, joined) = bob.1.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{joined}");
    [alice, bob, carol]
}

/// A sync of `client` (`since` and more in `query`, without the leading `&`).
async fn sync(client: &Client, query: &str) -> Value {
    let (status, sync) = client.get(&format!("/_matrix/client/v3/sync?{query}")).await;
    assert_eq!(status, 200, "{sync}");
    sync
}

/// The presence contents in a sync answer, by sender.
fn presence_of<'a>(sync: &'a Value, user: &str) -> Vec<&'a Value> {
    sync["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.presence" && e["sender"] == user)
                .map(|e| &e["content"])
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `GET status` (bounded) until `user`'s presence is `expected`; answers the body.
async fn wait_for_status(client: &Client, user: &str, expected: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = get_status(client, user).await;
        assert_eq!(status, 200, "{body}");
        if body["presence"] == expected {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user} never became {expected}: {last}");
}

#[tokio::test]
async fn set_and_read_by_self_and_room_mates_not_strangers() {
    let server = TestHomeserver::start().await;
    let [(alice_id, alice), (bob_id, bob), (_, carol)] = room_of_three(&server).await;

    // Nothing set yet: offline.
    let (status, body) = get_status(&alice, &alice_id).await;
    assert_eq!((status, body), (200, json!({"presence": "offline"})));

    let (status, body) =
        put_status(&alice, &alice_id, json!({"presence": "unavailable", "status_msg": "lunch"}))
            .await;
    assert_eq!((status, &body), (200, &json!({})), "{body}");
    let (status, own) = get_status(&alice, &alice_id).await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["presence"], "unavailable", "{own}");
    assert_eq!(own["status_msg"], "lunch", "{own}");
    // Never active (setting unavailable is not activity, as in Synapse).
    assert!(own.get("last_active_ago").is_none(), "{own}");
    assert!(own.get("currently_active").is_none(), "only online users have it: {own}");

    // A room-mate reads it; a stranger may not.
    let (status, seen) = get_status(&bob, &alice_id).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!((&seen["presence"], &seen["status_msg"]), (&json!("unavailable"), &json!("lunch")));
    let (status, refused) = get_status(&carol, &alice_id).await;
    assert_eq!((status, errcode(&refused)), (403, "M_FORBIDDEN"), "{refused}");
    let (status, refused) = get_status(&carol, "@nobody:localhost").await;
    assert_eq!((status, errcode(&refused)), (403, "M_FORBIDDEN"), "{refused}");

    // Only the user sets theirs.
    let (status, refused) = put_status(&bob, &alice_id, json!({"presence": "online"})).await;
    assert_eq!((status, errcode(&refused)), (403, "M_FORBIDDEN"), "{refused}");

    // Online: currently active; a null status message clears it.
    let (status, _) =
        put_status(&alice, &alice_id, json!({"presence": "online", "status_msg": null})).await;
    assert_eq!(status, 200);
    let (_, own) = get_status(&bob, &alice_id).await;
    assert_eq!(own["presence"], "online", "{own}");
    assert_eq!(own["currently_active"], true, "{own}");
    assert!(own["last_active_ago"].as_u64().is_some_and(|ago| ago < 10_000), "{own}");
    assert!(own.get("status_msg").is_none(), "{own}");
    let _ = bob_id;

    // A departed member is a stranger again.
    let (status, rooms) = bob.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(status, 200, "{rooms}");
    let room = rooms["joined_rooms"][0].as_str().expect("the shared room").to_owned();
    let (status, _) = bob.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, refused) = get_status(&bob, &alice_id).await;
    assert_eq!((status, errcode(&refused)), (403, "M_FORBIDDEN"), "{refused}");
}

#[tokio::test]
async fn bad_presence_requests_are_refused() {
    let server = TestHomeserver::start().await;
    let (alice_id, alice) = user(&server, "alice").await;
    let cases = [
        (json!({"presence": "busy"}), "M_INVALID_PARAM"),
        (json!({"presence": 1}), "M_BAD_JSON"),
        (json!({"status_msg": "no state"}), "M_MISSING_PARAM"),
        (json!({"presence": "online", "status_msg": 5}), "M_BAD_JSON"),
        (json!({"presence": "online", "status_msg": "x".repeat(1025)}), "M_TOO_LARGE"),
        (json!(["online"]), "M_BAD_JSON"),
    ];
    for (body, code) in cases {
        let (status, answer) = put_status(&alice, &alice_id, body.clone()).await;
        assert_eq!((status, errcode(&answer)), (400, code), "{body}: {answer}");
    }
    let path = status_path(&alice_id);
    let (status, answer) = alice.send(reqwest::Method::PUT, &path, None).await;
    assert_eq!((status, errcode(&answer)), (400, "M_NOT_JSON"), "{answer}");
    let (status, answer) = get_status(&alice, "not-a-user").await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");
    let (status, answer) = alice.get("/_matrix/client/v3/sync?set_presence=busy").await;
    assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");
    // None of it changed anything; a status message at the bound is fine.
    assert_eq!(get_status(&alice, &alice_id).await.1, json!({"presence": "offline"}));
    let body = json!({"presence": "online", "status_msg": "é".repeat(512)});
    assert_eq!(put_status(&alice, &alice_id, body).await.0, 200);
}

#[tokio::test]
async fn sync_shows_room_mates_presence_and_not_strangers() {
    let server = TestHomeserver::start().await;
    let [(alice_id, alice), (bob_id, bob), (carol_id, carol)] = room_of_three(&server).await;
    let first = sync(&bob, "set_presence=offline").await;
    let since = first["next_batch"].as_str().expect("a token").to_owned();

    put_status(&alice, &alice_id, json!({"presence": "online", "status_msg": "here"})).await;
    put_status(&carol, &carol_id, json!({"presence": "online", "status_msg": "secret"})).await;
    let later = sync(&bob, &format!("since={since}&set_presence=offline")).await;
    let seen = presence_of(&later, &alice_id);
    assert_eq!(seen.len(), 1, "{later}");
    assert_eq!((&seen[0]["presence"], &seen[0]["status_msg"]), (&json!("online"), &json!("here")));
    assert_eq!(seen[0]["currently_active"], true, "{later}");
    assert!(presence_of(&later, &carol_id).is_empty(), "a stranger's presence: {later}");
    assert!(presence_of(&later, &bob_id).is_empty(), "bob did not change: {later}");

    // A waiting sync is woken by a room-mate's change.
    let since = later["next_batch"].as_str().expect("a token").to_owned();
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer =
                sync(&bob, &format!("since={since}&timeout=20000&set_presence=offline")).await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_status(&alice, &alice_id, json!({"presence": "unavailable", "status_msg": "here"})).await;
    let (woken, took) = waiting.await.expect("the sync answers");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(presence_of(&woken, &alice_id)[0]["presence"], "unavailable", "{woken}");

    // An initial sync lists room-mates who are not offline, and the user's own presence
    // (a sync marks its user online by default).
    let initial = sync(&bob, "").await;
    assert_eq!(presence_of(&initial, &alice_id)[0]["presence"], "unavailable", "{initial}");
    assert_eq!(presence_of(&initial, &bob_id)[0]["presence"], "online", "{initial}");
    assert!(presence_of(&initial, &carol_id).is_empty(), "{initial}");
    // set_presence=unavailable marks idle; a filter can leave presence out.
    let idle = sync(&carol, "set_presence=unavailable").await;
    assert_eq!(presence_of(&idle, &carol_id)[0]["presence"], "unavailable", "{idle}");
    let filter = json!({"presence": {"types": []}}).to_string();
    let filtered = sync(&bob, &format!("filter={}", urlencode(&filter))).await;
    assert!(filtered["presence"]["events"].as_array().is_some_and(Vec::is_empty), "{filtered}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn idle_and_offline_timers() {
    let mut config = TestHomeserver::config();
    config.presence.idle_timeout_ms = 400;
    config.presence.offline_timeout_ms = 1500;
    config.presence.active_window_ms = 200;
    let server = TestHomeserver::start_with(config).await;
    let [(alice_id, alice), (_, bob), _] = room_of_three(&server).await;
    let since = sync(&bob, "set_presence=offline").await["next_batch"].as_str().map(str::to_owned);
    let since = since.expect("a token");

    put_status(&alice, &alice_id, json!({"presence": "online", "status_msg": "hi"})).await;
    let online = wait_for_status(&bob, &alice_id, "online").await;
    assert_eq!(online["status_msg"], "hi");
    // No activity: idle, then (no sync running) offline, keeping the status message.
    let idle = wait_for_status(&bob, &alice_id, "unavailable").await;
    assert_eq!(idle["status_msg"], "hi", "{idle}");
    let gone = wait_for_status(&bob, &alice_id, "offline").await;
    assert_eq!(gone["status_msg"], "hi", "{gone}");
    assert!(gone["last_active_ago"].as_u64().is_some_and(|ago| ago >= 1000), "{gone}");
    // bob's sync from before sees the latest.
    let later = sync(&bob, &format!("since={since}&set_presence=offline")).await;
    assert_eq!(presence_of(&later, &alice_id)[0]["presence"], "offline", "{later}");

    // A sync marks online again; a sent event wakes an idle user.
    sync(&alice, "").await;
    let back = wait_for_status(&bob, &alice_id, "online").await;
    assert_eq!(back["status_msg"], "hi", "a sync keeps the status message: {back}");
    wait_for_status(&bob, &alice_id, "unavailable").await;
    let (status, rooms) = alice.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(status, 200, "{rooms}");
    let room = rooms["joined_rooms"][0].as_str().expect("a room");
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let (status, sent) = alice
        .send(reqwest::Method::PUT, &path, Some(&json!({"msgtype": "m.text", "body": "x"})))
        .await;
    assert_eq!(status, 200, "{sent}");
    let (_, now) = get_status(&bob, &alice_id).await;
    assert_eq!(now["presence"], "online", "{now}");
    assert_eq!(now["currently_active"], true, "{now}");
    wait_for_status(&bob, &alice_id, "offline").await;
}

#[tokio::test]
async fn presence_turned_off() {
    let mut config = TestHomeserver::config();
    config.presence.enabled = false;
    let server = TestHomeserver::start_with(config).await;
    let [(alice_id, alice), (_, bob), (_, carol)] = room_of_three(&server).await;
    let (status, body) = put_status(&alice, &alice_id, json!({"presence": "online"})).await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(get_status(&bob, &alice_id).await, (200, json!({"presence": "offline"})));
    assert_eq!(get_status(&carol, &alice_id).await, (200, json!({"presence": "offline"})));
    let initial = sync(&bob, "").await;
    assert_eq!(initial["presence"], json!({"events": []}), "{initial}");
    assert!(server.storage().presence(&alice_id).await.expect("reads").is_none());
}

/// The status a user set is in storage: a new server on the same storage answers it, and
/// times the user out if they do not come back.
async fn the_set_status_survives_a_restart(backend: crate::Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let first = TestHomeserver::start_on(TestHomeserver::config(), storage.clone()).await;
    let session = first.register_user("alice", "pw").await;
    let alice_id = session.user_id.to_string();
    let alice = Client::new(&first).with_token(&session.access_token);
    let body = json!({"presence": "unavailable", "status_msg": "back soon"});
    assert_eq!(put_status(&alice, &alice_id, body).await.0, 200);
    drop(first);

    let mut config = TestHomeserver::config();
    config.presence.offline_timeout_ms = 300;
    let second = TestHomeserver::start_on(config, storage).await;
    let alice = Client::new(&second).with_token(&session.access_token);
    let (status, kept) = get_status(&alice, &alice_id).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        (&kept["presence"], &kept["status_msg"]),
        (&json!("unavailable"), &json!("back soon"))
    );
    // Nobody syncs for alice: she goes offline, her status message stays.
    let gone = wait_for_status(&alice, &alice_id, "offline").await;
    assert_eq!(gone["status_msg"], "back soon", "{gone}");
}

crate::on_every_backend!(the_set_status_survives_a_restart);

/// a.test and b.test share a room (alice's, bob joined); c.test's carol shares none. Every
/// request to c.test that carries an `m.presence` EDU is counted.
async fn three_servers() -> (TestFederation, [(String, Client); 3], Arc<AtomicUsize>) {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let alice = user(net.server("a.test"), "alice").await;
    let bob = user(net.server("b.test"), "bob").await;
    let carol = user(net.server("c.test"), "carol").await;
    let (status, room) = alice
        .1
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"preset": "public_chat", "room_alias_name": "tea"}),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    let (status, joined) = bob.1.post("/_matrix/client/v3/join/%23tea:a.test", &json!({})).await;
    assert_eq!(status, 200, "{joined}");
    let to_c = Arc::new(AtomicUsize::new(0));
    let seen = to_c.clone();
    net.intercept("c.test", move |_, request| {
        if String::from_utf8_lossy(request.body()).contains("m.presence") {
            seen.fetch_add(1, Ordering::Relaxed);
        }
        Intercepted::Pass
    });
    (net, [alice, bob, carol], to_c)
}

/// Syncs `client` (bounded polling) until `user`'s presence in it is `expected`.
async fn sync_until_presence(client: &Client, user: &str, expected: &str) -> Value {
    let mut since = String::new();
    for _ in 0..40 {
        let answer = sync(client, &format!("timeout=500&set_presence=offline{since}")).await;
        if let Some(content) = presence_of(&answer, user).last()
            && content["presence"] == expected
        {
            return (*content).clone();
        }
        since = format!("&since={}", answer["next_batch"].as_str().expect("a token"));
    }
    panic!("{user} never showed as {expected}");
}

#[tokio::test]
async fn presence_goes_both_ways_between_servers_sharing_a_room() {
    let (net, [(alice_id, alice), (bob_id, bob), (_, carol)], to_c) = three_servers().await;
    let body = json!({"presence": "online", "status_msg": "from a"});
    assert_eq!(put_status(&alice, &alice_id, body).await.0, 200);
    let seen = sync_until_presence(&bob, &alice_id, "online").await;
    assert_eq!(seen["status_msg"], "from a", "{seen}");
    assert!(seen["last_active_ago"].as_u64().is_some(), "{seen}");
    let (status, read) = get_status(&bob, &alice_id).await;
    assert_eq!((status, &read["status_msg"]), (200, &json!("from a")), "{read}");

    let body = json!({"presence": "unavailable", "status_msg": "from b"});
    assert_eq!(put_status(&bob, &bob_id, body).await.0, 200);
    let seen = sync_until_presence(&alice, &bob_id, "unavailable").await;
    assert_eq!(seen["status_msg"], "from b", "{seen}");

    // carol's server was sent nothing, and she sees nothing.
    assert_eq!(to_c.load(Ordering::Relaxed), 0);
    let initial = sync(&carol, "set_presence=offline").await;
    assert!(presence_of(&initial, &alice_id).is_empty(), "{initial}");
    let (status, refused) = get_status(&carol, &alice_id).await;
    assert_eq!((status, errcode(&refused)), (403, "M_FORBIDDEN"), "{refused}");
    drop(net);
}

fn edu(content: Value) -> matrix_core::Value {
    let text = json!({"edu_type": "m.presence", "content": content}).to_string();
    matrix_core::json::parse_lenient(text.as_bytes()).expect("json")
}

#[tokio::test]
async fn forged_presence_updates_are_dropped() {
    let (net, [(alice_id, alice), (bob_id, _), _], _) = three_servers().await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let client = b.federation_client().expect("federation is on");
    let entry = |user: &str, status: &str| {
        json!({"user_id": user, "presence": "online", "status_msg": status,
               "last_active_ago": 5, "currently_active": true})
    };
    let mut many: Vec<Value> = (0..150).map(|i| entry(&format!("@u{i}:b.test"), "many")).collect();
    many.push(entry(&bob_id, "past the bound"));
    let edus = vec![
        // About a user of a (b may not speak for them), of a third server, and a user of b
        // who shares no room with a's users.
        edu(json!({"push": [entry(&alice_id, "forged"), entry("@carol:c.test", "forged"),
                            entry("@mallory:b.test", "forged")]})),
        // Malformed entries of bob: an unknown state, a status too long, a negative age.
        edu(json!({"push": [
            {"user_id": bob_id, "presence": "busy"},
            {"user_id": bob_id, "presence": "online", "status_msg": "x".repeat(2000)},
            {"user_id": bob_id, "presence": "online", "last_active_ago": -5},
            {"user_id": bob_id, "presence": "online", "status_msg": 7},
        ]})),
        // bob's entry past the bound of one EDU.
        edu(json!({"push": many})),
        edu(json!({"push": "not a list"})),
    ];
    let answer = client.send_transaction("a.test", "presence-forged", Vec::new(), edus).await;
    assert!(answer.is_ok(), "{answer:?}");
    let storage = a.storage();
    for user in [alice_id.as_str(), "@carol:c.test", "@mallory:b.test", bob_id.as_str()] {
        assert!(storage.presence(user).await.expect("reads").is_none(), "{user}");
    }
    let initial = sync(&alice, "set_presence=offline").await;
    assert!(presence_of(&initial, &bob_id).is_empty(), "{initial}");

    // The honest update is taken.
    let edus = vec![edu(json!({"push": [entry(&bob_id, "honest")]}))];
    let answer = client.send_transaction("a.test", "presence-honest", Vec::new(), edus).await;
    assert!(answer.is_ok(), "{answer:?}");
    let seen = get_status(&alice, &bob_id).await.1;
    assert_eq!((&seen["presence"], &seen["status_msg"]), (&json!("online"), &json!("honest")));
    assert!(seen["last_active_ago"].as_u64().is_some_and(|ago| ago < 10_000), "{seen}");
}
