//! OpenID tokens (both sides), `/voip/turnServer`, `/thirdparty/*` and the 3PID endpoints,
//! with their failure cases.

use serde_json::{Value, json};

use crate::{Backend, Client, errcode, on_every_backend, start, start_changed};

on_every_backend!(
    openid_tokens_vouch_for_their_owner_only,
    turn_server_from_a_shared_secret_and_without_one,
    thirdparty_knows_no_protocol,
    threepids_are_refused_with_the_reason,
);

/// `GET /_matrix/federation/v1/openid/userinfo` on the server's federation listener (plain
/// HTTP on a loopback port).
async fn userinfo(homeserver: &matrix_homeserver::Homeserver, query: &str) -> (u16, Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(homeserver.clone().serve_federation(listener, None, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{address}/_matrix/federation/v1/openid/userinfo{query}");
    let response = reqwest::get(url).await.expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    let _ = stop.send(());
    let _ = serving.await;
    (status, body)
}

async fn openid_tokens_vouch_for_their_owner_only(backend: Backend) {
    let Some(server) = start_changed(backend, |c| c.federation.enabled = true).await else {
        return;
    };
    let alice = server.register_user("alice", "secret-pw").await;
    let bob = server.register_user("bob", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", alice.user_id);
    let (status, body) = client.post(&path, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    crate::spec::check("openid.yaml", "/user/{userId}/openid/request_token", "post", 200, &body);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["matrix_server_name"], server.server_name());
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().expect("a token").to_owned();
    assert!(token.len() >= 32, "{token}");

    // The third party asks who it is.
    let (status, info) = userinfo(server.homeserver(), &format!("?access_token={token}")).await;
    assert_eq!(status, 200, "{info}");
    crate::spec::check_federation("openid.yaml", "/openid/userinfo", "get", 200, &info);
    assert_eq!(info, json!({"sub": alice.user_id.as_str()}));

    // Unknown, missing, or an access token rather than an OpenID token.
    let (status, info) = userinfo(server.homeserver(), "?access_token=nope").await;
    assert_eq!((status, errcode(&info)), (401, "M_UNKNOWN_TOKEN"), "{info}");
    let (status, info) =
        userinfo(server.homeserver(), &format!("?access_token={}", alice.access_token)).await;
    assert_eq!((status, errcode(&info)), (401, "M_UNKNOWN_TOKEN"), "{info}");
    let (status, info) = userinfo(server.homeserver(), "").await;
    assert_eq!((status, errcode(&info)), (400, "M_MISSING_PARAM"), "{info}");

    // An expired token is unknown (written as expired straight into storage).
    let mut changes = matrix_storage::ChangeSet::new();
    let hash = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"expired-token");
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    changes.openid_tokens.push((
        hash,
        matrix_storage::OpenIdToken { user_id: alice.user_id.to_string(), expires_ts: 1 },
    ));
    server.storage().apply(changes).await.expect("stored");
    let (status, info) = userinfo(server.homeserver(), "?access_token=expired-token").await;
    assert_eq!((status, errcode(&info)), (401, "M_UNKNOWN_TOKEN"), "{info}");
    // ... and deleted when the next token is handed out.
    let (status, _) = client.post(&path, &json!({})).await;
    assert_eq!(status, 200);
    assert!(
        server.storage().expired_openid_tokens(u64::MAX / 2, 10).await.expect("reads").len() <= 2
    );

    // Only for oneself; a token is needed; the body must be an object.
    let other = format!("/_matrix/client/v3/user/{}/openid/request_token", bob.user_id);
    let (status, body) = client.post(&other, &json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = Client::new(&server).post(&path, &json!({})).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    let (status, body) = client.post(&path, &json!([1])).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");
    let (status, body) = client.post_raw(&path, b"{".to_vec()).await;
    assert_eq!((status, errcode(&body)), (400, "M_NOT_JSON"), "{body}");
    let bad = "/_matrix/client/v3/user/not-a-user/openid/request_token";
    let (status, body) = client.post(bad, &json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

async fn turn_server_from_a_shared_secret_and_without_one(backend: Backend) {
    // Without settings: `{}`, as Synapse.
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let (status, body) = client.get("/_matrix/client/v3/voip/turnServer").await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = Client::new(&server).get("/_matrix/client/v3/voip/turnServer").await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    drop(server);

    // A shared secret: coturn's REST API credentials.
    let uris = vec!["turn:turn.example.org:3478?transport=udp".to_owned()];
    let Some(server) = start_changed(backend, |c| {
        c.turn.uris = uris.clone();
        c.turn.shared_secret = Some("north".to_owned());
        c.turn.ttl_secs = 86_400;
    })
    .await
    else {
        return;
    };
    let alice = server.register_user("alice", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (status, body) = client.get("/_matrix/client/v3/voip/turnServer").await;
    assert_eq!(status, 200, "{body}");
    crate::spec::check("voip.yaml", "/voip/turnServer", "get", 200, &body);
    let username = body["username"].as_str().expect("a username");
    let (expiry, user) = username.split_once(':').expect("{expiry}:{user}");
    assert_eq!(user, alice.user_id.as_str());
    let expiry: u64 = expiry.parse().expect("a number");
    assert!((before + 86_400..=before + 86_400 + 5).contains(&expiry), "{expiry}");
    assert_eq!(body["ttl"], 86_400);
    assert_eq!(body["uris"], json!(uris));
    // The password is base64(HMAC-SHA1(secret, username)), computed here apart from the
    // server's code; that computation is checked against a known vector (Python's
    // `base64.b64encode(hmac.new(b"north", b"1700000000:@alice:example.org", sha1).digest())`).
    assert_eq!(
        turn_password("north", "1700000000:@alice:example.org"),
        "b7c/MWmorxmLryRFjaJYkUW5nOo="
    );
    assert_eq!(body["password"], turn_password("north", username));

    // A fixed username and password, no secret.
    drop(server);
    let Some(server) = start_changed(backend, |c| {
        c.turn.uris = vec!["turns:turn.example.org:443?transport=tcp".to_owned()];
        c.turn.username = Some("fixed".to_owned());
        c.turn.password = Some("pass".to_owned());
    })
    .await
    else {
        return;
    };
    let alice = server.register_user("alice", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let (status, body) = client.get("/_matrix/client/v3/voip/turnServer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "fixed");
    assert_eq!(body["password"], "pass");
    assert_eq!(body["ttl"], 3600);
}

/// The TURN REST API password: base64(HMAC-SHA1(secret, username)), written out here apart
/// from the server's code.
fn turn_password(secret: &str, username: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret.as_bytes());
    let inner: Vec<u8> = key.iter().map(|b| b ^ 0x36).chain(username.bytes()).collect();
    let inner = sha1::Sha1::digest(&inner);
    let outer: Vec<u8> = key.iter().map(|b| b ^ 0x5c).chain(inner.iter().copied()).collect();
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&outer))
}

async fn thirdparty_knows_no_protocol(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    const T: &str = "/_matrix/client/v3/thirdparty";
    let (status, body) = client.get(&format!("{T}/protocols")).await;
    assert_eq!((status, &body), (200, &json!({})));
    crate::spec::check("third_party_lookup.yaml", "/thirdparty/protocols", "get", 200, &body);
    for path in ["protocol/irc", "location/irc?channel=%23a", "user/irc?nick=x"] {
        let (status, body) = client.get(&format!("{T}/{path}")).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{path}: {body}");
    }
    let (status, body) = client.get(&format!("{T}/location?alias=%23a:example.org")).await;
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = client.get(&format!("{T}/user?userid=@a:example.org")).await;
    assert_eq!((status, body), (200, json!([])));
    // Bad input.
    let (status, body) = client.get(&format!("{T}/location")).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    let (status, body) = client.get(&format!("{T}/location?alias=nope")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = client.get(&format!("{T}/user?userid=nope")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let many: Vec<String> = (0..40).map(|i| format!("f{i}=x")).collect();
    let (status, body) = client.get(&format!("{T}/user/irc?{}", many.join("&"))).await;
    assert_eq!((status, errcode(&body)), (400, "M_TOO_LARGE"), "{body}");
    let (status, body) = Client::new(&server).get(&format!("{T}/protocols")).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
}

async fn threepids_are_refused_with_the_reason(backend: Backend) {
    let Some(server) = start(backend).await else { return };
    let alice = server.register_user("alice", "secret-pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    const A: &str = "/_matrix/client/v3/account";
    let (status, body) = client.get(&format!("{A}/3pid")).await;
    assert_eq!((status, &body), (200, &json!({"threepids": []})));
    crate::spec::check("administrative_contact.yaml", "/account/3pid", "get", 200, &body);
    let (status, body) = Client::new(&server).get(&format!("{A}/3pid")).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");

    let email = json!({"client_secret": "s3cret", "email": "a@example.org", "send_attempt": 1});
    let phone = json!({"client_secret": "s3cret", "country": "GB", "phone_number": "07700900001",
        "send_attempt": 1});
    let cases = [
        (format!("{A}/3pid/email/requestToken"), &email, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
        (format!("{A}/3pid/msisdn/requestToken"), &phone, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
        (
            "/_matrix/client/v3/register/email/requestToken".to_owned(),
            &email,
            403,
            "M_THREEPID_DENIED",
        ),
        (
            "/_matrix/client/v3/register/msisdn/requestToken".to_owned(),
            &phone,
            403,
            "M_THREEPID_DENIED",
        ),
        (format!("{A}/password/email/requestToken"), &email, 403, "M_THREEPID_DENIED"),
        (format!("{A}/password/msisdn/requestToken"), &phone, 403, "M_THREEPID_DENIED"),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, answer) = client.post(&path, body).await;
        assert_eq!((status, errcode(&answer)), (want_status, want_code), "{path}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("no")), "a reason: {answer}");
        // A malformed body is said so first.
        let (status, answer) = client.post(&path, &json!({"email": 1})).await;
        assert_eq!((status, errcode(&answer)), (400, "M_BAD_JSON"), "{path}: {answer}");
    }
    let (status, body) = client
        .post(
            &format!("{A}/3pid/email/requestToken"),
            &json!({"client_secret": "bad secret!",
            "email": "a@example.org", "send_attempt": 1}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    let (status, body) =
        client.post(&format!("{A}/3pid/add"), &json!({"client_secret": "s", "sid": "1"})).await;
    assert_eq!((status, errcode(&body)), (400, "M_THREEPID_AUTH_FAILED"), "{body}");
    let creds = json!({"three_pid_creds": {"client_secret": "s", "sid": "1"}});
    let (status, body) = client.post(&format!("{A}/3pid"), &creds).await;
    assert_eq!((status, errcode(&body)), (400, "M_THREEPID_AUTH_FAILED"), "{body}");
    let bind = json!({"client_secret": "s", "id_access_token": "t", "id_server": "id.example.org",
        "sid": "1"});
    let (status, body) = client.post(&format!("{A}/3pid/bind"), &bind).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    for path in ["3pid/unbind", "3pid/delete"] {
        let body = json!({"medium": "email", "address": "a@example.org"});
        let (status, answer) = client.post(&format!("{A}/{path}"), &body).await;
        assert_eq!((status, &answer), (200, &json!({"id_server_unbind_result": "no-support"})));
        let body = json!({"medium": "pigeon", "address": "a"});
        let (status, answer) = client.post(&format!("{A}/{path}"), &body).await;
        assert_eq!((status, errcode(&answer)), (400, "M_INVALID_PARAM"), "{answer}");
        let (status, answer) = Client::new(&server).post(&format!("{A}/{path}"), &body).await;
        assert_eq!((status, errcode(&answer)), (401, "M_MISSING_TOKEN"), "{answer}");
    }
}
