//! The relations index in memory ([`crate::RelationStore`]).

use std::collections::{BTreeMap, HashMap};

use crate::{Direction, NewRelation, Relation, RelationSummary, StoredEvent, StreamPos};

/// The index: by (room, parent, position), thread replies by (room, position), and each
/// child's (room, parent, position).
#[derive(Debug, Default)]
pub(super) struct Relations {
    by_parent: BTreeMap<(String, String, u64), Relation>,
    threads: BTreeMap<(String, u64), Relation>,
    of: HashMap<String, (String, String, u64)>,
}

impl Relations {
    /// Indexes a change set's relations (after its events are stored in `events`; `redacted`:
    /// the redactions stored before), then takes its redacted events out.
    pub(super) fn apply(
        &mut self,
        relations: &[NewRelation],
        redactions: &[(String, String)],
        events: &HashMap<String, StoredEvent>,
        redacted: &HashMap<String, String>,
    ) {
        for new in relations {
            let Some(pos) = events.get(&new.event_id).and_then(|e| e.stream) else { continue };
            if self.of.contains_key(&new.event_id) || redacted.contains_key(&new.event_id) {
                continue;
            }
            self.insert(new, pos);
        }
        for (redacted, _) in redactions {
            self.remove(redacted);
        }
    }

    fn insert(&mut self, new: &NewRelation, pos: StreamPos) {
        let relation = Relation {
            event_id: new.event_id.clone(),
            parent: new.parent.clone(),
            rel_type: new.rel_type.clone(),
            kind: new.kind.clone(),
            sender: new.sender.clone(),
            pos,
        };
        if relation.rel_type == "m.thread" {
            self.threads.insert((new.room_id.clone(), pos.0), relation.clone());
        }
        self.of.insert(new.event_id.clone(), (new.room_id.clone(), new.parent.clone(), pos.0));
        self.by_parent.insert((new.room_id.clone(), new.parent.clone(), pos.0), relation);
    }

    pub(super) fn remove(&mut self, event_id: &str) {
        if let Some((room, parent, pos)) = self.of.remove(event_id) {
            self.threads.remove(&(room.clone(), pos));
            self.by_parent.remove(&(room, parent, pos));
        }
    }

    fn of_parent<'a>(
        &'a self,
        room_id: &str,
        parent: &str,
        lower: u64,
        upper: u64,
    ) -> impl DoubleEndedIterator<Item = &'a Relation> + 'a {
        let key = |pos| (room_id.to_owned(), parent.to_owned(), pos);
        self.by_parent.range(key(lower)..key(upper)).map(|(_, relation)| relation)
    }

    /// [`crate::RelationStore::relations`].
    pub(super) fn relations(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Vec<Relation> {
        let keep = |r: &&Relation| rel_type.is_none_or(|t| r.rel_type == t);
        match direction {
            Direction::Backwards => self
                .of_parent(room_id, parent, 0, from.0)
                .rev()
                .filter(keep)
                .take(limit)
                .cloned()
                .collect(),
            Direction::Forwards => self
                .of_parent(room_id, parent, from.0.saturating_add(1), u64::MAX)
                .filter(keep)
                .take(limit)
                .cloned()
                .collect(),
        }
    }

    /// [`crate::RelationStore::relation_summary`].
    pub(super) fn summary(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: &str,
        upto: StreamPos,
        sender: &str,
    ) -> RelationSummary {
        let mut summary = RelationSummary::default();
        for relation in self
            .of_parent(room_id, parent, 0, upto.0.saturating_add(1))
            .filter(|r| r.rel_type == rel_type)
        {
            summary.count += 1;
            summary.by_sender |= relation.sender == sender;
            summary.latest = Some(relation.clone());
        }
        summary
    }

    /// [`crate::RelationStore::thread_replies`].
    pub(super) fn thread_replies(
        &self,
        room_id: &str,
        from: StreamPos,
        limit: usize,
    ) -> Vec<Relation> {
        let key = |pos| (room_id.to_owned(), pos);
        self.threads.range(key(0)..key(from.0)).rev().take(limit).map(|(_, r)| r.clone()).collect()
    }

    /// [`crate::RelationStore::relation_of`].
    pub(super) fn relation_of(&self, event_id: &str) -> Option<Relation> {
        let (room, parent, pos) = self.of.get(event_id)?;
        self.by_parent.get(&(room.clone(), parent.clone(), *pos)).cloned()
    }
}
