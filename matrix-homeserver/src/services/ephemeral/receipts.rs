//! Read receipts, in storage: the latest per (room, user, type, thread), each listed by the
//! stream position of its last change, with a bound on the threaded receipts a user keeps in
//! a room.

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

impl Ephemeral {
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
        self.storage.apply(changes).await?;
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
        self.storage.apply(changes).await?;
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
