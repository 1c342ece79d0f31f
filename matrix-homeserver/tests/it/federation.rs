//! Federation between in-process homeservers (`TestFederation`): keys, signed requests,
//! queries, joins.

use matrix_homeserver::matrix_federation::FederationError;
use matrix_homeserver::testing::TestFederation;

#[tokio::test]
async fn servers_fetch_each_others_keys_and_sign_their_requests() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let client = b.federation_client().expect("federation is on");

    // a's key response, as b checks it.
    let keys = client.server_keys("a.test").await.expect("a answers");
    let checked = matrix_homeserver::matrix_federation::keys::verify_server_keys(&keys, "a.test")
        .expect("a's response is self-signed");
    assert_eq!(checked.server_name, "a.test");

    // A signed query: a fetches b's key to check it.
    let alice = a.register_user("alice", "pw").await;
    let url = format!("{}/_matrix/client/v3/profile/@alice:a.test/displayname", a.base_url());
    let set = reqwest::Client::new()
        .put(url)
        .bearer_auth(&alice.access_token)
        .json(&serde_json::json!({ "displayname": "Alice" }))
        .send()
        .await
        .expect("a answers");
    assert!(set.status().is_success());
    let profile = client
        .query_profile("a.test", "@alice:a.test", None)
        .await
        .expect("b may ask a for its user's profile");
    assert_eq!(profile.get_str("displayname"), Some("Alice"));
    let missing = client.query_profile("a.test", "@nobody:a.test", None).await;
    assert!(matches!(missing, Err(FederationError::Status { status: 404, .. })), "{missing:?}");

    // The notary: a answers for b's keys, signed by both.
    let mut asked = matrix_core::Object::new();
    asked.insert("b.test", matrix_core::Object::new());
    let notary = client.query_keys("a.test", asked).await;
    let notary = notary.expect("a answers as a notary");
    let list = notary.get("server_keys").and_then(|v| v.as_array()).expect("a list");
    assert_eq!(list.len(), 1);
    let signatures = list[0].as_object().and_then(|o| o.get_object("signatures")).expect("signed");
    assert!(signatures.contains_key("a.test") && signatures.contains_key("b.test"));
}

#[tokio::test]
async fn a_join_template_is_given_only_to_the_users_own_server() {
    let net = TestFederation::start(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (net.server("a.test"), net.server("b.test"), net.server("c.test"));
    let alice = a.register_user("alice", "pw").await;
    let room = a.create_room(&alice, Some("Tea")).await;
    let b_client = b.federation_client().expect("federation is on");
    let versions = ["10", "11", "12"];

    // The room is private (invite only): the authorization rules refuse bob's join.
    let refused = b_client.make_join("a.test", &room, "@bob:b.test", &versions).await;
    assert!(matches!(refused, Err(FederationError::Status { status: 403, .. })), "{refused:?}");

    // c cannot ask for b's user, whatever the room.
    let c_client = c.federation_client().expect("federation is on");
    let forged = c_client.make_join("a.test", &room, "@bob:b.test", &versions).await;
    assert!(matches!(forged, Err(FederationError::Status { status: 403, .. })), "{forged:?}");

    // A server that supports no version of the room.
    let old = b_client.make_join("a.test", &room, "@bob:b.test", &["1"]).await;
    match old {
        Err(e) => assert_eq!(e.errcode().as_deref(), Some("M_INCOMPATIBLE_ROOM_VERSION")),
        Ok(body) => panic!("a template for an unsupported version: {body:?}"),
    }
    // An unknown room.
    let unknown = b_client.make_join("a.test", "!nope:a.test", "@bob:b.test", &versions).await;
    assert!(matches!(unknown, Err(FederationError::Status { status: 404, .. })), "{unknown:?}");
}
