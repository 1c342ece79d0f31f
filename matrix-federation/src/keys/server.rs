//! The `/_matrix/key/v2/server` body: ours, built and signed; theirs, checked.

use std::collections::BTreeMap;

use matrix_core::json::Object;
use matrix_core::signing::{ED25519, KeyRing, VerifyError, sign_json, verify_json};
use matrix_core::{PublicKey, SigningKey, Value};
use matrix_storage::OurKey;

/// Keys listed at most in one response (current and old counted apart).
pub const MAX_KEYS: usize = 64;

/// A key we no longer sign with, published so that what it signed can still be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldKey {
    /// `ed25519:...`.
    pub key_id: String,
    /// The public key.
    pub public_key: PublicKey,
    /// When we stopped using it (ms since the epoch).
    pub expired_ts: i64,
}

/// Our `/_matrix/key/v2/server` body: `current` keys in `verify_keys`, `old` ones in
/// `old_verify_keys`, signed by every current key.
pub fn server_keys_response(
    server_name: &str,
    current: &[&SigningKey],
    old: &[OldKey],
    valid_until_ts: i64,
) -> Object {
    let mut body = Object::new();
    body.insert("server_name", server_name);
    body.insert("valid_until_ts", valid_until_ts);
    let verify_keys = body.object_entry("verify_keys");
    for key in current {
        let mut entry = Object::new();
        entry.insert("key", key.public_key().to_base64());
        verify_keys.insert(key.key_id(), entry);
    }
    let old_keys = body.object_entry("old_verify_keys");
    for key in old {
        let mut entry = Object::new();
        entry.insert("key", key.public_key.to_base64());
        entry.insert("expired_ts", key.expired_ts);
        old_keys.insert(key.key_id.clone(), entry);
    }
    for key in current {
        sign_json(&mut body, server_name, key);
    }
    body
}

/// Our keys as storage keeps them, split into signing keys (those not expired) and old keys.
pub fn split_our_keys(
    stored: &[OurKey],
) -> Result<(Vec<SigningKey>, Vec<OldKey>), matrix_core::signing::KeyError> {
    let mut current = Vec::new();
    let mut old = Vec::new();
    for key in stored {
        let version = key.key_id.strip_prefix("ed25519:").unwrap_or(&key.key_id);
        let signing = SigningKey::from_base64_seed(version, &key.seed)?;
        match key.expired_ts {
            None => current.push(signing),
            Some(expired_ts) => old.push(OldKey {
                key_id: signing.key_id().to_owned(),
                public_key: signing.public_key(),
                expired_ts,
            }),
        }
    }
    Ok((current, old))
}

/// A server's keys, checked: what [`verify_server_keys`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    /// The server.
    pub server_name: String,
    /// Keys valid for requests and events until `valid_until_ts`.
    pub verify_keys: BTreeMap<String, PublicKey>,
    /// Keys valid for events sent before their expiry: `key_id -> (key, expired_ts)`.
    pub old_verify_keys: BTreeMap<String, (PublicKey, i64)>,
    /// Until when the keys may be used without asking again (ms since the epoch), as the
    /// server said it (callers cap it at 7 days after they fetched it).
    pub valid_until_ts: i64,
}

/// Why a key response is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// A field is missing or has the wrong type.
    #[error("malformed key response: {0}")]
    Malformed(&'static str),
    /// It is about another server.
    #[error("the keys are of {found}, not {expected}")]
    WrongServer {
        /// The server asked for.
        expected: String,
        /// The server named.
        found: String,
    },
    /// More keys than [`MAX_KEYS`].
    #[error("more than {MAX_KEYS} keys")]
    TooMany,
    /// A listed key did not sign the response.
    #[error("not signed by its key {0}")]
    NotSigned(String),
    /// A signature does not verify.
    #[error("{0}")]
    Signature(#[from] VerifyError),
}

fn parse_key(entry: &Value) -> Result<PublicKey, KeysError> {
    let text = entry
        .as_object()
        .and_then(|entry| entry.get_str("key"))
        .ok_or(KeysError::Malformed("a key without `key`"))?;
    PublicKey::from_base64(text).map_err(|_| KeysError::Malformed("a key that is not ed25519"))
}

fn is_ed25519(key_id: &str) -> bool {
    key_id.split_once(':').is_some_and(|(algorithm, version)| {
        algorithm == ED25519 && !version.is_empty() && version.len() <= 255
    })
}

/// Checks a `/_matrix/key/v2/server` body (also each entry of a notary's answer): it names
/// `expected_server`, has `valid_until_ts`, and every ed25519 key in `verify_keys` signed
/// it. Keys of other algorithms are ignored.
pub fn verify_server_keys(body: &Object, expected_server: &str) -> Result<ServerKeys, KeysError> {
    let server_name =
        body.get_str("server_name").ok_or(KeysError::Malformed("no `server_name`"))?;
    if server_name != expected_server {
        return Err(KeysError::WrongServer {
            expected: expected_server.to_owned(),
            found: server_name.to_owned(),
        });
    }
    let valid_until_ts = body
        .get("valid_until_ts")
        .and_then(Value::as_i64)
        .ok_or(KeysError::Malformed("no integer `valid_until_ts`"))?;
    let listed = body.get_object("verify_keys").ok_or(KeysError::Malformed("no `verify_keys`"))?;
    if listed.len() > MAX_KEYS {
        return Err(KeysError::TooMany);
    }
    let mut verify_keys = BTreeMap::new();
    for (key_id, entry) in listed.iter().filter(|(key_id, _)| is_ed25519(key_id)) {
        verify_keys.insert(key_id.to_owned(), parse_key(entry)?);
    }
    if verify_keys.is_empty() {
        return Err(KeysError::Malformed("no ed25519 key in `verify_keys`"));
    }
    let mut old_verify_keys = BTreeMap::new();
    if let Some(old) = body.get("old_verify_keys") {
        let old = old.as_object().ok_or(KeysError::Malformed("`old_verify_keys` not an object"))?;
        if old.len() > MAX_KEYS {
            return Err(KeysError::TooMany);
        }
        for (key_id, entry) in old.iter().filter(|(key_id, _)| is_ed25519(key_id)) {
            let expired_ts = entry
                .as_object()
                .and_then(|entry| entry.get("expired_ts"))
                .and_then(Value::as_i64)
                .ok_or(KeysError::Malformed("an old key without integer `expired_ts`"))?;
            old_verify_keys.insert(key_id.to_owned(), (parse_key(entry)?, expired_ts));
        }
    }
    let signatures = body
        .get_object("signatures")
        .and_then(|signatures| signatures.get_object(server_name))
        .ok_or(KeysError::Malformed("no signatures of the server"))?;
    let mut ring = KeyRing::new();
    for (key_id, key) in &verify_keys {
        if !signatures.contains_key(key_id) {
            return Err(KeysError::NotSigned(key_id.clone()));
        }
        ring.insert(server_name, key_id, *key);
    }
    verify_json(body, server_name, &ring)?;
    Ok(ServerKeys {
        server_name: server_name.to_owned(),
        verify_keys,
        old_verify_keys,
        valid_until_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8, version: &str) -> SigningKey {
        SigningKey::from_seed(version, &[seed; 32])
    }

    fn resign(body: &mut Object, server: &str, keys: &[&SigningKey]) {
        body.remove("signatures");
        for key in keys {
            sign_json(body, server, key);
        }
    }

    #[test]
    fn our_response_verifies_and_lists_old_keys() {
        let (a, b) = (key(1, "a"), key(2, "b"));
        let old = OldKey {
            key_id: "ed25519:old".to_owned(),
            public_key: key(3, "old").public_key(),
            expired_ts: 5,
        };
        let body = server_keys_response("us.org", &[&a, &b], std::slice::from_ref(&old), 1000);
        let keys = verify_server_keys(&body, "us.org").expect("valid");
        assert_eq!(keys.valid_until_ts, 1000);
        assert_eq!(keys.verify_keys.len(), 2);
        assert_eq!(keys.verify_keys["ed25519:a"], a.public_key());
        assert_eq!(keys.old_verify_keys["ed25519:old"], (old.public_key, 5));
        assert_eq!(
            verify_server_keys(&body, "them.org"),
            Err(KeysError::WrongServer { expected: "them.org".into(), found: "us.org".into() })
        );
    }

    #[test]
    fn stored_keys_split_into_current_and_old() {
        let a = key(1, "a");
        let stored = [
            OurKey { key_id: "ed25519:a".into(), seed: a.seed_base64(), expired_ts: None },
            OurKey {
                key_id: "ed25519:b".into(),
                seed: key(2, "b").seed_base64(),
                expired_ts: Some(9),
            },
        ];
        let (current, old) = split_our_keys(&stored).expect("valid seeds");
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].public_key(), a.public_key());
        assert_eq!(old[0].key_id, "ed25519:b");
        assert_eq!(old[0].expired_ts, 9);
        let bad = [OurKey { key_id: "ed25519:c".into(), seed: "!!".into(), expired_ts: None }];
        assert!(split_our_keys(&bad).is_err());
    }

    #[test]
    fn forged_and_malformed_responses_are_refused() {
        let (a, b) = (key(1, "a"), key(2, "b"));
        let good = server_keys_response("s.org", &[&a, &b], &[], 1000);
        // Signed by one listed key only.
        let mut half = good.clone();
        resign(&mut half, "s.org", &[&a]);
        assert_eq!(
            verify_server_keys(&half, "s.org"),
            Err(KeysError::NotSigned("ed25519:b".into()))
        );
        // A changed field after signing.
        let mut changed = good.clone();
        changed.insert("valid_until_ts", 2000);
        assert!(matches!(verify_server_keys(&changed, "s.org"), Err(KeysError::Signature(_))));
        // A key swapped for the attacker's, signed by the attacker under the same id.
        let mallory = key(9, "a");
        let mut swapped = server_keys_response("s.org", &[&mallory], &[], 1000);
        swapped.object_entry("signatures").object_entry("s.org").insert("ed25519:a", "AAAA");
        assert!(verify_server_keys(&swapped, "s.org").is_err());
        // Missing fields.
        for field in ["server_name", "valid_until_ts", "verify_keys", "signatures"] {
            let mut missing = good.clone();
            missing.remove(field);
            assert!(verify_server_keys(&missing, "s.org").is_err(), "{field}");
        }
        let mut no_ed25519 = good.clone();
        no_ed25519.insert("verify_keys", Object::new());
        assert!(verify_server_keys(&no_ed25519, "s.org").is_err());
        let mut bad_key = good.clone();
        bad_key.object_entry("verify_keys").object_entry("ed25519:a").insert("key", "short");
        assert!(verify_server_keys(&bad_key, "s.org").is_err());
        let mut bad_old = good.clone();
        bad_old
            .object_entry("old_verify_keys")
            .object_entry("ed25519:x")
            .insert("key", a.public_key().to_base64());
        assert!(verify_server_keys(&bad_old, "s.org").is_err(), "old key without expired_ts");
        // Too many keys.
        let mut many = good.clone();
        for i in 0..=MAX_KEYS {
            many.object_entry("verify_keys")
                .object_entry(&format!("ed25519:k{i}"))
                .insert("key", a.public_key().to_base64());
        }
        assert_eq!(verify_server_keys(&many, "s.org"), Err(KeysError::TooMany));
        // Unknown algorithms are ignored.
        let mut other = good.clone();
        other.object_entry("verify_keys").object_entry("curve25519:x").insert("key", "zz");
        resign(&mut other, "s.org", &[&a, &b]);
        assert_eq!(verify_server_keys(&other, "s.org").expect("valid").verify_keys.len(), 2);
    }
}
