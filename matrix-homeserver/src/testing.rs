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
