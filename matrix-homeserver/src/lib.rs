#![doc = include_str!("../README.md")]

mod config;
mod error;
mod http;
mod services;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::Arc;

use matrix_storage::Storage;
use ruma::{OwnedServerName, OwnedUserId, ServerName};

pub use config::{Config, LimitsConfig, RegistrationConfig, RegistrationMode, WellKnownConfig};
pub use error::ApiError;
pub use services::accounts::Session;

use services::accounts::{Accounts, DeviceRequest};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) accounts: Accounts,
}

/// Why a homeserver could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No storage was given.
    #[error("the homeserver needs a storage backend")]
    NoStorage,
    /// The server name is not a valid server name.
    #[error("the server name {0:?} is not valid: {1}")]
    ServerName(String, String),
}

/// Builds a [`Homeserver`].
#[derive(Default)]
pub struct HomeserverBuilder {
    config: Config,
    storage: Option<Arc<dyn Storage>>,
}

impl std::fmt::Debug for HomeserverBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeserverBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl HomeserverBuilder {
    /// The settings (the defaults otherwise).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The storage backend.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Checks the settings and builds the homeserver.
    pub async fn build(self) -> Result<Homeserver, BuildError> {
        let storage = self.storage.ok_or(BuildError::NoStorage)?;
        let server_name: OwnedServerName = ServerName::parse(&self.config.server_name)
            .map_err(|e| BuildError::ServerName(self.config.server_name.clone(), e.to_string()))?;
        let accounts = Accounts::new(storage, server_name);
        Ok(Homeserver { state: Arc::new(State { config: self.config, accounts }) })
    }
}

/// A homeserver: give it a listener with [`Homeserver::serve`].
#[derive(Debug, Clone)]
pub struct Homeserver {
    state: Arc<State>,
}

impl Homeserver {
    /// A builder: `Homeserver::builder().config(cfg).storage(storage).build().await?`.
    pub fn builder() -> HomeserverBuilder {
        HomeserverBuilder::default()
    }

    /// The settings it runs with.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Answers the client-server API on `listener` until `shutdown` completes, then finishes
    /// the requests in flight and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, http::router(self.state)).with_graceful_shutdown(shutdown).await
    }

    /// Creates an account as an administrator would (registration settings do not apply):
    /// `localpart` on this server, with a password to log in with if given.
    pub async fn create_user(
        &self,
        localpart: &str,
        password: Option<&str>,
        admin: bool,
    ) -> Result<OwnedUserId, ApiError> {
        let (user_id, _) = self
            .state
            .accounts
            .create_user(Some(localpart), password.map(str::to_owned), admin, None)
            .await?;
        Ok(user_id)
    }

    /// Logs a user in with a password on a new device.
    pub async fn login(&self, user: &str, password: &str) -> Result<Session, ApiError> {
        self.state
            .accounts
            .login_password(user, password.to_owned(), DeviceRequest::default())
            .await
    }
}
