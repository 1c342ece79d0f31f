//! Knocking on a room of another server: `make_knock` and `send_knock` as the knocking
//! server, the `knock_room_state` kept and shown in `rooms.knock`, the knock accepted (an
//! invite over federation, then the join), rescinded (a leave through the resident server),
//! denied (a kick, which reaches the knocker's server), and refused (a room whose join rule
//! is not knock, a room version before 7, a server the room's ACL denies, a banned user).

use matrix_homeserver::testing::TestFederation;
use serde_json::{Value, json};

use crate::federation::{call, create_room, sync_until, wait_for_message_from};

const V3: &str = "/_matrix/client/v3";

async fn post(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    call(server, token, reqwest::Method::POST, path, body).await
}

#[tokio::test]
async fn a_user_knocks_on_a_room_of_another_server_and_is_let_in() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        json!({"preset": "private_chat", "name": "Porch", "room_alias_name": "porch",
               "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                  "content": {"join_rule": "knock"}}]}),
    )
    .await;

    // Without a server to ask (a version 12 room id names none), the knock cannot go.
    let (status, body) = post(b, &bob.access_token, &format!("{V3}/knock/{room}"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    // By alias: a's directory names a.test.
    let (status, body) = post(
        b,
        &bob.access_token,
        &format!("{V3}/knock/%23porch:a.test"),
        json!({"reason": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());

    // b shows bob the knock with the stripped state a answered.
    let sync = sync_until(b, &bob.access_token, "bob's knock", |s| {
        s["rooms"]["knock"].get(&room).is_some()
    })
    .await;
    let events =
        sync["rooms"]["knock"][&room]["knock_state"]["events"].as_array().expect("events").clone();
    assert!(events.iter().any(|e| e["content"]["name"] == "Porch"), "{events:?}");
    assert!(events.iter().any(|e| e["type"] == "m.room.create"), "{events:?}");
    let allowed = ["type", "state_key", "sender", "content", "event_id", "origin_server_ts"];
    for event in &events {
        let keys = event.as_object().expect("an object").keys();
        assert!(keys.into_iter().all(|k| allowed.contains(&k.as_str())), "{event}");
    }
    let own = events.last().expect("the knock");
    assert_eq!(own["content"]["membership"], "knock");
    assert_eq!(own["content"]["reason"], "hello");

    // alice sees the knock, and accepts it: bob's invite reaches b, bob joins.
    wait_for_message_from(a, &alice.access_token, &room, "@bob:b.test", "knock").await;
    let (status, body) = post(
        a,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/invite"),
        json!({"user_id": "@bob:b.test"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sync_until(b, &bob.access_token, "bob's invite", |s| s["rooms"]["invite"].get(&room).is_some())
        .await;
    let (status, body) = post(b, &bob.access_token, &format!("{V3}/join/{room}"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_for_message_from(a, &alice.access_token, &room, "@bob:b.test", "join").await;
}

#[tokio::test]
async fn a_remote_knock_is_rescinded_and_refused_where_it_does_not_belong() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let carol = b.register_user("carol", "pw").await;
    let knock_rule = json!([{"type": "m.room.join_rules", "state_key": "",
                             "content": {"join_rule": "knock"}}]);
    let room = create_room(
        a,
        &alice.access_token,
        json!({"preset": "private_chat", "room_version": "11", "initial_state": knock_rule}),
    )
    .await;
    // A version 11 room id names a.test: no `via` needed.
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/knock/{room}"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_for_message_from(a, &alice.access_token, &room, "@carol:b.test", "knock").await;
    // carol rescinds: a sees her leave; b no longer shows the knock.
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/rooms/{room}/leave"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_for_message_from(a, &alice.access_token, &room, "@carol:b.test", "leave").await;
    let (status, sync) =
        call(b, &carol.access_token, reqwest::Method::GET, &format!("{V3}/sync"), json!({})).await;
    assert_eq!(status, 200, "{sync}");
    assert!(sync["rooms"]["knock"].get(&room).is_none(), "{sync}");

    // carol knocks again and alice denies it (a kick): b learns it, carol's knock is gone.
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/knock/{room}"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_for_message_from(a, &alice.access_token, &room, "@carol:b.test", "knock").await;
    let (status, body) = post(
        a,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/kick"),
        json!({"user_id": "@carol:b.test", "reason": "not now"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sync_until(b, &carol.access_token, "the denial", |s| s["rooms"]["knock"].get(&room).is_none())
        .await;
    let membership = b.storage().membership(&room, "@carol:b.test").await.expect("b reads");
    assert_eq!(membership.as_deref(), Some("leave"));

    // alice bans carol: a's make_knock refuses her next knock.
    let (status, body) = post(
        a,
        &alice.access_token,
        &format!("{V3}/rooms/{room}/ban"),
        json!({"user_id": "@carol:b.test"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/knock/{room}"), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // A room whose join rule is invite: refused by a, with its reason.
    let invite_only = create_room(
        a,
        &alice.access_token,
        json!({"preset": "private_chat", "room_version": "11"}),
    )
    .await;
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/knock/{invite_only}"), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // A version 6 room: no knocking.
    let old = create_room(
        a,
        &alice.access_token,
        json!({"preset": "private_chat", "room_version": "6", "initial_state": knock_rule}),
    )
    .await;
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/knock/{old}"), json!({})).await;
    assert!(status == 400 || status == 403, "{status} {body}");
    // A room whose server ACL denies b.test.
    let acl = create_room(
        a,
        &alice.access_token,
        json!({"preset": "private_chat", "room_version": "11",
               "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                  "content": {"join_rule": "knock"}},
                                 {"type": "m.room.server_acl", "state_key": "",
                                  "content": {"allow": ["a.test"]}}]}),
    )
    .await;
    let (status, body) =
        post(b, &carol.access_token, &format!("{V3}/knock/{acl}"), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // None of these left a knock on b.
    let (_, rooms) =
        call(b, &carol.access_token, reqwest::Method::GET, &format!("{V3}/sync"), json!({})).await;
    assert!(rooms["rooms"]["knock"].as_object().is_none_or(|k| k.is_empty()), "{rooms}");
}
