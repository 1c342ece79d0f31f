//! Media metadata: the media records (content hash and the authenticated mark appended to the
//! first schema's record, which a record written before simply lacks) and the pending media
//! ids of `POST /_matrix/media/v1/create`, by id and by creator. The quarantine and the
//! protection follow the authenticated mark (a record written before lacks them too).
//!
//! `MEDIA_INDEX` lists the records by uploader (`'u'`, uploader, key) and by content hash
//! (`'h'`, hash, key), keys as tails so that they sort byte-wise; written with the records,
//! and built once from them when a store written before is opened ([`index_media`]). It
//! also holds the log of quarantine changes (`'q'`, id -> key, quarantined).

use std::collections::HashSet;

use super::batch::Tx;
use super::{
    MEDIA, MEDIA_INDEX, PENDING_MEDIA, PENDING_MEDIA_OF, SledStore, Tree, meta, unavailable,
};
use crate::codec::{Dec, Enc};
use crate::{ChangeSet, ErrorKind, Media, PendingMedia, QuarantineChange, Result, StorageError};

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
    for key in changes.deleted_media.iter().chain(changes.media.iter().map(|m| &m.media_id)) {
        if let Some(old) = tx.remove(Enc::table(MEDIA).str(key).done())? {
            for index in index_keys(&decode(key, &old)?) {
                tx.remove(index)?;
            }
        }
    }
    for (key, quarantined) in &changes.quarantine_changes {
        let id = super::bump(tx, NEXT_QUARANTINE_CHANGE, 1, 1)?;
        tx.insert(change_key(id), Enc::default().str(key).bool(*quarantined).done())?;
    }
    for media in &changes.media {
        tx.insert(Enc::table(MEDIA).str(&media.media_id).done(), encode(media))?;
        for index in index_keys(media) {
            tx.insert(index, Vec::new())?;
        }
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
        .opt_str(media.quarantined_by.as_deref())
        .bool(media.safe_from_quarantine)
        .done()
}

/// The index entries of a record: by uploader, and by content hash when it has one.
fn index_keys(media: &Media) -> Vec<Vec<u8>> {
    let mut keys = vec![by_uploader(&media.uploader).tail(&media.media_id).done()];
    if let Some(sha256) = &media.sha256 {
        keys.push(by_content(sha256).tail(&media.media_id).done());
    }
    keys
}

fn by_uploader(uploader: &str) -> Enc {
    Enc::table(MEDIA_INDEX).raw(b"u").str(uploader)
}

fn by_content(sha256: &str) -> Enc {
    Enc::table(MEDIA_INDEX).raw(b"h").str(sha256)
}

/// The `meta` counter of quarantine change ids (the next one).
const NEXT_QUARANTINE_CHANGE: &str = "next_quarantine_change";

fn change_key(id: u64) -> Vec<u8> {
    Enc::table(MEDIA_INDEX).raw(b"q").u64(id).done()
}

/// The `meta` entry saying that `MEDIA_INDEX` is built.
pub(super) const MEDIA_INDEX_BUILT: &str = "media_index";

/// Builds `MEDIA_INDEX` from the media records once, for a store written before it existed.
pub(super) fn index_media(tree: &Tree, flush: impl FnOnce() -> Result<()>) -> Result<()> {
    if tree.get(meta(MEDIA_INDEX_BUILT)).map_err(unavailable)?.is_some() {
        return Ok(());
    }
    let mut ops: Vec<(Vec<u8>, Option<::sled::IVec>)> = Vec::new();
    for entry in tree.scan_prefix([MEDIA]) {
        let (key, value) = entry.map_err(unavailable)?;
        let media_id = Dec::new(&key).skip_table()?.str()?;
        for index in index_keys(&decode(&media_id, &value)?) {
            ops.push((index, Some(::sled::IVec::from(&b""[..]))));
        }
    }
    ops.push((meta(MEDIA_INDEX_BUILT), Some(::sled::IVec::from(&b""[..]))));
    tree.apply(ops).map_err(unavailable)?;
    flush()
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
        quarantined_by: None,
        safe_from_quarantine: false,
    };
    // Records written before content addressing end here.
    if !dec.rest().is_empty() {
        media.sha256 = dec.opt_str()?;
        media.authenticated = dec.bool()?;
    }
    // Records written before the quarantine end here.
    if !dec.rest().is_empty() {
        media.quarantined_by = dec.opt_str()?;
        media.safe_from_quarantine = dec.bool()?;
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
    /// The records whose index entries are under `prefix`, keys above `after`, sorted, at
    /// most `limit`.
    fn media_indexed(&self, prefix: Enc, after: &str, limit: usize) -> Result<Vec<Media>> {
        let prefix = prefix.done();
        let mut found = Vec::new();
        for entry in self.scan(prefix.clone()) {
            if found.len() >= limit {
                break;
            }
            let (key, _) = entry?;
            let media_id = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| StorageError::new(ErrorKind::Corrupt, "a media index entry"))?;
            if media_id <= after {
                continue;
            }
            // Written in one batch with the record; one without would be corruption, and
            // is skipped rather than failing the read.
            if let Some(media) = self.media_record(media_id)? {
                found.push(media);
            }
        }
        Ok(found)
    }

    pub(super) fn media_records_of(
        &self,
        uploader: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>> {
        self.media_indexed(by_uploader(uploader), after, limit)
    }

    pub(super) fn media_records_with(
        &self,
        sha256: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>> {
        self.media_indexed(by_content(sha256), after, limit)
    }

    pub(super) fn quarantine_change_records(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<QuarantineChange>> {
        let start = change_key(after.saturating_add(1));
        let end = change_key(u64::MAX);
        let mut out = Vec::new();
        for entry in self.tree.range(start..=end).take(limit) {
            let (key, value) = entry.map_err(unavailable)?;
            let mut id = Dec::new(&key).skip_table()?;
            id.raw(1)?;
            let id = id.u64()?;
            let mut dec = Dec::new(&value);
            out.push(QuarantineChange { id, key: dec.str()?, quarantined: dec.bool()? });
        }
        Ok(out)
    }

    pub(super) fn last_quarantine_change_id(&self) -> Result<u64> {
        match self.get(&meta(NEXT_QUARANTINE_CHANGE))? {
            Some(next) => Ok(Dec::new(&next).u64()?.saturating_sub(1)),
            None => Ok(0),
        }
    }

    pub(super) fn media_records(&self, after: &str, limit: usize) -> Result<Vec<Media>> {
        let mut found = Vec::new();
        for media_id in super::listing::page(self, MEDIA, after, limit)? {
            if let Some(media) = self.media_record(&media_id)? {
                found.push(media);
            }
        }
        Ok(found)
    }

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
