//! Read receipts, in storage: the latest per (room, user, type, thread), each listed by the
//! stream position of its last change, with a bound on the threaded receipts a user keeps in
//! a room.

use std::collections::{HashSet, VecDeque};

use matrix_storage::{ChangeSet, Receipt, ReceiptKey, StoredReceipt, StreamPos};
use serde_json::{Value, json};

use super::{Audience, Ephemeral};
use crate::error::ApiError;
use crate::services::appservice::transactions::Note;

/// The `m.receipt` content of `receipts` (private receipts only to their owner), if any.
fn content(receipts: &[StoredReceipt], viewer: &str) -> Option<Value> {
    let mut content = serde_json::Map::new();
    for stored in receipts {
        let r = &stored.receipt;
        let key = &r.key;
        if key.kind == "m.read.private" && key.user_id != viewer {
            continue;
        }
        let mut receipt = json!({"ts": r.ts});
        if let Some(thread) = &key.thread {
            receipt["thread_id"] = json!(thread);
        }
        let by_event = content.entry(r.event_id.clone()).or_insert_with(|| json!({}));
        by_event[&key.kind][&key.user_id] = receipt;
    }
    (!content.is_empty()).then_some(Value::Object(content))
}

/// How many receipt changes the log remembers; a position older than the oldest gets every
/// room looked at instead.
const RECEIPT_CHANGES_KEPT: usize = 10_000;

/// Which rooms' receipts changed at which stream positions, so that a sliding sync looks at
/// the receipts of those rooms only, not of every room in its lists. A change is noted as
/// pending before it is written and given a position (the stream's, read after the write,
/// at or past the receipt's own) once written: a reader that read the stream position
/// before scanning the log sees every receipt at or before that position, pending or not.
#[derive(Debug, Default)]
pub(super) struct ReceiptLog {
    /// `(id, position or PENDING, room)`, oldest first.
    changes: VecDeque<(u64, u64, String)>,
    next_id: u64,
    /// Every change at a position above this one is in the log.
    floor: u64,
}

const PENDING: u64 = u64::MAX;

impl ReceiptLog {
    pub(super) fn starting_at(head: StreamPos) -> Self {
        ReceiptLog { floor: head.0, ..ReceiptLog::default() }
    }

    fn pending(&mut self, rooms: &[&str]) -> Vec<u64> {
        let mut ids = Vec::with_capacity(rooms.len());
        for room in rooms {
            self.next_id += 1;
            ids.push(self.next_id);
            self.changes.push_back((self.next_id, PENDING, (*room).to_owned()));
        }
        while self.changes.len() > RECEIPT_CHANGES_KEPT {
            match self.changes.front() {
                // A pending change is never dropped: its writer settles it soon.
                Some((_, PENDING, _)) => break,
                Some(_) => {
                    if let Some((_, pos, _)) = self.changes.pop_front() {
                        self.floor = self.floor.max(pos);
                    }
                }
                None => break,
            }
        }
        ids
    }

    /// Gives the pending changes `ids` their position (`None`: the write failed).
    fn settle(&mut self, ids: &[u64], pos: Option<StreamPos>) {
        for id in ids {
            if let Some(index) = self.changes.iter().rposition(|(i, ..)| i == id) {
                match pos {
                    Some(pos) => self.changes[index].1 = pos.0,
                    None => {
                        self.changes.remove(index);
                    }
                }
            }
        }
    }
}

impl Ephemeral {
    /// Notes receipt changes in `rooms` as pending; [`Ephemeral::receipts_written`] settles
    /// them.
    fn receipts_pending(&self, rooms: &[&str]) -> Vec<u64> {
        self.lock().receipt_log.pending(rooms)
    }

    /// Settles pending receipt changes after their write (`ok`) or its failure.
    async fn receipts_written(&self, ids: &[u64], ok: bool) {
        let pos = if ok { self.storage.stream_position().await.ok() } else { None };
        // A position that could not be read leaves them pending, which only widens readers.
        if ok && pos.is_none() {
            return;
        }
        self.lock().receipt_log.settle(ids, pos);
    }

    /// The rooms whose receipts may have changed in `(since, upto]`: from this log, or, when
    /// other processes write receipts too (their changes are not in it), from the storage's
    /// list of stream changes; `None` when neither reaches back that far: then every room
    /// must be looked at.
    pub(crate) async fn receipt_rooms_since(
        &self,
        since: StreamPos,
        upto: StreamPos,
    ) -> Option<HashSet<String>> {
        if self.storage.foreign_writes().is_some() {
            let changes = self.storage.stream_changes(since, upto).await.ok()?;
            return Some(changes.receipt_rooms.into_iter().collect());
        }
        let inner = self.lock();
        let log = &inner.receipt_log;
        if since.0 < log.floor {
            return None;
        }
        Some(
            log.changes
                .iter()
                .filter(|(_, pos, _)| *pos > since.0)
                .map(|(.., room)| room.clone())
                .collect(),
        )
    }

    /// Sets a read receipt (`thread`: `main` or a thread root's event id, checked by the
    /// caller); past `max_thread_receipts_per_room`, a user's oldest threaded receipts in the
    /// room are deleted in the same change set, and `enqueue` (the receipt's EDUs for other
    /// servers) is queued in it too.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn set_receipt(
        &self,
        room: &str,
        user: &str,
        kind: &str,
        event_id: &str,
        event_pos: StreamPos,
        thread: Option<String>,
        ts: u64,
        enqueue: Vec<(String, std::sync::Arc<[u8]>)>,
    ) -> Result<(), ApiError> {
        let key = ReceiptKey {
            room_id: room.to_owned(),
            user_id: user.to_owned(),
            kind: kind.to_owned(),
            thread,
        };
        let mut changes = ChangeSet::new();
        changes.enqueue = enqueue;
        self.bound_threads(&mut changes, &key).await?;
        let note = Note::Receipt {
            room: room.to_owned(),
            event_id: event_id.to_owned(),
            user: user.to_owned(),
            kind: kind.to_owned(),
            thread: key.thread.clone(),
            ts,
        };
        changes.receipts.push(Receipt { key, event_id: event_id.to_owned(), event_pos, ts });
        let noted = self.receipts_pending(&[room]);
        let applied = self.storage.apply(changes).await;
        self.receipts_written(&noted, applied.is_ok()).await;
        applied?;
        self.note_for_appservices(&note);
        if kind == "m.read.private" {
            // Only its owner ever sees it.
            self.wakeups.wake(user);
        } else {
            self.wake_room(room, Audience::Joined, &[]).await;
        }
        Ok(())
    }

    /// Stores the public receipts of other servers' users (checked by the caller), in one
    /// change set, each user's threaded receipts bounded as ours are.
    pub(crate) async fn set_remote_receipts(&self, receipts: Vec<Receipt>) -> Result<(), ApiError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let mut changes = ChangeSet::new();
        let mut rooms: Vec<String> = Vec::new();
        let notes: Vec<Note> = receipts
            .iter()
            .map(|r| Note::Receipt {
                room: r.key.room_id.clone(),
                event_id: r.event_id.clone(),
                user: r.key.user_id.clone(),
                kind: r.key.kind.clone(),
                thread: r.key.thread.clone(),
                ts: r.ts,
            })
            .collect();
        for receipt in receipts {
            self.bound_threads(&mut changes, &receipt.key).await?;
            rooms.push(receipt.key.room_id.clone());
            changes.receipts.push(receipt);
        }
        let noted = self.receipts_pending(&rooms.iter().map(String::as_str).collect::<Vec<_>>());
        let applied = self.storage.apply(changes).await;
        self.receipts_written(&noted, applied.is_ok()).await;
        applied?;
        for note in &notes {
            self.note_for_appservices(note);
        }
        rooms.sort_unstable();
        rooms.dedup();
        for room in rooms {
            self.wake_room(&room, Audience::Joined, &[]).await;
        }
        Ok(())
    }

    /// Adds to `changes` the deletion of the oldest threaded receipts of `key`'s user in its
    /// room past `max_thread_receipts_per_room` (when `key` is threaded).
    async fn bound_threads(
        &self,
        changes: &mut ChangeSet,
        key: &ReceiptKey,
    ) -> Result<(), ApiError> {
        let (room, user) = (key.room_id.as_str(), key.user_id.as_str());
        if key.thread.is_some() {
            let mut threaded: Vec<StoredReceipt> = self
                .storage
                .user_receipts(room, user)
                .await?
                .into_iter()
                .filter(|r| r.receipt.key.thread.is_some() && r.receipt.key != *key)
                .collect();
            threaded.sort_by_key(|r| r.pos);
            let keep = self.limits.thread_receipts.saturating_sub(1);
            let excess = threaded.len().saturating_sub(keep);
            changes
                .deleted_receipts
                .extend(threaded.into_iter().take(excess).map(|r| r.receipt.key));
        }
        Ok(())
    }

    /// The `m.receipt` content of the receipts of `room` changed in `(since, upto]` (private
    /// receipts only to their owner), if any.
    pub(crate) async fn receipts_since(
        &self,
        room: &str,
        since: StreamPos,
        upto: StreamPos,
        viewer: &str,
    ) -> Result<Option<Value>, ApiError> {
        let receipts = self.storage.receipts(room, since, upto).await?;
        Ok(content(&receipts, viewer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(user: &str, kind: &str, thread: Option<&str>, pos: u64) -> StoredReceipt {
        StoredReceipt {
            pos: StreamPos(pos + 100),
            receipt: Receipt {
                key: ReceiptKey {
                    room_id: "!r".to_owned(),
                    user_id: user.to_owned(),
                    kind: kind.to_owned(),
                    thread: thread.map(str::to_owned),
                },
                event_id: format!("$e{pos}"),
                event_pos: StreamPos(pos),
                ts: 7,
            },
        }
    }

    #[test]
    fn the_receipt_log_shows_pending_changes_and_knows_how_far_back_it_reaches() {
        let mut log = ReceiptLog::starting_at(StreamPos(10));
        let ids = log.pending(&["!a", "!b"]);
        let rooms_after = |log: &ReceiptLog, since: u64| -> Vec<String> {
            let mut rooms: Vec<String> = log
                .changes
                .iter()
                .filter(|(_, pos, _)| *pos > since)
                .map(|(.., room)| room.clone())
                .collect();
            rooms.sort();
            rooms
        };
        // Pending: seen by any reader.
        assert_eq!(rooms_after(&log, 1_000), ["!a", "!b"]);
        log.settle(&ids[..1], Some(StreamPos(12)));
        log.settle(&ids[1..], None);
        assert_eq!(rooms_after(&log, 11), ["!a"]);
        assert!(rooms_after(&log, 12).is_empty());
        // Past its bound the oldest settled changes go, and the floor rises with them.
        for i in 0..RECEIPT_CHANGES_KEPT + 5 {
            let ids = log.pending(&["!c"]);
            log.settle(&ids, Some(StreamPos(20 + i as u64)));
        }
        assert!(log.changes.len() <= RECEIPT_CHANGES_KEPT + 1);
        assert!(log.floor >= 20, "{}", log.floor);
    }

    #[test]
    fn private_receipts_only_to_their_owner() {
        let receipts =
            [stored("@a:x", "m.read.private", None, 3), stored("@b:x", "m.read", Some("$t"), 4)];
        let for_a = content(&receipts, "@a:x").expect("receipts");
        assert_eq!(for_a["$e3"]["m.read.private"]["@a:x"]["ts"], 7);
        assert_eq!(for_a["$e4"]["m.read"]["@b:x"]["thread_id"], "$t");
        let for_b = content(&receipts, "@b:x").expect("receipts");
        assert!(for_b.get("$e3").is_none());
        assert!(content(&receipts[..1], "@c:x").is_none());
    }
}
