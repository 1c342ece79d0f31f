//! `backup` and `restore` as an operator runs them: an online backup while a client keeps
//! sending, restored into a new data directory and served again with every acknowledged
//! event; the refusals (a non-empty data directory, a damaged or unfinished backup); the
//! backup endpoint's authentication; and the one line an offline command prints when a
//! running server holds the data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SECRET: &str = "correct horse battery staple";

mod common;

use common::homeserver;

/// A config for a server with its data in `dir/data`, on a free loopback port, with the
/// shared secret when `secret`; returns its path and base URL.
fn config_in(dir: &Path, secret: bool) -> (PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = dir.join("homeserver.toml");
    let mut text = format!(
        "[server]\nname = \"test.local\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
         [rate_limits]\nenabled = false\n",
        dir.join("data").display().to_string()
    );
    if secret {
        text.push_str(&format!("[registration]\nshared_secret = {SECRET:?}\n"));
    }
    std::fs::create_dir_all(dir).expect("a directory");
    std::fs::write(&path, text).expect("writes");
    (path, format!("http://127.0.0.1:{port}"))
}

/// A running server; killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(config: &Path) -> Server {
    let (child, lines, _) = common::start(config);
    // Keep reading, so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server(child)
}

fn run(args: &[&str], config: &Path) -> Output {
    let (command, rest) = args.split_first().expect("a command");
    homeserver().arg(command).arg("--config").arg(config).args(rest).output().expect("runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn login(client: &reqwest::Client, base: &str, user: &str) -> String {
    let body = json!({"type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user}, "password": "pw"});
    let answer: Value = client
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&body)
        .send()
        .await
        .expect("logs in")
        .json()
        .await
        .expect("JSON");
    answer["access_token"].as_str().expect("a token").to_owned()
}

/// Every event id of `room`'s timeline, through `/messages` backwards.
async fn timeline(client: &reqwest::Client, base: &str, token: &str, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut url = format!("{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000");
        if let Some(from) = &from {
            url.push_str(&format!("&from={from}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("reads")
            .json()
            .await
            .expect("JSON");
        let chunk = page["chunk"].as_array().expect("a chunk");
        ids.extend(chunk.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return ids,
        }
    }
}

/// Appends `[storage]` lines to the config at `path`.
fn with_storage(path: &Path, storage: &str) {
    let text = std::fs::read_to_string(path).expect("reads");
    std::fs::write(path, format!("{text}[storage]\n{storage}")).expect("writes");
}

/// The `[storage]` lines of a PostgreSQL store in a new schema of `DATABASE_URL`'s database,
/// or `None` when it is unset.
async fn postgres_storage(prefix: &str) -> Option<String> {
    let url = common::postgres_schema_url(prefix).await?;
    Some(format!("backend = \"postgres\"\npostgres_url = \"{url}\"\n"))
}

/// A backup made by the running server while a client sends messages, restored into a new
/// data directory, served again: every message acknowledged before the backup began is
/// there, and the messages there are a prefix of those sent (a consistent cut, no gaps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_load_restores_every_acknowledged_event() {
    online_backup_under_load("sled", None).await;
}

/// The same on PostgreSQL: the backup copies one snapshot of the database while the server
/// writes, and the restore loads it into another schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_postgres_backup_under_load_restores_every_acknowledged_event() {
    let (Some(live), Some(restored)) =
        (postgres_storage("backup_live").await, postgres_storage("backup_restored").await)
    else {
        eprintln!(
            "skipped: the PostgreSQL backup test needs DATABASE_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test); it is not set"
        );
        return;
    };
    online_backup_under_load("postgres", Some((live, restored))).await;
}

/// The test of both: `storage` holds the `[storage]` lines of the live and the restored
/// server (none: the default, sled).
async fn online_backup_under_load(backend: &str, storage: Option<(String, String)>) {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, base) = config_in(&dir.path().join("live"), true);
    if let Some((live, _)) = &storage {
        with_storage(&config, live);
    }
    ok(&run(&["register-user", "alice", "--password", "pw"], &config));
    let server = serve(&config);
    let client = reqwest::Client::new();
    let token = login(&client, &base, "alice").await;
    let created: Value = client
        .post(format!("{base}/_matrix/client/v3/createRoom"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("creates")
        .json()
        .await
        .expect("JSON");
    let room = created["room_id"].as_str().expect("a room").to_owned();

    // The load: messages one after another; each acknowledged id in order.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = tokio::spawn({
        let (client, base, token, room) =
            (client.clone(), base.clone(), token.clone(), room.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
                let sent = client
                    .put(url)
                    .bearer_auth(&token)
                    .json(&json!({"msgtype": "m.text", "body": format!("message {n}")}))
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status().is_success()
                    && let Ok(body) = response.json::<Value>().await
                    && let Some(id) = body["event_id"].as_str()
                {
                    acked.lock().expect("the list").push(id.to_owned());
                }
            }
        }
    });
    let started = Instant::now();
    while acked.lock().expect("the list").len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<String> = acked.lock().expect("the list").clone();
    eprintln!("{} messages in {:?}", before.len(), started.elapsed());
    let target = dir.path().join("backup");
    let backup = {
        let (config, target) = (config.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            homeserver()
                .args(["backup", "--config"])
                .arg(&config)
                .arg("--to")
                .arg(&target)
                .output()
                .expect("runs")
        })
        .await
        .expect("the backup ran")
    };
    let said = ok(&backup);
    eprintln!("{said}");
    let during = acked.lock().expect("the list").len() - before.len();
    eprintln!("{} messages before the backup, {during} during it", before.len());
    assert!(said.contains("by the running server"), "{said}");
    // A little more load after the backup, which it must not hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.expect("the sender ended");
    let sent: Vec<String> = acked.lock().expect("the list").clone();
    assert!(sent.len() > before.len() + during, "the server went on taking messages");
    drop(server);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(target.join("manifest.json")).expect("a manifest"))
            .expect("JSON");
    assert_eq!(manifest["format"], 1);
    // The copy of an embedded store is a fjall store (fjall's bulk load makes it); the
    // restore below puts it back into sled.
    let copied_as = if backend == "postgres" { "postgres" } else { "fjall" };
    assert_eq!(manifest["backend"], copied_as);
    assert!(manifest["rooms"][&room].is_string(), "{manifest}");
    assert!(manifest["files"]["signing.key"].is_object(), "{manifest}");
    assert!(manifest["files"]["homeserver.toml"].is_object(), "{manifest}");

    let (restored, restored_base) = config_in(&dir.path().join("restored"), false);
    if let Some((_, other)) = &storage {
        with_storage(&restored, other);
    }
    let said = ok(&run(&["restore", "--from", target.to_str().expect("UTF-8")], &restored));
    assert!(said.contains("checked"), "{said}");
    assert_eq!(
        std::fs::read(dir.path().join("live/data/signing.key")).expect("the key"),
        std::fs::read(dir.path().join("restored/data/signing.key")).expect("the restored key"),
    );
    let _server = serve(&restored);
    let token = login(&client, &restored_base, "alice").await;
    let mut there = timeline(&client, &restored_base, &token, &room).await;
    there.reverse();
    let messages: Vec<&String> = there.iter().filter(|id| sent.contains(id)).collect();
    assert!(messages.len() >= before.len(), "{} of {} acknowledged", messages.len(), before.len());
    for (i, id) in messages.iter().enumerate() {
        assert_eq!(*id, &sent[i], "the restored messages are the first ones sent, in order");
    }
}

/// Restore refuses a data directory holding anything, a backup without its manifest, one
/// whose manifest is not JSON, and one with a file cut short; nothing is written then.
#[test]
fn restore_refuses_a_non_empty_directory_and_a_damaged_backup() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, _) = config_in(&dir.path().join("live"), false);
    ok(&run(&["register-user", "alice", "--password", "pw"], &config));
    let target = dir.path().join("backup");
    let target_arg = target.to_str().expect("UTF-8");
    let said = ok(&run(&["backup", "--to", target_arg], &config));
    assert!(said.contains("offline"), "{said}");
    // A second backup into the same directory: refused.
    let said = failed(&run(&["backup", "--to", target_arg], &config));
    assert!(said.contains("not empty"), "{said}");

    // Into the live server's own data directory: refused.
    let said = failed(&run(&["restore", "--from", target_arg], &config));
    assert!(said.contains("not empty"), "{said}");

    let (fresh, _) = config_in(&dir.path().join("fresh"), false);
    let data = dir.path().join("fresh/data");
    let copy = |name: &str| {
        let to = dir.path().join(name);
        let listed = Command::new("cp").arg("-r").arg(&target).arg(&to).status().expect("cp");
        assert!(listed.success());
        to
    };
    // No manifest: not a finished backup.
    let unfinished = copy("unfinished");
    std::fs::remove_file(unfinished.join("manifest.json")).expect("removes");
    let said = failed(&run(&["restore", "--from", unfinished.to_str().expect("UTF-8")], &fresh));
    assert!(said.contains("not a finished backup"), "{said}");
    // A manifest that is not JSON.
    let malformed = copy("malformed");
    std::fs::write(malformed.join("manifest.json"), b"{\"format\": 1, ").expect("writes");
    let said = failed(&run(&["restore", "--from", malformed.to_str().expect("UTF-8")], &fresh));
    assert!(said.contains("malformed"), "{said}");
    // A store file cut short.
    let truncated = copy("truncated");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(truncated.join("manifest.json")).expect("reads"))
            .expect("JSON");
    let (name, _) = manifest["files"]
        .as_object()
        .expect("files")
        .iter()
        .filter(|(name, _)| name.starts_with("store/"))
        .max_by_key(|(_, file)| file["bytes"].as_u64())
        .expect("a store file");
    let path = truncated.join(name);
    let bytes = std::fs::read(&path).expect("reads");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("writes");
    let said = failed(&run(&["restore", "--from", truncated.to_str().expect("UTF-8")], &fresh));
    assert!(said.contains("damaged") && said.contains(name.as_str()), "{said}");
    // A file the manifest does not list.
    let added = copy("added");
    std::fs::write(added.join("store/extra"), b"not from the backup").expect("writes");
    let said = failed(&run(&["restore", "--from", added.to_str().expect("UTF-8")], &fresh));
    assert!(said.contains("store/extra is not in its manifest"), "{said}");
    assert!(!data.exists(), "nothing was restored");

    // The backup as it was restores, onto fjall (the copy's own engine) too.
    let text = std::fs::read_to_string(&fresh).expect("reads");
    std::fs::write(&fresh, format!("{text}[storage]\nbackend = \"fjall\"\n")).expect("writes");
    let said = ok(&run(&["restore", "--from", target_arg], &fresh));
    assert!(said.contains("checked"), "{said}");
    let again = failed(&run(&["register-user", "alice", "--password", "pw"], &fresh));
    assert!(again.contains("M_USER_IN_USE"), "alice was restored: {again}");

    // A store of another kind than the backup's: refused before anything is written.
    let (postgres, _) = config_in(&dir.path().join("postgres"), false);
    with_storage(
        &postgres,
        "backend = \"postgres\"\npostgres_url = \"postgres://nobody@127.0.0.1:1/none\"\n",
    );
    let said = failed(&run(&["restore", "--from", target_arg], &postgres));
    assert!(said.contains("the backup is of a fjall store"), "{said}");
    assert!(!dir.path().join("postgres/data").exists(), "nothing was restored");
}

/// The backup endpoint: only with the shared secret's MAC over a fresh nonce and the
/// directory; refuses a relative or non-empty directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_endpoint_takes_only_the_shared_secret() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, base) = config_in(&dir.path().join("live"), true);
    let _server = serve(&config);
    let client = reqwest::Client::new();
    let url = format!("{base}/_homeserver/admin/v1/backup");
    let (client, url) = (&client, &url);
    let nonce = || async {
        let answer: Value = client.get(url).send().await.expect("asks").json().await.expect("JSON");
        answer["nonce"].as_str().expect("a nonce").to_owned()
    };
    let post = |body: Value| async move {
        let response = client.post(url).json(&body).send().await.expect("posts");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("JSON"))
    };
    let target = dir.path().join("backup");
    let directory = target.to_str().expect("UTF-8");

    let n = nonce().await;
    let wrong = matrix_homeserver::backup_mac("another secret", &n, directory);
    let (status, body) = post(json!({"nonce": n, "directory": directory, "mac": wrong})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // The MAC of another directory.
    let n = nonce().await;
    let other = matrix_homeserver::backup_mac(SECRET, &n, "/elsewhere");
    let (status, _) = post(json!({"nonce": n, "directory": directory, "mac": other})).await;
    assert_eq!(status, 403);
    // A nonce not issued.
    let mac = matrix_homeserver::backup_mac(SECRET, "made-up", directory);
    let (status, _) = post(json!({"nonce": "made-up", "directory": directory, "mac": mac})).await;
    assert_eq!(status, 400);
    // A relative directory.
    let n = nonce().await;
    let mac = matrix_homeserver::backup_mac(SECRET, &n, "relative");
    let (status, body) = post(json!({"nonce": n, "directory": "relative", "mac": mac})).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    // Missing fields.
    let (status, _) = post(json!({"directory": directory})).await;
    assert_eq!(status, 400);

    // The right MAC: the copy is made, once; the nonce is spent.
    let n = nonce().await;
    let mac = matrix_homeserver::backup_mac(SECRET, &n, directory);
    let (status, body) = post(json!({"nonce": n, "directory": directory, "mac": mac})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "fjall", "the copy's engine");
    assert!(body["stream_position"].is_u64() && body["events"].is_u64(), "{body}");
    let (status, _) = post(json!({"nonce": n, "directory": directory, "mac": mac})).await;
    assert_eq!(status, 400, "a nonce is good once");
    let n = nonce().await;
    let mac = matrix_homeserver::backup_mac(SECRET, &n, directory);
    let (status, body) = post(json!({"nonce": n, "directory": directory, "mac": mac})).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("not empty")), "{body}");
}

/// Without the shared secret, the endpoint refuses everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_endpoint_is_off_without_a_shared_secret() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, base) = config_in(&dir.path().join("live"), false);
    let _server = serve(&config);
    let client = reqwest::Client::new();
    let url = format!("{base}/_homeserver/admin/v1/backup");
    let response = client.get(&url).send().await.expect("asks");
    assert_eq!(response.status().as_u16(), 403);
    let body = json!({"nonce": "n", "directory": "/tmp/x", "mac": "00"});
    let response = client.post(&url).json(&body).send().await.expect("posts");
    assert_eq!(response.status().as_u16(), 403);
}

/// While a server (without the shared secret) holds the data directory, the offline
/// commands say so in one line.
#[test]
fn offline_commands_say_in_one_line_that_the_data_directory_is_locked() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, _) = config_in(&dir.path().join("live"), false);
    let _server = serve(&config);
    let target = dir.path().join("backup");
    for args in [
        vec!["backup", "--to", target.to_str().expect("UTF-8")],
        vec!["copy-storage", "--to", "fjall"],
        vec!["register-user", "bob", "--password", "pw"],
    ] {
        let said = failed(&run(&args, &config));
        assert_eq!(said.trim_end().lines().count(), 1, "{args:?}: {said}");
        assert!(said.contains("in use by another process"), "{args:?}: {said}");
    }
}
