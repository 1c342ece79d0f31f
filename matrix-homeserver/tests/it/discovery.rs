//! `/versions`, `/.well-known`, `/capabilities`, unknown endpoints.

use matrix_homeserver::Config;
use matrix_homeserver::testing::TestHomeserver;
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
