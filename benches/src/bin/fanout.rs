//! Outbound federation fan-out: how long a message in a room shared with other servers takes
//! to reach each of them. In one process, `servers + 1` of our homeservers on loopback, each
//! with a client listener and a TLS federation listener (a self-signed certificate made at
//! start, certificates not verified), server names `127.0.0.1:PORT`. A user of the host
//! server creates a public room, one user of every other server joins it through the host, a
//! second local user joins too, and every one of them long-polls `/sync`. The host user then
//! sends messages, paced and then in a burst, and for each message and each syncing user the
//! tool notes the delay from the send's `200` to the sync answer that carries it.
//!
//! ```text
//! fanout [--messages 200] [--interval-ms 20] [--burst 200] [--servers 10]
//!        [--storage sled|memory]
//! ```
//!
//! `--burst 0` skips the burst; `--messages 0` the paced run.
//!
//! The host's federation transport is the real one (HTTPS) wrapped to note when each
//! transaction (`PUT /send`) started and ended and which messages it carried, so that a
//! remote delay splits into the wait in the host's outbound queue (from the send's `200` to
//! the start of the transaction that carries the message) and the rest (the request, the
//! receiver's checks and storage, its sync waking).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use matrix_homeserver::matrix_federation::transport::Transport;
use matrix_homeserver::matrix_federation::transport::https::{HttpsOptions, HttpsTransport};
use matrix_homeserver::matrix_federation::{FederationError, FederationOptions};
use matrix_homeserver::{Config, Homeserver, RateLimitsConfig, ServerTls};
use matrix_storage::Storage;
use matrix_storage::memory::MemoryStore;
use matrix_storage::sled::{SledOptions, SledStore};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The homeserver binary's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a message may take to reach everybody before it counts as lost.
const DELIVERY_WITHIN: Duration = Duration::from_secs(30);

/// A filter with the largest timeline a sync answers (100 events), members lazily.
const FILTER: &str = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A100%7D%2C%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D";

const PASSWORD: &str = "fan-out bench password";

struct Args {
    messages: usize,
    interval_ms: u64,
    burst: usize,
    servers: usize,
    storage: String,
}

fn args() -> Args {
    let mut args =
        Args { messages: 200, interval_ms: 20, burst: 200, servers: 10, storage: "sled".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => args.messages = value.parse().expect("--messages: a number"),
            "--interval-ms" => args.interval_ms = value.parse().expect("--interval-ms: a number"),
            "--burst" => args.burst = value.parse().expect("--burst: a number"),
            "--servers" => args.servers = value.parse().expect("--servers: a number"),
            "--storage" => args.storage = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Percent-encodes everything but unreserved characters (for room ids and server names in
/// paths and queries).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One transaction the host sent.
#[derive(Debug)]
struct TxnRecord {
    destination: String,
    started: Instant,
    finished: Instant,
    /// The `fanout_id`s of the messages it carried.
    ids: Vec<String>,
}

/// The host's transactions, in the order they ended.
type TxnLog = Arc<Mutex<Vec<TxnRecord>>>;

/// The HTTPS transport, noting every `PUT /send` in a [`TxnLog`].
#[derive(Debug)]
struct TimedTransport {
    inner: HttpsTransport,
    log: TxnLog,
}

/// The `fanout_id`s of the PDUs in a transaction's body.
fn fanout_ids(body: &[u8]) -> Vec<String> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    body["pdus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pdu| pdu["content"]["fanout_id"].as_str().map(str::to_owned))
        .collect()
}

#[async_trait]
impl Transport for TimedTransport {
    async fn send(
        &self,
        destination: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        if !request.uri().path().starts_with("/_matrix/federation/v1/send/") {
            return self.inner.send(destination, request).await;
        }
        let ids = fanout_ids(request.body());
        let started = Instant::now();
        let answer = self.inner.send(destination, request).await;
        let record = TxnRecord {
            destination: destination.to_owned(),
            started,
            finished: Instant::now(),
            ids,
        };
        self.log.lock().expect("lock").push(record);
        answer
    }
}

/// One of our homeservers, serving until the process ends.
struct Node {
    /// `127.0.0.1:FEDPORT`.
    server_name: String,
    /// `http://127.0.0.1:PORT`.
    client_url: String,
    homeserver: Homeserver,
    /// The sled directory, removed at the end.
    dir: Option<tempfile::TempDir>,
}

/// Starts a homeserver with federation on, listening on two fresh loopback ports.
async fn start_node(
    storage_kind: &str,
    tls: &ServerTls,
    stop: &watch::Receiver<bool>,
    log: Option<TxnLog>,
) -> Node {
    let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a client port");
    let federation = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a federation port");
    let client_url = format!("http://{}", client.local_addr().expect("an address"));
    let server_name = format!("127.0.0.1:{}", federation.local_addr().expect("an address").port());
    let mut config = Config::new(server_name.clone());
    config.rate_limits = RateLimitsConfig::disabled();
    config.federation.enabled = true;
    config.federation.verify_certificates = false;
    let (storage, dir): (Arc<dyn Storage>, _) = match storage_kind {
        "sled" => {
            let dir = tempfile::tempdir().expect("a directory");
            let store = SledStore::open(dir.path(), &SledOptions::default()).expect("sled opens");
            (Arc::new(store), Some(dir))
        }
        "memory" => (Arc::new(MemoryStore::new()), None),
        other => panic!("unknown storage {other} (sled or memory)"),
    };
    let mut builder = Homeserver::builder().config(config).storage(storage);
    if let Some(log) = log {
        let mut options = FederationOptions::new(server_name.clone());
        options.verify_certificates = false;
        let inner = HttpsTransport::new(&options, HttpsOptions::default()).expect("a transport");
        builder = builder.federation_transport(Arc::new(TimedTransport { inner, log }));
    }
    let homeserver = builder.build().await.expect("builds");
    let shutdown = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let served = homeserver.clone();
    let until = shutdown(stop.clone());
    tokio::spawn(async move { served.serve(client, until).await.expect("client API") });
    let served = homeserver.clone();
    let (until, tls) = (shutdown(stop.clone()), tls.clone());
    tokio::spawn(async move {
        served.serve_federation(federation, Some(tls), until).await.expect("federation API")
    });
    Node { server_name, client_url, homeserver, dir }
}

/// A user logged in on one of the nodes, over HTTP.
#[derive(Clone)]
struct User {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl User {
    async fn create(node: &Node, http: &reqwest::Client, localpart: &str) -> User {
        node.homeserver.create_user(localpart, Some(PASSWORD), false).await.expect("a user");
        let session = node.homeserver.login(localpart, PASSWORD).await.expect("logs in");
        User { http: http.clone(), base: node.client_url.clone(), token: session.access_token }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/_matrix/client/v3{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({"error": e.to_string()})),
        }
    }
}

/// When each message (by its `fanout_id`) reached one syncing user, and how its syncs went.
#[derive(Default)]
struct Arrivals {
    at: HashMap<String, Instant>,
    /// Sync answers that carried at least one message, and how many had a limited timeline.
    answers_with_messages: usize,
    limited: usize,
}

/// Long-polls `/sync` for `user` forever, noting when each message shows up.
fn spawn_syncer(user: User, arrivals: Arc<Mutex<Arrivals>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut since: Option<String> = None;
        loop {
            let path = match &since {
                None => format!("/sync?filter={FILTER}"),
                Some(since) => format!("/sync?filter={FILTER}&timeout=30000&since={since}"),
            };
            let (status, body) = user.call(reqwest::Method::GET, &path, None).await;
            let now = Instant::now();
            if status != 200 {
                eprintln!("sync answered {status}: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let mut arrivals = arrivals.lock().expect("lock");
            let mut carried = false;
            for room in body["rooms"]["join"].as_object().into_iter().flat_map(|r| r.values()) {
                if room["timeline"]["limited"] == true && since.is_some() {
                    arrivals.limited += 1;
                }
                for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                    if let Some(id) = event["content"]["fanout_id"].as_str() {
                        carried = true;
                        arrivals.at.entry(id.to_owned()).or_insert(now);
                    }
                }
            }
            arrivals.answers_with_messages += usize::from(carried);
            drop(arrivals);
            since = body["next_batch"].as_str().map(str::to_owned).or(since);
        }
    })
}

/// Whether every syncer saw message `id`.
fn seen_by_all(syncers: &[Arc<Mutex<Arrivals>>], id: &str) -> bool {
    syncers.iter().all(|s| s.lock().expect("lock").at.contains_key(id))
}

/// Sends a message with `fanout_id` = `id`; answers when its `200` came.
async fn send(sender: &User, room: &str, id: &str) -> Instant {
    let body = json!({"msgtype": "m.text", "body": format!("fan-out {id}"), "fanout_id": id});
    let path = format!("/rooms/{}/send/m.room.message/{id}", encode(room));
    let (status, answer) = sender.call(reqwest::Method::PUT, &path, Some(&body)).await;
    assert_eq!(status, 200, "send {id}: {answer}");
    Instant::now()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `later - earlier` in ms, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        later.duration_since(earlier).as_secs_f64() * 1000.0
    } else {
        -(earlier.duration_since(later).as_secs_f64() * 1000.0)
    }
}

/// p50/p90/p99/max of unsorted values, as text.
fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1} ms ({} values)",
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(f64::NAN),
        values.len()
    )
}

/// Delays in ms, sorted, with how many pairs were expected.
struct Delays {
    sorted: Vec<f64>,
    expected: usize,
}

impl Delays {
    fn row(&self, label: &str) -> String {
        let s = &self.sorted;
        format!(
            "| {label} | {}/{} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.len(),
            self.expected,
            percentile(s, 50.0),
            percentile(s, 90.0),
            percentile(s, 99.0),
            s.last().copied().unwrap_or(f64::NAN),
        )
    }
}

/// The delays from each send's `200` (or its start) to its arrival at the given syncers.
fn delays(acked: &[Sent], syncers: &[Arc<Mutex<Arrivals>>], from_start: bool) -> Delays {
    let mut sorted = Vec::new();
    for syncer in syncers {
        let arrivals = syncer.lock().expect("lock");
        for sent in acked {
            if let Some(seen) = arrivals.at.get(&sent.id) {
                // Signed: a sync may answer before the sender has read its `200`.
                sorted.push(signed_ms(*seen, if from_start { sent.begin } else { sent.acked }));
            }
        }
    }
    sorted.sort_by(f64::total_cmp);
    Delays { sorted, expected: acked.len() * syncers.len() }
}

/// A message sent: its `fanout_id`, when the send started and when its `200` came.
struct Sent {
    id: String,
    begin: Instant,
    acked: Instant,
}

/// Splits each remote delay at the start of the host's transaction that carried the message
/// to that server, and prints what the host's transactions were.
fn explain(
    acked: &[Sent],
    remote: &[Arc<Mutex<Arrivals>>],
    remote_names: &[String],
    log: &TxnLog,
    mode: &str,
) {
    let log = log.lock().expect("lock");
    let prefix = format!("{mode}-");
    let mut first: HashMap<(&str, &str), &TxnRecord> = HashMap::new();
    let (mut txns, mut pdus, mut most, mut round_trips) = (0usize, 0usize, 0usize, Vec::new());
    for record in log.iter() {
        let ours: Vec<&String> = record.ids.iter().filter(|id| id.starts_with(&prefix)).collect();
        if ours.is_empty() {
            continue;
        }
        txns += 1;
        pdus += ours.len();
        most = most.max(ours.len());
        round_trips.push(signed_ms(record.finished, record.started));
        for id in ours {
            let entry = first.entry((record.destination.as_str(), id.as_str())).or_insert(record);
            if record.started < entry.started {
                *entry = record;
            }
        }
    }
    // Between two transactions to a server while a message waited for the second: the
    // sender's own work (acknowledging the first durably, reading the queue).
    let acked_at: HashMap<&str, Instant> = acked.iter().map(|s| (s.id.as_str(), s.acked)).collect();
    let mut gaps = Vec::new();
    for name in remote_names {
        let mut to: Vec<&TxnRecord> = log
            .iter()
            .filter(|r| r.destination == *name && r.ids.iter().any(|id| id.starts_with(&prefix)))
            .collect();
        to.sort_by_key(|r| r.started);
        for pair in to.windows(2) {
            let waited = pair[1].ids.iter().filter_map(|id| acked_at.get(id.as_str())).min();
            if waited.is_some_and(|at| *at < pair[0].finished) {
                gaps.push(signed_ms(pair[1].started, pair[0].finished));
            }
        }
    }
    let (mut queued, mut rest) = (Vec::new(), Vec::new());
    for (syncer, name) in remote.iter().zip(remote_names) {
        let arrivals = syncer.lock().expect("lock");
        for sent in acked {
            let Some(record) = first.get(&(name.as_str(), sent.id.as_str())) else { continue };
            queued.push(signed_ms(record.started, sent.acked));
            if let Some(seen) = arrivals.at.get(&sent.id) {
                rest.push(signed_ms(*seen, record.started));
            }
        }
    }
    println!(
        "host's transactions: {txns} to {} servers, {:.2} messages each on average, {most} at \
         most",
        remote_names.len(),
        pdus as f64 / txns.max(1) as f64
    );
    println!("  /send round trip (request to the receiver's 200): {}", summary(round_trips));
    println!("  send's 200 to the start of the transaction carrying it: {}", summary(queued));
    println!(
        "  end of a transaction to the start of the next, a message waiting: {}",
        summary(gaps)
    );
    println!("  start of that transaction to the remote sync answer: {}", summary(rest));
}

/// The room and who watches it.
struct Setup {
    /// The host user who sends.
    sender: User,
    room: String,
    /// The remote users' arrivals, and their servers' names in the same order.
    remote: Vec<Arc<Mutex<Arrivals>>>,
    remote_names: Vec<String>,
    /// The second host user's arrivals.
    local: Vec<Arc<Mutex<Arrivals>>>,
    log: TxnLog,
}

/// Sends `count` messages (`interval` apart, or back to back), waits until every syncer has
/// them (or [`DELIVERY_WITHIN`] passed), and prints the table rows.
async fn measure(mode: &str, count: usize, interval: Option<Duration>, setup: &Setup) {
    let Setup { sender, room, remote, remote_names, local, log } = setup;
    let mut acked = Vec::with_capacity(count);
    let mut send_ms = Vec::with_capacity(count);
    let mut ticks = interval.map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let started = Instant::now();
    for i in 0..count {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let id = format!("{mode}-{i}");
        let begin = Instant::now();
        let at = send(sender, room, &id).await;
        send_ms.push(signed_ms(at, begin));
        acked.push(Sent { id, begin, acked: at });
    }
    let sending = started.elapsed();
    let everyone: Vec<_> = remote.iter().chain(local).cloned().collect();
    let deadline = Instant::now() + DELIVERY_WITHIN;
    while Instant::now() < deadline && !acked.iter().all(|sent| seen_by_all(&everyone, &sent.id)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_ms.sort_by(f64::total_cmp);
    let (remote_delays, local_delays) =
        (delays(&acked, remote, false), delays(&acked, local, false));
    let pace = interval.map_or("back to back".to_owned(), |i| format!("one every {i:?}"));
    println!(
        "\n{mode}: {count} messages, {pace}, sent in {:.2} s; send latency p50 {:.1} ms, \
         p99 {:.1} ms",
        sending.as_secs_f64(),
        percentile(&send_ms, 50.0),
        percentile(&send_ms, 99.0),
    );
    println!("\n| delivery (ms from the send's 200) | pairs delivered | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", remote_delays.row(&format!("remote ({} servers)", remote.len())));
    println!("{}", local_delays.row("local (second user on the host)"));
    // The ratio from the send's start: from its 200 the local delay is about 0.
    let (remote_start, local_start) = (delays(&acked, remote, true), delays(&acked, local, true));
    let at = |d: &Delays, p| percentile(&d.sorted, p);
    println!(
        "\nfrom the send's start: remote p50 {:.1} / p99 {:.1} ms, local p50 {:.1} / p99 {:.1} ms; \
         remote / local: p50 {:.2}x, p99 {:.2}x",
        at(&remote_start, 50.0),
        at(&remote_start, 99.0),
        at(&local_start, 50.0),
        at(&local_start, 99.0),
        at(&remote_start, 50.0) / at(&local_start, 50.0),
        at(&remote_start, 99.0) / at(&local_start, 99.0),
    );
    let mut worst: Vec<(usize, f64)> = remote
        .iter()
        .enumerate()
        .map(|(n, syncer)| {
            (n, percentile(&delays(&acked, std::slice::from_ref(syncer), false).sorted, 99.0))
        })
        .collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    let listed: Vec<String> =
        worst.iter().map(|(n, p99)| format!("s{}: {p99:.1}", n + 1)).collect();
    println!("per-server p99 (ms), worst first: {}", listed.join(", "));
    explain(&acked, remote, remote_names, log, mode);
}

/// The counters of the syncers' answers, for the batching they show.
fn answers(syncers: &[Arc<Mutex<Arrivals>>]) -> (usize, usize) {
    syncers.iter().fold((0, 0), |(a, l), s| {
        let s = s.lock().expect("lock");
        (a + s.answers_with_messages, l + s.limited)
    })
}

/// Runs everything; answers the storage directories, to be removed once the runtime is gone.
async fn run(args: Args) -> Vec<tempfile::TempDir> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let tls = ServerTls::from_pem(
        certified.cert.pem().as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .expect("the certificate serves");
    let (stop, stopped) = watch::channel(false);
    let setup = Instant::now();
    let log = TxnLog::default();
    let mut nodes = vec![start_node(&args.storage, &tls, &stopped, Some(log.clone())).await];
    for _ in 0..args.servers {
        nodes.push(start_node(&args.storage, &tls, &stopped, None).await);
    }
    let remote_names: Vec<String> = nodes[1..].iter().map(|n| n.server_name.clone()).collect();
    let http = reqwest::Client::builder().pool_max_idle_per_host(16).build().expect("a client");
    let host = &nodes[0];
    let sender = User::create(host, &http, "sender").await;
    let local = User::create(host, &http, "local").await;
    let (status, created) = sender
        .call(
            reqwest::Method::POST,
            "/createRoom",
            Some(&json!({"preset": "public_chat", "name": "fan-out"})),
        )
        .await;
    assert_eq!(status, 200, "createRoom: {created}");
    let room = created["room_id"].as_str().expect("a room id").to_owned();
    let (status, answer) = local
        .call(reqwest::Method::POST, &format!("/join/{}", encode(&room)), Some(&json!({})))
        .await;
    assert_eq!(status, 200, "local join: {answer}");
    let mut remote_users = Vec::new();
    for (n, node) in nodes[1..].iter().enumerate() {
        let user = User::create(node, &http, &format!("remote{}", n + 1)).await;
        let path = format!("/join/{}?server_name={}", encode(&room), encode(&host.server_name));
        let (status, answer) = user.call(reqwest::Method::POST, &path, Some(&json!({}))).await;
        assert_eq!(status, 200, "join from {}: {answer}", node.server_name);
        remote_users.push(user);
    }
    let remote: Vec<_> = remote_users
        .into_iter()
        .map(|user| {
            let arrivals = Arc::new(Mutex::new(Arrivals::default()));
            (spawn_syncer(user, arrivals.clone()), arrivals)
        })
        .collect();
    let local_arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let local_syncer = spawn_syncer(local, local_arrivals.clone());
    let (mut tasks, remote): (Vec<_>, Vec<_>) = remote.into_iter().unzip();
    tasks.push(local_syncer);
    let local = vec![local_arrivals];

    // Warm-up: a message everybody sees (keys fetched, connections open, syncs waiting).
    let everyone: Vec<_> = remote.iter().chain(&local).cloned().collect();
    send(&sender, &room, "warmup").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen_by_all(&everyone, "warmup") {
        assert!(Instant::now() < deadline, "the warm-up message did not reach every server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{} servers ({} storage, TLS federation on loopback) up, room {room} joined by one user \
         of each remote server, warm-up delivered: {:.2} s",
        nodes.len(),
        args.storage,
        setup.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let setup = Setup { sender, room, remote, remote_names, local, log };
    if args.messages > 0 {
        let interval = Some(Duration::from_millis(args.interval_ms.max(1)));
        measure("paced", args.messages, interval, &setup).await;
    }
    let (before, limited_before) = answers(&setup.remote);
    if args.burst > 0 {
        measure("burst", args.burst, None, &setup).await;
        let (after, limited) = answers(&setup.remote);
        println!(
            "burst: the {} remote syncers got the {} messages in {} sync answers ({} limited)",
            setup.remote.len(),
            args.burst,
            after - before,
            limited - limited_before,
        );
    }
    for task in tasks {
        task.abort();
    }
    let _ = stop.send(true);
    nodes.into_iter().filter_map(|node| node.dir).collect()
}

fn main() {
    let args = args();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dirs = runtime.block_on(run(args));
    // The stores close with the runtime's tasks; their directories go after.
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(dirs);
}
