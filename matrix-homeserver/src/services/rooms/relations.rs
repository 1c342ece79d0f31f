//! Event relationships (spec: "Event relationships", "Threading", "Event replacements",
//! "Reference relations"): the relations index filled as events are stored, the bundled
//! aggregations in `unsigned.m.relations`, `/relations` and `/threads`.
//!
//! Every timeline event whose content has an `m.relates_to` with a `rel_type` and an
//! `event_id` is indexed under its room and that event ([`matrix_storage::RelationStore`]),
//! in the same change set as the event (ours and other servers'); a redaction takes it out.
//! Events stored before the index existed are indexed once at start ([`index_stored`]).
//! Backfilled history (events without a stream position) is not indexed.

use std::collections::HashSet;
use std::sync::Arc;

use matrix_core::Pdu;
use matrix_storage::{ChangeSet, Direction, EventStatus, NewRelation, Storage, StreamPos};
use ruma::UserId;
use serde_json::{Map, Value};

use super::Rooms;
use super::read::{Viewer, Visibility};
use crate::error::ApiError;

/// The most relations one `/relations` page answers (a larger `limit` is lowered to it).
pub(crate) const MAX_LIMIT: usize = 100;
/// The `limit` of `/relations` and `/threads` when none is given.
pub(crate) const DEFAULT_LIMIT: usize = 5;
/// The most thread roots one `/threads` page answers.
pub(crate) const MAX_THREADS_LIMIT: usize = 100;
/// How deep `recurse` follows relations of relations (the spec asks for at least 3).
pub(crate) const RECURSION_DEPTH: u64 = 3;
/// The most relations a recursive `/relations` reads in all levels.
const MAX_RECURSED: usize = 1_000;
/// The most index entries one page of `/relations` or `/threads` reads (visibility or a type
/// filter may drop most of them; the client continues from `next_batch`).
const MAX_SCANNED: usize = 1_000;
/// The most edits read to find the latest valid one.
const MAX_EDITS_TRIED: usize = 20;
/// The most references bundled in `m.reference`.
const MAX_REFERENCES: usize = 100;

/// The relation of an event's content (`m.relates_to` with a string `rel_type` and an event
/// id), if it has one.
fn relates_to(content: &matrix_core::Object) -> Option<(&str, &str)> {
    let relates_to = content.get_object("m.relates_to")?;
    let rel_type = relates_to.get_str("rel_type")?;
    let parent = relates_to.get_str("event_id")?;
    (!rel_type.is_empty() && parent.starts_with('$')).then_some((rel_type, parent))
}

/// The relation to index for `pdu`, if it has one.
pub(crate) fn relation_of(pdu: &Pdu) -> Option<NewRelation> {
    let (rel_type, parent) = relates_to(pdu.content())?;
    (parent != pdu.event_id()).then(|| NewRelation {
        event_id: pdu.event_id().to_owned(),
        room_id: pdu.room_id().to_owned(),
        parent: parent.to_owned(),
        rel_type: rel_type.to_owned(),
        kind: pdu.kind().to_owned(),
        sender: pdu.sender().to_owned(),
    })
}

/// Adds to `changes` the relation of `pdu` when it is stored accepted into the timeline.
pub(crate) fn index(changes: &mut ChangeSet, pdu: &Pdu, status: EventStatus, in_timeline: bool) {
    if status == EventStatus::Accepted && in_timeline {
        changes.relations.extend(relation_of(pdu));
    }
}

/// The relation of a stored event's JSON (for events stored before the index).
fn relation_of_json(event_id: &str, room_id: &str, json: &[u8]) -> Option<NewRelation> {
    let event: Value = serde_json::from_slice(json).ok()?;
    let relates_to = event.get("content")?.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let parent = relates_to.get("event_id")?.as_str()?;
    (!rel_type.is_empty() && parent.starts_with('$') && parent != event_id).then(|| NewRelation {
        event_id: event_id.to_owned(),
        room_id: room_id.to_owned(),
        parent: parent.to_owned(),
        rel_type: rel_type.to_owned(),
        kind: event.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
        sender: event.get("sender").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

/// The account-data owner and type marking the events stored before the index as indexed.
const INDEXED_OWNER: &str = "!relations";
const INDEXED_KIND: &str = "indexed";

/// Indexes the relations of the timeline events stored before the relations index existed,
/// once (a mark in storage says it was done; a crash half-way indexes again, which changes
/// nothing for what is indexed already). Answers how many relations it gave the store.
pub(crate) async fn index_stored(storage: &Arc<dyn Storage>) -> Result<u64, ApiError> {
    if storage.account_data(INDEXED_OWNER, None, INDEXED_KIND).await?.is_some() {
        return Ok(0);
    }
    let head = storage.stream_position().await?;
    let mut after = StreamPos(0);
    let mut indexed = 0;
    loop {
        let items = storage.stream_range(after, head, 500).await?;
        let Some(last) = items.last() else { break };
        after = last.pos;
        let ids: Vec<&str> = items.iter().map(|item| item.event_id.as_str()).collect();
        let mut changes = ChangeSet::new();
        for stored in storage.events(&ids).await? {
            if stored.status == EventStatus::Accepted
                && let Some(relation) =
                    relation_of_json(&stored.event_id, &stored.room_id, &stored.json)
            {
                changes.relations.push(relation);
            }
        }
        indexed += changes.relations.len() as u64;
        if !changes.relations.is_empty() {
            storage.apply(changes).await?;
        }
    }
    let mut changes = ChangeSet::new();
    changes.account_data.push((
        INDEXED_OWNER.to_owned(),
        None,
        INDEXED_KIND.to_owned(),
        b"{}".to_vec(),
    ));
    storage.apply(changes).await?;
    Ok(indexed)
}

/// What `/relations` asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelationsQuery<'a> {
    pub(crate) rel_type: Option<&'a str>,
    pub(crate) kind: Option<&'a str>,
    pub(crate) from: Option<StreamPos>,
    pub(crate) to: Option<StreamPos>,
    pub(crate) direction: Direction,
    pub(crate) limit: usize,
    pub(crate) recurse: bool,
}

/// A page of related events (or thread roots), and where the next starts.
#[derive(Debug)]
pub(crate) struct RelatedPage {
    pub(crate) events: Vec<Arc<Pdu>>,
    pub(crate) next: Option<StreamPos>,
}

/// The highest position a viewer sees relations at: the stream's head, or their departure.
fn ceiling(visibility: Visibility, head: StreamPos) -> StreamPos {
    match visibility {
        Visibility::Now(_) => head,
        Visibility::Until(until, _) => until.min(head),
    }
}

/// Whether a relation at `pos` is past the end of a page read in `direction` (`to` as
/// `/messages` takes it: forwards up to before it, backwards down to it).
fn beyond(pos: StreamPos, direction: Direction, ceiling: StreamPos, to: Option<StreamPos>) -> bool {
    match direction {
        Direction::Forwards => pos > ceiling || to.is_some_and(|to| pos >= to),
        Direction::Backwards => to.is_some_and(|to| pos < to),
    }
}

impl Rooms {
    /// Refuses a new event whose relation the spec does not allow: a thread from an event
    /// that relates to another itself (a thread of a thread, or of an edit), 400
    /// `M_INVALID_PARAM`.
    pub(crate) async fn check_relation(
        &self,
        room_id: &str,
        content: &matrix_core::Object,
    ) -> Result<(), ApiError> {
        let Some(("m.thread", parent)) = relates_to(content) else { return Ok(()) };
        if let Some(relation) = self.storage().relation_of(parent).await? {
            return Err(ApiError::invalid_param(format!(
                "cannot start a thread from an event with a relation ({})",
                relation.rel_type
            )));
        }
        if let Some(stored) = self.storage().event(parent).await?
            && stored.room_id == room_id
            && let Some(pdu) = self.pdu(parent).await?
            && relates_to(pdu.content()).is_some()
        {
            return Err(ApiError::invalid_param(
                "cannot start a thread from an event with a relation",
            ));
        }
        Ok(())
    }

    /// Whether `event_id` may take a receipt for `thread` (`main`: an event not in a thread;
    /// a thread root: the root, an event of its thread, or one relating to such an event);
    /// else 400 `M_INVALID_PARAM`.
    pub(crate) async fn check_receipt_thread(
        &self,
        event_id: &str,
        thread: &str,
    ) -> Result<(), ApiError> {
        let relation = self.storage().relation_of(event_id).await?;
        let in_thread = match &relation {
            Some(r) if r.rel_type == "m.thread" => Some(r.parent.clone()),
            Some(r) => match self.storage().relation_of(&r.parent).await? {
                Some(up) if up.rel_type == "m.thread" => Some(up.parent),
                _ => None,
            },
            None => None,
        };
        let fits = match thread {
            "main" => in_thread.is_none(),
            root => event_id == root || in_thread.as_deref() == Some(root),
        };
        if fits {
            Ok(())
        } else {
            Err(ApiError::invalid_param("the event_id is not related to the thread_id"))
        }
    }

    /// The bundled aggregations of `pdu` (`unsigned.m.relations`) as `viewer` sees them:
    /// `m.replace` (the latest valid edit, whole), `m.thread` (the latest event, the count and
    /// whether the viewer took part) and `m.reference` (the referring event ids). Relations
    /// after the viewer left are left out. `edits_only` for the events bundled themselves.
    pub(crate) async fn bundled(
        &self,
        pdu: &Pdu,
        viewer: Option<Viewer<'_>>,
        edits_only: bool,
    ) -> Result<Option<Value>, ApiError> {
        let (room, id) = (pdu.room_id(), pdu.event_id());
        let any = self
            .storage()
            .relations(room, id, None, StreamPos(u64::MAX), Direction::Backwards, 1)
            .await?;
        if any.is_empty() {
            return Ok(None);
        }
        let head = self.stream_position().await?;
        let upto = match viewer.map(|v| UserId::parse(v.user)) {
            Some(Ok(user)) => match self.visibility(room, &user).await {
                Ok(visibility) => ceiling(visibility, head),
                Err(_) => return Ok(None),
            },
            _ => head,
        };
        let mut relations = Map::new();
        if let Some(edit) = self.latest_edit(pdu, upto).await? {
            relations.insert("m.replace".to_owned(), self.show_bundled(&edit, viewer).await?);
        }
        if !edits_only {
            let user = viewer.map_or("", |v| v.user);
            let summary = self.storage().relation_summary(room, id, "m.thread", upto, user).await?;
            if let Some(latest) = summary.latest
                && let Some(latest) = self.pdu(&latest.event_id).await?
            {
                let latest_event = Box::pin(self.show_with(&latest, viewer, true)).await?;
                relations.insert(
                    "m.thread".to_owned(),
                    serde_json::json!({
                        "latest_event": latest_event,
                        "count": summary.count,
                        "current_user_participated": summary.by_sender
                            || (!user.is_empty() && pdu.sender() == user),
                    }),
                );
            }
            let mut references = self
                .storage()
                .relations(
                    room,
                    id,
                    Some("m.reference"),
                    StreamPos(upto.0.saturating_add(1)),
                    Direction::Backwards,
                    MAX_REFERENCES,
                )
                .await?;
            if !references.is_empty() {
                references.reverse();
                let chunk: Vec<Value> = references
                    .into_iter()
                    .map(|r| serde_json::json!({"event_id": r.event_id}))
                    .collect();
                relations.insert("m.reference".to_owned(), serde_json::json!({"chunk": chunk}));
            }
        }
        Ok((!relations.is_empty()).then_some(Value::Object(relations)))
    }

    /// An event bundled in another's aggregations, without aggregations of its own.
    async fn show_bundled(&self, pdu: &Pdu, viewer: Option<Viewer<'_>>) -> Result<Value, ApiError> {
        self.show_plain(pdu, viewer).await
    }

    /// The latest valid replacement of `original` at or before `upto` (spec "Validity of
    /// replacement events": same sender, same type, neither a state event, the original not
    /// a replacement itself, `m.new_content` given unless encrypted; redacted edits are out
    /// of the index).
    async fn latest_edit(
        &self,
        original: &Pdu,
        upto: StreamPos,
    ) -> Result<Option<Arc<Pdu>>, ApiError> {
        if original.state_key().is_some()
            || relates_to(original.content()).is_some_and(|(rel_type, _)| rel_type == "m.replace")
        {
            return Ok(None);
        }
        let edits = self
            .storage()
            .relations(
                original.room_id(),
                original.event_id(),
                Some("m.replace"),
                StreamPos(upto.0.saturating_add(1)),
                Direction::Backwards,
                MAX_EDITS_TRIED,
            )
            .await?;
        for edit in edits {
            let Some(pdu) = self.pdu(&edit.event_id).await? else { continue };
            let valid = pdu.sender() == original.sender()
                && pdu.kind() == original.kind()
                && pdu.state_key().is_none()
                && (pdu.kind() == "m.room.encrypted"
                    || pdu.content().get_object("m.new_content").is_some());
            if valid {
                return Ok(Some(pdu));
            }
        }
        Ok(None)
    }

    /// A page of the events relating to `parent` that `user` may see (`/relations`); the
    /// parent as `/event` finds it (403/404 alike).
    pub(crate) async fn relations(
        &self,
        room_id: &str,
        user: &UserId,
        parent: &str,
        query: RelationsQuery<'_>,
    ) -> Result<RelatedPage, ApiError> {
        self.event_for(room_id, user, parent).await?;
        let (visibility, looker) = self.access(room_id, user).await?;
        let upto = ceiling(visibility, self.stream_position().await?);
        let limit = query.limit.clamp(1, MAX_LIMIT);
        let keeps = |kind: &str| query.kind.is_none_or(|k| k == kind);
        if query.recurse {
            let mut found: Vec<(StreamPos, Arc<Pdu>)> = Vec::new();
            let mut related = self.related_recursively(room_id, parent).await?;
            related.retain(|r| query.rel_type.is_none_or(|t| r.rel_type == t) && keeps(&r.kind));
            let from = query.from;
            related.retain(|r| match (query.direction, from) {
                (Direction::Backwards, Some(from)) => r.pos < from,
                (Direction::Forwards, Some(from)) => r.pos > from,
                (_, None) => true,
            });
            related.sort_by_key(|r| r.pos);
            if query.direction == Direction::Backwards {
                related.reverse();
            }
            let mut next = None;
            for relation in related {
                if relation.pos > upto {
                    continue;
                }
                if beyond(relation.pos, query.direction, upto, query.to) {
                    break;
                }
                if found.len() == limit {
                    next = found.last().map(|(pos, _)| *pos);
                    break;
                }
                if let Some(pdu) = self.pdu(&relation.event_id).await?
                    && self.sees(&looker, &pdu, relation.pos).await?
                {
                    found.push((relation.pos, pdu));
                }
            }
            return Ok(RelatedPage { events: found.into_iter().map(|(_, e)| e).collect(), next });
        }
        let mut events = Vec::new();
        let mut cursor = match (query.from, query.direction) {
            (Some(from), Direction::Backwards) => from.min(StreamPos(upto.0.saturating_add(1))),
            (None, Direction::Backwards) => StreamPos(upto.0.saturating_add(1)),
            (Some(from), Direction::Forwards) => from,
            (None, Direction::Forwards) => StreamPos(0),
        };
        let mut scanned = 0;
        while scanned < MAX_SCANNED {
            let rows = self
                .storage()
                .relations(room_id, parent, query.rel_type, cursor, query.direction, limit)
                .await?;
            let exhausted = rows.len() < limit;
            for relation in rows {
                if beyond(relation.pos, query.direction, upto, query.to) {
                    return Ok(RelatedPage { events, next: None });
                }
                cursor = relation.pos;
                scanned += 1;
                if keeps(&relation.kind)
                    && let Some(pdu) = self.pdu(&relation.event_id).await?
                    && self.sees(&looker, &pdu, relation.pos).await?
                {
                    events.push(pdu);
                    if events.len() == limit {
                        return Ok(RelatedPage { events, next: Some(cursor) });
                    }
                }
            }
            if exhausted {
                return Ok(RelatedPage { events, next: None });
            }
        }
        Ok(RelatedPage { events, next: Some(cursor) })
    }

    /// The relations to `parent` and to its related events, [`RECURSION_DEPTH`] levels down,
    /// at most [`MAX_RECURSED`] in all, each once (a loop of relations ends).
    async fn related_recursively(
        &self,
        room_id: &str,
        parent: &str,
    ) -> Result<Vec<matrix_storage::Relation>, ApiError> {
        let mut seen: HashSet<String> = HashSet::from([parent.to_owned()]);
        let mut frontier = vec![parent.to_owned()];
        let mut related = Vec::new();
        for _ in 0..RECURSION_DEPTH {
            let mut next = Vec::new();
            for node in &frontier {
                let room_left = MAX_RECURSED.saturating_sub(related.len());
                if room_left == 0 {
                    return Ok(related);
                }
                let rows = self
                    .storage()
                    .relations(room_id, node, None, StreamPos(0), Direction::Forwards, room_left)
                    .await?;
                for row in rows {
                    if seen.insert(row.event_id.clone()) {
                        next.push(row.event_id.clone());
                        related.push(row);
                    }
                }
            }
            frontier = next;
        }
        Ok(related)
    }

    /// A page of a room's thread roots that `user` may see (`/threads`), by latest activity,
    /// newest first: each root at the position of its latest reply the user sees;
    /// `participated`: only threads the user started or replied to.
    pub(crate) async fn threads(
        &self,
        room_id: &str,
        user: &UserId,
        participated: bool,
        from: Option<StreamPos>,
        limit: usize,
    ) -> Result<RelatedPage, ApiError> {
        let (visibility, looker) = self.access(room_id, user).await?;
        let upto = ceiling(visibility, self.stream_position().await?);
        let limit = limit.clamp(1, MAX_THREADS_LIMIT);
        let top = StreamPos(upto.0.saturating_add(1));
        let mut cursor = from.map_or(top, |from| from.min(top));
        let mut seen: HashSet<String> = HashSet::new();
        let mut events = Vec::new();
        let mut scanned = 0;
        while scanned < MAX_SCANNED {
            let rows = self.storage().thread_replies(room_id, cursor, 100).await?;
            let exhausted = rows.len() < 100;
            for reply in rows {
                cursor = reply.pos;
                scanned += 1;
                if !seen.insert(reply.parent.clone()) {
                    continue;
                }
                // Listed at its latest reply only, so that no page lists a root twice.
                let summary = self
                    .storage()
                    .relation_summary(room_id, &reply.parent, "m.thread", upto, user.as_str())
                    .await?;
                if summary.latest.as_ref().map(|l| l.pos) != Some(reply.pos) {
                    continue;
                }
                let Some(stored) = self.storage().event(&reply.parent).await? else { continue };
                let (Some(pos), true) = (stored.stream, stored.room_id == room_id) else {
                    continue;
                };
                let Some(root) = self.pdu(&reply.parent).await? else { continue };
                if participated && !summary.by_sender && root.sender() != user.as_str() {
                    continue;
                }
                if visibility.allows(Some(pos)) && self.sees(&looker, &root, pos).await? {
                    events.push(root);
                    if events.len() == limit {
                        return Ok(RelatedPage { events, next: Some(cursor) });
                    }
                }
            }
            if exhausted {
                return Ok(RelatedPage { events, next: None });
            }
        }
        Ok(RelatedPage { events, next: Some(cursor) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use matrix_storage::{ChangeSet, EventStatus, NewEvent, RoomChanges, Storage};

    use super::index_stored;

    fn stored(id: &str, json: &str, in_timeline: bool) -> NewEvent {
        NewEvent {
            event_id: id.to_owned(),
            room_id: "!r".to_owned(),
            json: Arc::from(json.as_bytes()),
            status: EventStatus::Accepted,
            auth_events: Vec::new(),
            prev_events: Vec::new(),
            in_timeline,
            state_after: None,
        }
    }

    /// Events stored before the index are indexed once at start: timeline events with a
    /// well-formed `m.relates_to` only.
    #[tokio::test]
    async fn events_stored_before_the_index_are_indexed_once() {
        let storage: Arc<dyn Storage> = Arc::new(matrix_storage::memory::MemoryStore::new());
        let mut changes = ChangeSet::new();
        changes.rooms.push(RoomChanges {
            room_id: "!r".to_owned(),
            create_with_version: Some("12".to_owned()),
            ..RoomChanges::default()
        });
        let relation = |rel: &str, parent: &str| {
            format!(
                r#"{{"type":"m.room.message","sender":"@a:x","content":{{"m.relates_to":{{"rel_type":"{rel}","event_id":"{parent}"}}}}}}"#
            )
        };
        changes.events = vec![
            stored("$root", r#"{"type":"m.room.message","sender":"@a:x","content":{}}"#, true),
            stored("$thread", &relation("m.thread", "$root"), true),
            stored("$outlier", &relation("m.thread", "$root"), false),
            stored("$bad", r#"{"type":"m.room.message","content":{"m.relates_to":[]}}"#, true),
            stored("$self", &relation("m.reference", "$self"), true),
        ];
        storage.apply(changes).await.expect("applies");
        assert_eq!(index_stored(&storage).await.expect("indexes"), 1);
        let relation = storage.relation_of("$thread").await.expect("reads").expect("indexed");
        assert_eq!((relation.parent.as_str(), relation.sender.as_str()), ("$root", "@a:x"));
        assert_eq!(relation.kind, "m.room.message");
        assert_eq!(storage.relation_of("$outlier").await.expect("reads"), None);
        assert_eq!(storage.relation_of("$self").await.expect("reads"), None);
        assert_eq!(index_stored(&storage).await.expect("runs again"), 0, "once");
    }
}
