//! The federation service: what other servers need from us and what we need from them. It
//! exists only when federation is enabled.

use std::sync::Arc;

use matrix_federation::keys::KeyProvider;
use matrix_federation::transport::Transport;

use crate::error::ApiError;

/// Federation state shared by the handlers.
pub(crate) struct Federation {
    /// Where other servers' keys come from (storage first, then the network).
    keys: Arc<dyn KeyProvider>,
    /// How requests reach other servers.
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").finish_non_exhaustive()
    }
}

impl Federation {
    pub(crate) fn new(keys: Arc<dyn KeyProvider>, transport: Arc<dyn Transport>) -> Self {
        Federation { keys, transport }
    }

    /// How requests reach other servers.
    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The server that signed a request, checked (401 `M_UNAUTHORIZED` otherwise).
    pub(crate) async fn authenticate(
        &self,
        server_name: &str,
        request: &matrix_federation::request::Received<'_>,
    ) -> Result<ruma::OwnedServerName, ApiError> {
        use matrix_federation::request::Refused;
        let now = matrix_federation::now_ms();
        match matrix_federation::request::authenticate(request, server_name, &*self.keys, now)
            .await?
        {
            Ok(origin) => Ok(origin),
            Err(Refused::NotJson) => Err(ApiError::not_json()),
            Err(refused) => Err(ApiError::unauthorized(refused.to_string())),
        }
    }
}
