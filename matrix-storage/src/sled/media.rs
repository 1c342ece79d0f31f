//! Media metadata: the media records (content hash and the authenticated mark appended to the
//! first schema's record, which a record written before simply lacks) and the pending media
//! ids of `POST /_matrix/media/v1/create`, by id and by creator.

use std::collections::HashSet;

use super::batch::Tx;
use super::{MEDIA, PENDING_MEDIA, PENDING_MEDIA_OF, SledStore};
use crate::codec::{Dec, Enc};
use crate::{ChangeSet, ErrorKind, Media, PendingMedia, Result, StorageError};

/// Refuses a change set that completes a media id that is not pending (or one twice): called
/// under the writer lock before anything of the change set is written.
pub(super) fn check(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    let mut seen = HashSet::new();
    for media_id in &changes.completed_pending_media {
        if tx.get(Enc::table(PENDING_MEDIA).str(media_id).done())?.is_none()
            || !seen.insert(media_id)
        {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                format!("media {media_id} is not pending"),
            ));
        }
    }
    Ok(())
}

/// This module's part of a change set.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for media in &changes.media {
        tx.insert(Enc::table(MEDIA).str(&media.media_id).done(), encode(media))?;
    }
    for media_id in changes.completed_pending_media.iter().chain(&changes.deleted_pending_media) {
        if let Some(old) = tx.remove(Enc::table(PENDING_MEDIA).str(media_id).done())? {
            let creator = Dec::new(&old).str()?;
            tx.remove(Enc::table(PENDING_MEDIA_OF).str(&creator).str(media_id).done())?;
        }
    }
    for pending in &changes.pending_media {
        let key = Enc::table(PENDING_MEDIA).str(&pending.media_id).done();
        if let Some(old) = tx.get(&key)? {
            let creator = Dec::new(&old).str()?;
            tx.remove(Enc::table(PENDING_MEDIA_OF).str(&creator).str(&pending.media_id).done())?;
        }
        tx.insert(
            key,
            Enc::default()
                .str(&pending.creator)
                .i64(pending.created_ts)
                .i64(pending.expires_ts)
                .done(),
        )?;
        tx.insert(
            Enc::table(PENDING_MEDIA_OF).str(&pending.creator).str(&pending.media_id).done(),
            Vec::new(),
        )?;
    }
    Ok(())
}

fn encode(media: &Media) -> Vec<u8> {
    Enc::default()
        .opt_str(media.content_type.as_deref())
        .u64(media.size)
        .opt_str(media.upload_name.as_deref())
        .str(&media.uploader)
        .i64(media.created_ts)
        .opt_str(media.sha256.as_deref())
        .bool(media.authenticated)
        .done()
}

fn decode(media_id: &str, value: &[u8]) -> Result<Media> {
    let mut dec = Dec::new(value);
    let mut media = Media {
        media_id: media_id.to_owned(),
        content_type: dec.opt_str()?,
        size: dec.u64()?,
        upload_name: dec.opt_str()?,
        uploader: dec.str()?,
        created_ts: dec.i64()?,
        sha256: None,
        authenticated: false,
    };
    // Records written before content addressing end here.
    if !dec.rest().is_empty() {
        media.sha256 = dec.opt_str()?;
        media.authenticated = dec.bool()?;
    }
    Ok(media)
}

fn decode_pending(media_id: &str, value: &[u8]) -> Result<PendingMedia> {
    let mut dec = Dec::new(value);
    Ok(PendingMedia {
        media_id: media_id.to_owned(),
        creator: dec.str()?,
        created_ts: dec.i64()?,
        expires_ts: dec.i64()?,
    })
}

impl SledStore {
    pub(super) fn media_record(&self, media_id: &str) -> Result<Option<Media>> {
        self.get(&Enc::table(MEDIA).str(media_id).done())?.map(|v| decode(media_id, &v)).transpose()
    }

    pub(super) fn pending_media_record(&self, media_id: &str) -> Result<Option<PendingMedia>> {
        self.get(&Enc::table(PENDING_MEDIA).str(media_id).done())?
            .map(|v| decode_pending(media_id, &v))
            .transpose()
    }

    pub(super) fn pending_media_records_of(&self, user_id: &str) -> Result<Vec<PendingMedia>> {
        let mut found = Vec::new();
        for entry in self.scan(Enc::table(PENDING_MEDIA_OF).str(user_id).done()) {
            let (key, _) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, media_id) = (dec.str()?, dec.str()?);
            // The index and the records are written in one batch; an index entry without
            // its record would be corruption, and is skipped rather than failing the read.
            if let Some(pending) = self.pending_media_record(&media_id)? {
                found.push(pending);
            }
        }
        Ok(found)
    }
}
