//! The media repository's uploads: streamed to content-addressed files and back, refused
//! bodies (over the limit, cut short, lying about their length) leaving nothing behind,
//! asynchronous uploads (`create`, then the content: only by its creator, once; downloads
//! waiting for it; a bound on pending ids; kept across a restart), and the freeze of
//! unauthenticated media.

use std::path::Path;
use std::time::Duration;

use matrix_homeserver::Config;
use matrix_homeserver::testing::TestHomeserver;
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::media::{get, image_bytes, thumb, upload};

/// The names under `dir`'s `content` and `tmp` directories, sorted (`content/...`).
async fn files(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["content", "tmp"] {
        let Ok(mut entries) = tokio::fs::read_dir(dir.join(sub)).await else { continue };
        while let Some(entry) = entries.next_entry().await.expect("an entry") {
            names.push(format!("{sub}/{}", entry.file_name().to_string_lossy()));
        }
    }
    names.sort();
    names
}

fn hex_sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `head` then `body` over raw TCP, and answers the status line the server sends
/// within `wait` (the connection is left open after the body unless `close`).
async fn raw(server: &TestHomeserver, head: &str, body: &[u8], close: bool) -> Option<String> {
    let address = server.base_url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("writes");
    stream.write_all(body).await.expect("writes");
    if close {
        let _ = stream.shutdown().await;
    }
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await;
    let n = read.ok()?.ok()?;
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

/// PUTs `bytes` to `/_matrix/media/v3/upload/{media}` as `token`: status and JSON.
async fn put(server: &TestHomeserver, token: &str, media: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_matrix/media/v3/upload/{media}?filename=late.txt", server.base_url()))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(bytes)
        .send()
        .await
        .expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /_matrix/media/v1/create` as `token`: status and JSON.
async fn create(server: &TestHomeserver, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v1/create", server.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `server/id` of a created media id.
fn media_of(created: &Value) -> String {
    let uri = created["content_uri"].as_str().expect("a content uri");
    uri.strip_prefix("mxc://").expect("an mxc uri").to_owned()
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or_default()
}

async fn uploads_are_content_addressed_and_stream_back(backend: crate::Backend) {
    let dir = tempfile::tempdir().expect("a directory");
    let media_dir = dir.path().join("media");
    let Some(server) =
        crate::start_changed(backend, |c| c.limits.media_path = Some(media_dir.clone())).await
    else {
        return;
    };
    let alice = server.register_user("alice", "pw").await;
    let token = alice.access_token.as_str();
    // 3 MiB and a bit, with every byte value: more than one chunk each way.
    let bytes: Vec<u8> = (0..(3 << 20) + 12345).map(|i: u32| (i % 251) as u8).collect();
    let first = upload(&server, token, "application/x-test", bytes.clone()).await;
    let second = upload(&server, token, "application/x-test", bytes.clone()).await;
    assert_ne!(first, second, "two uploads, two media ids");
    let sha256 = hex_sha256(&bytes);
    assert_eq!(files(&media_dir).await, [format!("content/{sha256}")], "one file, by its hash");
    let id = first.split('/').nth(1).expect("an id");
    let row = server.storage().media(id).await.expect("reads").expect("kept");
    assert_eq!((row.sha256.as_deref(), row.size), (Some(sha256.as_str()), bytes.len() as u64));

    let response = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/download/{first}", server.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    assert_eq!(header("content-length"), bytes.len().to_string());
    assert_eq!(header("content-type"), "application/x-test");
    assert_eq!(header("content-disposition"), "attachment; filename=\"f\"");
    assert_eq!(header("content-security-policy"), "sandbox; default-src 'none'");
    assert!(response.bytes().await.expect("a body") == bytes, "the same bytes back");

    // An empty upload is content too.
    let empty = upload(&server, token, "text/plain", Vec::new()).await;
    let answer =
        get(&server, Some(token), &format!("/_matrix/client/v1/media/download/{empty}")).await;
    assert_eq!((answer.status, answer.bytes.len()), (200, 0));
}

async fn refused_uploads_leave_nothing(backend: crate::Backend) {
    let dir = tempfile::tempdir().expect("a directory");
    let media_dir = dir.path().join("media");
    let Some(server) = crate::start_changed(backend, |c| {
        c.limits.media_path = Some(media_dir.clone());
        c.limits.max_media_bytes = 1000;
        c.http.media_upload_timeout_secs = 2;
    })
    .await
    else {
        return;
    };
    let alice = server.register_user("alice", "pw").await;
    let auth = format!("Authorization: Bearer {}\r\n", alice.access_token);
    let post = "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n";

    // A declared length over the limit: refused before the body.
    let head = format!("{post}{auth}Content-Length: 5000\r\n\r\n");
    let status = raw(&server, &head, b"", false).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));
    // A chunked body passing the limit: refused as soon as it does, while the client is
    // still sending (no last chunk ever comes).
    let head = format!("{post}{auth}Transfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("{:x}\r\n{}\r\n", 1200, "x".repeat(1200));
    let status = raw(&server, &head, chunk.as_bytes(), false).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));
    // A lying Content-Length: fewer bytes than declared, then the connection is closed.
    let head = format!("{post}{auth}Content-Length: 900\r\n\r\n");
    let status = raw(&server, &head, &[7u8; 100], true).await;
    assert!(status.as_ref().is_none_or(|s| s.starts_with("HTTP/1.1 4")), "{status:?}");
    // A truncated chunked body: the connection ends mid-chunk.
    let head = format!("{post}{auth}Transfer-Encoding: chunked\r\n\r\n");
    let status = raw(&server, &head, b"100\r\nonly a few bytes", true).await;
    assert!(status.as_ref().is_none_or(|s| s.starts_with("HTTP/1.1 4")), "{status:?}");
    // A body that stalls: 408 after the upload timeout.
    let head = format!("{post}{auth}Content-Length: 900\r\n\r\n");
    let status = raw(&server, &head, &[7u8; 100], false).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"));

    // Nothing kept, nothing counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(files(&media_dir).await, Vec::<String>::new());
    let used = server.storage().media_usage(alice.user_id.as_str()).await.expect("reads");
    assert_eq!(used, 0);
    // The server still takes a good upload.
    let good = upload(&server, &alice.access_token, "text/plain", b"fine".to_vec()).await;
    assert!(good.starts_with("localhost/"));
}

async fn async_uploads_once_by_their_creator(backend: crate::Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let mut config = TestHomeserver::config();
    config.limits.max_pending_media_per_user = 2;
    config.limits.max_media_bytes = 1000;
    let server = TestHomeserver::start_on(config.clone(), storage.clone()).await;
    let alice = server.register_user("alice", "pw").await;
    let bob = server.register_user("bob", "pw").await;
    let (a, b) = (alice.access_token.as_str(), bob.access_token.as_str());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let (status, created) = create(&server, a).await;
    assert_eq!(status, 200, "{created}");
    let expires = created["unused_expires_at"].as_i64().expect("an expiry");
    assert!(expires >= before + 23 * 3600 * 1000, "about a day: {expires}");
    let media = media_of(&created);
    assert!(media.starts_with("localhost/"));
    let download = format!("/_matrix/client/v1/media/download/{media}");

    // Not uploaded yet: the download waits, then 504.
    let started = std::time::Instant::now();
    let answer = get(&server, Some(a), &format!("{download}?timeout_ms=300")).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (504, "M_NOT_YET_UPLOADED"));
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Someone else, an id never created, another server's id, a bad id.
    let (status, body) = put(&server, b, &media, b"bob's".to_vec()).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = put(&server, a, "localhost/nevercreated", b"x".to_vec()).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let id = media.split('/').nth(1).expect("an id");
    let (status, body) = put(&server, a, &format!("elsewhere.test/{id}"), b"x".to_vec()).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    // Over the limit: refused, and the id still waits for its content.
    let (status, body) = put(&server, a, &media, vec![1; 2000]).await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"));

    // A download waiting when the content comes gets it.
    let waiting = {
        let url = format!("{}{download}?timeout_ms=10000", server.base_url());
        let token = a.to_owned();
        tokio::spawn(async move {
            let response =
                reqwest::Client::new().get(url).bearer_auth(token).send().await.expect("answers");
            (response.status().as_u16(), response.bytes().await.expect("a body").to_vec())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = put(&server, a, &media, b"at last".to_vec()).await;
    assert_eq!((status, body), (200, serde_json::json!({})));
    let (status, bytes) = waiting.await.expect("the download ends");
    assert_eq!((status, bytes.as_slice()), (200, b"at last".as_slice()));

    // Once only.
    let (status, body) = put(&server, a, &media, b"again".to_vec()).await;
    assert_eq!((status, errcode(&body)), (409, "M_CANNOT_OVERWRITE_MEDIA"));
    let answer = get(&server, Some(a), &download).await;
    assert_eq!((answer.status, answer.bytes.as_slice()), (200, b"at last".as_slice()));
    assert_eq!(answer.content_type, "text/plain");

    // At most two waiting per user; an upload frees a place; bob has places of his own.
    let (_, first) = create(&server, a).await;
    let (_, second) = create(&server, a).await;
    let (status, body) = create(&server, a).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"));
    assert_eq!(create(&server, b).await.0, 200);
    assert_eq!(put(&server, a, &media_of(&first), b"one".to_vec()).await.0, 200);
    assert_eq!(create(&server, a).await.0, 200);

    // Kept across a restart: the new server takes the content of an id the old one made,
    // and still refuses a foreign upload.
    drop(server);
    let server = TestHomeserver::start_on(config, storage).await;
    let (status, body) = put(&server, b, &media_of(&second), b"bob".to_vec()).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = put(&server, a, &media_of(&second), b"two".to_vec()).await;
    assert_eq!((status, body), (200, serde_json::json!({})));
    let answer =
        get(&server, Some(a), &format!("/_matrix/client/v1/media/download/{}", media_of(&second)))
            .await;
    assert_eq!((answer.status, answer.bytes.as_slice()), (200, b"two".as_slice()));
}

async fn two_uploads_at_once_to_one_id_commit_once(backend: crate::Backend) {
    let Some(server) = crate::start(backend).await else { return };
    let alice = server.register_user("alice", "pw").await;
    let token = alice.access_token.as_str();
    let (_, created) = create(&server, token).await;
    let media = media_of(&created);
    let uploads: Vec<_> = (0..4u8)
        .map(|n| {
            let url = format!("{}/_matrix/media/v3/upload/{media}", server.base_url());
            let token = token.to_owned();
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .put(url)
                    .bearer_auth(token)
                    .body(vec![n; 64 << 10])
                    .send()
                    .await
                    .expect("answers");
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for upload in uploads {
        statuses.push(upload.await.expect("ends"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409]);
    let answer =
        get(&server, Some(token), &format!("/_matrix/client/v1/media/download/{media}")).await;
    assert_eq!(answer.bytes.len(), 64 << 10);
    assert!(answer.bytes.iter().all(|&b| b == answer.bytes[0]), "one upload's bytes, whole");
}

async fn expired_media_ids_take_no_upload_and_no_place(backend: crate::Backend) {
    let Some(server) = crate::start_changed(backend, |c| {
        c.limits.max_pending_media_per_user = 1;
        c.limits.pending_media_lifetime_secs = 0;
    })
    .await
    else {
        return;
    };
    let alice = server.register_user("alice", "pw").await;
    let token = alice.access_token.as_str();
    let (status, first) = create(&server, token).await;
    assert_eq!(status, 200);
    // Expired at once: it holds no place, takes no content and is not waited for.
    let (status, second) = create(&server, token).await;
    assert_eq!(status, 200, "{second}");
    let (status, body) = put(&server, token, &media_of(&first), b"late".to_vec()).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let path = format!("/_matrix/client/v1/media/download/{}?timeout_ms=5000", media_of(&second));
    let started = std::time::Instant::now();
    let answer = get(&server, Some(token), &path).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"));
    assert!(started.elapsed() < Duration::from_secs(4));
    // The expired ids are forgotten as new ones are made.
    let id = media_of(&first);
    let id = id.split('/').nth(1).expect("an id");
    assert!(server.storage().pending_media(id).await.expect("reads").is_none());
}

/// A server on `storage` and `media` with unauthenticated media frozen or not.
async fn frozen(storage: &crate::Storage, media: &Path, freeze: bool) -> TestHomeserver {
    let mut config: Config = TestHomeserver::config();
    config.limits.enable_authenticated_media = freeze;
    config.limits.media_path = Some(media.to_owned());
    TestHomeserver::start_on(config, storage.clone()).await
}

async fn freezing_unauthenticated_media(backend: crate::Backend) {
    let Some((storage, _dir)) = crate::open_storage(backend).await else { return };
    let media_dir = tempfile::tempdir().expect("a directory");
    let media_dir = media_dir.path();
    let png = image_bytes(64, 48, image::ImageFormat::Png);
    let legacy = |media: &str| format!("/_matrix/media/v3/download/{media}");
    let legacy_thumb =
        |media: &str| format!("/_matrix/media/v3/thumbnail/{media}?width=32&height=32");
    let authed = |media: &str| format!("/_matrix/client/v1/media/download/{media}");

    // Before the freeze: served everywhere.
    let server = frozen(&storage, media_dir, false).await;
    let alice = server.register_user("alice", "pw").await;
    let token = alice.access_token.as_str();
    let old = upload(&server, token, "image/png", png.clone()).await;
    assert_eq!(get(&server, None, &legacy(&old)).await.status, 200);
    drop(server);

    // Frozen: what came before still is; what comes now only on the authenticated paths.
    let server = frozen(&storage, media_dir, true).await;
    let new = upload(&server, token, "image/png", png.clone()).await;
    assert_eq!(get(&server, None, &legacy(&old)).await.status, 200);
    assert_eq!(get(&server, None, &legacy_thumb(&old)).await.status, 200);
    for path in [legacy(&new), legacy_thumb(&new), format!("{}/name.png", legacy(&new))] {
        let answer = get(&server, None, &path).await;
        assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"), "{path}");
    }
    let answer = get(&server, Some(token), &authed(&new)).await;
    assert_eq!((answer.status, answer.bytes == png), (200, true));
    let answer = get(&server, Some(token), &thumb(&new, "width=32&height=32")).await;
    assert_eq!(answer.status, 200);
    drop(server);

    // Thawed: everything again.
    let server = frozen(&storage, media_dir, false).await;
    assert_eq!(get(&server, None, &legacy(&new)).await.status, 200);
}

crate::on_every_backend!(
    uploads_are_content_addressed_and_stream_back,
    refused_uploads_leave_nothing,
    async_uploads_once_by_their_creator,
    two_uploads_at_once_to_one_id_commit_once,
    expired_media_ids_take_no_upload_and_no_place,
    freezing_unauthenticated_media,
);
