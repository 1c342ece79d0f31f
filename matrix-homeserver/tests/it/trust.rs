//! Regression tests for the security review's authorization and history-visibility findings
//! (../shared/reviews/security-a001503.md), each named after its finding and written as the
//! attacker would try it: a member at power 0, a revoked invitee, a user banned before
//! joining, a stranger.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::rooms::{create, send, user};
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

async fn put(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, &format!("{V3}{path}"), Some(body)).await
}

async fn sent(client: &Client, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = send(client, room, txn, text).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an event id").to_owned()
}

/// Bodies of the `m.room.message` events a user gets from `/messages` (backwards, all).
async fn visible_messages(client: &Client, room: &str) -> (u16, Vec<String>) {
    let (status, body) = client.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=1000")).await;
    let bodies = body["chunk"]
        .as_array()
        .map(|chunk| {
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (status, bodies)
}

async fn post(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    client.post(&format!("{V3}{path}"), body).await
}

async fn finding_01_redaction_through_send_needs_the_redact_level(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(post(&bob, &format!("/rooms/{room}/join"), &json!({})).await.0, 200);
    let victim = sent(&alice, &room, "a1", "alice's words").await;
    let own = sent(&bob, &room, "b1", "bob's words").await;

    // Bob (power 0) tries the generic send path that skipped the check: refused, for both
    // the v11+ shape (`redacts` in content) and the old top-level one.
    for (txn, content) in [("r1", json!({"redacts": victim})), ("r2", json!({}))] {
        let path = format!("/rooms/{room}/send/m.room.redaction/{txn}");
        let (status, body) = put(&bob, &path, &content).await;
        if txn == "r1" {
            assert_eq!(status, 403, "{body}");
            assert_eq!(errcode(&body), "M_FORBIDDEN");
        } else {
            // A redaction that names nothing is malformed.
            assert_eq!(status, 400, "{body}");
        }
    }
    // And through /redact, as before.
    let (status, _) = put(&bob, &format!("/rooms/{room}/redact/{victim}/r3"), &json!({})).await;
    assert_eq!(status, 403);
    // Alice's message is untouched for everyone.
    let (_, event) = alice.get(&format!("{V3}/rooms/{room}/event/{victim}")).await;
    assert_eq!(event["content"]["body"], "alice's words", "{event}");
    assert!(event["unsigned"].get("redacted_because").is_none(), "{event}");

    // Bob may redact his own event through /send, and the server applies it.
    let path = format!("/rooms/{room}/send/m.room.redaction/r4");
    let (status, body) = put(&bob, &path, &json!({"redacts": own})).await;
    assert_eq!(status, 200, "{body}");
    let (_, event) = alice.get(&format!("{V3}/rooms/{room}/event/{own}")).await;
    assert!(event["unsigned"]["redacted_because"].is_object(), "{event}");
    assert!(event["content"].get("body").is_none(), "{event}");

    // A redaction of an event of another room is refused even to a room's admin.
    let other = create(&alice, json!({})).await;
    let elsewhere = sent(&alice, &other, "o1", "elsewhere").await;
    let path = format!("/rooms/{room}/send/m.room.redaction/r5");
    let (status, _) = put(&alice, &path, &json!({"redacts": elsewhere})).await;
    assert_eq!(status, 403);

    // With the redact level (Alice, the creator) anyone's event can go.
    let path = format!("/rooms/{room}/send/m.room.redaction/r6");
    assert_eq!(put(&alice, &path, &json!({"redacts": victim})).await.0, 200);
    let _ = bob_id;
}

async fn finding_02_users_who_never_joined_get_nothing_in_the_leave_section(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (mallory, mallory_id) = user(&server, "mallory").await;
    let room = create(&alice, json!({"name": "Private plans", "topic": "secret topic"})).await;
    sent(&alice, &room, "s1", "the secret").await;
    // Bob is invited, then the invite is revoked; Mallory is banned before ever joining.
    assert_eq!(
        post(&alice, &format!("/rooms/{room}/invite"), &json!({"user_id": bob_id})).await.0,
        200
    );
    sent(&alice, &room, "s2", "said while bob was invited").await;
    assert_eq!(
        post(&alice, &format!("/rooms/{room}/kick"), &json!({"user_id": bob_id})).await.0,
        200
    );
    assert_eq!(
        post(&alice, &format!("/rooms/{room}/ban"), &json!({"user_id": mallory_id})).await.0,
        200
    );
    sent(&alice, &room, "s3", "after").await;

    let filter = urlencoding(r#"{"room":{"timeline":{"limit":100},"include_leave":true}}"#);
    for (client, id) in [(&bob, &bob_id), (&mallory, &mallory_id)] {
        let (status, body) = client.get(&format!("{V3}/sync?since=s0_0&filter={filter}")).await;
        assert_eq!(status, 200, "{body}");
        let left = &body["rooms"]["leave"][&room];
        let text = left.to_string();
        assert!(!text.contains("secret"), "{id} sees the room: {text}");
        assert!(!text.contains("Private plans"), "{id} sees the name: {text}");
        assert_eq!(left["state"]["events"], json!([]), "{id}: {left}");
        // What they do see is their own membership events only.
        for event in left["timeline"]["events"].as_array().into_iter().flatten() {
            assert_eq!(event["type"], "m.room.member", "{event}");
            assert_eq!(event["state_key"], id.as_str(), "{event}");
        }
        let (status, _) = client.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await;
        assert_eq!(status, 403);
        let (status, _) = client.get(&format!("{V3}/rooms/{room}/state")).await;
        assert_eq!(status, 403);
    }
    // Bob's own revoked invite reaches him, so his client can drop the room.
    let (_, body) = bob.get(&format!("{V3}/sync?since=s0_0&filter={filter}")).await;
    let timeline = body["rooms"]["leave"][&room]["timeline"]["events"].to_string();
    assert!(timeline.contains("\"leave\""), "{timeline}");
}

async fn finding_03_world_readable_does_not_open_the_earlier_shared_history(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (stranger, _) = user(&server, "stranger").await;
    let room = create(&alice, json!({})).await;
    let early = sent(&alice, &room, "e1", "shared-era secret").await;
    let path = format!("/rooms/{room}/state/m.room.history_visibility/");
    assert_eq!(put(&alice, &path, &json!({"history_visibility": "world_readable"})).await.0, 200);
    sent(&alice, &room, "e2", "for the world").await;

    let (status, bodies) = visible_messages(&stranger, &room).await;
    assert_eq!(status, 200);
    assert_eq!(bodies, vec!["for the world".to_owned()]);
    let (status, _) = stranger.get(&format!("{V3}/rooms/{room}/event/{early}")).await;
    assert_eq!(status, 404);
    let (status, _) = stranger.get(&format!("{V3}/rooms/{room}/context/{early}")).await;
    assert_eq!(status, 404);
    // The change itself is visible (world-readable after it).
    let (_, body) = stranger.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await;
    assert!(body.to_string().contains("m.room.history_visibility"), "{body}");
}

async fn finding_08_ban_then_unban_is_not_having_joined(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (eve, eve_id) = user(&server, "eve").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let secret = sent(&alice, &room, "m1", "members only").await;
    assert_eq!(
        post(&alice, &format!("/rooms/{room}/ban"), &json!({"user_id": eve_id})).await.0,
        200
    );
    assert_eq!(
        post(&alice, &format!("/rooms/{room}/unban"), &json!({"user_id": eve_id})).await.0,
        200
    );
    assert_eq!(
        post(&alice, &format!("/rooms/{room}/ban"), &json!({"user_id": eve_id})).await.0,
        200
    );
    for path in [
        format!("/rooms/{room}/messages?dir=b"),
        format!("/rooms/{room}/state"),
        format!("/rooms/{room}/members"),
        format!("/rooms/{room}/joined_members"),
    ] {
        let (status, body) = eve.get(&format!("{V3}{path}")).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, _) = eve.get(&format!("{V3}/rooms/{room}/event/{secret}")).await;
    assert!(status == 403 || status == 404, "{status}");
    let (status, _) = eve.get(&format!("{V3}/rooms/{room}/context/{secret}")).await;
    assert!(status == 403 || status == 404, "{status}");
}

async fn finding_48_a_kicked_user_sees_their_own_kick_under_joined_history(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility",
               "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    sent(&alice, &room, "m0", "before bob").await;
    assert_eq!(post(&bob, &format!("/rooms/{room}/join"), &json!({})).await.0, 200);
    sent(&alice, &room, "m1", "while bob is here").await;
    let (status, body) =
        post(&alice, &format!("/rooms/{room}/kick"), &json!({"user_id": bob_id, "reason": "bye"}))
            .await;
    assert_eq!(status, 200, "{body}");
    sent(&alice, &room, "m2", "after bob").await;

    let (status, body) = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=100")).await;
    assert_eq!(status, 200, "{body}");
    let chunk = body["chunk"].as_array().expect("a chunk");
    let kick = chunk
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave")
        .expect("bob sees his own kick");
    assert_eq!(kick["content"]["reason"], "bye");
    let bodies: Vec<&str> = chunk.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, vec!["while bob is here"]);
}

async fn finding_16_a_filtered_sync_timeline_says_limited_when_it_leaves_events_out(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let (_, first) = alice.get(&format!("{V3}/sync")).await;
    let since = first["next_batch"].as_str().expect("a token").to_owned();
    for i in 0..3 {
        let path = format!("/rooms/{room}/send/x.keep/k{i}");
        assert_eq!(put(&alice, &path, &json!({"n": i})).await.0, 200);
    }
    for i in 0..5 {
        sent(&alice, &room, &format!("m{i}"), "noise").await;
    }
    let filter = urlencoding(r#"{"room":{"timeline":{"limit":2,"types":["x.keep"]}}}"#);
    let (status, body) = alice.get(&format!("{V3}/sync?since={since}&filter={filter}")).await;
    assert_eq!(status, 200, "{body}");
    let timeline = &body["rooms"]["join"][&room]["timeline"];
    let kept: Vec<&Value> =
        timeline["events"].as_array().expect("events").iter().map(|e| &e["content"]["n"]).collect();
    assert_eq!(kept, vec![&json!(1), &json!(2)], "{timeline}");
    assert_eq!(timeline["limited"], true, "{timeline}");

    // Far more filtered-out events than one scan reads: still limited, never silently not.
    let (_, body) = alice.get(&format!("{V3}/sync?since={since}")).await;
    let since = body["next_batch"].as_str().expect("a token").to_owned();
    let path = format!("/rooms/{room}/send/x.keep/k9");
    assert_eq!(put(&alice, &path, &json!({"n": 9})).await.0, 200);
    for i in 0..40 {
        sent(&alice, &room, &format!("n{i}"), "noise").await;
    }
    let (_, body) = alice.get(&format!("{V3}/sync?since={since}&filter={filter}")).await;
    let timeline = &body["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true, "{body}");
}

async fn finding_38_the_canonical_alias_must_point_at_the_room(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    create(&bob, json!({"room_alias_name": "bobs"})).await;
    let room = create(&alice, json!({"room_alias_name": "alices"})).await;
    let path = format!("/rooms/{room}/state/m.room.canonical_alias/");
    for content in [
        json!({"alias": "#bobs:localhost"}),
        json!({"alias": "#alices:localhost", "alt_aliases": ["#bobs:localhost"]}),
        json!({"alias": "#nobody:localhost"}),
        json!({"alias": "#remote:example.org"}),
    ] {
        let (status, body) = put(&alice, &path, &content).await;
        assert_eq!(status, 400, "{content}: {body}");
        assert_eq!(errcode(&body), "M_BAD_ALIAS", "{body}");
    }
    let (status, _) = put(&alice, &path, &json!({"alias": "#alices:localhost"})).await;
    assert_eq!(status, 200);
    // createRoom's initial state is held to the same rule, before anything is stored.
    let (status, body) = post(
        &alice,
        "/createRoom",
        &json!({"initial_state": [{"type": "m.room.canonical_alias", "state_key": "",
                                   "content": {"alias": "#bobs:localhost"}}]}),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_ALIAS"), "{body}");
}

/// The client gives up after the event is stored but before the server answers (storage
/// acknowledges late), then retries with the same transaction id: one event, one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_15_a_retry_after_a_dropped_request_does_not_send_twice() {
    let storage = crate::faults::SlowAcks {
        inner: Arc::new(matrix_storage::memory::MemoryStore::new()),
        delay: Duration::from_millis(400),
    };
    let server = matrix_homeserver::testing::TestHomeserver::start_on(
        matrix_homeserver::testing::TestHomeserver::config(),
        Arc::new(storage),
    )
    .await;
    let session = server.register_user("alice", "pw").await;
    let alice = Client::new(&server).with_token(&session.access_token);
    let room = server.create_room(&session, None).await;
    let impatient =
        reqwest::Client::builder().timeout(Duration::from_millis(150)).build().expect("a client");
    let path = format!("{}{V3}/rooms/{room}/send/m.room.message/once", server.base_url());
    let dropped = impatient
        .put(&path)
        .bearer_auth(&session.access_token)
        .json(&json!({"msgtype": "m.text", "body": "only once"}))
        .send()
        .await;
    assert!(dropped.is_err(), "the first try times out: {dropped:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = send(&alice, &room, "once", "only once").await;
    assert_eq!(status, 200, "{body}");
    let (_, bodies) = visible_messages(&alice, &room).await;
    assert_eq!(bodies, vec!["only once".to_owned()]);
}

async fn finding_33_state_events_carry_prev_content_and_replaces_state(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    let path = format!("/profile/{alice_id}/displayname");
    assert_eq!(put(&alice, &path, &json!({"displayname": "Alice"})).await.0, 200);
    assert_eq!(put(&alice, &path, &json!({"displayname": "Alicia"})).await.0, 200);
    let (_, body) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=100")).await;
    let members: Vec<&Value> = body["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .collect();
    // Newest first: Alicia (was Alice), Alice (was no name), the join (replaces nothing).
    assert_eq!(members[0]["content"]["displayname"], "Alicia");
    assert_eq!(members[0]["unsigned"]["prev_content"]["displayname"], "Alice", "{}", members[0]);
    assert_eq!(members[0]["unsigned"]["replaces_state"], members[1]["event_id"]);
    assert_eq!(members[1]["unsigned"]["prev_content"]["membership"], "join");
    let join = members.last().expect("the join");
    assert!(join["unsigned"].get("replaces_state").is_none(), "{join}");
    assert!(join["unsigned"].get("prev_content").is_none(), "{join}");
}

async fn finding_47_room_account_data_filter_and_messages_to(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let room = create(&alice, json!({})).await;
    for kind in ["x.a", "x.b"] {
        let path = format!("/user/{alice_id}/rooms/{room}/account_data/{kind}");
        assert_eq!(put(&alice, &path, &json!({"k": kind})).await.0, 200);
    }
    let filter = urlencoding(
        r#"{"account_data":{"types":["x.none"]},"room":{"account_data":{"types":["x.a"]}}}"#,
    );
    let (_, body) = alice.get(&format!("{V3}/sync?filter={filter}")).await;
    let data = &body["rooms"]["join"][&room]["account_data"]["events"];
    let kinds: Vec<&str> = data
        .as_array()
        .expect("room account data")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds, vec!["x.a"], "{body}");

    // `to` stops a page: back from the end down to the newest message only.
    for i in 0..5 {
        sent(&alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let (_, newest) = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=1")).await;
    let to = newest["end"].as_str().expect("an end token");
    let (status, page) =
        alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50&to={to}")).await;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["m4"], "{page}");
}

async fn finding_28_space_members_can_join_restricted_rooms(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let space = create(&alice, json!({"preset": "public_chat"})).await;
    let room = create(
        &alice,
        json!({"initial_state": [{"type": "m.room.join_rules", "state_key": "",
               "content": {"join_rule": "restricted",
                           "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;
    // Not in the space: refused.
    let (status, body) = post(&bob, &format!("/rooms/{room}/join"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // In the space: the join is authorised by Alice, who can invite.
    assert_eq!(post(&bob, &format!("/rooms/{space}/join"), &json!({})).await.0, 200);
    let (status, body) = post(&bob, &format!("/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = bob.get(&format!("{V3}/rooms/{room}/state/m.room.member/{bob_id}")).await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], "@alice:localhost", "{member}");
}

async fn finding_22_public_rooms_follow_the_rooms_state(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (stranger, _) = user(&server, "stranger").await;
    let room =
        create(&alice, json!({"preset": "public_chat", "visibility": "public", "name": "One"}))
            .await;
    let names = |body: &Value| -> Vec<String> {
        body["chunk"]
            .as_array()
            .map(|c| c.iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (_, body) = stranger.get(&format!("{V3}/publicRooms")).await;
    assert_eq!(names(&body), vec!["One"]);
    assert_eq!(body["chunk"][0]["num_joined_members"], 1);
    let path = format!("/rooms/{room}/state/m.room.name/");
    assert_eq!(put(&alice, &path, &json!({"name": "Two"})).await.0, 200);
    assert_eq!(post(&stranger, &format!("/rooms/{room}/join"), &json!({})).await.0, 200);
    let (_, body) = stranger.get(&format!("{V3}/publicRooms")).await;
    assert_eq!(names(&body), vec!["Two"]);
    assert_eq!(body["chunk"][0]["num_joined_members"], 2);
    let (_, body) = stranger
        .post(&format!("{V3}/publicRooms"), &json!({"filter": {"generic_search_term": "one"}}))
        .await;
    assert_eq!(names(&body), Vec::<String>::new());
}

fn urlencoding(text: &str) -> String {
    crate::rooms::urlencode(text)
}

crate::on_every_backend!(
    finding_01_redaction_through_send_needs_the_redact_level,
    finding_02_users_who_never_joined_get_nothing_in_the_leave_section,
    finding_03_world_readable_does_not_open_the_earlier_shared_history,
    finding_08_ban_then_unban_is_not_having_joined,
    finding_48_a_kicked_user_sees_their_own_kick_under_joined_history,
    finding_16_a_filtered_sync_timeline_says_limited_when_it_leaves_events_out,
    finding_38_the_canonical_alias_must_point_at_the_room,
    finding_33_state_events_carry_prev_content_and_replaces_state,
    finding_47_room_account_data_filter_and_messages_to,
    finding_28_space_members_can_join_restricted_rooms,
    finding_22_public_rooms_follow_the_rooms_state,
);
