//! A load generator for any Matrix homeserver: users register, create rooms and join them,
//! then senders send messages with a fixed concurrency while clients long-poll `/sync`.
//! Reports messages per second, send latency, send-to-sync delivery latency, and (given the
//! server's pid) its resident memory idle and under load, as one JSON object on stdout.
//!
//! ```text
//! loadgen --url http://127.0.0.1:8008 [--pid PID] [--senders 16] [--syncers 5] [--rooms 4]
//!         [--seconds 20] [--prefix run1]
//! ```
//!
//! The server must allow open registration with `m.login.dummy` and have its rate limits off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    url: String,
    pid: Option<u32>,
    senders: usize,
    syncers: usize,
    rooms: usize,
    seconds: u64,
    prefix: String,
}

fn args() -> Args {
    let mut args = Args {
        url: "http://127.0.0.1:8008".to_owned(),
        pid: None,
        senders: 16,
        syncers: 5,
        rooms: 4,
        seconds: 20,
        prefix: format!("load{}", std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--pid" => args.pid = value.parse().ok(),
            "--senders" => args.senders = value.parse().expect("a number"),
            "--syncers" => args.syncers = value.parse().expect("a number"),
            "--rooms" => args.rooms = value.parse().expect("a number"),
            "--seconds" => args.seconds = value.parse().expect("a number"),
            "--prefix" => args.prefix = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Resident memory of a process, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.json().await.unwrap_or(Value::Null);
                (status, body)
            }
            Err(e) => (0, json!({"error": e.to_string()})),
        }
    }

    async fn register(&self, name: &str) -> String {
        let path = "/_matrix/client/v3/register";
        let body = json!({"username": name, "password": "load-test-pw", "inhibit_login": false});
        let (status, first) = self.call(reqwest::Method::POST, path, None, Some(&body)).await;
        assert_eq!(status, 401, "register {name}: {first}");
        let mut body = body;
        body["auth"] = json!({"type": "m.login.dummy", "session": first["session"]});
        let (status, done) = self.call(reqwest::Method::POST, path, None, Some(&body)).await;
        assert_eq!(status, 200, "register {name}: {done}");
        done["access_token"].as_str().expect("a token").to_owned()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = args();
    let client = Arc::new(Client {
        http: reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("a client"),
        url: args.url.trim_end_matches('/').to_owned(),
    });
    let idle_rss = args.pid.and_then(rss_kib);

    // Users, rooms, joins.
    let setup = Instant::now();
    let mut tokens = Vec::new();
    for i in 0..args.senders + args.syncers {
        tokens.push(client.register(&format!("{}u{i}", args.prefix)).await);
    }
    let mut rooms = Vec::new();
    for r in 0..args.rooms {
        let (status, body) = client
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&tokens[0]),
                Some(&json!({"preset": "public_chat", "name": format!("load {r}")})),
            )
            .await;
        assert_eq!(status, 200, "createRoom: {body}");
        rooms.push(body["room_id"].as_str().expect("a room").to_owned());
    }
    for token in &tokens[1..] {
        for room in &rooms {
            let (status, body) = client
                .call(
                    reqwest::Method::POST,
                    &format!("/_matrix/client/v3/join/{room}"),
                    Some(token),
                    Some(&json!({})),
                )
                .await;
            assert_eq!(status, 200, "join: {body}");
        }
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    let setup_rss = args.pid.and_then(rss_kib);

    // Syncers: an initial sync, then long polls, noting when each message shows up.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let deliveries: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A100%7D%7D%7D";
    let mut syncers = Vec::new();
    for token in &tokens[args.senders..] {
        let token = token.clone();
        let (client, sent_at, deliveries, stop) =
            (client.clone(), sent_at.clone(), deliveries.clone(), stop.clone());
        syncers.push(tokio::spawn(async move {
            let (status, body) = client
                .call(
                    reqwest::Method::GET,
                    &format!("/_matrix/client/v3/sync?filter={filter}"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(status, 200, "sync: {body}");
            let mut since = body["next_batch"].as_str().expect("a token").to_owned();
            while !stop.load(Ordering::Relaxed) {
                let path =
                    format!("/_matrix/client/v3/sync?filter={filter}&timeout=2000&since={since}");
                let (status, body) =
                    client.call(reqwest::Method::GET, &path, Some(&token), None).await;
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let now = Instant::now();
                if let Some(join) = body["rooms"]["join"].as_object() {
                    let sent = sent_at.lock().expect("lock");
                    let mut out = deliveries.lock().expect("lock");
                    for room in join.values() {
                        for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                            if let Some(at) =
                                event["content"]["load_id"].as_str().and_then(|id| sent.get(id))
                            {
                                out.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                            }
                        }
                    }
                }
                since = body["next_batch"].as_str().unwrap_or(&since).to_owned();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Memory under load, sampled.
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = args.pid.map(|pid| {
        let (peak, stop) = (peak_rss.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });

    // Senders: each sends to the rooms in turn until the time is up.
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let send_latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for (s, token) in tokens[..args.senders].iter().cloned().enumerate() {
        let (client, rooms, sent_at, latencies, errors) = (
            client.clone(),
            rooms.clone(),
            sent_at.clone(),
            send_latencies.clone(),
            errors.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                let id = format!("{s}-{n}");
                let room = &rooms[(s + n) % rooms.len()];
                let body = json!({"msgtype": "m.text", "body": format!("load message {id}"), "load_id": id});
                let begin = Instant::now();
                sent_at.lock().expect("lock").insert(id.clone(), begin);
                let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{id}");
                let (status, _) = client.call(reqwest::Method::PUT, &path, Some(&token), Some(&body)).await;
                if status == 200 {
                    latencies.lock().expect("lock").push(begin.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("a sender");
    }
    let send_secs = started.elapsed().as_secs_f64();
    // Let the syncers see the last messages.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for syncer in syncers {
        let _ = tokio::time::timeout(Duration::from_secs(5), syncer).await;
    }
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }

    let mut sends = send_latencies.lock().expect("lock").clone();
    sends.sort_by(f64::total_cmp);
    let mut delivered = deliveries.lock().expect("lock").clone();
    delivered.sort_by(f64::total_cmp);
    let messages = sends.len();
    let expected_deliveries = messages * args.syncers;
    let report = json!({
        "url": args.url,
        "senders": args.senders,
        "syncers": args.syncers,
        "rooms": args.rooms,
        "setup_seconds": setup_secs,
        "send_seconds": send_secs,
        "messages": messages,
        "errors": errors.load(Ordering::Relaxed),
        "messages_per_second": messages as f64 / send_secs,
        "send_ms_p50": percentile(&sends, 50.0),
        "send_ms_p99": percentile(&sends, 99.0),
        "delivery_ms_p50": percentile(&delivered, 50.0),
        "delivery_ms_p99": percentile(&delivered, 99.0),
        "delivered_fraction": if expected_deliveries == 0 { 0.0 } else { delivered.len() as f64 / expected_deliveries as f64 },
        "idle_rss_kib": idle_rss,
        "after_setup_rss_kib": setup_rss,
        "load_rss_kib": args.pid.map(|_| peak_rss.load(Ordering::Relaxed)),
    });
    println!("{report}");
}
