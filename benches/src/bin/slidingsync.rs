//! Simplified sliding sync (MSC4186) with thousands of rooms: an account in `--rooms` rooms,
//! each with `--messages` messages, then
//!
//! 1. the first answer of a new connection for one list, range `[0, 19]`, `timeline_limit`
//!    1 and Element X's `required_state` (timed `--repeats` times, each a new `conn_id`; the
//!    very first, on a server that has not answered a sliding sync since the fill, apart);
//! 2. an incremental answer after one new message (a message to the account's oldest room,
//!    then the request with the connection's `pos`; `--repeats` times).
//!
//! Each answer is checked (the list counts every room, 20 rooms are in range with one
//! timeline event each; the incremental answer holds the room that was written to, with its
//! new message) before its time counts. Times are the client's, over loopback HTTP.
//!
//! ```text
//! slidingsync [--targets sled,postgres,synapse] [--rooms 5000] [--messages 20]
//!             [--synapse-url URL] [--synapse-rooms N] [--synapse-messages N]
//!             [--synapse-keep FILE] [--concurrency 16] [--repeats 15]
//! ```
//!
//! `--synapse-keep FILE`: the Synapse account and its rooms are written to FILE after the
//! fill, and a later run with the same server and sizes measures that account again instead
//! of filling another (Synapse takes most of an hour to fill 5,000 rooms).
//!
//! `sled` and `postgres` are our homeserver in this process (PostgreSQL: `DATABASE_URL`, a
//! schema of its own); `synapse` is the server at `--synapse-url`, with open registration
//! and its rate limits off (`interop/synapse/start` or `benches/load/synapse.py`). Prints a
//! JSON line per target and the table of benches/README.md's "Sliding sync" section.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use matrix_homeserver::testing::TestHomeserver;
use matrix_storage::Storage;
use matrix_storage::postgres::{PostgresOptions, PostgresStore};
use matrix_storage::sled::{SledOptions, SledStore};
use serde_json::{Value, json};

/// The homeserver binary's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const PASSWORD: &str = "sliding sync bench password";

struct Args {
    targets: Vec<String>,
    rooms: usize,
    messages: usize,
    synapse_url: Option<String>,
    synapse_rooms: Option<usize>,
    synapse_messages: Option<usize>,
    synapse_keep: Option<std::path::PathBuf>,
    concurrency: usize,
    repeats: usize,
}

fn args() -> Args {
    let mut args = Args {
        targets: vec!["sled".into(), "postgres".into(), "synapse".into()],
        rooms: 5000,
        messages: 20,
        synapse_url: None,
        synapse_rooms: None,
        synapse_messages: None,
        synapse_keep: None,
        concurrency: 16,
        repeats: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<usize>().unwrap_or_else(|_| panic!("{flag}: a number"));
        match flag.as_str() {
            "--targets" => args.targets = value.split(',').map(str::to_owned).collect(),
            "--rooms" => args.rooms = number(),
            "--messages" => args.messages = number(),
            "--synapse-url" => args.synapse_url = Some(value.trim_end_matches('/').to_owned()),
            "--synapse-rooms" => args.synapse_rooms = Some(number()),
            "--synapse-messages" => args.synapse_messages = Some(number()),
            "--synapse-keep" => args.synapse_keep = Some(value.into()),
            "--concurrency" => args.concurrency = number(),
            "--repeats" => args.repeats = number(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Element X's `required_state` for its room list.
fn element_x_required_state() -> Value {
    json!([
        ["m.room.encryption", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
        ["m.room.name", ""],
        ["m.room.canonical_alias", ""],
        ["m.room.power_levels", ""],
        ["m.room.create", ""],
        ["m.room.join_rules", ""],
        ["m.room.avatar", ""],
        ["m.room.topic", ""],
        ["m.room.tombstone", ""],
        ["m.room.history_visibility", ""]
    ])
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        for attempt in 0.. {
            let answer = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = answer.status();
            let value: Value = answer.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return value;
            }
            // A server that still limits (Synapse's defaults left on) says how long to wait.
            if status.as_u16() == 429 && attempt < 20 {
                let wait = value["retry_after_ms"].as_u64().unwrap_or(500);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            panic!("{method} {path}: {status}: {value}");
        }
        unreachable!("the loop returns or panics")
    }

    async fn sliding_sync(&self, pos: Option<&str>, body: &Value) -> (Duration, Value) {
        let mut path = format!("{SLIDING_SYNC}?timeout=0");
        if let Some(pos) = pos {
            path.push_str("&pos=");
            path.push_str(&encode(pos));
        }
        let started = Instant::now();
        let answer = self.call(reqwest::Method::POST, &path, body).await;
        (started.elapsed(), answer)
    }
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Registers a user through open registration (`m.login.dummy`).
async fn register(base: &str, localpart: &str) -> Client {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .build()
        .expect("an HTTP client");
    let body = json!({"username": localpart, "password": PASSWORD,
                      "auth": {"type": "m.login.dummy"}});
    let answer = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&body)
        .send()
        .await
        .expect("registration answers");
    let status = answer.status();
    let value: Value = answer.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "registering {localpart}: {status} {value}");
    let token = value["access_token"].as_str().expect("a token").to_owned();
    Client { http, base: base.to_owned(), token }
}

/// Creates `rooms` rooms and sends `messages` messages to each, `concurrency` requests at a
/// time; answers the room ids in creation order.
async fn fill(client: &Client, rooms: usize, messages: usize, concurrency: usize) -> Vec<String> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rooms {
                    return made;
                }
                // Room version 12's ids are the create event's hash: two rooms of one user
                // created in the same millisecond would be the same room (our server refuses
                // the second), so each create event carries its number.
                let body = json!({"preset": "private_chat", "name": format!("room {i}"),
                                  "creation_content": {"org.example.bench.room": i}});
                let answer = client
                    .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &body)
                    .await;
                let room = answer["room_id"].as_str().expect("a room id").to_owned();
                for n in 0..messages {
                    let path = format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/fill{i}_{n}",
                        encode(&room)
                    );
                    let body =
                        json!({"msgtype": "m.text", "body": format!("message {n} of room {i}")});
                    client.call(reqwest::Method::PUT, &path, &body).await;
                }
                made.push((i, room));
                if i % 500 == 499 {
                    eprintln!("  {} rooms in {:.0?}", i + 1, started.elapsed());
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a fill task"));
    }
    all.sort();
    all.into_iter().map(|(_, room)| room).collect()
}

fn list_body(conn_id: &str) -> Value {
    json!({"conn_id": conn_id, "lists": {"all": {
        "ranges": [[0, 19]], "required_state": element_x_required_state(), "timeline_limit": 1}}})
}

/// Checks a first answer: every room counted, the first 20 in range, each with its last event.
fn check_first(answer: &Value, rooms: usize) {
    let list = &answer["lists"]["all"];
    assert_eq!(list["count"].as_u64(), Some(rooms as u64), "the count: {list}");
    let in_range = list["ops"][0]["room_ids"].as_array().map_or(0, Vec::len);
    assert_eq!(in_range, rooms.min(20), "the rooms in range: {list}");
    let answered = answer["rooms"].as_object().expect("rooms");
    assert_eq!(answered.len(), rooms.min(20), "the rooms answered");
    for (id, room) in answered {
        assert_eq!(room["timeline"].as_array().map(Vec::len), Some(1), "{id}: {room}");
        assert!(room["required_state"].as_array().is_some_and(|s| !s.is_empty()), "{id}: {room}");
    }
}

struct Measured {
    target: String,
    rooms: usize,
    messages: usize,
    fill: Duration,
    cold: Duration,
    first: Vec<Duration>,
    incremental: Vec<Duration>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &[Duration]) -> f64 {
    let mut sorted: Vec<f64> = times.iter().copied().map(millis).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() { f64::NAN } else { sorted[sorted.len() / 2] }
}

fn max(times: &[Duration]) -> f64 {
    times.iter().copied().map(millis).fold(f64::NAN, f64::max)
}

/// A filled account: its server, token and rooms (oldest first), and how long the fill took.
struct Filled {
    client: Client,
    room_ids: Vec<String>,
    fill: Duration,
}

/// Registers an account and fills it, or (with `keep`, a file that exists) takes the
/// account a run before filled on the same server, and writes it to `keep` after a fill.
async fn filled(
    target: &str,
    base: &str,
    rooms: usize,
    messages: usize,
    args: &Args,
    keep: Option<&std::path::Path>,
) -> Filled {
    if let Some(saved) = keep.and_then(|path| std::fs::read(path).ok()) {
        let saved: Value = serde_json::from_slice(&saved).expect("a kept account");
        let same =
            saved["base"] == base && saved["rooms"] == rooms && saved["messages"] == messages;
        if same {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("an HTTP client");
            let token = saved["token"].as_str().expect("a token").to_owned();
            let room_ids = saved["room_ids"]
                .as_array()
                .expect("room ids")
                .iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect();
            let fill = Duration::from_secs_f64(saved["fill_s"].as_f64().unwrap_or(0.0));
            eprintln!("{target}: the account filled before ({rooms} rooms x {messages} messages)");
            return Filled {
                client: Client { http, base: base.to_owned(), token },
                room_ids,
                fill,
            };
        }
    }
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let client = register(base, &format!("ssbench{tag}")).await;
    eprintln!("{target}: filling {rooms} rooms x {messages} messages");
    let started = Instant::now();
    let room_ids = fill(&client, rooms, messages, args.concurrency).await;
    let fill = started.elapsed();
    eprintln!("{target}: filled in {fill:.1?}");
    if let Some(path) = keep {
        let saved = json!({"base": base, "rooms": rooms, "messages": messages,
                           "token": client.token, "room_ids": room_ids,
                           "fill_s": fill.as_secs_f64()});
        std::fs::write(path, saved.to_string()).expect("writes the kept account");
    }
    Filled { client, room_ids, fill }
}

async fn measure(
    target: &str,
    base: &str,
    rooms: usize,
    messages: usize,
    args: &Args,
    keep: Option<&std::path::Path>,
) -> Measured {
    let Filled { client, room_ids, fill } = filled(target, base, rooms, messages, args, keep).await;

    let (cold, answer) = client.sliding_sync(None, &list_body("cold")).await;
    check_first(&answer, rooms);
    let mut first = Vec::new();
    for i in 0..args.repeats {
        let (took, answer) = client.sliding_sync(None, &list_body(&format!("first{i}"))).await;
        check_first(&answer, rooms);
        first.push(took);
    }

    let body = list_body("incremental");
    let (_, answer) = client.sliding_sync(None, &body).await;
    let mut pos = answer["pos"].as_str().expect("a pos").to_owned();
    let mut incremental = Vec::new();
    for i in 0..args.repeats {
        // The oldest room not yet written to: it moves into the range.
        // (A kept account was written to by earlier runs: a run's own tag keeps ids apart.)
        let room = &room_ids[i % room_ids.len()];
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/new{i}_{}",
            encode(room),
            std::process::id()
        );
        let sent = client
            .call(reqwest::Method::PUT, &path, &json!({"msgtype": "m.text", "body": "new"}))
            .await;
        let event_id = sent["event_id"].as_str().expect("an event id");
        let (took, answer) = client.sliding_sync(Some(&pos), &body).await;
        let timeline = &answer["rooms"][room.as_str()]["timeline"];
        assert!(
            timeline.as_array().is_some_and(|t| t.iter().any(|e| e["event_id"] == event_id)),
            "the new message in the incremental answer: {answer}"
        );
        incremental.push(took);
        pos = answer["pos"].as_str().expect("a pos").to_owned();
    }
    Measured { target: target.to_owned(), rooms, messages, fill, cold, first, incremental }
}

async fn ours(kind: &str, args: &Args) -> Measured {
    let dir = tempfile::tempdir().expect("a directory");
    let storage: Arc<dyn Storage> = match kind {
        "sled" => {
            Arc::new(SledStore::open(dir.path(), &SledOptions::default()).expect("sled opens"))
        }
        "postgres" => {
            let url = std::env::var("DATABASE_URL").expect("DATABASE_URL for postgres");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let options = PostgresOptions::new(url).with_schema(format!("slidingsync_{nanos}"));
            Arc::new(PostgresStore::open(&options).await.expect("PostgreSQL opens"))
        }
        other => panic!("unknown target {other}"),
    };
    let server = TestHomeserver::start_on(TestHomeserver::config(), storage).await;
    measure(&format!("ours ({kind})"), server.base_url(), args.rooms, args.messages, args, None)
        .await
}

fn row(m: &Measured) -> String {
    format!(
        "| {} | {} x {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
        m.target,
        m.rooms,
        m.messages,
        millis(m.cold),
        median(&m.first),
        max(&m.first),
        median(&m.incremental),
        max(&m.incremental),
        m.fill.as_secs_f64(),
    )
}

#[tokio::main]
async fn main() {
    let args = args();
    let mut results = Vec::new();
    for target in args.targets.clone() {
        let measured = match target.as_str() {
            "sled" | "postgres" => ours(&target, &args).await,
            "synapse" => {
                let url = args.synapse_url.clone().expect("--synapse-url for synapse");
                let rooms = args.synapse_rooms.unwrap_or(args.rooms);
                let messages = args.synapse_messages.unwrap_or(args.messages);
                measure("Synapse", &url, rooms, messages, &args, args.synapse_keep.as_deref()).await
            }
            other => panic!("unknown target {other}"),
        };
        println!(
            "{}",
            json!({"target": measured.target, "rooms": measured.rooms,
                   "messages": measured.messages, "fill_s": measured.fill.as_secs_f64(),
                   "first_cold_ms": millis(measured.cold),
                   "first_median_ms": median(&measured.first), "first_max_ms": max(&measured.first),
                   "incremental_median_ms": median(&measured.incremental),
                   "incremental_max_ms": max(&measured.incremental)})
        );
        results.push(measured);
    }
    println!(
        "\n| server | rooms x messages | first answer, cold (ms) | first answer, median (ms) | max | incremental, median (ms) | max | fill (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for m in &results {
        println!("{}", row(m));
    }
    if let Some(synapse) = results.iter().find(|m| m.target == "Synapse") {
        for m in results.iter().filter(|m| m.target != "Synapse") {
            println!(
                "{} vs Synapse: first answer 1/{:.1}, incremental 1/{:.1}",
                m.target,
                median(&synapse.first) / median(&m.first),
                median(&synapse.incremental) / median(&m.incremental)
            );
        }
    }
}
