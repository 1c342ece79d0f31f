//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`, what
//! `register_new_matrix_user` and the `homeserver register-user` command call): a client
//! holding `registration.shared_secret` asks for a nonce, then registers a user with an
//! HMAC-SHA1 of the nonce, the name, the password and the admin flag under that secret. A
//! nonce is good once, for a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// How long a nonce is good for (Synapse's).
const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// How many nonces may be outstanding at once (more: 429); the endpoint needs no token, so
/// asking for nonces must not grow memory without bound.
const MAX_NONCES: usize = 1_000;

/// The outstanding nonces of shared-secret registration.
#[derive(Debug, Default)]
pub(crate) struct RegistrationNonces {
    nonces: Mutex<HashMap<String, Instant>>,
}

impl RegistrationNonces {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new nonce.
    pub(crate) fn issue(&self) -> Result<String, ApiError> {
        let nonce = crate::services::accounts::random_string(
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            32,
        )?;
        let now = Instant::now();
        let mut nonces = self.lock();
        nonces.retain(|_, issued| now.duration_since(*issued) < NONCE_LIFETIME);
        if nonces.len() >= MAX_NONCES {
            return Err(ApiError::limit_exceeded_with(
                NONCE_LIFETIME.as_millis() as u64,
                "too many registration nonces are outstanding",
            ));
        }
        nonces.insert(nonce.clone(), now);
        Ok(nonce)
    }

    /// Uses up a nonce: whether it was issued here, less than a minute ago, and not used.
    pub(crate) fn take(&self, nonce: &str) -> bool {
        self.lock().remove(nonce).is_some_and(|issued| issued.elapsed() < NONCE_LIFETIME)
    }
}

/// The MAC a shared-secret registration (`/_synapse/admin/v1/register`) carries: HMAC-SHA1
/// under the secret of `nonce\0username\0password\0admin|notadmin` (and `\0user_type` when
/// there is one), in hex, as Synapse checks it.
///
/// ```
/// let mac = matrix_homeserver::registration_mac("secret", "abc", "bob", "pw", false, None);
/// assert_eq!(mac, "8ea9b87daa4e529ce4a0832f09be19bbe837a0af");
/// ```
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    let mut message = Vec::new();
    for (i, part) in [nonce, username, password, if admin { "admin" } else { "notadmin" }]
        .into_iter()
        .chain(user_type)
        .enumerate()
    {
        if i > 0 {
            message.push(0);
        }
        message.extend_from_slice(part.as_bytes());
    }
    crate::services::voip::hmac_sha1(secret.as_bytes(), &message)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two MACs in time that does not depend on where they differ.
pub(crate) fn same_mac(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_synapses() {
        // Computed with Python's hmac module, as Synapse's docs describe:
        // hmac.new(b"secret", b"abc\x00bob\x00pw\x00notadmin", hashlib.sha1).hexdigest()
        assert_eq!(
            registration_mac("secret", "abc", "bob", "pw", false, None),
            "8ea9b87daa4e529ce4a0832f09be19bbe837a0af"
        );
    }

    #[test]
    fn a_nonce_is_good_once() {
        let nonces = RegistrationNonces::default();
        let nonce = nonces.issue().expect("a nonce");
        assert!(nonces.take(&nonce));
        assert!(!nonces.take(&nonce));
        assert!(!nonces.take("made-up"));
        assert!(same_mac("ABCdef", "abcDEF"));
        assert!(!same_mac("abc", "abd"));
        assert!(!same_mac("abc", "abcd"));
    }
}
