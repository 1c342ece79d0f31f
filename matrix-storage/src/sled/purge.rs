//! Purging a room ([`crate::Storage::purge_room`]): one batch of removals under the writer
//! lock, logged and made durable like a change set.
//!
//! Most tables are keyed by room first, so a room's part is one prefix scan each. Events are
//! keyed by id alone (outliers have no other index), so the event table is scanned whole,
//! reading each record's room (its first field): a purge costs a pass over every event.
//! The stream head is recorded in its counter, so that positions removed are never handed
//! out again after a reopen.

use super::batch::Tx;
use super::records::decode_event;
use super::{
    APPSERVICE_LIST, AUTH_CHAIN, BACKFILL, BACKFILL_OF, EVENT, FORGOTTEN, MEMBER, PUBLIC_JOIN_ROOM,
    PUBLISHED, RECEIPT, RECEIPT_LOG, REDACTION, RELATION, RELATION_OF, ROOM, ROOM_ALIAS, STREAM,
    STREAM_HEAD, SledStore, THREAD_REPLY, TIMELINE, USER_ROOM, meta, search,
};
use crate::codec::{Dec, Enc};
use crate::{ErrorKind, Result, StorageError, StoredEvent};

/// Removes an event with its positions and what is indexed under it.
fn forget_event(tx: &Tx<'_>, event: &StoredEvent) -> Result<()> {
    let event_id = event.event_id.as_str();
    tx.remove(Enc::table(EVENT).str(event_id).done())?;
    if let Some(of) = tx.remove(Enc::table(BACKFILL_OF).str(event_id).done())? {
        let mut dec = Dec::new(&of);
        let (room, pos) = (dec.str()?, dec.u64()?);
        tx.remove(Enc::table(BACKFILL).str(&room).u64(pos).done())?;
    }
    tx.remove(Enc::table(REDACTION).str(event_id).done())?;
    if let Some(of) = tx.remove(Enc::table(RELATION_OF).str(event_id).done())? {
        let mut dec = Dec::new(&of);
        let (room, parent, pos) = (dec.str()?, dec.str()?, dec.u64()?);
        tx.remove(Enc::table(RELATION).str(&room).str(&parent).u64(pos).done())?;
        tx.remove(Enc::table(THREAD_REPLY).str(&room).u64(pos).done())?;
    }
    if let Some(pos) = event.stream {
        tx.remove(Enc::table(STREAM).u64(pos.0).done())?;
        tx.remove(Enc::table(TIMELINE).str(&event.room_id).u64(pos.0).done())?;
        search::unindex(tx, pos.0)?;
    }
    Ok(())
}

/// Records the stream head (`next_stream - 1`) in its counter: the head read at open is the
/// last timeline position or that counter, and the timeline positions removed may have been
/// the last ones, which must not be handed out again.
fn keep_head(tx: &Tx<'_>, next_stream: u64) -> Result<()> {
    let head = next_stream.saturating_sub(1);
    tx.insert(meta(STREAM_HEAD), Enc::default().u64(head).done())
}

impl SledStore {
    /// Removes the events of `event_ids` stored in `room_id` in one committed batch; how many,
    /// and when the batch is on disk.
    pub(super) fn purge_some(
        &self,
        room_id: &str,
        event_ids: &[String],
    ) -> Result<(usize, tokio::sync::oneshot::Receiver<Result<()>>)> {
        let next_stream = self
            .writer
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))?;
        let tx = Tx::new(&self.tree);
        let mut purged = 0;
        for event_id in event_ids {
            let Some(bytes) = tx.get(Enc::table(EVENT).str(event_id).done())? else { continue };
            let event = decode_event(event_id, &bytes)?;
            if event.room_id != room_id {
                continue;
            }
            forget_event(&tx, &event)?;
            purged += 1;
        }
        keep_head(&tx, *next_stream)?;
        let record = tx.commit(self.flusher.next_seq()?)?;
        let durable = self.flusher.committed(*next_stream - 1, &record)?;
        Ok((purged, durable))
    }

    /// Removes the room's entries in one committed batch; the ids of the events removed, and
    /// when the batch is on disk.
    pub(super) fn purge(
        &self,
        room_id: &str,
    ) -> Result<(Vec<String>, tokio::sync::oneshot::Receiver<Result<()>>)> {
        let next_stream = self
            .writer
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))?;
        let tx = Tx::new(&self.tree);
        let mut purged = Vec::new();
        for entry in self.scan(vec![EVENT]) {
            let (key, value) = entry?;
            if Dec::new(&value).str()? != room_id {
                continue;
            }
            let event_id = Dec::new(&key).skip_table()?.str()?;
            forget_event(&tx, &decode_event(&event_id, &value)?)?;
            purged.push(event_id);
        }
        // Memberships: each member's side too.
        for entry in self.scan(Enc::table(MEMBER).str(room_id).done()) {
            let (key, _) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, user) = (dec.str()?, dec.str()?);
            tx.remove(Enc::table(USER_ROOM).str(&user).str(room_id).done())?;
            tx.remove(&key)?;
        }
        // Aliases: the alias's own entry too.
        for entry in self.scan(Enc::table(ROOM_ALIAS).str(room_id).done()) {
            let (key, _) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, alias) = (dec.str()?, dec.str()?);
            tx.remove(Enc::table(super::ALIAS).str(&alias).done())?;
            tx.remove(&key)?;
        }
        // The room's timeline positions, also one whose event record says otherwise.
        for entry in self.scan(Enc::table(TIMELINE).str(room_id).done()) {
            let (key, _) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, pos) = (dec.str()?, dec.u64()?);
            tx.remove(Enc::table(STREAM).u64(pos).done())?;
            tx.remove(&key)?;
        }
        for table in [BACKFILL, FORGOTTEN, RECEIPT, RECEIPT_LOG, AUTH_CHAIN, RELATION, THREAD_REPLY]
        {
            for entry in self.scan(Enc::table(table).str(room_id).done()) {
                let (key, _) = entry?;
                tx.remove(&key)?;
            }
        }
        // Application services' lists are keyed by service and network first.
        for entry in self.scan(vec![APPSERVICE_LIST]) {
            let (key, _) = entry?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, _, room) = (dec.str()?, dec.str()?, dec.str()?);
            if room == room_id {
                tx.remove(&key)?;
            }
        }
        tx.remove(Enc::table(PUBLISHED).str(room_id).done())?;
        tx.remove(Enc::table(PUBLIC_JOIN_ROOM).tail(room_id).done())?;
        tx.remove(Enc::table(ROOM).str(room_id).done())?;
        keep_head(&tx, *next_stream)?;
        let record = tx.commit(self.flusher.next_seq()?)?;
        let durable = self.flusher.committed(*next_stream - 1, &record)?;
        purged.sort();
        Ok((purged, durable))
    }
}
