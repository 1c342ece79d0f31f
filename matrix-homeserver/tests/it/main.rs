//! The one integration-test binary of matrix-homeserver: every endpoint over real HTTP through
//! `TestHomeserver`, with its failure cases.

mod abuse_bounds;
mod abuse_ephemeral;
mod abuse_http;
mod abuse_keys;
mod abuse_limits;
mod abuse_logins;
mod account;
mod account_extras;
mod admin;
mod admin_destinations;
mod admin_media;
mod admin_moderation;
mod admin_purge;
mod admin_rooms;
mod admin_tokens;
mod admin_users;
mod appservice;
mod appservice_directory;
mod appservice_push;
mod delayed_events;
mod directory;
mod discovery;
mod e2ee_backup;
mod e2ee_cross_signing;
mod e2ee_dehydrated;
mod erase;
mod faults;
mod federation;
mod federation_acl;
mod federation_backfill;
mod federation_directory;
mod federation_edus;
mod federation_gaps;
mod federation_invites;
mod federation_joins;
mod federation_knock;
mod federation_reads;
mod federation_receive;
mod jump_to_date;
mod knock;
mod media;
mod media_location;
mod media_upload;
mod metrics;
mod presence;
mod push;
mod push_rules;
mod relations;
mod rooms;
mod search;
mod sliding_sync;
mod spec;
mod sync;
mod trust;
mod upgrade;
mod url_preview;
mod visibility;

use std::sync::Arc;

use matrix_homeserver::Config;
use matrix_homeserver::testing::TestHomeserver;
use serde_json::Value;

/// A store shared by the servers of a test (a restart).
pub(crate) type Storage = Arc<dyn matrix_storage::Storage>;

/// The storage backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Memory,
    Sled,
    Postgres,
}

/// A test server, with what its storage needs kept alive.
pub(crate) struct Server {
    server: TestHomeserver,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A server, with the directory its storage lives in (if any).
    pub(crate) fn new(server: TestHomeserver, dir: Option<tempfile::TempDir>) -> Self {
        Server { server, _dir: dir }
    }
}

impl std::ops::Deref for Server {
    type Target = TestHomeserver;
    fn deref(&self) -> &TestHomeserver {
        &self.server
    }
}

/// A server on `backend` with [`TestHomeserver::config`]; `None` when the backend is not
/// available here (PostgreSQL without `DATABASE_URL`).
pub(crate) async fn start(backend: Backend) -> Option<Server> {
    start_with(backend, TestHomeserver::config()).await
}

/// A server on `backend` with `config`.
pub(crate) async fn start_with(backend: Backend, config: Config) -> Option<Server> {
    let (storage, dir) = open_storage(backend).await?;
    Some(Server { server: TestHomeserver::start_on(config, storage).await, _dir: dir })
}

/// An empty store on `backend`, with the directory it lives in (if any); `None` when the
/// backend is not available here.
pub(crate) async fn open_storage(
    backend: Backend,
) -> Option<(Arc<dyn matrix_storage::Storage>, Option<tempfile::TempDir>)> {
    let (storage, dir): (Arc<dyn matrix_storage::Storage>, _) = match backend {
        Backend::Memory => (Arc::new(matrix_storage::memory::MemoryStore::new()), None),
        Backend::Sled => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let options = matrix_storage::sled::SledOptions::default();
            let store =
                matrix_storage::sled::SledStore::open(dir.path(), &options).expect("sled opens");
            (Arc::new(store), Some(dir))
        }
        Backend::Postgres => {
            let url = database_url()?;
            let options =
                matrix_storage::postgres::PostgresOptions::new(url).with_schema(fresh_schema());
            let store = matrix_storage::postgres::PostgresStore::open(&options)
                .await
                .expect("PostgreSQL opens");
            (Arc::new(store), None)
        }
    };
    Some((storage, dir))
}

/// A server on `backend` with [`TestHomeserver::config`] changed by `change`.
pub(crate) async fn start_changed(
    backend: Backend,
    change: impl FnOnce(&mut Config),
) -> Option<Server> {
    let mut config = TestHomeserver::config();
    change(&mut config);
    start_with(backend, config).await
}

/// `DATABASE_URL`, or `None` (said once on stderr, past the test harness's capture).
fn database_url() -> Option<String> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        SAID.call_once(|| {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the PostgreSQL runs of the homeserver tests need DATABASE_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/test); it is not set"
            );
        });
    }
    url
}

fn fresh_schema() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("hs_{}_{nanos}_{n}", std::process::id())
}

/// Runs each named `async fn(Backend)` on every backend: `memory::name`, `sled::name`,
/// `postgres::name` (which passes without running when PostgreSQL is not available).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Memory).await })*
        }
        mod sled {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sled).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Postgres).await })*
        }
    };
}

/// A tiny client for the tests: JSON in, status and JSON out.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    pub(crate) token: Option<String>,
}

impl Client {
    pub(crate) fn new(server: &matrix_homeserver::testing::TestHomeserver) -> Self {
        Client { http: reqwest::Client::new(), base: server.base_url().to_owned(), token: None }
    }

    /// A client of the server at `base` (its base URL).
    pub(crate) fn at(base: &str) -> Self {
        Client { http: reqwest::Client::new(), base: base.to_owned(), token: None }
    }

    pub(crate) fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// A raw body, for malformed requests.
    pub(crate) async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let json =
            serde_json::from_slice(&response.bytes().await.expect("a body")).unwrap_or(Value::Null);
        (status, json)
    }
}

/// The errcode of an error body.
pub(crate) fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("(none)")
}
