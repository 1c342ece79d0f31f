//! Media: uploads streamed to files named by their content's SHA-256 ([`files`]), with their
//! metadata in the storage's media store; asynchronous uploads (`create`, then the content)
//! ([`pending`]); thumbnails ([`thumbnail`]); and media of other servers, fetched over
//! federation and kept the same way ([`remote`]). Downloads stream from the file.
//!
//! The metadata of another server's media is a storage media row keyed `{server}/{media_id}`
//! (our ids have no `/`) whose uploader is that server.
//!
//! Quarantined media (see [`manage`]) is not served on any path: 404 `M_NOT_FOUND`, as
//! Synapse answers.

mod files;
pub(crate) mod manage;
mod pending;
mod remote;
pub(crate) mod thumbnail;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use matrix_federation::client::FederationClient;
use matrix_federation::media::location::UrlFetcher;
use matrix_storage::{ChangeSet, Storage};
use sha2::Digest as _;

pub(crate) use self::files::FileBody;
use self::files::{Files, Sink};
use crate::config::LimitsConfig;
use crate::error::ApiError;

/// Which paths a request came by: what it may see, and whether other servers' media is
/// fetched for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The legacy unauthenticated client paths (`/_matrix/media/v3/...`): our media and what
    /// was fetched before, except what came while unauthenticated media was frozen.
    Legacy,
    /// The authenticated client paths (`/_matrix/client/v1/media/...`): everything, fetching
    /// other servers' media (as the spec asks since v1.11).
    Authenticated,
    /// Another server (`/_matrix/federation/v1/media/...`): our own media only.
    Federation,
    /// An authenticated download of a server administrator who asked to bypass the
    /// quarantine (`admin_unsafely_bypass_quarantine=true`): as [`Access::Authenticated`],
    /// quarantined media too.
    Administrator,
}

/// The longest a download waits for content not uploaded yet, whatever `timeout_ms` asks.
const MAX_UPLOAD_WAIT: Duration = Duration::from_secs(60);

/// What a download waits for content not uploaded yet when `timeout_ms` is not given (the
/// spec's default).
pub(crate) const DEFAULT_UPLOAD_WAIT: Duration = Duration::from_secs(20);

/// A media item opened for reading.
#[derive(Debug)]
pub(crate) struct Content {
    pub(crate) content_type: Option<String>,
    pub(crate) upload_name: Option<String>,
    /// Its length in bytes.
    pub(crate) length: u64,
    file: tokio::fs::File,
}

impl Content {
    /// Its bytes as a streamed body, after `head` and before `tail`.
    pub(crate) fn into_body(self, head: Bytes, tail: Bytes) -> FileBody {
        FileBody::new(self.file, self.length, head, tail)
    }
}

pub(crate) struct Media {
    storage: Arc<dyn Storage>,
    /// Our server name: media of other servers is fetched.
    server_name: String,
    files: Files,
    /// The most bytes of one upload.
    max_bytes: u64,
    /// The most bytes one user may have uploaded; 0: no quota.
    quota: u64,
    /// Whether unauthenticated media is frozen (see [`LimitsConfig::enable_authenticated_media`]).
    authenticated_only: bool,
    /// Bounds of the media ids waiting for their content.
    max_pending_per_user: usize,
    pending_lifetime_ms: i64,
    /// Serialises the quota's check and its update, and the writing of a row naming a
    /// content file with the administrators' quarantines and deletions (which remove the
    /// files no row names).
    usage: tokio::sync::Mutex<()>,
    /// Serialises the count of a user's pending media ids and the creation of another.
    creating: tokio::sync::Mutex<()>,
    /// Bounds the thumbnails being made at once (each may decode an image of up to
    /// [`thumbnail::MAX_PIXELS`]), so that memory stays bounded under many requests.
    thumbnailing: tokio::sync::Semaphore,
    /// The fetches of other servers' media under way, by storage key: a second request for
    /// the same item waits for the first rather than fetching it again. An entry lives while
    /// someone holds or waits for it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The downloads waiting for the content of a pending media id, by id: woken by its
    /// upload. An entry lives while someone waits.
    waiting: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// Fetches the `Location` other servers answer media requests with; `None`: such an
    /// answer is refused (502).
    url_fetcher: Option<Arc<dyn UrlFetcher>>,
}

/// Thumbnails made at once at most.
const CONCURRENT_THUMBNAILS: usize = 2;

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Media {
    /// The media service, keeping files where `limits` says (a temporary directory when it
    /// names none).
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        server_name: &str,
        limits: &LimitsConfig,
        url_fetcher: Option<Arc<dyn UrlFetcher>>,
    ) -> std::io::Result<Self> {
        Ok(Media {
            storage,
            server_name: server_name.to_owned(),
            files: Files::new(limits.media_path.clone())?,
            max_bytes: limits.max_media_bytes as u64,
            quota: limits.media_quota_bytes,
            authenticated_only: limits.enable_authenticated_media,
            max_pending_per_user: limits.max_pending_media_per_user,
            pending_lifetime_ms: i64::try_from(limits.pending_media_lifetime_secs)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            usage: tokio::sync::Mutex::new(()),
            creating: tokio::sync::Mutex::new(()),
            thumbnailing: tokio::sync::Semaphore::new(CONCURRENT_THUMBNAILS),
            fetching: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            url_fetcher,
        })
    }

    /// Refuses (403) an upload of `adding` bytes that would take `uploader` over the quota.
    async fn check_quota(&self, uploader: &str, adding: u64) -> Result<u64, ApiError> {
        let used = self.storage.media_usage(uploader).await?;
        if self.quota > 0 && used.saturating_add(adding) > self.quota {
            return Err(ApiError::forbidden(format!(
                "this upload would take you over your media quota of {} bytes",
                self.quota
            )));
        }
        Ok(used)
    }

    /// Receives an upload of `uploader` from `body` (at most the upload limit, whole before
    /// `timeout`): streamed to a file while hashed and counted, so that it never sits in
    /// memory, then kept under its hash and recorded. `media_id`: the content of a media id
    /// made by [`Media::create`] (only its creator's, once); `None`: a new media id. Answers
    /// the media id.
    ///
    /// Refusals: a `declared_length` or a body over the limit 413 `M_TOO_LARGE` (as soon as
    /// it passes it), over the quota 403, too slow 408, cut short 400; an uploaded or foreign
    /// media id as [`Media::check_pending`] says. A refused upload leaves no file behind.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn upload<B>(
        &self,
        uploader: &str,
        media_id: Option<&str>,
        content_type: Option<String>,
        upload_name: Option<String>,
        declared_length: Option<u64>,
        body: B,
        timeout: Duration,
    ) -> Result<String, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
    {
        let limit = self.max_bytes;
        // A declared length over the limit is refused before a byte of the body is read.
        if declared_length.is_some_and(|n| n > limit) {
            return Err(ApiError::too_large(self.max_bytes as usize));
        }
        if let Some(media_id) = media_id {
            self.check_pending(uploader, media_id).await?;
        }
        self.check_quota(uploader, declared_length.unwrap_or(0)).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sink = Sink::new(&self.files).await?;
        let mut body = body;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(ApiError::body_timeout()),
                Ok(None) => break,
                Ok(Some(Err(_))) => {
                    return Err(ApiError::bad_json("the upload was cut short or unreadable"));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if sink.size().saturating_add(data.len() as u64) > limit {
                    return Err(ApiError::too_large(self.max_bytes as usize));
                }
                sink.write(&data).await?;
            }
        }
        let (sha256, size) = sink.finish(&self.files).await?;
        let was_pending = media_id.is_some();
        let media_id = match media_id {
            Some(id) => id.to_owned(),
            None => new_media_id()?,
        };
        let mut row = matrix_storage::Media {
            media_id: media_id.clone(),
            content_type,
            size,
            upload_name,
            uploader: uploader.to_owned(),
            created_ts: crate::services::rooms::now_ms(),
            sha256: Some(sha256),
            authenticated: self.authenticated_only,
            quarantined_by: None,
            safe_from_quarantine: false,
        };
        // Checked again, under the lock the usage is written under (concurrent uploads).
        // The content file stays when the row is refused: another row may name the same
        // bytes.
        let usage = self.usage.lock().await;
        let used = self.check_quota(uploader, size).await?;
        self.adopt_content(&mut row).await?;
        let mut changes = ChangeSet::new();
        changes.media.push(row);
        changes.media_usage.push((uploader.to_owned(), used.saturating_add(size)));
        if was_pending {
            changes.completed_pending_media.push(media_id.clone());
        }
        match self.storage.apply(changes).await {
            Ok(_) => {}
            Err(e) if was_pending && e.kind() == matrix_storage::ErrorKind::Conflict => {
                return Err(cannot_overwrite());
            }
            Err(e) => return Err(e.into()),
        }
        drop(usage);
        if was_pending {
            self.wake(&media_id);
        }
        Ok(media_id)
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
                legacy_file: media_id.to_owned(),
            });
        }
        if <&ruma::ServerName>::try_from(server).is_err() {
            return Err(ApiError::invalid_param(format!("{server:?} is not a server name")));
        }
        let key = format!("{server}/{media_id}");
        let hash = sha2::Sha256::digest(key.as_bytes());
        let legacy_file = format!("{}.remote", hex(&hash));
        Ok(Location {
            origin: Some(server.to_owned()),
            media_id: media_id.to_owned(),
            key,
            legacy_file,
        })
    }

    /// The metadata of the media item at `location` as `access` may see it: kept here,
    /// uploaded within `wait` (a pending media id of ours; still pending then: 504
    /// `M_NOT_YET_UPLOADED`), or (authenticated, another server's) fetched with `client` and
    /// kept. Not there: 404.
    async fn metadata(
        &self,
        location: &Location,
        client: Option<&FederationClient>,
        access: Access,
        wait: Duration,
    ) -> Result<matrix_storage::Media, ApiError> {
        if access == Access::Federation && location.origin.is_some() {
            return Err(ApiError::not_found("no such media"));
        }
        let meta = match self.storage.media(&location.key).await? {
            Some(meta) => meta,
            None => match (&location.origin, client, access) {
                (None, _, _) => self
                    .wait_uploaded(&location.media_id, wait.min(MAX_UPLOAD_WAIT))
                    .await?
                    .ok_or_else(|| ApiError::not_found("no such media"))?,
                (Some(origin), Some(client), Access::Authenticated | Access::Administrator) => {
                    let gate = FetchGate::enter(self, &location.key);
                    let _turn = gate.gate.lock().await;
                    // Fetched by the request this one waited for?
                    match self.storage.media(&location.key).await? {
                        Some(meta) => meta,
                        None => remote::fetch(self, client, origin, location).await?,
                    }
                }
                _ => return Err(ApiError::not_found("no such media")),
            },
        };
        if meta.quarantined_by.is_some() && access != Access::Administrator {
            return Err(ApiError::not_found("this media is quarantined"));
        }
        if access == Access::Legacy && self.authenticated_only && meta.authenticated {
            return Err(ApiError::not_found(
                "this media is served on the authenticated media endpoints only",
            ));
        }
        Ok(meta)
    }

    /// The file of a media row.
    fn path_of(&self, location: &Location, meta: &matrix_storage::Media) -> PathBuf {
        match &meta.sha256 {
            Some(sha256) => self.files.content(sha256),
            None => self.files.legacy(&location.legacy_file),
        }
    }

    /// Readies a new row under the [`Media::usage`] lock: its content file is still there (a
    /// deletion removing the last row of the same bytes may have removed it after it was
    /// written: 500, try again), and it is quarantined when other rows of the same bytes are.
    async fn adopt_content(&self, row: &mut matrix_storage::Media) -> Result<(), ApiError> {
        let Some(sha256) = &row.sha256 else { return Ok(()) };
        if !self.files.exists(&self.files.content(sha256)).await? {
            return Err(ApiError::unknown(
                "the content was removed by a deletion while it was stored; try again",
            ));
        }
        row.quarantined_by = self.quarantine_of_content(sha256).await?;
        Ok(())
    }

    /// A media item opened for reading (see [`Media::metadata`] for what is found).
    pub(crate) async fn open(
        &self,
        location: &Location,
        client: Option<&FederationClient>,
        access: Access,
        wait: Duration,
    ) -> Result<Content, ApiError> {
        let meta = self.metadata(location, client, access, wait).await?;
        let path = self.path_of(location, &meta);
        // The metadata is written after the content: a row without content is a loss.
        let (file, length) = self.files.open(&path).await?.ok_or_else(|| {
            ApiError::unknown(format!("the content of media {} is missing", location.key))
        })?;
        Ok(Content { content_type: meta.content_type, upload_name: meta.upload_name, length, file })
    }

    /// A thumbnail at `target` of the media item at `location` (found as [`Media::open`]
    /// finds it): the cached one, or one made now (and cached when the size is a standard
    /// one). Content that is not an image is 400 `M_UNKNOWN`; an image over
    /// [`thumbnail::MAX_PIXELS`], or a file over [`thumbnail::MAX_SOURCE_BYTES`], 413
    /// `M_TOO_LARGE`.
    pub(crate) async fn thumbnail(
        &self,
        location: &Location,
        client: Option<&FederationClient>,
        access: Access,
        wait: Duration,
        target: thumbnail::Target,
    ) -> Result<thumbnail::Thumbnail, ApiError> {
        let meta = self.metadata(location, client, access, wait).await?;
        let type_ok = meta.content_type.as_deref().is_none_or(|t| {
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
        let path = self.path_of(location, &meta);
        let mut cached = path.clone().into_os_string();
        cached.push(format!(".{}", target.name()));
        let cached = PathBuf::from(cached);
        if target.cached
            && let Some(bytes) = self.files.read_whole(&cached, thumbnail::MAX_SOURCE_BYTES).await?
        {
            let content_type = thumbnail::content_type_of(&bytes);
            return Ok(thumbnail::Thumbnail { content_type, bytes: bytes.to_vec() });
        }
        let bytes =
            self.files.read_whole(&path, thumbnail::MAX_SOURCE_BYTES).await?.ok_or_else(|| {
                ApiError::unknown(format!("the content of media {} is missing", location.key))
            })?;
        let _turn = self
            .thumbnailing
            .acquire()
            .await
            .map_err(|_| ApiError::unknown("thumbnailing has stopped"))?;
        let made = tokio::task::spawn_blocking(move || thumbnail::make(&bytes, target))
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
            self.files.write_whole(&cached, &made.bytes).await?;
        }
        Ok(made)
    }
}

/// 409 `M_CANNOT_OVERWRITE_MEDIA`.
fn cannot_overwrite() -> ApiError {
    ApiError::with_code(409, "M_CANNOT_OVERWRITE_MEDIA", "this media id has its content already")
}

/// A new random media id (`[A-Za-z0-9_-]`, 24 characters).
fn new_media_id() -> Result<String, ApiError> {
    let mut id = [0u8; 18];
    getrandom::fill(&mut id).map_err(|_| ApiError::unknown("no randomness available"))?;
    Ok(matrix_core::b64::encode_url_safe(id))
}

/// A hold on the fetch gate of one storage key ([`Media::metadata`]); dropped (also when the
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
    /// The name its content was kept under before content addressing.
    legacy_file: String,
}
