//! A homeserver for tests: in memory, on a loopback port, registration open.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = matrix_homeserver::testing::TestHomeserver::start().await;
//! let alice = server.register_user("alice", "secret").await;
//! assert_eq!(alice.user_id.as_str(), "@alice:localhost");
//! // Any HTTP client can now talk to `server.base_url()` with `alice.access_token`.
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! let room_id = server.create_room(&alice, Some("Tea")).await;
//! assert!(room_id.starts_with('!'));
//! # }
//! ```

use std::sync::Arc;

use matrix_storage::Storage;
use matrix_storage::memory::MemoryStore;
use tokio::sync::oneshot;

use crate::{Config, Homeserver, RateLimitsConfig, RegistrationMode, Session};

/// A running in-memory homeserver; stopped when dropped.
#[derive(Debug)]
pub struct TestHomeserver {
    homeserver: Homeserver,
    base_url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl TestHomeserver {
    /// Starts one with server name `localhost`, open registration and no rate limits.
    pub async fn start() -> Self {
        Self::start_with(Self::config()).await
    }

    /// The settings [`TestHomeserver::start`] uses: server name `localhost`, open
    /// registration, no rate limits.
    pub fn config() -> Config {
        let mut config = Config::new("localhost");
        config.registration.mode = RegistrationMode::Open;
        config.rate_limits = RateLimitsConfig::disabled();
        config
    }

    /// Starts one with these settings (in memory, on a loopback port).
    pub async fn start_with(config: Config) -> Self {
        Self::start_on(config, Arc::new(MemoryStore::new())).await
    }

    /// Starts one with these settings on a storage backend of the caller's (on a loopback
    /// port).
    pub async fn start_on(config: Config, storage: Arc<dyn Storage>) -> Self {
        let homeserver = Homeserver::builder()
            .config(config)
            .storage(storage)
            .build()
            .await
            .expect("the test homeserver builds");
        Self::serve(homeserver).await
    }

    /// Starts one with these settings (in memory, on a loopback port) whose URL previews look
    /// host names up with `resolver` (fixed answers instead of DNS).
    pub async fn start_with_preview_resolver(
        config: Config,
        resolver: Arc<dyn crate::HostResolver>,
    ) -> Self {
        let homeserver = Homeserver::builder()
            .config(config)
            .storage(Arc::new(MemoryStore::new()))
            .url_preview_resolver(resolver)
            .build()
            .await
            .expect("the test homeserver builds");
        Self::serve(homeserver).await
    }

    /// Serves a built homeserver's client API on a loopback port.
    async fn serve(homeserver: Homeserver) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("the port's address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = homeserver.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server.serve(listener, shutdown).await {
                eprintln!("the test homeserver stopped: {e}");
            }
        });
        TestHomeserver { homeserver, base_url: format!("http://{address}"), stop: Some(stop) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The homeserver itself.
    pub fn homeserver(&self) -> &Homeserver {
        &self.homeserver
    }

    /// Its storage, for tests of what the server stored (or refused to).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        self.homeserver.state.rooms.storage()
    }

    /// The server name.
    pub fn server_name(&self) -> &str {
        &self.homeserver.config().server_name
    }

    /// Its signed requests to other servers, when federation is on: tests play another
    /// server with it (an honest one, or one asking for what it should not see).
    pub fn federation_client(&self) -> Option<&matrix_federation::client::FederationClient> {
        self.homeserver.state.federation.as_ref().map(|f| &**f.client())
    }

    /// Creates `@localpart:localhost` with `password` and logs it in on a new device.
    pub async fn register_user(&self, localpart: &str, password: &str) -> Session {
        self.homeserver
            .create_user(localpart, Some(password), false)
            .await
            .expect("the user is created");
        self.homeserver.login(localpart, password).await.expect("the user logs in")
    }

    /// Creates a private room of `creator`'s (the default room version), named `name` if
    /// given; answers the room id.
    pub async fn create_room(&self, creator: &Session, name: Option<&str>) -> String {
        self.homeserver.create_room(&creator.user_id, name).await.expect("the room is created")
    }
}

impl Drop for TestHomeserver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Several homeservers that federate in process: each one's requests to another reach that
/// one's federation router directly, with no sockets, TLS or DNS. Links between two servers
/// can be cut and healed, to make forks.
#[derive(Debug)]
pub struct TestFederation {
    servers: Vec<TestHomeserver>,
    net: Arc<Net>,
}

/// What an interceptor ([`TestFederation::intercept`]) does with a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Intercepted {
    /// The request goes to the destination as usual.
    Pass,
    /// The request fails as if the destination were unreachable.
    Drop,
    /// The destination seems to answer this status and body (a misbehaving server).
    Answer(u16, Vec<u8>),
    /// The request goes to the destination after this long (a slow server or link).
    Delay(std::time::Duration),
    /// The destination seems to answer this status, these headers and this body.
    AnswerWith(u16, Vec<(String, String)>, Vec<u8>),
}

/// A test's hand on requests to one server: sees the requesting server's name and the request
/// (method, path and query, body), and says what becomes of it (passed, dropped, answered, or
/// delayed).
pub type Interceptor = Arc<dyn Fn(&str, &http::Request<bytes::Bytes>) -> Intercepted + Send + Sync>;

/// The in-process network: routers by server name, the cut links, and interceptors by
/// destination.
#[derive(Default)]
struct Net {
    routers: std::sync::RwLock<std::collections::HashMap<String, axum::Router>>,
    cut: std::sync::RwLock<std::collections::HashSet<(String, String)>>,
    interceptors: std::sync::RwLock<std::collections::HashMap<String, Interceptor>>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

/// One server's way onto the in-process network.
#[derive(Debug)]
struct InProcess {
    from: String,
    net: Arc<Net>,
}

/// The most bytes an in-process answer may have (as a real transport caps them).
const MAX_ANSWER: usize = 64 << 20;

#[async_trait::async_trait]
impl matrix_federation::transport::Transport for InProcess {
    async fn send(
        &self,
        destination: &str,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, matrix_federation::FederationError> {
        use tower::ServiceExt;
        let unreachable = |reason: &str| matrix_federation::FederationError::Unreachable {
            destination: destination.to_owned(),
            reason: reason.to_owned(),
        };
        let link = (self.from.clone(), destination.to_owned());
        if self.net.cut.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&link) {
            return Err(unreachable("the link is cut"));
        }
        let interceptor = self
            .net
            .interceptors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .cloned();
        match interceptor.map(|intercept| intercept(&self.from, &request)) {
            None | Some(Intercepted::Pass) => {}
            Some(Intercepted::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Intercepted::Drop) => return Err(unreachable("the request was dropped")),
            Some(Intercepted::Answer(status, body)) => {
                let mut response = http::Response::new(bytes::Bytes::from(body));
                *response.status_mut() = http::StatusCode::from_u16(status)
                    .map_err(|_| unreachable("an interceptor answered a status that is none"))?;
                return Ok(response);
            }
            Some(Intercepted::AnswerWith(status, headers, body)) => {
                let mut response = http::Response::new(bytes::Bytes::from(body));
                *response.status_mut() = http::StatusCode::from_u16(status)
                    .map_err(|_| unreachable("an interceptor answered a status that is none"))?;
                for (name, value) in headers {
                    let name = http::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| unreachable("an interceptor answered a bad header name"))?;
                    let value = http::HeaderValue::from_str(&value)
                        .map_err(|_| unreachable("an interceptor answered a bad header value"))?;
                    response.headers_mut().append(name, value);
                }
                return Ok(response);
            }
        }
        let router = self
            .net
            .routers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .cloned()
            .ok_or_else(|| unreachable("no such server"))?;
        let mut request = request.map(axum::body::Body::from);
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let response = router.oneshot(request).await.map_err(|e| unreachable(&e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_ANSWER)
            .await
            .map_err(|_| unreachable("the answer is too large"))?;
        Ok(http::Response::from_parts(parts, body))
    }
}

/// DNS that knows no name: the test network's URLs are loopback addresses.
#[derive(Debug)]
struct NoDns;

#[async_trait::async_trait]
impl matrix_federation::resolve::Dns for NoDns {
    async fn srv(
        &self,
        _: &str,
    ) -> Result<Vec<matrix_federation::resolve::SrvRecord>, matrix_federation::resolve::DnsError>
    {
        Ok(Vec::new())
    }
    async fn ips(
        &self,
        _: &str,
    ) -> Result<Vec<std::net::IpAddr>, matrix_federation::resolve::DnsError> {
        Ok(Vec::new())
    }
}

/// The media `Location` fetcher of the test network: plain HTTP to loopback addresses is
/// allowed (the local networks still are not).
fn loopback_fetcher() -> Arc<dyn matrix_federation::media::location::UrlFetcher> {
    let fetcher =
        matrix_federation::media::location::HttpsUrlFetcher::with_dns(Arc::new(NoDns), true)
            .expect("the test fetcher builds");
    Arc::new(fetcher)
}

impl TestFederation {
    /// Starts one in-memory homeserver per name (`a.test`, `b.test`), federation on, all
    /// linked.
    pub async fn start(names: &[&str]) -> Self {
        Self::start_with(names, |_| TestHomeserver::config()).await
    }

    /// Like [`TestFederation::start`], each server with the settings `config` answers for
    /// its name (the server name and `federation.enabled` are set over them).
    pub async fn start_with(names: &[&str], config: impl Fn(&str) -> Config) -> Self {
        let net = Arc::new(Net::default());
        let mut servers = Vec::new();
        for name in names {
            let mut config = config(name);
            config.server_name = (*name).to_owned();
            config.federation.enabled = true;
            let transport = Arc::new(InProcess { from: (*name).to_owned(), net: net.clone() });
            let homeserver = Homeserver::builder()
                .config(config)
                .storage(Arc::new(MemoryStore::new()))
                .federation_transport(transport)
                .media_url_fetcher(loopback_fetcher())
                .build()
                .await
                .expect("the test homeserver builds");
            net.routers.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(
                (*name).to_owned(),
                crate::http::federation::router(homeserver.state.clone()),
            );
            servers.push(TestHomeserver::serve(homeserver).await);
        }
        TestFederation { servers, net }
    }

    /// The servers, in the order they were named.
    pub fn servers(&self) -> &[TestHomeserver] {
        &self.servers
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> &TestHomeserver {
        self.servers
            .iter()
            .find(|s| s.homeserver.config().server_name == name)
            .expect("a server of this federation")
    }

    /// Cuts the link between `a` and `b`, both ways: their requests to each other fail as
    /// an unreachable server's would.
    pub fn cut(&self, a: &str, b: &str) {
        let mut cut = self.net.cut.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        cut.insert((a.to_owned(), b.to_owned()));
        cut.insert((b.to_owned(), a.to_owned()));
    }

    /// Puts `interceptor` between every server and `destination` (replacing the one there):
    /// it sees each request to `destination` first and passes, drops or answers it. For tests
    /// of a server that misbehaves, or of a queue whose transactions are lost.
    pub fn intercept(
        &self,
        destination: &str,
        interceptor: impl Fn(&str, &http::Request<bytes::Bytes>) -> Intercepted + Send + Sync + 'static,
    ) {
        let interceptor: Interceptor = Arc::new(interceptor);
        self.net
            .interceptors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(destination.to_owned(), interceptor);
    }

    /// Removes the interceptor of `destination`: its requests go through as usual again.
    pub fn stop_intercepting(&self, destination: &str) {
        self.net
            .interceptors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(destination);
    }

    /// Heals the link between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        let mut cut = self.net.cut.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        cut.remove(&(a.to_owned(), b.to_owned()));
        cut.remove(&(b.to_owned(), a.to_owned()));
    }
}
