//! Rooms over HTTP: createRoom, membership, state, sending with transaction ids, redaction,
//! aliases, the directory, pagination and context, with their failure cases.

use serde_json::{Value, json};

use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// Registers `name` (password `pw`); answers a client with its token, and the user id.
pub(crate) async fn user(server: &crate::Server, name: &str) -> (Client, String) {
    let session = server.register_user(name, "pw").await;
    (Client::new(server).with_token(&session.access_token), session.user_id.to_string())
}

/// Creates a room; answers its id.
pub(crate) async fn create(client: &Client, body: Value) -> String {
    let (status, body) = client.post(&format!("{V3}/createRoom"), &body).await;
    assert_eq!(status, 200, "{body}");
    check("create_room.yaml", "/createRoom", "post", 200, &body);
    body["room_id"].as_str().expect("a room id").to_owned()
}

/// Sends a text message; answers the status and body.
pub(crate) async fn send(client: &Client, room: &str, txn: &str, body: &str) -> (u16, Value) {
    client
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(&json!({"msgtype": "m.text", "body": body})),
        )
        .await
}

fn state_of<'a>(state: &'a [Value], kind: &str, key: &str) -> Option<&'a Value> {
    state.iter().find(|e| e["type"] == kind && e["state_key"] == key)
}

async fn create_room_sets_up_the_state_the_spec_orders(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let (_, bob_id) = user(&server, "bob").await;
    let room = create(
        &alice,
        json!({"name": "Tea", "topic": "Leaves", "room_alias_name": "tea", "invite": [bob_id],
               "preset": "public_chat", "visibility": "public",
               "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
               "power_level_content_override": {"events_default": 10}}),
    )
    .await;
    // Room version 12 room ids are the create event's hash.
    assert!(!room.contains(':'), "{room}");

    let (status, state) = alice.get(&format!("{V3}/rooms/{room}/state")).await;
    assert_eq!(status, 200, "{state}");
    check("rooms.yaml", "/rooms/{roomId}/state", "get", 200, &state);
    let state = state.as_array().expect("a list").clone();
    let create_event = state_of(&state, "m.room.create", "").expect("create");
    assert_eq!(create_event["content"]["room_version"], "12");
    assert_eq!(create_event["sender"], alice_id);
    assert_eq!(
        state_of(&state, "m.room.member", &alice_id).expect("join")["content"]["membership"],
        "join"
    );
    assert_eq!(
        state_of(&state, "m.room.member", &bob_id).expect("invite")["content"]["membership"],
        "invite"
    );
    let levels = &state_of(&state, "m.room.power_levels", "").expect("levels")["content"];
    assert_eq!(levels["events_default"], 10);
    // Creators are above every level in room version 12 and are not listed.
    assert!(levels["users"].get(&alice_id).is_none(), "{levels}");
    assert_eq!(
        state_of(&state, "m.room.join_rules", "").expect("rules")["content"]["join_rule"],
        "public"
    );
    assert_eq!(state_of(&state, "m.room.name", "").expect("name")["content"]["name"], "Tea");
    assert_eq!(state_of(&state, "m.room.topic", "").expect("topic")["content"]["topic"], "Leaves");
    assert_eq!(
        state_of(&state, "m.room.canonical_alias", "").expect("alias")["content"]["alias"],
        "#tea:localhost"
    );
    assert!(state_of(&state, "m.room.encryption", "").is_some());

    // One state event, and its absence.
    let (status, name) = alice.get(&format!("{V3}/rooms/{room}/state/m.room.name")).await;
    assert_eq!((status, &name), (200, &json!({"name": "Tea"})));
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/state/m.room.avatar/")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    // The alias resolves, and the room is in the directory.
    let (status, body) = alice.get(&format!("{V3}/directory/room/%23tea:localhost")).await;
    assert_eq!(status, 200, "{body}");
    check("directory.yaml", "/directory/room/{roomAlias}", "get", 200, &body);
    assert_eq!(body["room_id"], room.as_str());
    let (status, body) = Client::new(&server).get(&format!("{V3}/publicRooms")).await;
    assert_eq!(status, 200, "{body}");
    check("list_public_rooms.yaml", "/publicRooms", "get", 200, &body);
    assert_eq!(body["chunk"][0]["room_id"], room.as_str());
    assert_eq!(body["chunk"][0]["name"], "Tea");
    assert_eq!(body["chunk"][0]["num_joined_members"], 1);

    // The alias is taken now.
    let (status, body) =
        alice.post(&format!("{V3}/createRoom"), &json!({"room_alias_name": "tea"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_ROOM_IN_USE"));
}

/// Rooms one user creates at once (room version 12: the room id is the create event's
/// hash) are as many rooms, not one room asked for several times.
async fn rooms_created_at_once_are_distinct(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let body = json!({"preset": "private_chat"});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (alice, body) = (alice.clone(), body.clone());
        tasks.spawn(async move { create(&alice, body).await });
    }
    let created = tasks.join_all().await;
    let distinct: std::collections::BTreeSet<&String> = created.iter().collect();
    assert_eq!(distinct.len(), created.len(), "{created:?}");
    let (status, joined) = alice.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(status, 200);
    assert_eq!(joined["joined_rooms"].as_array().map(Vec::len), Some(created.len()));
}

async fn create_room_refuses_bad_requests(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let path = format!("{V3}/createRoom");
    let (status, body) = alice.post(&path, &json!({"room_version": "99"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNSUPPORTED_ROOM_VERSION"));
    let (status, body) = alice.post(&path, &json!({"preset": "party"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = alice.post(&path, &json!({"invite": ["not a user"]})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = alice.post(&path, &json!({"name": 5})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = alice.post_raw(&path, b"{nope".to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_NOT_JSON"));
    let (status, body) = Client::new(&server).post(&path, &json!({})).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
    // Refused before anything is stored: no half-made room is left.
    for bad in [
        json!({"power_level_content_override": {"ban": "lots"}}),
        json!({"power_level_content_override": {"users": {"@alice:localhost": 100}}}),
        json!({"initial_state": [{"type": "m.room.member", "state_key": "@x:localhost", "content": {}}]}),
        json!({"invite": ["@nobody:localhost"]}),
        json!({"creation_content": {"type": 5}}),
    ] {
        let (status, body) = alice.post(&path, &bad).await;
        assert!((400..500).contains(&status), "{bad}: {status} {body}");
    }
    let (_, rooms) = alice.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(rooms["joined_rooms"], json!([]), "{rooms}");
    // Every room version can be created.
    for version in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] {
        let (status, body) =
            alice.post(&path, &json!({"room_version": version, "name": "v"})).await;
        assert_eq!(status, 200, "room version {version}: {body}");
        let room = body["room_id"].as_str().expect("an id");
        let (status, body) = send(&alice, room, "t", "hello").await;
        assert_eq!(status, 200, "room version {version}: {body}");
    }
}

async fn membership_follows_the_authorization_rules(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let room = create(&alice, json!({"preset": "private_chat"})).await;

    // Not invited: joining a private room is forbidden.
    let (status, body) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": bob_id})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());

    let (status, body) = bob.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(status, 200);
    check("list_joined_rooms.yaml", "/joined_rooms", "get", 200, &body);
    assert_eq!(body["joined_rooms"], json!([room]));
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
    assert_eq!(status, 200);
    assert_eq!(body["joined"].as_object().expect("members").len(), 2);
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/members?membership=join")).await;
    assert_eq!(status, 200);
    check("rooms.yaml", "/rooms/{roomId}/members", "get", 200, &body);
    assert_eq!(body["chunk"].as_array().expect("chunk").len(), 2);

    // Bob (level 0) may not kick or ban; Alice may.
    let (status, body) =
        bob.post(&format!("{V3}/rooms/{room}/kick"), &json!({"user_id": "@alice:localhost"})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = alice
        .post(&format!("{V3}/rooms/{room}/ban"), &json!({"user_id": bob_id, "reason": "spam"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(&bob, &room, "1", "still here?").await;
    assert_eq!(status, 403);
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/unban"), &json!({"user_id": bob_id})).await;
    assert_eq!(status, 200, "{body}");
    // Carol, never in the room, can read nothing of it.
    let (status, body) = carol.get(&format!("{V3}/rooms/{room}/state")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = carol.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/kick"), &json!({"user_id": carol_id})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    // Inviting a user that does not exist.
    let (status, body) = alice
        .post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": "@nobody:localhost"}))
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    // Leaving, then forgetting; forgetting while joined is refused.
    let (status, body) = alice.post(&format!("{V3}/rooms/{room}/forget"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_STATE"));
    let (status, _) = alice.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = alice.post(&format!("{V3}/rooms/{room}/forget"), &json!({})).await;
    assert_eq!(status, 200);
    // Unknown rooms.
    let (status, body) = bob.post(&format!("{V3}/rooms/!nothere/join"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = bob.post(&format!("{V3}/join/%23nothere:localhost"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
}

async fn sending_is_idempotent_per_transaction_and_checked(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let (carol, _) = user(&server, "carol").await;
    let room = create(&alice, json!({})).await;

    // Concurrent sends with one transaction id store one event.
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let (alice, room) = (alice.clone(), room.clone());
            tokio::spawn(async move { send(&alice, &room, "txn-1", "once").await })
        })
        .collect();
    let mut results = Vec::new();
    for task in sends {
        results.push(task.await.expect("a send"));
    }
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["event_id"].as_str().expect("an id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, page) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    let sent = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["content"]["body"] == "once")
        .count();
    assert_eq!(sent, 1);

    // Bad contents: not JSON, not an object, floats (canonical JSON), too large.
    let path = format!("{V3}/rooms/{room}/send/m.room.message/bad");
    let put = |body: Vec<u8>| {
        let http = reqwest::Client::new();
        let url = format!("{}{path}", server.base_url());
        let token = alice_token(&alice);
        async move {
            let response =
                http.put(url).bearer_auth(token).body(body).send().await.expect("answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = put(b"{".to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = put(b"[1]".to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = put(br#"{"body": 1.5}"#.to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let big = format!(r#"{{"body": "{}"}}"#, "x".repeat(70_000));
    let (status, body) = put(big.into_bytes()).await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"));
    // Not in the room.
    let (status, body) = send(&carol, &room, "c", "hi").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    // Nothing of that was stored.
    let (_, after) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    let ids = |page: &Value| -> Vec<Value> {
        page["chunk"].as_array().expect("chunk").iter().map(|e| e["event_id"].clone()).collect()
    };
    assert_eq!(ids(&after), ids(&page));
}

fn alice_token(client: &Client) -> String {
    client.token.clone().expect("a token")
}

async fn state_events_redactions_and_events_by_id(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200);

    let (status, body) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/state/m.room.topic"),
            Some(&json!({"topic": "new"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Bob (level 0 < state_default 50) may not.
    let (status, body) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/state/m.room.topic/"),
            Some(&json!({"topic": "mine"})),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    let (_, sent) = send(&bob, &room, "b1", "secret").await;
    let event_id = sent["event_id"].as_str().expect("an id").to_owned();
    let (status, event) = alice.get(&format!("{V3}/rooms/{room}/event/{event_id}")).await;
    assert_eq!(status, 200, "{event}");
    check("rooms.yaml", "/rooms/{roomId}/event/{eventId}", "get", 200, &event);
    assert_eq!(event["content"]["body"], "secret");
    assert_eq!(event["sender"], bob_id);
    assert!(event.get("hashes").is_none() && event.get("signatures").is_none(), "{event}");
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/event/$nope")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    // Bob may redact his own event; Alice (level 100) anybody's.
    let (status, body) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/redact/{event_id}/r1"),
            Some(&json!({"reason": "oops"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, event) = alice.get(&format!("{V3}/rooms/{room}/event/{event_id}")).await;
    assert_eq!(event["content"], json!({}), "{event}");
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "oops");
    let (_, alices) = send(&alice, &room, "a1", "mine").await;
    let alices = alices["event_id"].as_str().expect("an id").to_owned();
    let (status, body) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/redact/{alices}/r2"),
            Some(&json!({})),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
}

async fn messages_paginate_back_to_the_creation_and_context_surrounds_an_event(
    backend: crate::Backend,
) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({"name": "History"})).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let (status, body) = send(&alice, &room, &format!("t{i}"), &format!("message {i}")).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["event_id"].as_str().expect("an id").to_owned());
    }
    // Backwards in pages of 10 until there is no `end`.
    let mut from: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let query = match &from {
            Some(f) => format!("dir=b&limit=10&from={f}"),
            None => "dir=b&limit=10".to_owned(),
        };
        let (status, page) = alice.get(&format!("{V3}/rooms/{room}/messages?{query}")).await;
        assert_eq!(status, 200, "{page}");
        check("message_pagination.yaml", "/rooms/{roomId}/messages", "get", 200, &page);
        seen.extend(page["chunk"].as_array().expect("chunk").iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.last().expect("events")["type"], "m.room.create", "ends at the creation");
    let bodies: Vec<&str> = seen.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    let expected: Vec<String> = (0..25).rev().map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, expected);
    // Forwards from the start gives the same events in order.
    let (_, forwards) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=100")).await;
    let forwards = forwards["chunk"].as_array().expect("chunk").clone();
    assert_eq!(forwards.len(), seen.len());
    assert_eq!(forwards[0]["event_id"], seen.last().expect("events")["event_id"]);
    // Filters.
    let filter = r#"{"types":["m.room.message"]}"#;
    let (_, only) = alice
        .get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5&filter={}", urlencode(filter)))
        .await;
    assert!(only["chunk"].as_array().expect("chunk").iter().all(|e| e["type"] == "m.room.message"));
    assert_eq!(only["chunk"].as_array().expect("chunk").len(), 5);
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/messages")).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"));
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&from=garbage")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    // Tokens at the edge of the integer range are answered, not a crash.
    let max = u64::MAX;
    for query in [format!("dir=b&from=s{max}_{max}"), format!("dir=f&from=t{max}")] {
        let (status, body) = alice.get(&format!("{V3}/rooms/{room}/messages?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    let (status, body) = alice.get(&format!("{V3}/sync?since=s{max}_{max}&timeout=0")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        alice.get(&format!("{V3}/publicRooms?since=n{}_!a:localhost", u64::MAX)).await;
    assert_eq!(status, 200, "{body}");

    let (status, context) =
        alice.get(&format!("{V3}/rooms/{room}/context/{}?limit=4", ids[10])).await;
    assert_eq!(status, 200, "{context}");
    check("event_context.yaml", "/rooms/{roomId}/context/{eventId}", "get", 200, &context);
    assert_eq!(context["event"]["event_id"], ids[10].as_str());
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .expect("before")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let after: Vec<&str> = context["events_after"]
        .as_array()
        .expect("after")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(before, [ids[9].as_str(), ids[8].as_str()]);
    assert_eq!(after, [ids[11].as_str(), ids[12].as_str()]);
    assert!(context["state"].as_array().expect("state").iter().any(|e| e["type"] == "m.room.name"));
}

async fn history_visibility_joined_and_invited_hide_what_came_before(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    for (visibility, seen_by_invitee) in [("joined", false), ("invited", true)] {
        let room = create(
            &alice,
            json!({"preset": "private_chat", "initial_state": [
            {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}]}),
        )
        .await;
        let (_, early) = send(&alice, &room, "early", "before the invite").await;
        let early = early["event_id"].as_str().expect("an id").to_owned();
        let (status, _) =
            alice.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": bob_id})).await;
        assert_eq!(status, 200);
        let (_, invited) = send(&alice, &room, "invited", "while invited").await;
        let invited = invited["event_id"].as_str().expect("an id").to_owned();
        let (status, _) = bob.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
        assert_eq!(status, 200);
        send(&alice, &room, "joined", "after the join").await;

        let (_, page) = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
        let bodies: Vec<&str> = page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        let mut expected = vec!["after the join"];
        if seen_by_invitee {
            expected.push("while invited");
        }
        assert_eq!(bodies, expected, "{visibility}");
        let (status, _) = bob.get(&format!("{V3}/rooms/{room}/event/{early}")).await;
        assert_eq!(status, 404, "{visibility}");
        let (status, _) = bob.get(&format!("{V3}/rooms/{room}/event/{invited}")).await;
        assert_eq!(status, if seen_by_invitee { 200 } else { 404 }, "{visibility}");
        let (_, synced) = bob.get(&format!("{V3}/sync")).await;
        let timeline = synced["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .expect("timeline")
            .clone();
        assert!(
            timeline.iter().all(|e| e["event_id"] != early.as_str()),
            "{visibility}: {timeline:?}"
        );
        // Alice, joined throughout, sees everything.
        let (status, _) = alice.get(&format!("{V3}/rooms/{room}/event/{early}")).await;
        assert_eq!(status, 200);
    }
}

pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(
            |b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            },
        )
        .collect()
}

async fn aliases_and_directory_visibility(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let room = create(&alice, json!({})).await;
    let alias = "%23lounge:localhost";
    let (status, body) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/directory/room/{alias}"),
            Some(&json!({"room_id": room})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/directory/room/{alias}"),
            Some(&json!({"room_id": room})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = alice.get(&format!("{V3}/rooms/{room}/aliases")).await;
    assert_eq!((status, &body["aliases"]), (200, &json!(["#lounge:localhost"])));
    // Bob is not in the room: he may not point an alias at it, nor delete Alice's.
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/directory/room/%23b:localhost"),
            Some(&json!({"room_id": room})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) =
        bob.send(reqwest::Method::DELETE, &format!("{V3}/directory/room/{alias}"), None).await;
    assert_eq!(status, 403);
    let (status, _) =
        alice.send(reqwest::Method::DELETE, &format!("{V3}/directory/room/{alias}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = alice.get(&format!("{V3}/directory/room/{alias}")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = alice.get(&format!("{V3}/directory/room/notanalias")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));

    let (status, body) = alice.get(&format!("{V3}/directory/list/room/{room}")).await;
    assert_eq!((status, &body["visibility"]), (200, &json!("private")));
    let (status, _) = bob
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/directory/list/room/{room}"),
            Some(&json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = alice
        .send(
            reqwest::Method::PUT,
            &format!("{V3}/directory/list/room/{room}"),
            Some(&json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = bob.post(&format!("{V3}/publicRooms"), &json!({"limit": 10})).await;
    assert_eq!(status, 200, "{body}");
    check("list_public_rooms.yaml", "/publicRooms", "post", 200, &body);
    assert_eq!(body["chunk"][0]["room_id"], room.as_str());
}

crate::on_every_backend!(
    history_visibility_joined_and_invited_hide_what_came_before,
    garbage_never_gets_a_server_error,
    create_room_sets_up_the_state_the_spec_orders,
    create_room_refuses_bad_requests,
    rooms_created_at_once_are_distinct,
    membership_follows_the_authorization_rules,
    sending_is_idempotent_per_transaction_and_checked,
    state_events_redactions_and_events_by_id,
    messages_paginate_back_to_the_creation_and_context_surrounds_an_event,
    aliases_and_directory_visibility
);

/// Garbage in every path parameter, query and body of the room endpoints: always a 4xx with an
/// errcode (or a 200 where the garbage is a valid value), never a 5xx or a dropped connection.
async fn garbage_never_gets_a_server_error(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let (alice, alice_id) = user(&server, "alice").await;
    let room = create(&alice, json!({"name": "target"})).await;
    let (_, sent) = send(&alice, &room, "g", "x").await;
    let event = sent["event_id"].as_str().expect("an id").to_owned();
    let long = "x".repeat(300);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let words =
        ["", "%00", "!", "@", "#", "$", "%F0%9F%98%80", "s99999999999999999999_1", long.as_str()];
    let bodies =
        ["{", "[]", "null", r#"{"a":1e400}"#, deep.as_str(), r#"{"user_id": 5, "reason": []}"#];
    let templates = [
        ("PUT", "/rooms/{room}/send/{w}/{w}"),
        ("PUT", "/rooms/{room}/state/{w}/{w}"),
        ("GET", "/rooms/{room}/state/{w}/{w}"),
        ("GET", "/rooms/{w}/messages?dir={w}&from={w}&limit={w}&filter={w}"),
        ("GET", "/rooms/{room}/context/{w}?limit={w}"),
        ("GET", "/rooms/{room}/event/{w}"),
        ("PUT", "/rooms/{room}/redact/{w}/{w}"),
        ("POST", "/rooms/{w}/join"),
        ("POST", "/join/{w}"),
        ("POST", "/rooms/{room}/invite"),
        ("POST", "/rooms/{room}/kick"),
        ("POST", "/rooms/{room}/receipt/{w}/{w}"),
        ("PUT", "/rooms/{room}/typing/{w}"),
        ("GET", "/directory/room/{w}"),
        ("PUT", "/directory/room/{w}"),
        ("GET", "/sync?since={w}&filter={w}&timeout={w}&full_state={w}"),
        ("PUT", "/user/{user}/account_data/{w}"),
        ("GET", "/user/{user}/filter/{w}"),
        ("PUT", "/profile/{user}/{w}"),
        ("POST", "/createRoom"),
        ("POST", "/publicRooms?since={w}"),
        ("POST", "/keys/query"),
        ("POST", "/keys/claim"),
        ("PUT", "/sendToDevice/{w}/{w}"),
    ];
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (method, template) in templates {
        for word in words {
            for body in bodies {
                let path = template
                    .replace("{room}", &room)
                    .replace("{user}", &alice_id)
                    .replace("{w}", word);
                let url = format!("{}{V3}{path}", server.base_url());
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
                let response = http
                    .request(method.clone(), &url)
                    .bearer_auth(alice.token.as_deref().expect("a token"))
                    .body(body.to_owned())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path} {body}: no answer: {e}"));
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                assert!(status < 500, "{method} {path} {body}: {status} {answer}");
                if status >= 400 {
                    assert!(answer["errcode"].is_string(), "{method} {path} {body}: {answer}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, templates.len() * words.len() * bodies.len());
    // The room still answers as before.
    let (status, _) = alice.get(&format!("{V3}/rooms/{room}/event/{event}")).await;
    assert_eq!(status, 200);
}
