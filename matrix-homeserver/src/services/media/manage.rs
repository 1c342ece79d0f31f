//! What the server's administrators do to media (Synapse's media admin API): quarantine,
//! protection, deletion, and reading the rows a page at a time.
//!
//! - A quarantine covers the rows named and every row of the same bytes (content addressed:
//!   the same SHA-256), as Synapse's since 1.128; a row stored later with those bytes (an
//!   upload, a fetch from another server) is quarantined as it is written. Lifting it lifts it
//!   from all of them.
//! - A protected row (`safe_from_quarantine`) is never quarantined.
//! - Each row a quarantine or its lifting changes is logged (the admin API's
//!   `quarantine_changes`); the quarantine a new row inherits is not (as in Synapse, whose log
//!   says it holds only what the admin API changed).
//! - Deleting rows removes their metadata, gives their bytes back to their uploaders' quota,
//!   and removes a content file (with its cached thumbnails) once no row names it.
//!
//! Each of these runs under the lock a new row is written under (see [`Media::adopt_content`]),
//! so that a row written meanwhile is neither left out of a quarantine nor left naming a
//! removed file.

use std::collections::{BTreeMap, BTreeSet};

use matrix_storage::ChangeSet;

use super::{Location, Media};
use crate::error::ApiError;

/// How many rows one read of the store brings.
const SCAN_BATCH: usize = 500;

/// Rows written by one change set at most (a large quarantine or deletion is written in
/// several).
const WRITE_BATCH: usize = 500;

/// A row's key as the admin API names it: `(server, media_id)`.
pub(crate) fn origin_of<'a>(our_server: &'a str, key: &'a str) -> (&'a str, &'a str) {
    key.split_once('/').unwrap_or((our_server, key))
}

impl Media {
    /// This server's name.
    pub(crate) fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The row at `location`, as stored (nothing fetched, quarantined ones too).
    pub(crate) async fn row(
        &self,
        location: &Location,
    ) -> Result<Option<matrix_storage::Media>, ApiError> {
        Ok(self.storage.media(&location.key).await?)
    }

    /// Every row `pass` keeps, read a page at a time (each row is held: meant for the lists
    /// and bulk operations of the administrators, not for the request path).
    pub(crate) async fn rows_where(
        &self,
        uploader: Option<&str>,
        mut pass: impl FnMut(&matrix_storage::Media) -> bool,
    ) -> Result<Vec<matrix_storage::Media>, ApiError> {
        let mut found = Vec::new();
        let mut after = String::new();
        loop {
            let page = match uploader {
                Some(uploader) => self.storage.media_of(uploader, &after, SCAN_BATCH).await?,
                None => self.storage.media_rows(&after, SCAN_BATCH).await?,
            };
            let done = page.len() < SCAN_BATCH;
            if let Some(last) = page.last() {
                after.clone_from(&last.media_id);
            }
            found.extend(page.into_iter().filter(|row| pass(row)));
            if done {
                return Ok(found);
            }
        }
    }

    /// The rows of the bytes `sha256`.
    async fn rows_of_content(&self, sha256: &str) -> Result<Vec<matrix_storage::Media>, ApiError> {
        let mut found = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.storage.media_with_content(sha256, &after, SCAN_BATCH).await?;
            let done = page.len() < SCAN_BATCH;
            if let Some(last) = page.last() {
                after.clone_from(&last.media_id);
            }
            found.extend(page);
            if done {
                return Ok(found);
            }
        }
    }

    /// Who quarantined a row of the bytes `sha256`, if one is: a new row of them inherits it.
    pub(super) async fn quarantine_of_content(
        &self,
        sha256: &str,
    ) -> Result<Option<String>, ApiError> {
        let mut after = String::new();
        loop {
            let page = self.storage.media_with_content(sha256, &after, SCAN_BATCH).await?;
            if let Some(by) = page.iter().find_map(|row| row.quarantined_by.clone()) {
                return Ok(Some(by));
            }
            match page.last() {
                Some(last) if page.len() == SCAN_BATCH => after.clone_from(&last.media_id),
                _ => return Ok(None),
            }
        }
    }

    /// Quarantines (`by`: the administrator) or lifts the quarantine of (`None`) the rows
    /// `keys` and every row of the same bytes; protected rows are never quarantined. Keys of
    /// no row are skipped. Answers how many rows are now quarantined (or free) by it,
    /// as Synapse counts them (those that already were included).
    pub(crate) async fn set_quarantine(
        &self,
        keys: &[String],
        by: Option<&str>,
    ) -> Result<usize, ApiError> {
        let _turn = self.usage.lock().await;
        let mut rows = BTreeMap::new();
        let mut hashes = BTreeSet::new();
        for key in keys {
            if let Some(row) = self.storage.media(key).await? {
                if let Some(sha256) = &row.sha256 {
                    hashes.insert(sha256.clone());
                }
                rows.insert(row.media_id.clone(), row);
            }
        }
        for sha256 in hashes {
            for row in self.rows_of_content(&sha256).await? {
                rows.insert(row.media_id.clone(), row);
            }
        }
        let mut covered = 0;
        let mut changed = Vec::new();
        for (_, mut row) in rows {
            if by.is_some() && row.safe_from_quarantine {
                continue;
            }
            covered += 1;
            if row.quarantined_by.as_deref() != by {
                row.quarantined_by = by.map(str::to_owned);
                changed.push(row);
            }
        }
        for chunk in changed.chunks(WRITE_BATCH) {
            let mut changes = ChangeSet::new();
            changes.quarantine_changes =
                chunk.iter().map(|row| (row.media_id.clone(), by.is_some())).collect();
            changes.media = chunk.to_vec();
            self.storage.apply(changes).await?;
        }
        Ok(covered)
    }

    /// The logged quarantine changes after `from` (at most `limit`), and the id to read on
    /// from: the last one's, or the last logged when there are none. `from` past the last
    /// logged is 400 `M_INVALID_PARAM`, as Synapse answers a token it never gave.
    pub(crate) async fn quarantine_changes(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<matrix_storage::QuarantineChange>, u64), ApiError> {
        let last = self.storage.last_quarantine_change().await?;
        if from > last {
            return Err(ApiError::invalid_param(
                "The `from` token is past the last quarantine change",
            ));
        }
        let changes = self.storage.quarantine_changes(from, limit).await?;
        let next = changes.last().map_or(last, |change| change.id);
        Ok((changes, next))
    }

    /// Protects the row at `location` from quarantine, or lifts that; no such row: 404.
    pub(crate) async fn set_protected(
        &self,
        location: &Location,
        protected: bool,
    ) -> Result<(), ApiError> {
        let _turn = self.usage.lock().await;
        let mut row = self
            .storage
            .media(&location.key)
            .await?
            .ok_or_else(|| ApiError::not_found("Unknown media"))?;
        if row.safe_from_quarantine != protected {
            row.safe_from_quarantine = protected;
            let mut changes = ChangeSet::new();
            changes.media.push(row);
            self.storage.apply(changes).await?;
        }
        Ok(())
    }

    /// Deletes the rows `keys` (missing ones are skipped), gives their bytes back to their
    /// uploaders' quota, and removes the content files (and cached thumbnails) no row names
    /// any more. Answers the keys of the rows deleted, in the order given.
    pub(crate) async fn delete_rows(&self, keys: &[String]) -> Result<Vec<String>, ApiError> {
        let _turn = self.usage.lock().await;
        let mut deleted = Vec::new();
        for chunk in keys.chunks(WRITE_BATCH) {
            let mut rows = Vec::new();
            for key in chunk {
                if let Some(row) = self.storage.media(key).await? {
                    rows.push(row);
                }
            }
            let mut freed: BTreeMap<&str, u64> = BTreeMap::new();
            for row in rows.iter().filter(|row| row.uploader.starts_with('@')) {
                let bytes = freed.entry(row.uploader.as_str()).or_default();
                *bytes = bytes.saturating_add(row.size);
            }
            let mut changes = ChangeSet::new();
            changes.deleted_media = rows.iter().map(|row| row.media_id.clone()).collect();
            for (uploader, bytes) in freed {
                let used = self.storage.media_usage(uploader).await?;
                changes.media_usage.push((uploader.to_owned(), used.saturating_sub(bytes)));
            }
            self.storage.apply(changes).await?;
            // The files, once their rows are gone (a file without a row is only space; a
            // row without its file would be a loss).
            let mut hashes = BTreeSet::new();
            for row in &rows {
                match &row.sha256 {
                    Some(sha256) => {
                        hashes.insert(sha256.as_str());
                    }
                    None => {
                        let (server, media_id) = origin_of(&self.server_name, &row.media_id);
                        if let Ok(location) = self.locate(server, media_id) {
                            let path = self.files.legacy(&location.legacy_file);
                            self.files.remove_with_thumbnails(&path).await?;
                        }
                    }
                }
            }
            for sha256 in hashes {
                if self.storage.media_with_content(sha256, "", 1).await?.is_empty() {
                    self.files.remove_with_thumbnails(&self.files.content(sha256)).await?;
                }
            }
            deleted.extend(rows.into_iter().map(|row| row.media_id));
        }
        Ok(deleted)
    }
}
