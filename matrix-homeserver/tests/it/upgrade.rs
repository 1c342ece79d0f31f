//! Room upgrades (`POST /rooms/{roomId}/upgrade`): the new room's create event (predecessor,
//! version, type, creators), the state copied (power levels adjusted per version), aliases and
//! the directory moved, bans copied, the tombstone and the old room's power levels; the
//! refusals (a member without the power, a stranger, an unknown version, a second upgrade,
//! two at once).

use serde_json::{Value, json};

use crate::rooms::{create, send, user};
use crate::spec::check;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

async fn upgrade(client: &Client, room: &str, body: Value) -> (u16, Value) {
    client.post(&format!("{V3}/rooms/{room}/upgrade"), &body).await
}

async fn state(client: &Client, room: &str, kind: &str) -> Value {
    let (status, body) = client.get(&format!("{V3}/rooms/{room}/state/{kind}/")).await;
    assert_eq!(status, 200, "{kind}: {body}");
    body
}

/// The whole state of `room` as `client` reads it.
async fn full_state(client: &Client, room: &str) -> Vec<Value> {
    let (status, body) = client.get(&format!("{V3}/rooms/{room}/state")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("a state").clone()
}

async fn an_upgrade_makes_the_replacement_room_and_tombstones_the_old(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (_, mallory_id) = user(&server, "mallory").await;
    let old = create(
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Tea", "topic": "Leaves",
               "room_alias_name": "tea", "room_version": "10",
               "creation_content": {"type": "m.space"},
               "power_level_content_override": {"users": {"@alice:localhost": 100,
                                                          "@bob:localhost": 40}},
               "initial_state": [{"type": "m.room.guest_access", "state_key": "",
                                  "content": {"guest_access": "can_join"}},
                                 {"type": "m.room.server_acl", "state_key": "",
                                  "content": {"allow": ["*"], "deny": ["evil.example"],
                                              "allow_ip_literals": false}}]}),
    )
    .await;
    let (status, body) = bob.post(&format!("{V3}/join/{old}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .post(&format!("{V3}/rooms/{old}/ban"), &json!({"user_id": mallory_id, "reason": "spam"}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = upgrade(&alice, &old, json!({"new_version": "12"})).await;
    assert_eq!(status, 200, "{body}");
    check("room_upgrades.yaml", "/rooms/{roomId}/upgrade", "post", 200, &body);
    let new = body["replacement_room"].as_str().expect("a room id").to_owned();
    assert_ne!(new, old);

    // The create event: predecessor, version, the old room's type; alice its creator.
    let created = full_state(&alice, &new).await;
    let create_event =
        created.iter().find(|e| e["type"] == "m.room.create").expect("a create event");
    assert_eq!(create_event["sender"], alice_id.as_str());
    assert_eq!(create_event["content"]["room_version"], "12");
    assert_eq!(create_event["content"]["predecessor"]["room_id"], old.as_str());
    assert_eq!(create_event["content"]["type"], "m.space");
    // Copied state.
    assert_eq!(state(&alice, &new, "m.room.name").await["name"], "Tea");
    assert_eq!(state(&alice, &new, "m.room.topic").await["topic"], "Leaves");
    assert_eq!(state(&alice, &new, "m.room.join_rules").await["join_rule"], "public");
    assert_eq!(state(&alice, &new, "m.room.guest_access").await["guest_access"], "can_join");
    assert_eq!(
        state(&alice, &new, "m.room.history_visibility").await["history_visibility"],
        "shared"
    );
    assert_eq!(state(&alice, &new, "m.room.server_acl").await["deny"], json!(["evil.example"]));
    // Power levels: alice, a creator of a version 12 room, is not listed; bob keeps 40.
    let levels = state(&alice, &new, "m.room.power_levels").await;
    assert!(levels["users"].get(&alice_id).is_none(), "{levels}");
    assert_eq!(levels["users"][&bob_id], 40, "{levels}");
    // The ban is copied.
    let (_, member) =
        alice.get(&format!("{V3}/rooms/{new}/state/m.room.member/{mallory_id}")).await;
    assert_eq!(member["membership"], "ban", "{member}");
    // The alias and the directory moved.
    let (status, body) = alice.get(&format!("{V3}/directory/room/%23tea:localhost")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], new.as_str());
    assert_eq!(state(&alice, &new, "m.room.canonical_alias").await["alias"], "#tea:localhost");
    let (_, body) = alice.get(&format!("{V3}/directory/list/room/{old}")).await;
    assert_eq!(body["visibility"], "private", "{body}");
    let (_, body) = alice.get(&format!("{V3}/directory/list/room/{new}")).await;
    assert_eq!(body["visibility"], "public", "{body}");

    // The old room: the tombstone, and only the privileged may speak or invite.
    let tombstone = state(&bob, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    let levels = state(&alice, &old, "m.room.power_levels").await;
    assert_eq!(
        (levels["events_default"].as_i64(), levels["invite"].as_i64()),
        (Some(50), Some(50))
    );
    let (status, body) = send(&bob, &old, "late", "anyone here?").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // bob's client sees the tombstone in his sync, joins the new room and sees its
    // predecessor.
    let (status, synced) = bob.get(&format!("{V3}/sync")).await;
    assert_eq!(status, 200, "{synced}");
    let timeline =
        synced["rooms"]["join"][&old]["timeline"]["events"].as_array().expect("timeline").clone();
    let state_events =
        synced["rooms"]["join"][&old]["state"]["events"].as_array().cloned().unwrap_or_default();
    assert!(
        timeline
            .iter()
            .chain(state_events.iter())
            .any(|e| e["type"] == "m.room.tombstone"
                && e["content"]["replacement_room"] == new.as_str()),
        "{synced}"
    );
    let (status, body) = bob.post(&format!("{V3}/join/{new}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, synced) = bob.get(&format!("{V3}/sync")).await;
    assert_eq!(status, 200, "{synced}");
    let room = &synced["rooms"]["join"][&new];
    let all: Vec<&Value> = room["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(room["timeline"]["events"].as_array().into_iter().flatten())
        .collect();
    assert!(
        all.iter().any(|e| e["type"] == "m.room.create"
            && e["content"]["predecessor"]["room_id"] == old.as_str()),
        "{synced}"
    );

    // Upgrading the old room again is refused; the new room can be upgraded in turn.
    let (status, body) = upgrade(&alice, &old, json!({"new_version": "12"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_STATE"), "{body}");
}

async fn upgrades_keep_creators_powerful_across_versions(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (_, carol_id) = user(&server, "carol").await;
    let old = create(&alice, json!({"preset": "public_chat"})).await;
    let (status, body) = bob.post(&format!("{V3}/join/{old}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Version 12 to 11: alice, a creator (above every level) before, gets the top level.
    let (status, body) = upgrade(&alice, &old, json!({"new_version": "11"})).await;
    assert_eq!(status, 200, "{body}");
    let eleven = body["replacement_room"].as_str().expect("a room").to_owned();
    let levels = state(&alice, &eleven, "m.room.power_levels").await;
    assert_eq!(levels["users"][&alice_id], 100, "{levels}");

    // Version 11 to 12 with additional creators: neither is listed in the power levels.
    let (status, body) =
        upgrade(&alice, &eleven, json!({"new_version": "12", "additional_creators": [carol_id]}))
            .await;
    assert_eq!(status, 200, "{body}");
    let twelve = body["replacement_room"].as_str().expect("a room").to_owned();
    let created = full_state(&alice, &twelve).await;
    let create_event = created.iter().find(|e| e["type"] == "m.room.create").expect("create");
    assert_eq!(create_event["content"]["additional_creators"], json!([carol_id]));
    let levels = state(&alice, &twelve, "m.room.power_levels").await;
    assert!(levels["users"].get(&alice_id).is_none(), "{levels}");
    assert!(levels["users"].get(&carol_id).is_none(), "{levels}");
    let _ = bob_id;
}

async fn upgrades_are_refused_to_the_unprivileged_and_for_unknown_versions(
    backend: crate::Backend,
) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (stranger, _) = user(&server, "stranger").await;
    let room = create(&alice, json!({"preset": "public_chat"})).await;
    let (status, body) = bob.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    // bob, a member without the power to send a tombstone.
    let (status, body) = upgrade(&bob, &room, json!({"new_version": "12"})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // A stranger, a user who left, a banned user.
    let (status, body) = upgrade(&stranger, &room, json!({"new_version": "12"})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = upgrade(&bob, &room, json!({"new_version": "12"})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // Unknown versions, bad bodies, unknown rooms.
    let (status, body) = upgrade(&alice, &room, json!({"new_version": "99"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNSUPPORTED_ROOM_VERSION"), "{body}");
    let (status, body) = upgrade(&alice, &room, json!({"new_version": ""})).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNSUPPORTED_ROOM_VERSION"), "{body}");
    let (status, body) = upgrade(&alice, &room, json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) =
        upgrade(&alice, &room, json!({"new_version": "12", "additional_creators": ["nope"]})).await;
    assert_eq!(status, 400, "{body}");
    let many: Vec<String> = (0..51).map(|i| format!("@u{i}:localhost")).collect();
    let (status, body) =
        upgrade(&alice, &room, json!({"new_version": "12", "additional_creators": many})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = upgrade(&alice, "!nowhere:localhost", json!({"new_version": "12"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    // Nothing was upgraded by any of them.
    let (status, _) = alice.get(&format!("{V3}/rooms/{room}/state/m.room.tombstone/")).await;
    assert_eq!(status, 404);

    // Two upgrades at once: one new room, the other told the room was upgraded.
    let (first, second) = tokio::join!(
        upgrade(&alice, &room, json!({"new_version": "12"})),
        upgrade(&alice, &room, json!({"new_version": "11"})),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{first:?} {second:?}");
    let refused = if first.0 == 400 { &first.1 } else { &second.1 };
    assert_eq!(errcode(refused), "M_BAD_STATE", "{refused}");
}

crate::on_every_backend!(
    an_upgrade_makes_the_replacement_room_and_tombstones_the_old,
    upgrades_keep_creators_powerful_across_versions,
    upgrades_are_refused_to_the_unprivileged_and_for_unknown_versions
);
