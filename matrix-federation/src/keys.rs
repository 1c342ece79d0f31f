//! Server signing keys: where signature checks find them ([`KeyProvider`], [`StaticKeys`],
//! [`KeyFetcher`]), our `/_matrix/key/v2/server` body ([`server_keys_response`]), checks of
//! other servers' ([`verify_server_keys`]), and our notary answer ([`notary_response`]).

mod fetcher;
mod notary;
mod server;

pub use fetcher::{KeyFetcher, KeyFetcherOptions, MAX_KEY_VALIDITY_MS};
pub use notary::{MAX_QUERY_SERVERS, notary_response, parse_key_query};
pub use server::{
    KeysError, MAX_KEYS, OldKey, ServerKeys, server_keys_response, split_our_keys,
    verify_server_keys,
};

use std::collections::HashMap;

use async_trait::async_trait;
use matrix_core::PublicKey;

use crate::FederationError;

/// Where signature checks find a server's public keys.
///
/// `valid_at_ts` is the time the key must have been valid at (ms since the epoch): now for a
/// request, the event's `origin_server_ts` for an event (room versions 5 and later; for
/// versions 1 to 4, which ignore key validity, `i64::MIN`). A key that expired before it is
/// `None`, as is a key the server never had.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// The key `key_id` (`ed25519:...`) of `server`.
    async fn public_key(
        &self,
        server: &str,
        key_id: &str,
        valid_at_ts: i64,
    ) -> Result<Option<PublicKey>, FederationError>;
}

/// Fixed keys that never expire: for tests and for servers configured by hand.
#[derive(Debug, Clone, Default)]
pub struct StaticKeys {
    keys: HashMap<(String, String), PublicKey>,
}

impl StaticKeys {
    /// Adds (or replaces) a key.
    pub fn insert(&mut self, server: &str, key_id: &str, key: PublicKey) {
        self.keys.insert((server.to_owned(), key_id.to_owned()), key);
    }
}

#[async_trait]
impl KeyProvider for StaticKeys {
    async fn public_key(
        &self,
        server: &str,
        key_id: &str,
        _valid_at_ts: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        Ok(self.keys.get(&(server.to_owned(), key_id.to_owned())).cloned())
    }
}
