//! Synapse's user admin API (`/_synapse/admin/v2/users`...): what an administrator sees and
//! changes, and that nobody else may.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Client, Server, errcode};

/// A server with an administrator `boss` (whose client is returned) and a user `alice`
/// (whose client is returned too).
async fn with_admin(backend: crate::Backend) -> Option<(Server, Client, Client)> {
    let server = crate::start(backend).await?;
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let boss = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let alice = server.register_user("alice", "pw-alice").await;
    let admin = Client::new(&server).with_token(&boss.access_token);
    let alice = Client::new(&server).with_token(&alice.access_token);
    Some((server, admin, alice))
}

fn id(server: &Server, localpart: &str) -> String {
    format!("@{localpart}:{}", server.server_name())
}

fn names(body: &Value) -> Vec<&str> {
    body["users"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["name"].as_str()).collect())
        .unwrap_or_default()
}

/// Every admin endpoint: 401 without a token, 403 `M_FORBIDDEN` for a user who is not an
/// administrator (and nothing changes), while the public version answers anybody.
async fn only_administrators(backend: crate::Backend) {
    let Some((server, _admin, alice)) = with_admin(backend).await else { return };
    let anonymous = Client::new(&server);
    let bob = id(&server, "alice");
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/_synapse/admin/v2/users".into(), None),
        (Method::GET, "/_synapse/admin/v3/users".into(), None),
        (Method::GET, format!("/_synapse/admin/v2/users/{bob}"), None),
        (Method::PUT, format!("/_synapse/admin/v2/users/{bob}"), Some(json!({"admin": true}))),
        (Method::POST, format!("/_synapse/admin/v1/deactivate/{bob}"), Some(json!({}))),
        (
            Method::POST,
            format!("/_synapse/admin/v1/reset_password/{bob}"),
            Some(json!({"new_password": "x"})),
        ),
        (Method::GET, format!("/_synapse/admin/v1/users/{bob}/admin"), None),
        (
            Method::PUT,
            format!("/_synapse/admin/v1/users/{bob}/admin"),
            Some(json!({"admin": true})),
        ),
        (Method::GET, "/_synapse/admin/v1/username_available?username=zed".into(), None),
        (Method::GET, format!("/_synapse/admin/v1/whois/{bob}"), None),
        (Method::GET, format!("/_synapse/admin/v1/users/{bob}/joined_rooms"), None),
        (Method::GET, format!("/_synapse/admin/v1/users/{bob}/memberships"), None),
        (Method::GET, format!("/_synapse/admin/v1/users/{bob}/accountdata"), None),
        (Method::GET, format!("/_synapse/admin/v1/users/{bob}/pushers"), None),
        (Method::GET, format!("/_synapse/admin/v2/users/{bob}/devices"), None),
        (
            Method::POST,
            format!("/_synapse/admin/v2/users/{bob}/devices"),
            Some(json!({"device_id": "X"})),
        ),
        (Method::GET, format!("/_synapse/admin/v2/users/{bob}/devices/X"), None),
        (Method::PUT, format!("/_synapse/admin/v2/users/{bob}/devices/X"), Some(json!({}))),
        (Method::DELETE, format!("/_synapse/admin/v2/users/{bob}/devices/X"), None),
        (
            Method::POST,
            format!("/_synapse/admin/v2/users/{bob}/delete_devices"),
            Some(json!({"devices": []})),
        ),
    ];
    for (method, path, body) in &calls {
        let (status, answer) = anonymous.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = alice.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }
    // Still not an administrator, still active.
    let stored = server.storage().user(&bob).await.expect("reads").expect("alice exists");
    assert!(!stored.admin && !stored.deactivated);
    let (status, body) = anonymous.get("/_synapse/admin/v1/server_version").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["server_version"].is_string(), "{body}");
}

/// The list: filters, orders, pages with `next_token` and `total`, and refuses bad input.
async fn list_users(backend: crate::Backend) {
    let Some((server, admin, _alice)) = with_admin(backend).await else { return };
    let hs = server.homeserver();
    for name in ["carol", "dave", "erin"] {
        hs.create_user(name, Some("pw"), false).await.expect("created");
    }
    let path = "/_synapse/admin/v2/users";
    let (status, body) = admin.get(path).await;
    assert_eq!(status, 200, "{body}");
    let all: Vec<String> =
        ["alice", "boss", "carol", "dave", "erin"].iter().map(|l| id(&server, l)).collect();
    assert_eq!(names(&body), all);
    assert_eq!(body["total"], 5);
    assert!(body.get("next_token").is_none(), "{body}");
    let first = &body["users"][0];
    assert_eq!(first["displayname"], "alice");
    assert_eq!(
        (first["admin"].clone(), first["deactivated"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(body["users"][1]["admin"], true);

    // Pages: offsets as Synapse's `next_token`.
    let (_, page) = admin.get(&format!("{path}?limit=2")).await;
    assert_eq!(
        (names(&page), page["next_token"].clone()),
        (all[..2].iter().map(String::as_str).collect(), json!("2"))
    );
    let (_, page) = admin.get(&format!("{path}?limit=2&from=4")).await;
    assert_eq!(names(&page), [all[4].as_str()]);
    assert!(page.get("next_token").is_none());
    assert_eq!(page["total"], 5);
    // Backwards, filters.
    let (_, page) = admin.get(&format!("{path}?dir=b&limit=1")).await;
    assert_eq!(names(&page), [all[4].as_str()]);
    let (_, page) = admin.get(&format!("{path}?admins=true")).await;
    assert_eq!(names(&page), [all[1].as_str()]);
    let (_, page) = admin.get(&format!("{path}?name=AR")).await;
    assert_eq!(names(&page), [all[2].as_str()]);
    let (_, page) = admin.get(&format!("{path}?user_id=@da")).await;
    assert_eq!(names(&page), [all[3].as_str()]);
    let (_, page) = admin.get(&format!("{path}?order_by=admin&dir=b&limit=1")).await;
    assert_eq!(names(&page), [all[1].as_str()]);
    // A huge limit is clamped, not refused.
    let (status, _) = admin.get(&format!("{path}?limit=1000000")).await;
    assert_eq!(status, 200);

    // Deactivated users: hidden by v2 unless asked for; v3 shows all unless filtered.
    let (status, body) =
        admin.post(&format!("/_synapse/admin/v1/deactivate/{}", all[4]), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, page) = admin.get(path).await;
    assert_eq!(page["total"], 4);
    let (_, page) = admin.get(&format!("{path}?deactivated=true")).await;
    assert_eq!(page["total"], 5);
    let (_, page) = admin.get("/_synapse/admin/v3/users").await;
    assert_eq!(page["total"], 5);
    let (_, page) = admin.get("/_synapse/admin/v3/users?deactivated=true").await;
    assert_eq!(names(&page), [all[4].as_str()]);

    for bad in ["from=-1", "from=x", "limit=-5", "order_by=password", "dir=up", "admins=yes"] {
        let (status, body) = admin.get(&format!("{path}?{bad}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }
}

/// One user: read, created (201) and changed (200) by `PUT`, with its checks.
async fn create_and_modify(backend: crate::Backend) {
    let Some((server, admin, _alice)) = with_admin(backend).await else { return };
    let frank = id(&server, "frank");
    let path = format!("/_synapse/admin/v2/users/{frank}");
    let (status, body) = admin.get(&path).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let (status, body) = admin
        .put(&path, &json!({"password": "pw-frank", "displayname": "Frank", "admin": false}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["displayname"].as_str()),
        (Some(frank.as_str()), Some("Frank"))
    );
    assert_eq!(body["threepids"], json!([]));
    let frank_session = server.homeserver().login("frank", "pw-frank").await.expect("logs in");

    // Changed: an administrator, a new avatar, a new password (devices logged out).
    let (status, body) = admin
        .put(&path, &json!({"admin": true, "avatar_url": "mxc://x/y", "password": "new-pw"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["admin"].clone(), body["avatar_url"].clone()),
        (json!(true), json!("mxc://x/y"))
    );
    let (status, _) = Client::new(&server)
        .with_token(&frank_session.access_token)
        .get("/_matrix/client/v3/account/whoami")
        .await;
    assert_eq!(status, 401, "the old session was logged out");
    let (status, body) = admin.get(&path).await;
    assert_eq!((status, body["admin"].clone()), (200, json!(true)));
    // An empty display name removes it.
    let (_, body) = admin.put(&path, &json!({"displayname": ""})).await;
    assert_eq!(body["displayname"], Value::Null);

    // Deactivated, then reactivated only with a password.
    let (_, body) = admin.put(&path, &json!({"deactivated": true})).await;
    assert_eq!(body["deactivated"], true);
    let (status, body) = admin.put(&path, &json!({"deactivated": false})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) =
        admin.put(&path, &json!({"deactivated": false, "password": "again"})).await;
    assert_eq!((status, body["deactivated"].clone()), (200, json!(false)), "{body}");
    server.homeserver().login("frank", "again").await.expect("logs in again");

    // Bad input.
    let cases = [
        (json!({"avatar_url": "https://x/y"}), "M_INVALID_PARAM"),
        (json!({"user_type": "bot"}), "M_INVALID_PARAM"),
        (json!({"threepids": [{"medium": "email", "address": "a@b"}]}), "M_INVALID_PARAM"),
        (json!({"admin": "yes"}), "M_BAD_JSON"),
        (json!({"password": "x".repeat(10_000)}), "M_INVALID_PARAM"),
    ];
    for (body, code) in cases {
        let (status, answer) = admin.put(&path, &body).await;
        assert_eq!((status, errcode(&answer)), (400, code), "{body}: {answer}");
    }
    let (status, body) =
        admin.put("/_synapse/admin/v2/users/@x:elsewhere.example", &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = admin.get("/_synapse/admin/v2/users/not-an-id").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    // An administrator may not demote themself, here or through the admin flag.
    let boss = format!("/_synapse/admin/v2/users/{}", id(&server, "boss"));
    let (status, body) = admin.put(&boss, &json!({"admin": false})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

/// The administrator flag, password resets, deactivation with erasure, and the user's rooms.
async fn flag_password_deactivation(backend: crate::Backend) {
    let Some((server, admin, alice)) = with_admin(backend).await else { return };
    let alice_id = id(&server, "alice");
    let flag = format!("/_synapse/admin/v1/users/{alice_id}/admin");
    let (status, body) = admin.get(&flag).await;
    assert_eq!((status, body), (200, json!({"admin": false})));
    let (status, body) = admin.put(&flag, &json!({"admin": true})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = admin.get(&flag).await;
    assert_eq!(body, json!({"admin": true}));
    // Now alice may use the admin API herself.
    let (status, _) = alice.get("/_synapse/admin/v2/users").await;
    assert_eq!(status, 200);
    let (status, body) = admin.put(&flag, &json!({"admin": false})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.put(&flag, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let boss_flag = format!("/_synapse/admin/v1/users/{}/admin", id(&server, "boss"));
    let (status, body) = admin.put(&boss_flag, &json!({"admin": false})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) =
        admin.get(&format!("/_synapse/admin/v1/users/{}/admin", id(&server, "nobody"))).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let (status, body) = admin.get("/_synapse/admin/v1/username_available?username=alice").await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"), "{body}");
    let (status, body) = admin.get("/_synapse/admin/v1/username_available?username=zed").await;
    assert_eq!((status, body), (200, json!({"available": true})));

    // Alice's rooms, as the admin API lists them.
    let alice_session = server.homeserver().login("alice", "pw-alice").await.expect("logs in");
    let room = server.create_room(&alice_session, Some("Alice's")).await;
    let (status, body) =
        admin.get(&format!("/_synapse/admin/v1/users/{alice_id}/joined_rooms")).await;
    assert_eq!((status, body), (200, json!({"joined_rooms": [room], "total": 1})));
    let (_, body) = admin.get(&format!("/_synapse/admin/v1/users/{alice_id}/memberships")).await;
    assert_eq!(body["memberships"][&room], "join");

    // A password reset keeps the devices when asked to.
    let reset = format!("/_synapse/admin/v1/reset_password/{alice_id}");
    let (status, body) =
        admin.post(&reset, &json!({"new_password": "pw2", "logout_devices": false})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.get("/_matrix/client/v3/account/whoami").await.0, 200);
    server.homeserver().login("alice", "pw2").await.expect("the new password works");
    let (status, body) = admin.post(&reset, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let nobody = format!("/_synapse/admin/v1/reset_password/{}", id(&server, "nobody"));
    let (status, body) = admin.post(&nobody, &json!({"new_password": "x"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Deactivation with erasure: out of the room (through a leave event), logged out, erased.
    let (status, body) = admin
        .post(&format!("/_synapse/admin/v1/deactivate/{alice_id}"), &json!({"erase": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.get("/_matrix/client/v3/account/whoami").await.0, 401);
    assert_eq!(
        server.storage().membership(&room, &alice_id).await.expect("reads").as_deref(),
        Some("leave")
    );
    let (_, body) = admin.get(&format!("/_synapse/admin/v2/users/{alice_id}")).await;
    assert_eq!((body["deactivated"].clone(), body["erased"].clone()), (json!(true), json!(true)));
    assert_eq!(body["displayname"], Value::Null);
    let (status, body) = admin
        .post(&format!("/_synapse/admin/v1/deactivate/{}", id(&server, "nobody")), &json!({}))
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

/// Devices and `whois`.
async fn devices(backend: crate::Backend) {
    let Some((server, admin, alice)) = with_admin(backend).await else { return };
    let alice_id = id(&server, "alice");
    let base = format!("/_synapse/admin/v2/users/{alice_id}/devices");
    let (status, body) = admin.get(&base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    let first = body["devices"][0]["device_id"].as_str().expect("a device").to_owned();
    assert_eq!(body["devices"][0]["user_id"], alice_id.as_str());

    let (status, body) = admin.post(&base, &json!({"device_id": "ADMINMADE"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin.post(&base, &json!({"device_id": "ADMINMADE"})).await;
    assert_eq!(status, 201, "again: nothing happens, {body}");
    let (status, body) = admin.post(&base, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) =
        admin.put(&format!("{base}/ADMINMADE"), &json!({"display_name": "made"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.get(&format!("{base}/ADMINMADE")).await;
    assert_eq!((status, body["display_name"].clone()), (200, json!("made")), "{body}");
    let (status, body) = admin.get(&format!("{base}/NOSUCH")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = admin.put(&format!("{base}/NOSUCH"), &json!({"display_name": "x"})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let (status, body) = admin.get(&format!("/_synapse/admin/v1/whois/{alice_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], alice_id.as_str());
    assert!(body["devices"][&first]["sessions"].is_array(), "{body}");
    assert!(body["devices"]["ADMINMADE"].is_object(), "{body}");

    let (status, body) = admin.send(Method::DELETE, &format!("{base}/ADMINMADE"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin
        .post(
            &format!("/_synapse/admin/v2/users/{alice_id}/delete_devices"),
            &json!({"devices": [first]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.get("/_matrix/client/v3/account/whoami").await.0, 401, "logged out");
    let (_, body) = admin.get(&base).await;
    assert_eq!(body, json!({"devices": [], "total": 0}));
    let too_many: Vec<String> = (0..1_001).map(|i| format!("D{i}")).collect();
    let (status, body) = admin
        .post(
            &format!("/_synapse/admin/v2/users/{alice_id}/delete_devices"),
            &json!({"devices": too_many}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        admin.get(&format!("/_synapse/admin/v2/users/{}/devices", id(&server, "nobody"))).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

/// A user's account data and pushers, as the administrators see them.
async fn account_data_and_pushers(backend: crate::Backend) {
    let Some((server, admin, alice)) = with_admin(backend).await else { return };
    let alice_id = id(&server, "alice");
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/user/{alice_id}/account_data/org.example.setting"),
            &json!({"colour": "blue"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pusher = json!({
        "pushkey": "alice-key", "kind": "http", "app_id": "org.example.app",
        "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
        "data": {"url": "https://push.example.org/_matrix/push/v1/notify"},
    });
    let (status, body) = alice.post("/_matrix/client/v3/pushers/set", &pusher).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) =
        admin.get(&format!("/_synapse/admin/v1/users/{alice_id}/accountdata")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["account_data"]["global"]["org.example.setting"], json!({"colour": "blue"}));
    assert!(body["account_data"]["rooms"].is_object(), "{body}");
    let (status, body) = admin.get(&format!("/_synapse/admin/v1/users/{alice_id}/pushers")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    let shown = &body["pushers"][0];
    assert_eq!(
        (shown["pushkey"].as_str(), shown["app_id"].as_str()),
        (Some("alice-key"), Some("org.example.app"))
    );
    assert_eq!(shown["data"]["url"], "https://push.example.org/_matrix/push/v1/notify");
    for what in ["accountdata", "pushers"] {
        let (status, body) =
            admin.get(&format!("/_synapse/admin/v1/users/{}/{what}", id(&server, "nobody"))).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{what}: {body}");
        let (status, body) =
            admin.get(&format!("/_synapse/admin/v1/users/@x:elsewhere.example/{what}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{what}: {body}");
    }
}

crate::on_every_backend!(
    account_data_and_pushers,
    only_administrators,
    list_users,
    create_and_modify,
    flag_password_deactivation,
    devices
);
