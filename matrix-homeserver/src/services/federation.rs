//! The federation service: what other servers need from us and what we need from them. It
//! exists only when federation is enabled.

pub(crate) mod edus;
pub(crate) mod fan_out;
pub(crate) mod receive;
pub(crate) mod remote_keys;

use std::sync::Arc;

use async_trait::async_trait;
use matrix_core::{Object, PublicKey, SigningKey};
use matrix_federation::client::{ClientOptions, FederationClient};
use matrix_federation::keys::{KeyFetcher, KeyFetcherOptions, KeyProvider};
use matrix_federation::transport::Transport;
use matrix_federation::{FederationError, FederationOptions};
use matrix_storage::Storage;

use crate::error::ApiError;

/// How long other servers may cache our key response (Synapse answers a day too).
const KEY_RESPONSE_VALIDITY_MS: i64 = 24 * 3600 * 1000;

/// Federation state shared by the handlers.
pub(crate) struct Federation {
    server_name: String,
    /// Our signing key.
    key: Arc<SigningKey>,
    /// Other servers' keys: storage first, then the network.
    fetcher: Arc<KeyFetcher>,
    /// Our key first, then the fetcher.
    keys: Arc<Keys>,
    /// Signed requests to other servers.
    client: Arc<FederationClient>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// Our own key from memory (its seed never goes to storage), anyone else's from the fetcher.
struct Keys {
    server_name: String,
    ours: (String, PublicKey),
    fetcher: Arc<KeyFetcher>,
}

#[async_trait]
impl KeyProvider for Keys {
    async fn public_key(
        &self,
        server: &str,
        key_id: &str,
        valid_at_ts: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        if server == self.server_name && key_id == self.ours.0 {
            return Ok(Some(self.ours.1));
        }
        self.fetcher.public_key(server, key_id, valid_at_ts).await
    }
}

impl Federation {
    pub(crate) fn new(
        config: &crate::config::FederationConfig,
        server_name: &str,
        key: SigningKey,
        storage: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let mut options = FederationOptions::new(server_name);
        options.verify_certificates = config.verify_certificates;
        options.trusted_key_servers = config.trusted_key_servers.clone();
        let key = Arc::new(key);
        let fetcher =
            Arc::new(KeyFetcher::new(storage, transport.clone(), KeyFetcherOptions::new(&options)));
        let keys = Arc::new(Keys {
            server_name: server_name.to_owned(),
            ours: (key.key_id().to_owned(), key.public_key()),
            fetcher: fetcher.clone(),
        });
        let client = Arc::new(FederationClient::new(
            &options,
            key.clone(),
            transport,
            ClientOptions::default(),
        ));
        Federation { server_name: server_name.to_owned(), key, fetcher, keys, client }
    }

    /// Signed requests to other servers.
    pub(crate) fn client(&self) -> &Arc<FederationClient> {
        &self.client
    }

    /// Starts sending what is queued for other servers (and what gets queued from now on).
    pub(crate) async fn start_sender(
        &self,
        storage: Arc<dyn Storage>,
    ) -> Result<matrix_federation::sender::Sender, FederationError> {
        let options = matrix_federation::sender::SenderOptions::new(self.server_name.as_str());
        matrix_federation::sender::Sender::start(storage, self.client.clone(), options).await
    }

    /// Where signature checks find keys.
    #[allow(dead_code, reason = "for the checks of received PDUs, which come next")]
    pub(crate) fn keys(&self) -> &dyn KeyProvider {
        self.keys.as_ref()
    }

    /// Where signature checks find keys, for a service to keep (the rooms service checks the
    /// countersignatures of the invites it sends).
    pub(crate) fn key_provider(&self) -> Arc<dyn KeyProvider> {
        self.keys.clone()
    }

    /// The server that signed a request, checked (401 `M_UNAUTHORIZED` otherwise).
    pub(crate) async fn authenticate(
        &self,
        request: &matrix_federation::request::Received<'_>,
    ) -> Result<ruma::OwnedServerName, ApiError> {
        use matrix_federation::request::Refused;
        let now = matrix_federation::now_ms();
        match matrix_federation::request::authenticate(
            request,
            &self.server_name,
            self.keys.as_ref(),
            now,
        )
        .await?
        {
            Ok(origin) => Ok(origin),
            Err(Refused::NotJson) => Err(ApiError::not_json()),
            Err(refused) => Err(ApiError::unauthorized(refused.to_string())),
        }
    }

    /// Our `/_matrix/key/v2/server` answer.
    pub(crate) fn our_keys(&self) -> Object {
        let until = matrix_federation::now_ms().saturating_add(KEY_RESPONSE_VALIDITY_MS);
        matrix_federation::keys::server_keys_response(&self.server_name, &[&self.key], &[], until)
    }

    /// Our notary answer for `servers` (`(server, minimum_valid_until_ts)`): each server's
    /// own response (ours for us), signed by us as well. Servers that cannot be reached are
    /// left out.
    pub(crate) async fn notary(&self, servers: &[(String, i64)]) -> Object {
        let mut responses = Vec::with_capacity(servers.len());
        for (server, minimum) in servers {
            if *server == self.server_name {
                responses.push(self.our_keys());
                continue;
            }
            match self.fetcher.response_for_notary(server, *minimum).await {
                Ok(Some(response)) => responses.push(response),
                Ok(None) => {}
                Err(e) => tracing::warn!("federation: keys of {server}: {e}"),
            }
        }
        matrix_federation::keys::notary_response(responses, &self.server_name, &[&self.key])
    }
}
