//! Our `homeserver` binary with federation on, in a process of its own, as Synapse sees it: an
//! IP:port server name, a TLS federation listener with a self-signed certificate, and
//! certificates of other servers not verified.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{federation_client, http_client};
use crate::link::Link;

/// How long a started binary may take to answer on both listeners.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The script that writes `cert.pem` and `key.pem` for 127.0.0.1 (the one Synapse's start
/// uses too).
const TLS_CERT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/tls-cert");

/// One of our servers; killed and waited for when dropped, then its directory removed.
pub(crate) struct OurServer {
    child: Child,
    /// Its client API, `http://127.0.0.1:PORT`.
    pub(crate) client_url: String,
    /// Its server name, `127.0.0.1:FEDPORT` (or the address of the [`Link`] in front of it).
    pub(crate) server_name: String,
    /// Its federation listener, `https://127.0.0.1:FEDPORT`.
    pub(crate) federation_url: String,
    log: PathBuf,
    config: PathBuf,
    // Dropped after the process is dead (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl OurServer {
    /// Starts the binary on two free loopback ports (client API, federation) with open
    /// registration and waits until both listeners answer. Panics, with the server's log,
    /// when it does not come up.
    pub(crate) async fn start() -> OurServer {
        let (client_port, fed_port) = two_free_ports();
        OurServer::start_named(client_port, fed_port, &format!("127.0.0.1:{fed_port}")).await
    }

    /// [`OurServer::start`] behind a [`Link`] the test can cut: the server's name is the
    /// link's address, so other servers reach its federation listener only through the link.
    pub(crate) async fn start_behind_link() -> (OurServer, Link) {
        let (client_port, fed_port) = two_free_ports();
        let link = Link::start(([127, 0, 0, 1], fed_port).into()).await;
        let server = OurServer::start_named(client_port, fed_port, &link.address).await;
        (server, link)
    }

    /// Starts the binary on `client_port` and `fed_port` with `server_name`.
    async fn start_named(client_port: u16, fed_port: u16, server_name: &str) -> OurServer {
        let dir = tempfile::tempdir().expect("a directory");
        let status = Command::new(TLS_CERT_SCRIPT)
            .arg(dir.path())
            .status()
            .expect("interop/tls-cert runs (it needs openssl)");
        assert!(status.success(), "interop/tls-cert failed: {status}");
        let config = dir.path().join("homeserver.toml");
        std::fs::write(&config, config_text(dir.path(), server_name, client_port, fed_port))
            .expect("writes the config");
        let log = dir.path().join("server.log");
        let child = spawn(&config, &log);
        // Made at once, so that the process is killed and waited for whatever happens next.
        let mut server = OurServer {
            child,
            client_url: format!("http://127.0.0.1:{client_port}"),
            server_name: server_name.to_owned(),
            federation_url: format!("https://127.0.0.1:{fed_port}"),
            log,
            config,
            _dir: dir,
        };
        server.wait_ready().await;
        server
    }

    /// Kills the process at once (SIGKILL: no shutdown, nothing flushed on the way out).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary again on the same data, ports and config (after [`OurServer::kill`]).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.config, &self.log);
        self.wait_ready().await;
    }

    /// Polls both listeners until they answer any HTTP status, for at most [`READY_WITHIN`].
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        let (http, https) = (http_client(), federation_client());
        let client = format!("{}/_matrix/client/versions", self.client_url);
        let federation = format!("{}/_matrix/federation/v1/version", self.federation_url);
        let mut client_up = false;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("our server exited ({status}) at start; its log:\n{}", self.log_text());
            }
            if !client_up {
                client_up = http.get(&client).send().await.is_ok();
            }
            if client_up {
                match https.get(&federation).send().await {
                    Ok(_) => return,
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "our server did not answer within {READY_WITHIN:?} (client API up: {client_up}; \
             federation listener: {last_error}); its log:\n{}",
            self.log_text()
        );
    }

    /// What the server has logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OurServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary serving `config`, its output appended to `log`.
fn spawn(config: &Path, log: &Path) -> Child {
    let log_file =
        std::fs::OpenOptions::new().create(true).append(true).open(log).expect("opens the log");
    Command::new(env!("CARGO_BIN_EXE_homeserver"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(log_file.try_clone().expect("the log, twice"))
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

/// The config file: open registration, no rate limits (the tests are the only clients),
/// federation on with the self-signed certificate and no certificate checks.
fn config_text(dir: &Path, server_name: &str, client_port: u16, fed_port: u16) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    format!(
        "[server]\nname = {server_name:?}\nlisten = \"127.0.0.1:{client_port}\"\n\
         data_dir = {data:?}\n\
         [registration]\nmode = \"open\"\nenable_registration_without_verification = true\n\
         [rate_limits]\nenabled = false\n\
         [federation]\nenabled = true\nlisten = \"127.0.0.1:{fed_port}\"\n\
         tls_cert = {cert:?}\ntls_key = {key:?}\nverify_certificates = false\n",
        data = path("data"),
        cert = path("cert.pem"),
        key = path("key.pem"),
    )
}

/// Two different free ports: the client API's, the federation listener's.
fn two_free_ports() -> (u16, u16) {
    let client_port = free_port();
    loop {
        let port = free_port();
        if port != client_port {
            return (client_port, port);
        }
    }
}

/// A port no one listens on now (bound, read, released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
