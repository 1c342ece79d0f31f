//! `/versions`, `/.well-known`, `/capabilities`, unknown endpoints.

use matrix_homeserver::testing::TestHomeserver;
use matrix_homeserver::{Config, SupportContact};
use serde_json::json;

use crate::spec::check;
use crate::{Client, errcode};

#[tokio::test]
async fn versions_lists_spec_versions() {
    let server = TestHomeserver::start().await;
    let (status, body) = Client::new(&server).get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    check("versions.yaml", "/versions", "get", 200, &body);
    let versions = body["versions"].as_array().expect("a list");
    assert!(versions.iter().any(|v| v == "v1.1"), "{body}");
}

#[tokio::test]
async fn well_known_is_404_unless_configured() {
    let server = TestHomeserver::start().await;
    let client = Client::new(&server);
    let (status, body) = client.get("/.well-known/matrix/client").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    let mut config = Config::new("example.org");
    config.well_known.client_base_url = Some("https://matrix.example.org".into());
    config.well_known.server = Some("matrix.example.org:443".into());
    let server = TestHomeserver::start_with(config).await;
    let client = Client::new(&server);
    let (status, body) = client.get("/.well-known/matrix/client").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"m.homeserver": {"base_url": "https://matrix.example.org"}}));
    check("wellknown.yaml", "/matrix/client", "get", 200, &body);
    let (status, body) = client.get("/.well-known/matrix/server").await;
    assert_eq!((status, body), (200, json!({"m.server": "matrix.example.org:443"})));
    let (status, body) = client.get("/.well-known/matrix/support").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "no contacts configured");
}

#[tokio::test]
async fn support_contacts_are_served_as_configured_and_checked() {
    let mut config = Config::new("example.org");
    config.well_known.support_contacts = vec![
        SupportContact::new("m.role.admin", Some("@admin:elsewhere.org".into()), None),
        SupportContact::new("m.role.security", None, Some("security@example.org".into())),
    ];
    config.well_known.support_page = Some("https://example.org/help".into());
    let server = TestHomeserver::start_with(config.clone()).await;
    let (status, body) = Client::new(&server).get("/.well-known/matrix/support").await;
    assert_eq!(status, 200, "{body}");
    check("support.yaml", "/matrix/support", "get", 200, &body);
    assert_eq!(
        body,
        json!({"contacts": [{"role": "m.role.admin", "matrix_id": "@admin:elsewhere.org"},
                            {"role": "m.role.security",
                             "email_address": "security@example.org"}],
               "support_page": "https://example.org/help"})
    );
    // A contact with no way to reach anyone, or a page that is no URL: the server does not
    // start.
    let storage = || std::sync::Arc::new(matrix_storage::memory::MemoryStore::new());
    let mut unreachable = config.clone();
    unreachable.well_known.support_contacts.push(SupportContact::new("m.role.admin", None, None));
    let refused = matrix_homeserver::Homeserver::builder()
        .config(unreachable)
        .storage(storage())
        .build()
        .await;
    assert!(refused.is_err_and(|e| e.to_string().contains("neither")));
    let mut page = config;
    page.well_known.support_page = Some("javascript:alert(1)".into());
    let refused =
        matrix_homeserver::Homeserver::builder().config(page).storage(storage()).build().await;
    assert!(refused.is_err_and(|e| e.to_string().contains("support_page")));
}

#[tokio::test]
async fn capabilities_need_a_token_and_list_room_versions() {
    let server = TestHomeserver::start().await;
    let (status, body) = Client::new(&server).get("/_matrix/client/v3/capabilities").await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
    let alice = server.register_user("alice", "pw").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let (status, body) = client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(status, 200, "{body}");
    check("capabilities.yaml", "/capabilities", "get", 200, &body);
    let versions = &body["capabilities"]["m.room_versions"];
    assert_eq!(versions["default"], "12");
    assert_eq!(versions["available"].as_object().expect("a map").len(), 12);
    assert_eq!(versions["available"]["1"], "stable");
    // What is refused is said so; profile fields: only the two kept.
    let capabilities = &body["capabilities"];
    assert_eq!(capabilities["m.3pid_changes"]["enabled"], false);
    assert_eq!(capabilities["m.get_login_token"]["enabled"], false);
    assert_eq!(
        capabilities["m.profile_fields"],
        json!({"enabled": true, "allowed": ["displayname", "avatar_url"]})
    );
}

#[tokio::test]
async fn profile_fields_are_set_and_deleted_by_their_owner_only() {
    let server = TestHomeserver::start().await;
    let alice = server.register_user("alice", "pw").await;
    let bob = server.register_user("bob", "pw").await;
    let alice_client = Client::new(&server).with_token(&alice.access_token);
    let bob_client = Client::new(&server).with_token(&bob.access_token);
    let field = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    let (status, _) = alice_client.put(&field, &json!({"displayname": "Alice"})).await;
    assert_eq!(status, 200);
    let (status, body) = alice_client.get(&field).await;
    assert_eq!((status, body), (200, json!({"displayname": "Alice"})));
    // Someone else may not delete it.
    let (status, body) = bob_client.send(reqwest::Method::DELETE, &field, None).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = alice_client.send(reqwest::Method::DELETE, &field, None).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice_client.get(&field).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    // Fields other than the two kept are refused, set or deleted.
    let custom = format!("/_matrix/client/v3/profile/{}/m.tz", alice.user_id);
    let (status, body) = alice_client.put(&custom, &json!({"m.tz": "Europe/Paris"})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = alice_client.send(reqwest::Method::DELETE, &custom, None).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

#[tokio::test]
async fn unknown_endpoints_and_methods_are_unrecognized() {
    let server = TestHomeserver::start().await;
    let client = Client::new(&server);
    let (status, body) = client.get("/_matrix/client/v3/nonsense").await;
    assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"));
    let (status, body) = client.post("/_matrix/client/versions", &json!({})).await;
    assert_eq!((status, errcode(&body)), (405, "M_UNRECOGNIZED"));
}

#[tokio::test]
async fn client_routes_answer_cors_preflights() {
    let server = matrix_homeserver::testing::TestHomeserver::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/_matrix/client/v3/createRoom", server.base_url());
    let response = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("answers");
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"].to_str().expect("text").to_owned();
    assert!(methods.contains("POST") && methods.contains("PUT"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().expect("text").to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    // And ordinary answers carry the origin header too.
    let versions = http
        .get(format!("{}/_matrix/client/versions", server.base_url()))
        .header("origin", "https://app.element.io")
        .send()
        .await
        .expect("answers");
    assert_eq!(versions.headers()["access-control-allow-origin"], "*");
}
