//! Simplified sliding sync (MSC4186): lists by recency, ranges, filters, subscriptions,
//! required state (`$ME`, `$LAZY`, wildcards), connection state (incremental answers carry
//! only what changed; positions belong to one user and device), long polls, the extensions,
//! and what a stranger, a kicked user or a bad request gets.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::rooms::{create, user};
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";
const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A sliding sync request: status and body.
async fn try_sliding(client: &Client, query: &str, body: &Value) -> (u16, Value) {
    client.post(&format!("{SLIDING}?{query}"), body).await
}

/// A sliding sync request that must succeed.
async fn sliding(client: &Client, pos: Option<&str>, body: &Value) -> Value {
    let query = pos.map(|p| format!("pos={p}")).unwrap_or_default();
    let (status, body) = try_sliding(client, &query, body).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["pos"].is_string(), "{body}");
    body
}

fn pos(body: &Value) -> String {
    body["pos"].as_str().expect("a position").to_owned()
}

async fn send(client: &Client, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = crate::rooms::send(client, room, txn, text).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("an event id").to_owned()
}

async fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("{V3}/rooms/{room}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// Element X's room list request, more or less.
fn list_request(range: [u64; 2], timeline_limit: u64) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {"all": {
            "ranges": [range],
            "timeline_limit": timeline_limit,
            "required_state": [
                ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.name", ""], ["m.room.topic", ""], ["m.room.create", ""],
                ["m.room.power_levels", ""]
            ],
        }},
    })
}

fn room_ids_of(list: &Value) -> Vec<String> {
    list["ops"][0]["room_ids"]
        .as_array()
        .expect("room ids")
        .iter()
        .map(|r| r.as_str().expect("a room id").to_owned())
        .collect()
}

fn state_types(room: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or_default().to_owned(),
                        e["state_key"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn lists_order_by_recency_and_answers_carry_only_changes(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let mut room_ids = Vec::new();
    for i in 0..5 {
        let room = create(&alice, json!({"name": format!("Room {i}"), "invite": [bob_id]})).await;
        join(&bob, &room).await;
        send(&bob, &room, &format!("t{i}"), &format!("hello {i}")).await;
        room_ids.push(room);
    }
    let dm = create(&alice, json!({"invite": [bob_id], "is_direct": true})).await;
    join(&bob, &dm).await;
    send(&bob, &dm, "dm", "psst").await;

    // The first answer: the top three rooms, most recent first, each whole.
    let first = sliding(&alice, None, &list_request([0, 2], 1)).await;
    let list = &first["lists"]["all"];
    assert_eq!(list["count"], 6, "{first}");
    assert_eq!(room_ids_of(list), [dm.clone(), room_ids[4].clone(), room_ids[3].clone()]);
    let rooms = first["rooms"].as_object().expect("rooms");
    assert_eq!(rooms.len(), 3, "{first}");
    let top = &first["rooms"][&room_ids[4]];
    assert_eq!(top["initial"], true);
    assert_eq!(top["name"], "Room 4");
    assert_eq!(top["joined_count"], 2);
    assert_eq!(top["invited_count"], 0);
    assert_eq!(top["notification_count"], 1, "bob's message is unread: {top}");
    let timeline = top["timeline"].as_array().expect("a timeline");
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["content"]["body"], "hello 4");
    assert_eq!(top["limited"], true);
    assert!(top["prev_batch"].is_string());
    assert!(top["bump_stamp"].as_u64().is_some());
    // `$ME` and `$LAZY`: alice's own member event and bob's (the timeline's sender).
    let state = state_types(top);
    assert!(state.contains(&("m.room.member".into(), alice_id.clone())), "{state:?}");
    assert!(state.contains(&("m.room.member".into(), bob_id.clone())), "{state:?}");
    assert!(state.contains(&("m.room.create".into(), String::new())), "{state:?}");
    assert!(state.contains(&("m.room.name".into(), String::new())), "{state:?}");
    // The DM has no name: heroes stand in.
    let dm_room = &first["rooms"][&dm];
    assert!(dm_room.get("name").is_none(), "{dm_room}");
    assert_eq!(dm_room["heroes"][0]["user_id"], bob_id.as_str(), "{dm_room}");

    // Nothing changed: an answer with no rooms.
    let second = sliding(&alice, Some(&pos(&first)), &list_request([0, 2], 1)).await;
    assert!(second["rooms"].as_object().is_none_or(|r| r.is_empty()), "{second}");

    // A message in the oldest room moves it to the top; only it is sent, as a change.
    let moved = send(&bob, &room_ids[0], "again", "back to the top").await;
    let third = sliding(&alice, Some(&pos(&second)), &list_request([0, 2], 1)).await;
    assert_eq!(room_ids_of(&third["lists"]["all"])[0], room_ids[0]);
    let rooms = third["rooms"].as_object().expect("rooms");
    assert_eq!(rooms.len(), 1, "{third}");
    let changed = &third["rooms"][&room_ids[0]];
    // Never sent before on this connection (it was outside the range): sent whole.
    assert_eq!(changed["initial"], true, "{changed}");
    assert_eq!(changed["timeline"][0]["event_id"], moved.as_str());
    assert_eq!(changed["num_live"], 1);

    // Another message in a room the client has: a change, not initial, with only the new
    // event, and no state it had already.
    let next = send(&bob, &room_ids[0], "more", "and again").await;
    let fourth = sliding(&alice, Some(&pos(&third)), &list_request([0, 2], 1)).await;
    let changed = &fourth["rooms"][&room_ids[0]];
    assert!(changed.get("initial").is_none(), "{changed}");
    assert_eq!(changed["timeline"].as_array().map(Vec::len), Some(1));
    assert_eq!(changed["timeline"][0]["event_id"], next.as_str());
    assert_eq!(changed["limited"], false);
    assert_eq!(changed["num_live"], 1);
    assert!(changed.get("required_state").is_none(), "bob's member event was sent: {changed}");
    assert!(changed.get("name").is_none(), "{changed}");

    // A retry of the same position answers the same again (the client may not have had it).
    let retry = sliding(&alice, Some(&pos(&third)), &list_request([0, 2], 1)).await;
    assert_eq!(retry["rooms"][&room_ids[0]]["timeline"][0]["event_id"], next.as_str());

    // Room 3 dropped out of the range with nothing new: growing the range sends the rooms
    // not sent yet, not room 3 again.
    let fifth = sliding(&alice, Some(&pos(&fourth)), &list_request([0, 5], 1)).await;
    let mut sent: Vec<&String> = fifth["rooms"].as_object().expect("rooms").keys().collect();
    sent.sort();
    let mut expected = vec![&room_ids[1], &room_ids[2]];
    expected.sort();
    assert_eq!(sent, expected, "{fifth}");

    // A grown timeline limit sends the latest events again, marked expanded.
    let sixth = sliding(&alice, Some(&pos(&fifth)), &list_request([0, 5], 5)).await;
    let expanded = &sixth["rooms"][&room_ids[0]];
    assert_eq!(expanded["unstable_expanded_timeline"], true, "{sixth}");
    assert_eq!(expanded["timeline"].as_array().map(Vec::len), Some(5), "{expanded}");

    // A long poll returns when a message comes.
    let started = Instant::now();
    let poll = {
        let (alice, at) = (alice.clone(), pos(&sixth));
        tokio::spawn(async move {
            let (status, body) =
                try_sliding(&alice, &format!("pos={at}&timeout=10000"), &list_request([0, 5], 5))
                    .await;
            assert_eq!(status, 200, "{body}");
            body
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let woke = send(&bob, &room_ids[2], "wake", "wake up").await;
    let polled = poll.await.expect("the poll");
    assert!(started.elapsed() < Duration::from_secs(8), "woken, not timed out");
    assert_eq!(
        polled["rooms"][&room_ids[2]]["timeline"]
            .as_array()
            .and_then(|t| t.last())
            .map(|e| e["event_id"].clone()),
        Some(json!(woke))
    );

    // A position is the user's and the device's own: another's is unknown.
    let (status, body) =
        try_sliding(&bob, &format!("pos={}", pos(&polled)), &list_request([0, 5], 5)).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN_POS"), "{body}");
    let (status, body) = try_sliding(&alice, "pos=s1_0_1", &list_request([0, 5], 5)).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN_POS"), "{body}");
    let (status, body) = try_sliding(&alice, "pos=garbage", &list_request([0, 5], 5)).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN_POS"), "{body}");

    // The position pages history like a sync token.
    let (status, page) = alice
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=2&from={}", room_ids[2], pos(&polled)))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["chunk"][0]["event_id"], woke.as_str(), "{page}");
}

async fn invites_filters_and_subscriptions(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let (_carol, _) = user(&server, "carol").await;
    let plain = create(&bob, json!({"name": "Plain"})).await;
    let encrypted = create(
        &bob,
        json!({"name": "Secret", "initial_state": [{"type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let space =
        create(&bob, json!({"name": "Space", "creation_content": {"type": "m.space"}})).await;
    let (status, body) = bob
        .put(
            &format!("{V3}/rooms/{space}/state/m.space.child/{plain}"),
            &json!({"via": [server.server_name()]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        bob.put(&format!("{V3}/user/{bob_id}/rooms/{encrypted}/tags/u.work"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let alice_id = alice_user_id(&alice).await;
    let invited = create(&alice, json!({"name": "For Bob", "invite": [bob_id]})).await;
    let (status, body) = bob
        .put(&format!("{V3}/user/{bob_id}/account_data/m.direct"), &json!({alice_id: [invited]}))
        .await;
    assert_eq!(status, 200, "{body}");

    let filtered = |filters: Value| {
        json!({"lists": {"l": {"ranges": [[0, 50]], "timeline_limit": 0, "required_state": [],
            "filters": filters}}})
    };
    let ids = |body: &Value| {
        let mut ids = room_ids_of(&body["lists"]["l"]);
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<String>>()
    };
    let body = sliding(&bob, None, &filtered(json!({"is_invite": true}))).await;
    assert_eq!(ids(&body), [invited.as_str()]);
    // An invite: its stripped state, no timeline.
    let invite = &body["rooms"][&invited];
    let stripped = invite["invite_state"].as_array().expect("invite state");
    assert!(stripped.iter().any(|e| e["type"] == "m.room.name"), "{invite}");
    assert!(invite.get("timeline").is_none(), "{invite}");
    let body = sliding(&bob, None, &filtered(json!({"is_encrypted": true}))).await;
    assert_eq!(ids(&body), [encrypted.as_str()]);
    let body = sliding(&bob, None, &filtered(json!({"room_types": ["m.space"]}))).await;
    assert_eq!(ids(&body), [space.as_str()]);
    let body = sliding(&bob, None, &filtered(json!({"not_room_types": ["m.space"]}))).await;
    assert_eq!(ids(&body), sorted(vec![&plain, &encrypted, &invited]));
    let body = sliding(&bob, None, &filtered(json!({"room_types": [null]}))).await;
    assert_eq!(ids(&body), sorted(vec![&plain, &encrypted, &invited]));
    let body = sliding(&bob, None, &filtered(json!({"spaces": [space]}))).await;
    assert_eq!(ids(&body), [plain.as_str()]);
    let body = sliding(&bob, None, &filtered(json!({"tags": ["u.work"]}))).await;
    assert_eq!(ids(&body), [encrypted.as_str()]);
    let body =
        sliding(&bob, None, &filtered(json!({"not_tags": ["u.work"], "is_invite": false}))).await;
    assert_eq!(ids(&body), sorted(vec![&plain, &space]));
    let body = sliding(&bob, None, &filtered(json!({"is_dm": true}))).await;
    assert_eq!(ids(&body), [invited.as_str()]);
    assert_eq!(body["rooms"][&invited]["is_dm"], true);

    // Accepting the invite sends the room whole, as joined.
    let first = sliding(&bob, None, &filtered(json!({"is_dm": true}))).await;
    join(&bob, &invited).await;
    let joined = sliding(&bob, Some(&pos(&first)), &filtered(json!({"is_dm": true}))).await;
    let room = &joined["rooms"][&invited];
    assert_eq!(room["initial"], true, "{joined}");
    assert!(room.get("invite_state").is_none(), "{room}");
    assert_eq!(room["joined_count"], 2);

    // Subscriptions: a room of the user's outside every list, all its state; a room the user
    // is not in is not shown, however it is asked for.
    let stranger_room = create(&alice, json!({"name": "Private"})).await;
    send(&alice, &stranger_room, "s", "private words").await;
    let body = sliding(
        &bob,
        None,
        &json!({"room_subscriptions": {
            plain.clone(): {"timeline_limit": 5, "required_state": [["*", "*"]]},
            stranger_room.clone(): {"timeline_limit": 5, "required_state": [["*", "*"]]},
        }}),
    )
    .await;
    let subscribed = &body["rooms"][&plain];
    let state = state_types(subscribed);
    assert!(state.contains(&("m.room.create".into(), String::new())), "{state:?}");
    assert!(state.contains(&("m.room.join_rules".into(), String::new())), "{state:?}");
    assert!(body["rooms"].get(&stranger_room).is_none(), "{body}");
    assert!(!body.to_string().contains("private words"));
}

async fn alice_user_id(client: &Client) -> String {
    let (status, body) = client.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200);
    body["user_id"].as_str().expect("a user id").to_owned()
}

async fn extensions_carry_to_device_keys_account_data_receipts_and_typing(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let room = create(&alice, json!({"invite": [bob_id]})).await;
    join(&bob, &room).await;
    let message = send(&alice, &room, "m", "read me").await;
    let (status, body) =
        bob.post(&format!("{V3}/rooms/{room}/receipt/m.read/{message}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(&format!("{V3}/user/{alice_id}/account_data/org.example.global"), &json!({"a": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(
            &format!("{V3}/user/{alice_id}/rooms/{room}/account_data/org.example.room"),
            &json!({"b": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let device = whoami_device(&alice).await;
    let (status, body) = bob
        .put(
            &format!("{V3}/sendToDevice/m.room_key_request/txn1"),
            &json!({"messages": {alice_id.clone(): {device.clone(): {"hello": "device"}}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let request = |since: Option<&str>| {
        let mut to_device = json!({"enabled": true});
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({
            "lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 1, "required_state": []}},
            "extensions": {
                "to_device": to_device,
                "e2ee": {"enabled": true},
                "account_data": {"enabled": true},
                "receipts": {"enabled": true},
                "typing": {"enabled": true},
                "org.example.unknown": {"enabled": true},
            },
        })
    };
    let first = sliding(&alice, None, &request(None)).await;
    let ext = &first["extensions"];
    assert_eq!(ext["to_device"]["events"][0]["content"]["hello"], "device", "{ext}");
    let next_batch = ext["to_device"]["next_batch"].as_str().expect("next_batch").to_owned();
    assert!(ext["e2ee"]["device_one_time_keys_count"].is_object(), "{ext}");
    assert!(ext["e2ee"]["device_unused_fallback_key_types"].is_array(), "{ext}");
    let global = ext["account_data"]["global"].as_array().expect("global account data");
    assert!(global.iter().any(|e| e["type"] == "org.example.global"), "{ext}");
    assert_eq!(ext["account_data"]["rooms"][&room][0]["type"], "org.example.room", "{ext}");
    assert!(
        ext["receipts"]["rooms"][&room]["content"][&message]["m.read"][&bob_id]["ts"]
            .as_u64()
            .is_some(),
        "{ext}"
    );
    assert!(ext.get("org.example.unknown").is_none());

    // Not acknowledged: the message comes again; acknowledged: once only.
    let again = sliding(&alice, Some(&pos(&first)), &request(None)).await;
    assert_eq!(again["extensions"]["to_device"]["events"].as_array().map(Vec::len), Some(1));
    let acked = sliding(&alice, Some(&pos(&again)), &request(Some(&next_batch))).await;
    assert_eq!(acked["extensions"]["to_device"]["events"], json!([]), "{acked}");

    // Typing and a new receipt reach an incremental answer; account data changes too.
    let (status, body) = bob
        .put(
            &format!("{V3}/rooms/{room}/typing/{bob_id}"),
            &json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second_message = send(&bob, &room, "n", "typed").await;
    let (status, body) =
        bob.post(&format!("{V3}/rooms/{room}/receipt/m.read/{second_message}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(&format!("{V3}/user/{alice_id}/account_data/org.example.global"), &json!({"a": 2}))
        .await;
    assert_eq!(status, 200, "{body}");
    let later = sliding(&alice, Some(&pos(&acked)), &request(Some(&next_batch))).await;
    let ext = &later["extensions"];
    assert_eq!(ext["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob_id]), "{ext}");
    assert!(ext["receipts"]["rooms"][&room]["content"][&second_message].is_object(), "{ext}");
    assert!(ext["receipts"]["rooms"][&room]["content"].get(&message).is_none(), "{ext}");
    assert_eq!(ext["account_data"]["global"][0]["content"]["a"], 2, "{ext}");
    assert!(ext["e2ee"]["device_lists"].is_object(), "{ext}");
    assert_eq!(later["rooms"][&room]["notification_count"], 1, "{later}");

    // Alice reads it (here, or on another device): the room's counts come again, alone.
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{second_message}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let read = sliding(&alice, Some(&pos(&later)), &request(Some(&next_batch))).await;
    let counts = &read["rooms"][&room];
    assert_eq!(counts["notification_count"], 0, "{read}");
    assert!(counts.get("timeline").is_none(), "{read}");
}

async fn whoami_device(client: &Client) -> String {
    let (status, body) = client.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200);
    body["device_id"].as_str().expect("a device id").to_owned()
}

async fn kicked_and_departed_users_see_nothing_after_they_went(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, bob_id) = user(&server, "bob").await;
    let kicked_from = create(&alice, json!({"name": "Kick", "invite": [bob_id]})).await;
    join(&bob, &kicked_from).await;
    let left = create(&alice, json!({"name": "Left", "invite": [bob_id]})).await;
    join(&bob, &left).await;
    let first = sliding(&bob, None, &list_request([0, 10], 5)).await;
    assert_eq!(first["lists"]["all"]["count"], 2);

    let (status, body) = alice
        .post(
            &format!("{V3}/rooms/{kicked_from}/kick"),
            &json!({"user_id": bob_id, "reason": "bye"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bob.post(&format!("{V3}/rooms/{left}/leave"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    send(&alice, &kicked_from, "after", "said after the kick").await;
    send(&alice, &left, "after", "said after the leave").await;

    let second = sliding(&bob, Some(&pos(&first)), &list_request([0, 10], 5)).await;
    let text = second.to_string();
    assert!(!text.contains("said after"), "{second}");
    // Both departures are news now, as the last event of each timeline.
    for room in [&kicked_from, &left] {
        let timeline = second["rooms"][room]["timeline"].as_array().expect("a timeline");
        let last = timeline.last().expect("the departure");
        assert_eq!(last["type"], "m.room.member", "{second}");
        assert_eq!(last["content"]["membership"], "leave");
    }
    // Later: the kick stays in the list, the room left of one's own will does not.
    let fresh = sliding(&bob, None, &list_request([0, 10], 5)).await;
    assert_eq!(room_ids_of(&fresh["lists"]["all"]), [kicked_from.as_str()]);
    assert!(!fresh.to_string().contains("said after"), "{fresh}");

    // A revoked invitee (invited, then kicked before joining) sees their own membership
    // events and nothing of the room, even through a subscription asking for everything.
    let (carol, carol_id) = user(&server, "carol").await;
    let secret = create(&alice, json!({"name": "Secret plans", "invite": [carol_id]})).await;
    send(&alice, &secret, "s1", "the secret plan").await;
    let (status, body) =
        alice.post(&format!("{V3}/rooms/{secret}/kick"), &json!({"user_id": carol_id})).await;
    assert_eq!(status, 200, "{body}");
    let body = sliding(
        &carol,
        None,
        &json!({"lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 10,
            "required_state": [["*", "*"]]}},
            "room_subscriptions": {secret.clone(): {"timeline_limit": 10,
                "required_state": [["*", "*"]]}}}),
    )
    .await;
    let text = body.to_string();
    assert!(!text.contains("the secret plan"), "{body}");
    for event in body["rooms"][&secret]["timeline"].as_array().into_iter().flatten() {
        assert_eq!(event["type"], "m.room.member", "{body}");
        assert_eq!(event["state_key"], carol_id.as_str(), "{body}");
    }
    assert!(body["rooms"][&secret].get("required_state").is_none(), "{body}");
}

async fn bad_requests_get_clear_errors(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let room = create(&alice, json!({"name": "R"})).await;
    let lists: serde_json::Map<String, Value> = (0..101)
        .map(|i| {
            (
                format!("l{i}"),
                json!({"ranges": [[0, 1]], "timeline_limit": 1, "required_state": []}),
            )
        })
        .collect();
    let (status, body) = try_sliding(&alice, "", &json!({"lists": lists})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = try_sliding(
        &alice,
        "",
        &json!({"lists": {"l": {"ranges": [[5, 1]], "timeline_limit": 1, "required_state": []}}}),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = try_sliding(
        &alice,
        "",
        &json!({"lists": {"l": {"ranges": [[0, 1]], "timeline_limit": 100000, "required_state": []}}}),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let many_state: Vec<Value> = (0..1000).map(|i| json!(["t", format!("k{i}")])).collect();
    let (status, body) = try_sliding(
        &alice,
        "",
        &json!({"lists": {"l": {"ranges": [[0, 1]], "timeline_limit": 1, "required_state": many_state}}}),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = try_sliding(&alice, "", &json!({"lists": "nope"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) = try_sliding(&alice, "set_presence=sleeping", &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    // A huge range is bounded by the user's rooms.
    let body = sliding(
        &alice,
        None,
        &json!({"lists": {"l": {"ranges": [[0, u64::MAX]], "timeline_limit": 1, "required_state": []}}}),
    )
    .await;
    assert_eq!(room_ids_of(&body["lists"]["l"]), [room.as_str()]);
    // No token: 401.
    let anonymous = Client::new(&server);
    let (status, _) = try_sliding(&anonymous, "", &json!({})).await;
    assert_eq!(status, 401);
}

crate::on_every_backend!(
    lists_order_by_recency_and_answers_carry_only_changes,
    invites_filters_and_subscriptions,
    extensions_carry_to_device_keys_account_data_receipts_and_typing,
    kicked_and_departed_users_see_nothing_after_they_went,
    bad_requests_get_clear_errors,
);
