//! Logins behind a reverse proxy, password guessing spread over many addresses, and tokens
//! that outlive their account (findings 9 and 32 of the security review).

use std::sync::Arc;

use matrix_homeserver::testing::TestHomeserver;
use serde_json::{Value, json};

use crate::abuse_limits::{assert_limited, limits_on, tight};
use crate::errcode;

const LOGIN: &str = "/_matrix/client/v3/login";

/// `POST /login` as a client behind a proxy that wrote `forwarded` in `X-Forwarded-For`.
async fn login_via(server: &TestHomeserver, forwarded: &str, user: &str, pw: &str) -> (u16, Value) {
    let body = json!({"type": "m.login.password", "password": pw,
                      "identifier": {"type": "m.id.user", "user": user}});
    let response = reqwest::Client::new()
        .post(format!("{}{LOGIN}", server.base_url()))
        .header("x-forwarded-for", forwarded)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_forwarded_for_is_believed_only_from_trusted_proxies() {
    let mut config = limits_on();
    config.rate_limits.login = tight(2.0);
    config.http.trusted_proxies = vec!["127.0.0.0/8".parse().expect("a network")];
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    // Behind the trusted proxy, each client has its own bucket: one attacker does not lock
    // everyone out. (Unknown users, so the per-account limits stay out of the way.)
    for i in 0..2 {
        let (status, body) = login_via(&server, "203.0.113.7", &format!("x{i}"), "pw").await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    }
    assert_limited("attacker", &login_via(&server, "203.0.113.7", "x3", "pw").await);
    // Addresses the client wrote itself (left of the proxy's entry) change nothing.
    let spoofed = "198.51.100.1, 203.0.113.7";
    assert_limited("spoofed", &login_via(&server, spoofed, "x4", "pw").await);
    let (status, body) = login_via(&server, "203.0.113.8", "x5", "pw").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "another client: {body}");

    // Without a trusted proxy, the header is the client's own word and is ignored.
    let mut config = limits_on();
    config.rate_limits.login = tight(2.0);
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    for i in 0..2 {
        let (status, _) = login_via(&server, &format!("192.0.2.{i}"), &format!("y{i}"), "pw").await;
        assert_eq!(status, 403);
    }
    assert_limited("untrusted", &login_via(&server, "192.0.2.99", "y9", "pw").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_password_guesses_spread_over_addresses_are_limited_per_account() {
    let mut config = limits_on();
    config.rate_limits.login_failed = tight(3.0);
    config.http.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    let server = crate::start_with(crate::Backend::Memory, config).await.expect("memory");
    server.register_user("alice", "right").await;
    server.register_user("bob", "right").await;
    for i in 0..3 {
        let (status, body) = login_via(&server, &format!("2001:db8:{i}::1"), "alice", "no").await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    }
    // From yet another address, even the right password waits until the bucket refills.
    assert_limited(
        "alice",
        &login_via(&server, "2001:db8:99::1", "@alice:localhost", "right").await,
    );
    // Other accounts are not affected.
    let (status, body) = login_via(&server, "2001:db8:99::1", "bob", "right").await;
    assert_eq!(status, 200, "{body}");
}

async fn finding_32_tokens_of_deactivated_users_are_refused(backend: crate::Backend) {
    let Some((server, storage)) = start_keeping_storage(backend).await else { return };
    let alice = server.register_user("alice", "pw").await;
    let client = crate::Client::new(&server).with_token(&alice.access_token);
    let body = json!({"auth": {"type": "m.login.password", "password": "pw",
                               "identifier": {"type": "m.id.user", "user": "alice"}}});
    let (status, body) = client.post("/_matrix/client/v3/account/deactivate", &body).await;
    assert_eq!(status, 200, "{body}");
    // A login that raced the deactivation wrote its session after the devices were deleted:
    // the token exists in storage, for a deactivated account.
    let token = "mht_raced_login_token";
    let mut changes = matrix_storage::ChangeSet::new();
    changes.devices.push(matrix_storage::Device {
        user_id: alice.user_id.to_string(),
        device_id: "RACED".to_owned(),
        display_name: None,
    });
    let key: String = {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    changes.new_tokens.push((
        key,
        matrix_storage::TokenOwner {
            user_id: alice.user_id.to_string(),
            device_id: "RACED".to_owned(),
        },
    ));
    storage.apply(changes).await.expect("stored");
    let raced = crate::Client::new(&server).with_token(token);
    let (status, body) = raced.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{body}");
}

/// A test server whose storage the test can write to as well.
async fn start_keeping_storage(
    backend: crate::Backend,
) -> Option<(crate::Server, Arc<dyn matrix_storage::Storage>)> {
    let (storage, dir) = crate::open_storage(backend).await?;
    let server = TestHomeserver::start_on(TestHomeserver::config(), storage.clone()).await;
    Some((crate::Server::new(server, dir), storage))
}

crate::on_every_backend!(finding_32_tokens_of_deactivated_users_are_refused);
