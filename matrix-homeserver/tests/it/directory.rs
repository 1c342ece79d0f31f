//! The user directory, the public room directory's filters and tokens, and space hierarchies
//! on one server, with their failure cases (strangers, bounds, bad tokens).

use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_matrix/client/v1";

async fn search(client: &Client, body: Value) -> (u16, Value) {
    client.post(&format!("{V3}/user_directory/search"), &body).await
}

/// The user ids a search finds (checked against the spec).
async fn found(client: &Client, term: &str) -> Vec<String> {
    let (status, body) = search(client, json!({"search_term": term})).await;
    assert_eq!(status, 200, "{body}");
    check("users.yaml", "/user_directory/search", "post", 200, &body);
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["user_id"].as_str().expect("a user id").to_owned())
        .collect()
}

async fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

async fn set_state(client: &Client, room: &str, kind: &str, key: &str, content: Value) {
    let path = format!("{V3}/rooms/{room}/state/{kind}/{key}");
    let (status, body) = client.put(&path, &content).await;
    assert_eq!(status, 200, "{kind} {key}: {body}");
}

async fn user_directory_finds_room_mates_and_members_of_public_rooms(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let (dave, _) = user(&server, "dave").await;
    let (stranger, _) = user(&server, "stranger").await;
    // alice and bob share a private room; carol is alone in a public one, dave in a private.
    let private = create(&alice, json!({"preset": "private_chat", "invite": [bob_id]})).await;
    join(&bob, &private).await;
    let public = create(&carol, json!({"preset": "public_chat"})).await;
    create(&dave, json!({"preset": "private_chat"})).await;
    let (status, body) = bob
        .put(&format!("{V3}/profile/{bob_id}/displayname"), &json!({"displayname": "Bobby Tables"}))
        .await;
    assert_eq!(status, 200, "{body}");

    // Room-mates by id and by display name, ignoring case; the answer carries the name.
    assert_eq!(found(&alice, "BOB").await, vec![bob_id.clone()]);
    let (_, body) = search(&alice, json!({"search_term": "tables"})).await;
    assert_eq!(body["results"][0]["user_id"], bob_id.as_str(), "{body}");
    assert_eq!(body["results"][0]["display_name"], "Bobby Tables");
    assert_eq!(body["limited"], false);
    // Members of public rooms, for anyone.
    assert_eq!(found(&stranger, "carol").await, vec![carol_id.clone()]);
    // A stranger finds nobody of a private room.
    assert!(found(&stranger, "bob").await.is_empty());
    assert!(found(&stranger, "tables").await.is_empty());
    assert!(found(&stranger, "dave").await.is_empty());
    assert!(found(&stranger, "alice").await.is_empty());
    // Once bob leaves, alice no longer finds him.
    assert_eq!(bob.post(&format!("{V3}/rooms/{private}/leave"), &json!({})).await.0, 200);
    assert!(found(&alice, "bob").await.is_empty());
    // A public room made invite-only hides its members from strangers.
    set_state(&carol, &public, "m.room.join_rules", "", json!({"join_rule": "invite"})).await;
    assert!(found(&stranger, "carol").await.is_empty());
    set_state(&carol, &public, "m.room.join_rules", "", json!({"join_rule": "public"})).await;
    assert_eq!(found(&stranger, "carol").await, vec![carol_id.clone()]);
    // Deactivated users are found by nobody.
    let body = json!({"auth": {"type": "m.login.password", "user": carol_id, "password": "pw"}});
    let (status, answer) = carol.post(&format!("{V3}/account/deactivate"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(found(&stranger, "carol").await.is_empty());
    let _ = alice_id;
}

async fn user_directory_bounds_and_refusals(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    for name in ["user1", "user2", "user3"] {
        let (client, _) = user(&server, name).await;
        join(&client, &room).await;
    }
    let (status, body) = search(&alice, json!({"search_term": "user", "limit": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().expect("results").len(), 2);
    assert_eq!(body["limited"], true);
    let (_, body) = search(&alice, json!({"search_term": "user", "limit": 3})).await;
    assert_eq!(
        (body["results"].as_array().map(Vec::len), &body["limited"]),
        (Some(3), &json!(false))
    );
    // A huge limit is bounded, not refused.
    let (status, body) = search(&alice, json!({"search_term": "user", "limit": 1_000_000})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(3));
    // Malformed requests.
    let (status, body) = search(&alice, json!({"limit": 2})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) = search(&alice, json!({"search_term": "u", "limit": -1})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) = search(&alice, json!({"search_term": "x".repeat(300)})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = search(&Client::new(&server), json!({"search_term": "u"})).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
}

async fn user_directory_can_search_all_local_users(backend: crate::Backend) {
    let change = |c: &mut matrix_homeserver::Config| c.user_directory.search_all_local_users = true;
    let Some(server) = crate::start_changed(backend, change).await else { return };
    let (loner, loner_id) = user(&server, "loner").await;
    let (stranger, _) = user(&server, "stranger").await;
    create(&loner, json!({"preset": "private_chat"})).await;
    assert_eq!(found(&stranger, "loner").await, vec![loner_id.clone()]);
    let body = json!({"auth": {"type": "m.login.password", "user": loner_id, "password": "pw"}});
    assert_eq!(loner.post(&format!("{V3}/account/deactivate"), &body).await.0, 200);
    assert!(found(&stranger, "loner").await.is_empty());
}

fn room_ids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["room_id"].as_str().expect("a room id").to_owned())
        .collect()
}

async fn public_rooms_filter_by_type_and_page_with_stable_tokens(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let space = create(
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Space",
               "creation_content": {"type": "m.space"}}),
    )
    .await;
    let mut rooms = Vec::new();
    for name in ["One", "Two", "Three", "Four"] {
        let body = json!({"preset": "public_chat", "visibility": "public", "name": name,
                          "topic": format!("about {name}")});
        rooms.push(create(&alice, body).await);
    }
    let filtered = |filter: Value| {
        let alice = alice.clone();
        async move {
            let (status, body) =
                alice.post(&format!("{V3}/publicRooms"), &json!({"filter": filter})).await;
            assert_eq!(status, 200, "{body}");
            check("list_public_rooms.yaml", "/publicRooms", "post", 200, &body);
            room_ids(&body, "chunk")
        }
    };
    assert_eq!(filtered(json!({"room_types": ["m.space"]})).await, vec![space.clone()]);
    let untyped = filtered(json!({"room_types": [null]})).await;
    assert_eq!(untyped.len(), 4);
    assert!(!untyped.contains(&space));
    assert_eq!(filtered(json!({"room_types": [null, "m.space"]})).await.len(), 5);
    assert_eq!(filtered(json!({"room_types": []})).await.len(), 0);
    assert_eq!(filtered(json!({"generic_search_term": "ABOUT t"})).await.len(), 2);
    let many: Vec<Value> = (0..51).map(|i| json!(format!("t{i}"))).collect();
    let (status, body) =
        alice.post(&format!("{V3}/publicRooms"), &json!({"filter": {"room_types": many}})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // Pages of two: each token names a room, so a room joining the list (or moving up)
    // between pages neither repeats nor skips the others.
    let (status, first) = bob.get(&format!("{V3}/publicRooms?limit=2")).await;
    assert_eq!(status, 200, "{first}");
    check("list_public_rooms.yaml", "/publicRooms", "get", 200, &first);
    assert!(first.get("prev_batch").is_none(), "{first}");
    let mut seen = room_ids(&first, "chunk");
    let next = first["next_batch"].as_str().expect("a next_batch").to_owned();
    // A new room with one member sorts among the others by id; one more page goes on
    // after the last room seen.
    create(&bob, json!({"preset": "public_chat", "visibility": "public", "name": "Late"})).await;
    let (_, second) = bob.get(&format!("{V3}/publicRooms?limit=2&since={next}")).await;
    let second_ids = room_ids(&second, "chunk");
    assert_eq!(second_ids.len(), 2, "{second}");
    for id in &second_ids {
        assert!(!seen.contains(id), "{id} twice");
    }
    seen.extend(second_ids.clone());
    // Back from the second page: the two rooms before it in the list as it is now.
    let prev = second["prev_batch"].as_str().expect("a prev_batch");
    let (_, back) = bob.get(&format!("{V3}/publicRooms?limit=2&since={prev}")).await;
    let (_, whole) = bob.get(&format!("{V3}/publicRooms")).await;
    let whole = room_ids(&whole, "chunk");
    assert_eq!(whole.len(), 6);
    let at = whole.iter().position(|id| *id == second_ids[0]).expect("listed");
    assert_eq!(room_ids(&back, "chunk"), whole[at.saturating_sub(2)..at].to_vec());
    // Bad tokens.
    for token in ["garbage", "p1", "n12", "nx_!a:localhost", "n1_notaroom"] {
        let (status, body) = bob.get(&format!("{V3}/publicRooms?since={token}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{token}: {body}");
    }
    let max = u64::MAX;
    let (status, body) = bob.get(&format!("{V3}/publicRooms?since=n{max}_!a:localhost")).await;
    assert_eq!(status, 200, "{body}");
    // Without federation, another server's directory is not found.
    let (status, body) = bob.get(&format!("{V3}/publicRooms?server=elsewhere.test")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    // Asking for another server's directory needs a user.
    let (status, body) =
        Client::new(&server).get(&format!("{V3}/publicRooms?server=elsewhere.test")).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    // Our own name is ours.
    let (status, _) = Client::new(&server).get(&format!("{V3}/publicRooms?server=localhost")).await;
    assert_eq!(status, 200);
}

/// A space with a public child, a private child, a restricted child (members of the space
/// may join), a suggested public sub-space with a child, and a child event without `via`.
struct Tree {
    space: String,
    public: String,
    private: String,
    restricted: String,
    sub: String,
    leaf: String,
}

async fn tree(alice: &Client) -> Tree {
    let space = create(
        alice,
        json!({"preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let public = create(alice, json!({"preset": "public_chat", "name": "Public"})).await;
    let private = create(alice, json!({"preset": "private_chat", "name": "Private"})).await;
    let restricted = create(
        alice,
        json!({"name": "Restricted", "initial_state": [{"type": "m.room.join_rules",
               "state_key": "", "content": {"join_rule": "restricted",
               "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;
    let sub = create(
        alice,
        json!({"preset": "public_chat", "name": "Sub", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let leaf = create(alice, json!({"preset": "public_chat", "name": "Leaf"})).await;
    let via = json!({"via": ["localhost"]});
    set_state(alice, &space, "m.space.child", &public, json!({"via": ["localhost"], "order": "b"}))
        .await;
    set_state(alice, &space, "m.space.child", &private, via.clone()).await;
    set_state(alice, &space, "m.space.child", &restricted, via.clone()).await;
    set_state(
        alice,
        &space,
        "m.space.child",
        &sub,
        json!({"via": ["localhost"], "order": "a", "suggested": true}),
    )
    .await;
    set_state(alice, &space, "m.space.child", "!removed:localhost", json!({})).await;
    set_state(alice, &sub, "m.space.child", &leaf, via).await;
    // m.space.parent is state like any other.
    set_state(
        alice,
        &leaf,
        "m.space.parent",
        &sub,
        json!({"via": ["localhost"], "canonical": true}),
    )
    .await;
    let (status, parent) =
        alice.get(&format!("{V3}/rooms/{leaf}/state/m.space.parent/{sub}")).await;
    assert_eq!((status, &parent["canonical"]), (200, &json!(true)), "{parent}");
    Tree { space, public, private, restricted, sub, leaf }
}

async fn hierarchy(client: &Client, room: &str, query: &str) -> (u16, Value) {
    let (status, body) = client.get(&format!("{V1}/rooms/{room}/hierarchy?{query}")).await;
    if status == 200 {
        check("space_hierarchy.yaml", "/rooms/{roomId}/hierarchy", "get", 200, &body);
    }
    (status, body)
}

async fn hierarchy_walks_the_space_as_the_user_may_see_it(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (stranger, _) = user(&server, "stranger").await;
    let t = tree(&alice).await;

    // alice (in every room) sees the whole tree, depth first, children ordered as the spec
    // says (by `order`, then by the child event's time); the child without `via` is gone.
    let (status, body) = hierarchy(&alice, &t.space, "").await;
    assert_eq!(status, 200, "{body}");
    let all = vec![
        t.space.clone(),
        t.sub.clone(),
        t.leaf.clone(),
        t.public.clone(),
        t.private.clone(),
        t.restricted.clone(),
    ];
    assert_eq!(room_ids(&body, "rooms"), all, "{body}");
    let top = &body["rooms"][0];
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["name"], "Space");
    assert_eq!(top["children_state"].as_array().map(Vec::len), Some(4), "{top}");
    assert!(top["children_state"][0]["origin_server_ts"].is_i64());
    let restricted = body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["room_id"] == t.restricted.as_str())
        .expect("there");
    assert_eq!(restricted["allowed_room_ids"], json!([t.space]));
    assert!(body.get("next_batch").is_none());

    // A stranger: neither the private room nor the restricted one (not in the space yet).
    let (_, body) = hierarchy(&stranger, &t.space, "").await;
    assert_eq!(
        room_ids(&body, "rooms"),
        vec![t.space.clone(), t.sub.clone(), t.leaf.clone(), t.public.clone()]
    );
    // In the space, the restricted room is theirs to join, so it shows.
    join(&stranger, &t.space).await;
    let (_, body) = hierarchy(&stranger, &t.space, "").await;
    assert!(room_ids(&body, "rooms").contains(&t.restricted));
    assert!(!room_ids(&body, "rooms").contains(&t.private));
    // The private room itself is refused to them.
    let (status, body) = hierarchy(&stranger, &t.private, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = hierarchy(&stranger, "!nowhere:localhost", "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // suggested_only and max_depth.
    let (_, body) = hierarchy(&alice, &t.space, "suggested_only=true").await;
    assert_eq!(room_ids(&body, "rooms"), vec![t.space.clone(), t.sub.clone()]);
    let (_, body) = hierarchy(&alice, &t.space, "max_depth=0").await;
    assert_eq!(room_ids(&body, "rooms"), vec![t.space.clone()]);
    let (_, body) = hierarchy(&alice, &t.space, "max_depth=1").await;
    assert!(!room_ids(&body, "rooms").contains(&t.leaf));
    assert_eq!(room_ids(&body, "rooms").len(), 5);
    let (status, _) = hierarchy(&alice, &t.space, "max_depth=1000000").await;
    assert_eq!(status, 200, "a huge depth is bounded");

    // Pages of two, to the end, are the whole walk; tokens hold the parameters.
    let mut paged = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (status, body) = hierarchy(&alice, &t.space, &query).await;
        assert_eq!(status, 200, "{body}");
        let page = room_ids(&body, "rooms");
        assert!(page.len() <= 2);
        paged.extend(page);
        match body["next_batch"].as_str() {
            Some(next) => query = format!("limit=2&from={next}"),
            None => break,
        }
        assert!(paged.len() < 10, "pagination ends");
    }
    assert_eq!(paged, all);
    let (_, body) = hierarchy(&alice, &t.space, "limit=2").await;
    let next = body["next_batch"].as_str().expect("a next_batch");
    for changed in [format!("max_depth=1&from={next}"), format!("suggested_only=true&from={next}")]
    {
        let (status, body) = hierarchy(&alice, &t.space, &changed).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{changed}: {body}");
    }
    let (status, body) = hierarchy(&alice, &t.sub, &format!("from={next}")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "another room's token: {body}");
    for bad in
        ["from=garbage", "from=h1_2", "limit=0", "limit=-1", "max_depth=-1", "suggested_only=maybe"]
    {
        let (status, body) = hierarchy(&alice, &t.space, bad).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }
    let (status, body) =
        Client::new(&server).get(&format!("{V1}/rooms/{}/hierarchy", t.space)).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
}

crate::on_every_backend!(
    user_directory_finds_room_mates_and_members_of_public_rooms,
    user_directory_bounds_and_refusals,
    user_directory_can_search_all_local_users,
    public_rooms_filter_by_type_and_page_with_stable_tokens,
    hierarchy_walks_the_space_as_the_user_may_see_it,
    room_summaries_show_what_each_asker_may_see,
    mutual_rooms_are_the_rooms_both_are_joined_to,
);

async fn summary(client: &Client, room: &str) -> (u16, Value) {
    let path = format!("{V1}/room_summary/{}", crate::rooms::urlencode(room));
    let (status, body) = client.get(&path).await;
    if status == 200 {
        check("room_summary.yaml", "/room_summary/{roomIdOrAlias}", "get", 200, &body);
    }
    (status, body)
}

async fn room_summaries_show_what_each_asker_may_see(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (stranger, _) = user(&server, "stranger").await;
    let anonymous = Client::new(&server);
    let t = tree(&alice).await;
    let (status, body) = alice
        .put(&format!("{V3}/directory/room/%23public:localhost"), &json!({"room_id": t.public}))
        .await;
    assert_eq!(status, 200, "{body}");

    // A public room: anyone, even without a token, by id or by alias; no membership for
    // those who have none, and no children.
    for asker in [&anonymous, &stranger] {
        for target in [t.public.as_str(), "#public:localhost"] {
            let (status, body) = summary(asker, target).await;
            assert_eq!(status, 200, "{target}: {body}");
            assert_eq!(body["room_id"], t.public.as_str());
            assert_eq!(body["name"], "Public");
            assert_eq!(body["join_rule"], "public");
            assert_eq!(body["num_joined_members"], 1);
            assert!(body.get("membership").is_none(), "{body}");
            assert!(body.get("children_state").is_none(), "{body}");
        }
    }
    let (_, body) = summary(&alice, &t.space).await;
    assert_eq!((&body["room_type"], &body["membership"]), (&json!("m.space"), &json!("join")));
    assert!(body.get("children_state").is_none(), "{body}");

    // A private room: its members and invitees only; to anyone else it does not exist.
    for asker in [&anonymous, &stranger, &bob] {
        let (status, body) = summary(asker, &t.private).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    }
    let invite = json!({"user_id": bob_id});
    let (status, body) = alice.post(&format!("{V3}/rooms/{}/invite", t.private), &invite).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = summary(&bob, &t.private).await;
    assert_eq!((status, &body["membership"]), (200, &json!("invite")), "{body}");
    assert_eq!(body["name"], "Private");
    // The invite revoked (a kick of the invitee): nothing again.
    let kick = json!({"user_id": bob_id});
    let (status, body) = alice.post(&format!("{V3}/rooms/{}/kick", t.private), &kick).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = summary(&bob, &t.private).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "revoked: {body}");

    // A restricted room: members of the allowed space, not others, never without a token.
    let (status, body) = summary(&bob, &t.restricted).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    join(&bob, &t.space).await;
    let (status, body) = summary(&bob, &t.restricted).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed_room_ids"], json!([t.space]));
    assert!(body.get("membership").is_none(), "not a member yet: {body}");
    let (status, _) = summary(&anonymous, &t.restricted).await;
    assert_eq!(status, 404);

    // Unknown rooms and aliases, malformed ids, a bad token.
    for target in ["!nowhere:localhost", "#nothing:localhost"] {
        let (status, body) = summary(&alice, target).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{target}: {body}");
    }
    let (status, body) = summary(&alice, "not-a-room").await;
    assert_eq!(status, 400, "{body}");
    let bad = Client::new(&server).with_token("not a token");
    let (status, body) = summary(&bad, &t.public).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{body}");
}

async fn mutual(client: &Client, query: &str) -> (u16, Value) {
    let (status, body) = client.get(&format!("{V1}/mutual_rooms?{query}")).await;
    if status == 200 {
        check("mutual_rooms.yaml", "/mutual_rooms", "get", 200, &body);
    }
    (status, body)
}

async fn mutual_rooms_are_the_rooms_both_are_joined_to(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let mut shared = Vec::new();
    for _ in 0..3 {
        let room = create(&alice, json!({"preset": "public_chat"})).await;
        join(&bob, &room).await;
        shared.push(room);
    }
    create(&alice, json!({"preset": "public_chat"})).await;
    let bobs = create(&bob, json!({"preset": "public_chat"})).await;
    join(&carol, &bobs).await;
    // Bob leaves one of the three: it is no longer shared.
    let left = shared.pop().expect("three");
    let (status, body) = bob.post(&format!("{V3}/rooms/{left}/leave"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    shared.sort();

    let (status, body) = mutual(&alice, &format!("user_id={bob_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["joined"], &body["count"]), (&json!(shared), &json!(2)), "{body}");
    assert!(body.get("next_batch").is_none(), "{body}");
    // After the first: the second.
    let from = crate::rooms::urlencode(&shared[0]);
    let (_, body) = mutual(&alice, &format!("user_id={bob_id}&from={from}")).await;
    assert_eq!(body["joined"], json!([shared[1]]), "{body}");
    // Carol shares nothing with alice (only a room with bob); nobody shares with a stranger.
    let (_, body) = mutual(&alice, &format!("user_id={carol_id}")).await;
    assert_eq!((&body["joined"], &body["count"]), (&json!([]), &json!(0)));
    let (_, body) = mutual(&alice, "user_id=@nobody:elsewhere.org").await;
    assert_eq!(body["joined"], json!([]));
    // Refused: no user, one's own, an id that does not conform, a token of something else.
    for (query, code) in [
        ("", "M_MISSING_PARAM"),
        ("user_id=@alice:localhost", "M_INVALID_PARAM"),
        ("user_id=@Bad%20Id:localhost", "M_INVALID_PARAM"),
        ("user_id=@bob:localhost&from=garbage", "M_INVALID_PARAM"),
    ] {
        let (status, body) = mutual(&alice, query).await;
        assert_eq!((status, errcode(&body)), (400, code), "{query}: {body}");
    }
}
