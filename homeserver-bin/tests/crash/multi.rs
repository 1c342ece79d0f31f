//! Two `homeserver` processes serving one PostgreSQL database (and schema) at once, as workers
//! behind a load balancer would: users send to one shared room through both at the same
//! time (messages, and state events that each build on the room's current state), and sync
//! through both. Afterwards both processes' `/messages` and the syncs run on each show every
//! acknowledged event exactly once, in one and the same order; every user's last state event
//! is the room's state on both (no process built on a state the other had changed and
//! overwrote it); and a `/sync` long-polling on one process wakes for an event sent through
//! the other. Loopback only; every loop is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Backend, Client, Server, Session, register, urlencode};

/// Users sending at once (each alternates between the two processes).
const SENDERS: usize = 4;
/// Messages each sender sends, each followed by a state event through the other process
/// (all of them fit one sync timeline of 100, so a sync never has a gap to fill).
const MESSAGES: usize = 12;
/// The state event type each sender sets, with its user id as state key (anyone may: the
/// room's `state_default` is 0); each replaces the sender's previous one.
const STATE_TYPE: &str = "org.example.multi";
/// How long the syncs may take to see everything once the senders are done.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

async fn get(client: &Client, path: &str) -> Value {
    client.must(reqwest::Method::GET, path, None).await
}

/// A room's timeline through `/messages` (newest first pages, returned oldest first).
async fn timeline(client: &Client, room: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..1_000 {
        let mut path = format!("/rooms/{room}/messages?dir=b&limit=100");
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", urlencode(from)));
        }
        let page = get(client, &path).await;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        let more = !chunk.is_empty();
        events.extend(chunk);
        match page["end"].as_str() {
            Some(end) if more => from = Some(end.to_owned()),
            _ => break,
        }
    }
    events.reverse();
    events
}

/// The ids of the message events of a timeline.
fn message_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().expect("an event id").to_owned())
        .collect()
}

/// What one syncing client saw of the room's messages, in the order its syncs returned them.
async fn sync_until(
    client: Client,
    room: String,
    since: String,
    want: usize,
    stop_by: Instant,
) -> Vec<String> {
    let mut since = since;
    let mut seen = Vec::new();
    let filter = urlencode(r#"{"room":{"timeline":{"limit":1000}}}"#);
    while Instant::now() < stop_by && seen.len() < want {
        let path = format!("/sync?since={}&timeout=500&filter={filter}", urlencode(&since));
        let answer = match client.get(&path).await {
            crate::Answer::Ok(answer) => answer,
            other => panic!("a sync of {} failed: {other:?}", client.user_id),
        };
        let timeline = &answer["rooms"]["join"][&room]["timeline"];
        assert_ne!(
            timeline["limited"],
            json!(true),
            "a sync of {} had a gap (its timeline limit is above the load)",
            client.user_id
        );
        for event in timeline["events"].as_array().into_iter().flatten() {
            if event["type"] == "m.room.message" {
                seen.push(event["event_id"].as_str().expect("an event id").to_owned());
            }
        }
        since = answer["next_batch"].as_str().expect("a next_batch").to_owned();
    }
    seen
}

/// Sends through `a` and `b` in turn: each message through one, then a state event through
/// the other; returns the acknowledged message ids and state event ids.
async fn send_all(a: Client, b: Client, room: String) -> (Vec<String>, Vec<String>) {
    let mut messages = Vec::new();
    let mut states = Vec::new();
    for n in 0..MESSAGES {
        let (one, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let path = format!("/rooms/{room}/send/m.room.message/m{n}");
        let body = json!({"msgtype": "m.text", "body": format!("{} {n}", one.user_id)});
        let answer = one.must(reqwest::Method::PUT, &path, Some(&body)).await;
        messages.push(answer["event_id"].as_str().expect("an event id").to_owned());
        let path = format!("/rooms/{room}/state/{STATE_TYPE}/{}", urlencode(&other.user_id));
        let answer = other.must(reqwest::Method::PUT, &path, Some(&json!({"n": n}))).await;
        states.push(answer["event_id"].as_str().expect("an event id").to_owned());
    }
    (messages, states)
}

/// Starts a second server on `dir` with the first's signing key (both sign as one server).
async fn start_second(first: &Path, dir: &Path, backend: &Backend) -> Server {
    std::fs::create_dir_all(dir.join("data")).expect("a data directory");
    std::fs::copy(first.join("data").join("signing.key"), dir.join("data").join("signing.key"))
        .expect("copies the signing key");
    Server::start(dir, backend, 1).await
}

pub(crate) async fn two_processes_one_database(backend: Backend) {
    let began = Instant::now();
    let dir_a = tempfile::tempdir().expect("a temporary directory");
    let dir_b = tempfile::tempdir().expect("a temporary directory");
    let server_a = Server::start(dir_a.path(), &backend, 0).await;
    let server_b = start_second(dir_a.path(), dir_b.path(), &backend).await;

    // Users registered through either process; their tokens work on both.
    let mut sessions: Vec<Session> = Vec::new();
    for n in 0..SENDERS + 1 {
        let server = if n % 2 == 0 { &server_a } else { &server_b };
        sessions.push(register(server, &format!("multi{n}")).await);
    }
    let on = |s: &Session, server: &Server| s.client(server);
    let created = on(&sessions[0], &server_a)
        .must(reqwest::Method::POST, "/createRoom", Some(&json!({"preset": "public_chat", "power_level_content_override": {"state_default": 0}})))
        .await;
    let room = created["room_id"].as_str().expect("a room id").to_owned();
    // Joined through alternating processes (membership events built on each other's).
    for (n, session) in sessions.iter().enumerate().skip(1) {
        let server = if n % 2 == 0 { &server_a } else { &server_b };
        let join = format!("/join/{room}");
        on(session, server).must(reqwest::Method::POST, &join, Some(&json!({}))).await;
    }
    // The watcher (the last user) syncs on both processes.
    let watcher = &sessions[SENDERS];
    let initial = get(&on(watcher, &server_a), "/sync").await;
    let token = initial["next_batch"].as_str().expect("a next_batch").to_owned();

    // A long-polling sync on A wakes for what is sent through B: a room event, a to-device
    // message, the user's own account data (each found by another path of the follower).
    let mut token = token;
    let to_watcher = json!({"messages": {&watcher.user_id: {&watcher.device_id: {"n": 1}}}});
    let pokes: [(&str, String, Value); 3] = [
        (
            "a room event",
            format!("/rooms/{room}/send/m.room.message/poke"),
            json!({"msgtype": "m.text", "body": "poke"}),
        ),
        ("a to-device message", "/sendToDevice/org.example.poke/poke".to_owned(), to_watcher),
        (
            "account data",
            format!("/user/{}/account_data/org.example.poke", urlencode(&watcher.user_id)),
            json!({"n": 1}),
        ),
    ];
    for (n, (what, path, body)) in pokes.iter().enumerate() {
        let waiting = {
            let client = on(watcher, &server_a);
            let path = format!("/sync?since={}&timeout=15000", urlencode(&token));
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = client.must(reqwest::Method::GET, &path, None).await;
                (answer, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The room event by another user; the others by the watcher itself, through B.
        let poker = if n == 0 { &sessions[1] } else { watcher };
        on(poker, &server_b).must(reqwest::Method::PUT, path, Some(body)).await;
        let (answer, waited) = waiting.await.expect("the waiting sync");
        let found = match n {
            0 => answer["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == "poke")),
            1 => answer["to_device"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["type"] == "org.example.poke")),
            _ => answer["account_data"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["type"] == "org.example.poke")),
        };
        assert!(found, "the sync on A answered without {what} sent through B: {answer}");
        assert!(waited < Duration::from_secs(10), "the sync on A woke only after {waited:?}");
        eprintln!("multi: a sync on A woke {waited:?} after it started, for {what} sent via B");
        token = answer["next_batch"].as_str().expect("a next_batch").to_owned();
    }

    // The load: every sender alternates between A and B; the watcher syncs on both at once.
    let since = get(&on(watcher, &server_a), &format!("/sync?since={}", urlencode(&token)))
        .await["next_batch"]
        .as_str()
        .expect("a next_batch")
        .to_owned();
    let want = SENDERS * MESSAGES;
    let stop_by = Instant::now() + SETTLE_WITHIN + Duration::from_secs(60);
    let syncs: Vec<_> = [&server_a, &server_b]
        .into_iter()
        .map(|server| {
            tokio::spawn(sync_until(
                on(watcher, server),
                room.clone(),
                since.clone(),
                want,
                stop_by,
            ))
        })
        .collect();
    let senders: Vec<_> = sessions[..SENDERS]
        .iter()
        .map(|s| tokio::spawn(send_all(on(s, &server_a), on(s, &server_b), room.clone())))
        .collect();
    let mut acknowledged = BTreeSet::new();
    let mut states = BTreeMap::new();
    for (n, sender) in senders.into_iter().enumerate() {
        let (sent, state_ids) = sender.await.expect("a sender");
        acknowledged.extend(sent);
        states.insert(sessions[n].user_id.clone(), state_ids);
    }
    assert_eq!(acknowledged.len(), want, "every send acknowledged with its own event");
    eprintln!(
        "multi: {want} messages and as many state events sent through both in {:?}",
        began.elapsed()
    );

    // Both processes' /messages: every acknowledged message once, in one order; every state
    // event replaces its sender's previous one (none was built on a state that missed it).
    let mut orders = Vec::new();
    for server in [&server_a, &server_b] {
        let events = timeline(&on(watcher, server), &room).await;
        let ours: Vec<String> =
            message_ids(&events).into_iter().filter(|id| acknowledged.contains(id)).collect();
        let unique: BTreeSet<&String> = ours.iter().collect();
        assert_eq!(unique.len(), ours.len(), "/messages on {} shows an event twice", server.base);
        assert_eq!(ours.len(), want, "/messages on {} misses acknowledged events", server.base);
        orders.push(ours);
        for (user, ids) in &states {
            let shown: Vec<&Value> = events
                .iter()
                .filter(|e| e["type"] == STATE_TYPE && e["state_key"] == json!(user))
                .collect();
            let shown_ids: Vec<&str> =
                shown.iter().filter_map(|e| e["event_id"].as_str()).collect();
            assert_eq!(shown_ids, *ids, "{user}'s state events on {}", server.base);
            for pair in shown.windows(2) {
                assert_eq!(
                    pair[1]["unsigned"]["replaces_state"], pair[0]["event_id"],
                    "{user}'s state event was built on a state without their previous one \
                     (another process's event overwrote it), on {}",
                    server.base
                );
            }
            let path = format!("/rooms/{room}/state/{STATE_TYPE}/{}", urlencode(user));
            let content = get(&on(watcher, server), &path).await;
            assert_eq!(content["n"].as_u64(), Some(MESSAGES as u64 - 1), "{user}'s last state");
        }
    }
    assert_eq!(orders[0], orders[1], "/messages shows one order on both processes");

    // The syncs run on each process while the load ran: the same, in the same order.
    for (sync, server) in syncs.into_iter().zip([&server_a, &server_b]) {
        let seen = sync.await.expect("a syncing client");
        let ours: Vec<String> = seen.into_iter().filter(|id| acknowledged.contains(id)).collect();
        assert_eq!(ours, orders[0], "the syncs on {} saw the messages otherwise", server.base);
    }

    let logs = [server_a.log_text(), server_b.log_text()];
    drop((server_a, server_b));
    for log in logs {
        assert!(!log.contains("panicked"), "a server panicked: {log}");
    }
    eprintln!("multi: two processes on one database agree, in {:?}", began.elapsed());
}
