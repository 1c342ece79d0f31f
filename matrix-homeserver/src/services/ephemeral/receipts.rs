//! Read receipts of one room: the latest per (user, type, thread), found by key in O(1) and
//! by change number in O(log n), with a bound on the threaded receipts each user keeps.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

/// (user, receipt type, thread id).
type Key = (String, String, Option<String>);

#[derive(Debug, Clone)]
pub(crate) struct Receipt {
    pub(crate) counter: u64,
    /// The stream position of the event it is for.
    pub(crate) pos: u64,
    pub(crate) event_id: String,
    pub(crate) ts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct RoomReceipts {
    latest: HashMap<Key, Receipt>,
    /// Change number -> the receipt's key (each key once, under its latest number).
    by_counter: BTreeMap<u64, Key>,
    /// User -> change number -> key, of their threaded receipts (oldest first).
    threaded: HashMap<String, BTreeMap<u64, Key>>,
}

impl RoomReceipts {
    /// Sets the receipt of `key`; a user's oldest threaded receipt goes past `max_threads`.
    pub(crate) fn set(
        &mut self,
        user: &str,
        kind: &str,
        thread: Option<String>,
        receipt: Receipt,
        max_threads: usize,
    ) {
        let key: Key = (user.to_owned(), kind.to_owned(), thread);
        let counter = receipt.counter;
        let threaded = key.2.is_some();
        if let Some(old) = self.latest.insert(key.clone(), receipt) {
            self.by_counter.remove(&old.counter);
            if threaded && let Some(of_user) = self.threaded.get_mut(user) {
                of_user.remove(&old.counter);
            }
        }
        self.by_counter.insert(counter, key.clone());
        if threaded {
            let of_user = self.threaded.entry(user.to_owned()).or_default();
            of_user.insert(counter, key);
            while of_user.len() > max_threads {
                let Some((old_counter, old_key)) = of_user.pop_first() else { break };
                self.by_counter.remove(&old_counter);
                self.latest.remove(&old_key);
            }
        }
    }

    /// The `m.receipt` content of the receipts set after `since` (private receipts only to
    /// their owner), if any.
    pub(crate) fn since(&self, since: u64, viewer: &str) -> Option<Value> {
        let mut content = serde_json::Map::new();
        for (_, key) in self.by_counter.range(since.saturating_add(1)..) {
            let (user, kind, thread) = key;
            if kind == "m.read.private" && user != viewer {
                continue;
            }
            let Some(r) = self.latest.get(key) else { continue };
            let mut receipt = json!({"ts": r.ts});
            if let Some(thread) = thread {
                receipt["thread_id"] = json!(thread);
            }
            let by_event = content.entry(r.event_id.clone()).or_insert_with(|| json!({}));
            by_event[kind][user] = receipt;
        }
        (!content.is_empty()).then_some(Value::Object(content))
    }

    /// The stream position up to which `user` has read the room's main timeline: an
    /// unthreaded receipt, or one for the thread `main` (what thread-aware clients send).
    pub(crate) fn read_up_to(&self, user: &str) -> u64 {
        let main = Some("main".to_owned());
        ["m.read", "m.read.private"]
            .into_iter()
            .flat_map(|kind| [(kind, None), (kind, main.clone())])
            .filter_map(|(kind, thread)| {
                self.latest.get(&(user.to_owned(), kind.to_owned(), thread))
            })
            .map(|r| r.pos)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(counter: u64) -> Receipt {
        Receipt { counter, pos: counter, event_id: format!("$e{counter}"), ts: 0 }
    }

    #[test]
    fn threaded_receipts_are_bounded_per_user_and_replaced_in_place() {
        let mut room = RoomReceipts::default();
        room.set("@a:x", "m.read", None, receipt(1), 2);
        for n in 2..10 {
            room.set("@a:x", "m.read", Some(format!("$t{n}")), receipt(n), 2);
        }
        assert_eq!(room.latest.len(), 3);
        assert_eq!(room.by_counter.len(), 3);
        room.set("@a:x", "m.read", None, receipt(10), 2);
        assert_eq!(room.latest.len(), 3);
        assert_eq!(room.read_up_to("@a:x"), 10);
        let content = room.since(8, "@b:x").expect("receipts");
        assert!(content.get("$e9").is_some() && content.get("$e10").is_some());
        assert!(content.get("$e1").is_none());
    }
}
