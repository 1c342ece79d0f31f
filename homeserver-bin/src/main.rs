//! `homeserver`: the reference binary. Reads a TOML config file (every key optional), opens the
//! storage (sled in a data directory by default), and serves the client-server API.

mod backup;
mod checks;
mod config;
mod federation_check;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use matrix_homeserver::Homeserver;
use matrix_storage::Storage;

use crate::config::{FileConfig, StorageBackend};

/// jemalloc gives freed memory back where glibc's allocator keeps it (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "homeserver", version, about = "A lightweight Matrix homeserver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the homeserver.
    Serve {
        /// The config file; without one, the defaults (see `generate-config`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Prints an example config file with every key, commented.
    GenerateConfig,
    /// Creates a user account (whatever the registration settings say).
    RegisterUser {
        /// The config file of the server the user is for.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The user name (the localpart of the user id).
        username: String,
        /// The password to log in with.
        #[arg(long)]
        password: String,
        /// Makes the user a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Checks that other servers can federate with SERVER_NAME, as Matrix's federation
    /// tester does: .well-known and SRV resolution, the TLS certificate, the signing keys,
    /// the version endpoint. Prints a line per check; exits non-zero when one fails.
    CheckFederation {
        /// The server name to check (`example.org`, `matrix.example.org:8448`).
        server_name: String,
        /// Go on past a certificate that does not verify (self-signed test servers).
        #[arg(long)]
        insecure: bool,
        /// A PEM file of more trusted CA certificates (a test network's own CA).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Prints the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copies the embedded store into the other embedded engine (sled into fjall, or back),
    /// with the server stopped; then set `storage.backend` to it. The copy goes into its own
    /// subdirectory of the data directory; the original is left as it is.
    CopyStorage {
        /// The config file of the server whose store is copied.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The engine to copy into: "fjall" or "sled".
        #[arg(long)]
        to: String,
    },
    /// Backs up the store (consistent, while the server runs: the running server makes the
    /// copy when `registration.shared_secret` is set; else, the server stopped, this command),
    /// the signing key, the media files and the config file into a new directory.
    Backup {
        /// The config file of the server to back up.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The directory to write the backup into (new, or empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restores a backup into the (new, or empty) data directory of the config, then checks
    /// that the restored store holds what the backup recorded (events, rooms' state).
    Restore {
        /// The config file of the server to restore (its data directory, storage backend).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The backup's directory.
        #[arg(long)]
        from: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match run(Cli::parse().command).await {
        // A store held by a running server: one line saying so, not an error chain.
        Err(error) if locked(&error).is_some() => {
            if let Some(message) = locked(&error) {
                eprintln!("Error: {message}");
            }
            std::process::exit(1)
        }
        other => other,
    }
}

/// The message of a storage error in `error`'s chain saying the store is locked.
fn locked(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        let storage = cause.downcast_ref::<matrix_storage::StorageError>()?;
        (storage.kind() == matrix_storage::ErrorKind::Locked).then(|| storage.to_string())
    })
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Backup { config: path, to } => {
            let config = FileConfig::load(path.as_deref())?;
            backup::backup(&config, path.as_deref(), &to).await
        }
        Command::Restore { config, from } => {
            let config = FileConfig::load(config.as_deref())?;
            backup::restore(&config, &from).await
        }
        Command::Serve { config } => serve(config.as_deref()).await,
        Command::GenerateConfig => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::CheckFederation { server_name, insecure, ca_file, json } => {
            federation_check::run(&server_name, insecure, ca_file.as_deref(), json).await
        }
        Command::CopyStorage { config, to } => {
            let config = FileConfig::load(config.as_deref())?;
            copy_storage(&config, &to)
        }
        Command::RegisterUser { config, username, password, admin } => {
            let config = FileConfig::load(config.as_deref())?;
            // With a shared secret, through the running server (as Synapse's
            // register_new_matrix_user); no server answering, or no secret: offline, in the
            // data directory (which a running server holds locked: that error says so).
            if let Some(secret) = config.registration.shared_secret.as_deref()
                && let Some(user_id) =
                    register_online(&config, secret, &username, &password, admin).await?
            {
                println!("created {user_id}{}", if admin { " (administrator)" } else { "" });
                return Ok(());
            }
            let homeserver = build(&config, None).await?;
            let user_id = homeserver
                .create_user(&username, Some(&password), admin)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created {user_id}{}", if admin { " (administrator)" } else { "" });
            Ok(())
        }
    }
}

/// `copy-storage`: the configured embedded store into a new one on the engine `to`.
fn copy_storage(config: &FileConfig, to: &str) -> anyhow::Result<()> {
    use matrix_storage::fjall::FjallOptions;
    use matrix_storage::sled::{SledOptions, SledStore};
    let data = &config.server.data_dir;
    let mut sled = SledOptions::default();
    sled.cache_capacity = config.storage.sled_cache_mb.saturating_mul(1024 * 1024);
    let mut fjall = FjallOptions::default();
    fjall.cache_capacity = config.storage.fjall_cache_mb.saturating_mul(1024 * 1024);
    let (from, source) = match config.storage.backend {
        StorageBackend::Sled => ("sled", SledStore::open(data.join("sled"), &sled)),
        StorageBackend::Fjall => ("fjall", SledStore::open(data.join("fjall"), &fjall)),
        StorageBackend::Postgres => bail!("copy-storage copies an embedded store (sled, fjall)"),
    };
    let source =
        source.with_context(|| format!("opening the {from} store (is the server stopped?)"))?;
    let target = data.join(to);
    let copied = match to {
        "fjall" if from == "sled" => source.copy_to(&target, &fjall),
        "sled" if from == "fjall" => source.copy_to(&target, &sled),
        _ => bail!("--to must be the other embedded engine than {from}: \"fjall\" or \"sled\""),
    }
    .with_context(|| format!("copying the {from} store into {}", target.display()))?;
    println!(
        "copied {copied} entries from the {from} store into {}; set [storage] backend = \"{to}\"",
        target.display()
    );
    Ok(())
}

/// Registers a user through the server running with `config` (shared-secret registration);
/// `None` when no server answers there.
async fn register_online(
    config: &FileConfig,
    secret: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<Option<String>> {
    let url = format!("{}/_synapse/admin/v1/register", loopback_base(config)?);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("an HTTP client")?;
    let nonce = match client.get(&url).send().await {
        Ok(response) => answer(response).await?,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(e).context("asking the running server for a registration nonce"),
    };
    let nonce = nonce["nonce"].as_str().context("the server's nonce")?;
    let mac = matrix_homeserver::registration_mac(secret, nonce, username, password, admin, None);
    let body = serde_json::json!({
        "nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac,
    });
    let response = client.post(&url).json(&body).send().await.context("registering")?;
    let created = answer(response).await?;
    Ok(Some(created["user_id"].as_str().context("the new user's id")?.to_owned()))
}

/// `http://ADDRESS` of the server running with `config`, on this machine.
fn loopback_base(config: &FileConfig) -> anyhow::Result<String> {
    let listen: std::net::SocketAddr =
        config.server.listen.parse().context("server.listen is not an address")?;
    // A server listening on every address answers on loopback.
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!("http://{}", std::net::SocketAddr::new(host, listen.port())))
}

/// A JSON answer of the server, or its Matrix error as the error.
async fn answer(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("the server's answer")?;
    if !status.is_success() {
        bail!(
            "the server refused: {} {}",
            body["errcode"].as_str().unwrap_or("?"),
            body["error"].as_str().unwrap_or_default()
        );
    }
    Ok(body)
}

/// The PostgreSQL store's options from the config.
fn postgres_options(
    config: &FileConfig,
) -> anyhow::Result<matrix_storage::postgres::PostgresOptions> {
    let Some(url) = &config.storage.postgres_url else {
        bail!("storage.backend is \"postgres\" but storage.postgres_url is not set");
    };
    Ok(matrix_storage::postgres::PostgresOptions::new(url))
}

async fn open_storage(config: &FileConfig) -> anyhow::Result<Arc<dyn Storage>> {
    match config.storage.backend {
        StorageBackend::Sled => {
            let path = config.server.data_dir.join("sled");
            let mut options = matrix_storage::sled::SledOptions::default();
            options.cache_capacity = config.storage.sled_cache_mb.saturating_mul(1024 * 1024);
            let store = matrix_storage::sled::SledStore::open(&path, &options)
                .with_context(|| format!("opening the sled store in {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StorageBackend::Fjall => {
            let path = config.server.data_dir.join("fjall");
            let mut options = matrix_storage::fjall::FjallOptions::default();
            options.cache_capacity = config.storage.fjall_cache_mb.saturating_mul(1024 * 1024);
            let store = matrix_storage::fjall::FjallStore::open(&path, &options)
                .with_context(|| format!("opening the fjall store in {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StorageBackend::Postgres => {
            let options = postgres_options(config)?;
            let store = matrix_storage::postgres::PostgresStore::open(&options)
                .await
                .context("opening the PostgreSQL store")?;
            Ok(Arc::new(store))
        }
    }
}

async fn build(
    config: &FileConfig,
    key: Option<matrix_core::SigningKey>,
) -> anyhow::Result<Homeserver> {
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!("creating the data directory {}", config.server.data_dir.display())
    })?;
    let files = &config.server.app_service_config_files;
    let registrations = config::read_appservices(files)?;
    let storage = open_storage(config).await?;
    let mut settings = config.homeserver();
    settings.appservices = registrations.clone();
    let mut builder = Homeserver::builder().config(settings).storage(storage);
    if let Some(key) = key {
        builder = builder.signing_key(key);
    }
    match builder.build().await {
        Ok(homeserver) => Ok(homeserver),
        Err(e @ matrix_homeserver::BuildError::Appservice(_)) => {
            let message = e.to_string();
            let named = config::name_registration_files(&message, files, &registrations);
            if named.is_empty() {
                return Err(e.into());
            }
            let names: Vec<String> = named.iter().map(|f| f.display().to_string()).collect();
            let what = if names.len() == 1 { "registration" } else { "registrations" };
            Err(anyhow::Error::new(e)
                .context(format!("the application service {what} {}", names.join(" and "))))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the signing key in the data directory, or makes one (file mode 0600).
fn signing_key(data_dir: &Path) -> anyhow::Result<(matrix_core::SigningKey, bool)> {
    let path = data_dir.join("signing.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut words = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(seed)) =
            (words.next(), words.next(), words.next())
        else {
            bail!("{} is not a signing key (\"ed25519 VERSION SEED\")", path.display());
        };
        let key = matrix_core::SigningKey::from_base64_seed(version, seed)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok((key, false));
    }
    let key = new_signing_key()?;
    let version = key.key_id().trim_start_matches("ed25519:").to_owned();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(
        &mut file,
        format!("ed25519 {version} {}\n", key.seed_base64()).as_bytes(),
    )?;
    file.sync_all()?;
    Ok((key, true))
}

/// A new random signing key whose version is its own: `a_` and the first 8 bytes of its public
/// half in hex. Other servers cache a server's keys by name and key id; a key made again for
/// the same name (a new data directory) under a fixed version would look like the old one
/// to them, and each of its signatures would fail there until the old one expired.
fn new_signing_key() -> anyhow::Result<matrix_core::SigningKey> {
    let draft = matrix_core::SigningKey::generate("a")
        .map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))?;
    let public = draft.public_key().to_bytes();
    let version = public[..8].iter().fold(String::from("a_"), |mut text, byte| {
        text.push_str(&format!("{byte:02x}"));
        text
    });
    matrix_core::SigningKey::from_base64_seed(&version, &draft.seed_base64())
        .map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))
}

/// Ctrl-C, or SIGTERM (what service managers send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs on stderr as `[logging]` says (`RUST_LOG` wins over its filter).
fn init_logging(config: &config::LoggingSection) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.is_empty() => EnvFilter::try_new(&text).context("RUST_LOG")?,
        _ => EnvFilter::try_new(&config.filter).context("logging.filter")?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match config.format {
        config::LogFormat::Text => builder.with_ansi(false).try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

async fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let config = FileConfig::load(config_path)?;
    init_logging(&config.logging)?;
    for warning in checks::check(&config, config_path)? {
        tracing::warn!("{warning}");
    }
    let server = &config.server;
    let client_tls = tls::load("server", server.tls_cert.as_deref(), server.tls_key.as_deref())?;
    let section = &config.federation;
    let federation_tls = match section.enabled {
        true => tls::load("federation", section.tls_cert.as_deref(), section.tls_key.as_deref())?,
        false => None,
    };
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!("creating the data directory {}", config.server.data_dir.display())
    })?;
    let (key, created) = signing_key(&config.server.data_dir)?;
    let key_path = config.server.data_dir.join("signing.key");
    if created {
        tracing::info!("generated the signing key {} in {}", key.key_id(), key_path.display());
    } else {
        tracing::info!("signing key {} from {}", key.key_id(), key_path.display());
    }
    let homeserver = build(&config, Some(key)).await?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    tracing::info!(
        "serving {} on {}://{} (storage: {}, registration: {:?}), ready in {:?}",
        config.server.name,
        if client_tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        config.storage.backend.name(),
        config.registration.mode,
        started.elapsed()
    );
    let federation = if config.federation.enabled {
        let tls = federation_tls;
        let listener = tokio::net::TcpListener::bind(&config.federation.listen)
            .await
            .with_context(|| format!("listening on {}", config.federation.listen))?;
        tracing::info!(
            "federation on {}://{}",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr()?
        );
        Some((listener, tls))
    } else {
        None
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|&stop| stop).await;
        }
    };
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    if config.metrics.enabled {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("listening on {} for metrics", config.metrics.listen))?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let served = homeserver.clone().serve_metrics(listener, shutdown());
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::error!("the metrics listener stopped: {e}");
            }
        });
    }
    let reloaded = client_tls.iter().chain(federation.iter().filter_map(|(_, tls)| tls.as_ref()));
    tls::reload_on_hangup(reloaded.cloned().collect());
    let client_tls = client_tls.map(|listener| listener.tls);
    let client = homeserver.clone().serve_tls(listener, client_tls, shutdown());
    match federation {
        None => client.await.context("serving")?,
        Some((listener, tls)) => {
            let tls = tls.map(|listener| listener.tls);
            let federation = homeserver.serve_federation(listener, tls, shutdown());
            let (client, federation) = tokio::join!(client, federation);
            client.context("serving")?;
            federation.context("serving federation")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two keys made for the same server (a data directory made again) have different ids,
    /// each `a_` and 16 hex digits naming its own public half.
    #[test]
    fn a_new_signing_key_has_an_id_of_its_own() {
        let (first, second) =
            (new_signing_key().expect("a key"), new_signing_key().expect("a key"));
        assert_ne!(first.key_id(), second.key_id());
        for key in [first, second] {
            let version = key.key_id().strip_prefix("ed25519:a_").expect("ed25519:a_…");
            let public = key.public_key().to_bytes();
            let hex: String = public[..8].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(version, hex);
        }
    }

    /// The key file written for a new key reads back as the same key under the same id.
    #[test]
    fn a_generated_signing_key_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("a directory");
        let (made, created) = signing_key(dir.path()).expect("made");
        assert!(created);
        let (read, created) = signing_key(dir.path()).expect("read");
        assert!(!created);
        assert_eq!(read.key_id(), made.key_id());
        assert_eq!(read.public_key().to_bytes(), made.public_key().to_bytes());
    }
}
