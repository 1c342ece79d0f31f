//! Synapse's room and event report admin API (`/_synapse/admin/v1/rooms`...,
//! `/_synapse/admin/v1/event_reports`): what an administrator sees and does, and that nobody
//! else may.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Client, Server, errcode};

struct Setup {
    server: Server,
    admin: Client,
    alice: Client,
    bob: Client,
    /// Alice's room "Alpha" (alice and bob joined, an alias, published).
    alpha: String,
    /// Bob's room "Beta" (bob alone).
    beta: String,
}

async fn setup(backend: crate::Backend) -> Option<Setup> {
    let server = crate::start(backend).await?;
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let alice_session = server.register_user("alice", "pw-alice").await;
    let bob_session = server.register_user("bob", "pw-bob").await;
    let admin = Client::new(&server).with_token(&boss.access_token);
    let alice = Client::new(&server).with_token(&alice_session.access_token);
    let bob = Client::new(&server).with_token(&bob_session.access_token);
    let alpha = server.create_room(&alice_session, Some("Alpha")).await;
    let beta = server.create_room(&bob_session, Some("Beta")).await;
    let alias = format!("#alpha:{}", server.server_name());
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/directory/room/%23alpha:{}", server.server_name()),
            &json!({"room_id": alpha}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{alpha}/state/m.room.canonical_alias"),
            &json!({"alias": alias}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{alpha}"),
            &json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{alpha}/state/m.room.join_rules"),
            &json!({"join_rule": "public"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        bob.post(&format!("/_matrix/client/v3/rooms/{alpha}/join"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    Some(Setup { server, admin, alice, bob, alpha, beta })
}

fn room_ids(body: &Value) -> Vec<&str> {
    body["rooms"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["room_id"].as_str()).collect())
        .unwrap_or_default()
}

async fn only_administrators(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let anonymous = Client::new(&s.server);
    let room = &s.alpha;
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/_synapse/admin/v1/rooms".into(), None),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{room}"), None),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{room}/members"), None),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{room}/state"), None),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{room}/block"), None),
        (
            Method::PUT,
            format!("/_synapse/admin/v1/rooms/{room}/block"),
            Some(json!({"block": true})),
        ),
        (Method::DELETE, format!("/_synapse/admin/v1/rooms/{room}"), Some(json!({}))),
        (Method::POST, format!("/_synapse/admin/v1/rooms/{room}/make_room_admin"), Some(json!({}))),
        (
            Method::POST,
            format!("/_synapse/admin/v1/join/{room}"),
            Some(json!({"user_id": "@boss:x"})),
        ),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{room}/forward_extremities"), None),
        (Method::GET, "/_synapse/admin/v1/fetch_event/$x".into(), None),
        (Method::GET, "/_synapse/admin/v1/event_reports".into(), None),
        (Method::GET, "/_synapse/admin/v1/event_reports/1".into(), None),
        (Method::DELETE, "/_synapse/admin/v1/event_reports/1".into(), None),
    ];
    for (method, path, body) in &calls {
        let (status, answer) = anonymous.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = s.alice.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }
    // Nothing happened: alice is still in her room, which is not blocked.
    let (status, _) = s.alice.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members")).await;
    assert_eq!(status, 200);
}

async fn list_and_read(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let path = "/_synapse/admin/v1/rooms";
    let (status, body) = s.admin.get(path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_rooms"], 2);
    assert_eq!(body["offset"], 0);
    assert_eq!(room_ids(&body), [s.alpha.as_str(), s.beta.as_str()], "by name: Alpha, Beta");
    let alpha = &body["rooms"][0];
    assert_eq!(alpha["name"], "Alpha");
    assert_eq!(alpha["canonical_alias"], format!("#alpha:{}", s.server.server_name()));
    assert_eq!(
        (alpha["joined_members"].clone(), alpha["joined_local_members"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        (alpha["public"].clone(), alpha["join_rules"].clone()),
        (json!(true), json!("public"))
    );
    assert_eq!(alpha["creator"], format!("@alice:{}", s.server.server_name()));
    assert!(alpha["state_events"].as_u64().is_some_and(|n| n >= 5), "{alpha}");

    let (_, body) = s.admin.get(&format!("{path}?limit=1")).await;
    assert_eq!((room_ids(&body), body["next_batch"].clone()), (vec![s.alpha.as_str()], json!(1)));
    let (_, body) = s.admin.get(&format!("{path}?limit=1&from=1")).await;
    assert_eq!(room_ids(&body), [s.beta.as_str()]);
    assert!(body.get("next_batch").is_none(), "{body}");
    assert_eq!(body["prev_batch"], 0);
    let (_, body) = s.admin.get(&format!("{path}?dir=b")).await;
    assert_eq!(room_ids(&body), [s.beta.as_str(), s.alpha.as_str()]);
    let (_, body) = s.admin.get(&format!("{path}?order_by=joined_members")).await;
    assert_eq!(room_ids(&body), [s.alpha.as_str(), s.beta.as_str()], "largest first");
    let (_, body) = s.admin.get(&format!("{path}?search_term=bet")).await;
    assert_eq!(room_ids(&body), [s.beta.as_str()]);
    let (_, body) = s.admin.get(&format!("{path}?public_rooms=false")).await;
    assert_eq!(room_ids(&body), [s.beta.as_str()]);
    for bad in ["from=-1", "limit=x", "order_by=secret", "dir=sideways", "empty_rooms=maybe"] {
        let (status, body) = s.admin.get(&format!("{path}?{bad}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }

    let (status, body) = s.admin.get(&format!("{path}/{}", s.alpha)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["name"].clone(), body["joined_local_devices"].clone()),
        (json!("Alpha"), json!(2))
    );
    assert_eq!(
        (body["tombstoned"].clone(), body["forgotten"].clone()),
        (json!(false), json!(false))
    );
    let (status, body) = s.admin.get(&format!("{path}/{}/members", s.alpha)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    let (status, body) = s.admin.get(&format!("{path}/{}/state", s.alpha)).await;
    assert_eq!(status, 200, "{body}");
    let state = body["state"].as_array().expect("a list");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{body}");
    let (_, body) = s.admin.get(&format!("{path}/{}/state?type=m.room.name", s.alpha)).await;
    assert_eq!(body["state"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["state"][0]["content"]["name"], "Alpha");

    let unknown = format!("!nothere:{}", s.server.server_name());
    for suffix in ["", "/members", "/state"] {
        let (status, body) = s.admin.get(&format!("{path}/{unknown}{suffix}")).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{suffix}: {body}");
    }
    let (status, body) = s.admin.get(&format!("{path}/not-a-room")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

async fn block_and_delete(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let server_name = s.server.server_name().to_owned();
    let block = format!("/_synapse/admin/v1/rooms/{}/block", s.beta);
    let (status, body) = s.admin.get(&block).await;
    assert_eq!((status, body), (200, json!({"block": false})));
    let (status, body) = s.admin.put(&block, &json!({"block": true})).await;
    assert_eq!((status, body), (200, json!({"block": true})));
    let (_, body) = s.admin.get(&block).await;
    assert_eq!(body, json!({"block": true, "user_id": format!("@boss:{server_name}")}));
    let (status, body) = s.admin.put(&block, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    // Our users may not join a blocked room.
    let (status, body) =
        s.alice.post(&format!("/_matrix/client/v3/rooms/{}/join", s.beta), &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, _) = s.admin.put(&block, &json!({"block": false})).await;
    assert_eq!(status, 200);
    let (_, body) = s.admin.get(&block).await;
    assert_eq!(body, json!({"block": false}));

    // Deleting Alpha: both leave (through their own leave events), the alias and the
    // directory entry go, the room is blocked, and purged (`purge` is true).
    let path = format!("/_synapse/admin/v1/rooms/{}", s.alpha);
    let (status, body) =
        s.admin.send(Method::DELETE, &path, Some(&json!({"block": true, "purge": true}))).await;
    assert_eq!(status, 200, "{body}");
    let mut kicked: Vec<&str> =
        body["kicked_users"].as_array().expect("a list").iter().filter_map(Value::as_str).collect();
    kicked.sort_unstable();
    assert_eq!(kicked, [format!("@alice:{server_name}"), format!("@bob:{server_name}")]);
    assert_eq!(body["failed_to_kick_users"], json!([]));
    assert_eq!(body["local_aliases"], json!([format!("#alpha:{server_name}")]));
    let (status, _) =
        s.bob.get(&format!("/_matrix/client/v3/directory/room/%23alpha:{server_name}")).await;
    assert_eq!(status, 404, "the alias is gone");
    let (status, body) = s.admin.get(&format!("{path}/members")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "purged: {body}");
    let (status, body) =
        s.bob.post(&format!("/_matrix/client/v3/rooms/{}/join", s.alpha), &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "blocked: {body}");

    // A replacement room is not supported; an unknown room is 404 unless blocked ahead.
    let (status, body) = s
        .admin
        .send(
            Method::DELETE,
            &format!("/_synapse/admin/v1/rooms/{}", s.beta),
            Some(&json!({"new_room_user_id": "@boss:x"})),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let unknown = format!("/_synapse/admin/v1/rooms/!nothere:{server_name}");
    let (status, body) = s.admin.send(Method::DELETE, &unknown, Some(&json!({}))).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) =
        s.admin.send(Method::DELETE, &unknown, Some(&json!({"block": true}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = s.admin.get(&format!("{unknown}/block")).await;
    assert_eq!(body["block"], true);
}

async fn event_reports(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let mut events = Vec::new();
    for n in 0..3 {
        let (status, body) = s
            .alice
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t{n}", s.alpha),
                &json!({"msgtype": "m.text", "body": format!("message {n}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        events.push(body["event_id"].as_str().expect("an event id").to_owned());
    }
    for (n, event) in events.iter().enumerate() {
        let (status, body) = s
            .bob
            .post(
                &format!("/_matrix/client/v3/rooms/{}/report/{event}", s.alpha),
                &json!({"reason": format!("report {n}"), "score": -100}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let path = "/_synapse/admin/v1/event_reports";
    let (status, body) = s.admin.get(path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
    let newest = &body["event_reports"][0];
    assert_eq!(
        (newest["event_id"].as_str(), newest["reason"].as_str()),
        (Some(events[2].as_str()), Some("report 2"))
    );
    assert_eq!(newest["sender"], format!("@alice:{}", s.server.server_name()));
    assert_eq!(newest["user_id"], format!("@bob:{}", s.server.server_name()));
    assert_eq!(newest["name"], "Alpha");
    let (_, body) = s.admin.get(&format!("{path}?dir=f&limit=2")).await;
    assert_eq!(body["event_reports"][0]["reason"], "report 0");
    assert_eq!(body["next_token"], 2);
    let (_, body) = s.admin.get(&format!("{path}?user_id=@nobody:x")).await;
    assert_eq!(body["total"], 0);
    // The event itself, to an administrator who is in no room, and the room's extremities.
    let (status, body) =
        s.admin.get(&format!("/_synapse/admin/v1/fetch_event/{}", events[2])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["event"]["event_id"].as_str(), body["event"]["content"]["body"].as_str()),
        (Some(events[2].as_str()), Some("message 2"))
    );
    let (status, body) = s.admin.get("/_synapse/admin/v1/fetch_event/$nothere").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) =
        s.admin.get(&format!("/_synapse/admin/v1/rooms/{}/forward_extremities", s.alpha)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(body["results"][0]["event_id"], events[2].as_str());
    assert!(body["results"][0]["depth"].as_u64().is_some(), "{body}");
    let (status, body) =
        s.admin.get("/_synapse/admin/v1/rooms/!nothere:x/forward_extremities").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let id = newest["id"].as_u64().expect("an id");
    let (status, body) = s.admin.get(&format!("{path}/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_json"]["content"]["body"], "message 2");
    let (status, body) = s.admin.get(&format!("{path}/999")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Deleted: gone from the list and from its own path; deleting again is 404.
    let (status, body) = s.admin.send(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = s.admin.get(&format!("{path}/{id}")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = s.admin.send(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (_, body) = s.admin.get(path).await;
    assert_eq!(body["total"], 2);
    let (status, body) = s.admin.get(&format!("{path}/abc")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = s.admin.get(&format!("{path}?dir=x")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

async fn make_room_admin(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let server_name = s.server.server_name().to_owned();
    let level = |state: &Value, user: &str| state["state"][0]["content"]["users"][user].as_i64();
    // Alice is not in Bob's invite-only room: she gets Bob's power (as far as a power levels
    // event can give it) and an invite from him.
    let alice = format!("@alice:{server_name}");
    let path = format!("/_synapse/admin/v1/rooms/{}/make_room_admin", s.beta);
    let (status, body) = s.admin.post(&path, &json!({"user_id": alice})).await;
    assert_eq!(status, 200, "{body}");
    let (_, state) = s
        .admin
        .get(&format!("/_synapse/admin/v1/rooms/{}/state?type=m.room.power_levels", s.beta))
        .await;
    assert!(level(&state, &alice).is_some_and(|l| l >= 100), "{state}");
    assert_eq!(state["state"][0]["sender"], format!("@bob:{server_name}"));
    let (_, body) = s.admin.get(&format!("/_synapse/admin/v1/users/{alice}/memberships")).await;
    assert_eq!(body["memberships"][&s.beta], "invite", "{body}");

    // By alias, for the requester: Alpha is public, so no invite, only the power.
    let boss = format!("@boss:{server_name}");
    let by_alias = format!("/_synapse/admin/v1/rooms/%23alpha:{server_name}/make_room_admin");
    let (status, body) = s.admin.post(&by_alias, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, state) = s
        .admin
        .get(&format!("/_synapse/admin/v1/rooms/{}/state?type=m.room.power_levels", s.alpha))
        .await;
    assert!(level(&state, &boss).is_some_and(|l| l >= 100), "{state}");
    let (_, body) = s.admin.get(&format!("/_synapse/admin/v1/users/{boss}/memberships")).await;
    assert!(body["memberships"].get(&s.alpha).is_none(), "{body}");

    let cases = [
        (
            format!("/_synapse/admin/v1/rooms/!nothere:{server_name}/make_room_admin"),
            json!({}),
            404,
        ),
        (
            format!("/_synapse/admin/v1/rooms/%23nothere:{server_name}/make_room_admin"),
            json!({}),
            404,
        ),
        (path.clone(), json!({"user_id": "@someone:elsewhere.example"}), 400),
        (path.clone(), json!({"user_id": format!("@nobody:{server_name}")}), 404),
        (path.clone(), json!({"user_id": "not a user"}), 400),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = s.admin.post(&path, &body).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
    }
}

async fn force_join(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let server_name = s.server.server_name().to_owned();
    s.server.homeserver().create_user("carol", Some("pw-carol"), false).await.expect("created");
    let carol = format!("@carol:{server_name}");
    let membership = |room: String| {
        let storage = s.server.storage().clone();
        let carol = carol.clone();
        async move { storage.membership(&room, &carol).await.expect("reads") }
    };
    // A public room, by alias: joined.
    let (status, body) = s
        .admin
        .post(
            &format!("/_synapse/admin/v1/join/%23alpha:{server_name}"),
            &json!({"user_id": carol}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"room_id": s.alpha})));
    assert_eq!(membership(s.alpha.clone()).await.as_deref(), Some("join"));
    // An invite-only room the administrator is not in: refused, nothing changes.
    let path = format!("/_synapse/admin/v1/join/{}", s.beta);
    let (status, body) = s.admin.post(&path, &json!({"user_id": carol})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert_eq!(membership(s.beta.clone()).await, None);
    // Once the administrator is in it (made room admin, invited, joined), they invite and the
    // user joins.
    let (status, _) = s
        .admin
        .post(&format!("/_synapse/admin/v1/rooms/{}/make_room_admin", s.beta), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, body) =
        s.admin.post(&format!("/_matrix/client/v3/rooms/{}/join", s.beta), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.admin.post(&path, &json!({"user_id": carol})).await;
    assert_eq!((status, body), (200, json!({"room_id": s.beta})));
    assert_eq!(membership(s.beta.clone()).await.as_deref(), Some("join"));

    let cases = [
        (format!("/_synapse/admin/v1/join/!nothere:{server_name}"), json!({"user_id": carol}), 404),
        (path.clone(), json!({"user_id": "@someone:elsewhere.example"}), 400),
        (path.clone(), json!({"user_id": format!("@nobody:{server_name}")}), 404),
        (path.clone(), json!({}), 400),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = s.admin.post(&path, &body).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
    }
}

crate::on_every_backend!(
    force_join,
    only_administrators,
    list_and_read,
    block_and_delete,
    event_reports,
    make_room_admin
);
