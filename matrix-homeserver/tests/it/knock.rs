//! Knocking on rooms of this server (`POST /knock/{roomIdOrAlias}`): the knock in `/sync`'s
//! `rooms.knock` with its `knock_state`, the room's admins seeing it and accepting (invite) or
//! denying (kick) it, the knocker rescinding it (leave), `knock_restricted` rooms, and the
//! refusals: a room whose join rule is not knock, a room version before 7, a joined, invited
//! or banned knocker, an unknown room, garbage.

use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// A room of `alice` whose join rule is `rule` (of room version `version`), named "Knockers".
async fn room_with_rule(alice: &Client, rule: &str, version: &str) -> String {
    create(
        alice,
        json!({"preset": "private_chat", "name": "Knockers", "room_version": version,
               "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                  "content": {"join_rule": rule}}]}),
    )
    .await
}

/// Knocks on `target` (a room id or alias) with `reason`; answers the status and body.
pub(crate) async fn knock(client: &Client, target: &str, query: &str) -> (u16, Value) {
    let target = target.replace('#', "%23");
    client.post(&format!("{V3}/knock/{target}{query}"), &json!({"reason": "let me in"})).await
}

/// A sync (no token) of `client`.
async fn sync(client: &Client) -> Value {
    let (status, body) = client.get(&format!("{V3}/sync")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The membership of `user` in `room` as `client` reads it from the room's state.
async fn membership(client: &Client, room: &str, user: &str) -> (u16, Value) {
    client.get(&format!("{V3}/rooms/{room}/state/m.room.member/{user}")).await
}

async fn knocks_are_shown_accepted_denied_and_rescinded(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, carol_id) = user(&server, "carol").await;
    let (dave, dave_id) = user(&server, "dave").await;
    let room = room_with_rule(&alice, "knock", "12").await;

    // bob knocks: the answer is the spec's, the knock is in the room with its reason.
    let (status, body) = knock(&bob, &room, "").await;
    assert_eq!(status, 200, "{body}");
    check("knocking.yaml", "/knock/{roomIdOrAlias}", "post", 200, &body);
    assert_eq!(body["room_id"], room.as_str());
    let (status, member) = membership(&alice, &room, &bob_id).await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["membership"], "knock");
    assert_eq!(member["reason"], "let me in");
    // A second knock changes nothing and is no error.
    let (status, body) = knock(&bob, &room, "").await;
    assert_eq!(status, 200, "{body}");

    // bob's sync: the room under rooms.knock with the stripped state and his knock.
    let synced = sync(&bob).await;
    check("sync.yaml", "/sync", "get", 200, &synced);
    let events = synced["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no knock section: {synced}"))
        .clone();
    assert!(events.iter().any(|e| e["type"] == "m.room.create"), "{events:?}");
    assert!(events.iter().any(|e| e["content"]["name"] == "Knockers"), "{events:?}");
    let own = events.last().expect("events");
    assert_eq!(
        (own["type"].as_str(), own["content"]["membership"].as_str()),
        (Some("m.room.member"), Some("knock"))
    );
    assert!(synced["rooms"]["join"].get(&room).is_none(), "{synced}");
    // A knocker reads nothing of the room.
    let (status, body) = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // alice sees the knock in her timeline, and accepts it with an invite; bob joins.
    let synced = sync(&alice).await;
    let timeline = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("a timeline")
        .clone();
    assert!(
        timeline
            .iter()
            .any(|e| e["state_key"] == bob_id.as_str() && e["content"]["membership"] == "knock"),
        "{timeline:?}"
    );
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": bob_id})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Knocking once joined is refused.
    let (status, body) = knock(&bob, &room, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // carol knocks and is denied (a kick): her membership is leave; she may knock again.
    let (status, body) = knock(&carol, &room, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/kick"), &json!({"user_id": carol_id})).await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = membership(&alice, &room, &carol_id).await;
    assert_eq!(member["membership"], "leave");
    let (status, body) = knock(&carol, &room, "").await;
    assert_eq!(status, 200, "{body}");
    // bob (level 0) may not deny carol's knock.
    let (status, body) =
        bob.post(&format!("{V3}/rooms/{room}/kick"), &json!({"user_id": carol_id})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // carol rescinds her knock herself.
    let (status, body) = carol.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = membership(&alice, &room, &carol_id).await;
    assert_eq!(member["membership"], "leave");
    let synced = sync(&carol).await;
    assert!(synced["rooms"]["knock"].get(&room).is_none(), "{synced}");

    // dave knocks and is banned: he may not knock again.
    let (status, body) = knock(&dave, &room, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/ban"), &json!({"user_id": dave_id})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = knock(&dave, &room, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // An invited user is told to join instead.
    let (erin, erin_id) = user(&server, "erin").await;
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/invite"), &json!({"user_id": erin_id})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = knock(&erin, &room, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

async fn knocks_are_refused_where_the_room_does_not_take_them(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;

    // Join rule invite (and public): no knocking.
    let private = create(&alice, json!({"preset": "private_chat"})).await;
    let (status, body) = knock(&bob, &private, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("join rule"), "{body}");
    let public = create(&alice, json!({"preset": "public_chat"})).await;
    let (status, body) = knock(&bob, &public, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // Room version 6 has no knocking, even with the join rule set.
    let old = room_with_rule(&alice, "knock", "6").await;
    let (status, body) = knock(&bob, &old, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("version"), "{body}");

    // knock_restricted exists from version 10: a knock on a version 9 room with it fails.
    let nine = room_with_rule(&alice, "knock_restricted", "9").await;
    let (status, body) = knock(&bob, &nine, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // Unknown rooms and aliases, malformed ids and bodies, no token.
    let (status, body) = knock(&bob, "!nowhere:localhost", "").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = knock(&bob, "#nowhere:localhost", "").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = knock(&bob, "not-a-room", "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = bob.post_raw(&format!("{V3}/knock/{private}"), b"{nope".to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_NOT_JSON"), "{body}");
    let (status, body) = bob.post(&format!("{V3}/knock/{private}"), &json!({"reason": 5})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let anonymous = Client::new(&server);
    let (status, body) = knock(&anonymous, &private, "").await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
}

async fn knock_restricted_rooms_take_knocks_and_restricted_joins(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (carol, _) = user(&server, "carol").await;
    let space = create(&alice, json!({"preset": "public_chat"})).await;
    let room = create(
        &alice,
        json!({"preset": "private_chat", "room_version": "10", "room_alias_name": "kr",
               "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                  "content": {"join_rule": "knock_restricted",
                                              "allow": [{"type": "m.room_membership",
                                                         "room_id": space}]}}]}),
    )
    .await;
    // bob, not in the space, knocks (by alias).
    let (status, body) = knock(&bob, "#kr:localhost", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let (_, member) = membership(&alice, &room, &bob_id).await;
    assert_eq!(member["membership"], "knock");
    // carol, in the space, joins without knocking.
    let (status, body) = carol.post(&format!("{V3}/join/{space}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = carol.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // bob, still not in the space, cannot join past his knock.
    let (status, body) = bob.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

crate::on_every_backend!(
    knocks_are_shown_accepted_denied_and_rescinded,
    knocks_are_refused_where_the_room_does_not_take_them,
    knock_restricted_rooms_take_knocks_and_restricted_joins
);
