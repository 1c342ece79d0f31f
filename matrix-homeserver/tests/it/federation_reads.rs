//! Federation reads (`/event`, `/state`, `/state_ids`, `/event_auth`, `/backfill`,
//! `/get_missing_events`), server ACLs, our users' keys and the room directory, asked by
//! other in-process servers (`TestFederation`), honest ones and attackers.
//!
//! Remote joins are not there yet, so no user of another server can be joined here: what a
//! server with joined (or departed) users sees is tested over the visibility function
//! (`services/rooms/server_visibility.rs` unit tests); here, world-readable history, servers
//! never in a room (also with a banned user), ACLs and malformed or oversized requests.

use matrix_homeserver::matrix_federation::FederationError;
use matrix_homeserver::testing::{TestFederation, TestHomeserver};
use serde_json::{Value, json};

use crate::Client;
use crate::spec::check_federation;

const V3: &str = "/_matrix/client/v3";

/// A matrix-core object as serde JSON, to look into.
fn serde(object: &matrix_core::Object) -> Value {
    let text = matrix_core::json::to_canonical_string(&matrix_core::Value::Object(object.clone()));
    serde_json::from_str(&text).expect("canonical JSON parses")
}

/// The HTTP status of a refused federation request (panics if it was not refused).
fn status<T: std::fmt::Debug>(result: Result<T, FederationError>) -> u16 {
    match result {
        Err(FederationError::Status { status, .. }) => status,
        other => panic!("expected an error status, got {other:?}"),
    }
}

/// The errcode of a refused federation request.
fn errcode<T: std::fmt::Debug>(result: Result<T, FederationError>) -> String {
    match result {
        Err(e) => e.errcode().unwrap_or_default(),
        Ok(body) => panic!("expected an error, got {body:?}"),
    }
}

/// Alice on `server` with a client for her.
async fn alice(server: &TestHomeserver) -> (matrix_homeserver::Session, Client) {
    let session = server.register_user("alice", "pw").await;
    let client = Client::new(server).with_token(&session.access_token);
    (session, client)
}

/// Sends a message; answers its event id.
async fn say(client: &Client, room: &str, body: &str) -> String {
    // Each test says each body once: it is the transaction id too.
    let path = format!("{V3}/rooms/{room}/send/m.room.message/{body}");
    let content = json!({"msgtype": "m.text", "body": body});
    let (code, answer) = client.send(reqwest::Method::PUT, &path, Some(&content)).await;
    assert_eq!(code, 200, "{answer}");
    answer["event_id"].as_str().expect("an event id").to_owned()
}

/// Sets a state event; answers its event id.
async fn set_state(client: &Client, room: &str, kind: &str, content: Value) -> String {
    let path = format!("{V3}/rooms/{room}/state/{kind}/");
    let (code, answer) = client.send(reqwest::Method::PUT, &path, Some(&content)).await;
    assert_eq!(code, 200, "{answer}");
    answer["event_id"].as_str().expect("an event id").to_owned()
}

/// The bodies of the messages among `pdus`.
fn bodies(pdus: &Value) -> Vec<String> {
    pdus.as_array()
        .expect("a list of PDUs")
        .iter()
        .filter_map(|pdu| pdu["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn types(pdus: &Value) -> Vec<String> {
    let list = pdus.as_array().expect("a list of PDUs");
    list.iter().filter_map(|pdu| pdu["type"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn a_server_never_in_a_world_readable_room_reads_only_its_world_readable_history() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let (alice_session, alice) = alice(a).await;
    let room = a.create_room(&alice_session, Some("Open")).await;
    let secret = say(&alice, &room, "before").await;
    let opened = set_state(
        &alice,
        &room,
        "m.room.history_visibility",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    let public = say(&alice, &room, "after").await;
    let b_client = b.federation_client().expect("federation is on");

    // /event: what was said once world-readable, and the change itself; not what came before.
    let event = b_client.event("a.test", &public).await.expect("b may read it");
    let event = serde(&event);
    check_federation("events.yaml", "/event/{eventId}", "get", 200, &event);
    assert_eq!(event["origin"], "a.test");
    assert_eq!(bodies(&event["pdus"]), ["after"]);
    let change = serde(&b_client.event("a.test", &opened).await.expect("b may read the change"));
    assert_eq!(change["pdus"][0]["content"]["history_visibility"], "world_readable");
    assert_eq!(status(b_client.event("a.test", &secret).await), 404);
    assert_eq!(status(b_client.event("a.test", "$unknown").await), 404);

    // /backfill from the latest: the world-readable part, deepest first; the rest left out.
    let backfill = serde(&b_client.backfill("a.test", &room, &[&public], 50).await.expect("ok"));
    check_federation("backfill.yaml", "/backfill/{roomId}", "get", 200, &backfill);
    assert_eq!(bodies(&backfill["pdus"]), ["after"]);
    assert_eq!(types(&backfill["pdus"]), ["m.room.message", "m.room.history_visibility"]);
    let text = backfill.to_string();
    assert!(!text.contains("before"), "a message from before leaked: {text}");
    // An oversized limit is lowered, an unknown id skipped.
    let huge = b_client.backfill("a.test", &room, &[&public, "$nope"], 1_000_000).await;
    assert_eq!(bodies(&serde(&huge.expect("ok"))["pdus"]), ["after"]);
    let only_unknown =
        serde(&b_client.backfill("a.test", &room, &["$nope"], 10).await.expect("ok"));
    assert_eq!(only_unknown["pdus"], json!([]));
    let limited = serde(&b_client.backfill("a.test", &room, &[&public], 1).await.expect("ok"));
    assert_eq!(types(&limited["pdus"]), ["m.room.message"]);

    // /get_missing_events: between the change (excluded) and the latest (excluded) nothing;
    // back from the latest with no earliest bound, only the change is visible.
    let missing = b_client.get_missing_events("a.test", &room, &[], &[&public], 10, 0).await;
    let missing = serde(&missing.expect("ok"));
    check_federation("backfill.yaml", "/get_missing_events/{roomId}", "post", 200, &missing);
    assert_eq!(types(&missing["events"]), ["m.room.history_visibility"]);
    let none = b_client.get_missing_events("a.test", &room, &[&opened], &[&public], 10, 0).await;
    assert_eq!(serde(&none.expect("ok"))["events"], json!([]));
    let oversized = b_client.get_missing_events("a.test", &room, &[], &[&public], 100_000, 0).await;
    let oversized = serde(&oversized.expect("a large limit is lowered"));
    assert!(oversized["events"].as_array().expect("a list").len() <= 20);

    // /state_ids and /state at a visible event: the state before it, with its auth chain.
    let ids = serde(&b_client.state_ids("a.test", &room, &public).await.expect("ok"));
    check_federation("events.yaml", "/state_ids/{roomId}", "get", 200, &ids);
    let pdu_ids = ids["pdu_ids"].as_array().expect("a list");
    assert!(pdu_ids.iter().any(|id| *id == opened), "{ids}");
    assert!(!ids["auth_chain_ids"].as_array().expect("a list").is_empty());
    let state = serde(&b_client.state("a.test", &room, &public).await.expect("ok"));
    check_federation("events.yaml", "/state/{roomId}", "get", 200, &state);
    assert_eq!(state["pdus"].as_array().expect("a list").len(), pdu_ids.len());
    assert!(types(&state["pdus"]).contains(&"m.room.create".to_owned()));
    // ...but not anchored at an event b may not see.
    assert_eq!(status(b_client.state_ids("a.test", &room, &secret).await), 404);
    assert_eq!(status(b_client.state("a.test", &room, &secret).await), 404);
    assert_eq!(status(b_client.event_auth("a.test", &room, &secret).await), 404);

    // /timestamp_to_event: the latest visible event going back from the future; going
    // forwards from the room's start, the nearest event is hidden from b: not found.
    let far = u64::MAX / 4;
    let latest =
        serde(&b_client.timestamp_to_event("a.test", &room, far, false).await.expect("ok"));
    check_federation("events.yaml", "/timestamp_to_event/{roomId}", "get", 200, &latest);
    assert_eq!(latest["event_id"], public.as_str());
    assert_eq!(status(b_client.timestamp_to_event("a.test", &room, 1, true).await), 404);
    assert_eq!(status(b_client.timestamp_to_event("a.test", &room, far, true).await), 404);

    // /event_auth: the event's auth chain (power levels, alice's join; the create event too
    // in versions before 12, whose events name it).
    let auth = serde(&b_client.event_auth("a.test", &room, &public).await.expect("ok"));
    check_federation("event_auth.yaml", "/event_auth/{roomId}/{eventId}", "get", 200, &auth);
    let auth_types = types(&auth["auth_chain"]);
    assert!(auth_types.contains(&"m.room.power_levels".to_owned()), "{auth_types:?}");
    assert!(auth_types.contains(&"m.room.member".to_owned()), "{auth_types:?}");

    // An event of another room named with this room: unknown here.
    let other = a.create_room(&alice_session, Some("Other")).await;
    let elsewhere = say(&alice, &other, "elsewhere").await;
    assert_eq!(status(b_client.state_ids("a.test", &room, &elsewhere).await), 404);
    assert_eq!(status(b_client.event_auth("a.test", &room, &elsewhere).await), 404);
    let crossed = serde(&b_client.backfill("a.test", &room, &[&elsewhere], 10).await.expect("ok"));
    assert_eq!(crossed["pdus"], json!([]));
    // ...and the other room itself is closed to b.
    assert_eq!(
        errcode(b_client.backfill("a.test", &other, &[&elsewhere], 10).await),
        "M_FORBIDDEN"
    );
    // An unknown room.
    assert_eq!(status(b_client.state_ids("a.test", "!nope:a.test", &public).await), 404);
    assert_eq!(status(b_client.backfill("a.test", "!nope:a.test", &[&public], 10).await), 404);
}

#[tokio::test]
async fn a_server_never_joined_reads_nothing_of_a_private_room() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let (alice_session, alice) = alice(a).await;
    let room = a.create_room(&alice_session, Some("Private")).await;
    let message = say(&alice, &room, "secret").await;
    // b has a user with a member event here (banned), but none ever joined.
    let ban = json!({"user_id": "@bob:b.test", "reason": "preemptive"});
    let (code, answer) = alice.post(&format!("{V3}/rooms/{room}/ban"), &ban).await;
    assert_eq!(code, 200, "{answer}");
    let b_client = b.federation_client().expect("federation is on");

    for refused in [
        errcode(b_client.event("a.test", &message).await),
        errcode(b_client.state("a.test", &room, &message).await),
        errcode(b_client.state_ids("a.test", &room, &message).await),
        errcode(b_client.event_auth("a.test", &room, &message).await),
        errcode(b_client.backfill("a.test", &room, &[&message], 10).await),
        errcode(b_client.get_missing_events("a.test", &room, &[], &[&message], 10, 0).await),
    ] {
        assert_eq!(refused, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn a_server_the_acl_denies_reads_nothing_and_cannot_join() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (net.server("a.test"), net.server("b.test"), net.server("c.test"));
    let (alice_session, alice) = alice(a).await;
    let room = a.create_room(&alice_session, Some("Guarded")).await;
    set_state(
        &alice,
        &room,
        "m.room.history_visibility",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    set_state(&alice, &room, "m.room.join_rules", json!({"join_rule": "public"})).await;
    let acl = json!({"allow": ["*"], "deny": ["B.test"], "allow_ip_literals": false});
    set_state(&alice, &room, "m.room.server_acl", acl).await;
    let message = say(&alice, &room, "hello").await;
    let (b_client, c_client) = (
        b.federation_client().expect("federation is on"),
        c.federation_client().expect("federation is on"),
    );
    let versions = ["10", "11", "12"];

    // c is allowed: it reads and may join.
    let read = serde(&c_client.event("a.test", &message).await.expect("c may read"));
    assert_eq!(bodies(&read["pdus"]), ["hello"]);
    c_client.make_join("a.test", &room, "@carol:c.test", &versions).await.expect("c may join");

    // b is denied everything, whatever the case of the ACL's entry.
    for refused in [
        errcode(b_client.event("a.test", &message).await),
        errcode(b_client.state("a.test", &room, &message).await),
        errcode(b_client.state_ids("a.test", &room, &message).await),
        errcode(b_client.event_auth("a.test", &room, &message).await),
        errcode(b_client.backfill("a.test", &room, &[&message], 10).await),
        errcode(b_client.get_missing_events("a.test", &room, &[], &[&message], 10, 0).await),
        errcode(b_client.make_join("a.test", &room, "@bob:b.test", &versions).await),
    ] {
        assert_eq!(refused, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn oversized_and_malformed_reads_are_refused() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let (alice_session, alice) = alice(a).await;
    let room = a.create_room(&alice_session, Some("Open")).await;
    set_state(
        &alice,
        &room,
        "m.room.history_visibility",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    let message = say(&alice, &room, "hi").await;
    let b_client = b.federation_client().expect("federation is on");

    let many: Vec<String> = (0..101).map(|i| format!("$e{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(status(b_client.backfill("a.test", &room, &many, 10).await), 400);
    assert_eq!(
        status(b_client.get_missing_events("a.test", &room, &many, &[&message], 10, 0).await),
        400
    );
    assert_eq!(status(b_client.get_missing_events("a.test", &room, &[], &many, 10, 0).await), 400);

    // Hand-made requests: no `v`, a limit that is not a number, a body that is not one.
    let path = format!("/_matrix/federation/v1/backfill/{room}?limit=5");
    let no_v = b_client.request("a.test", http::Method::GET, &path, None, None).await;
    assert_eq!(status(no_v), 400);
    let path = format!("/_matrix/federation/v1/backfill/{room}?v={message}&limit=-1");
    let negative = b_client.request("a.test", http::Method::GET, &path, None, None).await;
    assert_eq!(status(negative), 400);
    let path = format!("/_matrix/federation/v1/get_missing_events/{room}");
    let mut wrong = matrix_core::Object::new();
    wrong.insert("latest_events", "not a list");
    let wrong = b_client.request("a.test", http::Method::POST, &path, Some(&wrong), None).await;
    assert_eq!(status(wrong), 400);
}

#[tokio::test]
async fn other_servers_get_our_users_keys_and_directory_but_never_other_servers_users() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (net.server("a.test"), net.server("b.test"), net.server("c.test"));
    let (alice_session, alice) = alice(a).await;
    let device = alice_session.device_id.to_string();
    let keys = json!({"user_id": "@alice:a.test", "device_id": device,
                      "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                      "keys": {format!("ed25519:{device}"): "KEY"}, "signatures": {}});
    let upload = json!({"device_keys": keys,
                        "one_time_keys": {"signed_curve25519:AAAA": {"key": "ONE",
                            "signatures": {"@alice:a.test": {format!("ed25519:{device}"): "SIG"}}}}});
    let (code, answer) = alice.post(&format!("{V3}/keys/upload"), &upload).await;
    assert_eq!(code, 200, "{answer}");
    let b_client = b.federation_client().expect("federation is on");

    // The device list, with keys.
    let devices = serde(&b_client.user_devices("a.test", "@alice:a.test").await.expect("ok"));
    check_federation("user_devices.yaml", "/user/devices/{userId}", "get", 200, &devices);
    assert_eq!(devices["user_id"], "@alice:a.test");
    assert!(devices["stream_id"].is_u64());
    let listed = devices["devices"].as_array().expect("a list");
    let mine = listed.iter().find(|d| d["device_id"] == device.as_str()).expect("alice's device");
    assert_eq!(mine["keys"]["keys"][format!("ed25519:{device}")], "KEY");
    assert!(mine.get("device_display_name").is_none());

    // A key query: alice's keys; b's own user, asked of a, is not a's to answer.
    let mut asked = matrix_core::Object::new();
    asked.insert("@alice:a.test", Vec::<matrix_core::Value>::new());
    asked.insert("@bob:b.test", Vec::<matrix_core::Value>::new());
    let query = serde(&b_client.user_keys_query("a.test", asked).await.expect("ok"));
    check_federation("user_keys.yaml", "/user/keys/query", "post", 200, &query);
    let answered = query["device_keys"].as_object().expect("an object");
    assert_eq!(answered.keys().collect::<Vec<_>>(), ["@alice:a.test"]);
    assert_eq!(answered["@alice:a.test"][&device]["keys"][format!("ed25519:{device}")], "KEY");

    // A claim takes the one-time key once.
    let claim = || {
        let mut wanted = matrix_core::Object::new();
        let mut devices = matrix_core::Object::new();
        devices.insert(device.clone(), "signed_curve25519");
        wanted.insert("@alice:a.test", devices.clone());
        wanted.insert("@bob:b.test", devices);
        wanted
    };
    let first = serde(&b_client.user_keys_claim("a.test", claim()).await.expect("ok"));
    check_federation("user_keys.yaml", "/user/keys/claim", "post", 200, &first);
    assert_eq!(
        first["one_time_keys"]["@alice:a.test"][&device]["signed_curve25519:AAAA"]["key"],
        "ONE"
    );
    assert!(first["one_time_keys"].get("@bob:b.test").is_none());
    let second = serde(&b_client.user_keys_claim("a.test", claim()).await.expect("ok"));
    assert_eq!(second["one_time_keys"]["@alice:a.test"], json!({}));

    // c asks a about b's users: not a's to answer.
    let c_client = c.federation_client().expect("federation is on");
    assert_eq!(status(c_client.user_devices("a.test", "@bob:b.test").await), 400);
    assert_eq!(status(c_client.user_devices("a.test", "not a user").await), 400);
    let mut strangers = matrix_core::Object::new();
    strangers.insert("@bob:b.test", Vec::<matrix_core::Value>::new());
    let query = serde(&c_client.user_keys_query("a.test", strangers).await.expect("ok"));
    assert_eq!(query["device_keys"], json!({}));

    // Too many users in one query or claim.
    let mut crowd = matrix_core::Object::new();
    for i in 0..1_001 {
        crowd.insert(format!("@u{i}:a.test"), Vec::<matrix_core::Value>::new());
    }
    assert_eq!(errcode(c_client.user_keys_query("a.test", crowd).await), "M_TOO_LARGE");
    let mut crowd = matrix_core::Object::new();
    for i in 0..1_001 {
        let mut devices = matrix_core::Object::new();
        devices.insert("D", "signed_curve25519");
        crowd.insert(format!("@u{i}:a.test"), devices);
    }
    assert_eq!(errcode(c_client.user_keys_claim("a.test", crowd).await), "M_TOO_LARGE");

    // The room directory: a published room, listed for other servers, and searchable.
    let room = a.create_room(&alice_session, Some("Lobby")).await;
    let path = format!("{V3}/directory/list/room/{room}");
    let publish = json!({"visibility": "public"});
    let (code, answer) = alice.send(reqwest::Method::PUT, &path, Some(&publish)).await;
    assert_eq!(code, 200, "{answer}");
    let listed = serde(&b_client.public_rooms("a.test", Some(10), None).await.expect("ok"));
    check_federation("public_rooms.yaml", "/publicRooms", "get", 200, &listed);
    assert_eq!(listed["chunk"][0]["room_id"], room.as_str());
    let mut filter = matrix_core::Object::new();
    let mut search = matrix_core::Object::new();
    search.insert("generic_search_term", "nothing like it");
    filter.insert("filter", search);
    let filtered = serde(&b_client.public_rooms_filtered("a.test", &filter).await.expect("ok"));
    check_federation("public_rooms.yaml", "/publicRooms", "post", 200, &filtered);
    assert_eq!(filtered["chunk"], json!([]));
}

/// A client call as `token` on `server`.
async fn call_as(
    server: &TestHomeserver,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    Client::new(server).with_token(token).send(method, path, Some(&body)).await
}

#[tokio::test]
async fn a_server_reads_what_its_users_could_see_while_joined_and_nothing_after_they_left() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let (_alice_session, alice) = alice(a).await;
    let bob = b.register_user("bob", "pw").await;
    let create = json!({"preset": "public_chat", "room_alias_name": "tea"});
    let (code, created) = alice.post(&format!("{V3}/createRoom"), &create).await;
    assert_eq!(code, 200, "{created}");
    let room = created["room_id"].as_str().expect("a room id").to_owned();
    set_state(&alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"}))
        .await;
    let early = say(&alice, &room, "early").await;
    let (code, joined) = call_as(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        &format!("{V3}/join/%23tea:a.test"),
        json!({}),
    )
    .await;
    assert_eq!(code, 200, "{joined}");
    let during = say(&alice, &room, "during").await;
    let b_client = b.federation_client().expect("federation is on");

    // Joined now: what bob could see whole, what came before his join redacted.
    let seen = serde(&b_client.event("a.test", &during).await.expect("b may read it"));
    assert_eq!(bodies(&seen["pdus"]), ["during"]);
    let before = serde(&b_client.event("a.test", &early).await.expect("b gets it redacted"));
    assert_eq!(before["pdus"][0]["type"], "m.room.message");
    assert_eq!(before["pdus"][0]["content"], json!({}), "redacted: {before}");
    let backfill = serde(&b_client.backfill("a.test", &room, &[&during], 100).await.expect("ok"));
    assert_eq!(bodies(&backfill["pdus"]), ["during"]);
    assert!(!backfill.to_string().contains("early"));

    // bob leaves; what comes after is not b's to read, what bob saw still is.
    let (code, left) = call_as(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        &format!("{V3}/rooms/{room}/leave"),
        json!({}),
    )
    .await;
    assert_eq!(code, 200, "{left}");
    // The leave reaches a (bounded polling).
    let mut gone = false;
    for _ in 0..100 {
        let (code, members) = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
        assert_eq!(code, 200, "{members}");
        if members["joined"].get("@bob:b.test").is_none() {
            gone = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "bob's leave never reached a");
    let late = say(&alice, &room, "late").await;
    assert_eq!(status(b_client.event("a.test", &late).await), 404);
    assert_eq!(status(b_client.event("a.test", &early).await), 404);
    let still = serde(&b_client.event("a.test", &during).await.expect("bob saw it"));
    assert_eq!(bodies(&still["pdus"]), ["during"]);
    let backfill = serde(&b_client.backfill("a.test", &room, &[&late], 100).await.expect("ok"));
    assert_eq!(bodies(&backfill["pdus"]), ["during"]);
    let text = backfill.to_string();
    assert!(!text.contains("late") && !text.contains("early"), "{text}");
    assert_eq!(status(b_client.state_ids("a.test", &room, &late).await), 404);
}
