//! Media: uploads kept as files in a directory (or in memory when none is set), with their
//! metadata in the storage's media store; thumbnails of them ([`thumbnail`]); and media of
//! other servers, fetched over federation and kept the same way ([`remote`]).
//!
//! Where things are kept, by name in the directory (or the in-memory map):
//! - our uploads: their media id (ids are `[A-Za-z0-9_-]`, so never a dot);
//! - other servers' media: the SHA-256 of `{server}/{media_id}` in hex, then `.remote`
//!   (no name from the network ever becomes a path);
//! - thumbnails: the content's name, then `.{width}x{height}-{method}`;
//! - files being written: a name above, then `.{random}.part`.
//!
//! The metadata of another server's media is a storage media row keyed `{server}/{media_id}`
//! (our ids have no `/`) whose uploader is that server.

mod remote;
pub(crate) mod thumbnail;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use matrix_federation::client::FederationClient;
use matrix_storage::{ChangeSet, Storage};
use sha2::Digest as _;

use crate::error::ApiError;

/// Syncs a directory, so that the entries made in it survive a power loss.
#[cfg(unix)]
async fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Directories cannot be opened (nor synced) this way elsewhere.
#[cfg(not(unix))]
async fn sync_dir(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// An uploaded file.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub(crate) content_type: Option<String>,
    pub(crate) upload_name: Option<String>,
    pub(crate) bytes: Bytes,
}

pub(crate) struct Media {
    storage: Arc<dyn Storage>,
    /// Our server name: media of other servers is fetched.
    server_name: String,
    path: Option<PathBuf>,
    memory: Mutex<HashMap<String, Bytes>>,
    /// The most bytes one user may have uploaded; 0: no quota.
    quota: u64,
    /// Serialises the quota's check and its update.
    usage: tokio::sync::Mutex<()>,
    /// Bounds the thumbnails being made at once (each may decode an image of up to
    /// [`thumbnail::MAX_PIXELS`]), so that memory stays bounded under many requests.
    thumbnailing: tokio::sync::Semaphore,
    /// The fetches of other servers' media under way, by storage key: a second request for
    /// the same item waits for the first rather than fetching it again. An entry lives while
    /// someone holds or waits for it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Thumbnails made at once at most.
const CONCURRENT_THUMBNAILS: usize = 2;

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Media {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        server_name: &str,
        path: Option<PathBuf>,
        quota: u64,
    ) -> Self {
        Media {
            storage,
            server_name: server_name.to_owned(),
            path,
            memory: Mutex::new(HashMap::new()),
            quota,
            usage: tokio::sync::Mutex::new(()),
            thumbnailing: tokio::sync::Semaphore::new(CONCURRENT_THUMBNAILS),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses (403) an upload of `adding` bytes that would take `uploader` over the quota.
    pub(crate) async fn check_quota(&self, uploader: &str, adding: u64) -> Result<u64, ApiError> {
        let used = self.storage.media_usage(uploader).await?;
        if self.quota > 0 && used.saturating_add(adding) > self.quota {
            return Err(ApiError::forbidden(format!(
                "this upload would take you over your media quota of {} bytes",
                self.quota
            )));
        }
        Ok(used)
    }

    /// Starts an upload: its bytes are written as they come ([`Upload::write`]), to a
    /// temporary file when media is kept in a directory, so that a large upload never sits
    /// in memory; [`Upload::finish`] records it.
    pub(crate) async fn begin(&self) -> Result<Upload<'_>, ApiError> {
        let mut id = [0u8; 18];
        getrandom::fill(&mut id).map_err(|_| ApiError::unknown("no randomness available"))?;
        let media_id = matrix_core::b64::encode_url_safe(id);
        let file = match &self.path {
            Some(dir) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| ApiError::unknown(format!("media directory: {e}")))?;
                // Named so that a download can never find it (ids have no dot).
                let temp = dir.join(format!("{media_id}.part"));
                let out = tokio::fs::File::create(&temp)
                    .await
                    .map_err(|e| ApiError::unknown(format!("writing media: {e}")))?;
                Some((out, temp))
            }
            None => None,
        };
        Ok(Upload { media: self, media_id, file, memory: Vec::new(), size: 0, done: false })
    }

    /// Removes the bytes of an upload that was not recorded.
    async fn forget(&self, media_id: &str) {
        match &self.path {
            Some(dir) => {
                let _ = tokio::fs::remove_file(dir.join(media_id)).await;
            }
            None => {
                let mut memory =
                    self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                memory.remove(media_id);
            }
        }
    }

    /// Where `server`'s media item `media_id` is kept (checked: a bad id is 404, a bad
    /// server name 400).
    pub(crate) fn locate(&self, server: &str, media_id: &str) -> Result<Location, ApiError> {
        let valid_id = !media_id.is_empty()
            && media_id.len() <= 255
            && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(ApiError::not_found("no such media"));
        }
        if server == self.server_name {
            return Ok(Location {
                origin: None,
                media_id: media_id.to_owned(),
                key: media_id.to_owned(),
                file: media_id.to_owned(),
            });
        }
        if <&ruma::ServerName>::try_from(server).is_err() {
            return Err(ApiError::invalid_param(format!("{server:?} is not a server name")));
        }
        let key = format!("{server}/{media_id}");
        let hash = sha2::Sha256::digest(key.as_bytes());
        let file = format!("{}.remote", hex(&hash));
        Ok(Location { origin: Some(server.to_owned()), media_id: media_id.to_owned(), key, file })
    }

    /// A stored upload of ours.
    pub(crate) async fn download(&self, media_id: &str) -> Result<File, ApiError> {
        let location = self.locate(&self.server_name.clone(), media_id)?;
        self.stored(&location).await?.ok_or_else(|| ApiError::not_found("no such media"))
    }

    /// A media item kept here (ours, or another server's fetched before), or `None`.
    pub(crate) async fn stored(&self, location: &Location) -> Result<Option<File>, ApiError> {
        let Some(meta) = self.storage.media(&location.key).await? else { return Ok(None) };
        // The metadata is written after the content: a row without content is a loss.
        let bytes = self.read_blob(&location.file).await?.ok_or_else(|| {
            ApiError::unknown(format!("the content of media {} is missing", location.key))
        })?;
        Ok(Some(File { content_type: meta.content_type, upload_name: meta.upload_name, bytes }))
    }

    /// A media item: kept here, or (when `fetch` and it is another server's) fetched from
    /// its server with `client`, kept, then answered.
    pub(crate) async fn content(
        &self,
        location: &Location,
        client: Option<&FederationClient>,
        fetch: bool,
        limit: usize,
    ) -> Result<File, ApiError> {
        if let Some(file) = self.stored(location).await? {
            return Ok(file);
        }
        let (Some(origin), Some(client), true) = (&location.origin, client, fetch) else {
            return Err(ApiError::not_found("no such media"));
        };
        let gate = FetchGate::enter(self, &location.key);
        let _turn = gate.gate.lock().await;
        // Fetched by the request this one waited for?
        match self.stored(location).await? {
            Some(file) => Ok(file),
            None => remote::fetch(self, client, origin, location, limit).await,
        }
    }

    /// A thumbnail at `target` of the media item at `location` (fetched as
    /// [`Media::content`] does): the cached one, or one made now (and cached when the size
    /// is a standard one). Content that is not an image is 400 `M_UNKNOWN`, an image over
    /// [`thumbnail::MAX_PIXELS`] 413 `M_TOO_LARGE`.
    pub(crate) async fn thumbnail(
        &self,
        location: &Location,
        client: Option<&FederationClient>,
        fetch: bool,
        limit: usize,
        target: thumbnail::Target,
    ) -> Result<thumbnail::Thumbnail, ApiError> {
        let content_type = match self.storage.media(&location.key).await? {
            Some(meta) => meta.content_type,
            None => self.content(location, client, fetch, limit).await?.content_type,
        };
        let type_ok = content_type.as_deref().is_none_or(|t| {
            let essence = t.split(';').next().unwrap_or_default().trim();
            thumbnail::THUMBNAILED_TYPES.iter().any(|k| essence.eq_ignore_ascii_case(k))
        });
        if !type_ok {
            return Err(ApiError::with_code(
                400,
                "M_UNKNOWN",
                "this server does not make thumbnails of this content type",
            ));
        }
        let name = format!("{}.{}", location.file, target.name());
        if target.cached
            && let Some(bytes) = self.read_blob(&name).await?
        {
            let content_type = thumbnail::content_type_of(&bytes);
            return Ok(thumbnail::Thumbnail { content_type, bytes: bytes.to_vec() });
        }
        let file = self.content(location, client, fetch, limit).await?;
        let _turn = self
            .thumbnailing
            .acquire()
            .await
            .map_err(|_| ApiError::unknown("thumbnailing has stopped"))?;
        let made = tokio::task::spawn_blocking(move || thumbnail::make(&file.bytes, target))
            .await
            .map_err(|_| ApiError::unknown("the thumbnail could not be made"))?;
        let made = match made {
            Ok(made) => made,
            Err(e @ thumbnail::ThumbnailError::TooLarge(_)) => {
                return Err(ApiError::with_code(413, "M_TOO_LARGE", e.to_string()));
            }
            Err(e) => return Err(ApiError::with_code(400, "M_UNKNOWN", e.to_string())),
        };
        if target.cached {
            self.write_blob(&name, Bytes::from(made.bytes.clone())).await?;
        }
        Ok(made)
    }

    /// The bytes kept under `name`, or `None`.
    async fn read_blob(&self, name: &str) -> Result<Option<Bytes>, ApiError> {
        match &self.path {
            Some(dir) => match tokio::fs::read(dir.join(name)).await {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ApiError::unknown(format!("reading media {name}: {e}"))),
            },
            None => {
                let memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(memory.get(name).cloned())
            }
        }
    }

    /// Keeps `bytes` under `name`, durably and whole (a temporary file renamed into place:
    /// a reader sees all of it or nothing).
    async fn write_blob(&self, name: &str, bytes: Bytes) -> Result<(), ApiError> {
        let Some(dir) = &self.path else {
            let mut memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            memory.insert(name.to_owned(), bytes);
            return Ok(());
        };
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|_| ApiError::unknown("no randomness available"))?;
        let temp = dir.join(format!("{name}.{}.part", hex(&random)));
        let write = async {
            use tokio::io::AsyncWriteExt;
            tokio::fs::create_dir_all(dir).await?;
            let mut out = tokio::fs::File::create(&temp).await?;
            out.write_all(&bytes).await?;
            out.sync_all().await?;
            drop(out);
            tokio::fs::rename(&temp, dir.join(name)).await?;
            sync_dir(dir).await
        };
        if let Err(e) = write.await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(ApiError::unknown(format!("writing media {name}: {e}")));
        }
        Ok(())
    }
}

/// A hold on the fetch gate of one storage key ([`Media::content`]); dropped (also when the
/// request is abandoned), it removes the gate nobody else holds or waits for.
struct FetchGate<'a> {
    media: &'a Media,
    key: &'a str,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> FetchGate<'a> {
    fn enter(media: &'a Media, key: &'a str) -> Self {
        let mut fetching = media.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gate = fetching.entry(key.to_owned()).or_default().clone();
        FetchGate { media, key, gate }
    }
}

impl Drop for FetchGate<'_> {
    fn drop(&mut self) {
        let mut fetching =
            self.media.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two references, the map's and this one: nobody else holds or waits for it.
        if Arc::strong_count(&self.gate) == 2 {
            fetching.remove(self.key);
        }
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Where a media item is kept: made only by [`Media::locate`], from a checked server name
/// and media id.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    /// The other server it comes from; `None` for ours.
    origin: Option<String>,
    /// Its media id.
    media_id: String,
    /// Its metadata's key in storage.
    key: String,
    /// The name its content is kept under.
    file: String,
}

/// An upload being received (see [`Media::begin`]). Dropped unfinished (the client went
/// away, the body came too slowly or was too large), its temporary file is removed.
pub(crate) struct Upload<'a> {
    media: &'a Media,
    media_id: String,
    /// The temporary file and its path, when media is kept in a directory.
    file: Option<(tokio::fs::File, PathBuf)>,
    /// The bytes, when media is kept in memory.
    memory: Vec<u8>,
    size: u64,
    done: bool,
}

impl Upload<'_> {
    /// The bytes received so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes of the upload.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        use tokio::io::AsyncWriteExt;
        match &mut self.file {
            Some((out, _)) => out
                .write_all(bytes)
                .await
                .map_err(|e| ApiError::unknown(format!("writing media: {e}")))?,
            None => self.memory.extend_from_slice(bytes),
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes the upload durable and records it for `uploader` (within the quota); answers
    /// its media id.
    pub(crate) async fn finish(
        mut self,
        uploader: &str,
        content_type: Option<String>,
        upload_name: Option<String>,
    ) -> Result<String, ApiError> {
        let media = self.media;
        let media_id = self.media_id.clone();
        let size = self.size;
        media.check_quota(uploader, size).await?;
        match (self.file.take(), &media.path) {
            (Some((out, temp)), Some(dir)) => {
                let write = async {
                    out.sync_all().await?;
                    drop(out);
                    tokio::fs::rename(&temp, dir.join(&media_id)).await?;
                    // The file's directory entry is durable only once the directory is
                    // synced: without it, a power loss can leave the metadata pointing at
                    // no file.
                    sync_dir(dir).await
                };
                if let Err(e) = write.await {
                    let _ = tokio::fs::remove_file(&temp).await;
                    return Err(ApiError::unknown(format!("writing media: {e}")));
                }
            }
            _ => {
                let bytes = Bytes::from(std::mem::take(&mut self.memory));
                let mut memory =
                    media.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                memory.insert(media_id.clone(), bytes);
            }
        }
        self.done = true;
        // Checked again, under the lock the usage is written under (concurrent uploads).
        let usage = media.usage.lock().await;
        let used = match media.check_quota(uploader, size).await {
            Ok(used) => used,
            Err(e) => {
                media.forget(&media_id).await;
                return Err(e);
            }
        };
        let mut changes = ChangeSet::new();
        changes.media.push(matrix_storage::Media {
            media_id: media_id.clone(),
            content_type,
            size,
            upload_name,
            uploader: uploader.to_owned(),
            created_ts: crate::services::rooms::now_ms(),
        });
        changes.media_usage.push((uploader.to_owned(), used.saturating_add(size)));
        if let Err(e) = media.storage.apply(changes).await {
            media.forget(&media_id).await;
            return Err(e.into());
        }
        drop(usage);
        Ok(media_id)
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Some((_, temp)) = &self.file
        {
            // Synchronous, but only an unlink: an abandoned upload leaves nothing behind.
            let _ = std::fs::remove_file(temp);
        }
    }
}
