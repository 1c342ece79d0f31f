//! What is not part of a room's DAG: typing notices, read receipts, to-device messages, the
//! end-to-end encryption keys of devices, the recent notifying events that unread counts are
//! made from, and the log of account-data changes that incremental sync reads. Kept in memory
//! (this slice of the server does not persist them; a restart forgets typing, receipts,
//! queued to-device messages and device keys), each part with a bound from the config.
//!
//! Every change gets a number from one counter. The counter starts at the process's start
//! time in microseconds, so a sync token from before a restart is always older than anything
//! this process holds. A change wakes only the syncs of the users it concerns
//! ([`wakeups`]): its room's members, its target, its owner.

mod device_lists;
mod keys;
mod receipts;
mod to_device;
mod wakeups;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_core::Pdu;
use matrix_storage::Storage;
use serde_json::Value;

use crate::config::LimitsConfig;
use crate::error::ApiError;
pub(crate) use keys::UploadRefused;
pub(crate) use to_device::ToDevice;
use to_device::{QueueLimits, Queues, Sent};
pub(crate) use wakeups::Waiter;
use wakeups::Wakeups;

/// How many account-data changes are remembered for incremental syncs; a sync whose token is
/// older than the oldest one kept gets everything again.
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
    /// The mentioned users, sorted, at most `max_mentions_per_event` of them.
    mentions: Box<[String]>,
}

#[derive(Debug, Default)]
struct Inner {
    counter: u64,
    /// Room -> user -> until when they type.
    typing: HashMap<String, HashMap<String, Instant>>,
    typing_changed: HashMap<String, u64>,
    receipts: HashMap<String, receipts::RoomReceipts>,
    /// Room -> its recent notifying events, oldest first.
    notices: HashMap<String, VecDeque<Notice>>,
    /// (counter, user, room, type) of account data written.
    account_data_log: VecDeque<(u64, String, Option<String>, String)>,
    to_device: Queues,
    keys: keys::Keys,
    /// (counter, room, user) of users who left a room or were banned from it, for
    /// `device_lists.left`.
    departures: VecDeque<(u64, String, String)>,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The bounds of the in-memory state, from [`LimitsConfig`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    queue: QueueLimits,
    thread_receipts: usize,
    one_time_keys: usize,
    mentions: usize,
}

/// The in-memory side of the server, and the wake-ups of waiting syncs.
pub(crate) struct Ephemeral {
    inner: Mutex<Inner>,
    base: u64,
    limits: Limits,
    wakeups: Wakeups,
    /// Read to find whom a change concerns (room members, users sharing a room).
    storage: Arc<dyn Storage>,
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral").field("base", &self.base).finish_non_exhaustive()
    }
}

/// What changed for a user since a counter value.
#[derive(Debug, Default)]
pub(crate) struct AccountDataChanges {
    /// Everything must be sent again (the token is older than what is remembered).
    pub(crate) all: bool,
    /// (room, type) written since.
    pub(crate) changed: Vec<(Option<String>, String)>,
}

/// Which members of a room a change concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Joined,
    JoinedAndInvited,
}

impl Ephemeral {
    pub(crate) fn new(storage: Arc<dyn Storage>, limits: &LimitsConfig) -> Self {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        let inner = Inner { counter: base, ..Inner::default() };
        let limits_now = Limits {
            queue: QueueLimits {
                messages: limits.max_to_device_per_device,
                bytes: limits.max_to_device_bytes_per_device,
                messages_per_sender: limits.max_to_device_per_sender,
                bytes_per_sender: limits.max_to_device_bytes_per_sender,
            },
            thread_receipts: limits.max_thread_receipts_per_room,
            one_time_keys: limits.max_one_time_keys_per_device,
            mentions: limits.max_mentions_per_event,
        };
        Ephemeral {
            inner: Mutex::new(inner),
            base,
            limits: limits_now,
            wakeups: Wakeups::new(limits.max_syncs_per_device),
            storage,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that
        // matters more than losing the server; keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a sync of `device` for wake-ups; 429 when the device has as many syncs
    /// running as `max_syncs_per_device` allows (the new one is refused, the running ones
    /// go on: a client that lost track of its request retries after `retry_after_ms`).
    pub(crate) fn waiter(&self, user: &str, device: &str) -> Result<Waiter<'_>, ApiError> {
        self.wakeups.waiter(user, device).map_err(|_| {
            ApiError::limit_exceeded_with(1000, "this device has too many /sync requests open")
        })
    }

    /// Wakes the syncs of the room's members that `audience` names, plus `extra`.
    async fn wake_room(&self, room: &str, audience: Audience, extra: &[&str]) {
        match self.storage.members(room).await {
            Ok(members) => {
                let concerned = members
                    .iter()
                    .filter(|(_, m)| {
                        m == "join" || (audience == Audience::JoinedAndInvited && m == "invite")
                    })
                    .map(|(u, _)| u.as_str());
                self.wakeups.wake_all_of(concerned.chain(extra.iter().copied()));
            }
            Err(error) => {
                eprintln!("could not read the members of {room} to wake their syncs: {error}");
                self.wakeups.wake_everybody();
            }
        }
    }

    /// Wakes whom a newly appended event concerns: the room's joined and invited members,
    /// its sender, and the user a membership event is about (a kicked or uninvited user).
    /// A departure (leave, kick, ban) is also noted for `device_lists.left`.
    pub(crate) async fn event_appended(&self, room: &str, pdu: &Pdu) {
        let mut extra = vec![pdu.sender()];
        if pdu.kind() == "m.room.member"
            && let Some(target) = pdu.state_key()
        {
            extra.push(target);
            if matches!(pdu.content().get_str("membership"), Some("leave" | "ban")) {
                let mut inner = self.lock();
                let counter = inner.bump();
                inner.departures.push_back((counter, room.to_owned(), target.to_owned()));
                if inner.departures.len() > LOG_LEN {
                    inner.departures.pop_front();
                }
            }
        }
        self.wake_room(room, Audience::JoinedAndInvited, &extra).await;
    }

    /// The counter now.
    pub(crate) fn position(&self) -> u64 {
        self.lock().counter
    }

    /// Sets or clears a user's typing notice. Only a change of who types is news: a client
    /// extending its notice (or stopping twice) wakes nobody.
    pub(crate) async fn set_typing(&self, room: &str, user: &str, typing: Option<Duration>) {
        {
            let mut inner = self.lock();
            let now = Instant::now();
            let users = inner.typing.entry(room.to_owned()).or_default();
            let was_typing = users.get(user).is_some_and(|until| *until > now);
            match typing {
                Some(timeout) => users.insert(user.to_owned(), now + timeout),
                None => users.remove(user),
            };
            if was_typing == typing.is_some() {
                return;
            }
            let counter = inner.bump();
            inner.typing_changed.insert(room.to_owned(), counter);
        }
        self.wake_room(room, Audience::Joined, &[]).await;
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

    /// Sets a read receipt (`thread`: `main` or a thread root's event id, checked by the
    /// caller); a user's oldest threaded receipt in the room goes past the bound.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn set_receipt(
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
            let counter = inner.bump();
            let receipt = receipts::Receipt { counter, pos, event_id: event_id.to_owned(), ts };
            let max = self.limits.thread_receipts;
            inner
                .receipts
                .entry(room.to_owned())
                .or_default()
                .set(user, kind, thread, receipt, max);
        }
        if kind == "m.read.private" {
            // Only its owner ever sees it.
            self.wakeups.wake(user);
        } else {
            self.wake_room(room, Audience::Joined, &[]).await;
        }
    }

    /// The `m.receipt` content of the receipts of `room` set after `since` (private receipts
    /// only to their owner), if any.
    pub(crate) fn receipts_since(&self, room: &str, since: u64, viewer: &str) -> Option<Value> {
        self.lock().receipts.get(room)?.since(since, viewer)
    }

    /// Notes a notifying event at `pos` (messages: see [`Notice`]). Of the mentions, at most
    /// `max_mentions_per_event` are kept, sorted, so that [`Ephemeral::unread`] stays cheap.
    pub(crate) fn notice(&self, room: &str, pos: u64, sender: &str, mut mentions: Vec<String>) {
        mentions.truncate(self.limits.mentions);
        mentions.sort();
        mentions.dedup();
        let mut inner = self.lock();
        let notices = inner.notices.entry(room.to_owned()).or_default();
        notices.push_back(Notice { pos, sender: sender.to_owned(), mentions: mentions.into() });
        if notices.len() > NOTICES_PER_ROOM {
            notices.pop_front();
        }
    }

    /// The unread notification and highlight counts of `user` in `room`: the notifying events
    /// of others after the user's latest read receipt (of those this process has seen).
    pub(crate) fn unread(&self, room: &str, user: &str) -> (u64, u64) {
        let inner = self.lock();
        let read = inner.receipts.get(room).map_or(0, |r| r.read_up_to(user));
        let mut counts = (0, 0);
        // Newest first, down to the receipt (notices are kept in stream order).
        let unread = inner.notices.get(room).into_iter().flatten().rev();
        for notice in unread.take_while(|n| n.pos > read) {
            if notice.sender != user {
                counts.0 += 1;
                if notice.mentions.binary_search_by(|m| m.as_str().cmp(user)).is_ok() {
                    counts.1 += 1;
                }
            }
        }
        counts
    }

    /// Notes that account data of a user was written, and wakes the user's syncs.
    pub(crate) fn account_data_written(&self, user: &str, room: Option<&str>, kind: &str) {
        {
            let mut inner = self.lock();
            let counter = inner.bump();
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
        self.wakeups.wake(user);
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

    /// Queues to-device messages for `targets` (existing devices, as the caller checked), all
    /// or none: 429 when a queue would pass its bounds. A transaction id the sending device
    /// used recently is answered without queueing again.
    pub(crate) fn send_to_device(
        &self,
        sender: (&str, &str),
        txn: &str,
        kind: &str,
        targets: Vec<(String, String, Value)>,
    ) -> Result<(), ApiError> {
        let sent = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            let counter = &mut inner.counter;
            let next = || {
                *counter += 1;
                *counter
            };
            inner.to_device.send(self.limits.queue, sender, txn, kind, targets, next)
        };
        match sent {
            Ok(Sent::Queued(users)) => {
                self.wakeups.wake_all_of(users.iter().map(String::as_str));
                Ok(())
            }
            Ok(Sent::Repeated) => Ok(()),
            Err(_) => Err(ApiError::limit_exceeded_with(
                10_000,
                "a receiving device's to-device queue is full (in messages or bytes, or of \
                 this sender's)",
            )),
        }
    }

    /// The to-device messages of a device numbered in `(since, upto]` (`upto`: the counter
    /// of the sync's token); those at or before `since` were delivered and are dropped.
    pub(crate) fn to_device_since(
        &self,
        user: &str,
        device: &str,
        since: u64,
        upto: u64,
    ) -> Vec<ToDevice> {
        self.lock().to_device.since(user, device, since, upto)
    }

    /// Stores a device's keys and one-time keys; answers the one-time key counts. When the
    /// device keys changed, the users sharing a room with the owner are told.
    pub(crate) async fn upload_keys(
        &self,
        user: &str,
        device: &str,
        device_keys: Option<Value>,
        one_time_keys: BTreeMap<String, Value>,
        fallback_keys: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, u64>, UploadRefused> {
        let (changed, counts) = {
            let mut inner = self.lock();
            let max = self.limits.one_time_keys;
            let changed =
                inner.keys.upload(user, device, device_keys, one_time_keys, fallback_keys, max)?;
            if changed {
                let counter = inner.bump();
                inner.keys.log_change(counter, user);
            }
            (changed, inner.keys.one_time_key_counts(user, device))
        };
        if changed {
            self.wake_sharing(user).await;
        }
        Ok(counts)
    }

    /// The count of one-time keys per algorithm of a device.
    pub(crate) fn one_time_key_counts(&self, user: &str, device: &str) -> BTreeMap<String, u64> {
        self.lock().keys.one_time_key_counts(user, device)
    }

    /// The algorithms of a device's unused fallback keys.
    pub(crate) fn fallback_key_types(&self, user: &str, device: &str) -> Vec<String> {
        self.lock().keys.unused_fallback_types(user, device)
    }

    /// The device keys of a user's devices (all, or those named).
    pub(crate) fn device_keys(&self, user: &str, devices: &[String]) -> BTreeMap<String, Value> {
        self.lock().keys.device_keys(user, devices)
    }

    /// Takes one one-time key of `algorithm` of a device (or, when none is left, its fallback
    /// key, which is marked used).
    pub(crate) fn claim_key(
        &self,
        user: &str,
        device: &str,
        algorithm: &str,
    ) -> Option<(String, Value)> {
        // Claimed ids are remembered (so that they are not uploaded again) up to a multiple
        // of what a device may hold.
        let remember = self.limits.one_time_keys.saturating_mul(4);
        self.lock().keys.claim(user, device, algorithm, remember)
    }

    /// Forgets the keys and queued messages of deleted devices (logged out, deleted, or of a
    /// deactivated account) and tells the users sharing a room with the owner.
    pub(crate) async fn devices_deleted(&self, user: &str, devices: &[String]) {
        if devices.is_empty() {
            return;
        }
        let had_keys = {
            let mut inner = self.lock();
            let mut had_keys = false;
            for device in devices {
                had_keys |= inner.keys.device_deleted(user, device);
                inner.to_device.device_deleted(user, device);
            }
            // Only devices with keys are in anybody's device list: the others change nothing.
            if had_keys {
                let counter = inner.bump();
                inner.keys.log_change(counter, user);
            }
            had_keys
        };
        if had_keys {
            self.wake_sharing(user).await;
        }
    }
}
