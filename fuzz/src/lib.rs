//! The bodies of the fuzz targets, shared by `cargo fuzz` (fuzz_targets/) and by the tests that
//! replay each target's committed corpus on stable (`cargo test` in this directory).
//!
//! Each body only asserts properties that must hold for every input: no panic, and round trips.

use matrix_core::json::{self, Value};
use matrix_core::{KeyRing, Pdu, PublicKey, RoomVersionRules, SigningKey, auth, signing, xmatrix};

/// Picks a room version from a byte.
fn rules_for(byte: u8) -> &'static RoomVersionRules {
    RoomVersionRules::ALL[usize::from(byte) % RoomVersionRules::ALL.len()]
}

/// Canonical JSON: whatever parses re-serialises to a fixed point, in both modes.
pub fn canonical_json(data: &[u8]) {
    for strict in [true, false] {
        let parsed = if strict { json::parse_strict(data) } else { json::parse_lenient(data) };
        if let Ok(value) = parsed {
            let canonical = json::to_canonical_vec(&value);
            let again = if strict {
                json::parse_strict(&canonical)
            } else {
                json::parse_lenient(&canonical)
            };
            let again = again.expect("canonical output parses");
            assert_eq!(again, value, "round trip changes the value");
            assert_eq!(
                json::to_canonical_vec(&again),
                canonical,
                "canonical form is not a fixed point"
            );
        }
    }
}

/// PDU parsing in every room version, plus hashing and redaction of what parses.
pub fn pdu_parse(data: &[u8]) {
    let Some((&version, bytes)) = data.split_first() else { return };
    let rules = rules_for(version);
    if let Ok(pdu) = Pdu::from_slice(bytes, rules) {
        let _ = matrix_core::hash::content_hash(pdu.json());
        let redacted = matrix_core::redaction::redact(pdu.json(), rules);
        // The reference hash is the same whether computed from the event or its redaction.
        assert_eq!(
            matrix_core::hash::reference_hash(pdu.json(), rules),
            matrix_core::hash::reference_hash(&redacted, rules)
        );
    }
}

/// X-Matrix header parsing; what parses re-formats to a header that parses to the same value.
pub fn xmatrix_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(header) = xmatrix::XMatrix::parse(text) {
        let again = xmatrix::XMatrix::parse(&header.to_header_value()).expect("own output parses");
        assert_eq!(again, header);
    }
}

/// Signature verification of arbitrary JSON with an arbitrary public key, and of a document
/// signed here (which must verify).
pub fn verify_signature(data: &[u8]) {
    let Some((key_bytes, rest)) = data.split_first_chunk::<32>() else { return };
    let Some((&version, body)) = rest.split_first() else { return };
    let rules = rules_for(version);
    let Ok(Value::Object(mut object)) = json::parse_lenient(body) else { return };
    let mut keys = KeyRing::new();
    if let Ok(key) = PublicKey::from_bytes(key_bytes) {
        keys.insert("example.org", "ed25519:1", key);
    }
    let _ = signing::verify_json(&object, "example.org", &keys);
    let _ = signing::verify_event(&object, &keys, rules);
    let _ = signing::verify_events_batch(&[&object, &object], &keys, rules);

    let signer = SigningKey::from_seed("1", key_bytes);
    let mut signer_keys = KeyRing::new();
    signer_keys.insert("example.org", "ed25519:1", signer.public_key());
    signing::sign_json(&mut object, "example.org", &signer);
    signing::verify_json(&object, "example.org", &signer_keys).expect("own signature verifies");
}

/// The authorization rules on arbitrary events: the input is a JSON array whose first element
/// is the event and the rest its state, checked in the room version the first byte picks.
pub fn auth_check(data: &[u8]) {
    let Some((&version, body)) = data.split_first() else { return };
    let rules = rules_for(version);
    let Ok(Value::Array(items)) = json::parse_lenient(body) else { return };
    let events: Vec<Pdu> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            Value::Object(object) => Some(Pdu::with_event_id(object, format!("$e{i}"), rules)),
            _ => None,
        })
        .collect();
    let Some((event, state)) = events.split_first() else { return };
    let state_refs: Vec<&Pdu> = state.iter().collect();
    let _ = auth::check(rules, event, &auth::EventList(state_refs.clone()));
    let _ = auth::check_auth_events(rules, event, &state_refs);
    let _ = auth::auth_types_for_event(rules, event);
}

#[cfg(test)]
mod replay {
    use std::path::Path;

    fn replay(target: &str, body: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            body(&data);
            count += 1;
        }
        assert!(count > 0, "no corpus for {target}");
        println!("{target}: replayed {count} inputs");
    }

    #[test]
    fn canonical_json() {
        replay("canonical_json", super::canonical_json);
    }
    #[test]
    fn pdu_parse() {
        replay("pdu_parse", super::pdu_parse);
    }
    #[test]
    fn xmatrix_header() {
        replay("xmatrix_header", super::xmatrix_header);
    }
    #[test]
    fn verify_signature() {
        replay("verify_signature", super::verify_signature);
    }
    #[test]
    fn auth_check() {
        replay("auth_check", super::auth_check);
    }
}
