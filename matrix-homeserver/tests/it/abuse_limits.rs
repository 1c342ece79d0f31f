//! Rate limits on every write and on what a stranger can try (findings 10-12, 40, 41, 44-46
//! of the security review): each test turns the limits on (the test kit has them off), pushes
//! past the bound and checks the 429 `M_LIMIT_EXCEEDED` with its `retry_after_ms`; with them,
//! the bounds on profile fields and the media quota.

use matrix_homeserver::testing::TestHomeserver;
use matrix_homeserver::{Config, RateLimit, RateLimitsConfig, RegistrationMode};
use serde_json::{Value, json};

use crate::rooms::user;
use crate::{Client, errcode};

const V3: &str = "/_matrix/client/v3";

/// The test kit's settings with every rate limit on, at the defaults.
pub(crate) fn limits_on() -> Config {
    let mut config = TestHomeserver::config();
    config.rate_limits = RateLimitsConfig::default();
    config
}

/// A burst of `n` that refills too slowly to matter during a test.
pub(crate) fn tight(n: f64) -> RateLimit {
    RateLimit::new(0.001, n)
}

/// Asserts a 429 `M_LIMIT_EXCEEDED` that says when to retry.
pub(crate) fn assert_limited(what: &str, (status, body): &(u16, Value)) {
    assert_eq!((*status, errcode(body)), (429, "M_LIMIT_EXCEEDED"), "{what}: {body}");
    let retry = body["retry_after_ms"].as_u64().unwrap_or(0);
    assert!(retry > 0, "{what}: no retry_after_ms in {body}");
}

/// Asserts an error status and errcode.
pub(crate) fn assert_error(what: &str, (status, body): &(u16, Value), expected: (u16, &str)) {
    assert_eq!((*status, errcode(body)), expected, "{what}: {body}");
}

/// Asserts a 2xx.
pub(crate) fn assert_ok(what: &str, (status, body): &(u16, Value)) {
    assert!((200..300).contains(status), "{what}: {status} {body}");
}

async fn put(client: &Client, path: &str, body: Value) -> (u16, Value) {
    client.send(reqwest::Method::PUT, path, Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_12_state_and_membership_writes_are_rate_limited() {
    let mut config = limits_on();
    config.rate_limits.state = tight(3.0);
    config.rate_limits.membership = tight(3.0);
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let (alice, _) = user(&server, "alice").await;
    let (_, bob_id) = user(&server, "bob").await;
    let session = server.homeserver().login("alice", "pw").await.expect("logs in");
    let room = server.create_room(&session, Some("spam")).await;

    // State events: three, then 429 (also for aliases and directory visibility, same bucket).
    for i in 0..3 {
        let r = put(&alice, &format!("{V3}/rooms/{room}/state/x.spam/{i}"), json!({})).await;
        assert_ok("state", &r);
    }
    assert_limited(
        "state",
        &put(&alice, &format!("{V3}/rooms/{room}/state/x.spam/9"), json!({})).await,
    );
    let alias = format!("{V3}/directory/room/%23spam:localhost");
    assert_limited("alias", &put(&alice, &alias, json!({"room_id": room})).await);
    let listing = format!("{V3}/directory/list/room/{room}");
    assert_limited("visibility", &put(&alice, &listing, json!({"visibility": "public"})).await);

    // Membership: invite, kick, ban pass; then unban, leave and invite are refused.
    let target = json!({"user_id": bob_id});
    for action in ["invite", "kick", "ban"] {
        assert_ok(action, &alice.post(&format!("{V3}/rooms/{room}/{action}"), &target).await);
    }
    for action in ["unban", "invite", "kick", "ban"] {
        assert_limited(action, &alice.post(&format!("{V3}/rooms/{room}/{action}"), &target).await);
    }
    assert_limited("leave", &alice.post(&format!("{V3}/rooms/{room}/leave"), &json!({})).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_12_messages_ephemeral_writes_and_rooms_are_rate_limited() {
    let mut config = limits_on();
    for limit in [
        &mut config.rate_limits.message,
        &mut config.rate_limits.typing,
        &mut config.rate_limits.receipts,
        &mut config.rate_limits.account_data,
        &mut config.rate_limits.to_device,
        &mut config.rate_limits.key_upload,
        &mut config.rate_limits.create_room,
    ] {
        *limit = tight(3.0);
    }
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let (alice, alice_id) = user(&server, "alice").await;
    let session = server.homeserver().login("alice", "pw").await.expect("logs in");
    let room = server.create_room(&session, Some("busy")).await;

    // Messages and redactions share a bucket.
    let mut last = String::new();
    for i in 0..3 {
        let (status, body) = crate::rooms::send(&alice, &room, &format!("t{i}"), "hi").await;
        assert_eq!(status, 200, "{body}");
        last = body["event_id"].as_str().expect("an id").to_owned();
    }
    assert_limited("send", &crate::rooms::send(&alice, &room, "t9", "hi").await);
    let redact = format!("{V3}/rooms/{room}/redact/{last}/r1");
    assert_limited("redact", &put(&alice, &redact, json!({})).await);

    let typing = format!("{V3}/rooms/{room}/typing/{alice_id}");
    for _ in 0..3 {
        assert_ok("typing", &put(&alice, &typing, json!({"typing": true})).await);
    }
    assert_limited("typing", &put(&alice, &typing, json!({"typing": true})).await);

    let receipt = format!("{V3}/rooms/{room}/receipt/m.read/{last}");
    assert_ok("receipt", &alice.post(&receipt, &json!({})).await);
    assert_ok("receipt", &alice.post(&receipt, &json!({})).await);
    let markers = format!("{V3}/rooms/{room}/read_markers");
    assert_ok("read markers", &alice.post(&markers, &json!({"m.fully_read": last})).await);
    assert_limited("receipt", &alice.post(&receipt, &json!({})).await);
    assert_limited("read markers", &alice.post(&markers, &json!({"m.read": last})).await);

    // Account data, tags and device names share a bucket.
    let data = format!("{V3}/user/{alice_id}/account_data/x.a");
    assert_ok("account data", &put(&alice, &data, json!({"a": 1})).await);
    let room_data = format!("{V3}/user/{alice_id}/rooms/{room}/account_data/x.b");
    assert_ok("room account data", &put(&alice, &room_data, json!({"b": 1})).await);
    let tag = format!("{V3}/user/{alice_id}/rooms/{room}/tags/u.work");
    assert_ok("tag", &put(&alice, &tag, json!({})).await);
    assert_limited("account data", &put(&alice, &data, json!({"a": 2})).await);
    assert_limited("tag", &put(&alice, &tag, json!({})).await);
    let device = format!("{V3}/devices/{}", session.device_id);
    assert_limited("device name", &put(&alice, &device, json!({"display_name": "x"})).await);
    let forget = format!("{V3}/rooms/{room}/forget");
    assert_limited("forget", &alice.post(&forget, &json!({})).await);

    let to_device = json!({"messages": {alice_id.clone(): {"*": {"a": 1}}}});
    for i in 0..3 {
        let path = format!("{V3}/sendToDevice/m.test/d{i}");
        assert_ok("to-device", &put(&alice, &path, to_device.clone()).await);
    }
    assert_limited(
        "to-device",
        &put(&alice, &format!("{V3}/sendToDevice/m.test/d9"), to_device).await,
    );

    let upload = format!("{V3}/keys/upload");
    for i in 0..3 {
        let keys = json!({"one_time_keys": {format!("signed_curve25519:K{i}"): {"key": "k"}}});
        assert_ok("key upload", &alice.post(&upload, &keys).await);
    }
    let keys = json!({"one_time_keys": {"signed_curve25519:K9": {"key": "k"}}});
    assert_limited("key upload", &alice.post(&upload, &keys).await);
    // Asking for the key counts uploads nothing and is not refused.
    assert_ok("key counts", &alice.post(&upload, &json!({})).await);

    for _ in 0..3 {
        assert_ok("createRoom", &alice.post(&format!("{V3}/createRoom"), &json!({})).await);
    }
    assert_limited("createRoom", &alice.post(&format!("{V3}/createRoom"), &json!({})).await);
}

/// The defaults must not get in the way of a normal client: Element sends typing notices and
/// receipts often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_12_the_default_limits_let_a_busy_client_type_and_read() {
    let server = crate::start_with(crate::Backend::Memory, limits_on()).await.expect("memory");
    let (alice, alice_id) = user(&server, "alice").await;
    let session = server.homeserver().login("alice", "pw").await.expect("logs in");
    let room = server.create_room(&session, Some("chat")).await;
    let (status, body) = crate::rooms::send(&alice, &room, "t1", "hello").await;
    assert_eq!(status, 200, "{body}");
    let event = body["event_id"].as_str().expect("an id").to_owned();
    let typing = format!("{V3}/rooms/{room}/typing/{alice_id}");
    let receipt = format!("{V3}/rooms/{room}/receipt/m.read/{event}");
    for i in 0..25 {
        assert_ok("typing", &put(&alice, &typing, json!({"typing": i % 2 == 0})).await);
        assert_ok("receipt", &alice.post(&receipt, &json!({})).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_10_registration_token_guesses_are_rate_limited() {
    let mut config = limits_on();
    config.registration.mode = RegistrationMode::Token;
    config.registration.tokens = vec!["open-sesame-1234".to_owned()];
    config.rate_limits.registration_token = tight(3.0);
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let client = Client::new(&server);
    let register = format!("{V3}/register");
    let guess = |token: &str| {
        json!({"username": "mallory", "password": "pw",
               "auth": {"type": "m.login.registration_token", "token": token}})
    };
    for wrong in ["a", "open-sesame-123", "open-sesame-12345"] {
        let (status, body) = client.post(&register, &guess(wrong)).await;
        assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"), "{body}");
    }
    // The limit is counted before the token is looked at: even the right one is refused now.
    assert_limited("token", &client.post(&register, &guess("open-sesame-1234")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_45_a_wrong_registration_token_answers_the_uia_401_and_can_be_retried() {
    let mut config = TestHomeserver::config();
    config.registration.mode = RegistrationMode::Token;
    config.registration.tokens = vec!["right".to_owned()];
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let client = Client::new(&server);
    let register = format!("{V3}/register");
    let (status, start) = client.post(&register, &json!({"username": "carol"})).await;
    assert_eq!(status, 401);
    let session = start["session"].as_str().expect("a session").to_owned();
    let auth = |token: &str| {
        json!({"username": "carol", "password": "pw",
               "auth": {"type": "m.login.registration_token", "token": token, "session": session}})
    };
    let (status, body) = client.post(&register, &auth("wrong")).await;
    assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"), "{body}");
    crate::spec::check("registration.yaml", "/register", "post", 401, &body);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    assert_eq!(body["session"], session.as_str());
    assert!(body["error"].is_string() && body["params"].is_object(), "{body}");
    let (status, body) = client.post(&register, &auth("right")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_44_availability_and_profile_lookups_are_rate_limited() {
    let mut config = limits_on();
    config.rate_limits.lookups = tight(3.0);
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    server.register_user("alice", "pw").await;
    let stranger = Client::new(&server);
    assert_ok("available", &stranger.get(&format!("{V3}/register/available?username=a1")).await);
    assert_ok("profile", &stranger.get(&format!("{V3}/profile/@alice:localhost")).await);
    let (status, _) = stranger.get(&format!("{V3}/profile/@nobody:localhost/displayname")).await;
    assert_eq!(status, 404);
    assert_limited(
        "available",
        &stranger.get(&format!("{V3}/register/available?username=a2")).await,
    );
    assert_limited("profile", &stranger.get(&format!("{V3}/profile/@alice:localhost")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_11_uia_password_guesses_are_rate_limited() {
    let mut config = limits_on();
    config.rate_limits.uia_password = tight(3.0);
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let (alice, _) = user(&server, "alice").await;
    let path = format!("{V3}/delete_devices");
    let attempt = |password: &str| {
        json!({"devices": ["NONE"], "auth": {"type": "m.login.password", "password": password,
               "identifier": {"type": "m.id.user", "user": "alice"}}})
    };
    for guess in ["a", "b", "c"] {
        let (status, body) = alice.post(&path, &attempt(guess)).await;
        assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"), "{body}");
    }
    assert_limited("password stage", &alice.post(&path, &attempt("pw")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_11_a_full_hashing_queue_answers_429_and_long_passwords_are_refused() {
    let mut config = TestHomeserver::config();
    config.limits.password_hash_queue = 1;
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    for i in 0..8 {
        server.homeserver().create_user(&format!("u{i}"), Some("pw"), false).await.expect("made");
    }
    let client = Client::new(&server);
    let login = |i: usize| {
        let client = client.clone();
        async move {
            let body = json!({"type": "m.login.password", "password": "pw",
                              "identifier": {"type": "m.id.user", "user": format!("u{}", i % 8)}});
            client.post(&format!("{V3}/login"), &body).await
        }
    };
    let answers = futures_join(32, login).await;
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!refused.is_empty(), "a queue of one never filled");
    for answer in &refused {
        assert_limited("login", answer);
    }
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 429, "{status} {body}");
    }
    // The queue drains: a login afterwards works.
    assert_ok("login", &login(0).await);

    // A password longer than the bound is not hashed at all.
    let long = "p".repeat(513);
    let body = json!({"type": "m.login.password", "password": long,
                      "identifier": {"type": "m.id.user", "user": "u0"}});
    let (status, body) = client.post(&format!("{V3}/login"), &body).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

/// Runs `n` requests at once and collects their answers.
async fn futures_join<F, Fut>(n: usize, make: F) -> Vec<(u16, Value)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("the request task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_46_profile_fields_are_bounded_and_changes_rate_limited() {
    let mut config = limits_on();
    config.rate_limits.profile = tight(3.0);
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let (alice, alice_id) = user(&server, "alice").await;
    let name = format!("{V3}/profile/{alice_id}/displayname");
    let avatar = format!("{V3}/profile/{alice_id}/avatar_url");
    let long = json!({"displayname": "é".repeat(257)});
    assert_error("long name", &put(&alice, &name, long).await, (400, "M_PROFILE_TOO_LARGE"));
    let url = format!("mxc://localhost/{}", "a".repeat(1000));
    let answer = put(&alice, &avatar, json!({"avatar_url": url})).await;
    assert_error("long avatar", &answer, (400, "M_PROFILE_TOO_LARGE"));
    assert_ok("name", &put(&alice, &name, json!({"displayname": "é".repeat(256)})).await);
    assert_ok("avatar", &put(&alice, &avatar, json!({"avatar_url": "mxc://localhost/a"})).await);
    assert_ok("name", &put(&alice, &name, json!({"displayname": "Alice"})).await);
    assert_limited("profile", &put(&alice, &name, json!({"displayname": "Spam"})).await);
}

async fn upload(server: &TestHomeserver, token: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload", server.base_url()))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_40_media_uploads_are_rate_limited_and_quota_bound() {
    let mut config = limits_on();
    config.rate_limits.media_upload = tight(4.0);
    config.limits.media_quota_bytes = 1000;
    config.limits.max_media_bytes = 800;
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    let alice = server.register_user("alice", "pw").await;
    let token = &alice.access_token;
    assert_ok("first", &upload(&server, token, vec![1; 600]).await);
    // Over the quota (600 + 600 > 1000): refused, and nothing counted.
    assert_error("quota", &upload(&server, token, vec![2; 600]).await, (403, "M_FORBIDDEN"));
    // Over the size limit: refused on its declared length.
    assert_error("size", &upload(&server, token, vec![3; 900]).await, (413, "M_TOO_LARGE"));
    assert_ok("within the quota", &upload(&server, token, vec![4; 400]).await);
    assert_limited("rate", &upload(&server, token, vec![5; 1]).await);
    // Another user has a quota of their own.
    let bob = server.register_user("bob", "pw").await;
    assert_ok("bob", &upload(&server, &bob.access_token, vec![6; 600]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_40_41_uploads_stream_to_a_synced_file_and_leave_nothing_when_refused() {
    let dir = tempfile::tempdir().expect("a directory");
    let media = dir.path().join("media");
    let mut config = TestHomeserver::config();
    config.limits.media_path = Some(media.clone());
    config.limits.max_media_bytes = 800;
    config.http.media_upload_timeout_secs = 1;
    let server = crate::start_with(crate::Backend::Sled, config).await.expect("sled");
    let alice = server.register_user("alice", "pw").await;
    let (status, body) = upload(&server, &alice.access_token, b"durable bytes".to_vec()).await;
    assert_eq!(status, 200, "{body}");
    let uri = body["content_uri"].as_str().expect("a uri");
    let id = uri.rsplit('/').next().expect("an id").to_owned();
    let sha256 = server.storage().media(&id).await.expect("reads").expect("kept").sha256;
    let sha256 = sha256.expect("content addressed");
    assert!(media.join("content").join(&sha256).is_file());
    let response = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/download/localhost/{id}", server.base_url()))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.bytes().await.expect("a body").as_ref(), b"durable bytes");

    // A chunked body (no declared length) over the limit, and one that stalls: refused, and
    // their partly written files are gone.
    let over = format!("{:x}\r\n{}\r\n0\r\n\r\n", 900, "x".repeat(900));
    let status = raw_upload(&server, &alice.access_token, &over).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));
    let stalled = format!("{:x}\r\n{}\r\n", 10, "y".repeat(10));
    let status = raw_upload(&server, &alice.access_token, &stalled).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"));
    let mut names = Vec::new();
    for dir in ["content", "tmp"] {
        let mut entries = tokio::fs::read_dir(media.join(dir)).await.expect("a media directory");
        while let Some(entry) = entries.next_entry().await.expect("an entry") {
            names.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
    }
    assert_eq!(names, [format!("content/{sha256}")], "only the finished upload is kept");
}

/// A chunked upload written over raw TCP; answers the status line.
async fn raw_upload(server: &TestHomeserver, token: &str, chunks: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base_url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    let request = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunks}"
    );
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    String::from_utf8_lossy(&answer).lines().next().map(str::to_owned)
}
