//! Backfilled history ([`crate::BackfillPos`]): the BACKFILL table `(room, position) -> event`,
//! its index BACKFILL_OF `event -> (room, position)`, and a counter per room in META.

use super::batch::Tx;
use super::records::decode_event;
use super::{BACKFILL, BACKFILL_OF, EVENT, SledStore, bump, engine, missing, unavailable};
use crate::codec::{Dec, Enc};
use crate::{BackfillItem, BackfillPos, ChangeSet, Direction, Result};

/// Gives each of the change set's backfilled events its room's next backfill position.
pub(super) fn write(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for (room_id, event_id) in &changes.backfill {
        let Some(bytes) = tx.get(Enc::table(EVENT).str(event_id).done())? else {
            return missing(format!("event {event_id}"));
        };
        let stored = decode_event(event_id, &bytes)?;
        if stored.room_id != *room_id {
            return missing(format!("event {event_id} in room {room_id}"));
        }
        let of_key = Enc::table(BACKFILL_OF).str(event_id).done();
        if stored.stream.is_some() || tx.get(&of_key)?.is_some() {
            continue;
        }
        let pos = bump(tx, &format!("backfill {room_id}"), 1, 0)? + 1;
        tx.insert(
            Enc::table(BACKFILL).str(room_id).u64(pos).done(),
            Enc::default().str(event_id).done(),
        )?;
        tx.insert(of_key, Enc::default().str(room_id).u64(pos).done())?;
    }
    Ok(())
}

impl SledStore {
    /// [`crate::RoomStore::backfilled`].
    pub(super) fn backfill_range(
        &self,
        room_id: &str,
        from: BackfillPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<BackfillItem>> {
        let start = Enc::table(BACKFILL).str(room_id).u64(0).done();
        let end = Enc::table(BACKFILL).str(room_id).u64(u64::MAX).done();
        let at = Enc::table(BACKFILL).str(room_id).u64(from.0).done();
        let item = |entry: engine::Entry| -> Result<BackfillItem> {
            let (key, value) = entry.map_err(unavailable)?;
            let mut dec = Dec::new(&key).skip_table()?;
            let (_, pos) = (dec.str()?, dec.u64()?);
            Ok(BackfillItem { pos: BackfillPos(pos), event_id: Dec::new(&value).str()? })
        };
        match direction {
            Direction::Forwards => self.tree.range(start..at).rev().take(limit).map(item).collect(),
            Direction::Backwards => {
                let older = Enc::table(BACKFILL).str(room_id).u64(from.0.saturating_add(1)).done();
                self.tree.range(older..=end).take(limit).map(item).collect()
            }
        }
    }

    /// [`crate::RoomStore::backfill_position`].
    pub(super) fn backfill_pos(&self, event_id: &str) -> Result<Option<BackfillPos>> {
        match self.get(&Enc::table(BACKFILL_OF).str(event_id).done())? {
            Some(value) => {
                let mut dec = Dec::new(&value);
                let _room = dec.str()?;
                Ok(Some(BackfillPos(dec.u64()?)))
            }
            None => Ok(None),
        }
    }
}
