//! Server keys across implementations: Synapse's key server answers us, and Synapse, as a
//! notary, fetches our keys from our federation listener over TLS and hands them on signed.

use matrix_core::signing::verify_json;
use matrix_core::{KeyRing, Object, PublicKey};
use serde_json::{Value, json};

use crate::client::{federation_client, request};
use crate::ours::{OurServer, free_port};
use crate::synapse::Synapse;

/// A `/_matrix/key/v2/server` answer read into matrix-core's JSON (for signature checks).
fn to_object(value: &Value) -> Object {
    let bytes = serde_json::to_vec(value).expect("serialises");
    match matrix_core::json::parse_strict(&bytes).expect("canonical-JSON compatible") {
        matrix_core::Value::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

/// Checks a server's own key answer (`GET /_matrix/key/v2/server`): it names `server`, is
/// still valid, and is signed by every key it lists. Answers the keys it lists, as
/// `(key id, unpadded base64 key)`, and a key ring holding them.
fn check_self_signed(server: &str, answer: &Value) -> (Vec<(String, String)>, KeyRing) {
    assert_eq!(answer["server_name"], server, "{answer}");
    let valid_until = answer["valid_until_ts"].as_u64().expect("valid_until_ts");
    assert!(valid_until > crate::now_millis(), "expired keys: {answer}");
    let verify_keys = answer["verify_keys"].as_object().expect("verify_keys");
    assert!(!verify_keys.is_empty(), "no keys: {answer}");
    let mut ring = KeyRing::new();
    let mut keys = Vec::new();
    for (key_id, key) in verify_keys {
        assert!(key_id.starts_with("ed25519:"), "key id {key_id}");
        let text = key["key"].as_str().expect("a key").to_owned();
        let public = PublicKey::from_base64(&text).expect("an ed25519 public key");
        ring.insert(server, key_id, public);
        keys.push((key_id.clone(), text));
    }
    verify_json(&to_object(answer), server, &ring).expect("signed by its own keys");
    (keys, ring)
}

/// Synapse's key server answers over TLS with its keys, signed by them, and its federation
/// listener says it is Synapse.
#[tokio::test]
async fn synapse_key_server_answers() {
    let Some(synapse) = Synapse::from_env() else { return };
    let (status, answer) = synapse.federation_get("/_matrix/key/v2/server").await;
    assert_eq!(status, 200, "{answer}");
    check_self_signed(&synapse.server_name, &answer);

    let (status, version) = synapse.federation_get("/_matrix/federation/v1/version").await;
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["server"]["name"], "Synapse", "{version}");
}

/// Synapse, asked as a notary for our key, fetches it from our federation listener (TLS,
/// self-signed certificate, IP:port server name) and answers it with our signature and its
/// own. Needs our federation listener.
#[tokio::test]
async fn synapse_fetches_our_server_keys() {
    let Some(synapse) = Synapse::from_env() else { return };
    let ours = OurServer::start().await;
    let url = format!("{}/_matrix/key/v2/server", ours.federation_url);
    let (status, own) = request(&federation_client(), reqwest::Method::GET, &url, None, None).await;
    assert_eq!(status, 200, "our key server: {own}");
    let (our_keys, our_ring) = check_self_signed(&ours.server_name, &own);
    let (key_id, key) = our_keys.first().expect("one key at least").clone();

    let (status, synapse_own) = synapse.federation_get("/_matrix/key/v2/server").await;
    assert_eq!(status, 200, "{synapse_own}");
    let (_, synapse_ring) = check_self_signed(&synapse.server_name, &synapse_own);

    // A key id in the query makes Synapse fetch on a cache miss (a bare
    // `GET /query/{server}` answers only what it has); it insists on minimum_valid_until_ts.
    let query = json!({"server_keys": {&ours.server_name: {&key_id: {
        "minimum_valid_until_ts": crate::now_millis()}}}});
    let (status, answer) = synapse.federation_post("/_matrix/key/v2/query", &query).await;
    assert_eq!(status, 200, "{answer}");
    let found: Vec<&Value> = answer["server_keys"]
        .as_array()
        .expect("server_keys")
        .iter()
        .filter(|keys| keys["server_name"] == ours.server_name.as_str())
        .collect();
    let [notarised] = found[..] else {
        panic!(
            "Synapse did not fetch our keys: {answer}\nour log:\n{}\n(Synapse's log is \
             SYNAPSE_LOG)",
            ours.log_text()
        )
    };
    assert_eq!(notarised["verify_keys"][&key_id]["key"], key.as_str(), "{notarised}");
    let object = to_object(notarised);
    verify_json(&object, &ours.server_name, &our_ring).expect("still signed by us");
    verify_json(&object, &synapse.server_name, &synapse_ring).expect("signed by Synapse");
}

/// Asked for the keys of a server that is not there, Synapse answers none (and no error).
#[tokio::test]
async fn synapse_has_no_keys_for_a_server_that_is_not_there() {
    let Some(synapse) = Synapse::from_env() else { return };
    let absent = format!("127.0.0.1:{}", free_port());
    let query = json!({"server_keys": {&absent: {"ed25519:a": {
        "minimum_valid_until_ts": crate::now_millis()}}}});
    let (status, answer) = synapse.federation_post("/_matrix/key/v2/query", &query).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["server_keys"], json!([]), "{answer}");
}
