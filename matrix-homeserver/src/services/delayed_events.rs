//! Delayed events (MSC4140): events a user schedules to be sent later, kept in storage until
//! they are sent or cancelled, and sent by one task of their own at their time.
//!
//! Scheduling checks what can be checked then (the delay within `max_delay_ms`, the user's
//! count within `max_per_user`, the user joined to the room, the content valid JSON for the
//! room's version); power levels are the room's when the event is sent, with the user's
//! authority then ([`Rooms::append_recording`]): an event no longer allowed (the user left,
//! lost the power, was deactivated) is dropped quietly, as the MSC asks.
//!
//! Each event is sent exactly once, also across a crash: it is appended with a transaction id
//! named after its `delay_id` in the same change set as the event, and its record deleted
//! after; a record found again after a restart whose transaction id is stored was sent
//! already and is only deleted. At start, events whose time passed while the server was down
//! are sent at once, in the order of their send times.
//!
//! One process sends (several processes on one PostgreSQL database would each send what is
//! due; the transaction id keeps that to once per event, not to one process).

use std::sync::{Arc, Weak};
use std::time::Duration;

use matrix_storage::{ChangeSet, DelayedEvent, ErrorKind, Storage, TransactionId};
use ruma::UserId;

use super::rooms::{Draft, Rooms, parse_content};
use crate::config::DelayedEventsConfig;
use crate::error::ApiError;

/// How many due events the sender reads at once.
const BATCH: usize = 32;
/// The longest the sender sleeps without looking at storage again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What a client asks to schedule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule<'a> {
    pub(crate) room_id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) state_key: Option<&'a str>,
    pub(crate) content: &'a [u8],
    pub(crate) delay_ms: u64,
    /// For `/send`: the client's transaction id (a retry answers the first `delay_id`).
    pub(crate) txn_id: Option<&'a str>,
}

/// What a client may do with a scheduled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send it now.
    Send,
    /// Never send it.
    Cancel,
    /// Count its delay again from now.
    Restart,
}

impl Action {
    pub(crate) fn parse(name: &str) -> Result<Self, ApiError> {
        match name {
            "send" => Ok(Action::Send),
            "cancel" => Ok(Action::Cancel),
            "restart" => Ok(Action::Restart),
            other => Err(ApiError::invalid_param(format!(
                "unknown action {other:?}: one of \"send\", \"cancel\", \"restart\""
            ))),
        }
    }
}

/// The delayed events service and its sender task.
pub(crate) struct DelayedEvents {
    storage: Arc<dyn Storage>,
    rooms: Arc<Rooms>,
    config: DelayedEventsConfig,
    /// Wakes the sender when a send time may have moved earlier.
    wake: Arc<tokio::sync::Notify>,
    /// Serialises this process's scheduling (the per-user count) and sending (so that an
    /// event is not sent by the timer and an action at once).
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DelayedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedEvents").field("config", &self.config).finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(super::rooms::now_ms()).unwrap_or(0)
}

/// The transaction id an event sent for `delay_id` is recorded under.
fn sent_record(event: &DelayedEvent) -> TransactionId {
    TransactionId {
        user_id: event.user_id.clone(),
        device_id: event.device_id.clone(),
        scope: format!("{}/delayed", event.room_id),
        txn_id: event.delay_id.clone(),
        result: String::new(),
    }
}

impl DelayedEvents {
    /// The service, with its sender running (it stops when the service is dropped).
    pub(crate) fn start(
        storage: Arc<dyn Storage>,
        rooms: Arc<Rooms>,
        config: DelayedEventsConfig,
    ) -> Arc<Self> {
        let service = Arc::new(DelayedEvents {
            storage,
            rooms,
            config,
            wake: Arc::new(tokio::sync::Notify::new()),
            lock: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(sender(Arc::downgrade(&service)));
        service
    }

    /// The bounds, as the `org.matrix.msc4140.delayed_events` capability says them.
    pub(crate) fn config(&self) -> &DelayedEventsConfig {
        &self.config
    }

    /// Schedules an event; answers its `delay_id`.
    pub(crate) async fn schedule(
        &self,
        user: &UserId,
        device: &str,
        request: Schedule<'_>,
    ) -> Result<String, ApiError> {
        if !self.config.enabled() {
            return Err(ApiError::forbidden("delayed events are disabled on this server"));
        }
        if request.delay_ms == 0 {
            return Err(ApiError::invalid_param("the delay must be at least 1 ms"));
        }
        if request.delay_ms > self.config.max_delay_ms {
            return Err(ApiError::forbidden(format!(
                "the requested delay ({} ms) exceeds the allowed maximum ({} ms)",
                request.delay_ms, self.config.max_delay_ms
            )));
        }
        let room_id = request.room_id;
        let rules = self
            .rooms
            .rules(room_id)
            .await?
            .ok_or_else(|| ApiError::forbidden("you are not in this room"))?;
        if self.storage.membership(room_id, user.as_str()).await?.as_deref() != Some("join") {
            return Err(ApiError::forbidden("you are not in this room"));
        }
        parse_content(request.content, rules)?;
        let txn = request.txn_id.map(|txn| TransactionId {
            user_id: user.to_string(),
            device_id: device.to_owned(),
            scope: format!("{room_id}/send/{}?delayed", request.kind),
            txn_id: txn.to_owned(),
            result: String::new(),
        });
        let _guard = self.lock.lock().await;
        if let Some(txn) = &txn
            && let Some(delay_id) = self.recorded(txn).await?
        {
            return Ok(delay_id);
        }
        let pending = self.storage.delayed_events_of(user.as_str()).await?;
        if pending.len() >= self.config.max_per_user {
            let now = now_ms();
            let next = pending.iter().map(DelayedEvent::send_ts).min().unwrap_or(now);
            return Err(ApiError::limit_exceeded_with(
                next.saturating_sub(now).max(1),
                "the maximum number of delayed events has been reached",
            ));
        }
        let delay_id = format!(
            "syd_{}",
            super::accounts::random_string(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                20
            )?
        );
        let event = DelayedEvent {
            user_id: user.to_string(),
            delay_id: delay_id.clone(),
            device_id: device.to_owned(),
            room_id: room_id.to_owned(),
            kind: request.kind.to_owned(),
            state_key: request.state_key.map(str::to_owned),
            content: request.content.to_vec(),
            delay_ms: request.delay_ms,
            scheduled_at: now_ms(),
        };
        let mut changes = ChangeSet::new();
        changes.delayed_events.push(event);
        if let Some(mut txn) = txn.clone() {
            txn.result = delay_id.clone();
            changes.transaction_ids.push(txn);
        }
        match self.storage.apply(changes).await {
            Ok(_) => {}
            // Another process took the transaction id first: its delay id is the answer.
            Err(error) if error.kind() == ErrorKind::Conflict => {
                if let Some(txn) = &txn
                    && let Some(delay_id) = self.recorded(txn).await?
                {
                    return Ok(delay_id);
                }
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        }
        self.wake.notify_one();
        Ok(delay_id)
    }

    async fn recorded(&self, txn: &TransactionId) -> Result<Option<String>, ApiError> {
        let TransactionId { user_id, device_id, scope, txn_id, .. } = txn;
        Ok(self.storage.transaction_id(user_id, device_id, scope, txn_id).await?)
    }

    /// A user's scheduled events, by send time.
    pub(crate) async fn list(&self, user: &UserId) -> Result<Vec<DelayedEvent>, ApiError> {
        Ok(self.storage.delayed_events_of(user.as_str()).await?)
    }

    /// Sends, cancels or restarts one of the user's scheduled events (404 `M_NOT_FOUND` for
    /// one the user does not have: never scheduled, sent, cancelled, or another user's).
    pub(crate) async fn act(
        &self,
        user: &UserId,
        delay_id: &str,
        action: Action,
    ) -> Result<(), ApiError> {
        let _guard = self.lock.lock().await;
        let event = self
            .storage
            .delayed_event(user.as_str(), delay_id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such delayed event"))?;
        match action {
            Action::Cancel => {
                let mut changes = ChangeSet::new();
                changes.deleted_delayed_events.push((event.user_id, event.delay_id));
                self.storage.apply(changes).await?;
            }
            Action::Restart => {
                let mut changes = ChangeSet::new();
                changes.delayed_events.push(DelayedEvent { scheduled_at: now_ms(), ..event });
                self.storage.apply(changes).await?;
                self.wake.notify_one();
            }
            // Sent now, and its error answered (the record is kept then, for a retry or its
            // own time, as the MSC suggests).
            Action::Send => self.send(&event).await?,
        }
        Ok(())
    }

    /// Sends an event (under the lock) and deletes its record; an error leaves the record.
    async fn send(&self, event: &DelayedEvent) -> Result<(), ApiError> {
        let record = sent_record(event);
        let TransactionId { user_id, device_id, scope, txn_id, .. } = &record;
        let sent = self.storage.transaction_id(user_id, device_id, scope, txn_id).await?;
        if sent.is_none() {
            let user = UserId::parse(event.user_id.as_str())
                .map_err(|e| ApiError::unknown(format!("a stored user id: {e}")))?;
            let stored = self.storage.user(user.as_str()).await?;
            if stored.is_none_or(|u| u.deactivated) {
                return Err(ApiError::forbidden("the user is deactivated"));
            }
            let rules =
                self.rooms.rules(&event.room_id).await?.ok_or_else(ApiError::room_not_found)?;
            let content = parse_content(&event.content, rules)?;
            let draft = match &event.state_key {
                Some(key) => Draft::state(&event.kind, key, content),
                None => Draft::message(&event.kind, content),
            };
            match self
                .rooms
                .append_recording(&event.room_id, &user, draft, Some(record.clone()), None)
                .await
            {
                Ok(_) => {}
                Err(error) => {
                    // Another process sent it meanwhile (its transaction id is stored).
                    let sent =
                        self.storage.transaction_id(user_id, device_id, scope, txn_id).await?;
                    if sent.is_none() {
                        return Err(error);
                    }
                }
            }
        }
        let mut changes = ChangeSet::new();
        changes.deleted_delayed_events.push((event.user_id.clone(), event.delay_id.clone()));
        self.storage.apply(changes).await?;
        Ok(())
    }

    /// Sends what is due; answers when to look again.
    async fn send_due(&self) -> Result<Duration, ApiError> {
        loop {
            let next = self.storage.next_delayed_events(BATCH).await?;
            let now = now_ms();
            let due: Vec<&DelayedEvent> = next.iter().filter(|e| e.send_ts() <= now).collect();
            if due.is_empty() {
                let wait = next.first().map_or(MAX_SLEEP, |e| {
                    Duration::from_millis(e.send_ts().saturating_sub(now)).min(MAX_SLEEP)
                });
                return Ok(wait);
            }
            for event in due {
                let _guard = self.lock.lock().await;
                // Restarted or cancelled meanwhile: read again under the lock.
                let Some(current) =
                    self.storage.delayed_event(&event.user_id, &event.delay_id).await?
                else {
                    continue;
                };
                if current.send_ts() > now_ms() {
                    continue;
                }
                if let Err(error) = self.send(&current).await {
                    let status = error.status();
                    if status.is_server_error() || status.as_u16() == 429 {
                        // Storage trouble, a busy room: try again later rather than lose it.
                        return Err(error);
                    }
                    // No longer allowed (or no longer valid): dropped quietly.
                    tracing::warn!(
                        "delayed event {} of {} not sent: {error}",
                        current.delay_id,
                        current.user_id
                    );
                    let mut changes = ChangeSet::new();
                    changes.deleted_delayed_events.push((current.user_id, current.delay_id));
                    self.storage.apply(changes).await?;
                }
            }
        }
    }
}

/// The sender: sends what is due, then sleeps until the next send time or a wake-up.
async fn sender(service: Weak<DelayedEvents>) {
    loop {
        let Some(me) = service.upgrade() else { return };
        let wait = match me.send_due().await {
            Ok(wait) => wait,
            Err(error) => {
                tracing::warn!("delayed events: {error}; trying again in a second");
                Duration::from_secs(1)
            }
        };
        // Not holding the service while asleep: dropping the server ends the task.
        let wake = me.wake.clone();
        drop(me);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}
