//! Signature edge cases: what libsodium (Synapse's verifier) refuses, we refuse.

use matrix_core::{KeyRing, Object, PublicKey, RoomVersionRules, SigningKey, b64, signing};

/// The identity point: of small order.
const IDENTITY: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
};

#[test]
fn small_order_keys_are_refused() {
    assert!(PublicKey::from_bytes(&IDENTITY).is_err());
    assert!(PublicKey::from_bytes(&[0; 32]).is_err());
    assert!(PublicKey::from_base64("not base64!").is_err());
    assert!(PublicKey::from_base64(&b64::encode([1u8; 31])).is_err());
}

#[test]
fn small_order_r_and_non_canonical_s_are_refused() {
    let key = SigningKey::from_seed("1", &[5; 32]);
    let public = key.public_key();
    let message = b"message";
    let good = key.sign(message);
    assert!(public.verify(message, &good));

    // R of small order (the identity, either sign bit) never verifies.
    for sign in [0u8, 0x80] {
        let mut bad = good;
        bad[..32].copy_from_slice(&IDENTITY);
        bad[31] |= sign;
        assert!(!public.verify(message, &bad));
    }
    // S + l (non-canonical) is refused although it is the same scalar mod l.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut bad = good;
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(bad[32 + i]) + u16::from(L[i]) + carry;
        bad[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert!(!public.verify(message, &bad));
}

#[test]
fn verify_errors_name_the_problem() {
    let key = SigningKey::from_seed("1", &[5; 32]);
    let mut keys = KeyRing::new();
    keys.insert("example.org", key.key_id(), key.public_key());
    let mut object = Object::new();
    object.insert("a", 1);
    assert_eq!(
        signing::verify_json(&object, "example.org", &keys),
        Err(signing::VerifyError::NoSignatures)
    );
    signing::sign_json(&mut object, "example.org", &key);
    // Unknown server, unknown key id: no signature by a known key.
    assert!(matches!(
        signing::verify_json(&object, "other.org", &keys),
        Err(signing::VerifyError::NoSignatureFrom { .. })
    ));
    let mut other_keys = KeyRing::new();
    other_keys.insert("example.org", "ed25519:2", key.public_key());
    assert!(matches!(
        signing::verify_json(&object, "example.org", &other_keys),
        Err(signing::VerifyError::NoSignatureFrom { .. })
    ));
    // A signature that is not base64 of 64 bytes.
    object.object_entry("signatures").object_entry("example.org").insert("ed25519:1", "AAAA");
    assert!(matches!(
        signing::verify_json(&object, "example.org", &keys),
        Err(signing::VerifyError::SignatureEncoding { .. })
    ));
    // An event without a sender cannot say who must sign it.
    assert!(matches!(
        signing::verify_event(&object, &keys, &RoomVersionRules::V11),
        Err(signing::VerifyError::MalformedEvent("sender"))
    ));
}

#[test]
fn batch_finds_the_bad_event() {
    let rules = &RoomVersionRules::V11;
    let key = SigningKey::from_seed("1", &[5; 32]);
    let mut keys = KeyRing::new();
    keys.insert("example.org", key.key_id(), key.public_key());
    let events: Vec<Object> = (0..10i64)
        .map(|i| {
            let mut event = Object::new();
            event.insert("type", "m.room.message");
            event.insert("sender", "@a:example.org");
            event.insert("depth", i);
            event.insert("content", Object::new());
            signing::hash_and_sign_event(&mut event, "example.org", &key, rules);
            if i == 7 {
                event.insert("depth", 70); // covered by the signature
            }
            if i == 3 {
                event.object_entry("content").insert("body", "x"); // only the hash breaks
            }
            event
        })
        .collect();
    let refs: Vec<&Object> = events.iter().collect();
    let results = signing::verify_events_batch(&refs, &keys, rules);
    for (i, result) in results.iter().enumerate() {
        match i {
            7 => assert!(matches!(result, Err(signing::VerifyError::BadSignature { .. }))),
            3 => assert_eq!(result, &Ok(signing::Verified::Signatures)),
            _ => assert_eq!(result, &Ok(signing::Verified::All)),
        }
    }
}

/// A countersignature (`sign_event`) covers the redacted event, as every event signature does:
/// it verifies where the event holds what redaction drops (an `origin`, a display name); one
/// over the whole object (`sign_json`) does not.
#[test]
fn a_countersignature_covers_the_redacted_event() {
    let rules = &RoomVersionRules::V11;
    let (joiner, resident) =
        (SigningKey::from_seed("1", &[5; 32]), SigningKey::from_seed("1", &[6; 32]));
    let mut keys = KeyRing::new();
    keys.insert("them.org", joiner.key_id(), joiner.public_key());
    keys.insert("us.org", resident.key_id(), resident.public_key());
    let mut event = Object::new();
    event.insert("type", "m.room.member");
    event.insert("sender", "@a:them.org");
    event.insert("state_key", "@a:them.org");
    event.insert("origin", "them.org");
    event.insert("depth", 3_i64);
    let content = event.object_entry("content");
    content.insert("membership", "join");
    content.insert("displayname", "A");
    content.insert("join_authorised_via_users_server", "@b:us.org");
    signing::hash_and_sign_event(&mut event, "them.org", &joiner, rules);

    let mut whole = event.clone();
    signing::sign_json(&mut whole, "us.org", &resident);
    assert!(matches!(
        signing::verify_event(&whole, &keys, rules),
        Err(signing::VerifyError::BadSignature { .. })
    ));
    let mut countersigned = event;
    signing::sign_event(&mut countersigned, "us.org", &resident, rules);
    assert_eq!(signing::verify_event(&countersigned, &keys, rules), Ok(signing::Verified::All));
}
