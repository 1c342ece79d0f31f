//! The relations index: each event that relates to another (`content.m.relates_to`, with a
//! `rel_type` and an `event_id`), under its room and the event it relates to.

use super::StreamPos;

/// A relation to index ([`crate::ChangeSet::relations`]): the caller reads it from the
/// event's content; the store gives it the event's stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelation {
    /// The event that relates (the child).
    pub event_id: String,
    /// Its room (the parent is looked for in the same room only).
    pub room_id: String,
    /// The event it relates to (`m.relates_to.event_id`).
    pub parent: String,
    /// `m.relates_to.rel_type` (`m.annotation`, `m.replace`, `m.reference`, `m.thread`, or
    /// any other).
    pub rel_type: String,
    /// The child's event type.
    pub kind: String,
    /// The child's sender.
    pub sender: String,
}

/// An indexed relation: a [`NewRelation`] at its event's stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The event that relates (the child).
    pub event_id: String,
    /// The event it relates to.
    pub parent: String,
    /// The relation type.
    pub rel_type: String,
    /// The child's event type.
    pub kind: String,
    /// The child's sender.
    pub sender: String,
    /// The child's stream position.
    pub pos: StreamPos,
}

/// What [`crate::RelationStore::relation_summary`] tells of the relations of one type to an
/// event (a thread's summary).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelationSummary {
    /// How many there are.
    pub count: u64,
    /// The one at the highest position.
    pub latest: Option<Relation>,
    /// Whether the sender asked about sent one of them.
    pub by_sender: bool,
}
