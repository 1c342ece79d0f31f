//! The crash test: the `homeserver` binary under mixed load from a few concurrent clients is
//! killed with SIGKILL at a random point, restarted on the same data, and must still have
//! everything it answered 2xx for (the storage issue: "whatever a client is told is saved is
//! in storage before the 2xx").
//!
//! The load ([`load`]): messages with transaction ids from two users, device key uploads with
//! batches of one-time keys, one-time key claims by another user (two at once), to-device
//! messages each carrying a sequence number, a device syncing them (keeping its `next_batch`
//! token like a client, across the restart), read receipts, account data, alias creation and
//! display name changes. After each restart ([`check`]): transaction ids are retried (the
//! same event id, no second event; to-device messages not delivered twice), then everything
//! acknowledged is looked for, and no one-time key may ever have been handed out twice.
//!
//! Five kills per backend, at delays drawn from a seeded generator (the seed is printed;
//! `CRASH_SEED=N` repeats the delays and the retried samples, not the interleaving): on sled
//! (in a temporary directory) always, and on PostgreSQL when `DATABASE_URL` is set (in a
//! schema of the run's own), skipped with a word otherwise.
//!
//! The same binary also runs the two-process test ([`multi`]): two processes serving one
//! PostgreSQL database at once.
//!
//! A SIGKILL loses what the process holds, not what it handed to the kernel: a lost page
//! cache (a power cut) is not what this test makes.

mod check;
#[path = "../common/mod.rs"]
mod common;
mod load;
mod multi;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::Ledger;

const V3: &str = "/_matrix/client/v3";

/// How many kill and restart rounds each backend goes through.
const ROUNDS: usize = 5;

/// The window of each round's kill, in milliseconds after the load started: early (some
/// clients still starting) to late (queues, key stocks and the room's timeline built up).
const KILL_WINDOWS: [(u64, u64); ROUNDS] =
    [(150, 600), (600, 1200), (1200, 2000), (2000, 3000), (3000, 4000)];

/// How long a started binary may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long any one request may take (a long-polling sync asks for at most 500 ms).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What a request came to.
#[derive(Debug)]
enum Answer {
    /// A 2xx with its JSON body, read whole: the server says it is done.
    Ok(Value),
    /// Any other status, with the body as text: not acknowledged.
    Refused(u16, String),
    /// No answer (or not all of it): the server died, or the connection did.
    Lost(String),
}

/// A logged-in device of a user, on the server of the moment.
#[derive(Debug, Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    user_id: String,
    device_id: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request =
            self.http.request(method, format!("{}{V3}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Answer::Lost(e.to_string()),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Answer::Lost(format!("the body of a {status}: {e}")),
        };
        if !(200..300).contains(&status) {
            return Answer::Refused(status, text);
        }
        match serde_json::from_str(&text) {
            Ok(value) => Answer::Ok(value),
            Err(_) => Answer::Refused(status, format!("a {status} whose body is not JSON: {text}")),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// A request the checks need answered: a restarted server must answer it 2xx.
    async fn must(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        match self.call(method.clone(), path, body).await {
            Answer::Ok(value) => value,
            other => panic!("{method} {path} as {} after the restart: {other:?}", self.user_id),
        }
    }
}

/// The storage the binary runs on.
#[derive(Debug, Clone)]
enum Backend {
    Sled,
    Fjall,
    /// A PostgreSQL URL whose connections use a schema of this run's own.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Fjall => "fjall",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn config(&self) -> String {
        match self {
            Backend::Sled => "[storage]\nbackend = \"sled\"\n".to_owned(),
            Backend::Fjall => "[storage]\nbackend = \"fjall\"\n".to_owned(),
            Backend::Postgres(url) => {
                format!("[storage]\nbackend = \"postgres\"\npostgres_url = {url:?}\n")
            }
        }
    }
}

/// The binary serving on a free loopback port from `dir`: open registration, rate limits
/// off; killed (SIGKILL) and waited for when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// Start number `n` on the data in `dir` (each start gets a port and a log of its own).
    async fn start(dir: &Path, backend: &Backend, n: usize) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let config = dir.join("homeserver.toml");
        // The queues and stocks are raised past what the load builds up while nobody
        // drains them around a kill, so that no refusal hides a loss.
        let text = format!(
            "[server]\nname = \"localhost\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
             [registration]\nmode = \"open\"\nenable_registration_without_verification = true\n[rate_limits]\nenabled = false\n\
             [limits]\nmax_one_time_keys_per_device = 1000\nmax_to_device_per_sender = 1000\n{}",
            dir.join("data").display().to_string(),
            backend.config()
        );
        std::fs::write(&config, text).expect("writes the config");
        let log = dir.join(format!("server-{n}.log"));
        let stderr = File::create(&log).expect("creates the server's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_homeserver"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the homeserver binary starts");
        // Made at once, so that the process is killed and waited for whatever happens next.
        let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), log };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            let versions = http.get(format!("{}/_matrix/client/versions", server.base)).send();
            if versions.await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the binary exited ({status}) before answering: {}", server.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the binary did not answer within {READY_WITHIN:?}: {}", server.log_text());
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no chance to flush or close anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A user's session, which outlives the server processes.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    user_id: String,
    device_id: String,
}

impl Session {
    fn client(&self, server: &Server) -> Client {
        let http =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client");
        Client {
            http,
            base: server.base.clone(),
            token: self.token.clone(),
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
        }
    }
}

/// Registers `name` through the open registration's dummy stage.
async fn register(server: &Server, name: &str) -> Session {
    let body = json!({"username": name, "password": "a long password",
                      "auth": {"type": "m.login.dummy"}});
    let response = reqwest::Client::new()
        .post(format!("{}{V3}/register", server.base))
        .json(&body)
        .send()
        .await
        .expect("the server answers a registration");
    let status = response.status();
    let session: Value = response.json().await.expect("a registration answers JSON");
    assert!(status.is_success(), "registering {name}: {status} {session}");
    let field = |key: &str| {
        session[key].as_str().unwrap_or_else(|| panic!("no {key} in {session}")).to_owned()
    };
    Session {
        token: field("access_token"),
        user_id: field("user_id"),
        device_id: field("device_id"),
    }
}

/// Who does what (see [`load`]); the sessions and the room outlive the server processes.
#[derive(Debug, Clone)]
struct Sessions {
    /// Sends messages; uploads device and one-time keys.
    alice: Session,
    /// Claims alice's one-time keys; sends receipts, account data, aliases, display names.
    bob: Session,
    /// Sends messages and to-device messages (to dave).
    carol: Session,
    /// Syncs to-device messages.
    dave: Session,
    /// The room alice, bob and carol are in.
    room: String,
}

/// The clients of the sessions on `server`.
#[derive(Debug, Clone)]
struct Cast {
    alice: Client,
    bob: Client,
    carol: Client,
    dave: Client,
    room: String,
}

impl Cast {
    fn new(sessions: &Sessions, server: &Server) -> Cast {
        Cast {
            alice: sessions.alice.client(server),
            bob: sessions.bob.client(server),
            carol: sessions.carol.client(server),
            dave: sessions.dave.client(server),
            room: sessions.room.clone(),
        }
    }

    /// The two users who send messages, by the index the ledger keeps.
    fn messenger(&self, index: usize) -> &Client {
        if index == 0 { &self.alice } else { &self.carol }
    }
}

async fn setup(server: &Server) -> Sessions {
    let alice = register(server, "alice").await;
    let bob = register(server, "bob").await;
    let carol = register(server, "carol").await;
    let dave = register(server, "dave").await;
    let cast = |s: &Session| s.client(server);
    let created = cast(&alice)
        .must(reqwest::Method::POST, "/createRoom", Some(&json!({"preset": "public_chat"})))
        .await;
    let room = created["room_id"].as_str().expect("createRoom answers a room id").to_owned();
    for member in [&bob, &carol] {
        cast(member).must(reqwest::Method::POST, &format!("/join/{room}"), Some(&json!({}))).await;
    }
    Sessions { alice, bob, carol, dave, room }
}

/// A small seeded generator (SplitMix64): the kill points and the retried samples.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[low, high)`.
    fn between(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    /// Up to `n` distinct items of `items`.
    fn sample<T: Clone + Ord>(&mut self, items: &[T], n: usize) -> Vec<T> {
        let mut picked = std::collections::BTreeSet::new();
        for _ in 0..n.saturating_mul(4) {
            if picked.len() >= n.min(items.len()) {
                break;
            }
            let len = u64::try_from(items.len()).unwrap_or(u64::MAX);
            let index = usize::try_from(self.next() % len.max(1)).unwrap_or(0);
            if let Some(item) = items.get(index) {
                picked.insert(item.clone());
            }
        }
        picked.into_iter().collect()
    }
}

/// `CRASH_SEED`, or one from the clock.
fn seed() -> u64 {
    if let Some(seed) = std::env::var("CRASH_SEED").ok().and_then(|s| s.trim().parse().ok()) {
        return seed;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(0))
}

/// Percent-encodes everything but ASCII letters and digits.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(
            |b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            },
        )
        .collect()
}

/// Runs the rounds on `backend`: load, kill, restart, check; [`ROUNDS`] times on the same
/// data.
async fn crash_and_check(backend: Backend) {
    let name = backend.name();
    let seed = seed();
    eprintln!("crash ({name}): seed {seed} (CRASH_SEED={seed} repeats these kill points)");
    let began = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut server = Server::start(dir.path(), &backend, 0).await;
    let sessions = setup(&server).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for (round, window) in KILL_WINDOWS.into_iter().enumerate() {
        let delay = Duration::from_millis(rng.between(window));
        let tasks = load::spawn(&Cast::new(&sessions, &server), &ledger);
        tokio::time::sleep(delay).await;
        server.kill();
        for task in tasks {
            task.await.expect("a load task ended without panicking");
        }
        let before = ledger.lock().expect("the ledger lock").take_tally();
        let restarting = Instant::now();
        drop(server);
        server = Server::start(dir.path(), &backend, round + 1).await;
        let restart = restarting.elapsed();
        let cast = Cast::new(&sessions, &server);
        let report = check::after_restart(&cast, &ledger, &mut rng).await;
        eprintln!(
            "crash ({name}) round {}: killed {delay:?} into the load ({before}); restarted in \
             {restart:?}; checked: {}",
            round + 1,
            report.summary
        );
        if !report.problems.is_empty() {
            // The data and the servers' logs are kept for a look.
            drop(server);
            let kept = dir.keep();
            panic!(
                "crash ({name}, seed {seed}) round {}: lost or duplicated after a SIGKILL and a \
                 restart:\n  {}\n(the data and the servers' logs are kept in {})",
                round + 1,
                report.problems.join("\n  "),
                kept.display()
            );
        }
    }
    drop(server);
    eprintln!(
        "crash ({name}): {ROUNDS} kills, nothing acknowledged lost or doubled, in {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_what_it_acknowledged_across_sigkill() {
    crash_and_check(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_keeps_what_it_acknowledged_across_sigkill() {
    crash_and_check(Backend::Fjall).await;
}

/// A PostgreSQL backend in a schema of this run's own (see [`common::postgres_schema_url`]),
/// or `None` when `DATABASE_URL` is not set.
async fn postgres_backend(prefix: &str) -> Option<Backend> {
    common::postgres_schema_url(prefix).await.map(Backend::Postgres)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_what_it_acknowledged_across_sigkill() {
    let Some(backend) = postgres_backend("crash").await else {
        eprintln!(
            "skipped: the PostgreSQL half of the crash test needs DATABASE_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test); it is not set"
        );
        return;
    };
    crash_and_check(backend).await;
}

/// Two processes on one database ([`multi`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_serve_one_database() {
    let Some(backend) = postgres_backend("multi").await else {
        eprintln!(
            "skipped: the two-process test needs DATABASE_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test); it is not set"
        );
        return;
    };
    multi::two_processes_one_database(backend).await;
}
