//! Asynchronous uploads (spec v1.7+): `POST /_matrix/media/v1/create` hands out a media id
//! whose content its creator uploads later (`PUT /_matrix/media/v3/upload/{server}/{id}`),
//! once; downloads of it meanwhile wait for the upload. The pending ids are in storage, so
//! that a restart keeps them; each user may have a few waiting at once, each for a while.

use std::sync::Arc;
use std::time::Duration;

use matrix_storage::{ChangeSet, PendingMedia};

use super::{Media, cannot_overwrite, new_media_id};
use crate::error::ApiError;
use crate::services::rooms::now_ms;

/// How often a waiting download looks at storage again when no upload of this process wakes
/// it (another process sharing the database may take the upload).
const RECHECK: Duration = Duration::from_secs(1);

impl Media {
    /// A new media id for `creator` to upload content to: answers it and until when (ms
    /// since the epoch) the upload may come. A creator with
    /// [`crate::config::LimitsConfig::max_pending_media_per_user`] ids waiting (not expired)
    /// is refused with 429 `M_LIMIT_EXCEEDED`; their expired ids are forgotten meanwhile.
    pub(crate) async fn create(&self, creator: &str) -> Result<(String, i64), ApiError> {
        let _turn = self.creating.lock().await;
        let now = now_ms();
        let (live, expired): (Vec<PendingMedia>, Vec<PendingMedia>) = self
            .storage
            .pending_media_of(creator)
            .await?
            .into_iter()
            .partition(|p| p.expires_ts > now);
        if live.len() >= self.max_pending_per_user {
            let soonest = live.iter().map(|p| p.expires_ts).min().unwrap_or(now);
            return Err(ApiError::limit_exceeded_with(
                u64::try_from(soonest.saturating_sub(now)).unwrap_or(0),
                format!(
                    "you have {} media uploads pending already; upload their content first",
                    live.len()
                ),
            ));
        }
        let media_id = new_media_id()?;
        let expires_ts = now.saturating_add(self.pending_lifetime_ms);
        let mut changes = ChangeSet::new();
        changes.deleted_pending_media = expired.into_iter().map(|p| p.media_id).collect();
        changes.pending_media.push(PendingMedia {
            media_id: media_id.clone(),
            creator: creator.to_owned(),
            created_ts: now,
            expires_ts,
        });
        self.storage.apply(changes).await?;
        Ok((media_id, expires_ts))
    }

    /// Whether `uploader` may upload the content of `media_id` now: 409
    /// `M_CANNOT_OVERWRITE_MEDIA` when it has content, 404 when it was never created or
    /// expired, 403 when someone else created it.
    pub(super) async fn check_pending(
        &self,
        uploader: &str,
        media_id: &str,
    ) -> Result<(), ApiError> {
        if self.storage.media(media_id).await?.is_some() {
            return Err(cannot_overwrite());
        }
        let Some(pending) = self.storage.pending_media(media_id).await? else {
            // Another upload of it may have committed between the two reads (its content
            // stored, its pending record gone): that is a 409 too.
            if self.storage.media(media_id).await?.is_some() {
                return Err(cannot_overwrite());
            }
            return Err(ApiError::not_found("this media id was not created with /create"));
        };
        if pending.expires_ts <= now_ms() {
            return Err(ApiError::not_found("this media id expired before its upload"));
        }
        if pending.creator != uploader {
            return Err(ApiError::forbidden("this media id was created by someone else"));
        }
        Ok(())
    }

    /// The row of our `media_id` once uploaded, waiting up to `wait` while it is pending:
    /// `None` when it is neither uploaded nor pending (or expired), 504
    /// `M_NOT_YET_UPLOADED` when still pending after `wait`.
    pub(super) async fn wait_uploaded(
        &self,
        media_id: &str,
        wait: Duration,
    ) -> Result<Option<matrix_storage::Media>, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let waiter = Waiter::enter(self, media_id);
        loop {
            // Listening before looking, so that an upload between the two is not missed.
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(meta) = self.storage.media(media_id).await? {
                return Ok(Some(meta));
            }
            match self.storage.pending_media(media_id).await? {
                Some(pending) if pending.expires_ts > now_ms() => {}
                _ => return Ok(None),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ApiError::with_code(
                    504,
                    "M_NOT_YET_UPLOADED",
                    "the content of this media id has not been uploaded yet",
                ));
            }
            let _ = tokio::time::timeout((deadline - now).min(RECHECK), notified).await;
        }
    }

    /// Wakes the downloads waiting for `media_id`.
    pub(super) fn wake(&self, media_id: &str) {
        let waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(notify) = waiting.get(media_id) {
            notify.notify_waiters();
        }
    }
}

/// A download's place among those waiting for one media id; dropped, it removes the entry
/// nobody else waits on.
struct Waiter<'a> {
    media: &'a Media,
    media_id: &'a str,
    notify: Arc<tokio::sync::Notify>,
}

impl<'a> Waiter<'a> {
    fn enter(media: &'a Media, media_id: &'a str) -> Self {
        let mut waiting = media.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let notify = waiting.entry(media_id.to_owned()).or_default().clone();
        Waiter { media, media_id, notify }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting =
            self.media.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two references, the map's and this one: nobody else waits.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(self.media_id);
        }
    }
}
