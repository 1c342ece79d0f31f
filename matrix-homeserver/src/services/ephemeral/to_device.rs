//! The to-device queues: one per existing device, bounded in messages and bytes, in total
//! and per sender, and the transaction ids of `sendToDevice` recently seen from each device
//! (so that a client's retry is not delivered twice).

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

/// How many `sendToDevice` transaction ids are remembered per sending device. A retry comes
/// within seconds, after at most a few other sends.
const TXNS_PER_DEVICE: usize = 256;

/// The bounds of a queue, from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
    pub(crate) messages_per_sender: usize,
    pub(crate) bytes_per_sender: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct ToDevice {
    pub(crate) counter: u64,
    /// What it counts against the bounds.
    bytes: usize,
    pub(crate) sender: String,
    pub(crate) kind: String,
    pub(crate) content: Value,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<ToDevice>,
    bytes: usize,
    /// Sender -> (messages, bytes) waiting.
    by_sender: HashMap<String, (usize, usize)>,
}

impl Queue {
    fn pop_front(&mut self) {
        if let Some(m) = self.messages.pop_front() {
            self.bytes -= m.bytes;
            if let Some(entry) = self.by_sender.get_mut(&m.sender) {
                entry.0 -= 1;
                entry.1 -= m.bytes;
                if entry.0 == 0 {
                    self.by_sender.remove(&m.sender);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct RecentTxns {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

/// A send would pass one of the bounds; nothing of it was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// What a send did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Queued; these users' syncs are to be woken.
    Queued(Vec<String>),
    /// The transaction id was seen already: nothing new was queued.
    Repeated,
}

#[derive(Debug, Default)]
pub(crate) struct Queues {
    /// (user, device) -> its messages, oldest (lowest counter) first.
    queues: HashMap<(String, String), Queue>,
    /// (user, device) of the sender -> its recent transaction ids.
    txns: HashMap<(String, String), RecentTxns>,
}

impl Queues {
    /// Queues `content` for each (user, device) of `targets` (devices the caller checked
    /// exist), all or none; `next` numbers each message.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send(
        &mut self,
        limits: QueueLimits,
        sender: (&str, &str),
        txn: &str,
        kind: &str,
        targets: Vec<(String, String, Value)>,
        mut next: impl FnMut() -> u64,
    ) -> Result<Sent, QueueFull> {
        let sender_key = (sender.0.to_owned(), sender.1.to_owned());
        if self.txns.get(&sender_key).is_some_and(|t| t.seen.contains(txn)) {
            return Ok(Sent::Repeated);
        }
        let mut sized = Vec::with_capacity(targets.len());
        // What this send adds to each queue, checked before anything is queued.
        let mut adding: HashMap<(String, String), (usize, usize)> = HashMap::new();
        for (user, device, content) in targets {
            let bytes = serde_json::to_string(&content).map_or(0, |s| s.len())
                + kind.len()
                + sender.0.len();
            let entry = adding.entry((user.clone(), device.clone())).or_default();
            entry.0 += 1;
            entry.1 += bytes;
            sized.push((user, device, content, bytes));
        }
        for (key, (messages, bytes)) in &adding {
            let (total, total_bytes, mine, mine_bytes) = match self.queues.get(key) {
                Some(q) => {
                    let mine = q.by_sender.get(sender.0).copied().unwrap_or_default();
                    (q.messages.len(), q.bytes, mine.0, mine.1)
                }
                None => (0, 0, 0, 0),
            };
            if total + messages > limits.messages
                || total_bytes + bytes > limits.bytes
                || mine + messages > limits.messages_per_sender
                || mine_bytes + bytes > limits.bytes_per_sender
            {
                return Err(QueueFull);
            }
        }
        let mut users: Vec<String> = Vec::new();
        for (user, device, content, bytes) in sized {
            let message = ToDevice {
                counter: next(),
                bytes,
                sender: sender.0.to_owned(),
                kind: kind.to_owned(),
                content,
            };
            if users.last() != Some(&user) {
                users.push(user.clone());
            }
            let queue = self.queues.entry((user, device)).or_default();
            queue.bytes += bytes;
            let mine = queue.by_sender.entry(sender.0.to_owned()).or_default();
            mine.0 += 1;
            mine.1 += bytes;
            queue.messages.push_back(message);
        }
        let recent = self.txns.entry(sender_key).or_default();
        recent.order.push_back(txn.to_owned());
        recent.seen.insert(txn.to_owned());
        if recent.order.len() > TXNS_PER_DEVICE
            && let Some(old) = recent.order.pop_front()
        {
            recent.seen.remove(&old);
        }
        users.sort();
        users.dedup();
        Ok(Sent::Queued(users))
    }

    /// The messages of a device numbered in `(since, upto]`; those at or before `since` were
    /// delivered (the client's token says so) and are dropped. Messages after `upto` wait for
    /// the next sync, whose token covers them.
    pub(crate) fn since(
        &mut self,
        user: &str,
        device: &str,
        since: u64,
        upto: u64,
    ) -> Vec<ToDevice> {
        let key = (user.to_owned(), device.to_owned());
        let Some(queue) = self.queues.get_mut(&key) else { return Vec::new() };
        while queue.messages.front().is_some_and(|m| m.counter <= since) {
            queue.pop_front();
        }
        let out = queue.messages.iter().take_while(|m| m.counter <= upto).cloned().collect();
        if queue.messages.is_empty() {
            self.queues.remove(&key);
        }
        out
    }

    /// Forgets a deleted device's queue and transaction ids.
    pub(crate) fn device_deleted(&mut self, user: &str, device: &str) {
        let key = (user.to_owned(), device.to_owned());
        self.queues.remove(&key);
        self.txns.remove(&key);
    }
}
