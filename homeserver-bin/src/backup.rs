//! `backup` and `restore`: a consistent copy of a server's data into a directory while it runs,
//! and that copy put back into a fresh data directory, then checked.
//!
//! **Who copies the store.** sled and fjall lock their directory, so while a server runs only
//! it can read its store: `backup` asks it over HTTP (`POST /_homeserver/admin/v1/backup`,
//! authenticated with the registration shared secret, as `register-user` is; see
//! matrix-homeserver's `services/backup.rs`), on the address of `server.listen`, and the server
//! writes the copy into `DIR/store` on this machine. With no server answering there, the
//! command opens the store itself (offline).
//!
//! **What else.** The command then copies what it reads itself: the signing key (it cannot be
//! made again: other servers know its public half), the media files (content addressed, never
//! changed: copied after the store, they include every file the copy names, unless one was
//! deleted meanwhile), and the config file. Last it writes `manifest.json`: the format, the
//! server name, the backend, the store's stream position, event count and each room's state
//! hash (from the copy), and the size and SHA-256 of every file. A backup without its manifest
//! is not finished.
//!
//! **PostgreSQL** is backed up the same way (by the running server if one answers, else by
//! this process, as the database is not locked): one snapshot of the database, copied table
//! by table while writers go on (matrix-storage's `postgres/backup.rs`). The in-memory store
//! has nothing to back up.
//!
//! **Restore** refuses a data directory that holds anything, checks every file against the
//! manifest before it writes anything, puts the store, the key and the media in place, then
//! opens the restored store and compares its summary with the manifest's. A PostgreSQL
//! backup goes into the database of `storage.postgres_url`, which must hold no data (a new
//! database, or one a server opened but never wrote to); the load is one transaction, so a
//! restore that fails leaves it empty.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use matrix_storage::StoreSummary;
use serde_json::{Value, json};

use crate::config::FileConfig;

/// The manifest's format; restore refuses others.
const FORMAT: u64 = 1;

/// The manifest's file name in a backup.
const MANIFEST: &str = "manifest.json";

/// The store's copy in a backup.
const STORE: &str = "store";

/// The largest manifest restore reads.
const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// `homeserver backup`: a backup of the server of `config` (its config file `config_path`)
/// into `target` (new, or an empty directory).
pub(crate) async fn backup(
    config: &FileConfig,
    config_path: Option<&Path>,
    target: &Path,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let target = absolute(target)?;
    if std::fs::read_dir(&target).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} is not empty; back up into a new directory", target.display());
    }
    std::fs::create_dir_all(&target)
        .with_context(|| format!("creating the backup directory {}", target.display()))?;
    let store_dir = target.join(STORE);
    let (summary, how) = match online(config, &store_dir).await? {
        Some(summary) => (summary, "by the running server"),
        None => (offline(config, &store_dir).await?, "offline"),
    };
    let key = config.server.data_dir.join("signing.key");
    if key.exists() {
        copy_file(&key, &target.join("signing.key"))?;
    }
    if let Some(path) = config_path {
        copy_file(path, &target.join("homeserver.toml"))?;
    }
    let media = media_dir(config);
    if media.is_dir() {
        copy_tree(&media, &target.join("media"))?;
    }
    let files = checksums(&target)?;
    let manifest = json!({
        "format": FORMAT,
        "server_name": config.server.name,
        "created_at": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        "backend": summary.backend,
        "stream_position": summary.stream_position,
        "events": summary.events,
        "rooms": summary.rooms,
        "files": files,
    });
    let temporary = target.join("manifest.json.partial");
    std::fs::write(&temporary, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, target.join(MANIFEST)).context("finishing the manifest")?;
    println!(
        "backed up {} (as a {} store, {how}) into {}: {} events, {} rooms, stream position {}, {} files, in {:.1?}",
        config.server.name,
        summary.backend,
        target.display(),
        summary.events,
        summary.rooms.len(),
        summary.stream_position,
        files.len(),
        started.elapsed()
    );
    Ok(())
}

/// The store's backup made by the server running with `config`; `None` when no server
/// answers on its address, or when no shared secret is configured (then the store is not
/// asked for online: a running server holds it locked, which the offline attempt says).
async fn online(config: &FileConfig, store_dir: &Path) -> anyhow::Result<Option<StoreSummary>> {
    let Some(secret) = config.registration.shared_secret.as_deref().filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let url = format!("{}/_homeserver/admin/v1/backup", crate::loopback_base(config)?);
    let client = reqwest::Client::builder()
        // The backup of a big store takes a while; the server answers when it is done.
        .timeout(std::time::Duration::from_secs(6 * 3600))
        .build()
        .context("an HTTP client")?;
    let nonce = match client.get(&url).send().await {
        Ok(response) => crate::answer(response).await?,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(e).context("asking the running server for a nonce"),
    };
    let nonce = nonce["nonce"].as_str().context("the server's nonce")?;
    let directory = store_dir.to_str().context("the backup directory is not UTF-8")?;
    let mac = matrix_homeserver::backup_mac(secret, nonce, directory);
    let body = json!({"nonce": nonce, "directory": directory, "mac": mac});
    let response = client.post(&url).json(&body).send().await.context("asking for a backup")?;
    let answer = crate::answer(response).await?;
    Ok(Some(summary_of(&answer).context("the server's answer")?))
}

/// The store's backup made by this process (no server running on it: else the store is
/// locked, and the error says so).
async fn offline(config: &FileConfig, store_dir: &Path) -> anyhow::Result<StoreSummary> {
    let storage = crate::open_storage(config).await?;
    storage.backup(store_dir).await.context("backing up the store")
}

/// `homeserver restore`: the backup in `source` into the (new or empty) data directory of
/// `config`, then checked.
pub(crate) async fn restore(config: &FileConfig, source: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let manifest = read_manifest(source)?;
    let expected = summary_of(&manifest).context("the backup's manifest.json")?;
    check_files(source, &manifest)?;
    let data = &config.server.data_dir;
    if std::fs::read_dir(data).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("the data directory {} is not empty; restore into a new one", data.display());
    }
    let engine = config.storage.backend.name();
    if expected.backend != engine {
        let embedded = ["sled", "fjall"];
        if !(embedded.contains(&expected.backend.as_str()) && embedded.contains(&engine)) {
            bail!(
                "the backup is of a {} store; set [storage] backend = \"{}\" to restore it",
                expected.backend,
                expected.backend
            );
        }
    }
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    if engine == "postgres" {
        restore_postgres(config, source).await?;
    } else {
        restore_embedded(config, source, &expected.backend)?;
    }
    if source.join("signing.key").exists() {
        copy_file(&source.join("signing.key"), &data.join("signing.key"))?;
    }
    if source.join("media").is_dir() {
        copy_tree(&source.join("media"), &media_dir(config))?;
    }
    // The check: the restored store, read as the server reads it.
    let storage = crate::open_storage(config).await?;
    let found = storage.summary().await.context("reading the restored store")?;
    drop(storage);
    let problems = compare(&expected, &found);
    if !problems.is_empty() {
        bail!(
            "the restored store differs from the backup's manifest:\n  {}",
            problems.join("\n  ")
        );
    }
    println!(
        "restored {} into {} ({engine}) and checked it: {} events, {} rooms with the same \
         state, stream position {}, in {:.1?}",
        manifest["server_name"].as_str().unwrap_or("?"),
        data.display(),
        found.events,
        found.rooms.len(),
        found.stream_position,
        started.elapsed()
    );
    if source.join("homeserver.toml").exists() {
        println!("the backup's config file is {}", source.join("homeserver.toml").display());
    }
    Ok(())
}

/// The embedded store of the backup into the data directory: the files as they are on the
/// same engine, or copied into the other engine.
fn restore_embedded(config: &FileConfig, source: &Path, backed_up: &str) -> anyhow::Result<()> {
    use matrix_storage::fjall::FjallOptions;
    use matrix_storage::sled::{SledOptions, SledStore};
    let data = &config.server.data_dir;
    let engine = config.storage.backend.name();
    if backed_up == engine {
        return copy_tree(&source.join(STORE), &data.join(engine));
    }
    // Opening a store writes to its directory: a scratch copy keeps the backup unchanged.
    let scratch = data.join("restore-scratch");
    copy_tree(&source.join(STORE), &scratch)?;
    let from = match backed_up {
        "fjall" => SledStore::open(&scratch, &FjallOptions::default()),
        _ => SledStore::open(&scratch, &SledOptions::default()),
    }
    .context("opening the backup's store")?;
    match engine {
        "fjall" => from.copy_to(data.join(engine), &FjallOptions::default()),
        _ => from.copy_to(data.join(engine), &SledOptions::default()),
    }
    .with_context(|| format!("copying the backup's {backed_up} store into {engine}"))?;
    drop(from);
    std::fs::remove_dir_all(&scratch).context("removing the scratch copy")?;
    Ok(())
}

/// The PostgreSQL store of the backup into the (empty) database of `config`.
async fn restore_postgres(config: &FileConfig, source: &Path) -> anyhow::Result<()> {
    let options = crate::postgres_options(config)?;
    matrix_storage::postgres::PostgresStore::restore(&options, &source.join(STORE))
        .await
        .context("restoring the PostgreSQL database")
}

/// What differs between the manifest's summary and the restored store's.
fn compare(expected: &StoreSummary, found: &StoreSummary) -> Vec<String> {
    let mut problems = Vec::new();
    if expected.events != found.events {
        problems
            .push(format!("events: {} in the backup, {} restored", expected.events, found.events));
    }
    if expected.stream_position != found.stream_position {
        problems.push(format!(
            "stream position: {} in the backup, {} restored",
            expected.stream_position, found.stream_position
        ));
    }
    for (room, hash) in &expected.rooms {
        match found.rooms.get(room) {
            None => problems.push(format!("room {room}: missing")),
            Some(other) if other != hash => {
                problems.push(format!("room {room}: its state differs"))
            }
            Some(_) => {}
        }
    }
    for room in found.rooms.keys().filter(|r| !expected.rooms.contains_key(*r)) {
        problems.push(format!("room {room}: not in the backup"));
    }
    problems.truncate(20);
    problems
}

/// The manifest of the backup in `source`, or why it is none.
fn read_manifest(source: &Path) -> anyhow::Result<Value> {
    let path = source.join(MANIFEST);
    let file = std::fs::File::open(&path).with_context(|| {
        format!("{} is not a finished backup: it has no {MANIFEST}", source.display())
    })?;
    let mut text = Vec::new();
    file.take(MAX_MANIFEST_BYTES).read_to_end(&mut text)?;
    let manifest: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is malformed", path.display()))?;
    match manifest["format"].as_u64() {
        Some(FORMAT) => Ok(manifest),
        Some(other) => {
            bail!("{} is of format {other}; this version reads {FORMAT}", path.display())
        }
        None => bail!("{} is malformed: it has no format", path.display()),
    }
}

/// A summary from JSON (the server's answer, or a manifest).
fn summary_of(value: &Value) -> anyhow::Result<StoreSummary> {
    let mut summary = StoreSummary::new(value["backend"].as_str().context("no backend")?);
    summary.stream_position = value["stream_position"].as_u64().context("no stream_position")?;
    summary.events = value["events"].as_u64().context("no events")?;
    let rooms = value["rooms"].as_object().context("no rooms")?;
    for (room, hash) in rooms {
        summary.rooms.insert(room.clone(), hash.as_str().context("a room's hash")?.to_owned());
    }
    Ok(summary)
}

/// Checks every file the manifest lists (size and SHA-256) before anything is restored.
fn check_files(source: &Path, manifest: &Value) -> anyhow::Result<()> {
    let files = manifest["files"].as_object().context("the manifest lists no files")?;
    for (name, expected) in files {
        let relative = Path::new(name);
        if relative.is_absolute()
            || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!("the manifest names a file outside the backup: {name}");
        }
        let path = source.join(relative);
        let (bytes, hash) = file_hash(&path)
            .with_context(|| format!("the backup is damaged: {name} cannot be read"))?;
        if Some(bytes) != expected["bytes"].as_u64()
            || Some(hash.as_str()) != expected["sha256"].as_str()
        {
            bail!("the backup is damaged: {name} is not the file the manifest describes");
        }
    }
    if !files.keys().any(|name| name.starts_with("store/")) {
        bail!("the backup is damaged: its manifest lists no store files");
    }
    // Nothing the manifest does not vouch for goes into the data directory.
    for name in checksums(source)?.keys() {
        let restored =
            ["store/", "media/"].iter().any(|p| name.starts_with(p)) || name == "signing.key";
        if restored && !files.contains_key(name) {
            bail!("the backup is damaged: {name} is not in its manifest");
        }
    }
    Ok(())
}

/// Size and SHA-256 (hex) of each file under `root` but the manifest, by relative path.
fn checksums(root: &Path) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            if relative == MANIFEST || relative.ends_with(".partial") {
                continue;
            }
            let (bytes, sha256) = file_hash(&path)?;
            files.insert(relative, json!({"bytes": bytes, "sha256": sha256}));
        }
    }
    Ok(files)
}

fn file_hash(path: &Path) -> anyhow::Result<(u64, String)> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buffer[..n]);
    }
    let hex = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((bytes, hex))
}

/// Copies a file, keeping it private to its owner (keys, configs with secrets).
fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            copy_file(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Where the server keeps its media files.
fn media_dir(config: &FileConfig) -> PathBuf {
    config.limits.media_path.clone().unwrap_or_else(|| config.server.data_dir.join("media"))
}

/// `path` made absolute (the server may run in another working directory).
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("the path {}", path.display()))
}
