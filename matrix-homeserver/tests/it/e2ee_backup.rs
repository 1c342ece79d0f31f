//! Server-side key backups over HTTP (`/room_keys/*`): versions, sessions and the rules for
//! replacing one, as Element backs up and restores, and the refusals: wrong or unknown
//! versions, malformed keys, other users, bounds; backups survive a restart.

use serde_json::{Value, json};

use crate::rooms::user;
use crate::spec::check;
use crate::{Client, errcode};

const KEYS: &str = "/_matrix/client/v3/room_keys";
const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn auth_data(mark: &str) -> Value {
    json!({"public_key": mark, "signatures": {}})
}

/// A `KeyBackupData` with `mark` in its session data.
fn key(first_message_index: u64, forwarded_count: u64, is_verified: bool, mark: &str) -> Value {
    json!({"first_message_index": first_message_index, "forwarded_count": forwarded_count,
           "is_verified": is_verified,
           "session_data": {"ephemeral": mark, "ciphertext": mark, "mac": mark}})
}

async fn create_version(client: &Client, mark: &str) -> String {
    let body = json!({"algorithm": ALGORITHM, "auth_data": auth_data(mark)});
    let (status, answer) = client.post(&format!("{KEYS}/version"), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["version"].as_str().expect("a version").to_owned()
}

async fn put(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, &format!("{KEYS}{path}"), Some(body)).await
}

async fn delete(client: &Client, path: &str) -> (u16, Value) {
    client.send(reqwest::Method::DELETE, &format!("{KEYS}{path}"), None).await
}

async fn get(client: &Client, path: &str) -> (u16, Value) {
    client.get(&format!("{KEYS}{path}")).await
}

/// Puts one session; answers the `{etag, count}`.
async fn put_session(client: &Client, version: &str, session: &str, data: &Value) -> Value {
    let (status, answer) =
        put(client, &format!("/keys/!r1:x/{session}?version={version}"), data).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Element's round: no backup yet (404), a version made, sessions uploaded in bulk, the
/// etag and count following, everything read back, whole, per room and per session.
async fn element_backs_up_and_restores(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let (status, answer) = get(&alice, "/version").await;
    assert_eq!((status, errcode(&answer)), (404, "M_NOT_FOUND"), "{answer}");

    let version = create_version(&alice, "k1").await;
    let (status, info) = get(&alice, "/version").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], json!(version));
    assert_eq!(info["algorithm"], ALGORITHM);
    assert_eq!(info["auth_data"], auth_data("k1"));
    assert_eq!(info["count"], 0);
    check("key_backup.yaml", "/room_keys/version", "get", 200, &info);
    let etag0 = info["etag"].as_str().expect("a string etag").to_owned();
    assert_eq!(get(&alice, &format!("/version/{version}")).await.1, info);

    let body = json!({"rooms": {
        "!r1:x": {"sessions": {"s1": key(0, 0, false, "a"), "s2": key(3, 1, true, "b")}},
        "!r2:x": {"sessions": {"s3": key(5, 0, false, "c")}},
    }});
    let (status, answer) = put(&alice, &format!("/keys?version={version}"), &body).await;
    assert_eq!(status, 200, "{answer}");
    check("key_backup.yaml", "/room_keys/keys", "put", 200, &answer);
    assert_eq!(answer["count"], 3);
    assert_ne!(answer["etag"], json!(etag0));
    let (_, info) = get(&alice, "/version").await;
    assert_eq!((info["count"].clone(), info["etag"].clone()), (json!(3), answer["etag"].clone()));

    let (status, all) = get(&alice, &format!("/keys?version={version}")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all, body, "read back as uploaded");
    check("key_backup.yaml", "/room_keys/keys", "get", 200, &all);
    let (_, room) = get(&alice, &format!("/keys/!r2:x?version={version}")).await;
    assert_eq!(room, body["rooms"]["!r2:x"]);
    check("key_backup.yaml", "/room_keys/keys/{roomId}", "get", 200, &room);
    let (_, one) = get(&alice, &format!("/keys/!r1:x/s2?version={version}")).await;
    assert_eq!(one, key(3, 1, true, "b"));
    check("key_backup.yaml", "/room_keys/keys/{roomId}/{sessionId}", "get", 200, &one);
    let (status, answer) = get(&alice, &format!("/keys/!r1:x/nope?version={version}")).await;
    assert_eq!((status, errcode(&answer)), (404, "M_NOT_FOUND"));
    let (status, empty) = get(&alice, &format!("/keys/!none:x?version={version}")).await;
    assert_eq!((status, empty), (200, json!({"sessions": {}})));

    // Deleting a room's sessions, then one session.
    let (status, answer) = delete(&alice, &format!("/keys/!r2:x?version={version}")).await;
    assert_eq!((status, answer["count"].clone()), (200, json!(2)), "{answer}");
    let (status, answer) = delete(&alice, &format!("/keys/!r1:x/s1?version={version}")).await;
    assert_eq!((status, answer["count"].clone()), (200, json!(1)), "{answer}");
    let (_, all) = get(&alice, &format!("/keys?version={version}")).await;
    assert_eq!(all, json!({"rooms": {"!r1:x": {"sessions": {"s2": key(3, 1, true, "b")}}}}));
    let (status, answer) = delete(&alice, &format!("/keys?version={version}")).await;
    assert_eq!((status, answer["count"].clone()), (200, json!(0)), "{answer}");
}

/// A session held is replaced only by a better one: verified first, then the lower first
/// message index, then the lower forward count; a worse one changes neither data nor etag.
async fn a_backed_up_session_is_replaced_only_by_a_better_one(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let (alice, _) = user(&server, "alice").await;
    let version = create_version(&alice, "k").await;
    let held = |mark: &'static str| {
        let alice = alice.clone();
        let version = version.clone();
        async move {
            let (_, one) = get(&alice, &format!("/keys/!r1:x/s?version={version}")).await;
            assert_eq!(one["session_data"]["ciphertext"], mark, "{one}");
        }
    };
    let first = put_session(&alice, &version, "s", &key(5, 2, false, "first")).await;
    assert_eq!(first["count"], 1);
    // Worse: higher index; same index and more forwards; equal.
    for worse in [key(6, 0, false, "w1"), key(5, 3, false, "w2"), key(5, 2, false, "w3")] {
        let answer = put_session(&alice, &version, "s", &worse).await;
        assert_eq!(answer, first, "nothing changed");
    }
    held("first").await;
    // Fewer forwards, same index: replaces.
    let answer = put_session(&alice, &version, "s", &key(5, 1, false, "fewer")).await;
    assert_ne!(answer["etag"], first["etag"]);
    assert_eq!(answer["count"], 1);
    held("fewer").await;
    // Verified beats a lower index that is not.
    put_session(&alice, &version, "s", &key(9, 9, true, "verified")).await;
    held("verified").await;
    put_session(&alice, &version, "s", &key(0, 0, false, "unverified")).await;
    held("verified").await;
    // Among verified ones, the lower index.
    put_session(&alice, &version, "s", &key(1, 9, true, "lower")).await;
    held("lower").await;
}

/// Versions: writes go to the current one only (403 naming it), an unknown one is 404, an
/// old one can still be read; `auth_data` updates keep the algorithm; deleting twice is fine;
/// another user sees none of it; malformed keys and bounds are refused.
async fn wrong_versions_and_bad_requests_are_refused(backend: crate::Backend) {
    let Some(server) = crate::start_changed(backend, |c| {
        c.limits.max_backup_sessions_per_version = 3;
        // Small enough that a body over it is sent whole before the server answers.
        c.limits.max_request_bytes = 150_000;
    })
    .await
    else {
        return;
    };
    let (alice, _) = user(&server, "alice").await;
    let (bob, _) = user(&server, "bob").await;
    let data = key(0, 0, false, "x");
    // No backup at all: writing is 404.
    let (status, answer) = put(&alice, "/keys/!r1:x/s?version=1", &data).await;
    assert_eq!((status, errcode(&answer)), (404, "M_NOT_FOUND"), "{answer}");

    let old = create_version(&alice, "old").await;
    put_session(&alice, &old, "kept", &data).await;
    let current = create_version(&alice, "new").await;
    assert_ne!(old, current);
    for version in [old.as_str(), "77", "x"] {
        let (status, answer) =
            put(&alice, &format!("/keys/!r1:x/s?version={version}"), &data).await;
        assert_eq!((status, errcode(&answer)), (403, "M_WRONG_ROOM_KEYS_VERSION"), "{answer}");
        check("key_backup.yaml", "/room_keys/keys/{roomId}/{sessionId}", "put", 403, &answer);
        assert_eq!(answer["current_version"], json!(current));
    }
    let (status, answer) = get(&alice, &format!("/keys?version={old}")).await;
    assert_eq!(status, 200, "the old backup can still be read: {answer}");
    assert_eq!(answer["rooms"]["!r1:x"]["sessions"]["kept"], data);
    for path in ["/version/77", "/keys?version=77", "/keys/!r1:x?version=77"] {
        let (status, answer) = get(&alice, path).await;
        assert_eq!((status, errcode(&answer)), (404, "M_NOT_FOUND"), "{path}: {answer}");
    }
    let (status, answer) = get(&alice, "/keys").await;
    assert_eq!((status, errcode(&answer)), (400, "M_MISSING_PARAM"), "{answer}");

    // Bob sees none of Alice's backups and cannot write to them.
    let (status, _) = get(&bob, "/version").await;
    assert_eq!(status, 404);
    let (status, _) = get(&bob, &format!("/keys?version={current}")).await;
    assert_eq!(status, 404);
    let (status, _) = put(&bob, &format!("/keys/!r1:x/s?version={current}"), &data).await;
    assert_eq!(status, 404);
    assert_eq!(delete(&bob, &format!("/version/{current}")).await.0, 404);

    // Updating auth_data: the algorithm and the body's version must be the version's.
    let path = format!("/version/{current}");
    let update = json!({"algorithm": ALGORITHM, "auth_data": auth_data("newer")});
    assert_eq!(put(&alice, &path, &update).await.0, 200);
    assert_eq!(get(&alice, &path).await.1["auth_data"], auth_data("newer"));
    let other = json!({"algorithm": "m.other", "auth_data": {}});
    assert_eq!(errcode(&put(&alice, &path, &other).await.1), "M_INVALID_PARAM");
    let mismatch = json!({"algorithm": ALGORITHM, "auth_data": {}, "version": old});
    assert_eq!(errcode(&put(&alice, &path, &mismatch).await.1), "M_INVALID_PARAM");
    assert_eq!(put(&alice, "/version/77", &update).await.0, 404);
    let not_object = json!({"algorithm": ALGORITHM, "auth_data": "text"});
    assert_eq!(alice.post(&format!("{KEYS}/version"), &not_object).await.0, 400);

    // Malformed keys; too many sessions at once; a full version.
    let bad = json!({"first_message_index": -1, "forwarded_count": 0, "is_verified": false,
                     "session_data": {}});
    let (status, answer) = put(&alice, &format!("/keys/!r1:x/s?version={current}"), &bad).await;
    assert_eq!((status, errcode(&answer)), (400, "M_BAD_JSON"), "{answer}");
    let many: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("s{i}"), data.clone())).collect();
    let body = json!({"rooms": {"!r1:x": {"sessions": many}}});
    let (status, answer) = put(&alice, &format!("/keys?version={current}"), &body).await;
    assert_eq!((status, errcode(&answer)), (400, "M_TOO_LARGE"), "{answer}");
    let huge =
        json!({"rooms": {"!r1:x": {"sessions": {"s": key(0, 0, false, &"x".repeat(160_000))}}}});
    let (status, answer) = put(&alice, &format!("/keys?version={current}"), &huge).await;
    assert_eq!((status, errcode(&answer)), (413, "M_TOO_LARGE"), "{answer}");
    let three = json!({"rooms": {"!r1:x": {"sessions": {"a": data, "b": data, "c": data}}}});
    let (status, answer) = put(&alice, &format!("/keys?version={current}"), &three).await;
    assert_eq!((status, answer["count"].clone()), (200, json!(3)), "{answer}");
    let (status, answer) = put(&alice, &format!("/keys/!r2:x/d?version={current}"), &data).await;
    assert_eq!((status, errcode(&answer)), (429, "M_LIMIT_EXCEEDED"), "{answer}");
    // Replacing a held one is no new session: allowed at the bound.
    let better = key(0, 0, true, "better");
    let (status, answer) = put(&alice, &format!("/keys/!r1:x/a?version={current}"), &better).await;
    assert_eq!((status, answer["count"].clone()), (200, json!(3)), "{answer}");

    // Deleting the current version: the old one is current again; deleting twice is fine;
    // a version that never was is 404.
    assert_eq!(delete(&alice, &format!("/version/{current}")).await.0, 200);
    assert_eq!(get(&alice, "/version").await.1["version"], json!(old));
    assert_eq!(delete(&alice, &format!("/version/{current}")).await.0, 200);
    assert_eq!(get(&alice, &format!("/version/{current}")).await.0, 404);
    let (status, answer) = delete(&alice, "/version/77").await;
    assert_eq!((status, errcode(&answer)), (404, "M_NOT_FOUND"));
    let (status, answer) = get(&alice, &format!("/keys?version={current}")).await;
    assert_eq!((status, errcode(&answer)), (404, "M_NOT_FOUND"), "{answer}");
}

/// Backups are in storage: a new server on the same storage answers them.
async fn backups_survive_a_restart(backend: crate::Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let config = matrix_homeserver::testing::TestHomeserver::config();
    let first = matrix_homeserver::testing::TestHomeserver::start_on(config, storage.clone()).await;
    let session = first.register_user("alice", "pw").await;
    let alice = Client::new(&first).with_token(&session.access_token);
    let version = create_version(&alice, "k").await;
    put_session(&alice, &version, "s", &key(1, 0, true, "kept")).await;
    let (_, info) = get(&alice, "/version").await;
    let (_, all) = get(&alice, &format!("/keys?version={version}")).await;
    drop(first);

    let config = matrix_homeserver::testing::TestHomeserver::config();
    let second = matrix_homeserver::testing::TestHomeserver::start_on(config, storage).await;
    let alice = Client::new(&second).with_token(&session.access_token);
    assert_eq!(get(&alice, "/version").await.1, info);
    assert_eq!(get(&alice, &format!("/keys?version={version}")).await.1, all);
}

crate::on_every_backend!(
    element_backs_up_and_restores,
    a_backed_up_session_is_replaced_only_by_a_better_one,
    wrong_versions_and_bad_requests_are_refused,
    backups_survive_a_restart,
);
