//! The Synapse that `interop/synapse/start` runs, as the environment describes it, and its
//! shared-secret registration (Synapse's admin API `/_synapse/admin/v1/register`).

use std::fmt::Write as _;

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::client::{Session, federation_client, http_client, request};

/// What tells the tests where Synapse is; the tests that need it are skipped without it.
pub(crate) const CLIENT_URL_VAR: &str = "SYNAPSE_CLIENT_URL";

/// A running Synapse.
#[derive(Debug, Clone)]
pub(crate) struct Synapse {
    /// Its client API (and admin API), `http://127.0.0.1:PORT`.
    pub(crate) client_url: String,
    /// Its server name, `127.0.0.1:FEDPORT`.
    pub(crate) server_name: String,
    /// Its federation and key listener, `https://127.0.0.1:FEDPORT` (self-signed).
    pub(crate) federation_url: String,
    shared_secret: String,
}

impl Synapse {
    /// The Synapse the environment names (`SYNAPSE_CLIENT_URL`, `SYNAPSE_SERVER_NAME`,
    /// `SYNAPSE_FEDERATION_URL`, `SYNAPSE_SHARED_SECRET`), or `None`, saying the test is
    /// skipped, when `SYNAPSE_CLIENT_URL` is unset. Panics when it is set but the others are
    /// not: a half-configured run is a broken run, not a skipped one.
    pub(crate) fn from_env() -> Option<Synapse> {
        let Some(client_url) = std::env::var(CLIENT_URL_VAR).ok().filter(|v| !v.is_empty()) else {
            eprintln!("skipped: {CLIENT_URL_VAR} unset (.ci/run starts Synapse)");
            return None;
        };
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| panic!("{CLIENT_URL_VAR} is set but {name} is not"))
        };
        Some(Synapse {
            client_url: client_url.trim_end_matches('/').to_owned(),
            server_name: var("SYNAPSE_SERVER_NAME"),
            federation_url: var("SYNAPSE_FEDERATION_URL").trim_end_matches('/').to_owned(),
            shared_secret: var("SYNAPSE_SHARED_SECRET"),
        })
    }

    /// Registers `localpart` with the shared secret (no registration flow, no rate limit):
    /// a nonce from `GET /_synapse/admin/v1/register`, then the POST with its MAC. Answers
    /// the new user's session.
    pub(crate) async fn register(&self, localpart: &str, password: &str, admin: bool) -> Session {
        let url = format!("{}/_synapse/admin/v1/register", self.client_url);
        let http = http_client();
        let (status, answer) = request(&http, reqwest::Method::GET, &url, None, None).await;
        assert_eq!(status, 200, "a registration nonce: {answer}");
        let nonce = answer["nonce"].as_str().expect("a nonce");
        let mac = registration_mac(&self.shared_secret, nonce, localpart, password, admin);
        let body = json!({"nonce": nonce, "username": localpart, "password": password,
                          "admin": admin, "mac": mac});
        let (status, answer) = request(&http, reqwest::Method::POST, &url, None, Some(&body)).await;
        assert_eq!(status, 200, "registering {localpart} on Synapse: {answer}");
        Session::from_login(&self.client_url, &answer)
    }

    /// `GET` a path of Synapse's federation listener (`/_matrix/key/...`,
    /// `/_matrix/federation/...`) over TLS, unauthenticated.
    pub(crate) async fn federation_get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.federation_url);
        request(&federation_client(), reqwest::Method::GET, &url, None, None).await
    }

    /// `POST` to a path of Synapse's federation listener over TLS, unauthenticated.
    pub(crate) async fn federation_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.federation_url);
        request(&federation_client(), reqwest::Method::POST, &url, None, Some(body)).await
    }
}

/// The MAC Synapse's shared-secret registration asks for: HMAC-SHA1 keyed with the shared
/// secret over `nonce NUL username NUL password NUL ("admin" | "notadmin")`, in lower-case hex.
pub(crate) fn registration_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> String {
    let role = if admin { "admin" } else { "notadmin" };
    let message = [nonce, username, password, role].join("\0");
    hmac_sha1(secret.as_bytes(), message.as_bytes()).iter().fold(
        String::with_capacity(40),
        |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        },
    )
}

/// HMAC (RFC 2104) over SHA-1, whose block is 64 bytes.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block_key.map(|k| k ^ byte);
    let inner = Sha1::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha1::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    let mut mac = [0u8; 20];
    mac.copy_from_slice(&outer);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 2202's HMAC-SHA1 cases 1, 2 and 6 (a key longer than the block is hashed first).
    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        assert_eq!(
            hex(&hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(&hmac_sha1(&[0xaa; 80], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    /// The MACs Python's `hmac` module (what Synapse checks with) gives for the same fields.
    #[test]
    fn registration_mac_matches_python_hmac() {
        assert_eq!(
            registration_mac("s3cret", "abc", "alice", "a password", false),
            "8944722b86b07ddd43475899800ba7819a4e3075"
        );
        assert_eq!(
            registration_mac("s3cret", "abc", "alice", "a password", true),
            "d4329ea115c5bf91a230b40ea748bbc8cb8f7163"
        );
    }
}
