//! Bounds on what one request may ask for, honest discovery answers, NUL characters, and who
//! may list a room's aliases and members (findings 13, 23, 26, 31, 34, 35, 37 and 43 of the
//! security review).

use matrix_homeserver::testing::TestHomeserver;
use serde_json::{Value, json};

use crate::Client;
use crate::abuse_limits::{assert_error, assert_ok};
use crate::rooms::{create, urlencode, user};

const V3: &str = "/_matrix/client/v3";

async fn put(client: &Client, path: &str, body: Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, path, Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_13_create_room_lists_are_bounded() {
    let mut config = TestHomeserver::config();
    config.limits.max_create_room_initial_state = 3;
    config.limits.max_create_room_invites = 2;
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let (alice, _) = user(&server, "alice").await;
    for name in ["b", "c", "d"] {
        server.register_user(name, "pw").await;
    }
    let entry = |i: usize| json!({"type": "x.s", "state_key": format!("{i}"), "content": {}});
    let path = format!("{V3}/createRoom");
    let four: Vec<Value> = (0..4).map(entry).collect();
    let answer = alice.post(&path, &json!({"initial_state": four})).await;
    assert_error("initial_state", &answer, (400, "M_TOO_LARGE"));
    let invites = json!(["@b:localhost", "@c:localhost", "@d:localhost"]);
    assert_error(
        "invite",
        &alice.post(&path, &json!({"invite": invites})).await,
        (400, "M_TOO_LARGE"),
    );
    let three: Vec<Value> = (0..3).map(entry).collect();
    create(&alice, json!({"initial_state": three, "invite": ["@b:localhost", "@c:localhost"]}))
        .await;
}

async fn finding_31_create_room_never_overwrites_an_alias_made_meanwhile(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let bobs_room = create(&bob, json!({})).await;
    for round in 0..4 {
        let name = format!("race{round}");
        let alias = format!("#{name}:localhost");
        let creating = {
            let alice = alice.clone();
            let name = name.clone();
            tokio::spawn(async move {
                alice.post(&format!("{V3}/createRoom"), &json!({"room_alias_name": name})).await
            })
        };
        let path = format!("{V3}/directory/room/{}", urlencode(&alias));
        let pointing = put(&bob, &path, json!({"room_id": bobs_room})).await;
        let created = creating.await.expect("the createRoom task");
        // Exactly one of them gets the alias, and it points where the winner said.
        let (status, resolved) = bob.get(&path).await;
        assert_eq!(status, 200, "{resolved}");
        match (created.0, pointing.0) {
            (200, 200) => panic!("both got {alias}: {created:?} {pointing:?}"),
            (200, _) => assert_eq!(resolved["room_id"], created.1["room_id"]),
            (_, 200) => assert_eq!(resolved["room_id"], bobs_room.as_str()),
            other => panic!("neither got {alias}: {other:?} {created:?} {pointing:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_23_filter_lists_and_sizes_are_bounded() {
    let mut config = TestHomeserver::config();
    config.limits.max_filter_list_len = 5;
    config.limits.max_filter_bytes = 512;
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let (alice, alice_id) = user(&server, "alice").await;
    let session = server.homeserver().login("alice", "pw").await.expect("logs in");
    let room = server.create_room(&session, Some("f")).await;
    let six: Vec<String> = (0..6).map(|i| format!("x.t{i}")).collect();
    let post = format!("{V3}/user/{alice_id}/filter");
    for filter in [
        json!({"room": {"timeline": {"not_types": six}}}),
        json!({"room": {"rooms": six}}),
        json!({"presence": {"senders": six}}),
        json!({"room": {"timeline": {"types": ["a"]}}, "x": "y".repeat(600)}),
    ] {
        assert_error("stored filter", &alice.post(&post, &filter).await, (400, "M_TOO_LARGE"));
    }
    let small = json!({"room": {"timeline": {"types": ["m.room.message"], "limit": 5}}});
    let (status, body) = alice.post(&post, &small).await;
    assert_eq!(status, 200, "{body}");
    let id = body["filter_id"].as_str().expect("an id").to_owned();
    assert_ok("sync with a small filter", &alice.get(&format!("{V3}/sync?filter={id}")).await);

    // Inline filters and hand-made filter ids are bounded the same way.
    let inline = urlencode(&json!({"types": six}).to_string());
    let messages = format!("{V3}/rooms/{room}/messages?dir=b&filter={inline}");
    assert_error("messages", &alice.get(&messages).await, (400, "M_TOO_LARGE"));
    let context = format!("{V3}/rooms/{room}/context/$x?filter={inline}");
    assert_error("context", &alice.get(&context).await, (400, "M_TOO_LARGE"));
    let sync_filter = urlencode(&json!({"room": {"state": {"senders": six}}}).to_string());
    let sync = format!("{V3}/sync?filter={sync_filter}");
    assert_error("sync", &alice.get(&sync).await, (400, "M_TOO_LARGE"));
    let made = json!({"room": {"not_rooms": six}}).to_string();
    let made = format!("f{}", base64_url(made.as_bytes()));
    assert_error(
        "made id",
        &alice.get(&format!("{V3}/sync?filter={made}")).await,
        (400, "M_TOO_LARGE"),
    );
}

/// Unpadded base64url, as filter ids are made.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_26_34_35_discovery_is_honest_and_server_data_answers_405() {
    let server = crate::start(crate::Backend::Memory).await.expect("memory");
    let (alice, alice_id) = user(&server, "alice").await;
    let (status, body) = Client::new(&server).get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    crate::spec::check("versions.yaml", "/versions", "get", 200, &body);
    // No version whose endpoints (threads, relations, hierarchy...) are missing here.
    let listed: Vec<String> = (1..=17).map(|minor| format!("v1.{minor}")).collect();
    assert_eq!(body["versions"], json!(listed), "{body}");
    // Only the MSCs whose endpoints are all here.
    assert_eq!(
        body["unstable_features"],
        json!({"org.matrix.msc3814": true, "org.matrix.msc4140": true,
            "org.matrix.simplified_msc3575": true}),
        "{body}"
    );

    let (status, body) = alice.get(&format!("{V3}/capabilities")).await;
    assert_eq!(status, 200);
    assert_eq!(body["capabilities"]["m.change_password"]["enabled"], true, "{body}");

    let session = server.homeserver().login("alice", "pw").await.expect("logs in");
    let room = server.create_room(&session, Some("r")).await;
    for kind in ["m.fully_read", "m.push_rules"] {
        let global = format!("{V3}/user/{alice_id}/account_data/{kind}");
        assert_error(kind, &put(&alice, &global, json!({})).await, (405, "M_BAD_JSON"));
        let in_room = format!("{V3}/user/{alice_id}/rooms/{room}/account_data/{kind}");
        assert_error(kind, &put(&alice, &in_room, json!({})).await, (405, "M_BAD_JSON"));
    }
}

async fn finding_37_nul_characters_in_json_bodies_are_refused(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, alice_id) = user(&server, "alice").await;
    let session = server.homeserver().login("alice", "pw").await.expect("logs in");
    let device = format!("{V3}/devices/{}", session.device_id);
    let nul = json!({"display_name": "a\u{0}b"});
    assert_error("device name", &put(&alice, &device, nul).await, (400, "M_BAD_JSON"));
    let login = json!({"type": "m.login.password", "password": "pw", "device_id": "D\u{0}",
                       "identifier": {"type": "m.id.user", "user": "alice"}});
    let stranger = Client::new(&server);
    assert_error(
        "login",
        &stranger.post(&format!("{V3}/login"), &login).await,
        (400, "M_BAD_JSON"),
    );
    let name = format!("{V3}/profile/{alice_id}/displayname");
    let answer = put(&alice, &name, json!({"displayname": "\u{0}"})).await;
    assert_error("display name", &answer, (400, "M_BAD_JSON"));
    let data = format!("{V3}/user/{alice_id}/account_data/x.data");
    let answer = put(&alice, &data, json!({"k\u{0}": 1})).await;
    assert_error("account data key", &answer, (400, "M_BAD_JSON"));
    let answer = alice.post(&format!("{V3}/createRoom"), &json!({"name": "a\u{0}"})).await;
    assert_error("createRoom", &answer, (400, "M_BAD_JSON"));
    // A backslash then `u0000` is text, not a NUL: stored and read back.
    let text = json!({"display_name": "a\\u0000b"});
    assert_ok("escaped backslash", &put(&alice, &device, text).await);
    let (status, body) = alice.get(&device).await;
    assert_eq!((status, &body["display_name"]), (200, &json!("a\\u0000b")));
}

async fn finding_43_only_joined_members_list_aliases_and_joined_members(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let (eve, _) = user(&server, "eve").await;
    let room = create(&alice, json!({"preset": "public_chat", "room_alias_name": "hall"})).await;
    let aliases = format!("{V3}/rooms/{room}/aliases");
    let members = format!("{V3}/rooms/{room}/joined_members");
    let (status, body) = bob.post(&format!("{V3}/join/{room}"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_ok("aliases while joined", &bob.get(&aliases).await);
    assert_ok("members while joined", &bob.get(&members).await);
    let (status, _) = bob.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await;
    assert_eq!(status, 200);
    for (who, client) in [("departed", &bob), ("stranger", &eve)] {
        assert_error(who, &client.get(&aliases).await, (403, "M_FORBIDDEN"));
        assert_error(who, &client.get(&members).await, (403, "M_FORBIDDEN"));
    }
}

crate::on_every_backend!(
    finding_31_create_room_never_overwrites_an_alias_made_meanwhile,
    finding_37_nul_characters_in_json_bodies_are_refused,
    finding_43_only_joined_members_list_aliases_and_joined_members,
);
