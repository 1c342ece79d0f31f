//! Pushing to application services: `PUT /_matrix/app/v1/transactions/{txnId}` (spec:
//! Application Service API, "Pushing events"; MSC2409 for ephemeral events).
//!
//! **Durable and in order.** The events are durable in the stream already; each service has
//! a stored [`AppserviceCursor`] (the stream position delivered, the transaction id, the
//! transaction in flight, the backoff). One task per service (with a `url`) reads the
//! timeline events after its cursor in stream order, keeps those of interest
//! ([`super::interest`]), batches at most [`MAX_EVENTS`] into a transaction, stores the
//! transaction as in flight (its id and the last position it covers), `PUT`s it, and moves
//! the cursor past it only after a 2xx answer with a JSON body. Anything else (no answer, a
//! time-out after `limits.appservice_timeout_ms`, an error status, garbage) is a failure:
//! the same transaction, with the same id, is sent again after a backoff doubling from
//! [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], for as long as it takes; nothing is skipped.
//! A restart sends the transaction in flight again (its events read again from the stream)
//! and goes on from the stored cursor. One task per service: never two transactions in
//! flight to one service (from one process: several processes sharing a PostgreSQL
//! database would each run their own). A service seen for the first time starts at the
//! stream's head.
//!
//! **Woken by events.** [`Feed`] is told of each appended event, and of each typing,
//! receipt, presence and local alias change; the task waits for it (a 60 s look without
//! news only ends a task whose homeserver is gone).
//!
//! **Ephemeral events** (services with `receive_ephemeral` or MSC2409's unstable flag):
//! typing notices (`m.typing`, who types now), public receipts (`m.receipt`; private ones
//! only of the service's own users) of interesting rooms, and the presence (`m.presence`)
//! of namespace users and of members of interesting rooms, in the transaction's
//! `ephemeral` and `de.sorunome.msc2409.ephemeral`. They are kept in memory only (at most
//! [`MAX_NOTES`] per service, the oldest dropped past it), like typing itself: a transaction
//! sent again after a restart carries its events but not its ephemeral events.
//!
//! **Events** are in the client format (as `/sync` shows them, for no particular viewer:
//! `room_id` included, `unsigned` with `age`, `prev_content`, `replaces_state`, and
//! `redacted_because` for an event already redacted).
//!
//! **Devices** (MSC4203 to-device messages for services that receive ephemeral events;
//! MSC3202 device-list changes and one-time key counts for services with
//! `org.matrix.msc3202`): see [`super::devices`]. To-device messages and device-list changes
//! are read from the stream range a transaction covers, so they are durable and in order
//! like its events. Key counts are of the devices of the service's users whose keys were
//! uploaded or claimed since the last transaction (noted in memory, like the ephemeral
//! events), of the service's sender and of the recipients of the transaction's to-device
//! messages; a change of keys alone makes a transaction.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use matrix_storage::{AppserviceCursor, ChangeSet, StreamPos};
use serde_json::{Value, json};

use super::devices::{self, MAX_TO_DEVICE, ToDevice};
use super::interest::Interest;
use super::{Appservice, Appservices, client::AppserviceClient};
use crate::error::ApiError;
use crate::services::ephemeral::Ephemeral;
use crate::services::presence::PresenceTracker;
use crate::services::rooms::Rooms;

/// The most events in one transaction (Synapse's limit).
pub(crate) const MAX_EVENTS: usize = 100;
/// The most ephemeral events in one transaction.
pub(crate) const MAX_EPHEMERAL: usize = 100;
/// The most ephemeral changes waiting per service (the oldest are dropped past it).
pub(crate) const MAX_NOTES: usize = 10_000;
/// The backoff after a first failure.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest backoff.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Stream events read per look.
const PAGE: usize = 500;
/// Stream events looked at before the cursor is saved (a service interested in nothing
/// still moves on).
const SCAN: usize = 5_000;
/// The rooms of a user whose presence changed that are looked at for interest.
const MAX_PRESENCE_ROOMS: usize = 1_000;

/// A change that is not a timeline event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// Who types in the room changed.
    Typing(String),
    /// A read receipt was set.
    Receipt {
        /// The room.
        room: String,
        /// The event read.
        event_id: String,
        /// Whose receipt.
        user: String,
        /// `m.read` or `m.read.private`.
        kind: String,
        /// Its thread, if any.
        thread: Option<String>,
        /// When.
        ts: u64,
    },
    /// The user's presence changed.
    Presence(String),
    /// The room's local aliases changed.
    Aliases(String),
    /// The user's one-time or fallback keys changed (an upload, a claim).
    Keys(String),
}

impl Note {
    /// Whether the service of `slot` takes the note.
    fn wanted_by(&self, slot: &Slot) -> bool {
        match self {
            Note::Aliases(_) => true,
            Note::Keys(_) => slot.msc3202,
            Note::Typing(_) | Note::Receipt { .. } | Note::Presence(_) => slot.ephemeral,
        }
    }
}

/// One service's inbox.
#[derive(Debug)]
struct Slot {
    /// The service's id.
    id: String,
    wake: tokio::sync::Notify,
    /// The service answered a ping: a backoff in progress ends now ([`Feed::answered`]).
    answered: tokio::sync::Notify,
    retry_now: std::sync::atomic::AtomicBool,
    ephemeral: bool,
    msc3202: bool,
    notes: Mutex<VecDeque<Note>>,
}

impl Slot {
    fn notes(&self) -> std::sync::MutexGuard<'_, VecDeque<Note>> {
        self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the services' tasks are told: every appended event, and the ephemeral changes.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    slots: Vec<Arc<Slot>>,
}

impl Feed {
    /// Something was written to the stream (an event, a to-device message, a device-list
    /// change; durable): the tasks look at it.
    pub(crate) fn stream_moved(&self) {
        for slot in &self.slots {
            slot.wake.notify_one();
        }
    }

    /// The service `id` answered a ping (`/appservice/{id}/ping`, which a bridge calls when
    /// it starts): it is up again, so a transaction waiting out a backoff is sent now rather
    /// than up to [`MAX_BACKOFF`] later.
    pub(crate) fn answered(&self, id: &str) {
        for slot in self.slots.iter().filter(|slot| slot.id == id) {
            slot.retry_now.store(true, std::sync::atomic::Ordering::Relaxed);
            slot.answered.notify_one();
        }
    }

    /// Notes a change for the services that take it.
    pub(crate) fn note(&self, note: &Note) {
        for slot in &self.slots {
            if !note.wanted_by(slot) {
                continue;
            }
            {
                let mut notes = slot.notes();
                notes.push_back(note.clone());
                while notes.len() > MAX_NOTES {
                    notes.pop_front();
                }
            }
            slot.wake.notify_one();
        }
    }
}

/// Starts a task per service with a `url`; the answer is the feed to tell them of changes.
pub(crate) fn start(
    appservices: &Appservices,
    rooms: &Arc<Rooms>,
    ephemeral: &Arc<Ephemeral>,
    presence: &Arc<PresenceTracker>,
    timeout: Duration,
) -> Arc<Feed> {
    let mut feed = Feed::default();
    for service in appservices.all() {
        if service.registration.url.is_none() {
            continue;
        }
        let slot = Arc::new(Slot {
            id: service.id().to_owned(),
            wake: tokio::sync::Notify::new(),
            answered: tokio::sync::Notify::new(),
            retry_now: std::sync::atomic::AtomicBool::new(false),
            ephemeral: service.registration.receives_ephemeral(),
            msc3202: service.registration.msc3202,
            notes: Mutex::new(VecDeque::new()),
        });
        feed.slots.push(slot.clone());
        let delivery = Delivery {
            service: service.clone(),
            client: appservices.client().clone(),
            rooms: Arc::downgrade(rooms),
            ephemeral: Arc::downgrade(ephemeral),
            presence: Arc::downgrade(presence),
            slot,
            timeout,
            interest: Interest::default(),
            pending: None,
        };
        tokio::spawn(delivery.run());
    }
    Arc::new(feed)
}

/// A transaction: its events, ephemeral events and device parts.
#[derive(Debug, Clone, Default)]
struct Batch {
    txn_id: u64,
    events: Vec<Value>,
    ephemeral: Vec<Value>,
    to_device: ToDevice,
    /// The users whose device lists changed (MSC3202).
    changed: Vec<String>,
    /// One-time key counts (MSC3202), user -> device -> algorithm -> count.
    key_counts: serde_json::Map<String, Value>,
    /// Unused fallback key types (MSC3202), user -> device -> algorithms.
    fallback_types: serde_json::Map<String, Value>,
}

impl Batch {
    /// Whether there is any news: events, ephemeral events, to-device messages, device
    /// list changes (key counts are added to news, or sent when keys changed).
    fn has_news(&self) -> bool {
        !(self.events.is_empty()
            && self.ephemeral.is_empty()
            && self.to_device.messages.is_empty()
            && self.changed.is_empty())
    }

    /// Whether there is nothing to send.
    fn is_empty(&self) -> bool {
        !self.has_news() && self.key_counts.is_empty() && self.fallback_types.is_empty()
    }
}

/// What a look at the notes found: ephemeral events, and the users whose keys changed.
#[derive(Debug, Default)]
struct Noted {
    ephemeral: Vec<Value>,
    keys: BTreeSet<String>,
}

/// What to do next.
enum Next {
    /// Look again now (more to read).
    Again,
    /// Nothing to send: wait for news.
    Idle,
    /// In backoff.
    Wait(Duration),
    /// Send this.
    Send(AppserviceCursor, Box<Batch>),
}

/// One service's delivery task.
struct Delivery {
    service: Arc<Appservice>,
    client: AppserviceClient,
    rooms: Weak<Rooms>,
    ephemeral: Weak<Ephemeral>,
    presence: Weak<PresenceTracker>,
    slot: Arc<Slot>,
    timeout: Duration,
    interest: Interest,
    /// The transaction in flight, as built (kept for its ephemeral events).
    pending: Option<Batch>,
}

fn now_ms() -> u64 {
    u64::try_from(crate::services::rooms::now_ms()).unwrap_or(0)
}

/// The backoff after `failures` failed tries.
pub(crate) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

impl Delivery {
    async fn run(mut self) {
        loop {
            let next = {
                let Some(rooms) = self.rooms.upgrade() else { return };
                self.next(&rooms).await
            };
            match next {
                Ok(Next::Again) => {}
                Ok(Next::Idle) => {
                    tokio::select! {
                        () = self.slot.wake.notified() => {}
                        () = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
                Ok(Next::Wait(wait)) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.slot.answered.notified() => {}
                    }
                }
                Ok(Next::Send(cursor, batch)) => {
                    let delivered = self.send(&batch).await;
                    let Some(rooms) = self.rooms.upgrade() else { return };
                    if let Err(error) = self.record(&rooms, cursor, *batch, delivered).await {
                        tracing::warn!("application service {:?}: {error:?}", self.service.id());
                        drop(rooms);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(error) => {
                    tracing::warn!("application service {:?}: {error:?}", self.service.id());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn save(&self, rooms: &Rooms, cursor: &AppserviceCursor) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        changes.appservice_cursors.push(cursor.clone());
        rooms.storage().apply(changes).await?;
        Ok(())
    }

    /// Whether the service takes to-device messages (as Synapse: the services that take
    /// ephemeral events).
    fn takes_to_device(&self) -> bool {
        self.service.registration.receives_ephemeral()
    }

    /// The transaction covering `(after, upto]` of the stream: its events (at most `limit`)
    /// and device parts, with the ephemeral events and key changes `noted`; the position
    /// it covers up to (below `upto` when a limit cut it short).
    async fn build(
        &mut self,
        rooms: &Rooms,
        txn_id: u64,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
        noted: Noted,
    ) -> Result<(Batch, StreamPos), ApiError> {
        let storage = rooms.storage();
        let (mut events, mut upto) = self.events(rooms, after, upto, limit).await?;
        let mut to_device = ToDevice::default();
        if self.takes_to_device() {
            let read_limit = if limit == usize::MAX { usize::MAX } else { MAX_TO_DEVICE };
            let (part, reached) =
                devices::to_device(storage.as_ref(), &self.service, after, upto, read_limit)
                    .await?;
            if reached < upto {
                upto = reached;
                events.retain(|(pos, _)| *pos <= reached);
            }
            to_device = part;
        }
        let mut batch = Batch {
            txn_id,
            events: events.into_iter().map(|(_, event)| event).collect(),
            ephemeral: noted.ephemeral,
            to_device,
            ..Batch::default()
        };
        if self.service.registration.msc3202 {
            for user in storage.device_list_changes(after, upto).await? {
                if self.user_interests(rooms, &user).await? {
                    batch.changed.push(user);
                }
            }
            if batch.has_news() || !noted.keys.is_empty() {
                let mut users: BTreeSet<String> = noted
                    .keys
                    .into_iter()
                    .filter(|user| self.service.is_interested_in_user(user))
                    .collect();
                users.insert(self.service.sender.to_string());
                for message in &batch.to_device.messages {
                    if let Some(user) = message["to_user_id"].as_str() {
                        users.insert(user.to_owned());
                    }
                }
                let (counts, fallback) = devices::key_counts(storage.as_ref(), &users).await?;
                batch.key_counts = counts;
                batch.fallback_types = fallback;
            }
        }
        Ok((batch, upto))
    }

    /// Reads the cursor and decides.
    async fn next(&mut self, rooms: &Rooms) -> Result<Next, ApiError> {
        let storage = rooms.storage();
        let mut cursor = match storage.appservice_cursor(self.service.id()).await? {
            Some(cursor) => cursor,
            None => {
                let cursor = AppserviceCursor {
                    appservice_id: self.service.id().to_owned(),
                    pos: storage.stream_position().await?,
                    txn_id: 1,
                    in_flight: None,
                    failures: 0,
                    retry_at: 0,
                };
                self.save(rooms, &cursor).await?;
                cursor
            }
        };
        let now = now_ms();
        if cursor.retry_at > now
            && !self.slot.retry_now.swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(Next::Wait(Duration::from_millis(cursor.retry_at - now)));
        }
        if let Some(upto) = cursor.in_flight {
            let batch = match self.pending.take() {
                Some(batch) if batch.txn_id == cursor.txn_id => batch,
                // After a restart: the same events, to-device messages and device-list
                // changes again (not the ephemeral events, nor the noted key changes).
                _ => {
                    let noted = Noted::default();
                    let (txn, from) = (cursor.txn_id, cursor.pos);
                    self.build(rooms, txn, from, upto, usize::MAX, noted).await?.0
                }
            };
            if batch.is_empty() {
                cursor.pos = upto;
                cursor.in_flight = None;
                cursor.txn_id += 1;
                cursor.failures = 0;
                self.save(rooms, &cursor).await?;
                return Ok(Next::Again);
            }
            return Ok(Next::Send(cursor, Box::new(batch)));
        }
        let noted = self.noted(rooms).await?;
        let head = storage.stream_position().await?;
        let (txn_id, from) = (cursor.txn_id, cursor.pos);
        let (batch, upto) = self.build(rooms, txn_id, from, head, MAX_EVENTS, noted).await?;
        if batch.is_empty() {
            if upto > cursor.pos {
                cursor.pos = upto;
                self.save(rooms, &cursor).await?;
                return Ok(Next::Again);
            }
            return Ok(if self.slot.notes().is_empty() { Next::Idle } else { Next::Again });
        }
        cursor.in_flight = Some(upto);
        self.save(rooms, &cursor).await?;
        Ok(Next::Send(cursor, Box::new(batch)))
    }

    /// The events of interest in `(after, upto]` with their positions, at most `limit`,
    /// with the last position looked at (`upto` when all of it was).
    async fn events(
        &mut self,
        rooms: &Rooms,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<(Vec<(StreamPos, Value)>, StreamPos), ApiError> {
        let storage = rooms.storage();
        let mut events = Vec::new();
        let mut from = after;
        let mut scanned = 0;
        while from < upto && scanned < SCAN.max(limit.saturating_mul(2)) {
            let items = storage.stream_range(from, upto, PAGE).await?;
            let complete = items.len() < PAGE;
            for item in &items {
                from = item.pos;
                scanned += 1;
                let Some(pdu) = rooms.pdu(&item.event_id).await? else { continue };
                if self.interest.event(rooms, &self.service, &item.room_id, &pdu).await? {
                    events.push((item.pos, rooms.show_plain(&pdu, None).await?));
                    if events.len() >= limit {
                        return Ok((events, from));
                    }
                }
            }
            if complete {
                from = upto;
            }
        }
        Ok((events, from))
    }

    /// The ephemeral events noted since the last transaction, of interest, and the users
    /// whose keys changed, at most [`MAX_EPHEMERAL`] notes taken.
    async fn noted(&mut self, rooms: &Rooms) -> Result<Noted, ApiError> {
        let notes: Vec<Note> = {
            let mut notes = self.slot.notes();
            let take = notes.len().min(MAX_EPHEMERAL);
            notes.drain(..take).collect()
        };
        let mut typing = BTreeSet::new();
        let mut receipts: BTreeMap<String, Value> = BTreeMap::new();
        let mut presence = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for note in notes {
            match note {
                Note::Aliases(room) => self.interest.forget(&room),
                Note::Keys(user) => {
                    keys.insert(user);
                }
                Note::Typing(room) => {
                    typing.insert(room);
                }
                Note::Receipt { room, event_id, user, kind, thread, ts } => {
                    if kind == "m.read.private" && !self.service.is_interested_in_user(&user) {
                        continue;
                    }
                    if !self.interest.room(rooms, &self.service, &room).await? {
                        continue;
                    }
                    let mut receipt = json!({"ts": ts});
                    if let Some(thread) = thread {
                        receipt["thread_id"] = json!(thread);
                    }
                    let content = receipts.entry(room).or_insert_with(|| json!({}));
                    content[&event_id][&kind][&user] = receipt;
                }
                Note::Presence(user) => {
                    presence.insert(user);
                }
            }
        }
        let mut out = Vec::new();
        if let Some(ephemeral) = self.ephemeral.upgrade() {
            for room in typing {
                if !self.interest.room(rooms, &self.service, &room).await? {
                    continue;
                }
                let users = ephemeral.typing_since(&room, 0).unwrap_or_default();
                out.push(
                    json!({"type": "m.typing", "room_id": room, "content": {"user_ids": users}}),
                );
            }
        }
        for (room, content) in receipts {
            out.push(json!({"type": "m.receipt", "room_id": room, "content": content}));
        }
        let mut wanted = Vec::new();
        for user in presence {
            if self.user_interests(rooms, &user).await? {
                wanted.push(user);
            }
        }
        if !wanted.is_empty()
            && let Some(tracker) = self.presence.upgrade()
        {
            out.extend(tracker.events_of(&wanted).await?);
        }
        Ok(Noted { ephemeral: out, keys })
    }

    /// Whether the presence or the device list of `user` interests the service: a namespace
    /// user, or a member of an interesting room (as Synapse decides both).
    async fn user_interests(&mut self, rooms: &Rooms, user: &str) -> Result<bool, ApiError> {
        if self.service.is_interested_in_user(user) {
            return Ok(true);
        }
        let theirs = rooms.storage().rooms_of_user(user).await?;
        for (room, membership) in theirs.iter().take(MAX_PRESENCE_ROOMS) {
            if membership == "join" && self.interest.room(rooms, &self.service, room).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `PUT`s the transaction: whether the service took it.
    async fn send(&self, batch: &Batch) -> bool {
        let mut body = json!({"events": batch.events});
        let registration = &self.service.registration;
        if registration.receives_ephemeral() {
            body["ephemeral"] = json!(batch.ephemeral);
            body["de.sorunome.msc2409.ephemeral"] = json!(batch.ephemeral);
        }
        if self.takes_to_device() {
            body["de.sorunome.msc2409.to_device"] = json!(batch.to_device.messages);
        }
        if registration.msc3202 {
            if !batch.key_counts.is_empty() {
                let counts = Value::Object(batch.key_counts.clone());
                body["org.matrix.msc3202.device_one_time_keys_count"] = counts.clone();
                body["org.matrix.msc3202.device_one_time_key_counts"] = counts;
            }
            if !batch.fallback_types.is_empty() {
                body["org.matrix.msc3202.device_unused_fallback_key_types"] =
                    Value::Object(batch.fallback_types.clone());
            }
            if !batch.changed.is_empty() {
                // Synapse does not work out `left` either.
                body["org.matrix.msc3202.device_lists"] =
                    json!({"changed": batch.changed, "left": []});
            }
        }
        let path = format!("/_matrix/app/v1/transactions/{}", batch.txn_id);
        let call = self.client.call(&self.service, reqwest::Method::PUT, &path, Some(&body));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::warn!(
                    "application service {:?}: transaction {} not taken: {error}",
                    self.service.id(),
                    batch.txn_id
                );
                false
            }
            Err(_) => {
                tracing::warn!(
                    "application service {:?}: transaction {} timed out",
                    self.service.id(),
                    batch.txn_id
                );
                false
            }
        }
    }

    /// Moves the cursor past a delivered transaction (and deletes the to-device messages
    /// the service consumed, in the same change set), or sets the backoff.
    async fn record(
        &mut self,
        rooms: &Rooms,
        mut cursor: AppserviceCursor,
        batch: Batch,
        delivered: bool,
    ) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        if delivered {
            cursor.pos = cursor.in_flight.take().unwrap_or(cursor.pos);
            cursor.txn_id += 1;
            cursor.failures = 0;
            cursor.retry_at = 0;
            // A ping answered while nothing waited must not cut a later backoff short.
            self.slot.retry_now.store(false, std::sync::atomic::Ordering::Relaxed);
            for (user, device) in batch.to_device.consumed {
                changes.to_device_delivered.push((user, device, cursor.pos));
            }
        } else {
            cursor.failures = cursor.failures.saturating_add(1);
            let wait = u64::try_from(backoff(cursor.failures).as_millis()).unwrap_or(u64::MAX);
            cursor.retry_at = now_ms().saturating_add(wait);
            self.pending = Some(batch);
        }
        changes.appservice_cursors.push(cursor);
        rooms.storage().apply(changes).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(5), FIRST_BACKOFF * 16);
        assert_eq!(backoff(11), FIRST_BACKOFF * 1024);
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn ephemeral_notes_go_only_where_wanted_and_are_bounded() {
        let slot = |ephemeral, msc3202| {
            Arc::new(Slot {
                id: "bridge".to_owned(),
                wake: tokio::sync::Notify::new(),
                answered: tokio::sync::Notify::new(),
                retry_now: std::sync::atomic::AtomicBool::new(false),
                ephemeral,
                msc3202,
                notes: Mutex::new(VecDeque::new()),
            })
        };
        let feed = Feed { slots: vec![slot(true, false), slot(false, false), slot(false, true)] };
        feed.note(&Note::Keys("@ghost:x".to_owned()));
        for i in 0..MAX_NOTES + 5 {
            feed.note(&Note::Presence(format!("@u{i}:x")));
        }
        feed.note(&Note::Aliases("!r:x".to_owned()));
        // Key changes go to MSC3202 services only.
        let keys = feed.slots[2].notes();
        assert_eq!(
            keys.iter().cloned().collect::<Vec<_>>(),
            vec![Note::Keys("@ghost:x".to_owned()), Note::Aliases("!r:x".to_owned())]
        );
        drop(keys);
        let wanting = feed.slots[0].notes();
        assert_eq!(wanting.len(), MAX_NOTES);
        assert_eq!(wanting.back(), Some(&Note::Aliases("!r:x".to_owned())));
        assert_eq!(wanting.front(), Some(&Note::Presence("@u6:x".to_owned())));
        let other = feed.slots[1].notes();
        assert_eq!(
            other.iter().cloned().collect::<Vec<_>>(),
            vec![Note::Aliases("!r:x".to_owned())]
        );
    }
}
