//! Upgrades keep data: a data directory (sled) and a database (PostgreSQL) written by the
//! release at commit a001503 open with this one, and what that release kept as records
//! (aliases, the room directory, redactions, profiles, forgotten rooms) moves to the typed
//! tables at start and reads back over HTTP exactly as it was written.
//!
//! The fixtures in `a001503/` were made by `a001503/make-fixture.sh` running that release's
//! binary; `a001503/manifest.json` lists every id, token and value they hold. The PostgreSQL
//! half loads `a001503/postgres.sql` (a `pg_dump`) into a fresh database with `psql`; it runs
//! when `DATABASE_URL` names a server and is skipped, saying so, otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upgrade/a001503")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixture().join("manifest.json")).expect("the manifest");
    serde_json::from_str(&text).expect("the manifest is JSON")
}

/// Copies a directory tree (the fixture must stay as it is).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("makes a directory");
    for entry in std::fs::read_dir(from).expect("reads the fixture") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copies a file");
        }
    }
}

/// The binary serving `data_dir` (and `postgres_url` when given); killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(dir: &Path, data_dir: &Path, postgres_url: Option<&str>) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let storage = match postgres_url {
            Some(url) => format!("[storage]\nbackend = \"postgres\"\npostgres_url = {url:?}\n"),
            None => "[storage]\nbackend = \"sled\"\n".to_owned(),
        };
        let config = dir.join("homeserver.toml");
        let text = format!(
            "[server]\nname = \"fixture.test\"\nlisten = \"127.0.0.1:{port}\"\n\
             data_dir = {:?}\n[rate_limits]\nenabled = false\n{storage}",
            data_dir.display().to_string()
        );
        std::fs::write(&config, text).expect("writes the config");
        let log = std::fs::File::create(dir.join("server.log")).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_homeserver"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the binary starts");
        let mut server = Server { child, base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http.get(format!("{}/_matrix/client/versions", server.base)).send().await.is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("the binary stopped ({status}) instead of opening the old data:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the binary did not answer within 30 s");
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, token, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn bytes(&self, path: &str, token: &str) -> Vec<u8> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.bytes().await.expect("a body").to_vec()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Everything the manifest says the fixture holds, read over HTTP.
async fn check(server: &Server, manifest: &Value, run: &Value) {
    let alice = "@alice:fixture.test";
    let bob = "@bob:fixture.test";
    let alice_token = run["access_tokens"][alice].as_str().expect("alice's token");
    let bob_token = run["access_tokens"][bob].as_str().expect("bob's token");
    let public = run["rooms"]["public"].as_str().expect("the public room");
    let private = run["rooms"]["private"].as_str().expect("the private room");

    // Accounts: the old tokens and passwords still work.
    let whoami = server.get(&format!("{V3}/account/whoami"), alice_token).await;
    assert_eq!(whoami["user_id"], alice);
    let password = manifest["users"][bob]["password"].as_str().expect("bob's password");
    let login = json!({"type": "m.login.password", "password": password,
                       "identifier": {"type": "m.id.user", "user": "bob"}});
    let (status, body) =
        server.call(reqwest::Method::POST, &format!("{V3}/login"), "", Some(login)).await;
    assert_eq!(status, 200, "bob logs in with the password he had: {body}");

    // Aliases (records), each pointing where it pointed; the deleted one is gone.
    for (alias, room) in run["aliases"].as_object().expect("aliases") {
        let resolved =
            server.get(&format!("{V3}/directory/room/{}", enc(alias)), alice_token).await;
        assert_eq!(resolved["room_id"], *room, "{alias}");
    }
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            &format!("{V3}/directory/room/{}", enc("#deleted:fixture.test")),
            alice_token,
            None,
        )
        .await;
    assert_eq!(status, 404, "a deleted alias stays deleted");
    let aliases = server.get(&format!("{V3}/rooms/{}/aliases", enc(public)), alice_token).await;
    let mut listed: Vec<&str> =
        aliases["aliases"].as_array().expect("a list").iter().filter_map(Value::as_str).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> =
        run["aliases"].as_object().expect("aliases").keys().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    // The directory (records): the published room only.
    let directory = server.get(&format!("{V3}/publicRooms"), alice_token).await;
    let published: Vec<&str> = directory["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .filter_map(|r| r["room_id"].as_str())
        .collect();
    let expected: Vec<&str> = run["published_rooms"]
        .as_array()
        .expect("published")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(published, expected);
    let visibility =
        server.get(&format!("{V3}/directory/list/room/{}", enc(private)), alice_token).await;
    assert_eq!(visibility["visibility"], "private");

    // Profiles (records).
    for (user, profile) in run["profiles"].as_object().expect("profiles") {
        let stored = server.get(&format!("{V3}/profile/{}", enc(user)), alice_token).await;
        assert_eq!(stored, *profile, "{user}");
    }

    // Redactions (records): the redacted event reads redacted, and says by what.
    for (redacted, redaction) in run["redactions"].as_object().expect("redactions") {
        let event = server
            .get(&format!("{V3}/rooms/{}/event/{}", enc(public), enc(redacted)), alice_token)
            .await;
        assert_eq!(event["content"], json!({}), "{redacted} reads redacted");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], *redaction);
    }
    let unredacted = run["events"]["public_room"]["alice_1"].as_str().expect("an event");
    let event = server
        .get(&format!("{V3}/rooms/{}/event/{}", enc(public), enc(unredacted)), alice_token)
        .await;
    assert!(event["content"]["body"].is_string(), "other events keep their content: {event}");

    // Forgotten rooms (records): bob's initial sync leaves out the room he forgot.
    let sync = server.get(&format!("{V3}/sync"), bob_token).await;
    for forgotten in run["forgotten"].as_array().expect("forgotten") {
        assert_eq!(forgotten["user"], bob);
        let room = forgotten["room"].as_str().expect("a room");
        assert!(sync["rooms"]["leave"].get(room).is_none(), "bob forgot {room}: {sync}");
    }
    assert!(sync["rooms"]["join"].get(public).is_some(), "bob is still in the public room");

    // Account data, global and per room.
    for item in run["account_data"]["global"].as_array().expect("global") {
        let user = item["user"].as_str().expect("a user");
        let token = run["access_tokens"][user].as_str().expect("a token");
        let kind = item["type"].as_str().expect("a type");
        let stored =
            server.get(&format!("{V3}/user/{}/account_data/{kind}", enc(user)), token).await;
        assert_eq!(stored, item["content"], "{user} {kind}");
    }
    for item in run["account_data"]["room"].as_array().expect("room") {
        let user = item["user"].as_str().expect("a user");
        let token = run["access_tokens"][user].as_str().expect("a token");
        let room = item["room"].as_str().expect("a room");
        let kind = item["type"].as_str().expect("a type");
        let path = format!("{V3}/user/{}/rooms/{}/account_data/{kind}", enc(user), enc(room));
        assert_eq!(server.get(&path, token).await, item["content"], "{user} {room} {kind}");
    }

    // Media, byte for byte in size.
    for media in run["media"].as_array().expect("media") {
        let id = media["media_id"].as_str().expect("an id");
        let bytes = server
            .bytes(&format!("/_matrix/client/v1/media/download/fixture.test/{id}"), alice_token)
            .await;
        assert_eq!(bytes.len() as u64, media["size"].as_u64().expect("a size"), "{id}");
    }

    // The history: every message, and the server writes on after the upgrade.
    let (status, sent) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{}/send/m.room.message/after-upgrade", enc(public)),
            alice_token,
            Some(json!({"msgtype": "m.text", "body": "after the upgrade"})),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let messages = server
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=50", enc(public)), alice_token)
        .await;
    let ids: Vec<&str> = messages["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.first().copied(), sent["event_id"].as_str());
    for (name, id) in run["events"]["public_room"].as_object().expect("events") {
        assert!(ids.contains(&id.as_str().expect("an id")), "{name} {id} is in the history");
    }
}

async fn upgrade(backend: &str, postgres_url: Option<&str>, data_fixture: &str) {
    let manifest = manifest();
    let run = &manifest["runs"][backend];
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    copy_tree(&fixture().join(data_fixture), &data_dir);
    {
        let server = Server::start(dir.path(), &data_dir, postgres_url).await;
        check(&server, &manifest, run).await;
    }
    // Once moved, the records stay moved: a second start reads the same.
    let server = Server::start(dir.path(), &data_dir, postgres_url).await;
    check(&server, &manifest, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_directory_of_a001503_opens_and_keeps_everything() {
    upgrade("sled", None, "sled-data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_of_a001503_opens_and_keeps_everything() {
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: the PostgreSQL upgrade test needs DATABASE_URL; it is not set");
        return;
    };
    // A database of its own, loaded from the dump with psql.
    let name = format!("upgrade_a001503_{}", std::process::id());
    let (server_url, _) = url.rsplit_once('/').expect("a database URL ends with /name");
    let psql = |database: &str, args: &[&str]| {
        let output = Command::new("psql")
            .arg(format!("{server_url}/{database}"))
            .args(["-q", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .output()
            .expect("psql runs (the PostgreSQL client is needed for this test)");
        assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
    };
    psql("postgres", &["-c", &format!("DROP DATABASE IF EXISTS {name}")]);
    psql("postgres", &["-c", &format!("CREATE DATABASE {name}")]);
    let dump = fixture().join("postgres.sql");
    psql(&name, &["-f", &dump.display().to_string()]);
    let database = format!("{server_url}/{name}");
    upgrade("postgres", Some(&database), "postgres-data").await;
    psql("postgres", &["-c", &format!("DROP DATABASE {name} WITH (FORCE)")]);
}
