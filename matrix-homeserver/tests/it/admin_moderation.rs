//! Moderating users through Synapse's admin API: shadow bans, suspensions, rate-limit
//! overrides, logging in as a user; what each does to the user's requests, and that nobody
//! but an administrator may.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Backend, Client, Server, errcode};

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_synapse/admin/v1";

/// A server (with `config`) with an administrator `boss`, and the users `alice` and `bob`
/// (clients returned in that order).
async fn with_users(
    backend: Backend,
    config: matrix_homeserver::Config,
) -> Option<(Server, Client, Client, Client)> {
    let server = crate::start_with(backend, config).await?;
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let admin = Client::new(&server).with_token(&boss.access_token);
    let alice = server.register_user("alice", "pw").await;
    let bob = server.register_user("bob", "pw").await;
    let alice = Client::new(&server).with_token(&alice.access_token);
    let bob = Client::new(&server).with_token(&bob.access_token);
    Some((server, admin, alice, bob))
}

async fn setup(backend: Backend) -> Option<(Server, Client, Client, Client)> {
    with_users(backend, matrix_homeserver::testing::TestHomeserver::config()).await
}

fn id(server: &Server, localpart: &str) -> String {
    format!("@{localpart}:{}", server.server_name())
}

/// A public room made by `creator` that `joiner` joined; its id.
async fn shared_room(creator: &Client, joiner: &Client) -> String {
    let (status, body) =
        creator.post(&format!("{V3}/createRoom"), &json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("a room id").to_owned();
    let (status, body) = joiner.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    room
}

async fn send(client: &Client, room: &str, txn: &str, text: &str) -> (u16, Value) {
    let path = format!("{V3}/rooms/{room}/send/m.room.message/{txn}");
    client.put(&path, &json!({"msgtype": "m.text", "body": text})).await
}

/// Every endpoint of this group: 401 without a token, 403 `M_FORBIDDEN` for a user who is
/// not an administrator, and nothing changes.
async fn only_administrators(backend: Backend) {
    let Some((server, _admin, alice, _bob)) = setup(backend).await else { return };
    let anonymous = Client::new(&server);
    let bob = id(&server, "bob");
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, format!("{V1}/users/{bob}/login"), Some(json!({}))),
        (Method::POST, format!("{V1}/users/{bob}/shadow_ban"), Some(json!({}))),
        (Method::DELETE, format!("{V1}/users/{bob}/shadow_ban"), None),
        (Method::GET, format!("{V1}/users/{bob}/override_ratelimit"), None),
        (
            Method::POST,
            format!("{V1}/users/{bob}/override_ratelimit"),
            Some(json!({"messages_per_second": 0, "burst_count": 0})),
        ),
        (Method::DELETE, format!("{V1}/users/{bob}/override_ratelimit"), None),
        (Method::PUT, format!("{V1}/suspend/{bob}"), Some(json!({"suspend": true}))),
        (
            Method::POST,
            format!("{V1}/send_server_notice"),
            Some(json!({"user_id": bob, "content": {"msgtype": "m.text", "body": "x"}})),
        ),
        (
            Method::PUT,
            format!("{V1}/send_server_notice/t1"),
            Some(json!({"user_id": bob, "content": {"msgtype": "m.text", "body": "x"}})),
        ),
        (Method::GET, format!("{V3}/admin/whois/{bob}"), None),
        (Method::GET, format!("{V1}/users/{bob}/cumulative_joined_room_count"), None),
        (Method::POST, format!("{V1}/user/{bob}/redact"), Some(json!({"rooms": []}))),
        (Method::GET, format!("{V1}/user/redact_status/abc"), None),
    ];
    for (method, path, body) in &calls {
        let (status, answer) = anonymous.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = alice.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }
    let moderation = server.storage().user_moderation(&bob).await.expect("reads");
    assert_eq!(moderation, None, "nothing was decided about bob");
}

/// A shadow-banned user's sends, state events, invites and typing answer success and do
/// nothing; a room they create is made without its invites; lifting the ban restores them.
async fn shadow_ban(backend: Backend) {
    let Some((server, admin, alice, bob)) = setup(backend).await else { return };
    let alice_id = id(&server, "alice");
    let room = shared_room(&alice, &bob).await;
    let (status, body) = admin.post(&format!("{V1}/users/{alice_id}/shadow_ban"), &json!({})).await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    let (_, details) = admin.get(&format!("/_synapse/admin/v2/users/{alice_id}")).await;
    assert_eq!(details["shadow_banned"], true, "{details}");
    let (_, list) = admin.get("/_synapse/admin/v2/users?user_id=alice").await;
    assert_eq!(list["users"][0]["shadow_banned"], true, "{list}");
    let (_, list) = admin.get("/_synapse/admin/v2/users?order_by=shadow_banned&dir=b").await;
    assert_eq!(list["users"][0]["name"], json!(alice_id), "the shadow-banned first: {list}");
    let (_, list) = admin.get("/_synapse/admin/v2/users?order_by=shadow_banned").await;
    assert_eq!(list["users"][2]["name"], json!(alice_id), "the shadow-banned last: {list}");

    // A message: an event id, but no event.
    let (status, body) = send(&alice, &room, "t1", "spam").await;
    assert_eq!(status, 200, "{body}");
    let made_up = body["event_id"].as_str().expect("an event id").to_owned();
    assert!(made_up.starts_with('$'), "{made_up}");
    let (status, _) = bob.get(&format!("{V3}/rooms/{room}/event/{made_up}")).await;
    assert_eq!(status, 404, "the event does not exist");
    let (_, messages) = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    assert!(!messages.to_string().contains("spam"), "{messages}");

    // A state event: the same.
    let (status, body) =
        alice.put(&format!("{V3}/rooms/{room}/state/m.room.topic"), &json!({"topic": "x"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["event_id"].as_str().is_some_and(|e| e.starts_with('$')), "{body}");
    let (status, _) = bob.get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await;
    assert_eq!(status, 404, "no topic was set");

    // An invite: success, nobody invited.
    let carol = server.register_user("carol", "pw").await;
    let carol_id = carol.user_id.to_string();
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": carol_id})).await;
    assert_eq!((status, body), (200, json!({})));
    let membership = server.storage().membership(&room, &carol_id).await.expect("reads");
    assert_eq!(membership, None, "carol was not invited");

    // A room: made, without its invites.
    let (status, body) =
        alice.post(&format!("{V3}/createRoom"), &json!({"invite": [carol_id]})).await;
    assert_eq!(status, 200, "{body}");
    let new_room = body["room_id"].as_str().expect("a room").to_owned();
    assert_eq!(
        server.storage().membership(&new_room, &alice_id).await.expect("reads").as_deref(),
        Some("join")
    );
    assert_eq!(server.storage().membership(&new_room, &carol_id).await.expect("reads"), None);

    // Typing: success, nobody told.
    let (status, _) =
        alice.put(&format!("{V3}/rooms/{room}/typing/{alice_id}"), &json!({"typing": true})).await;
    assert_eq!(status, 200);

    // Lifted: a message reaches the room.
    let (status, body) =
        admin.send(Method::DELETE, &format!("{V1}/users/{alice_id}/shadow_ban"), None).await;
    assert_eq!((status, body), (200, json!({})));
    let (_, details) = admin.get(&format!("/_synapse/admin/v2/users/{alice_id}")).await;
    assert_eq!(details["shadow_banned"], false, "{details}");
    let (status, body) = send(&alice, &room, "t2", "hello").await;
    assert_eq!(status, 200, "{body}");
    let event = body["event_id"].as_str().expect("an event id");
    let (status, body) = bob.get(&format!("{V3}/rooms/{room}/event/{event}")).await;
    assert_eq!((status, body["content"]["body"].clone()), (200, json!("hello")));

    // Only users of ours who exist.
    let (status, body) = admin
        .post(&format!("{V1}/users/@nobody:{}/shadow_ban", server.server_name()), &json!({}))
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) =
        admin.post(&format!("{V1}/users/@x:elsewhere.example/shadow_ban"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

/// A suspended user reads but may not send, set state, join, invite, create rooms, change
/// their profile or upload; they may still redact their own events and leave.
async fn suspension(backend: Backend) {
    let Some((server, admin, alice, bob)) = setup(backend).await else { return };
    let alice_id = id(&server, "alice");
    let room = shared_room(&bob, &alice).await;
    let (_, body) = send(&alice, &room, "before", "said before").await;
    let own_event = body["event_id"].as_str().expect("an event id").to_owned();
    let (_, body) = send(&bob, &room, "bob", "bob's").await;
    let bobs_event = body["event_id"].as_str().expect("an event id").to_owned();
    let other = bob.post(&format!("{V3}/createRoom"), &json!({"preset": "public_chat"})).await;
    let other = other.1["room_id"].as_str().expect("a room").to_owned();

    let path = format!("{V1}/suspend/{alice_id}");
    let (status, body) = admin.put(&path, &json!({"suspend": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ format!("user_{alice_id}_suspended"): true }));
    let (_, details) = admin.get(&format!("/_synapse/admin/v2/users/{alice_id}")).await;
    assert_eq!(details["suspended"], true, "{details}");

    let suspended = |what: &str, (status, body): (u16, Value)| {
        assert_eq!((status, errcode(&body)), (403, "M_USER_SUSPENDED"), "{what}: {body}");
    };
    suspended("send", send(&alice, &room, "after", "said after").await);
    suspended(
        "state",
        alice.put(&format!("{V3}/rooms/{room}/state/m.room.topic"), &json!({"topic": "t"})).await,
    );
    suspended("join", alice.post(&format!("{V3}/join/{other}"), &json!({})).await);
    suspended("createRoom", alice.post(&format!("{V3}/createRoom"), &json!({})).await);
    suspended(
        "invite",
        alice
            .post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": id(&server, "boss")}))
            .await,
    );
    suspended(
        "displayname",
        alice
            .put(&format!("{V3}/profile/{alice_id}/displayname"), &json!({"displayname": "A"}))
            .await,
    );
    suspended("upload", alice.post_raw("/_matrix/media/v3/upload", b"bytes".to_vec()).await);
    suspended(
        "redacting another's event",
        alice.put(&format!("{V3}/rooms/{room}/redact/{bobs_event}/r1"), &json!({})).await,
    );

    // Reading works; redacting their own event works; so does leaving.
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice.get(&format!("{V3}/sync")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        alice.put(&format!("{V3}/rooms/{room}/redact/{own_event}/r2"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Lifted.
    let (status, body) = admin.put(&path, &json!({"suspend": false})).await;
    assert_eq!((status, body), (200, json!({ format!("user_{alice_id}_suspended"): false })));
    let (_, details) = admin.get(&format!("/_synapse/admin/v2/users/{alice_id}")).await;
    assert_eq!(details["suspended"], false, "{details}");
    let (status, body) = alice.post(&format!("{V3}/join/{other}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = admin.put(&path, &json!({"suspend": "yes"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) = admin
        .put(&format!("{V1}/suspend/@nobody:{}", server.server_name()), &json!({"suspend": true}))
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

/// An administrator's token for a user: acts as the user without a device of theirs, ends at
/// `valid_until_ms`, goes with `/logout`; not for the administrator themself.
async fn login_as_user(backend: Backend) {
    let Some((server, admin, alice, bob)) = setup(backend).await else { return };
    let alice_id = id(&server, "alice");
    let room = shared_room(&bob, &alice).await;
    let (_, devices_before) = alice.get(&format!("{V3}/devices")).await;

    let (status, body) = admin.post(&format!("{V1}/users/{alice_id}/login"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let puppet = Client::new(&server).with_token(body["access_token"].as_str().expect("a token"));
    let (status, whoami) = puppet.get(&format!("{V3}/account/whoami")).await;
    assert_eq!((status, whoami["user_id"].clone()), (200, json!(alice_id)), "{whoami}");
    assert!(whoami.get("device_id").is_none(), "no device: {whoami}");
    let (status, body) = send(&puppet, &room, "p1", "as alice").await;
    assert_eq!(status, 200, "{body}");
    let event = body["event_id"].as_str().expect("an event");
    let (_, shown) = bob.get(&format!("{V3}/rooms/{room}/event/{event}")).await;
    assert_eq!(shown["sender"], json!(alice_id));
    let (_, devices_after) = alice.get(&format!("{V3}/devices")).await;
    assert_eq!(devices_before, devices_after, "the user sees no new device");

    // Revoked by `/logout` with it; the user's own session stays.
    let (status, body) = puppet.post(&format!("{V3}/logout"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = puppet.get(&format!("{V3}/account/whoami")).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    let (status, _) = alice.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200);

    // Expired: refused.
    let (_, body) =
        admin.post(&format!("{V1}/users/{alice_id}/login"), &json!({"valid_until_ms": 1})).await;
    let expired = Client::new(&server).with_token(body["access_token"].as_str().expect("a token"));
    let (status, body) = expired.get(&format!("{V3}/account/whoami")).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    let far = 4_000_000_000_000u64;
    let (_, body) =
        admin.post(&format!("{V1}/users/{alice_id}/login"), &json!({"valid_until_ms": far})).await;
    let lasting = Client::new(&server).with_token(body["access_token"].as_str().expect("a token"));
    assert_eq!(lasting.get(&format!("{V3}/account/whoami")).await.0, 200);

    // Refused: as self, a bad expiry, unknown and remote users.
    let boss = id(&server, "boss");
    let (status, body) = admin.post(&format!("{V1}/users/{boss}/login"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = admin
        .post(&format!("{V1}/users/{alice_id}/login"), &json!({"valid_until_ms": "soon"}))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, _) =
        admin.post(&format!("{V1}/users/@nobody:{}/login", server.server_name()), &json!({})).await;
    assert_eq!(status, 404);
    let (status, _) =
        admin.post(&format!("{V1}/users/@x:elsewhere.example/login"), &json!({})).await;
    assert_eq!(status, 400);

    // Deactivating the user ends it; so does deactivating the administrator who had it made.
    let (status, _) = admin.post(&format!("{V1}/deactivate/{alice_id}"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(lasting.get(&format!("{V3}/account/whoami")).await.0, 401);
    let hs = server.homeserver();
    hs.create_user("boss2", Some("pw-boss2"), true).await.expect("boss2 is created");
    let boss2 = hs.login("boss2", "pw-boss2").await.expect("boss2 logs in");
    let admin2 = Client::new(&server).with_token(&boss2.access_token);
    let bob_id = id(&server, "bob");
    let (_, body) = admin2.post(&format!("{V1}/users/{bob_id}/login"), &json!({})).await;
    let as_bob = Client::new(&server).with_token(body["access_token"].as_str().expect("a token"));
    assert_eq!(as_bob.get(&format!("{V3}/account/whoami")).await.0, 200);
    let (status, _) =
        admin.post(&format!("{V1}/deactivate/{}", id(&server, "boss2")), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(as_bob.get(&format!("{V3}/account/whoami")).await.0, 401);
}

/// A user's own rate limit replaces the configured one: 0 and 0 exempt them, another limit
/// applies, deleting it brings back the configured one.
async fn override_ratelimit(backend: Backend) {
    let mut config = crate::abuse_limits::limits_on();
    config.rate_limits.message = crate::abuse_limits::tight(2.0);
    let Some((server, admin, alice, bob)) = with_users(backend, config).await else { return };
    let alice_id = id(&server, "alice");
    let room = shared_room(&bob, &alice).await;
    let path = format!("{V1}/users/{alice_id}/override_ratelimit");
    let (status, body) = admin.get(&path).await;
    assert_eq!((status, body), (200, json!({})));

    for i in 0..2 {
        assert_eq!(send(&alice, &room, &format!("a{i}"), "m").await.0, 200);
    }
    crate::abuse_limits::assert_limited("third", &send(&alice, &room, "a2", "m").await);

    // Exempt.
    let exempt = json!({"messages_per_second": 0, "burst_count": 0});
    let (status, body) = admin.post(&path, &exempt).await;
    assert_eq!((status, body), (200, exempt.clone()));
    assert_eq!(admin.get(&path).await, (200, exempt));
    for i in 0..6 {
        let answer = send(&alice, &room, &format!("b{i}"), "m").await;
        assert_eq!(answer.0, 200, "{}", answer.1);
    }
    // Bob is still limited.
    for i in 0..2 {
        assert_eq!(send(&bob, &room, &format!("c{i}"), "m").await.0, 200);
    }
    crate::abuse_limits::assert_limited("bob", &send(&bob, &room, "c2", "m").await);

    // An own limit: a burst of 4 (absent fields are 0).
    let (status, body) = admin.post(&path, &json!({"burst_count": 4})).await;
    assert_eq!((status, body), (200, json!({"messages_per_second": 0, "burst_count": 4})));
    let mut sent = 0;
    for i in 0..8 {
        if send(&alice, &room, &format!("d{i}"), "m").await.0 == 200 {
            sent += 1;
        }
    }
    assert_eq!(sent, 4, "the burst, then nothing (it refills at 0 a second)");

    // Deleted: the configured limit again (a bucket of it starts anew).
    let (status, body) = admin.send(Method::DELETE, &path, None).await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(admin.get(&path).await, (200, json!({})));
    for i in 0..2 {
        assert_eq!(send(&alice, &room, &format!("e{i}"), "m").await.0, 200);
    }
    crate::abuse_limits::assert_limited("back", &send(&alice, &room, "e2", "m").await);

    for bad in [json!({"messages_per_second": -1}), json!({"burst_count": "x"})] {
        let (status, body) = admin.post(&path, &bad).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }
    let (status, _) =
        admin.get(&format!("{V1}/users/@nobody:{}/override_ratelimit", server.server_name())).await;
    assert_eq!(status, 404);
}

/// The settings with server notices sent by `notices` (joined with `auto_join`).
fn notices_config(auto_join: bool) -> matrix_homeserver::Config {
    let mut config = matrix_homeserver::testing::TestHomeserver::config();
    let mut notices = matrix_homeserver::ServerNoticesConfig::sent_by("notices");
    notices.system_mxid_display_name = Some("Notices".to_owned());
    notices.room_topic = Some("From the administrators".to_owned());
    notices.auto_join = auto_join;
    config.server_notices = notices;
    config
}

/// A notice: the system user is made, the recipient invited to a room of the system user's,
/// tagged `m.server_notice`, where the notice is and where they cannot write; later notices
/// go to the same room; a transaction id sends once.
async fn server_notices(backend: Backend) {
    let Some((server, admin, alice, _bob)) = with_users(backend, notices_config(false)).await
    else {
        return;
    };
    let alice_id = id(&server, "alice");
    let system = id(&server, "notices");
    let content = json!({"msgtype": "m.server_notice", "body": "maintenance at noon"});
    let (status, body) = admin
        .post(
            &format!("{V1}/send_server_notice"),
            &json!({"user_id": alice_id, "content": content}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = body["event_id"].as_str().expect("an event id").to_owned();

    // Invited to the system user's room, tagged.
    let rooms = server.storage().rooms_of_user(&alice_id).await.expect("reads");
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    let (room, membership) = rooms[0].clone();
    assert_eq!(membership, "invite");
    assert_eq!(
        server.storage().membership(&room, &system).await.expect("reads").as_deref(),
        Some("join")
    );
    let (status, tags) = alice.get(&format!("{V3}/user/{alice_id}/rooms/{room}/tags")).await;
    assert_eq!(status, 200, "{tags}");
    assert!(tags["tags"].get("m.server_notice").is_some(), "{tags}");
    let (_, profile) = alice.get(&format!("{V3}/profile/{system}")).await;
    assert_eq!(profile["displayname"], "Notices", "{profile}");

    // Joined, they read it and cannot write.
    let (status, body) = alice.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, event) = alice.get(&format!("{V3}/rooms/{room}/event/{first}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!((event["sender"].clone(), event["content"].clone()), (json!(system), content));
    let (status, topic) = alice.get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await;
    assert_eq!((status, topic["topic"].clone()), (200, json!("From the administrators")));
    let (status, body) = send(&alice, &room, "reply", "no").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // The next notice goes to the same room; a transaction id sends once.
    let path = format!("{V1}/send_server_notice/txn-1");
    let notice = json!({"user_id": alice_id, "content": {"msgtype": "m.text", "body": "again"}});
    let (status, body) = admin.put(&path, &notice).await;
    assert_eq!(status, 200, "{body}");
    let second = body["event_id"].as_str().expect("an event id").to_owned();
    let (status, body) = admin.put(&path, &notice).await;
    assert_eq!((status, body["event_id"].as_str()), (200, Some(second.as_str())));
    let (_, messages) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    let againsts = messages["chunk"]
        .as_array()
        .map(|c| c.iter().filter(|e| e["content"]["body"] == "again").count())
        .unwrap_or(0);
    assert_eq!(againsts, 1, "{messages}");
    assert_eq!(server.storage().rooms_of_user(&alice_id).await.expect("reads").len(), 1);

    // Left: the next notice makes a new room.
    let (status, _) = alice.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = admin.post(&format!("{V1}/send_server_notice"), &notice).await;
    assert_eq!(status, 200, "{body}");
    let rooms = server.storage().rooms_of_user(&alice_id).await.expect("reads");
    assert!(rooms.iter().any(|(r, m)| r != &room && m == "invite"), "{rooms:?}");

    // Refused: unknown, remote users; no content; content not an object.
    let nobody = format!("@nobody:{}", server.server_name());
    let (status, body) = admin
        .post(&format!("{V1}/send_server_notice"), &json!({"user_id": nobody, "content": {}}))
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, _) = admin
        .post(
            &format!("{V1}/send_server_notice"),
            &json!({"user_id": "@x:elsewhere.example", "content": {}}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) =
        admin.post(&format!("{V1}/send_server_notice"), &json!({"user_id": alice_id})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) = admin
        .post(&format!("{V1}/send_server_notice"), &json!({"user_id": alice_id, "content": 5}))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
}

/// With `auto_join`, the recipient is joined to the notice room at once.
async fn server_notices_auto_join(backend: Backend) {
    let Some((server, admin, _alice, _bob)) = with_users(backend, notices_config(true)).await
    else {
        return;
    };
    let alice_id = id(&server, "alice");
    let notice = json!({"user_id": alice_id, "content": {"msgtype": "m.text", "body": "hi"}});
    let (status, body) = admin.post(&format!("{V1}/send_server_notice"), &notice).await;
    assert_eq!(status, 200, "{body}");
    let rooms = server.storage().rooms_of_user(&alice_id).await.expect("reads");
    assert_eq!(rooms.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>(), ["join"]);
}

/// Without the settings, the endpoint answers 400 as Synapse's does.
async fn server_notices_off(backend: Backend) {
    let Some((server, admin, _alice, _bob)) = setup(backend).await else { return };
    let notice = json!({"user_id": id(&server, "alice"), "content": {"body": "x"}});
    let (status, body) = admin.post(&format!("{V1}/send_server_notice"), &notice).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    let (status, _) = admin.put(&format!("{V1}/send_server_notice/t"), &notice).await;
    assert_eq!(status, 400);
}

/// The client API's `whois`: an administrator about anybody, a user about themself only.
async fn client_whois(backend: Backend) {
    let Some((server, admin, alice, _bob)) = setup(backend).await else { return };
    let alice_id = id(&server, "alice");
    let path = format!("{V3}/admin/whois/{alice_id}");
    let (status, by_admin) = admin.get(&path).await;
    assert_eq!(status, 200, "{by_admin}");
    assert_eq!(by_admin["user_id"], json!(alice_id));
    assert_eq!(by_admin["devices"].as_object().map(|d| d.len()), Some(1), "{by_admin}");
    let (status, own) = alice.get(&path).await;
    assert_eq!((status, own), (200, by_admin));
    let (status, body) =
        admin.get(&format!("{V3}/admin/whois/@nobody:{}", server.server_name())).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
}

/// The rooms a user was ever joined to: those they are in and those they left, not those
/// they were only invited to.
async fn cumulative_joined_room_count(backend: Backend) {
    let Some((server, admin, alice, bob)) = setup(backend).await else { return };
    let alice_id = id(&server, "alice");
    let path = format!("{V1}/users/{alice_id}/cumulative_joined_room_count");
    assert_eq!(admin.get(&path).await, (200, json!({"cumulative_joined_room_count": 0})));
    shared_room(&bob, &alice).await;
    let left = shared_room(&bob, &alice).await;
    let (status, _) = alice.post(&format!("{V3}/rooms/{left}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let (_, body) = bob.post(&format!("{V3}/createRoom"), &json!({"invite": [alice_id]})).await;
    assert!(body["room_id"].is_string(), "{body}");
    assert_eq!(admin.get(&path).await, (200, json!({"cumulative_joined_room_count": 2})));
    let (status, _) = admin
        .get(&format!("{V1}/users/@nobody:{}/cumulative_joined_room_count", server.server_name()))
        .await;
    assert_eq!(status, 404);
}

/// Waits for a redaction task to finish; answers its status.
async fn finished(admin: &Client, id: &str) -> Value {
    for _ in 0..200 {
        let (status, body) = admin.get(&format!("{V1}/user/redact_status/{id}")).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "completed" || body["status"] == "failed" {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the redaction task {id} did not finish");
}

/// The user's messages in their rooms are redacted by a task in the background (by the
/// user, as Synapse puppets them); others' stay; with `use_admin`, by the administrator,
/// which fails where the administrator may not, and says so.
async fn redact_user_events(backend: Backend) {
    let Some((server, admin, alice, bob)) = setup(backend).await else { return };
    let alice_id = id(&server, "alice");
    let room = shared_room(&bob, &alice).await;
    let mut spam = Vec::new();
    for i in 0..3 {
        let (_, body) = send(&alice, &room, &format!("s{i}"), "spam").await;
        spam.push(body["event_id"].as_str().expect("an event").to_owned());
    }
    let (_, body) = send(&bob, &room, "b", "keep").await;
    let kept = body["event_id"].as_str().expect("an event").to_owned();

    let (status, body) = admin
        .post(&format!("{V1}/user/{alice_id}/redact"), &json!({"rooms": [], "reason": "spam"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let task = body["redact_id"].as_str().expect("an id").to_owned();
    let done = finished(&admin, &task).await;
    assert_eq!(done, json!({"status": "completed", "failed_redactions": {}}));
    // The task is stored (it would run again after a stop), as Synapse's scheduled tasks.
    let (_, listed) =
        admin.get(&format!("{V1}/scheduled_tasks?action_name=redact_all_events")).await;
    let listed = listed["scheduled_tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((&listed[0]["id"], &listed[0]["resource_id"]), (&json!(task), &json!(alice_id)));
    for event in &spam {
        let (_, shown) = bob.get(&format!("{V3}/rooms/{room}/event/{event}")).await;
        assert_eq!(shown["content"], json!({}), "{shown}");
        assert_eq!(shown["unsigned"]["redacted_because"]["sender"], json!(alice_id), "{shown}");
    }
    let (_, shown) = bob.get(&format!("{V3}/rooms/{room}/event/{kept}")).await;
    assert_eq!(shown["content"]["body"], "keep");

    // By the administrator, who is not in the room: each redaction fails, and says why.
    let (_, body) = send(&alice, &room, "s9", "more").await;
    let more = body["event_id"].as_str().expect("an event").to_owned();
    let (status, body) = admin
        .post(
            &format!("{V1}/user/{alice_id}/redact"),
            &json!({"rooms": [room], "use_admin": true, "limit": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = finished(&admin, body["redact_id"].as_str().expect("an id")).await;
    assert_eq!(done["status"], "completed");
    let failed = done["failed_redactions"].as_object().expect("an object");
    assert_eq!(failed.keys().collect::<Vec<_>>(), [&more], "{done}");

    // Refused: no `rooms`, a bad room id, a bad limit; an unknown task.
    for bad in [json!({}), json!({"rooms": ["nope"]}), json!({"rooms": [], "limit": 0})] {
        let (status, body) = admin.post(&format!("{V1}/user/{alice_id}/redact"), &bad).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }
    let (status, body) = admin.get(&format!("{V1}/user/redact_status/unknown")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
}

crate::on_every_backend!(
    only_administrators,
    redact_user_events,
    cumulative_joined_room_count,
    shadow_ban,
    suspension,
    login_as_user,
    override_ratelimit,
    server_notices,
    server_notices_auto_join,
    server_notices_off,
    client_whois,
);
