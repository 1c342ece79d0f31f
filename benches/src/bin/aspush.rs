//! Events pushed to an application service: how many per second, and how long from the
//! client's send to the service's receipt (issue 16: 2,000 events/s sustained, p99 under
//! 50 ms, on loopback). In one process: a homeserver on sled (or in memory) with one
//! application service registered, whose namespace holds a ghost in each of `--rooms` rooms;
//! a loopback service stub that answers every transaction `200 {}` and notes when each event
//! arrived; `--rooms` senders, one per room, sending messages paced to `--rate` events per
//! second in all for `--seconds`. Each message carries the time its send started; the stub
//! takes the delay from there to its receipt. Printed: events sent and received (each once,
//! in order per room), the rate pushed, transactions and events per transaction, and the
//! delays' percentiles.
//!
//! With `--down S`, the service is down (it answers 503) for the first S seconds of the
//! sending, and the run waits for it to get everything after it is back (up to the push's
//! longest backoff and a minute more): printed is when the last event arrived, counted from
//! the service's return, and that every event came once and in order.
//!
//! ```text
//! aspush [--rate 2000] [--seconds 10] [--rooms 32] [--storage sled|memory] [--down 0]
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_homeserver::testing::TestHomeserver;
use matrix_homeserver::{AppserviceRegistration, Namespace};
use matrix_storage::Storage;
use matrix_storage::memory::MemoryStore;
use matrix_storage::sled::{SledOptions, SledStore};
use serde_json::{Value, json};

/// The homeserver binary's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    rate: u64,
    seconds: u64,
    rooms: usize,
    storage: String,
    /// Seconds the service is down at the start of the sending.
    down: u64,
}

fn args() -> Args {
    let mut args = Args { rate: 2000, seconds: 10, rooms: 32, storage: "sled".into(), down: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rate" => args.rate = value.parse().expect("--rate: a number"),
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--rooms" => args.rooms = value.parse().expect("--rooms: a number"),
            "--storage" => args.storage = value,
            "--down" => args.down = value.parse().expect("--down: a number of seconds"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// What the stub saw.
#[derive(Default)]
struct Received {
    /// Delays in microseconds, one per message event.
    delays: Vec<u64>,
    /// The last sequence number seen per room, to check the order.
    last: HashMap<String, u64>,
    out_of_order: u64,
    transactions: u64,
    txn_ids: std::collections::HashSet<String>,
    duplicates: u64,
    first: Option<Instant>,
    last_at: Option<Instant>,
    /// Transactions answered 503 while the service was down.
    refused: u64,
}

fn micros_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The stub: down (503) until `down_until` microseconds after `base`.
async fn stub(base: Instant, received: Arc<Mutex<Received>>, down_until: Arc<AtomicU64>) -> String {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/_matrix/app/v1/transactions/{txn}",
        axum::routing::put(
            move |axum::extract::Path(txn): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| {
                let received = received.clone();
                let down_until = down_until.clone();
                async move {
                    let now = micros_since(base);
                    let mut r = received.lock().expect("a lock");
                    if now < down_until.load(Ordering::Relaxed) {
                        r.refused += 1;
                        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})));
                    }
                    if !r.txn_ids.insert(txn) {
                        r.duplicates += 1;
                        return (StatusCode::OK, axum::Json(json!({})));
                    }
                    r.transactions += 1;
                    for event in body["events"].as_array().into_iter().flatten() {
                        let (Some(seq), Some(sent)) = (
                            event["content"]["seq"].as_u64(),
                            event["content"]["sent_us"].as_u64(),
                        ) else {
                            continue;
                        };
                        let room = event["room_id"].as_str().unwrap_or_default().to_owned();
                        let previous = r.last.insert(room, seq).unwrap_or(0);
                        if seq <= previous {
                            r.out_of_order += 1;
                        }
                        r.delays.push(now.saturating_sub(sent));
                        r.first.get_or_insert_with(Instant::now);
                        r.last_at = Some(Instant::now());
                    }
                    (StatusCode::OK, axum::Json(json!({})))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: &Value,
) -> Value {
    let answer = http.request(method, url).bearer_auth(token).json(body).send().await;
    let answer = answer.expect("the server answers");
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn run(args: Args) -> Option<tempfile::TempDir> {
    let base = Instant::now();
    let received = Arc::new(Mutex::new(Received::default()));
    let down_until = Arc::new(AtomicU64::new(0));
    let url = stub(base, received.clone(), down_until.clone()).await;
    let (storage, dir): (Arc<dyn Storage>, _) = match args.storage.as_str() {
        "memory" => (Arc::new(MemoryStore::new()), None),
        _ => {
            let dir = tempfile::tempdir().expect("a directory");
            let store = SledStore::open(dir.path(), &SledOptions::default()).expect("sled opens");
            (Arc::new(store), Some(dir))
        }
    };
    let mut config = TestHomeserver::config();
    let mut registration =
        AppserviceRegistration::new("bench", Some(url), "bench_as", "bench_hs", "benchbot");
    registration.namespaces.users.push(Namespace::new("@ghost_.*:localhost", true));
    config.appservices.push(registration);
    let server = TestHomeserver::start_on(config, storage).await;
    let http = reqwest::Client::new();
    let v3 = format!("{}/_matrix/client/v3", server.base_url());

    // One sender and one ghost per room.
    let mut rooms = Vec::new();
    for i in 0..args.rooms {
        let sender = server.register_user(&format!("sender{i}"), "pw").await;
        let ghost = server.register_user(&format!("ghost_{i}"), "pw").await;
        let created = request(
            &http,
            reqwest::Method::POST,
            format!("{v3}/createRoom"),
            &sender.access_token,
            &json!({"invite": [ghost.user_id.to_string()]}),
        )
        .await;
        let room = created["room_id"].as_str().expect("a room").to_owned();
        request(
            &http,
            reqwest::Method::POST,
            format!("{v3}/rooms/{room}/join"),
            &ghost.access_token,
            &json!({}),
        )
        .await;
        rooms.push((room, sender.access_token));
    }
    // Let the setup's events reach the stub, then count from zero.
    tokio::time::sleep(Duration::from_secs(1)).await;
    *received.lock().expect("a lock") = Received::default();

    let per_room = args.rate as f64 / args.rooms as f64;
    let interval = Duration::from_secs_f64(1.0 / per_room);
    let total_per_room = (per_room * args.seconds as f64).round() as u64;
    let started = Instant::now();
    let back = started + Duration::from_secs(args.down);
    if args.down > 0 {
        down_until.store(micros_since(base) + args.down * 1_000_000, Ordering::Relaxed);
    }
    let mut tasks = Vec::new();
    for (room, token) in rooms {
        let http = http.clone();
        let v3 = v3.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 1..=total_per_room {
                ticks.tick().await;
                let body = json!({"msgtype": "m.text", "body": "bench", "seq": seq,
                                  "sent_us": micros_since(base)});
                request(
                    &http,
                    reqwest::Method::PUT,
                    format!("{v3}/rooms/{room}/send/m.room.message/t{seq}"),
                    &token,
                    &body,
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a sender");
    }
    let send_secs = started.elapsed().as_secs_f64();
    let sent = total_per_room * args.rooms as u64;
    // Wait for the stub to have everything (or 30 s more; after an outage, the push's longest
    // backoff (5 minutes) and a minute more from the service's return).
    let deadline = if args.down > 0 {
        back.max(Instant::now()) + Duration::from_secs(360)
    } else {
        Instant::now() + Duration::from_secs(30)
    };
    while (received.lock().expect("a lock").delays.len() as u64) < sent && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = received.lock().expect("a lock");
    let mut delays = r.delays.clone();
    delays.sort_unstable();
    let push_secs = match (r.first, r.last_at) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64().max(1e-9),
        _ => f64::NAN,
    };
    println!(
        "storage {} rooms {} target {}/s for {} s",
        args.storage, args.rooms, args.rate, args.seconds
    );
    println!("sent {sent} in {send_secs:.2} s ({:.0}/s)", sent as f64 / send_secs);
    println!(
        "received {} ({} out of order, {} transactions sent twice) in {push_secs:.2} s: {:.0} events/s pushed",
        delays.len(),
        r.out_of_order,
        r.duplicates,
        delays.len() as f64 / push_secs
    );
    println!(
        "{} transactions, {:.1} events each",
        r.transactions,
        delays.len() as f64 / r.transactions.max(1) as f64
    );
    println!(
        "send to receipt: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays, 50.0),
        percentile(&delays, 90.0),
        percentile(&delays, 99.0),
        percentile(&delays, 100.0)
    );
    if args.down > 0 {
        let last = r.last_at.map(|t| t.saturating_duration_since(back).as_secs_f64());
        println!(
            "down for the first {} s ({} transactions refused): {} of {sent} events received, \
             the last {:.1} s after the service came back",
            args.down,
            r.refused,
            delays.len(),
            last.unwrap_or(f64::NAN)
        );
    }
    drop(r);
    drop(server);
    dir
}

fn main() {
    let args = args();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(dir);
}
