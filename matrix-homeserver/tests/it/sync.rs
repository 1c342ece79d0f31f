//! `/sync` (initial, incremental, long-poll, filters, invites and leaves, ephemeral events,
//! account data, to-device), and the rest a client starts with: push rules, keys, profile,
//! devices, password, media, rate limits.

use std::time::{Duration, Instant};

use matrix_homeserver::{Config, RateLimit, RegistrationMode};
use serde_json::{Value, json};

use crate::rooms::{create, urlencode, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// Sends a text message; answers its event id.
async fn send(client: &Client, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = crate::rooms::send(client, room, txn, text).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an id").to_owned()
}

async fn sync(client: &Client, query: &str) -> Value {
    let (status, body) = client.get(&format!("{V3}/sync?{query}")).await;
    assert_eq!(status, 200, "{body}");
    check("sync.yaml", "/sync", "get", 200, &body);
    body
}

async fn initial_and_incremental_sync_with_long_poll(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"name": "Chat", "invite": [bob_id]})).await;
    let first = send(&alice, &room, "1", "hello").await;

    // Bob is invited: the room is in `invite` with its stripped state.
    let initial = sync(&bob, "").await;
    let invite = &initial["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite.as_array().expect("events").iter().any(|e| e["type"] == "m.room.name"),
        "{invite}"
    );
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200);
    let since = initial["next_batch"].as_str().expect("a token").to_owned();
    let joined = sync(&bob, &format!("since={since}")).await;
    let room_json = &joined["rooms"]["join"][&room];
    // A new join is sent whole: the state before the timeline plus the timeline hold the
    // room's creation.
    let timeline = room_json["timeline"]["events"].as_array().expect("timeline");
    let state = room_json["state"]["events"].as_array().expect("state");
    assert!(state.iter().chain(timeline).any(|e| e["type"] == "m.room.create"), "{room_json}");
    assert!(timeline.iter().any(|e| e["event_id"] == first.as_str()));

    // A long poll returns as soon as a message arrives, with the sender's transaction id only
    // for the sender.
    let since = joined["next_batch"].as_str().expect("a token").to_owned();
    let started = Instant::now();
    let poll = {
        let since = since.clone();
        let bob = bob.clone();
        tokio::spawn(async move { sync(&bob, &format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = send(&alice, &room, "2", "are you there").await;
    let delivered = poll.await.expect("the poll");
    assert!(started.elapsed() < Duration::from_secs(5), "woken, not timed out");
    let events = delivered["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .clone();
    assert_eq!(events.len(), 1, "{delivered}");
    assert_eq!(events[0]["event_id"], second.as_str());
    assert!(events[0]["unsigned"].get("transaction_id").is_none());
    let (status, own) = alice.get(&format!("{V3}/rooms/{room}/event/{second}")).await;
    assert_eq!(status, 200);
    assert_eq!(own["unsigned"]["transaction_id"], "2");
    // Another user on a device of the same id does not see it either.
    let (_, me) = alice.get(&format!("{V3}/account/whoami")).await;
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
                       "password": "pw", "device_id": me["device_id"]});
    let (status, session) = Client::new(&server).post(&format!("{V3}/login"), &login).await;
    assert_eq!(status, 200, "{session}");
    let twin = Client::new(&server).with_token(session["access_token"].as_str().expect("a token"));
    let (_, seen) = twin.get(&format!("{V3}/rooms/{room}/event/{second}")).await;
    assert!(seen["unsigned"].get("transaction_id").is_none(), "{seen}");

    // A poll with nothing new waits for its timeout and answers the same position.
    let since = delivered["next_batch"].as_str().expect("a token").to_owned();
    let started = Instant::now();
    let idle = sync(&bob, &format!("since={since}&timeout=300")).await;
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert!(idle["rooms"]["join"].as_object().expect("join").is_empty(), "{idle}");

    // A limited timeline says so and gives a token to paginate from.
    // A state change in the gap before a limited timeline is in `state`; what the client
    // has is not.
    let (status, _) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/state/m.room.name"),
            Some(&json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..15 {
        send(&alice, &room, &format!("many{i}"), &format!("n{i}")).await;
    }
    let limited = sync(&bob, &format!("since={since}")).await;
    let timeline = &limited["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true);
    let state = limited["rooms"]["join"][&room]["state"]["events"].as_array().expect("state");
    let kinds: Vec<&str> = state.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["m.room.name"], "{state:?}");
    assert_eq!(state[0]["content"]["name"], "Renamed");
    assert_eq!(timeline["events"].as_array().expect("events").len(), 10);
    let prev = timeline["prev_batch"].as_str().expect("prev_batch");
    let (status, page) =
        bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5&from={prev}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["chunk"][0]["content"]["body"], "n4");

    // Leaving shows the room in `leave`.
    let since = limited["next_batch"].as_str().expect("a token").to_owned();
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let left = sync(&bob, &format!("since={since}")).await;
    assert!(left["rooms"]["leave"].get(&room).is_some(), "{left}");
    let (status, body) = bob.get(&format!("{V3}/sync?since=garbage")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

async fn filters_lazy_loading_and_ephemeral_events(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (carol, _) = user(&server, "carol").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    for client in [&bob, &carol] {
        let (status, _) = client.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
        assert_eq!(status, 200);
    }
    send(&bob, &room, "b", "from bob").await;

    // A stored filter: timeline limit 1, lazy-loaded members.
    let filter = json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}});
    let (status, created) = alice.post(&format!("{V3}/user/{alice_id}/filter"), &filter).await;
    assert_eq!(status, 200, "{created}");
    check("filter.yaml", "/user/{userId}/filter", "post", 200, &created);
    let id = created["filter_id"].as_str().expect("an id");
    let (status, back) = alice.get(&format!("{V3}/user/{alice_id}/filter/{id}")).await;
    assert_eq!((status, &back), (200, &filter));
    let body = sync(&alice, &format!("filter={id}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["events"].as_array().expect("events").len(), 1);
    let members: Vec<&str> = joined["state"]["events"]
        .as_array()
        .expect("state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert!(
        members.contains(&"@bob:localhost") && !members.contains(&"@carol:localhost"),
        "{members:?}"
    );
    assert_eq!(joined["summary"]["m.joined_member_count"], 3);
    // An inline filter that keeps only some types.
    let inline = urlencode(r#"{"room":{"timeline":{"types":["m.room.member"]}}}"#);
    let body = sync(&alice, &format!("filter={inline}")).await;
    let timeline =
        body["rooms"]["join"][&room]["timeline"]["events"].as_array().expect("events").clone();
    assert!(!timeline.is_empty() && timeline.iter().all(|e| e["type"] == "m.room.member"));

    // Typing, receipts, account data and tags arrive incrementally.
    let since = body["next_batch"].as_str().expect("a token").to_owned();
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/typing/@bob:localhost"),
            Some(&json!({"typing": true, "timeout": 5000})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/typing/@alice:localhost"),
            Some(&json!({"typing": true})),
        )
        .await;
    assert_eq!(status, 403);
    let last = send(&bob, &room, "b2", "read me").await;
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{last}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = alice
        .post(&format!("{V3}/rooms/{room}/read_markers"), &json!({"m.fully_read": last}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/user/{alice_id}/account_data/org.example.settings"),
            Some(&json!({"theme": "dark"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/user/{alice_id}/rooms/{room}/tags/m.favourite"),
            Some(&json!({"order": 0.5})),
        )
        .await;
    assert_eq!(status, 200);
    let body = sync(&alice, &format!("since={since}")).await;
    let joined = &body["rooms"]["join"][&room];
    let ephemeral = joined["ephemeral"]["events"].as_array().expect("ephemeral");
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").expect("typing");
    assert_eq!(typing["content"]["user_ids"], json!(["@bob:localhost"]));
    let receipt = ephemeral.iter().find(|e| e["type"] == "m.receipt").expect("receipt");
    assert!(receipt["content"][&last]["m.read"].get(&alice_id).is_some(), "{receipt}");
    let room_data = joined["account_data"]["events"].as_array().expect("room account data");
    assert!(
        room_data
            .iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == last.as_str())
    );
    assert!(
        room_data
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.5)
    );
    let global = body["account_data"]["events"].as_array().expect("account data");
    assert!(global.iter().any(|e| e["type"] == "org.example.settings"));
    let (status, data) =
        alice.get(&format!("{V3}/user/{alice_id}/account_data/org.example.settings")).await;
    assert_eq!((status, &data), (200, &json!({"theme": "dark"})));
    let (status, body) =
        alice.get(&format!("{V3}/user/{alice_id}/account_data/org.example.missing")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) =
        bob.get(&format!("{V3}/user/{alice_id}/account_data/org.example.settings")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, tags) = alice.get(&format!("{V3}/user/{alice_id}/rooms/{room}/tags")).await;
    assert_eq!(status, 200);
    check("tags.yaml", "/user/{userId}/rooms/{roomId}/tags", "get", 200, &tags);
}

async fn unread_counts_follow_messages_mentions_and_receipts(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200);
    send(&bob, &room, "1", "one").await;
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/2"),
            Some(&json!({"msgtype": "m.text", "body": "alice?", "m.mentions": {"user_ids": [alice_id]}})),
        )
        .await;
    assert_eq!(status, 200);
    let last = send(&bob, &room, "3", "three").await;
    send(&alice, &room, "a", "my own message does not count").await;
    let counts = |body: &Value| body["rooms"]["join"][&room]["unread_notifications"].clone();
    let body = sync(&alice, "").await;
    assert_eq!(counts(&body), json!({"notification_count": 3, "highlight_count": 1}));
    let since = body["next_batch"].as_str().expect("a token").to_owned();
    let (status, _) =
        alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{last}"), &json!({})).await;
    assert_eq!(status, 200);
    let body = sync(&alice, &format!("since={since}")).await;
    assert_eq!(counts(&body), json!({"notification_count": 0, "highlight_count": 0}));
    // Bob's own messages are not unread for him.
    let body = sync(&bob, "").await;
    assert_eq!(counts(&body)["notification_count"], 1);
}

async fn keys_to_device_push_rules_and_profile(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let alice_session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&alice_session.access_token);
    let (bob, _) = user(&server, "bob").await;
    let device = alice_session.device_id.to_string();

    let (status, rules) = alice.get(&format!("{V3}/pushrules/")).await;
    assert_eq!(status, 200);
    check("pushrules.yaml", "/pushrules/", "get", 200, &rules);
    assert!(
        rules["global"]["override"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.master")
    );

    let keys = json!({"user_id": "@alice:localhost", "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                      "keys": {format!("curve25519:{device}"): "abc", format!("ed25519:{device}"): "def"}, "signatures": {}});
    let (status, body) = alice.post(&format!("{V3}/keys/upload"), &json!({"device_keys": keys, "one_time_keys": {"signed_curve25519:AAA": {"key": "k1"}}})).await;
    assert_eq!(status, 200, "{body}");
    check("keys.yaml", "/keys/upload", "post", 200, &body);
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 1);
    let (status, body) = bob
        .post(&format!("{V3}/keys/query"), &json!({"device_keys": {"@alice:localhost": []}}))
        .await;
    assert_eq!(status, 200);
    check("keys.yaml", "/keys/query", "post", 200, &body);
    assert_eq!(
        body["device_keys"]["@alice:localhost"][&device]["keys"][format!("ed25519:{device}")],
        "def"
    );
    let (status, body) = bob
        .post(
            &format!("{V3}/keys/claim"),
            &json!({"one_time_keys": {"@alice:localhost": {&device: "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["one_time_keys"]["@alice:localhost"][&device]["signed_curve25519:AAA"]["key"],
        "k1"
    );

    let initial = sync(&alice, "").await;
    let since = initial["next_batch"].as_str().expect("a token").to_owned();
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/sendToDevice/m.test/t1"),
            Some(&json!({"messages": {"@alice:localhost": {"*": {"hello": "device"}}}})),
        )
        .await;
    assert_eq!(status, 200);
    let body = sync(&alice, &format!("since={since}")).await;
    assert_eq!(body["to_device"]["events"][0]["content"]["hello"], "device", "{body}");
    let next = body["next_batch"].as_str().expect("a token").to_owned();
    let again = sync(&alice, &format!("since={next}")).await;
    assert!(again["to_device"]["events"].as_array().expect("events").is_empty(), "delivered once");

    // Profile: set, read, and carried into member events.
    let room = create(&alice, json!({})).await;
    let (status, _) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/profile/@alice:localhost/displayname"),
            Some(&json!({"displayname": "Alice"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, profile) = bob.get(&format!("{V3}/profile/@alice:localhost")).await;
    assert_eq!((status, &profile["displayname"]), (200, &json!("Alice")));
    let (_, member) =
        alice.get(&format!("{V3}/rooms/{room}/state/m.room.member/@alice:localhost")).await;
    assert_eq!(member["displayname"], "Alice");
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/profile/@alice:localhost/displayname"),
            Some(&json!({"displayname": "Mallory"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = bob.get(&format!("{V3}/profile/@nobody:localhost")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
}

async fn devices_password_and_deactivation_need_the_password(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let session = server.register_user("alice", "pw").await;
    let second = server.homeserver().login("alice", "pw").await.expect("a second login");
    let alice = Client::new(&server).with_token(&session.access_token);

    let (status, devices) = alice.get(&format!("{V3}/devices")).await;
    assert_eq!(status, 200);
    check("device_management.yaml", "/devices", "get", 200, &devices);
    assert_eq!(devices["devices"].as_array().expect("devices").len(), 2);
    let other = second.device_id.to_string();
    let (status, _) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/devices/{other}"),
            Some(&json!({"display_name": "phone"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, device) = alice.get(&format!("{V3}/devices/{other}")).await;
    assert_eq!(device["display_name"], "phone");

    // Deleting asks for the password first, refuses a wrong one, then deletes.
    let (status, body) = alice
        .send(reqwest::Method::DELETE, &format!("{V3}/devices/{other}"), Some(&json!({})))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["flows"][0]["stages"], json!(["m.login.password"]));
    let session_id = body["session"].clone();
    let auth = |password: &str| {
        json!({"auth": {"type": "m.login.password", "session": session_id, "password": password,
                                                "identifier": {"type": "m.id.user", "user": "alice"}}})
    };
    let (status, _) = alice
        .send(reqwest::Method::DELETE, &format!("{V3}/devices/{other}"), Some(&auth("wrong")))
        .await;
    assert_eq!(status, 401);
    let (status, body) = alice
        .send(reqwest::Method::DELETE, &format!("{V3}/devices/{other}"), Some(&auth("pw")))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = Client::new(&server)
        .with_token(&second.access_token)
        .get(&format!("{V3}/account/whoami"))
        .await;
    assert_eq!(status, 401, "the deleted device's token is gone");

    // A new password; the old one stops working.
    let mut body = auth("pw");
    body["new_password"] = json!("better");
    let (status, _) = alice.post(&format!("{V3}/account/password"), &body).await;
    assert_eq!(status, 200);
    assert!(server.homeserver().login("alice", "pw").await.is_err());
    assert!(server.homeserver().login("alice", "better").await.is_ok());

    // Deactivation: the account can no longer log in.
    let (status, _) = alice
        .post(
            &format!("{V3}/account/deactivate"),
            &json!({"auth": {"type": "m.login.password", "password": "better"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(server.homeserver().login("alice", "better").await.is_err());
}

async fn the_smaller_endpoints(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;

    // Tags can be removed.
    let tag = format!("{V3}/user/{alice_id}/rooms/{room}/tags/u.work");
    let (status, _) = alice.send(reqwest::Method::PUT, &tag, Some(&json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = alice.send(reqwest::Method::DELETE, &tag, None).await;
    assert_eq!(status, 200);
    let (_, tags) = alice.get(&format!("{V3}/user/{alice_id}/rooms/{room}/tags")).await;
    assert_eq!(tags, json!({"tags": {}}));

    // The avatar, and an unknown profile field.
    let avatar = format!("{V3}/profile/{alice_id}/avatar_url");
    let (status, _) = alice
        .send(reqwest::Method::PUT, &avatar, Some(&json!({"avatar_url": "mxc://localhost/a"})))
        .await;
    assert_eq!(status, 200);
    let (status, body) = alice.get(&avatar).await;
    assert_eq!((status, &body), (200, &json!({"avatar_url": "mxc://localhost/a"})));
    check("profile.yaml", "/profile/{userId}/{keyName}", "get", 200, &body);
    let (status, _) = alice.get(&format!("{V3}/profile/{alice_id}/mood")).await;
    assert_eq!(status, 404);

    // Key changes between two sync tokens.
    let initial = sync(&alice, "").await;
    let from = initial["next_batch"].as_str().expect("a token").to_owned();
    let (_, me) = alice.get(&format!("{V3}/account/whoami")).await;
    let device = me["device_id"].as_str().expect("a device").to_owned();
    let keys = json!({"user_id": alice_id, "device_id": device, "algorithms": [], "keys": {}, "signatures": {}});
    let (status, _) = alice.post(&format!("{V3}/keys/upload"), &json!({"device_keys": keys})).await;
    assert_eq!(status, 200);
    let to = sync(&alice, &format!("since={from}")).await;
    assert_eq!(to["device_lists"]["changed"], json!([alice_id]));
    let to = to["next_batch"].as_str().expect("a token").to_owned();
    let (status, body) = alice.get(&format!("{V3}/keys/changes?from={from}&to={to}")).await;
    assert_eq!(status, 200, "{body}");
    check("keys.yaml", "/keys/changes", "get", 200, &body);
    assert_eq!(body["changed"], json!([alice_id]));
    // Keys of another device are refused.
    let wrong = json!({"device_keys": {"user_id": alice_id, "device_id": "OTHER", "algorithms": [], "keys": {}, "signatures": {}}});
    let (status, body) = alice.post(&format!("{V3}/keys/upload"), &wrong).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));

    // The media limit, and the old login path some clients still use.
    let (status, body) = alice.get("/_matrix/client/v1/media/config").await;
    assert_eq!(status, 200);
    assert!(body["m.upload.size"].as_u64().is_some_and(|n| n > 0), "{body}");
    let (status, body) = Client::new(&server).get("/_matrix/client/r0/login").await;
    assert_eq!(status, 200);
    assert_eq!(body["flows"][0]["type"], "m.login.password");
}

async fn media_upload_and_download(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let session = server.register_user("alice", "pw").await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/_matrix/media/v3/upload?filename=cat.png", server.base_url()))
        .bearer_auth(&session.access_token)
        .header("content-type", "image/png")
        .body(vec![1u8, 2, 3, 4])
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    let uri = body["content_uri"].as_str().expect("a uri");
    let path = uri.strip_prefix("mxc://").expect("an mxc uri");
    let download = http
        .get(format!("{}/_matrix/client/v1/media/download/{path}", server.base_url()))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .expect("answers");
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(download.bytes().await.expect("bytes").as_ref(), [1, 2, 3, 4]);
    let missing = http
        .get(format!("{}/_matrix/media/v3/download/localhost/nothing", server.base_url()))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status().as_u16(), 404);
}

async fn rate_limits_answer_429_with_retry_after(backend: crate::Backend) {
    let mut config = Config::new("localhost");
    config.registration.mode = RegistrationMode::Open;
    config.rate_limits.message = RateLimit::new(0.5, 3.0);
    let server = match crate::start_with(backend, config).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    // createRoom has a bucket of its own (`rate_limits.create_room`).
    let room = create(&alice, json!({})).await;
    let mut statuses = Vec::new();
    let mut retry = Value::Null;
    for i in 0..4 {
        let (status, body) = alice
            .send(
                reqwest::Method::PUT,
                &format!("{V3}/rooms/{room}/send/m.room.message/{i}"),
                Some(&json!({"body": "x", "msgtype": "m.text"})),
            )
            .await;
        statuses.push(status);
        if status == 429 {
            assert_eq!(errcode(&body), "M_LIMIT_EXCEEDED");
            retry = body["retry_after_ms"].clone();
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert!(retry.as_u64().is_some_and(|ms| ms > 0 && ms <= 2000), "{retry}");
}

/// `use_state_after`: `state_after` (never `state`) holds the state at the end of the
/// timeline less what the client had at its token, the timeline's own state events included;
/// all of it in an initial sync; in a left room, the state at the leave.
async fn state_after_is_the_state_at_the_end_of_the_timeline(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat", "name": "First"})).await;
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200);
    let state_keys = |section: &Value| -> Vec<(String, String, String)> {
        let mut keys: Vec<_> = section["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                let text = |k: &str| e[k].as_str().expect("a string").to_owned();
                (text("type"), text("state_key"), text("event_id"))
            })
            .collect();
        keys.sort();
        keys
    };
    let (status, current) = alice.get(&format!("{V3}/rooms/{room}/state")).await;
    assert_eq!(status, 200);
    let mut whole: Vec<_> = current
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().expect("a string").to_owned();
            (text("type"), text("state_key"), text("event_id"))
        })
        .collect();
    whole.sort();

    // Initial: the whole current state, and no `state`.
    let initial = sync(&alice, "use_state_after=true").await;
    let joined = &initial["rooms"]["join"][&room];
    assert!(joined.get("state").is_none(), "{joined}");
    assert_eq!(state_keys(&joined["state_after"]), whole);

    // Incremental: the name set twice and a topic, all in the timeline; `state_after` holds
    // the last name and the topic (and not the first name), the rest the client had.
    let since = initial["next_batch"].as_str().expect("a token").to_owned();
    let mut ids = Vec::new();
    for (kind, content) in [
        ("m.room.name", json!({"name": "Second"})),
        ("m.room.topic", json!({"topic": "Tea"})),
        ("m.room.name", json!({"name": "Third"})),
    ] {
        let (status, body) = alice.put(&format!("{V3}/rooms/{room}/state/{kind}/"), &content).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["event_id"].as_str().expect("an id").to_owned());
    }
    send(&alice, &room, "after", "after the changes").await;
    let next = sync(&alice, &format!("since={since}&use_state_after=true")).await;
    let joined = &next["rooms"]["join"][&room];
    assert!(joined.get("state").is_none(), "{joined}");
    let after = state_keys(&joined["state_after"]);
    let expected = vec![
        ("m.room.name".to_owned(), String::new(), ids[2].clone()),
        ("m.room.topic".to_owned(), String::new(), ids[1].clone()),
    ];
    assert_eq!(after, expected, "{joined}");
    // Without the parameter, `state` as before: the timeline holds the changes.
    let legacy = sync(&alice, &format!("since={since}")).await;
    let joined = &legacy["rooms"]["join"][&room];
    assert!(joined.get("state_after").is_none(), "{joined}");
    assert_eq!(state_keys(&joined["state"]), Vec::new(), "{joined}");
    // A bad value is refused.
    let (status, body) = alice.get(&format!("{V3}/sync?use_state_after=yes")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // bob leaves after a change: his left room's `state_after` ends with his leave.
    let since = sync(&bob, "").await["next_batch"].as_str().expect("a token").to_owned();
    let (status, body) = alice
        .put(&format!("{V3}/rooms/{room}/state/m.room.topic/"), &json!({"topic": "Coffee"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let topic = body["event_id"].as_str().expect("an id").to_owned();
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    // A change after bob left is not his to see, in `state_after` either.
    let (status, body) = alice
        .put(&format!("{V3}/rooms/{room}/state/m.room.topic/"), &json!({"topic": "Secret"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let secret = body["event_id"].as_str().expect("an id").to_owned();
    let left = sync(&bob, &format!("since={since}&use_state_after=true")).await;
    let left = &left["rooms"]["leave"][&room];
    assert!(left.get("state").is_none(), "{left}");
    let after = state_keys(&left["state_after"]);
    assert!(after.iter().any(|(k, _, id)| k == "m.room.topic" && *id == topic), "{left}");
    assert!(after.iter().any(|(k, key, _)| k == "m.room.member" && *key == bob_id), "{left}");
    assert!(!after.iter().any(|(_, _, id)| *id == secret), "{left}");
    assert!(!left.to_string().contains("Secret"), "{left}");
}

crate::on_every_backend!(
    state_after_is_the_state_at_the_end_of_the_timeline,
    initial_and_incremental_sync_with_long_poll,
    filters_lazy_loading_and_ephemeral_events,
    unread_counts_follow_messages_mentions_and_receipts,
    keys_to_device_push_rules_and_profile,
    devices_password_and_deactivation_need_the_password,
    media_upload_and_download,
    the_smaller_endpoints,
    rate_limits_answer_429_with_retry_after
);
