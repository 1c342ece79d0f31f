//! What is not part of a room's DAG: typing notices (the only thing kept in memory alone),
//! read receipts, to-device messages and the end-to-end encryption keys of devices (in
//! storage, on the stream the sync token counts), and the caches a sync reads: the recent
//! notifying events that unread counts are made from, and the departures that
//! `device_lists.left` is made from (both derived from stored events).
//!
//! With several processes on one database (see `rooms/foreign.rs`), what is stored is shared
//! and what is here is per process: typing notices (a user typing through one process is not
//! seen by a sync on another), the per-device count of running syncs, and the serialisation
//! of key uploads and to-device sends against their stored bounds (two processes may each
//! admit one more than the bound at once). Notices and departures of events other processes
//! append are noted when this process follows them.
//!
//! Typing changes are numbered by a counter of this process that starts at its start time in
//! microseconds, so a sync token from before a restart is always older than anything this
//! process holds. A change wakes only the syncs of the users it concerns ([`wakeups`]): its
//! room's members, its target, its owner.

mod cross_signing;
mod device_lists;
mod keys;
mod presence;
mod receipts;
mod to_device;
mod wakeups;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_core::Pdu;
use matrix_storage::{Storage, StreamChanges, StreamPos};

use crate::config::LimitsConfig;
use crate::error::ApiError;
pub(crate) use cross_signing::{CrossSigningView, SigningKeysUpload};
pub(crate) use keys::NewDeviceKeys;
use to_device::QueueLimits;
pub(crate) use wakeups::Waiter;
use wakeups::Wakeups;

/// How many departures are remembered for `device_lists.left`; a sync whose token is older
/// than the oldest one kept misses those (its client keeps tracking a device list it no
/// longer needs, which costs nothing but traffic).
const DEPARTURES_KEPT: usize = 4096;

/// How many arrivals (joins) are remembered for `device_lists.changed`; a sync whose token is
/// older than the oldest one kept, or than this process, is told of every user sharing a
/// room with its user (its client asks for keys it may have already: traffic, not a gap).
const ARRIVALS_KEPT: usize = 4096;

#[derive(Debug, Default)]
struct Inner {
    counter: u64,
    /// Room -> user -> until when they type.
    typing: HashMap<String, HashMap<String, Instant>>,
    typing_changed: HashMap<String, u64>,
    /// (stream position of the membership event, room, user) of users who left a room or
    /// were banned from it, for `device_lists.left`.
    departures: VecDeque<(u64, String, String)>,
    /// (stream position of the membership event, room, user) of users who joined a room (or
    /// changed their profile in it), for `device_lists.changed`.
    arrivals: VecDeque<(u64, String, String)>,
    /// Every arrival at a stream position above this one is in `arrivals`: the position when
    /// this process started, then that of the last arrival let go.
    arrivals_after: u64,
    /// (counter, user) of presence changes, oldest first, at most [`PRESENCE_CHANGES_KEPT`].
    presence_log: VecDeque<(u64, String)>,
    /// The counter below which presence changes may be forgotten: the process's start, or
    /// the last change dropped from the log. A sync token older than it gets the presence of
    /// everybody it concerns again.
    presence_floor: u64,
    /// Rooms whose receipts changed: see `ephemeral/receipts.rs`.
    receipt_log: receipts::ReceiptLog,
}

/// The bounds, from [`LimitsConfig`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    queue: QueueLimits,
    thread_receipts: usize,
    one_time_keys: usize,
}

/// Typing, the caches of receipts' and keys' readers, and the wake-ups of waiting syncs.
pub(crate) struct Ephemeral {
    inner: Mutex<Inner>,
    limits: Limits,
    wakeups: Wakeups,
    storage: Arc<dyn Storage>,
    /// Serialises key uploads (checked against stored bounds, then written).
    uploads: tokio::sync::Mutex<()>,
    /// Serialises to-device sends (checked against stored bounds, then written).
    sends: tokio::sync::Mutex<()>,
    /// The outbound sender and our server name, when federating: device deletions are
    /// announced to other servers from here (every way a device goes passes through).
    outbound: std::sync::OnceLock<(Arc<matrix_federation::sender::Sender>, String)>,
    /// What application services are told (appended events, ephemeral changes), when some
    /// are registered.
    appservices: std::sync::OnceLock<Arc<crate::services::appservice::transactions::Feed>>,
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral").finish_non_exhaustive()
    }
}

/// Which members of a room a change concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Joined,
    JoinedAndInvited,
}

impl Ephemeral {
    /// The service over `storage`, whose stream is at `head` now (what is appended after it
    /// is noted here as it comes).
    pub(crate) fn new(storage: Arc<dyn Storage>, limits: &LimitsConfig, head: StreamPos) -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        let limits_now = Limits {
            queue: QueueLimits {
                messages: limits.max_to_device_per_device,
                bytes: limits.max_to_device_bytes_per_device,
                messages_per_sender: limits.max_to_device_per_sender,
                bytes_per_sender: limits.max_to_device_bytes_per_sender,
            },
            thread_receipts: limits.max_thread_receipts_per_room,
            one_time_keys: limits.max_one_time_keys_per_device,
        };
        Ephemeral {
            inner: Mutex::new(Inner {
                counter: start,
                arrivals_after: head.0,
                presence_floor: start,
                receipt_log: receipts::ReceiptLog::starting_at(head),
                ..Inner::default()
            }),
            limits: limits_now,
            wakeups: Wakeups::new(limits.max_syncs_per_device),
            storage,
            uploads: tokio::sync::Mutex::new(()),
            sends: tokio::sync::Mutex::new(()),
            outbound: std::sync::OnceLock::new(),
            appservices: std::sync::OnceLock::new(),
        }
    }

    /// Announces our users' device changes to other servers from now on.
    pub(crate) fn federate(&self, sender: Arc<matrix_federation::sender::Sender>, ours: &str) {
        let _ = self.outbound.set((sender, ours.to_owned()));
    }

    /// Tells application services of appended events and ephemeral changes from now on.
    pub(crate) fn feed_appservices(
        &self,
        feed: Arc<crate::services::appservice::transactions::Feed>,
    ) {
        let _ = self.appservices.set(feed);
    }

    /// Tells the application services' tasks that the stream moved (a to-device message, a
    /// device-list change).
    pub(crate) fn wake_appservices(&self) {
        if let Some(feed) = self.appservices.get() {
            feed.stream_moved();
        }
    }

    /// The application service `id` answered a ping: its delivery stops waiting out a
    /// backoff.
    pub(crate) fn appservice_answered(&self, id: &str) {
        if let Some(feed) = self.appservices.get() {
            feed.answered(id);
        }
    }

    /// Notes a change for the application services.
    pub(crate) fn note_for_appservices(
        &self,
        note: &crate::services::appservice::transactions::Note,
    ) {
        if let Some(feed) = self.appservices.get() {
            feed.note(note);
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
                tracing::warn!("could not read the members of {room} to wake their syncs: {error}");
                self.wakeups.wake_everybody();
            }
        }
    }

    /// Wakes whom a newly appended event concerns: the room's joined and invited members,
    /// its sender, and the user a membership event is about (a kicked or uninvited user).
    /// A departure (leave, kick, ban) at stream position `pos` is also noted for
    /// `device_lists.left`, and a join for `device_lists.changed`.
    pub(crate) async fn event_appended(&self, room: &str, pdu: &Pdu, pos: Option<StreamPos>) {
        if let Some(feed) = self.appservices.get() {
            feed.stream_moved();
        }
        let mut extra = vec![pdu.sender()];
        if pdu.kind() == "m.room.member"
            && let Some(target) = pdu.state_key()
        {
            extra.push(target);
            if let Some(pos) = pos {
                let noted = (pos.0, room.to_owned(), target.to_owned());
                let mut inner = self.lock();
                match pdu.content().get_str("membership") {
                    Some("leave" | "ban") => {
                        inner.departures.push_back(noted);
                        if inner.departures.len() > DEPARTURES_KEPT {
                            inner.departures.pop_front();
                        }
                    }
                    Some("join") => {
                        inner.arrivals.push_back(noted);
                        if inner.arrivals.len() > ARRIVALS_KEPT
                            && let Some((gone, ..)) = inner.arrivals.pop_front()
                        {
                            inner.arrivals_after = inner.arrivals_after.max(gone);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.wake_room(room, Audience::JoinedAndInvited, &extra).await;
    }

    /// The typing counter now.
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
            inner.counter += 1;
            let counter = inner.counter;
            inner.typing_changed.insert(room.to_owned(), counter);
        }
        self.note_for_appservices(&crate::services::appservice::transactions::Note::Typing(
            room.to_owned(),
        ));
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

    /// Wakes whom receipts, account data, to-device messages and device-list changes that
    /// another process wrote concern (a superset of what it woke there: every joined member
    /// of a room whose receipts changed).
    pub(crate) async fn foreign_changes(&self, changes: &StreamChanges, device_lists: &[String]) {
        for room in &changes.receipt_rooms {
            self.wake_room(room, Audience::Joined, &[]).await;
        }
        self.wakeups.wake_all_of(changes.users.iter().map(String::as_str));
        for user in device_lists {
            self.wake_sharing(user).await;
        }
    }

    /// Wakes every waiting sync (when what another process wrote could not be read).
    pub(crate) fn wake_everybody(&self) {
        self.wakeups.wake_everybody();
    }

    /// Wakes the user's syncs after their account data was written.
    pub(crate) fn account_data_written(&self, user: &str) {
        self.wakeups.wake(user);
    }
}
