//! Media: uploads kept as files in a directory (or in memory when none is set), with their
//! metadata in the storage's media store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use matrix_storage::{ChangeSet, Storage};

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
    path: Option<PathBuf>,
    memory: Mutex<HashMap<String, Bytes>>,
    /// The most bytes one user may have uploaded; 0: no quota.
    quota: u64,
    /// Serialises the quota's check and its update.
    usage: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Media {
    pub(crate) fn new(storage: Arc<dyn Storage>, path: Option<PathBuf>, quota: u64) -> Self {
        Media {
            storage,
            path,
            memory: Mutex::new(HashMap::new()),
            quota,
            usage: tokio::sync::Mutex::new(()),
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

    /// A stored upload.
    pub(crate) async fn download(&self, media_id: &str) -> Result<File, ApiError> {
        let not_found = || ApiError::not_found("no such media");
        let meta = self.storage.media(media_id).await?.ok_or_else(not_found)?;
        let bytes = match &self.path {
            Some(dir) => {
                if !media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return Err(not_found());
                }
                Bytes::from(tokio::fs::read(dir.join(media_id)).await.map_err(|_| not_found())?)
            }
            None => {
                let memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                memory.get(media_id).cloned().ok_or_else(not_found)?
            }
        };
        Ok(File { content_type: meta.content_type, upload_name: meta.upload_name, bytes })
    }
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
