//! Secure defaults checked at start, TLS on the client listener with its certificate reloaded
//! on SIGHUP, and `check-federation` against our own TLS federation listener (and the admin
//! endpoint that runs the same checks).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{config_in, homeserver, serve};

/// A self-signed certificate for 127.0.0.1 and its key, written as `NAME.crt` and `NAME.key`
/// in `dir`; answers the paths and the certificate's PEM.
fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, made.cert.pem()).expect("writes");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("writes");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    (cert, key, made.cert.pem())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn append(config: &Path, text: &str) {
    let mut all = std::fs::read_to_string(config).expect("reads");
    all.push_str(text);
    std::fs::write(config, all).expect("writes");
}

/// The error line of a refused start: exactly one line, `Error: ...`.
fn refusal(config: &Path) -> String {
    let output = homeserver()
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("runs");
    assert!(!output.status.success(), "started");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = errors.last().copied().unwrap_or_default();
    assert!(last.starts_with("Error: "), "{stderr}");
    assert!(!stderr.contains("Caused by"), "one line: {stderr}");
    last.to_owned()
}

#[test]
fn unsafe_configs_are_refused_with_a_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("a directory");
    let (a_cert, _, _) = pair(dir.path(), "a");
    let (_, b_key, _) = pair(dir.path(), "b");
    let cases = [
        (
            format!("tls_cert = {a_cert:?}\ntls_key = {b_key:?}\n"),
            "the private key is not the key of the certificate",
        ),
        (format!("tls_cert = {a_cert:?}\n"), "[server] needs both tls_cert and tls_key"),
        (
            "[registration]\nmode = \"open\"\n".to_owned(),
            "registration.enable_registration_without_verification = true",
        ),
        (
            "[url_preview]\nenabled = true\nip_blocklist = []\n".to_owned(),
            "url_preview.ip_blocklist",
        ),
    ];
    for (extra, needle) in cases {
        let (config, _) = config_in(dir.path());
        append(&config, &extra);
        let line = refusal(&config);
        assert!(line.contains(needle), "{needle:?} in {line}");
    }
}

/// The config `generate-config` prints starts as it is (only where it listens and keeps its
/// data moved, through the environment), without a single warning.
#[test]
fn the_generated_config_starts_without_warnings() {
    let dir = tempfile::tempdir().expect("a directory");
    let output = homeserver().arg("generate-config").output().expect("runs");
    let config = dir.path().join("homeserver.toml");
    std::fs::write(&config, &output.stdout).expect("writes");
    let mut child = homeserver()
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("HOMESERVER__SERVER__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HOMESERVER__SERVER__DATA_DIR", dir.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let said = lines_until(&mut child, "serving");
    child.kill().expect("stops");
    child.wait().expect("reaped");
    assert!(said.last().is_some_and(|l| l.contains("serving")), "{said:?}");
    assert!(!said.iter().any(|l| l.contains("WARN")), "{said:?}");
}

/// The child's stderr lines up to one containing `needle` (30 s at most).
fn lines_until(child: &mut Child, needle: &str) -> Vec<String> {
    let stderr = child.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            let done = line.contains(&needle);
            if tx.send(line).is_err() || done {
                break;
            }
        }
        // Keep reading so the server never blocks on a full pipe.
        for _ in lines.by_ref() {}
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        said.push(line);
    }
    said
}

/// A client that trusts only `pem`.
fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("PEM"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

async fn versions(client: &reqwest::Client, address: &str) -> Result<u16, String> {
    let url = format!("https://{address}/_matrix/client/versions");
    client.get(url).send().await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"))
}

fn hangup(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Reads the child's stderr until a line containing `needle`.
fn wait_for(lines: &mut impl Iterator<Item = std::io::Result<String>>, needle: &str) -> String {
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains(needle) {
            return line;
        }
    }
    panic!("the server ended before saying {needle:?}");
}

#[tokio::test]
async fn the_client_listener_serves_tls_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().expect("a directory");
    let (a_cert, a_key, a_pem) = pair(dir.path(), "a");
    let (b_cert, b_key, b_pem) = pair(dir.path(), "b");
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&a_cert, &cert).expect("copies");
    std::fs::copy(&a_key, &key).expect("copies");
    let (config, address) = config_in(dir.path());
    append(&config, &format!("tls_cert = {cert:?}\ntls_key = {key:?}\n"));
    let (mut child, mut lines, said) = serve(&config);
    assert!(said.iter().any(|l| l.contains("on https://")), "{said:?}");
    let (trusts_a, trusts_b) = (trusting(&a_pem), trusting(&b_pem));
    assert_eq!(versions(&trusts_a, &address).await, Ok(200));
    assert!(versions(&trusts_b, &address).await.is_err(), "B is not served yet");

    // A renewed pair: new connections get it, without a restart.
    std::fs::copy(&b_cert, &cert).expect("copies");
    std::fs::copy(&b_key, &key).expect("copies");
    hangup(&child);
    wait_for(&mut lines, "certificate");
    let (trusts_a, trusts_b) = (trusting(&a_pem), trusting(&b_pem));
    assert_eq!(versions(&trusts_b, &address).await, Ok(200));
    assert!(versions(&trusts_a, &address).await.is_err(), "A is no longer served");

    // A key that is not the certificate's: logged, and the pair in use kept.
    std::fs::copy(&a_cert, &cert).expect("copies");
    hangup(&child);
    let line = wait_for(&mut lines, "certificate");
    assert!(line.contains("keeping the [server] certificate in use"), "{line}");
    assert!(line.contains("do not match"), "{line}");
    let trusts_b = trusting(&b_pem);
    assert_eq!(versions(&trusts_b, &address).await, Ok(200));
    child.kill().expect("stops");
    child.wait().expect("reaped");
}

fn check_federation(args: &[&str]) -> (bool, String) {
    let output = homeserver().arg("check-federation").args(args).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout + &String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn check_federation_passes_against_our_own_tls_listener() {
    let dir = tempfile::tempdir().expect("a directory");
    let (cert, key, _) = pair(dir.path(), "fed");
    let (client_port, fed_port) = (free_port(), free_port());
    let name = format!("127.0.0.1:{fed_port}");
    let config = dir.path().join("homeserver.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = {name:?}\nlisten = \"127.0.0.1:{client_port}\"\ndata_dir = {data:?}\n\
             [federation]\nenabled = true\nlisten = {name:?}\ntls_cert = {cert:?}\n\
             tls_key = {key:?}\nverify_certificates = false\n"
        ),
    )
    .expect("writes");
    for (user, admin) in [("admin", true), ("bob", false)] {
        let mut command = homeserver();
        command.args(["register-user", "--config"]).arg(&config).args([user, "--password", "pw"]);
        if admin {
            command.arg("--admin");
        }
        let output = command.output().expect("runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let (mut child, mut lines, _) = serve(&config);
    wait_for(&mut lines, "federation on");
    std::thread::spawn(move || for _ in lines {});

    let ca = cert.display().to_string();
    let (ok, out) = check_federation(&[&name, "--ca-file", &ca]);
    assert!(ok, "{out}");
    for line in ["✓ well-known not used", "✓ resolution", "✓ tls", "✓ version", "✓ keys"]
    {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(out.contains("certificate for 127.0.0.1"), "{out}");
    let (ok, out) = check_federation(&[&name]);
    assert!(!ok, "an untrusted certificate fails: {out}");
    assert!(out.contains("✗ tls") && out.contains("not valid for 127.0.0.1"), "{out}");
    let (ok, out) = check_federation(&[&name, "--insecure"]);
    assert!(ok && out.contains("! tls"), "{out}");
    let (ok, out) = check_federation(&[&format!("127.0.0.1:{}", free_port()), "--insecure"]);
    assert!(!ok && out.contains("✗ tls") && out.contains("cannot connect"), "{out}");
    let (ok, out) = check_federation(&["not a name", "--insecure"]);
    assert!(!ok && out.contains("✗ server name"), "{out}");
    let (ok, out) = check_federation(&[&name, "--json", "--ca-file", &ca]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert!(ok && report["ok"] == true, "{out}");

    // The admin endpoint runs the same checks for our own name.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{client_port}");
    let token = |user: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = serde_json::json!({"type": "m.login.password", "password": "pw",
                "identifier": {"type": "m.id.user", "user": user}});
            let answer: serde_json::Value = http
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
    };
    let url = format!("{base}/_homeserver/admin/v1/federation_check");
    let answer = http.get(&url).bearer_auth(token("admin").await).send().await.expect("answers");
    assert_eq!(answer.status(), 200);
    let report: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(report["server_name"], name.as_str());
    assert_eq!(report["ok"], true, "{report}");
    let outcome = |check: &str| {
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == check)
            .map(|c| c["outcome"].clone())
    };
    assert_eq!(outcome("keys"), Some("pass".into()), "{report}");
    assert_eq!(outcome("version"), Some("pass".into()), "{report}");
    // verify_certificates = false: the self-signed certificate is a warning.
    assert_eq!(outcome("tls"), Some("warn".into()), "{report}");
    let answer = http.get(&url).bearer_auth(token("bob").await).send().await.expect("answers");
    assert_eq!(answer.status(), 403);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let answer = http.get(&url).send().await.expect("answers");
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    child.kill().expect("stops");
    child.wait().expect("reaped");
}
