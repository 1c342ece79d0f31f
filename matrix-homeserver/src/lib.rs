#![doc = include_str!("../README.md")]

mod config;
mod error;
mod http;
mod metrics;
mod server;
mod services;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

use std::future::Future;
use std::sync::Arc;

use matrix_storage::Storage;
use ruma::{OwnedServerName, OwnedUserId, ServerName};

pub use config::appservice::{AppserviceRegistration, Namespace, Namespaces};
pub use config::{
    Config, DEFAULT_IP_BLOCKLIST, DelayedEventsConfig, FederationConfig, HttpConfig, IpNetwork,
    IpNetworkError, LimitsConfig, MetricsConfig, PresenceConfig, RateLimit, RateLimitsConfig,
    RegistrationConfig, RegistrationMode, ServerNoticesConfig, SupportContact, TurnConfig,
    UrlPreviewConfig, UserDirectoryConfig, WellKnownConfig, default_ip_blocklist,
};
pub use error::ApiError;
pub use matrix_federation;
pub use services::accounts::Session;
pub use services::admin::registration_mac;
pub use services::backup::backup_mac;
pub use services::url_preview::fetch::{HostResolver, ResolveError};
pub use tls::{ServerTls, TlsError};

use services::accounts::{Accounts, DeviceRequest};
use services::ephemeral::Ephemeral;
use services::rate_limit::RateLimiter;
use services::rooms::Rooms;
use services::sync::Sync;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) accounts: Accounts,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) sync: Sync,
    pub(crate) ephemeral: Arc<Ephemeral>,
    pub(crate) limiter: RateLimiter,
    pub(crate) media: services::media::Media,
    /// Server-side key backups.
    pub(crate) key_backups: services::key_backup::KeyBackups,
    /// Serialises push rule changes (each reads, changes and writes the whole rule set).
    pub(crate) push_rules_lock: tokio::sync::Mutex<()>,
    /// Federation, when it is enabled.
    pub(crate) federation: Option<services::federation::Federation>,
    /// URL previews, when they are enabled.
    pub(crate) url_preview: Option<services::url_preview::UrlPreviews>,
    /// Presence (which answers as Synapse does when it is disabled).
    pub(crate) presence: Arc<services::presence::PresenceTracker>,
    /// Delayed events (MSC4140) and their sender.
    pub(crate) delayed_events: Arc<services::delayed_events::DelayedEvents>,
    /// Third-party networks (none until application services provide them).
    pub(crate) thirdparty: services::thirdparty::ThirdParty,
    /// Application services (bridges), checked at build.
    pub(crate) appservices: services::appservice::Appservices,
    /// The nonces of shared-secret registration.
    pub(crate) registration_nonces: services::admin::RegistrationNonces,
    /// Prometheus metrics, when they are enabled.
    pub(crate) metrics: metrics::Shared,
}

impl State {
    /// Writes one item of a user's account data and tells waiting syncs.
    pub(crate) async fn user_data_put(
        &self,
        user: &ruma::UserId,
        room: Option<&str>,
        kind: &str,
        content: Vec<u8>,
    ) -> Result<(), ApiError> {
        let mut changes = matrix_storage::ChangeSet::new();
        changes.account_data.push((
            user.to_string(),
            room.map(str::to_owned),
            kind.to_owned(),
            content,
        ));
        self.rooms.storage().apply(changes).await?;
        self.ephemeral.account_data_written(user.as_str());
        Ok(())
    }
}

/// The old name of [`ServerTls`], from when only the federation listener spoke TLS.
#[deprecated(note = "use ServerTls, which serves the client listener too")]
pub type FederationTls = ServerTls;

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
    /// No signing key was given and none could be generated.
    #[error("no signing key: {0}")]
    SigningKey(String),
    /// Federation could not be set up (DNS resolver, TLS roots).
    #[error("federation: {0}")]
    Federation(String),
    /// What an earlier release stored could not be upgraded (the store is unchanged where it
    /// failed).
    #[error("could not upgrade the stored data of an earlier release: {0}")]
    Upgrade(String),
    /// URL previews are enabled and could not be set up (DNS resolver, TLS roots).
    #[error("URL previews: {0}")]
    UrlPreview(String),
    /// The storage could not be read at the start.
    #[error("could not read the storage: {0}")]
    Storage(String),
    /// The media directory could not be made.
    #[error("the media directory: {0}")]
    Media(String),
    /// A setting is not valid.
    #[error("the settings: {0}")]
    Config(String),
    /// An application service registration is not valid (the message names it by `id`).
    #[error("{0}")]
    Appservice(String),
}

/// A second handle on our signing key (the room service signs events, the federation service
/// requests).
fn copy_key(key: &matrix_core::SigningKey) -> Result<matrix_core::SigningKey, BuildError> {
    let version = key.key_id().strip_prefix("ed25519:").unwrap_or(key.key_id());
    matrix_core::SigningKey::from_base64_seed(version, &key.seed_base64())
        .map_err(|e| BuildError::SigningKey(e.to_string()))
}

/// Builds a [`Homeserver`].
#[derive(Default)]
pub struct HomeserverBuilder {
    config: Config,
    storage: Option<Arc<dyn Storage>>,
    signing_key: Option<matrix_core::SigningKey>,
    transport: Option<Arc<dyn matrix_federation::transport::Transport>>,
    preview_resolver: Option<Arc<dyn HostResolver>>,
    url_fetcher: Option<Arc<dyn matrix_federation::media::location::UrlFetcher>>,
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

    /// The key our events are signed with (a new random one otherwise, which suits tests:
    /// a server that federates must keep its key).
    pub fn signing_key(mut self, key: matrix_core::SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// How requests reach other servers (HTTPS with server discovery otherwise); tests wire
    /// homeservers together in process with one (`testing::TestFederation`).
    pub fn federation_transport(
        mut self,
        transport: Arc<dyn matrix_federation::transport::Transport>,
    ) -> Self {
        self.transport = Some(transport);
        self
    }

    /// How URL previews look host names up (the system's DNS otherwise); tests give fixed
    /// answers. Every answer is checked against the preview IP blocklist all the same.
    pub fn url_preview_resolver(mut self, resolver: Arc<dyn HostResolver>) -> Self {
        self.preview_resolver = Some(resolver);
        self
    }

    /// How the `Location` of other servers' media answers is fetched (HTTPS, the local
    /// network refused, otherwise); tests serve such content on a loopback port.
    pub fn media_url_fetcher(
        mut self,
        fetcher: Arc<dyn matrix_federation::media::location::UrlFetcher>,
    ) -> Self {
        self.url_fetcher = Some(fetcher);
        self
    }

    /// Checks the settings and builds the homeserver.
    pub async fn build(self) -> Result<Homeserver, BuildError> {
        let storage = self.storage.ok_or(BuildError::NoStorage)?;
        services::migrate::from_records(&storage)
            .await
            .map_err(|e| BuildError::Upgrade(e.to_string()))?;
        services::rooms::relations::index_stored(&storage)
            .await
            .map_err(|e| BuildError::Upgrade(e.to_string()))?;
        let server_name: OwnedServerName = ServerName::parse(&self.config.server_name)
            .map_err(|e| BuildError::ServerName(self.config.server_name.clone(), e.to_string()))?;
        self.config.well_known.check().map_err(BuildError::Config)?;
        let appservices =
            services::appservice::Appservices::new(&self.config.appservices, server_name.as_str())
                .map_err(|e| BuildError::Appservice(e.to_string()))?;
        services::rooms::user_directory::index_stored(&storage, server_name.as_str())
            .await
            .map_err(|e| BuildError::Upgrade(e.to_string()))?;
        let key = match self.signing_key {
            Some(key) => key,
            None => matrix_core::SigningKey::generate("auto")
                .map_err(|e| BuildError::SigningKey(e.to_string()))?,
        };
        let url_fetcher = match self.url_fetcher {
            Some(fetcher) => Some(fetcher),
            None if self.config.federation.enabled => {
                let https = matrix_federation::media::location::HttpsUrlFetcher::new()
                    .map_err(|e| BuildError::Federation(e.to_string()))?;
                Some(Arc::new(https) as Arc<dyn matrix_federation::media::location::UrlFetcher>)
            }
            None => None,
        };
        let federation = if self.config.federation.enabled {
            let transport = match self.transport {
                Some(transport) => transport,
                None => {
                    let mut options =
                        matrix_federation::FederationOptions::new(server_name.as_str());
                    options.verify_certificates = self.config.federation.verify_certificates;
                    let https = matrix_federation::transport::https::HttpsTransport::new(
                        &options,
                        matrix_federation::transport::https::HttpsOptions::default(),
                    )
                    .map_err(|e| BuildError::Federation(e.to_string()))?;
                    Arc::new(https)
                }
            };
            Some(services::federation::Federation::new(
                &self.config.federation,
                server_name.as_str(),
                copy_key(&key)?,
                storage.clone(),
                transport,
            ))
        } else {
            None
        };
        let url_preview = if self.config.url_preview.enabled {
            let resolver: Arc<dyn HostResolver> = match self.preview_resolver {
                Some(resolver) => resolver,
                None => Arc::new(
                    services::url_preview::fetch::SystemResolver::new()
                        .map_err(|e| BuildError::UrlPreview(e.to_string()))?,
                ),
            };
            let previews =
                services::url_preview::UrlPreviews::new(&self.config.url_preview, resolver)
                    .map_err(|e| BuildError::UrlPreview(e.to_string()))?;
            Some(previews)
        } else {
            None
        };
        let head =
            storage.stream_position().await.map_err(|e| BuildError::Storage(e.to_string()))?;
        let ephemeral = Arc::new(Ephemeral::new(storage.clone(), &self.config.limits, head));
        let rooms = Rooms::new(
            storage.clone(),
            server_name.clone(),
            key,
            ephemeral.clone(),
            self.config.limits.event_cache_bytes,
        );
        let mut collectors: Vec<Box<dyn prometheus_client::collector::Collector>> = Vec::new();
        if let Some(federation) = &federation {
            let sender = federation
                .start_sender(storage.clone())
                .await
                .map_err(|e| BuildError::Federation(e.to_string()))?;
            let sender = Arc::new(sender);
            collectors.push(Box::new(metrics::FederationQueue(sender.clone())));
            ephemeral.federate(sender.clone(), rooms.server_name().as_str());
            rooms.federate(sender, federation.client().clone(), federation.key_provider());
        }
        // Other processes on the same (shared) storage: their events wake our syncs too.
        rooms.follow_other_processes();
        services::push::start(&rooms, self.config.limits.allow_private_push_gateways);
        let presence = services::presence::PresenceTracker::start(
            &self.config.presence,
            storage.clone(),
            ephemeral.clone(),
            rooms.clone(),
        )
        .await
        .map_err(|e| BuildError::Storage(e.to_string()))?;
        if !appservices.is_empty() {
            let feed = services::appservice::transactions::start(
                &appservices,
                &rooms,
                &ephemeral,
                &presence,
                std::time::Duration::from_millis(self.config.limits.appservice_timeout_ms.max(1)),
            );
            ephemeral.feed_appservices(feed);
        }
        let delayed_events = services::delayed_events::DelayedEvents::start(
            storage.clone(),
            rooms.clone(),
            self.config.delayed_events.clone(),
        );
        let metrics = self.config.metrics.enabled.then(|| {
            let caches = rooms.clone();
            collectors.push(Box::new(metrics::Caches(Box::new(move || caches.cache_stats()))));
            Arc::new(metrics::Metrics::new(collectors))
        });
        let state = State {
            metrics,
            appservices,
            registration_nonces: services::admin::RegistrationNonces::default(),
            delayed_events,
            thirdparty: services::thirdparty::ThirdParty::default(),
            accounts: Accounts::new(
                storage.clone(),
                server_name,
                ephemeral.clone(),
                &self.config.limits,
            ),
            sync: Sync::new(rooms.clone(), ephemeral.clone(), presence.clone()),
            presence,
            limiter: RateLimiter::new(self.config.rate_limits),
            key_backups: services::key_backup::KeyBackups::new(
                storage.clone(),
                self.config.limits.max_backup_sessions_per_version,
            ),
            media: services::media::Media::new(
                storage,
                &self.config.server_name,
                &self.config.limits,
                url_fetcher,
            )
            .map_err(|e| BuildError::Media(e.to_string()))?,
            push_rules_lock: tokio::sync::Mutex::new(()),
            federation,
            url_preview,
            rooms,
            ephemeral,
            config: self.config,
        };
        // Each service's own user exists from the start (it is who the service acts as).
        for service in state.appservices.all() {
            let sender = &service.sender;
            let stored = state
                .rooms
                .storage()
                .user(sender.as_str())
                .await
                .map_err(|e| BuildError::Storage(e.to_string()))?;
            if stored.is_none() {
                match state.accounts.create_user(Some(sender.localpart()), None, false, None).await
                {
                    Ok(_) => {}
                    // Created meanwhile by another process on the same storage.
                    Err(e) if e.errcode() == "M_USER_IN_USE" => {}
                    Err(e) => return Err(BuildError::Appservice(e.to_string())),
                }
            }
        }
        let state = Arc::new(state);
        // Room deletions and history purges a stop interrupted.
        services::admin::tasks::resume(&state);
        Ok(Homeserver { state })
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
        self.serve_tls(listener, None, shutdown).await
    }

    /// Answers the client-server API on `listener` as [`Homeserver::serve`] does: over TLS
    /// with `tls` (whose pair may be replaced while it runs, see [`ServerTls::reload_pem`]),
    /// or plain HTTP without.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<ServerTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = self.state.config.http.clone();
        let acceptor = tls.map(|tls| tls.acceptor());
        server::serve(http::router(self.state), listener, &config, acceptor, shutdown).await
    }

    /// Answers the server-server API on `listener` until `shutdown` completes: over TLS with
    /// `tls`, or plain HTTP without (behind a reverse proxy that terminates TLS). Federation
    /// must be enabled in the config.
    pub async fn serve_federation(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<ServerTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = self.state.config.http.clone();
        let acceptor = tls.map(|tls| tls.acceptor());
        server::serve(http::federation::router(self.state), listener, &config, acceptor, shutdown)
            .await
    }

    /// Answers `GET /metrics` (Prometheus text format 0.0.4) on `listener` until `shutdown`
    /// completes. Metrics must be enabled in the config (`[metrics] enabled`); if they are not,
    /// this returns an error at once and nothing is served.
    pub async fn serve_metrics(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Some(metrics) = self.state.metrics.clone() else {
            return Err(std::io::Error::other("metrics are not enabled in the config"));
        };
        let config = self.state.config.http.clone();
        server::serve(http::metrics::router(metrics), listener, &config, None, shutdown).await
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

    /// Creates a room as `creator` would with `createRoom` and no options but `name` (a
    /// private chat of the default room version); answers its id.
    pub async fn create_room(
        &self,
        creator: &ruma::UserId,
        name: Option<&str>,
    ) -> Result<String, ApiError> {
        let request =
            services::rooms::CreateRoom { name: name.map(str::to_owned), ..Default::default() };
        self.state.rooms.create_room(creator, request).await
    }
}
