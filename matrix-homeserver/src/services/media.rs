//! Media: uploads kept as files in a directory (or in memory when none is set), with their
//! metadata in the storage's media store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use matrix_storage::{ChangeSet, Storage};

use crate::error::ApiError;

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
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Media {
    pub(crate) fn new(storage: Arc<dyn Storage>, path: Option<PathBuf>) -> Self {
        Media { storage, path, memory: Mutex::new(HashMap::new()) }
    }

    /// Stores an upload; answers its media id.
    pub(crate) async fn upload(
        &self,
        uploader: &str,
        content_type: Option<String>,
        upload_name: Option<String>,
        bytes: Bytes,
    ) -> Result<String, ApiError> {
        let mut id = [0u8; 18];
        getrandom::fill(&mut id).map_err(|_| ApiError::unknown("no randomness available"))?;
        let media_id = matrix_core::b64::encode_url_safe(id);
        let size = bytes.len() as u64;
        match &self.path {
            Some(dir) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| ApiError::unknown(format!("media directory: {e}")))?;
                let file = dir.join(&media_id);
                let write = async {
                    use tokio::io::AsyncWriteExt;
                    let mut out = tokio::fs::File::create(&file).await?;
                    out.write_all(&bytes).await?;
                    out.sync_all().await
                };
                write.await.map_err(|e| ApiError::unknown(format!("writing media: {e}")))?;
            }
            None => {
                let mut memory =
                    self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                memory.insert(media_id.clone(), bytes);
            }
        }
        let mut changes = ChangeSet::new();
        changes.media.push(matrix_storage::Media {
            media_id: media_id.clone(),
            content_type,
            size,
            upload_name,
            uploader: uploader.to_owned(),
            created_ts: crate::services::rooms::now_ms(),
        });
        self.storage.apply(changes).await?;
        Ok(media_id)
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
