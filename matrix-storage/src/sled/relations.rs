//! The relations index ([`crate::RelationStore`]): RELATION `(room, parent, position) ->
//! (child, rel_type, type, sender)`, THREAD_REPLY `(room, position) -> (parent, child, type,
//! sender)` for the `m.thread` ones, and RELATION_OF `child -> (room, parent, position)`.

use super::batch::Tx;
use super::records::decode_event;
use super::{
    EVENT, REDACTION, RELATION, RELATION_OF, SledStore, THREAD_REPLY, engine, unavailable,
};
use crate::codec::{Dec, Enc};
use crate::{ChangeSet, Direction, Relation, RelationSummary, Result, StreamPos};

/// Indexes the change set's relations (after its events and redactions are written), and
/// takes its redacted events out.
pub(super) fn write(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for new in &changes.relations {
        let of_key = Enc::table(RELATION_OF).str(&new.event_id).done();
        if tx.get(&of_key)?.is_some()
            || tx.get(Enc::table(REDACTION).str(&new.event_id).done())?.is_some()
        {
            continue;
        }
        let Some(bytes) = tx.get(Enc::table(EVENT).str(&new.event_id).done())? else { continue };
        let Some(pos) = decode_event(&new.event_id, &bytes)?.stream else { continue };
        tx.insert(
            Enc::table(RELATION).str(&new.room_id).str(&new.parent).u64(pos.0).done(),
            Enc::default()
                .str(&new.event_id)
                .str(&new.rel_type)
                .str(&new.kind)
                .str(&new.sender)
                .done(),
        )?;
        if new.rel_type == "m.thread" {
            tx.insert(
                Enc::table(THREAD_REPLY).str(&new.room_id).u64(pos.0).done(),
                Enc::default()
                    .str(&new.parent)
                    .str(&new.event_id)
                    .str(&new.kind)
                    .str(&new.sender)
                    .done(),
            )?;
        }
        tx.insert(of_key, Enc::default().str(&new.room_id).str(&new.parent).u64(pos.0).done())?;
    }
    for (redacted, _) in &changes.redactions {
        if let Some(of) = tx.remove(Enc::table(RELATION_OF).str(redacted).done())? {
            let mut dec = Dec::new(&of);
            let (room, parent, pos) = (dec.str()?, dec.str()?, dec.u64()?);
            tx.remove(Enc::table(RELATION).str(&room).str(&parent).u64(pos).done())?;
            tx.remove(Enc::table(THREAD_REPLY).str(&room).u64(pos).done())?;
        }
    }
    Ok(())
}

/// A RELATION entry.
fn relation(entry: engine::Entry) -> Result<Relation> {
    let (key, value) = entry.map_err(unavailable)?;
    let mut dec = Dec::new(&key).skip_table()?;
    let (_, parent, pos) = (dec.str()?, dec.str()?, dec.u64()?);
    let mut dec = Dec::new(&value);
    Ok(Relation {
        event_id: dec.str()?,
        rel_type: dec.str()?,
        kind: dec.str()?,
        sender: dec.str()?,
        parent,
        pos: StreamPos(pos),
    })
}

impl SledStore {
    fn of_parent(
        &self,
        room_id: &str,
        parent: &str,
        lower: u64,
        upper: u64,
    ) -> impl DoubleEndedIterator<Item = Result<Relation>> {
        let key = |pos: u64| Enc::table(RELATION).str(room_id).str(parent).u64(pos).done();
        self.tree.range(key(lower)..key(upper)).map(relation)
    }

    /// [`crate::RelationStore::relations`].
    pub(super) fn relations_of(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Relation>> {
        let keep = |r: &Result<Relation>| match r {
            Ok(r) => rel_type.is_none_or(|t| r.rel_type == t),
            Err(_) => true,
        };
        match direction {
            Direction::Backwards => {
                self.of_parent(room_id, parent, 0, from.0).rev().filter(keep).take(limit).collect()
            }
            Direction::Forwards => self
                .of_parent(room_id, parent, from.0.saturating_add(1), u64::MAX)
                .filter(keep)
                .take(limit)
                .collect(),
        }
    }

    /// [`crate::RelationStore::relation_summary`].
    pub(super) fn summary_of(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: &str,
        upto: StreamPos,
        sender: &str,
    ) -> Result<RelationSummary> {
        let mut summary = RelationSummary::default();
        for relation in self.of_parent(room_id, parent, 0, upto.0.saturating_add(1)) {
            let relation = relation?;
            if relation.rel_type == rel_type {
                summary.count += 1;
                summary.by_sender |= relation.sender == sender;
                summary.latest = Some(relation);
            }
        }
        Ok(summary)
    }

    /// [`crate::RelationStore::thread_replies`].
    pub(super) fn thread_replies_of(
        &self,
        room_id: &str,
        from: StreamPos,
        limit: usize,
    ) -> Result<Vec<Relation>> {
        let key = |pos: u64| Enc::table(THREAD_REPLY).str(room_id).u64(pos).done();
        self.tree
            .range(key(0)..key(from.0))
            .rev()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(unavailable)?;
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, pos) = (dec.str()?, dec.u64()?);
                let mut dec = Dec::new(&value);
                Ok(Relation {
                    parent: dec.str()?,
                    event_id: dec.str()?,
                    kind: dec.str()?,
                    sender: dec.str()?,
                    rel_type: "m.thread".to_owned(),
                    pos: StreamPos(pos),
                })
            })
            .collect()
    }

    /// [`crate::RelationStore::relation_of`].
    pub(super) fn relation_record(&self, event_id: &str) -> Result<Option<Relation>> {
        let Some(of) = self.get(&Enc::table(RELATION_OF).str(event_id).done())? else {
            return Ok(None);
        };
        let mut dec = Dec::new(&of);
        let (room, parent, pos) = (dec.str()?, dec.str()?, dec.u64()?);
        let key = Enc::table(RELATION).str(&room).str(&parent).u64(pos).done();
        match self.tree.range(key.clone()..=key).next() {
            Some(entry) => relation(entry).map(Some),
            None => Ok(None),
        }
    }
}
