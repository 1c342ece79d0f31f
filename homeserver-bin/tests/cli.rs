//! The binary as a user runs it: `generate-config`, `register-user`, and `serve` with zero
//! set-up (a data directory, a signing key with mode 0600, an answering API).

use std::io::BufReader;
use std::time::{Duration, Instant};

mod common;

use common::homeserver;

#[test]
fn generate_config_prints_the_example() {
    let output = homeserver().arg("generate-config").output().expect("runs");
    assert!(output.status.success());
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/homeserver.example.toml"))
            .expect("reads");
    assert_eq!(String::from_utf8_lossy(&output.stdout), example);
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten_on = \"x\"\n").expect("writes");
    let output = homeserver().args(["serve", "--config"]).arg(&path).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_on"), "{stderr}");
}

#[test]
fn a_bad_appservice_registration_is_a_clear_error_naming_its_file() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, _) = config_in(dir.path());
    let registration = dir.path().join("bridge-registration.yaml");
    std::fs::write(
        &registration,
        "id: bridge\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bridgebot\n\
         namespaces:\n  users:\n  - regex: '@bridge_(.*'\n    exclusive: true\n",
    )
    .expect("writes");
    let mut text = std::fs::read_to_string(&config).expect("reads");
    text.push_str(&format!(
        "app_service_config_files = [{:?}]\n",
        registration.display().to_string()
    ));
    std::fs::write(&config, text).expect("writes");
    let output = homeserver().args(["serve", "--config"]).arg(&config).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bridge-registration.yaml"), "{stderr}");
    assert!(stderr.contains("regex"), "{stderr}");
}

/// Writes a config for a server in `dir` on a free loopback port; returns its path and URL.
fn config_in(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = dir.join("homeserver.toml");
    let text = format!(
        "[server]\nname = \"test.local\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text).expect("writes");
    (path, format!("127.0.0.1:{port}"))
}

/// A server started with `config` (see [`common::start`]).
fn serve(
    config: &std::path::Path,
) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStderr>>, Vec<String>) {
    common::start(config)
}

#[test]
fn serve_starts_with_a_signing_key_and_answers() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, address) = config_in(dir.path());
    let created = homeserver()
        .args(["register-user", "--config"])
        .arg(&config)
        .args(["admin", "--password", "pw", "--admin"])
        .output()
        .expect("runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("@admin:test.local"));

    let (mut child, _lines, said) = serve(&config);
    assert!(said.iter().any(|l| l.contains("generated the signing key")), "{said:?}");
    let key = dir.path().join("data/signing.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("the key exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A plain HTTP/1.1 request over loopback.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&address).expect("connects");
    stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"versions\""), "{response}");
    child.kill().expect("stops");
    child.wait().expect("reaped");
}

/// `copy-storage` copies a sled store into fjall: a user registered on sled is there once the
/// server runs on fjall (registering the name again is refused), and a second copy into the
/// same directory is refused.
#[test]
fn copy_storage_moves_a_sled_store_to_fjall() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, _) = config_in(dir.path());
    let register = |config: &std::path::Path| {
        homeserver()
            .args(["register-user", "--config"])
            .arg(config)
            .args(["alice", "--password", "pw"])
            .output()
            .expect("runs")
    };
    let created = register(&config);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let copy = || {
        homeserver()
            .args(["copy-storage", "--config"])
            .arg(&config)
            .args(["--to", "fjall"])
            .output()
            .expect("runs")
    };
    let copied = copy();
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    assert!(String::from_utf8_lossy(&copied.stdout).contains("backend = \"fjall\""));

    let text = std::fs::read_to_string(&config).expect("reads");
    let on_fjall = dir.path().join("fjall.toml");
    std::fs::write(&on_fjall, format!("{text}[storage]\nbackend = \"fjall\"\n")).expect("writes");
    let again = register(&on_fjall);
    assert!(!again.status.success(), "alice was copied, so the name is taken");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("M_USER_IN_USE"), "{stderr}");

    let twice = copy();
    assert!(!twice.status.success(), "the fjall store is not empty any more");
    assert!(String::from_utf8_lossy(&twice.stderr).contains("not empty"));
}

/// With `registration.shared_secret`, `register-user` registers through the running server
/// (whose data directory is locked), as Synapse's `register_new_matrix_user` does; without
/// one, it says in one line that the directory is in use.
#[test]
fn register_user_goes_through_a_running_server_with_the_shared_secret() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, address) = config_in(dir.path());
    let mut text = std::fs::read_to_string(&config).expect("reads");
    text.push_str("[registration]\nshared_secret = \"correct horse battery staple\"\n");
    let with_secret = dir.path().join("with-secret.toml");
    std::fs::write(&with_secret, &text).expect("writes");

    let (mut child, _lines, said) = serve(&with_secret);
    assert!(said.iter().any(|l| l.contains("serving")), "{said:?}");
    let register = |config: &std::path::Path, name: &str| {
        homeserver()
            .args(["register-user", "--config"])
            .arg(config)
            .args([name, "--password", "pw", "--admin"])
            .output()
            .expect("runs")
    };
    let online = register(&with_secret, "boss");
    assert!(online.status.success(), "{}", String::from_utf8_lossy(&online.stderr));
    assert!(String::from_utf8_lossy(&online.stdout).contains("@boss:test.local (administrator)"));
    let again = register(&with_secret, "boss");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("M_USER_IN_USE"));

    // The new user logs in on the running server.
    use std::io::{Read, Write};
    let body = r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"boss"},"password":"pw"}"#;
    let mut stream = std::net::TcpStream::connect(&address).expect("connects");
    write!(
        stream,
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Without the secret: the locked directory, said in one line.
    let offline = register(&config, "other");
    assert!(!offline.status.success());
    let said = String::from_utf8_lossy(&offline.stderr);
    assert!(said.contains("in use by another process"), "{said}");
    child.kill().expect("stops");
    child.wait().expect("reaped");
}

/// `[logging] format = "json"`: a JSON line per request with its method, path, status and
/// time, and never the access token a query carried.
#[test]
fn requests_are_logged_as_json_lines_without_tokens() {
    let dir = tempfile::tempdir().expect("a directory");
    let (config, address) = config_in(dir.path());
    let mut text = std::fs::read_to_string(&config).expect("reads");
    text.push_str("[logging]\nformat = \"json\"\nfilter = \"info\"\n");
    std::fs::write(&config, text).expect("writes");
    let (mut child, mut lines, said) = serve(&config);
    let serving = said.last().expect("the server said something");
    let json: serde_json::Value = serde_json::from_str(serving).expect("a JSON line");
    assert_eq!(json["level"], "INFO", "{serving}");
    assert!(serving.contains("serving"), "{serving}");
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&address).expect("connects");
    stream
        .write_all(
            b"GET /_matrix/client/v3/account/whoami?access_token=sekrit-token HTTP/1.1\r\n\
              Host: x\r\nConnection: close\r\n\r\n",
        )
        .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        assert!(!line.contains("sekrit"), "a token in the log: {line}");
        if line.contains("whoami") {
            found = Some(line);
            break;
        }
    }
    let line = found.expect("the request's line");
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(json["fields"]["path"], "/_matrix/client/v3/account/whoami", "{line}");
    assert_eq!(json["fields"]["status"], 401, "{line}");
    assert_eq!(json["fields"]["method"], "GET", "{line}");
    assert!(json["fields"]["ms"].as_f64().is_some(), "{line}");
    child.kill().expect("stops");
    child.wait().expect("reaped");
}

#[path = "cli/secure.rs"]
mod secure;
