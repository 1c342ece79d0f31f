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
//! Not yet: MSC3202/MSC4203 (to-device messages, device list changes and one-time key counts
//! for services with `org.matrix.msc3202`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use matrix_storage::{AppserviceCursor, ChangeSet, StreamPos};
use serde_json::{Value, json};

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
}

impl Note {
    fn is_ephemeral(&self) -> bool {
        !matches!(self, Note::Aliases(_))
    }
}

/// One service's inbox.
#[derive(Debug)]
struct Slot {
    wake: tokio::sync::Notify,
    ephemeral: bool,
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
    /// An event was appended (it is durable): the tasks look at the stream.
    pub(crate) fn event_appended(&self) {
        for slot in &self.slots {
            slot.wake.notify_one();
        }
    }

    /// Notes a change for the services that take it.
    pub(crate) fn note(&self, note: &Note) {
        for slot in &self.slots {
            if note.is_ephemeral() && !slot.ephemeral {
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
            wake: tokio::sync::Notify::new(),
            ephemeral: service.registration.receives_ephemeral(),
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

/// A transaction: its events and ephemeral events.
#[derive(Debug, Clone)]
struct Batch {
    txn_id: u64,
    events: Vec<Value>,
    ephemeral: Vec<Value>,
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
    Send(AppserviceCursor, Batch),
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
                Ok(Next::Wait(wait)) => tokio::time::sleep(wait).await,
                Ok(Next::Send(cursor, batch)) => {
                    let delivered = self.send(&batch).await;
                    let Some(rooms) = self.rooms.upgrade() else { return };
                    if let Err(error) = self.record(&rooms, cursor, batch, delivered).await {
                        eprintln!("application service {:?}: {error:?}", self.service.id());
                        drop(rooms);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(error) => {
                    eprintln!("application service {:?}: {error:?}", self.service.id());
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
        if cursor.retry_at > now {
            return Ok(Next::Wait(Duration::from_millis(cursor.retry_at - now)));
        }
        if let Some(upto) = cursor.in_flight {
            let batch = match self.pending.take() {
                Some(batch) if batch.txn_id == cursor.txn_id => batch,
                // After a restart: the same events again (not the ephemeral ones).
                _ => {
                    let (events, _) = self.events(rooms, cursor.pos, upto, usize::MAX).await?;
                    Batch { txn_id: cursor.txn_id, events, ephemeral: Vec::new() }
                }
            };
            if batch.events.is_empty() && batch.ephemeral.is_empty() {
                cursor.pos = upto;
                cursor.in_flight = None;
                cursor.txn_id += 1;
                cursor.failures = 0;
                self.save(rooms, &cursor).await?;
                return Ok(Next::Again);
            }
            return Ok(Next::Send(cursor, batch));
        }
        let ephemeral = self.ephemeral_events(rooms).await?;
        let head = storage.stream_position().await?;
        let (events, upto) = self.events(rooms, cursor.pos, head, MAX_EVENTS).await?;
        if events.is_empty() && ephemeral.is_empty() {
            if upto > cursor.pos {
                cursor.pos = upto;
                self.save(rooms, &cursor).await?;
                return Ok(Next::Again);
            }
            return Ok(if self.slot.notes().is_empty() { Next::Idle } else { Next::Again });
        }
        cursor.in_flight = Some(upto);
        self.save(rooms, &cursor).await?;
        let txn_id = cursor.txn_id;
        Ok(Next::Send(cursor, Batch { txn_id, events, ephemeral }))
    }

    /// The events of interest in `(after, upto]`, at most `limit`, with the last position
    /// looked at (`upto` when all of it was).
    async fn events(
        &mut self,
        rooms: &Rooms,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<(Vec<Value>, StreamPos), ApiError> {
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
                    events.push(rooms.show_plain(&pdu, None).await?);
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

    /// The ephemeral events noted since the last transaction, of interest, at most
    /// [`MAX_EPHEMERAL`] changes taken.
    async fn ephemeral_events(&mut self, rooms: &Rooms) -> Result<Vec<Value>, ApiError> {
        let notes: Vec<Note> = {
            let mut notes = self.slot.notes();
            let take = notes.len().min(MAX_EPHEMERAL);
            notes.drain(..take).collect()
        };
        let mut typing = BTreeSet::new();
        let mut receipts: BTreeMap<String, Value> = BTreeMap::new();
        let mut presence = BTreeSet::new();
        for note in notes {
            match note {
                Note::Aliases(room) => self.interest.forget(&room),
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
            if self.presence_interests(rooms, &user).await? {
                wanted.push(user);
            }
        }
        if !wanted.is_empty()
            && let Some(tracker) = self.presence.upgrade()
        {
            out.extend(tracker.events_of(&wanted).await?);
        }
        Ok(out)
    }

    /// Whether the presence of `user` interests the service: a namespace user, or a member
    /// of an interesting room.
    async fn presence_interests(&mut self, rooms: &Rooms, user: &str) -> Result<bool, ApiError> {
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
        if self.service.registration.receives_ephemeral() {
            body["ephemeral"] = json!(batch.ephemeral);
            body["de.sorunome.msc2409.ephemeral"] = json!(batch.ephemeral);
        }
        let path = format!("/_matrix/app/v1/transactions/{}", batch.txn_id);
        let call = self.client.call(&self.service, reqwest::Method::PUT, &path, Some(&body));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                eprintln!(
                    "application service {:?}: transaction {} not taken: {error}",
                    self.service.id(),
                    batch.txn_id
                );
                false
            }
            Err(_) => {
                eprintln!(
                    "application service {:?}: transaction {} timed out",
                    self.service.id(),
                    batch.txn_id
                );
                false
            }
        }
    }

    /// Moves the cursor past a delivered transaction, or sets the backoff.
    async fn record(
        &mut self,
        rooms: &Rooms,
        mut cursor: AppserviceCursor,
        batch: Batch,
        delivered: bool,
    ) -> Result<(), ApiError> {
        if delivered {
            cursor.pos = cursor.in_flight.take().unwrap_or(cursor.pos);
            cursor.txn_id += 1;
            cursor.failures = 0;
            cursor.retry_at = 0;
        } else {
            cursor.failures = cursor.failures.saturating_add(1);
            let wait = u64::try_from(backoff(cursor.failures).as_millis()).unwrap_or(u64::MAX);
            cursor.retry_at = now_ms().saturating_add(wait);
            self.pending = Some(batch);
        }
        self.save(rooms, &cursor).await
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
        let slot = |ephemeral| {
            Arc::new(Slot {
                wake: tokio::sync::Notify::new(),
                ephemeral,
                notes: Mutex::new(VecDeque::new()),
            })
        };
        let feed = Feed { slots: vec![slot(true), slot(false)] };
        for i in 0..MAX_NOTES + 5 {
            feed.note(&Note::Presence(format!("@u{i}:x")));
        }
        feed.note(&Note::Aliases("!r:x".to_owned()));
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
