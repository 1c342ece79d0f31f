//! What is not part of a room's DAG: typing notices, read receipts, to-device messages, the
//! end-to-end encryption keys of devices, the recent notifying events that unread counts are
//! made from, and the log of account-data changes that incremental sync reads. Kept in memory (this slice of the server does not persist them; a restart
//! forgets typing, receipts, queued to-device messages and device keys).
//!
//! Every change gets a number from one counter, and the counter's watch channel wakes the
//! syncs that wait. The counter starts at the process's start time in microseconds, so a
//! sync token from before a restart is always older than anything this process holds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

/// How many account-data and device-key changes are remembered for incremental syncs; a sync
/// whose token is older than the oldest one kept gets everything again.
const LOG_LEN: usize = 4096;

/// How many recent notifying events each room keeps for unread counts.
const NOTICES_PER_ROOM: usize = 1000;

/// A message that counts as a notification for everybody in the room but its sender (the
/// default push rules' `.m.rule.message` and `.m.rule.encrypted`), and a highlight for the
/// users it mentions.
#[derive(Debug, Clone)]
struct Notice {
    pos: u64,
    sender: String,
    mentions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Receipt {
    counter: u64,
    /// The stream position of the event it is for.
    pos: u64,
    user: String,
    kind: String,
    event_id: String,
    ts: u64,
    thread: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ToDevice {
    counter: u64,
    pub(crate) sender: String,
    pub(crate) kind: String,
    pub(crate) content: Value,
}

#[derive(Debug, Default)]
struct Inner {
    counter: u64,
    /// Room -> user -> until when they type.
    typing: HashMap<String, HashMap<String, Instant>>,
    typing_changed: HashMap<String, u64>,
    /// Room -> the latest receipt per (user, type, thread).
    receipts: HashMap<String, Vec<Receipt>>,
    /// Room -> its recent notifying events, oldest first.
    notices: HashMap<String, VecDeque<Notice>>,
    /// (counter, user, room, type) of account data written.
    account_data_log: VecDeque<(u64, String, Option<String>, String)>,
    /// (counter, user) whose device keys changed.
    key_log: VecDeque<(u64, String)>,
    to_device: HashMap<(String, String), Vec<ToDevice>>,
    device_keys: HashMap<(String, String), Value>,
    one_time_keys: HashMap<(String, String), BTreeMap<String, Value>>,
    fallback_keys: HashMap<(String, String), BTreeMap<String, Value>>,
}

/// The in-memory side of the server, and the signal that wakes waiting syncs.
#[derive(Debug)]
pub(crate) struct Ephemeral {
    inner: Mutex<Inner>,
    base: u64,
    changes: watch::Sender<u64>,
}

/// What changed for a user since a counter value.
#[derive(Debug, Default)]
pub(crate) struct AccountDataChanges {
    /// Everything must be sent again (the token is older than what is remembered).
    pub(crate) all: bool,
    /// (room, type) written since.
    pub(crate) changed: Vec<(Option<String>, String)>,
}

impl Ephemeral {
    pub(crate) fn new() -> Self {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        let inner = Inner { counter: base, ..Inner::default() };
        Ephemeral { inner: Mutex::new(inner), base, changes: watch::channel(0).0 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that
        // matters more than losing the server; keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the syncs that wait (called after timeline appends too).
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever anything a sync reports changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The counter now.
    pub(crate) fn position(&self) -> u64 {
        self.lock().counter
    }

    fn bump(inner: &mut Inner) -> u64 {
        inner.counter += 1;
        inner.counter
    }

    pub(crate) fn set_typing(&self, room: &str, user: &str, typing: Option<Duration>) {
        {
            let mut inner = self.lock();
            let counter = Self::bump(&mut inner);
            let users = inner.typing.entry(room.to_owned()).or_default();
            match typing {
                Some(timeout) => users.insert(user.to_owned(), Instant::now() + timeout),
                None => users.remove(user),
            };
            inner.typing_changed.insert(room.to_owned(), counter);
        }
        self.notify();
    }

    /// Who types in `room`, if that changed after `since`.
    pub(crate) fn typing_since(&self, room: &str, since: u64) -> Option<Vec<String>> {
        let inner = self.lock();
        if inner.typing_changed.get(room).is_none_or(|c| *c <= since) {
            return None;
        }
        let now = Instant::now();
        let mut users: Vec<String> = inner
            .typing
            .get(room)
            .map(|u| u.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect())
            .unwrap_or_default();
        users.sort();
        Some(users)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set_receipt(
        &self,
        room: &str,
        user: &str,
        kind: &str,
        event_id: &str,
        pos: u64,
        thread: Option<String>,
        ts: u64,
    ) {
        {
            let mut inner = self.lock();
            let counter = Self::bump(&mut inner);
            let receipts = inner.receipts.entry(room.to_owned()).or_default();
            receipts.retain(|r| !(r.user == user && r.kind == kind && r.thread == thread));
            receipts.push(Receipt {
                counter,
                pos,
                user: user.to_owned(),
                kind: kind.to_owned(),
                event_id: event_id.to_owned(),
                ts,
                thread,
            });
        }
        self.notify();
    }

    /// The `m.receipt` content of the receipts of `room` set after `since` (private receipts
    /// only to their owner), if any.
    pub(crate) fn receipts_since(&self, room: &str, since: u64, viewer: &str) -> Option<Value> {
        let inner = self.lock();
        let receipts = inner.receipts.get(room)?;
        let mut content = serde_json::Map::new();
        for r in receipts.iter().filter(|r| r.counter > since) {
            if r.kind == "m.read.private" && r.user != viewer {
                continue;
            }
            let mut receipt = json!({"ts": r.ts});
            if let Some(thread) = &r.thread {
                receipt["thread_id"] = json!(thread);
            }
            let by_event = content.entry(r.event_id.clone()).or_insert_with(|| json!({}));
            by_event[&r.kind][&r.user] = receipt;
        }
        (!content.is_empty()).then_some(Value::Object(content))
    }

    /// Notes a notifying event at `pos` (messages: see [`Notice`]).
    pub(crate) fn notice(&self, room: &str, pos: u64, sender: &str, mentions: Vec<String>) {
        let mut inner = self.lock();
        let notices = inner.notices.entry(room.to_owned()).or_default();
        notices.push_back(Notice { pos, sender: sender.to_owned(), mentions });
        if notices.len() > NOTICES_PER_ROOM {
            notices.pop_front();
        }
    }

    /// The unread notification and highlight counts of `user` in `room`: the notifying events
    /// of others after the user's latest read receipt (of those this process has seen).
    pub(crate) fn unread(&self, room: &str, user: &str) -> (u64, u64) {
        let inner = self.lock();
        let read = inner
            .receipts
            .get(room)
            .into_iter()
            .flatten()
            .filter(|r| r.user == user && r.kind.starts_with("m.read") && r.thread.is_none())
            .map(|r| r.pos)
            .max()
            .unwrap_or(0);
        let mut counts = (0, 0);
        // Newest first, down to the receipt (notices are kept in stream order).
        let unread = inner.notices.get(room).into_iter().flatten().rev();
        for notice in unread.take_while(|n| n.pos > read) {
            if notice.sender != user {
                counts.0 += 1;
                if notice.mentions.iter().any(|m| m == user) {
                    counts.1 += 1;
                }
            }
        }
        counts
    }

    /// Notes that account data of a user was written.
    pub(crate) fn account_data_written(&self, user: &str, room: Option<&str>, kind: &str) {
        {
            let mut inner = self.lock();
            let counter = Self::bump(&mut inner);
            inner.account_data_log.push_back((
                counter,
                user.to_owned(),
                room.map(str::to_owned),
                kind.to_owned(),
            ));
            if inner.account_data_log.len() > LOG_LEN {
                inner.account_data_log.pop_front();
            }
        }
        self.notify();
    }

    /// The account data of `user` written after `since`.
    pub(crate) fn account_data_since(&self, user: &str, since: u64) -> AccountDataChanges {
        let inner = self.lock();
        let oldest = inner.account_data_log.front().map_or(inner.counter, |(c, ..)| *c - 1);
        if since < self.base || since < oldest {
            return AccountDataChanges { all: true, changed: Vec::new() };
        }
        let mut changed: Vec<(Option<String>, String)> = inner
            .account_data_log
            .iter()
            .filter(|(c, u, ..)| *c > since && u == user)
            .map(|(_, _, room, kind)| (room.clone(), kind.clone()))
            .collect();
        changed.sort();
        changed.dedup();
        AccountDataChanges { all: false, changed }
    }

    pub(crate) fn send_to_device(
        &self,
        sender: &str,
        kind: &str,
        messages: Vec<(String, String, Value)>,
    ) {
        {
            let mut inner = self.lock();
            for (user, device, content) in messages {
                let counter = Self::bump(&mut inner);
                let message =
                    ToDevice { counter, sender: sender.to_owned(), kind: kind.to_owned(), content };
                inner.to_device.entry((user, device)).or_default().push(message);
            }
        }
        self.notify();
    }

    /// The to-device messages of a device after `since`; those at or before it were delivered
    /// and are dropped.
    pub(crate) fn to_device_since(&self, user: &str, device: &str, since: u64) -> Vec<ToDevice> {
        let mut inner = self.lock();
        let Some(queue) = inner.to_device.get_mut(&(user.to_owned(), device.to_owned())) else {
            return Vec::new();
        };
        queue.retain(|m| m.counter > since);
        queue.clone()
    }

    /// Stores a device's keys and one-time keys; answers the one-time key counts.
    pub(crate) fn upload_keys(
        &self,
        user: &str,
        device: &str,
        device_keys: Option<Value>,
        one_time_keys: BTreeMap<String, Value>,
        fallback_keys: BTreeMap<String, Value>,
    ) -> BTreeMap<String, u64> {
        let key = (user.to_owned(), device.to_owned());
        let changed = {
            let mut inner = self.lock();
            let mut changed = false;
            if let Some(keys) = device_keys {
                changed =
                    inner.device_keys.insert(key.clone(), keys.clone()).as_ref() != Some(&keys);
            }
            inner.one_time_keys.entry(key.clone()).or_default().extend(one_time_keys);
            if !fallback_keys.is_empty() {
                inner.fallback_keys.insert(key.clone(), fallback_keys);
            }
            if changed {
                let counter = Self::bump(&mut inner);
                inner.key_log.push_back((counter, user.to_owned()));
                if inner.key_log.len() > LOG_LEN {
                    inner.key_log.pop_front();
                }
            }
            changed
        };
        if changed {
            self.notify();
        }
        self.one_time_key_counts(user, device)
    }

    /// The count of one-time keys per algorithm of a device.
    pub(crate) fn one_time_key_counts(&self, user: &str, device: &str) -> BTreeMap<String, u64> {
        let inner = self.lock();
        let mut counts = BTreeMap::new();
        if let Some(keys) = inner.one_time_keys.get(&(user.to_owned(), device.to_owned())) {
            for key_id in keys.keys() {
                let algorithm = key_id.split(':').next().unwrap_or_default().to_owned();
                *counts.entry(algorithm).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The algorithms of a device's unused fallback keys.
    pub(crate) fn fallback_key_types(&self, user: &str, device: &str) -> Vec<String> {
        let inner = self.lock();
        let mut types: Vec<String> = inner
            .fallback_keys
            .get(&(user.to_owned(), device.to_owned()))
            .map(|keys| {
                keys.keys().filter_map(|k| k.split(':').next()).map(str::to_owned).collect()
            })
            .unwrap_or_default();
        types.dedup();
        types
    }

    /// The device keys of a user's devices (all, or those named).
    pub(crate) fn device_keys(&self, user: &str, devices: &[String]) -> BTreeMap<String, Value> {
        let inner = self.lock();
        inner
            .device_keys
            .iter()
            .filter(|((u, d), _)| u == user && (devices.is_empty() || devices.contains(d)))
            .map(|((_, d), keys)| (d.clone(), keys.clone()))
            .collect()
    }

    /// Takes one one-time key of `algorithm` of a device (or, when none is left, its fallback
    /// key, which is not used up).
    pub(crate) fn claim_key(
        &self,
        user: &str,
        device: &str,
        algorithm: &str,
    ) -> Option<(String, Value)> {
        let mut inner = self.lock();
        let key = (user.to_owned(), device.to_owned());
        let prefix = format!("{algorithm}:");
        if let Some(keys) = inner.one_time_keys.get_mut(&key)
            && let Some(id) = keys.keys().find(|k| k.starts_with(&prefix)).cloned()
        {
            return keys.remove_entry(&id);
        }
        let fallback = inner.fallback_keys.get(&key)?;
        fallback.iter().find(|(k, _)| k.starts_with(&prefix)).map(|(k, v)| (k.clone(), v.clone()))
    }

    /// Users whose device keys changed after `since`.
    pub(crate) fn keys_changed_since(&self, since: u64) -> Vec<String> {
        let inner = self.lock();
        let mut users: Vec<String> =
            inner.key_log.iter().filter(|(c, _)| *c > since).map(|(_, u)| u.clone()).collect();
        users.sort();
        users.dedup();
        users
    }

    /// Forgets the keys and queued messages of a deleted device.
    pub(crate) fn device_deleted(&self, user: &str, device: &str) {
        let mut inner = self.lock();
        let key = (user.to_owned(), device.to_owned());
        inner.device_keys.remove(&key);
        inner.one_time_keys.remove(&key);
        inner.fallback_keys.remove(&key);
        inner.to_device.remove(&key);
        let counter = Self::bump(&mut inner);
        inner.key_log.push_back((counter, user.to_owned()));
        if inner.key_log.len() > LOG_LEN {
            inner.key_log.pop_front();
        }
    }
}
