//! The spec's cryptographic test vectors (appendices, "Cryptographic Test Vectors").

use matrix_core::{
    KeyRing, Object, RoomVersionRules, SigningKey, Verified, hash, json, redaction, signing,
};

const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

fn key() -> SigningKey {
    SigningKey::from_base64_seed("1", SEED).expect("the spec's seed decodes")
}

fn object(text: &str) -> Object {
    json::parse_strict(text.as_bytes()).expect("valid JSON").as_object().cloned().expect("object")
}

fn signature(object: &Object) -> &str {
    object
        .get_object("signatures")
        .and_then(|s| s.get_object("domain"))
        .and_then(|s| s.get_str("ed25519:1"))
        .expect("a signature by domain")
}

fn keyring() -> KeyRing {
    let mut keys = KeyRing::new();
    keys.insert("domain", "ed25519:1", key().public_key());
    keys
}

#[test]
fn sign_empty_object() {
    let mut empty = Object::new();
    signing::sign_json(&mut empty, "domain", &key());
    assert_eq!(
        signature(&empty),
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
    );
    signing::verify_json(&empty, "domain", &keyring()).expect("verifies");
}

#[test]
fn sign_object_with_data() {
    let mut data = object(r#"{"one": 1, "two": "Two"}"#);
    signing::sign_json(&mut data, "domain", &key());
    assert_eq!(
        signature(&data),
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
    );
    assert_eq!(
        format!("{data:?}"),
        r#"{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}"#
    );
    signing::verify_json(&data, "domain", &keyring()).expect("verifies");
    data.insert("two", "Three");
    assert!(signing::verify_json(&data, "domain", &keyring()).is_err());
}

const MINIMAL_EVENT: &str = r#"{
    "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
    "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
    "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
    "unsigned": {"age_ts": 1000000}
}"#;

const REDACTABLE_EVENT: &str = r#"{
    "content": {"body": "Here is the message content"}, "event_id": "$0:domain",
    "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
    "room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
    "unsigned": {"age_ts": 1000000}
}"#;

/// The vectors were made with the redaction algorithm of room versions 1-10 (which keeps
/// `origin`); they hold for every version up to 10.
#[test]
fn sign_minimal_event() {
    for rules in &RoomVersionRules::ALL[..10] {
        let mut event = object(MINIMAL_EVENT);
        signing::hash_and_sign_event(&mut event, "domain", &key(), rules);
        assert_eq!(
            event.get_object("hashes").and_then(|h| h.get_str("sha256")),
            Some("5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos")
        );
        assert_eq!(
            signature(&event),
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
            "room version {}",
            rules.id
        );
        assert_eq!(event.get_object("unsigned").map(Object::len), Some(1), "unsigned kept");
        if rules.id != "1" && rules.id != "2" {
            assert_eq!(signing::verify_event(&event, &keyring(), rules), Ok(Verified::All));
        }
    }
}

#[test]
fn sign_redactable_event() {
    let mut event = object(REDACTABLE_EVENT);
    let rules = &RoomVersionRules::V1;
    signing::hash_and_sign_event(&mut event, "domain", &key(), rules);
    assert_eq!(
        event.get_object("hashes").and_then(|h| h.get_str("sha256")),
        Some("onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g")
    );
    assert_eq!(
        signature(&event),
        "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
    );
    // Rooms 1-2 also need the event id's server (here the same) to sign.
    assert_eq!(signing::verify_event(&event, &keyring(), rules), Ok(Verified::All));

    // The content hash covers the body; the signature does not (it covers the redacted form).
    let mut tampered = event.clone();
    tampered.object_entry("content").insert("body", "changed");
    assert_eq!(signing::verify_event(&tampered, &keyring(), rules), Ok(Verified::Signatures));
    // The redacted form keeps the signature valid.
    let redacted = redaction::redact(&event, rules);
    assert_eq!(redacted.get_object("content").map(Object::len), Some(0));
    assert_eq!(signing::verify_event(&redacted, &keyring(), rules), Ok(Verified::Signatures));
}

/// Event ids of the minimal event, computed independently (Python, see the closing note of the
/// matrix-core issue): the reference hash under the v1-10 and v11+ redaction rules.
#[test]
fn reference_hash_event_ids() {
    let mut event = object(MINIMAL_EVENT);
    signing::hash_and_sign_event(&mut event, "domain", &key(), &RoomVersionRules::V4);
    let id = |rules| hash::event_id(&event, rules).expect("computed");
    assert_eq!(id(&RoomVersionRules::V3), "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc");
    assert_eq!(id(&RoomVersionRules::V10), "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc");
    let mut v11 = object(MINIMAL_EVENT);
    signing::hash_and_sign_event(&mut v11, "domain", &key(), &RoomVersionRules::V11);
    let id = |rules| hash::event_id(&v11, rules).expect("computed");
    assert_eq!(id(&RoomVersionRules::V12), "$70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I");
    // Room 3 uses the standard alphabet with the v1-10 redaction rules: `/`, not `_`.
    let mut v3 = object(MINIMAL_EVENT);
    signing::hash_and_sign_event(&mut v3, "domain", &key(), &RoomVersionRules::V3);
    assert!(!hash::event_id(&v3, &RoomVersionRules::V3).expect("computed").contains(['-', '_']));
}

/// The canonical JSON examples of the appendix.
#[test]
fn canonical_json_examples() {
    let cases = [
        (r#"{}"#, r#"{}"#),
        (r#"{ "one": 1, "two": "Two" }"#, r#"{"one":1,"two":"Two"}"#),
        (r#"{ "b": "2", "a": "1" }"#, r#"{"a":"1","b":"2"}"#),
        (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
        (
            r#"{ "auth": { "success": true, "mxid": "@john.doe:example.com", "profile": { "display_name": "John Doe", "three_pids": [ { "medium": "email", "address": "john.doe@example.org" }, { "medium": "msisdn", "address": "123456789" } ] } } }"#,
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#,
        ),
        (r#"{ "a": "日本語" }"#, r#"{"a":"日本語"}"#),
        (r#"{ "本": 2, "日": 1 }"#, r#"{"日":1,"本":2}"#),
        (r#"{ "a": "\u65E5" }"#, r#"{"a":"日"}"#),
        (r#"{ "a": null }"#, r#"{"a":null}"#),
        (r#"{ "a": -0 }"#, r#"{"a":0}"#),
    ];
    for (input, expected) in cases {
        let value = json::parse_strict(input.as_bytes()).expect(input);
        assert_eq!(json::to_canonical_string(&value), expected, "{input}");
    }
    // `1e10` is not canonical JSON: strict parsing refuses it, lenient parsing keeps it as is.
    assert!(json::parse_strict(br#"{"b": 1e10}"#).is_err());
    let lenient = json::parse_lenient(br#"{"b": 1e10}"#).expect("lenient");
    assert_eq!(json::to_canonical_string(&lenient), r#"{"b":1e10}"#);
}
