//! Synapse's media admin API (`/_synapse/admin/v1/media/...`, `.../room/{roomId}/media`,
//! `.../users/{userId}/media`, `purge_media_cache`, `statistics/users/media`): quarantined
//! media is served on no path, protected media escapes bulk quarantines, deletions remove
//! rows and the files no row names, and nobody but an administrator may do any of it.

use std::path::PathBuf;

use matrix_homeserver::testing::{Intercepted, TestFederation};
use reqwest::Method;
use serde_json::{Value, json};

use crate::media::{get, image_bytes, upload};
use crate::{Client, Server, errcode};

const V1: &str = "/_synapse/admin/v1";

struct Setup {
    server: Server,
    admin: Client,
    /// The administrator's user id.
    boss: String,
    alice: matrix_homeserver::Session,
    bob: matrix_homeserver::Session,
    /// The media directory.
    media_dir: tempfile::TempDir,
}

/// A server with its media in a directory of the test's, unauthenticated media not frozen
/// (so that the legacy paths serve it), an administrator, alice and bob.
async fn setup(backend: crate::Backend) -> Option<Setup> {
    let media_dir = tempfile::tempdir().expect("a directory");
    let path = media_dir.path().to_owned();
    let server = crate::start_changed(backend, |c| {
        c.limits.media_path = Some(path);
        c.limits.enable_authenticated_media = false;
    })
    .await?;
    let hs = server.homeserver();
    hs.create_user("boss", Some("pw-boss"), true).await.expect("boss is created");
    let session = hs.login("boss", "pw-boss").await.expect("boss logs in");
    let admin = Client::new(&server).with_token(&session.access_token);
    let alice = server.register_user("alice", "pw-alice").await;
    let bob = server.register_user("bob", "pw-bob").await;
    let boss = session.user_id.to_string();
    Some(Setup { server, admin, boss, alice, bob, media_dir })
}

impl Setup {
    /// The file of content `sha256`.
    fn file(&self, sha256: &str) -> PathBuf {
        self.media_dir.path().join("content").join(sha256)
    }

    /// The admin's view of a media item (`server/id`).
    async fn info(&self, media: &str) -> Value {
        let (status, body) = self.admin.get(&format!("{V1}/media/{media}")).await;
        assert_eq!(status, 200, "{media}: {body}");
        body["media_info"].clone()
    }

    /// The statuses of every path that serves `media`: legacy and authenticated, download
    /// and thumbnail.
    async fn served(&self, media: &str) -> Vec<(u16, String)> {
        let token = Some(self.bob.access_token.as_str());
        let thumb = "width=32&height=32&method=crop";
        let mut out = Vec::new();
        for (token, path) in [
            (None, format!("/_matrix/media/v3/download/{media}")),
            (None, format!("/_matrix/media/v3/thumbnail/{media}?{thumb}")),
            (token, format!("/_matrix/client/v1/media/download/{media}")),
            (token, format!("/_matrix/client/v1/media/thumbnail/{media}?{thumb}")),
        ] {
            let answer = get(&self.server, token, &path).await;
            out.push((answer.status, answer.errcode()));
        }
        out
    }
}

fn all_ok() -> Vec<(u16, String)> {
    vec![(200, String::new()); 4]
}

fn all_not_found() -> Vec<(u16, String)> {
    vec![(404, "M_NOT_FOUND".to_owned()); 4]
}

fn png(seed: u32) -> Vec<u8> {
    image_bytes(40 + seed, 30, image::ImageFormat::Png)
}

/// The media id of `server/id`.
fn id_of(media: &str) -> &str {
    media.split_once('/').map_or(media, |(_, id)| id)
}

async fn only_administrators(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let media = upload(&s.server, &s.alice.access_token, "image/png", png(0)).await;
    let room = s.server.create_room(&s.alice, None).await;
    let alice_id = s.alice.user_id.to_string();
    let alice = Client::new(&s.server).with_token(&s.alice.access_token);
    let anonymous = Client::new(&s.server);
    let id = id_of(&media);
    let calls: Vec<(Method, String)> = vec![
        (Method::GET, format!("{V1}/users/{alice_id}/media")),
        (Method::DELETE, format!("{V1}/users/{alice_id}/media")),
        (Method::GET, format!("{V1}/room/{room}/media")),
        (Method::POST, format!("{V1}/room/{room}/media/quarantine")),
        (Method::POST, format!("{V1}/user/{alice_id}/media/quarantine")),
        (Method::POST, format!("{V1}/media/quarantine/{media}")),
        (Method::POST, format!("{V1}/media/unquarantine/{media}")),
        (Method::GET, format!("{V1}/media/quarantine_changes")),
        (Method::POST, format!("{V1}/media/protect/{id}")),
        (Method::POST, format!("{V1}/media/unprotect/{id}")),
        (Method::GET, format!("{V1}/media/{media}")),
        (Method::DELETE, format!("{V1}/media/{media}")),
        (Method::POST, format!("{V1}/media/delete?before_ts=40000000000")),
        (Method::POST, format!("{V1}/purge_media_cache?before_ts=40000000000")),
        (Method::GET, format!("{V1}/statistics/users/media")),
    ];
    for (method, path) in &calls {
        let body = (*method == Method::POST).then(|| json!({}));
        let (status, answer) = anonymous.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{method} {path}");
        let (status, answer) = alice.send(method.clone(), path, body.as_ref()).await;
        assert_eq!((status, errcode(&answer)), (403, "M_FORBIDDEN"), "{method} {path}: {answer}");
    }
    // Nothing was done.
    assert_eq!(s.served(&media).await, all_ok());
    assert_eq!(s.info(&media).await["quarantined_by"], Value::Null);
}

/// Quarantine by id covers the bytes (other rows of them, and later uploads of them); it
/// is lifted the same way; protection keeps an item out of the user's quarantine.
async fn quarantine_and_protection(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let bytes = png(1);
    let first = upload(&s.server, &s.alice.access_token, "image/png", bytes.clone()).await;
    let same = upload(&s.server, &s.bob.access_token, "image/png", bytes.clone()).await;
    let other = upload(&s.server, &s.alice.access_token, "image/png", png(2)).await;
    assert_eq!(s.served(&first).await, all_ok());

    let (status, body) = s.admin.post(&format!("{V1}/media/quarantine/{first}"), &json!({})).await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    assert_eq!(s.served(&first).await, all_not_found());
    assert_eq!(s.served(&same).await, all_not_found(), "the same bytes, uploaded by bob");
    assert_eq!(s.served(&other).await, all_ok());
    let info = s.info(&first).await;
    assert_eq!(info["quarantined_by"], json!(s.boss));
    // The bytes are kept (quarantine is not deletion).
    let sha256 = info["sha256"].as_str().expect("a hash").to_owned();
    assert!(s.file(&sha256).exists());
    // An administrator may still download it on the authenticated path, when asking to;
    // anybody else asking is refused.
    let bypass =
        format!("/_matrix/client/v1/media/download/{first}?admin_unsafely_bypass_quarantine=true");
    let answer = get(&s.server, s.admin.token.as_deref(), &bypass).await;
    assert_eq!((answer.status, answer.bytes == bytes), (200, true));
    let answer = get(&s.server, Some(&s.bob.access_token), &bypass).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (400, "M_UNKNOWN"));
    let named = format!(
        "/_matrix/client/v1/media/download/{first}/x.png?admin_unsafely_bypass_quarantine=true"
    );
    assert_eq!(get(&s.server, s.admin.token.as_deref(), &named).await.status, 200);
    let answer = get(
        &s.server,
        s.admin.token.as_deref(),
        &format!("/_matrix/client/v1/media/download/{first}"),
    )
    .await;
    assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"), "not asked");
    // A later upload of the same bytes is quarantined as it is stored.
    let later = upload(&s.server, &s.alice.access_token, "image/png", bytes.clone()).await;
    assert_eq!(s.served(&later).await, all_not_found());

    let (status, body) = s.admin.post(&format!("{V1}/media/unquarantine/{same}"), &json!({})).await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    for media in [&first, &same, &later] {
        assert_eq!(s.served(media).await, all_ok(), "{media}");
        assert_eq!(s.info(media).await["quarantined_by"], Value::Null);
    }

    // Protected: neither a quarantine by id nor the user's touches it.
    let id = id_of(&other);
    let (status, body) = s.admin.post(&format!("{V1}/media/protect/{id}"), &json!({})).await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    assert_eq!(s.info(&other).await["safe_from_quarantine"], json!(true));
    let (status, _) = s.admin.post(&format!("{V1}/media/quarantine/{other}"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(s.served(&other).await, all_ok());
    let alice = s.alice.user_id.to_string();
    let (status, body) =
        s.admin.post(&format!("{V1}/user/{alice}/media/quarantine"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // alice's first and later, and bob's row of the same bytes; not the protected one.
    assert_eq!(body, json!({"num_quarantined": 3}));
    assert_eq!(s.served(&other).await, all_ok());
    for media in [&first, &same, &later] {
        assert_eq!(s.served(media).await, all_not_found(), "{media}");
    }
    let (status, _) = s.admin.post(&format!("{V1}/media/unprotect/{id}"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(s.info(&other).await["safe_from_quarantine"], json!(false));
    let (status, _) = s.admin.post(&format!("{V1}/media/quarantine/{other}"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(s.served(&other).await, all_not_found());

    // The log of changes: 2 rows quarantined, 3 freed, 3 quarantined (by user), 1 (other).
    let changes = format!("{V1}/media/quarantine_changes");
    let (status, body) = s.admin.get(&changes).await;
    assert_eq!(status, 200, "{body}");
    let logged = body["changes"].as_array().expect("a list").clone();
    let flags: Vec<bool> =
        logged.iter().map(|c| c["quarantined"].as_bool().expect("a flag")).collect();
    assert_eq!(flags, [true, true, false, false, false, true, true, true, true]);
    assert!(logged.iter().all(|c| c["origin"] == json!("localhost")), "{body}");
    assert_eq!(
        logged.last(),
        Some(&json!({"origin": "localhost", "media_id": id, "quarantined": true}))
    );
    let next = body["next_batch"].as_u64().expect("a position");
    let (_, body) = s.admin.get(&format!("{changes}?from=2")).await;
    assert_eq!(body["changes"].as_array().map(Vec::len), Some(7));
    assert_eq!(body["changes"][0], logged[2]);
    let (_, body) = s.admin.get(&format!("{changes}?from={next}")).await;
    assert_eq!(body, json!({"next_batch": next, "changes": []}));
    for from in [format!("{}", next + 1), "x".to_owned(), "-1".to_owned()] {
        let (status, body) = s.admin.get(&format!("{changes}?from={from}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{from}: {body}");
    }

    // Unknown media, bad ids, other servers' users.
    for path in [
        format!("{V1}/media/quarantine/localhost/nosuchmedia"),
        format!("{V1}/media/unquarantine/elsewhere.test/nosuchmedia"),
        format!("{V1}/media/protect/nosuchmedia"),
        format!("{V1}/media/quarantine/localhost/bad%20id"),
    ] {
        let (status, body) = s.admin.post(&path, &json!({})).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{path}: {body}");
    }
    let (status, body) =
        s.admin.post(&format!("{V1}/user/@x:elsewhere.test/media/quarantine"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) =
        s.admin.post(&format!("{V1}/user/@nobody:localhost/media/quarantine"), &json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

/// A row of another server's media, as a fetch would have kept it (no file: only the rows
/// are looked at).
async fn remote_row(s: &Setup, key: &str, created_ts: i64, quarantined: bool) {
    let mut changes = matrix_storage::ChangeSet::new();
    changes.media.push(matrix_storage::Media {
        media_id: key.to_owned(),
        content_type: Some("image/png".to_owned()),
        size: 10,
        upload_name: None,
        uploader: key.split('/').next().expect("a server").to_owned(),
        created_ts,
        sha256: Some(format!("{:064}", created_ts)),
        authenticated: true,
        quarantined_by: quarantined.then(|| s.boss.clone()),
        safe_from_quarantine: false,
    });
    s.server.storage().apply(changes).await.expect("stored");
}

/// The media a room's events refer to, and its quarantine.
async fn room_media(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let image = upload(&s.server, &s.alice.access_token, "image/png", png(3)).await;
    let thumbnail = upload(&s.server, &s.alice.access_token, "image/png", png(4)).await;
    let elsewhere = upload(&s.server, &s.alice.access_token, "image/png", png(5)).await;
    remote_row(&s, "remote.test/abc", 1, false).await;
    let room = s.server.create_room(&s.alice, None).await;
    let alice = Client::new(&s.server).with_token(&s.alice.access_token);
    let send = |n: u32| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
    for (n, content) in [
        json!({"msgtype": "m.image", "body": "i", "url": format!("mxc://{image}"),
            "info": {"thumbnail_url": format!("mxc://{thumbnail}")}}),
        json!({"msgtype": "m.file", "body": "f", "url": "mxc://remote.test/abc"}),
        json!({"msgtype": "m.file", "body": "g", "url": "mxc://remote.test/notfetched"}),
        json!({"msgtype": "m.text", "body": "no media", "url": "https://example.org/x"}),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = alice.put(&send(n as u32), &content).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = s.admin.get(&format!("{V1}/room/{room}/media")).await;
    assert_eq!(status, 200, "{body}");
    let mut local = vec![format!("mxc://{image}"), format!("mxc://{thumbnail}")];
    local.sort();
    assert_eq!(body["local"], json!(local));
    assert_eq!(body["remote"], json!(["mxc://remote.test/abc", "mxc://remote.test/notfetched"]));

    let (status, body) =
        s.admin.post(&format!("{V1}/room/{room}/media/quarantine"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Both of ours, and the other server's item held here (the one not fetched is not).
    assert_eq!(body, json!({"num_quarantined": 3}));
    assert_eq!(s.served(&image).await, all_not_found());
    assert_eq!(s.served(&thumbnail).await, all_not_found());
    assert_eq!(s.served(&elsewhere).await, all_ok(), "not in the room");
    assert_eq!(s.info("remote.test/abc").await["quarantined_by"], json!(s.boss));

    let (status, body) = s.admin.get(&format!("{V1}/room/!nosuch:localhost/media")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = s.admin.get(&format!("{V1}/room/not-a-room/media")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

/// A user's media, listed a page at a time in the orders Synapse offers, and deleted.
async fn user_media(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let mut uploaded = Vec::new();
    for n in [10, 30, 20] {
        let media = upload(&s.server, &s.alice.access_token, "image/png", png(n)).await;
        uploaded.push(id_of(&media).to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Bob's copy of the last one's bytes: deleting alice's leaves the file to bob.
    let shared = upload(&s.server, &s.bob.access_token, "image/png", png(20)).await;
    let alice = s.alice.user_id.to_string();
    let list = format!("{V1}/users/{alice}/media");

    let (status, body) = s.admin.get(&list).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["media"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["media_id"].as_str().expect("an id"))
        .collect();
    let newest_first: Vec<&str> = uploaded.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "newest first by default");
    assert_eq!(body["total"], json!(3));
    assert_eq!(body.get("next_token"), None);
    let first = &body["media"][0];
    assert_eq!(first["media_type"], json!("image/png"));
    assert_eq!(first["quarantined_by"], Value::Null);
    assert_eq!(first["safe_from_quarantine"], json!(false));
    assert_eq!(first["last_access_ts"], Value::Null);
    assert_eq!(first["upload_name"], json!("f"));

    let (_, body) = s.admin.get(&format!("{list}?order_by=media_length&dir=b&limit=2")).await;
    let lengths: Vec<u64> = body["media"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["media_length"].as_u64().expect("a length"))
        .collect();
    assert_eq!(lengths.len(), 2);
    assert!(lengths[0] >= lengths[1], "{lengths:?}");
    assert_eq!((body["next_token"].clone(), body["total"].clone()), (json!(2), json!(3)));
    let (_, body) = s.admin.get(&format!("{list}?order_by=media_length&dir=b&from=2")).await;
    assert_eq!(body["media"].as_array().map(Vec::len), Some(1));
    assert_eq!(body.get("next_token"), None);
    let (_, body) = s.admin.get(&format!("{list}?order_by=created_ts")).await;
    assert_eq!(body["media"][0]["media_id"], json!(uploaded[0]), "oldest first with dir f");

    for (query, code) in [
        ("order_by=size", "M_INVALID_PARAM"),
        ("dir=x", "M_INVALID_PARAM"),
        ("limit=-1", "M_INVALID_PARAM"),
    ] {
        let (status, body) = s.admin.get(&format!("{list}?{query}")).await;
        assert_eq!((status, errcode(&body)), (400, code), "{query}: {body}");
    }
    let (status, body) = s.admin.get(&format!("{V1}/users/@nobody:localhost/media")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = s.admin.get(&format!("{V1}/users/@x:elsewhere.test/media")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // Deleting the oldest one, then the rest: rows gone, files gone unless bob's row names
    // the same bytes.
    let oldest_sha = s.info(&format!("localhost/{}", uploaded[0])).await["sha256"].clone();
    let shared_sha = s.info(&shared).await["sha256"].clone();
    let oldest_file = s.file(oldest_sha.as_str().expect("a hash"));
    assert!(oldest_file.exists());
    let request = format!("{list}?order_by=created_ts&limit=1");
    let (status, body) = s.admin.send(Method::DELETE, &request, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted_media": [uploaded[0]], "total": 1}));
    assert!(!oldest_file.exists(), "its file is removed");
    let (status, _) = s.admin.get(&format!("{V1}/media/localhost/{}", uploaded[0])).await;
    assert_eq!(status, 404);
    let download =
        get(&s.server, None, &format!("/_matrix/media/v3/download/localhost/{}", uploaded[0]))
            .await;
    assert_eq!(download.status, 404);
    let (status, body) = s.admin.send(Method::DELETE, &list, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], json!(2));
    let (_, body) = s.admin.get(&list).await;
    assert_eq!(body["total"], json!(0));
    assert!(s.file(shared_sha.as_str().expect("a hash")).exists(), "bob's row names it");
    let storage = s.server.storage();
    assert_eq!(storage.media_usage(&alice).await.expect("reads"), 0, "the quota is given back");
    assert!(storage.media_usage(s.bob.user_id.as_str()).await.expect("reads") > 0);
    assert_eq!(s.served(&shared).await, all_ok());
}

/// One item's information and deletion; deletion by date and size, keeping avatars and
/// protected items; the purge of other servers' media.
async fn deletions(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let small = upload(&s.server, &s.alice.access_token, "image/png", png(1)).await;
    let big = upload(&s.server, &s.alice.access_token, "image/png", png(200)).await;
    let avatar = upload(&s.server, &s.alice.access_token, "image/png", png(201)).await;
    let protected = upload(&s.server, &s.bob.access_token, "image/png", png(202)).await;
    let single = upload(&s.server, &s.bob.access_token, "text/plain", b"hello".to_vec()).await;
    let alice = Client::new(&s.server).with_token(&s.alice.access_token);
    let alice_id = s.alice.user_id.to_string();
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/profile/{alice_id}/avatar_url"),
            &json!({"avatar_url": format!("mxc://{avatar}")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        s.admin.post(&format!("{V1}/media/protect/{}", id_of(&protected)), &json!({})).await;
    assert_eq!(status, 200);

    // Information.
    let info = s.info(&single).await;
    assert_eq!(info["media_origin"], json!("localhost"));
    assert_eq!(info["user_id"], json!(s.bob.user_id.to_string()));
    assert_eq!(info["media_id"], json!(id_of(&single)));
    assert_eq!(
        (info["media_type"].clone(), info["media_length"].clone()),
        (json!("text/plain"), json!(5))
    );
    assert_eq!(info["sha256"].as_str().map(str::len), Some(64));
    let (status, body) = s.admin.get(&format!("{V1}/media/localhost/nosuchmedia")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = s.admin.get(&format!("{V1}/media/elsewhere.test/nosuchmedia")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "not fetched: {body}");

    // One item.
    let file = s.file(info["sha256"].as_str().expect("a hash"));
    assert!(file.exists());
    let (status, body) = s.admin.send(Method::DELETE, &format!("{V1}/media/{single}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted_media": [id_of(&single)], "total": 1}));
    assert!(!file.exists());
    let answer = get(
        &s.server,
        Some(&s.bob.access_token),
        &format!("/_matrix/client/v1/media/download/{single}"),
    )
    .await;
    assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"));
    let (status, body) = s.admin.send(Method::DELETE, &format!("{V1}/media/{single}"), None).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) =
        s.admin.send(Method::DELETE, &format!("{V1}/media/elsewhere.test/abc"), None).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // By date and size.
    let delete = format!("{V1}/media/delete");
    for (query, status_code) in [
        ("", (400, "M_MISSING_PARAM")),
        ("?before_ts=1000", (400, "M_INVALID_PARAM")),
        ("?before_ts=soon", (400, "M_INVALID_PARAM")),
        ("?before_ts=40000000000&keep_profiles=maybe", (400, "M_INVALID_PARAM")),
        ("?before_ts=40000000000&size_gt=-1", (400, "M_INVALID_PARAM")),
    ] {
        let (status, body) = s.admin.post(&format!("{delete}{query}"), &json!({})).await;
        assert_eq!((status, errcode(&body)), status_code, "{query}: {body}");
    }
    let (_, body) = s.admin.post(&format!("{delete}?before_ts=40000000000"), &json!({})).await;
    assert_eq!(body, json!({"deleted_media": [], "total": 0}), "nothing is that old");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let before = now + 60_000;
    let small_size = s.info(&small).await["media_length"].as_u64().expect("a size");
    let (status, body) = s
        .admin
        .post(&format!("{delete}?before_ts={before}&size_gt={small_size}"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Not the small one, not the avatar, not the protected one.
    assert_eq!(body, json!({"deleted_media": [id_of(&big)], "total": 1}));
    let (_, body) =
        s.admin.post(&format!("{delete}?before_ts={before}&keep_profiles=false"), &json!({})).await;
    let mut deleted: Vec<String> =
        serde_json::from_value(body["deleted_media"].clone()).expect("ids");
    deleted.sort();
    let mut expected = vec![id_of(&small).to_owned(), id_of(&avatar).to_owned()];
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(s.served(&protected).await, all_ok());

    // Other servers' media: what was fetched before `before_ts` and is not quarantined.
    remote_row(&s, "remote.test/old", 1_000, false).await;
    remote_row(&s, "remote.test/oldquarantined", 2_000, true).await;
    remote_row(&s, "remote.test/new", 9_000_000_000_000, false).await;
    let purge = format!("{V1}/purge_media_cache");
    let (status, body) = s.admin.post(&purge, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) = s.admin.post(&format!("{purge}?before_ts={before}"), &json!({})).await;
    assert_eq!((status, body.clone()), (200, json!({"deleted": 1})), "{body}");
    let storage = s.server.storage();
    assert_eq!(storage.media("remote.test/old").await.expect("reads"), None);
    assert!(storage.media("remote.test/oldquarantined").await.expect("reads").is_some());
    assert!(storage.media("remote.test/new").await.expect("reads").is_some());
    // Ours are untouched.
    assert_eq!(s.served(&protected).await, all_ok());
}

/// Per user: how many items and bytes they uploaded, filtered and ordered.
async fn statistics(backend: crate::Backend) {
    let Some(s) = setup(backend).await else { return };
    let alice_bytes = [png(1), png(2)];
    for bytes in &alice_bytes {
        upload(&s.server, &s.alice.access_token, "image/png", bytes.clone()).await;
    }
    upload(&s.server, &s.bob.access_token, "text/plain", b"bob's".to_vec()).await;
    remote_row(&s, "remote.test/x", 1, false).await;
    let alice_id = s.alice.user_id.to_string();
    let bob_id = s.bob.user_id.to_string();
    let alice_length: usize = alice_bytes.iter().map(Vec::len).sum();
    let stats = format!("{V1}/statistics/users/media");

    let (status, body) = s.admin.get(&stats).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], json!(2), "{body}");
    assert_eq!(body["users"][0]["user_id"], json!(alice_id));
    assert_eq!(body["users"][0]["media_count"], json!(2));
    assert_eq!(body["users"][0]["media_length"], json!(alice_length));
    assert_eq!(body["users"][0]["displayname"], json!("alice"));
    assert_eq!(
        body["users"][1],
        json!({"user_id": bob_id, "displayname": "bob",
        "media_count": 1, "media_length": 5})
    );

    let (_, body) = s.admin.get(&format!("{stats}?order_by=media_count&dir=b&limit=1")).await;
    assert_eq!(body["users"][0]["user_id"], json!(alice_id));
    assert_eq!((body["next_token"].clone(), body["total"].clone()), (json!(1), json!(2)));
    let (_, body) = s.admin.get(&format!("{stats}?order_by=media_length")).await;
    assert_eq!(body["users"][0]["user_id"], json!(bob_id), "smallest first");
    let (_, body) = s.admin.get(&format!("{stats}?search_term=LIC")).await;
    assert_eq!(body["total"], json!(1));
    assert_eq!(body["users"][0]["user_id"], json!(alice_id));
    let (_, body) = s.admin.get(&format!("{stats}?from_ts=9000000000000")).await;
    assert_eq!((body["total"].clone(), body["users"].clone()), (json!(0), json!([])));
    let (_, body) = s.admin.get(&format!("{stats}?until_ts=1")).await;
    assert_eq!(body["total"], json!(0));
    for query in ["order_by=nope", "from_ts=-1", "from_ts=5&until_ts=4", "dir=up", "limit=x"] {
        let (status, body) = s.admin.get(&format!("{stats}?{query}")).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{query}: {body}");
    }
}

crate::on_every_backend!(
    only_administrators,
    quarantine_and_protection,
    room_media,
    user_media,
    deletions,
    statistics,
);

/// Another server's media quarantined here is not served here, and media of the same bytes
/// fetched later is quarantined as it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_is_quarantined_on_fetch_and_by_id() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    b.homeserver().create_user("boss", Some("pw-boss"), true).await.expect("created");
    let boss = b.homeserver().login("boss", "pw-boss").await.expect("logs in");
    let admin = Client::new(b).with_token(&boss.access_token);
    let fetch = |media: &str| format!("/_matrix/client/v1/media/download/{media}");
    let first = upload(a, &alice.access_token, "image/png", png(7)).await;
    assert_eq!(get(b, Some(&bob.access_token), &fetch(&first)).await.status, 200);

    let (status, body) = admin.post(&format!("{V1}/media/quarantine/{first}"), &json!({})).await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    let answer = get(b, Some(&bob.access_token), &fetch(&first)).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"));
    assert_eq!(get(a, Some(&alice.access_token), &fetch(&first)).await.status, 200, "a.test's own");

    // The same bytes under another id, fetched now: quarantined as they arrive.
    let again = upload(a, &alice.access_token, "image/png", png(7)).await;
    let answer = get(b, Some(&bob.access_token), &fetch(&again)).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"));
    let (_, body) = admin.get(&format!("{V1}/media/{again}")).await;
    assert_eq!(body["media_info"]["quarantined_by"], json!(boss.user_id.to_string()));
    assert_eq!(body["media_info"]["user_id"], Value::Null);

    // Lifted: served again, without another fetch.
    let (status, _) = admin.post(&format!("{V1}/media/unquarantine/{again}"), &json!({})).await;
    assert_eq!(status, 200);
    net.intercept("a.test", |_, _| Intercepted::Drop);
    for media in [&first, &again] {
        assert_eq!(get(b, Some(&bob.access_token), &fetch(media)).await.status, 200, "{media}");
    }
    net.stop_intercepting("a.test");
}
