//! The abuse suite: one client tries every unbounded growth the security review found
//! (../shared/reviews/security-a001503.md), as fast as it can with rate limits off, while
//! another user long-polls `/sync`. The server's resident memory must stay under a fixed
//! ceiling and the other user's syncs must keep answering.
//!
//! The server is the `homeserver` binary in a process of its own, so that its resident
//! memory is measured alone (from `/proc/PID/status`). It runs on PostgreSQL (`DATABASE_URL`;
//! without it the suite is skipped, and says so): sled 0.34, the embedded default, keeps in
//! memory a multiple of what is written to it whatever its cache size (storage issue), which
//! would hide what this suite looks for, the homeserver's own structures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// How much the server may grow over both rounds of the attack (its caches fill, the
/// allocator keeps what big requests used; measured: about 45 MiB). Unbounded, one
/// round's to-device flood alone would keep about 270 MiB, the one-time keys 25 MiB.
const FIRST_ROUND_CEILING_MIB: u64 = 96;

/// How much a second round of the same attack may add: what is bounded is full by then
/// (measured: about 8 MiB).
const SECOND_ROUND_CEILING_MIB: u64 = 24;

/// The longest the other user's long-poll may take to answer (it asks for 1 s).
const SYNC_CEILING: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}{V3}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// The resident set of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// The binary serving on a free loopback port from `dir`: open registration, rate limits
/// off (this suite tests the bounds, not the limits); stopped when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(dir: &std::path::Path, database_url: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("homeserver.toml");
        let text = format!(
            "[server]\nname = \"localhost\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
             [registration]\nmode = \"open\"\nenable_registration_without_verification = true\n[rate_limits]\nenabled = false\n\
             [storage]\nbackend = \"postgres\"\npostgres_url = {database_url:?}\n",
            dir.join("data").display().to_string()
        );
        std::fs::write(&config, text).expect("writes the config");
        let child = Command::new(env!("CARGO_BIN_EXE_homeserver"))
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        // Made at once, so that the process is killed and waited for whatever happens next.
        let server = Server { child, base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http.get(format!("{}/_matrix/client/versions", server.base)).send().await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the binary did not answer within 30 s");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `name` through the open registration's dummy stage; answers the client, the
/// user id and the device id.
async fn client(server: &Server, name: &str) -> (Client, String, String) {
    let http = reqwest::Client::new();
    let body = json!({"username": name, "password": "a long password",
                      "auth": {"type": "m.login.dummy"}});
    let response = http
        .post(format!("{}{V3}/register", server.base))
        .json(&body)
        .send()
        .await
        .expect("registers");
    let session: Value = response.json().await.expect("a session");
    let token = session["access_token"].as_str().expect("a token").to_owned();
    let client = Client { http, base: server.base.clone(), token };
    let user = session["user_id"].as_str().expect("a user").to_owned();
    let device = session["device_id"].as_str().expect("a device").to_owned();
    (client, user, device)
}

/// What the attacker did, with how often the server refused.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    refused: u64,
}

impl Tally {
    fn note(&mut self, status: u16) {
        self.sent += 1;
        if status >= 400 {
            self.refused += 1;
        }
        assert!(status < 500, "the server failed ({status}) under abuse");
    }
}

/// Who attacks what.
struct Target<'a> {
    attacker: &'a Client,
    attacker_id: &'a str,
    attacker_device: &'a str,
    victim_id: &'a str,
    victim_device: &'a str,
    room: &'a str,
    pid: u32,
}

/// One round of every attack; answers the server's resident MiB after each kind.
async fn attack(target: &Target<'_>, round: u32, tally: &mut Tally) -> Vec<(&'static str, u64)> {
    let Target { attacker, attacker_id, attacker_device, victim_id, victim_device, room, pid } =
        *target;
    let mut phases = Vec::new();
    let big = "x".repeat(900 * 1024);
    // #5: to-device messages to devices that do not exist, to every device, and to a real
    // device that never syncs them away.
    for i in 0..150 {
        let target = match i % 3 {
            0 => json!({ victim_id: {"NODEVICE": {"pad": big}} }),
            1 => json!({ victim_id: {"*": {"pad": big}} }),
            _ => json!({ victim_id: { victim_device: {"pad": big} } }),
        };
        let (status, _) = attacker
            .put(&format!("/sendToDevice/m.x/t{round}_{i}"), &json!({"messages": target}))
            .await;
        tally.note(status);
    }
    phases.push(("to-device", rss_mib(pid)));
    // #18: one-time keys by the thousand.
    for i in 0..20 {
        let keys: serde_json::Map<String, Value> = (0..5000)
            .map(|k| (format!("signed_curve25519:{i}_{k}"), json!({"key": "k".repeat(43)})))
            .collect();
        let (status, _) = attacker.post("/keys/upload", &json!({"one_time_keys": keys})).await;
        tally.note(status);
    }
    phases.push(("one-time keys", rss_mib(pid)));
    // #29: device keys changed over and over (the device-list log).
    for i in 0..300 {
        let keys = json!({"device_keys": {"user_id": attacker_id, "device_id": attacker_device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {format!("ed25519:{attacker_device}"): format!("k{i}")}, "signatures": {}}});
        let (status, _) = attacker.post("/keys/upload", &keys).await;
        tally.note(status);
    }
    phases.push(("device keys", rss_mib(pid)));
    // #20: messages mentioning thousands of made-up users.
    let mentions: Vec<String> = (0..2500).map(|i| format!("@u{i}:localhost")).collect();
    for i in 0..900 {
        if i % 150 == 0 {
            eprintln!("MENTIONS {i} rss {}", rss_mib(pid));
        }
        let body = json!({"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": mentions}});
        let (status, _) =
            attacker.put(&format!("/rooms/{room}/send/m.room.message/m{round}_{i}"), &body).await;
        tally.note(status);
    }
    phases.push(("mentions", rss_mib(pid)));
    // #7: receipts under made-up thread ids.
    let (_, messages) = attacker.get(&format!("/rooms/{room}/messages?dir=b&limit=1")).await;
    let event = messages["chunk"][0]["event_id"].as_str().expect("an event").to_owned();
    for i in 0..1000 {
        let body = json!({"thread_id": format!("{i}{}", "t".repeat(2000))});
        let (status, _) =
            attacker.post(&format!("/rooms/{room}/receipt/m.read/{event}"), &body).await;
        tally.note(status);
    }
    phases.push(("receipts", rss_mib(pid)));
    // #6: typing, as fast as possible (every change used to wake every sync).
    for i in 0..1000 {
        let body = json!({"typing": i % 2 == 0, "timeout": 30000});
        let (status, _) = attacker.put(&format!("/rooms/{room}/typing/{attacker_id}"), &body).await;
        tally.note(status);
    }
    phases.push(("typing", rss_mib(pid)));
    // #19: key queries naming tens of thousands of users.
    let users: serde_json::Map<String, Value> =
        (0..30_000).map(|i| (format!("@n{i}:localhost"), json!([]))).collect();
    for _ in 0..3 {
        let (status, _) = attacker.post("/keys/query", &json!({"device_keys": users})).await;
        tally.note(status);
    }
    phases.push(("key queries", rss_mib(pid)));
    // #24: moderation in rooms that do not exist (the room lock map).
    for i in 0..1000 {
        let (status, _) = attacker
            .post(&format!("/rooms/!r{i}:localhost/ban"), &json!({"user_id": victim_id}))
            .await;
        tally.note(status);
    }

    phases.push(("bans", rss_mib(pid)));
    // #13: createRoom with thousands of initial state events and invites.
    let state: Vec<Value> = (0..20_000)
        .map(|i| json!({"type": "x.s", "state_key": format!("{i}"), "content": {}}))
        .collect();
    for _ in 0..10 {
        let (status, _) = attacker.post("/createRoom", &json!({"initial_state": state})).await;
        tally.note(status);
    }
    // #23: filters with thousands of entries, stored and inline.
    let types: Vec<String> = (0..8_000).map(|i| format!("x.t{i}")).collect();
    let filter = json!({"room": {"timeline": {"not_types": types}}});
    for _ in 0..10 {
        let (status, _) = attacker.post(&format!("/user/{attacker_id}/filter"), &filter).await;
        tally.note(status);
        // Inline, as long as a URL may be (the list bound refuses it all the same).
        let short: Vec<&String> = types.iter().take(1_000).collect();
        let inline = json!({"not_types": short}).to_string();
        let (status, _) = attacker
            .get(&format!("/rooms/{room}/messages?dir=b&filter={}", urlencode(&inline)))
            .await;
        tally.note(status);
    }
    // #46: huge display names (each would be copied into every joined room).
    let name = "n".repeat(60_000);
    for _ in 0..20 {
        let (status, _) = attacker
            .put(&format!("/profile/{attacker_id}/displayname"), &json!({"displayname": name}))
            .await;
        tally.note(status);
    }
    phases.push(("createRoom, filters, profile", rss_mib(pid)));
    phases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_grow_the_server_and_others_keep_syncing() {
    let Some(database_url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: the abuse suite needs DATABASE_URL (PostgreSQL); it is not set");
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let server = Server::start(dir.path(), &database_url).await;
    // The database may hold earlier runs' users: names of this run's own.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (victim, victim_id, victim_device) = client(&server, &format!("victim{run}")).await;
    let (attacker, attacker_id, attacker_device) = client(&server, &format!("attacker{run}")).await;
    let (_, body) = victim.post("/createRoom", &json!({"preset": "public_chat"})).await;
    let room = body["room_id"].as_str().expect("a room").to_owned();
    assert_eq!(attacker.post(&format!("/rooms/{room}/join"), &json!({})).await.0, 200);
    let (_, first) = victim.get("/sync").await;
    let mut since = first["next_batch"].as_str().expect("a token").to_owned();
    let before = rss_mib(server.pid());

    // The victim long-polls throughout; each answer must come back in time.
    let attacking = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (victim, attacking) = (victim.clone(), attacking.clone());
        tokio::spawn(async move {
            let (mut answers, mut slowest) = (0u32, Duration::ZERO);
            while attacking.load(Ordering::Relaxed) {
                let began = Instant::now();
                let (status, body) = victim.get(&format!("/sync?since={since}&timeout=1000")).await;
                assert_eq!(status, 200, "{body}");
                since = body["next_batch"].as_str().expect("a token").to_owned();
                slowest = slowest.max(began.elapsed());
                answers += 1;
            }
            (answers, slowest)
        })
    };

    let target = Target {
        attacker: &attacker,
        attacker_id: &attacker_id,
        attacker_device: &attacker_device,
        victim_id: &victim_id,
        victim_device: &victim_device,
        room: &room,
        pid: server.pid(),
    };
    let mut tally = Tally::default();
    let first = attack(&target, 1, &mut tally).await;
    let middle = rss_mib(server.pid());
    let second = attack(&target, 2, &mut tally).await;
    attacking.store(false, Ordering::Relaxed);
    let (answers, slowest) = watcher.await.expect("the victim's syncs");
    let after = rss_mib(server.pid());
    eprintln!(
        "abuse: {} requests ({} refused); RSS {before} MiB, after round 1 {middle}, after round \
         2 {after}; victim synced {answers} times, slowest {slowest:?}; RSS after each kind, \
         round 1: {first:?}, round 2: {second:?}",
        tally.sent, tally.refused
    );
    assert!(answers > 0, "the victim's sync never answered");
    assert!(slowest < SYNC_CEILING, "a sync took {slowest:?}");
    assert!(
        after.saturating_sub(before) < FIRST_ROUND_CEILING_MIB,
        "the server grew by {} MiB under abuse",
        after.saturating_sub(before)
    );
    // Bounded structures are full after one round: a second one must not grow them again.
    assert!(
        after.saturating_sub(middle) < SECOND_ROUND_CEILING_MIB,
        "the second round grew the server by {} MiB",
        after.saturating_sub(middle)
    );
    // The victim's own queue holds at most what the bounds allow, and delivers it once.
    let (_, body) = victim.get("/sync").await;
    let delivered = body["to_device"]["events"].as_array().map_or(0, Vec::len);
    assert!(delivered <= 1000, "{delivered} to-device messages queued for one device");
}

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
