//! Federation between in-process homeservers (`TestFederation`): keys, signed requests,
//! queries, joins.

use matrix_homeserver::matrix_federation::FederationError;
use matrix_homeserver::testing::TestFederation;

#[tokio::test]
async fn servers_fetch_each_others_keys_and_sign_their_requests() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let client = b.federation_client().expect("federation is on");

    // a's key response, as b checks it.
    let keys = client.server_keys("a.test").await.expect("a answers");
    let checked = matrix_homeserver::matrix_federation::keys::verify_server_keys(&keys, "a.test")
        .expect("a's response is self-signed");
    assert_eq!(checked.server_name, "a.test");

    // A signed query: a fetches b's key to check it.
    let alice = a.register_user("alice", "pw").await;
    let url = format!("{}/_matrix/client/v3/profile/@alice:a.test/displayname", a.base_url());
    let set = reqwest::Client::new()
        .put(url)
        .bearer_auth(&alice.access_token)
        .json(&serde_json::json!({ "displayname": "Alice" }))
        .send()
        .await
        .expect("a answers");
    assert!(set.status().is_success());
    let profile = client
        .query_profile("a.test", "@alice:a.test", None)
        .await
        .expect("b may ask a for its user's profile");
    assert_eq!(profile.get_str("displayname"), Some("Alice"));
    let missing = client.query_profile("a.test", "@nobody:a.test", None).await;
    assert!(matches!(missing, Err(FederationError::Status { status: 404, .. })), "{missing:?}");

    // The notary: a answers for b's keys, signed by both.
    let mut asked = matrix_core::Object::new();
    asked.insert("b.test", matrix_core::Object::new());
    let notary = client.query_keys("a.test", asked).await;
    let notary = notary.expect("a answers as a notary");
    let list = notary.get("server_keys").and_then(|v| v.as_array()).expect("a list");
    assert_eq!(list.len(), 1);
    let signatures = list[0].as_object().and_then(|o| o.get_object("signatures")).expect("signed");
    assert!(signatures.contains_key("a.test") && signatures.contains_key("b.test"));
}

#[tokio::test]
async fn a_join_template_is_given_only_to_the_users_own_server() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (net.server("a.test"), net.server("b.test"), net.server("c.test"));
    let alice = a.register_user("alice", "pw").await;
    let room = a.create_room(&alice, Some("Tea")).await;
    let b_client = b.federation_client().expect("federation is on");
    let versions = ["10", "11", "12"];

    // The room is private (invite only): the authorization rules refuse bob's join.
    let refused = b_client.make_join("a.test", &room, "@bob:b.test", &versions).await;
    assert!(matches!(refused, Err(FederationError::Status { status: 403, .. })), "{refused:?}");

    // c cannot ask for b's user, whatever the room.
    let c_client = c.federation_client().expect("federation is on");
    let forged = c_client.make_join("a.test", &room, "@bob:b.test", &versions).await;
    assert!(matches!(forged, Err(FederationError::Status { status: 403, .. })), "{forged:?}");

    // A server that supports no version of the room.
    let old = b_client.make_join("a.test", &room, "@bob:b.test", &["1"]).await;
    match old {
        Err(e) => assert_eq!(e.errcode().as_deref(), Some("M_INCOMPATIBLE_ROOM_VERSION")),
        Ok(body) => panic!("a template for an unsupported version: {body:?}"),
    }
    // An unknown room.
    let unknown = b_client.make_join("a.test", "!nope:a.test", "@bob:b.test", &versions).await;
    assert!(matches!(unknown, Err(FederationError::Status { status: 404, .. })), "{unknown:?}");
}

/// A client call on a test server.
pub(crate) async fn call(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Creates a room on `server` with the `createRoom` body given; answers its id.
pub(crate) async fn create_room(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    body: serde_json::Value,
) -> String {
    let path = "/_matrix/client/v3/createRoom";
    let (status, created) = call(server, token, reqwest::Method::POST, path, body).await;
    assert_eq!(status, 200, "{created}");
    created["room_id"].as_str().expect("a room id").to_owned()
}

/// Syncs (bounded) until `room`'s timeline on `server` holds a message with `body`.
async fn wait_for_message(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    room: &str,
    body: &str,
) {
    let mut since = String::new();
    for _ in 0..40 {
        let path = format!("/_matrix/client/v3/sync?timeout=500{since}");
        let (status, sync) =
            call(server, token, reqwest::Method::GET, &path, serde_json::json!({})).await;
        assert_eq!(status, 200, "{sync}");
        let events = &sync["rooms"]["join"][room]["timeline"]["events"];
        if events
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == body))
        {
            return;
        }
        since = format!("&since={}", sync["next_batch"].as_str().expect("a next_batch"));
    }
    panic!("{body:?} never reached {room} on {}", server.server_name());
}

#[tokio::test]
async fn a_user_joins_a_room_of_another_server_and_messages_go_both_ways() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        serde_json::json!({"preset": "public_chat", "room_alias_name": "tea", "name": "Tea"}),
    )
    .await;

    // bob resolves the alias through a and joins through a.
    let (status, resolved) = call(
        b,
        &bob.access_token,
        reqwest::Method::GET,
        "/_matrix/client/v3/directory/room/%23tea:a.test",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["room_id"], room.as_str());
    let (status, joined) = call(
        b,
        &bob.access_token,
        reqwest::Method::POST,
        "/_matrix/client/v3/join/%23tea:a.test",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["room_id"], room.as_str());

    // a knows bob is in: his join went through a's checks.
    let (status, members) = call(
        a,
        &alice.access_token,
        reqwest::Method::GET,
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{members}");
    assert!(members["joined"].get("@bob:b.test").is_some(), "{members}");

    // alice's message reaches bob; bob's reaches alice.
    let send = |server, token: String, body: &'static str| {
        let room = room.clone();
        async move {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}");
            let content = serde_json::json!({"msgtype": "m.text", "body": body});
            let (status, sent) = call(server, &token, reqwest::Method::PUT, &path, content).await;
            assert_eq!(status, 200, "{sent}");
        }
    };
    send(a, alice.access_token.clone(), "hello from a").await;
    wait_for_message(b, &bob.access_token, &room, "hello from a").await;
    send(b, bob.access_token.clone(), "hello from b").await;
    wait_for_message(a, &alice.access_token, &room, "hello from b").await;
}

/// Syncs (bounded) until `pick` finds something in a sync answer.
pub(crate) async fn sync_until(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    what: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    sync_from(server, token, None, what, pick).await
}

/// [`sync_until`] from a sync token.
pub(crate) async fn sync_from(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    from: Option<&str>,
    what: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut since = from.map(|f| format!("&since={f}")).unwrap_or_default();
    for _ in 0..40 {
        let path = format!("/_matrix/client/v3/sync?timeout=500{since}");
        let (status, sync) =
            call(server, token, reqwest::Method::GET, &path, serde_json::json!({})).await;
        assert_eq!(status, 200, "{sync}");
        if pick(&sync) {
            return sync;
        }
        since = format!("&since={}", sync["next_batch"].as_str().expect("a next_batch"));
    }
    panic!("{what} never showed on {}", server.server_name());
}

#[tokio::test]
async fn invites_rejections_and_bans_cross_servers() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let carol = b.register_user("carol", "pw").await;
    let post = |server, token: String, path: String, body: serde_json::Value| async move {
        let (status, answer) = call(server, &token, reqwest::Method::POST, &path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    };
    let created = post(
        a,
        alice.access_token.clone(),
        "/_matrix/client/v3/createRoom".to_owned(),
        serde_json::json!({"preset": "private_chat", "name": "Secret"}),
    )
    .await;
    let room = created["room_id"].as_str().expect("a room id").to_owned();

    // An invite of a user of b: b countersigns and bob sees it, with the room's name.
    let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
    post(
        a,
        alice.access_token.clone(),
        invite.clone(),
        serde_json::json!({"user_id": "@bob:b.test"}),
    )
    .await;
    let sync = sync_until(b, &bob.access_token, "bob's invite", |s| {
        s["rooms"]["invite"].get(&room).is_some()
    })
    .await;
    let state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        state.as_array().expect("a list").iter().any(|e| e["content"]["name"] == "Secret"),
        "{state}"
    );

    // bob joins through the inviter's server; a private room lets him in because of the invite.
    post(
        b,
        bob.access_token.clone(),
        format!("/_matrix/client/v3/join/{room}"),
        serde_json::json!({}),
    )
    .await;
    wait_for_message_from(a, &alice.access_token, &room, "@bob:b.test", "join").await;

    // carol is invited and rejects: a sees her leave.
    post(a, alice.access_token.clone(), invite, serde_json::json!({"user_id": "@carol:b.test"}))
        .await;
    sync_until(b, &carol.access_token, "carol's invite", |s| {
        s["rooms"]["invite"].get(&room).is_some()
    })
    .await;
    post(
        b,
        carol.access_token.clone(),
        format!("/_matrix/client/v3/rooms/{room}/leave"),
        serde_json::json!({}),
    )
    .await;
    wait_for_message_from(a, &alice.access_token, &room, "@carol:b.test", "leave").await;

    // alice bans bob: b learns it (bob's membership there is ban), and bob can no longer send.
    let before = sync_until(b, &bob.access_token, "a sync", |_| true).await;
    let before = before["next_batch"].as_str().expect("a token").to_owned();
    post(
        a,
        alice.access_token.clone(),
        format!("/_matrix/client/v3/rooms/{room}/ban"),
        serde_json::json!({"user_id": "@bob:b.test", "reason": "testing"}),
    )
    .await;
    sync_from(b, &bob.access_token, Some(&before), "bob's ban", |s| {
        s["rooms"]["leave"].get(&room).is_some()
    })
    .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after-ban");
    let (status, _) = call(
        b,
        &bob.access_token,
        reqwest::Method::PUT,
        &path,
        serde_json::json!({"msgtype": "m.text", "body": "still here?"}),
    )
    .await;
    assert_eq!(status, 403, "a banned user sends nothing");
}

/// Waits until `room`'s timeline on `server` shows `user`'s membership become `membership`.
pub(crate) async fn wait_for_message_from(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    room: &str,
    user: &str,
    membership: &str,
) {
    sync_until(server, token, &format!("{user}'s {membership}"), |sync| {
        sync["rooms"]["join"][room]["timeline"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == user
                    && e["content"]["membership"] == membership
            })
        })
    })
    .await;
}

/// The room's current state on `server` as `(type, state_key) -> event_id`.
async fn state_ids(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    room: &str,
) -> std::collections::BTreeMap<(String, String), String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/state");
    let (status, state) =
        call(server, token, reqwest::Method::GET, &path, serde_json::json!({})).await;
    assert_eq!(status, 200, "{state}");
    state
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            let key = (
                e["type"].as_str().expect("a type").to_owned(),
                e["state_key"].as_str().expect("a state key").to_owned(),
            );
            (key, e["event_id"].as_str().expect("an id").to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_fork_made_while_the_link_is_cut_is_resolved_the_same_on_both_sides() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let dave = b.register_user("dave", "pw").await;
    let request = |server, token: String, method: reqwest::Method, path: String, body| async move {
        let (status, answer) = call(server, &token, method, &path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    };
    let created = request(
        a,
        alice.access_token.clone(),
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom".to_owned(),
        serde_json::json!({"preset": "public_chat", "name": "Fork", "room_version": "11"}),
    )
    .await;
    let room = created["room_id"].as_str().expect("a room id").to_owned();
    let join = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    request(
        b,
        bob.access_token.clone(),
        reqwest::Method::POST,
        join.clone(),
        serde_json::json!({}),
    )
    .await;
    // bob may change the topic (power 50).
    let levels_path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
    let mut levels = request(
        a,
        alice.access_token.clone(),
        reqwest::Method::GET,
        levels_path.clone(),
        serde_json::json!({}),
    )
    .await;
    levels["users"]["@bob:b.test"] = serde_json::json!(50);
    request(
        a,
        alice.access_token.clone(),
        reqwest::Method::PUT,
        levels_path.clone(),
        levels.clone(),
    )
    .await;
    wait_for_state(b, &bob.access_token, &room, "m.room.power_levels", |c| {
        c["users"]["@bob:b.test"] == 50
    })
    .await;

    // The link is cut: each side changes the room on its own.
    net.cut("a.test", "b.test");
    levels["users"]["@bob:b.test"] = serde_json::json!(50);
    levels["events"]["m.room.name"] = serde_json::json!(100);
    request(a, alice.access_token.clone(), reqwest::Method::PUT, levels_path, levels).await;
    request(
        a,
        alice.access_token.clone(),
        reqwest::Method::PUT,
        format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        serde_json::json!({"name": "Fork (a)"}),
    )
    .await;
    request(
        b,
        bob.access_token.clone(),
        reqwest::Method::PUT,
        format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
        serde_json::json!({"topic": "set on b"}),
    )
    .await;
    // dave joins through b, which is in the room.
    request(b, dave.access_token.clone(), reqwest::Method::POST, join, serde_json::json!({})).await;

    // Healed: the queued events cross, each side resolves the fork.
    net.heal("a.test", "b.test");
    wait_for_state(a, &alice.access_token, &room, "m.room.topic", |c| c["topic"] == "set on b")
        .await;
    wait_for_state(b, &bob.access_token, &room, "m.room.name", |c| c["name"] == "Fork (a)").await;
    // A message on each side builds on both branches.
    let send = |server, token: String, body: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}");
        let content = serde_json::json!({"msgtype": "m.text", "body": body});
        request(server, token, reqwest::Method::PUT, path, content)
    };
    send(a, alice.access_token.clone(), "after-a").await;
    send(b, bob.access_token.clone(), "after-b").await;
    wait_for_message(b, &bob.access_token, &room, "after-a").await;
    wait_for_message(a, &alice.access_token, &room, "after-b").await;
    let on_a = state_ids(a, &alice.access_token, &room).await;
    let on_b = state_ids(b, &bob.access_token, &room).await;
    assert_eq!(on_a, on_b, "both sides resolve the fork to the same state");
    assert!(on_a.contains_key(&("m.room.member".to_owned(), "@dave:b.test".to_owned())));
    // Both resolved from the room's auth-chain index, which each stored: the states they
    // resolved named the create event and the power levels (an event being stored is counted
    // through its auth events, and indexed by the next resolution that names it).
    for server in [a, b] {
        let index = server.storage().auth_chain_index(&room, 0, 1_000).await.expect("reads");
        let ids: std::collections::BTreeSet<&str> =
            index.iter().map(|e| e.event_id.as_str()).collect();
        for kind in ["m.room.create", "m.room.power_levels"] {
            let id = &on_a[&(kind.to_owned(), String::new())];
            assert!(ids.contains(id.as_str()), "{} has not indexed {kind}", server.server_name());
        }
    }
}

/// After a fork, the timeline's order is not the resolved state's: a client that applies
/// `state` and the timeline ends at the power levels that arrived last, and only
/// `use_state_after` tells it the resolved ones.
#[tokio::test]
async fn after_a_fork_state_after_tells_a_client_the_resolved_state() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        serde_json::json!({"preset": "public_chat", "room_version": "11"}),
    )
    .await;
    let join = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    let (status, answer) =
        call(b, &bob.access_token, reqwest::Method::POST, &join, serde_json::json!({})).await;
    assert_eq!(status, 200, "{answer}");
    // bob as powerful as alice.
    let levels_path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
    let get = reqwest::Method::GET;
    let (_, mut levels) =
        call(a, &alice.access_token, get.clone(), &levels_path, serde_json::json!({})).await;
    levels["users"]["@bob:b.test"] = serde_json::json!(100);
    let put = reqwest::Method::PUT;
    let (status, _) = call(a, &alice.access_token, put.clone(), &levels_path, levels.clone()).await;
    assert_eq!(status, 200);
    wait_for_state(b, &bob.access_token, &room, "m.room.power_levels", |c| {
        c["users"]["@bob:b.test"] == 100
    })
    .await;
    let (_, sync) =
        call(b, &bob.access_token, get.clone(), "/_matrix/client/v3/sync", serde_json::json!({}))
            .await;
    let since = sync["next_batch"].as_str().expect("a token").to_owned();

    // Cut: alice's levels first, then bob's (later, so resolved last: his stand), each on
    // its side; healed, b gets alice's after its own.
    net.cut("a.test", "b.test");
    let mut on_a = levels.clone();
    on_a["users"]["@carol:a.test"] = serde_json::json!(10);
    let (status, _) = call(a, &alice.access_token, put.clone(), &levels_path, on_a).await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut on_b = levels.clone();
    on_b["users"]["@dave:b.test"] = serde_json::json!(10);
    let (status, answer) = call(b, &bob.access_token, put, &levels_path, on_b).await;
    assert_eq!(status, 200);
    let bobs = answer["event_id"].as_str().expect("an id").to_owned();
    net.heal("a.test", "b.test");
    wait_for_state(a, &alice.access_token, &room, "m.room.power_levels", |c| {
        c["users"]["@dave:b.test"] == 10
    })
    .await;
    let on_b = sync_from(b, &bob.access_token, Some(&since), "alice's levels", |sync| {
        sync["rooms"]["join"][&room]["timeline"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["content"]["users"]["@carol:a.test"] == 10)
        })
    })
    .await;
    let resolved = state_ids(b, &bob.access_token, &room).await;
    let levels_key = ("m.room.power_levels".to_owned(), String::new());
    assert_eq!(resolved[&levels_key], bobs, "bob's levels, the later, stand");
    // What `state` and the timeline tell: alice's levels, last in the timeline.
    let timeline =
        on_b["rooms"]["join"][&room]["timeline"]["events"].as_array().expect("a timeline");
    let last_levels = timeline.iter().rev().find(|e| e["type"] == "m.room.power_levels");
    assert_ne!(last_levels.and_then(|e| e["event_id"].as_str()), Some(bobs.as_str()));
    // What `state_after` tells, from the same token: bob's.
    let path = format!("/_matrix/client/v3/sync?since={since}&use_state_after=true");
    let (status, after) = call(b, &bob.access_token, get, &path, serde_json::json!({})).await;
    assert_eq!(status, 200, "{after}");
    let joined = &after["rooms"]["join"][&room];
    assert!(joined.get("state").is_none(), "{joined}");
    let told: Vec<&str> = joined["state_after"]["events"]
        .as_array()
        .expect("state_after")
        .iter()
        .filter(|e| e["type"] == "m.room.power_levels")
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(told, vec![bobs.as_str()], "{joined}");
}

/// Waits until `room`'s current state on `server` has a `kind` event whose content `matches`.
async fn wait_for_state(
    server: &matrix_homeserver::testing::TestHomeserver,
    token: &str,
    room: &str,
    kind: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
    for _ in 0..100 {
        let (status, content) =
            call(server, token, reqwest::Method::GET, &path, serde_json::json!({})).await;
        if status == 200 && matches(&content) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{kind} in {room} never matched on {}", server.server_name());
}

/// An attacker's server (here a, honest in everything else) pushes the events of a room into a
/// server whose user it only invited: b has no user in the room, takes none of them, and its
/// user sees nothing but the invite.
#[tokio::test]
async fn a_server_cannot_push_events_of_a_room_we_are_only_invited_to() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let room = create_room(
        a,
        &alice.access_token,
        serde_json::json!({"preset": "private_chat", "invite": ["@bob:b.test"]}),
    )
    .await;
    sync_until(b, &bob.access_token, "bob's invite", |s| s["rooms"]["invite"].get(&room).is_some())
        .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/secret");
    let (status, sent) = call(
        a,
        &alice.access_token,
        reqwest::Method::PUT,
        &path,
        serde_json::json!({"msgtype": "m.text", "body": "not for b"}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let event_id = sent["event_id"].as_str().expect("an event id");

    // a sends b the message in a transaction of its own.
    let client = a.federation_client().expect("federation is on");
    let fetched = client.event("a.test", event_id).await.expect("a reads its own event");
    let pdu = fetched.get("pdus").and_then(|p| p.as_array()).expect("pdus")[0].clone();
    let answer = client
        .send_transaction("b.test", "push-1", vec![pdu], Vec::new())
        .await
        .expect("b answers the transaction");
    let result = answer.get_object("pdus").and_then(|p| p.get_object(event_id)).expect("a result");
    assert!(result.get_str("error").is_some(), "b took the event: {answer:?}");

    // bob still only has the invite, and never the message.
    let sync = sync_until(b, &bob.access_token, "a sync", |_| true).await;
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    assert!(sync["rooms"]["invite"].get(&room).is_some(), "{sync}");
    assert!(!sync.to_string().contains("not for b"), "{sync}");
}

/// The membership endpoints as an attacker calls them: a server speaking for another server's
/// user, an unsigned event, a knock where the join rules allow none, an invite from a server
/// that is not the inviter's or for a user who does not exist. Nothing of it is stored.
#[tokio::test]
async fn membership_endpoints_refuse_what_a_server_may_not_do() {
    use matrix_homeserver::matrix_federation::FederationError;
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (net.server("a.test"), net.server("b.test"), net.server("c.test"));
    let alice = a.register_user("alice", "pw").await;
    let room =
        create_room(a, &alice.access_token, serde_json::json!({"preset": "public_chat"})).await;
    let (b_client, c_client) =
        (b.federation_client().expect("on"), c.federation_client().expect("on"));
    let status_of = |result: Result<matrix_core::Object, FederationError>| match result {
        Err(FederationError::Status { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // b may have a template for its user; the event is then only b's to send, signed.
    let template = b_client
        .make_join("a.test", &room, "@bob:b.test", &["10", "11", "12"])
        .await
        .expect("a template for b's user");
    let rules =
        matrix_core::RoomVersionRules::get(template.get_str("room_version").expect("a version"))
            .expect("a known version");
    // Signed, but by a key that is not the server's (what an attacker can make).
    let forge = |mut event: matrix_core::Object, server: &str| {
        event.remove("signatures");
        event.remove("hashes");
        let key = matrix_core::SigningKey::from_seed("forged", &[9; 32]);
        matrix_core::signing::hash_and_sign_event(&mut event, server, &key, rules);
        let pdu = matrix_core::Pdu::from_object(event.clone(), rules).expect("a pdu");
        (event, pdu.event_id().to_owned())
    };
    let (event, event_id) =
        forge(template.get_object("event").expect("an event").clone(), "b.test");
    // c sends bob's join: not its user.
    assert_eq!(status_of(c_client.send_join("a.test", &room, &event_id, &event, false).await), 403);
    // b sends it signed by a key that is not b's: the signature check refuses it.
    assert_eq!(status_of(b_client.send_join("a.test", &room, &event_id, &event, false).await), 403);
    // Under another event id than its own.
    let wrong_id = b_client.send_join("a.test", &room, "$not-this-one", &event, false).await;
    assert_eq!(status_of(wrong_id), 400);
    // c asks a leave or a knock template for b's user; b a knock where the rules allow none.
    assert_eq!(status_of(c_client.make_leave("a.test", &room, "@bob:b.test").await), 403);
    assert_eq!(
        status_of(b_client.make_knock("a.test", &room, "@bob:b.test", &[rules.id]).await),
        403
    );
    // c invites a user of a, naming b's user as the inviter; then an inviter of its own, to
    // a user who does not exist.
    let mut invite = event.clone();
    invite.insert("state_key", "@alice:a.test");
    invite.object_entry("content").insert("membership", "invite");
    let (invite, invite_id) = forge(invite, "b.test");
    let forged = c_client.invite("a.test", &room, &invite_id, rules.id, invite.clone(), Vec::new());
    assert_eq!(status_of(forged.await), 403);
    let mut invite = invite;
    invite.insert("sender", "@carol:c.test");
    invite.insert("state_key", "@nobody:a.test");
    let (invite, invite_id) = forge(invite, "c.test");
    let unknown = c_client.invite("a.test", &room, &invite_id, rules.id, invite, Vec::new());
    assert_eq!(status_of(unknown.await), 404);

    // The room on a holds none of it: alice is its only member.
    let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    let (status, members) =
        call(a, &alice.access_token, reqwest::Method::GET, &path, serde_json::json!({})).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["joined"].as_object().expect("members").len(), 1, "{members}");
}
