//! TURN credentials for `GET /voip/turnServer`, as Synapse makes them: with a shared secret,
//! the TURN REST API's time-limited credentials (username `{expiry}:{user_id}`, password
//! `base64(HMAC-SHA1(secret, username))`, which coturn's `use-auth-secret` checks); else a
//! fixed username and password; else nothing (`{}`).

use base64::Engine;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::config::TurnConfig;

/// HMAC-SHA1 (RFC 2104).
pub(crate) fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha1::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The answer for `user` at `now_secs` (Unix time).
pub(crate) fn turn_server(config: &TurnConfig, user: &str, now_secs: u64) -> Value {
    if config.uris.is_empty() || config.ttl_secs == 0 {
        return json!({});
    }
    let (username, password) = match (&config.shared_secret, &config.username, &config.password) {
        (Some(secret), _, _) => {
            let username = format!("{}:{user}", now_secs.saturating_add(config.ttl_secs));
            let mac = hmac_sha1(secret.as_bytes(), username.as_bytes());
            (username, base64::engine::general_purpose::STANDARD.encode(mac))
        }
        (None, Some(username), Some(password)) => (username.clone(), password.clone()),
        _ => return json!({}),
    };
    json!({
        "username": username,
        "password": password,
        "uris": config.uris,
        "ttl": config.ttl_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202, test cases 2 and 6 (a key longer than the block).
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        let mac = hmac_sha1(&[0xaa; 80], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "aa4ae5e15272d00e95705637ce8a3b55ed402112");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
