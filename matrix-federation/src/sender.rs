//! The outbound sender: PDUs and EDUs queued per destination in storage, sent as transactions.
//!
//! - **Durable.** Items are queued in storage ([`matrix_storage::ChangeSet::enqueue`], with the
//!   encoding of [`Outbound::to_payload`]), by the caller in the change set that stores what
//!   they are about (an event and its fan-out commit together), or through
//!   [`Sender::enqueue`]. They are acknowledged (deleted) only after the destination answered
//!   `200` to the `/send` that carried them. [`Sender::start`] resumes every destination with
//!   items left.
//! - **One transaction in flight per destination**, one worker task per destination with
//!   items, at most [`SenderOptions::max_active_destinations`] of them sending at once. A
//!   transaction is a prefix of the queue with at most 50 PDUs and 100 EDUs; only that batch
//!   is ever in memory (a destination that waits keeps only the id where its batch ended).
//! - **Transaction ids** are `{first}-{last}`, the queue ids of the batch's first and last
//!   items: queue ids are never reused, so an id is unique per destination, and a retried batch
//!   (also after a restart, when nothing was queued since) has the same id, so the receiver
//!   deduplicates it.
//! - **Backoff.** A failed send waits [`SenderOptions::initial_backoff`], doubling per
//!   consecutive failure up to [`SenderOptions::max_backoff`]; the failure count and the time
//!   to retry at are stored ([`matrix_storage::RetryState`]), so a restart keeps them.
//!   [`Sender::wake`] retries now (call it when the destination contacts us). Every failure
//!   (unreachable, an error status, storage) backs off; nothing is ever dropped.
//! - **Per-PDU errors** in a `200` answer are not retried: they are the receiver's verdict on
//!   the event; they are counted ([`SenderCounts::refused_pdus`]).
//! - **Ephemeral EDUs** (typing notices) go through [`Sender::send_ephemeral`]: kept in memory
//!   only, at most [`SenderOptions::max_ephemeral_per_destination`] per destination (the
//!   oldest is dropped), sent with the next transaction and lost on a restart, which is what
//!   the spec allows for typing (it expires within seconds anyway).
//!
//! One sender per store: two processes sending the same queues would send items twice.

mod batch;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use matrix_core::json::Object;
use matrix_storage::{ChangeSet, RetryState, Storage};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use batch::{Batch, refused_pdus};
pub use batch::{MAX_EDUS, MAX_PDUS, Outbound};

use crate::FederationError;

/// Where transactions go: `PUT /_matrix/federation/v1/send/{txn_id}` on `destination`, signed.
/// The federation client implements it; tests use fakes.
#[async_trait]
pub trait TransactionSink: Send + Sync {
    /// Sends one transaction and returns the body of the `200` answer (`{"pdus": {...}}`).
    /// Any other outcome (unreachable, another status, a body that is not JSON) is an `Err`.
    async fn send_transaction(
        &self,
        destination: &str,
        txn_id: &str,
        body: &Object,
    ) -> Result<Object, FederationError>;
}

/// How the sender behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SenderOptions {
    /// This server's name: the transactions' `origin`.
    pub origin: String,
    /// At most this many destinations send at once (the others wait their turn).
    pub max_active_destinations: usize,
    /// The wait after a first failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// At most this many ephemeral EDUs wait per destination.
    pub max_ephemeral_per_destination: usize,
}

impl SenderOptions {
    /// Defaults for `origin`: 64 destinations at once, backoff from 1 s doubling to 1 h, 100
    /// ephemeral EDUs per destination.
    pub fn new(origin: impl Into<String>) -> Self {
        SenderOptions {
            origin: origin.into(),
            max_active_destinations: 64,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            max_ephemeral_per_destination: MAX_EDUS,
        }
    }

    /// The wait after `failures` consecutive failures (at least 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// What the sender did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SenderCounts {
    /// Transactions answered `200`.
    pub transactions: u64,
    /// Attempts that failed (and were retried later).
    pub failures: u64,
    /// PDUs the receivers answered with an error (not retried).
    pub refused_pdus: u64,
    /// Queued items that did not decode (acknowledged without being sent).
    pub undecodable: u64,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    failures: AtomicU64,
    refused_pdus: AtomicU64,
    undecodable: AtomicU64,
}

/// What a destination's worker is told.
#[derive(Debug, Default)]
struct Signal {
    /// Items were queued (or ephemeral EDUs added) since the worker last read its queue.
    more: AtomicBool,
    /// Retry now: cuts a backoff wait.
    wake: Notify,
    /// Ephemeral EDUs, oldest first.
    ephemeral: Mutex<VecDeque<Object>>,
    /// Consecutive failed attempts (0 while sends succeed), for [`Sender::destinations`].
    failures: AtomicU32,
}

struct Shared {
    storage: Arc<dyn Storage>,
    sink: Arc<dyn TransactionSink>,
    options: SenderOptions,
    active: Semaphore,
    /// The destinations with a worker. A worker removes itself, under this lock, only when
    /// its queue is empty and nothing was signalled since it read it.
    workers: Mutex<HashMap<String, Arc<Signal>>>,
    tasks: Mutex<JoinSet<()>>,
    counters: Counters,
    /// For the ids of transactions of ephemeral EDUs alone: the start time and a counter.
    started_ms: i64,
    ephemeral_txns: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The outbound sender. Dropping it stops its workers (what is queued stays queued).
pub struct Sender {
    shared: Arc<Shared>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("options", &self.shared.options)
            .field("destinations", &lock(&self.shared.workers).len())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Starts sending: a worker for every destination with queued items (each first waits out
    /// the backoff its stored retry state says). Must be called within a tokio runtime.
    pub async fn start(
        storage: Arc<dyn Storage>,
        sink: Arc<dyn TransactionSink>,
        options: SenderOptions,
    ) -> Result<Self, FederationError> {
        let destinations = storage.outbound_destinations().await?;
        let shared = Arc::new(Shared {
            storage,
            sink,
            active: Semaphore::new(options.max_active_destinations.max(1)),
            options,
            workers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            counters: Counters::default(),
            started_ms: crate::now_ms(),
            ephemeral_txns: AtomicU64::new(0),
        });
        let sender = Sender { shared };
        for destination in destinations {
            sender.signal(&destination, |_| {});
        }
        Ok(sender)
    }

    /// Queues `items` (`(destination, item)`) in one change set, then tells their workers.
    pub async fn enqueue(&self, items: Vec<(String, Outbound)>) -> Result<(), FederationError> {
        let mut changes = ChangeSet::new();
        changes.enqueue = items
            .iter()
            .map(|(destination, item)| (destination.clone(), item.to_payload()))
            .collect();
        self.shared.storage.apply(changes).await?;
        let mut destinations: Vec<&str> = items.iter().map(|(d, _)| d.as_str()).collect();
        destinations.sort_unstable();
        destinations.dedup();
        for destination in destinations {
            self.notify(destination);
        }
        Ok(())
    }

    /// Says that items for `destination` were queued (by a change set the caller applied).
    pub fn notify(&self, destination: &str) {
        self.signal(destination, |_| {});
    }

    /// Retries `destination` now, without waiting out its backoff (it just contacted us).
    pub fn wake(&self, destination: &str) {
        self.signal(destination, |signal| signal.wake.notify_one());
    }

    /// Sends an EDU that is not worth storing (`m.typing`) with the next transaction to
    /// `destination`; see the module docs.
    pub fn send_ephemeral(&self, destination: &str, edu: Object) {
        let max = self.shared.options.max_ephemeral_per_destination;
        self.signal(destination, |signal| {
            let mut queue = lock(&signal.ephemeral);
            while max > 0 && queue.len() >= max {
                queue.pop_front();
            }
            if max > 0 {
                queue.push_back(edu);
            }
        });
    }

    /// The options it runs with (its backoff, for a reader of stored retry states).
    pub fn options(&self) -> &SenderOptions {
        &self.shared.options
    }

    /// What the sender did so far.
    pub fn counts(&self) -> SenderCounts {
        let c = &self.shared.counters;
        SenderCounts {
            transactions: c.transactions.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            refused_pdus: c.refused_pdus.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
        }
    }

    /// The destinations with something to send (a worker), each with its consecutive failed
    /// attempts: what a metrics scrape reports of the queue.
    pub fn destinations(&self) -> Vec<(String, u32)> {
        lock(&self.shared.workers)
            .iter()
            .map(|(name, signal)| (name.clone(), signal.failures.load(Ordering::Relaxed)))
            .collect()
    }

    /// Stops every worker and waits until they are gone (an attempt in progress is abandoned:
    /// its items stay queued).
    pub async fn stop(self) {
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// Marks `destination` as having something to do, applies `also` to its signal, and
    /// starts its worker if it has none.
    fn signal(&self, destination: &str, also: impl FnOnce(&Signal)) {
        let mut workers = lock(&self.shared.workers);
        if let Some(signal) = workers.get(destination) {
            signal.more.store(true, Ordering::SeqCst);
            also(signal);
            return;
        }
        let signal = Arc::new(Signal::default());
        also(&signal);
        workers.insert(destination.to_owned(), signal.clone());
        drop(workers);
        let mut tasks = lock(&self.shared.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run(self.shared.clone(), destination.to_owned(), signal));
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        lock(&self.shared.tasks).abort_all();
    }
}

/// How long until `retry_after_ts`, if it is in the future.
fn until(retry_after_ts: i64) -> Option<Duration> {
    let ms = retry_after_ts.saturating_sub(crate::now_ms());
    u64::try_from(ms).ok().filter(|&ms| ms > 0).map(Duration::from_millis)
}

/// Waits `delay`, or less if the destination is woken.
async fn wait(signal: &Signal, delay: Duration) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = signal.wake.notified() => {}
    }
}

/// A batch that failed, to be sent again as it was: where it ended in the queue and its
/// ephemeral EDUs.
#[derive(Debug, Default)]
struct Unsent {
    upto: Option<u64>,
    ephemeral: Vec<Object>,
    txn_id: String,
}

/// One destination's worker: sends its queue, a batch at a time, until it is empty.
async fn run(shared: Arc<Shared>, destination: String, signal: Arc<Signal>) {
    let stored = shared.storage.retry(&destination).await.ok().flatten();
    let mut failures = stored.map_or(0, |r| r.failures);
    signal.failures.store(failures, Ordering::Relaxed);
    let mut delay = stored.and_then(|r| until(r.retry_after_ts));
    let mut unsent: Option<Unsent> = None;
    loop {
        if let Some(delay) = delay.take() {
            wait(&signal, delay).await;
        }
        let Ok(_permit) = shared.active.acquire().await else { return };
        signal.more.store(false, Ordering::SeqCst);
        let items = match shared.storage.outbound(&destination, MAX_PDUS + MAX_EDUS).await {
            Ok(items) => items,
            Err(_) => {
                failures = failures.saturating_add(1);
                delay = Some(shared.options.backoff(failures));
                continue;
            }
        };
        let mut batch = match unsent.as_ref().map(|u| u.upto) {
            // A failed transaction of ephemeral EDUs alone stays that.
            Some(None) => Batch::default(),
            upto => Batch::from_queue(items, upto.flatten()),
        };
        let (ephemeral, txn_id) = match unsent.take() {
            Some(unsent) => (unsent.ephemeral, unsent.txn_id),
            None => {
                let mut queue = lock(&signal.ephemeral);
                let take = queue.len().min(batch.edu_room());
                let ephemeral: Vec<Object> = queue.drain(..take).collect();
                drop(queue);
                let txn_id = match batch.ids {
                    Some((first, last)) => format!("{first}-{last}"),
                    None => format!(
                        "e{}.{}",
                        shared.started_ms,
                        shared.ephemeral_txns.fetch_add(1, Ordering::Relaxed)
                    ),
                };
                (ephemeral, txn_id)
            }
        };
        batch.edus.extend(ephemeral.iter().cloned().map(Into::into));
        if batch.is_empty() {
            let mut workers = lock(&shared.workers);
            if signal.more.load(Ordering::SeqCst) {
                continue;
            }
            workers.remove(&destination);
            return;
        }

        let sent = if batch.pdus.is_empty() && batch.edus.is_empty() {
            // Only items that do not decode: acknowledged without a transaction.
            Ok(Object::new())
        } else {
            let body = batch.body(&shared.options.origin, crate::now_ms());
            shared.sink.send_transaction(&destination, &txn_id, &body).await
        };
        let delivered = match sent {
            Ok(response) => {
                let c = &shared.counters;
                if !(batch.pdus.is_empty() && batch.edus.is_empty()) {
                    c.transactions.fetch_add(1, Ordering::Relaxed);
                }
                c.refused_pdus.fetch_add(refused_pdus(&response), Ordering::Relaxed);
                let mut changes = ChangeSet::new();
                if let Some((_, last)) = batch.ids {
                    changes.acknowledge.push((destination.clone(), last));
                }
                if failures > 0 {
                    changes.retries.push((destination.clone(), None));
                }
                let stored = changes.acknowledge.is_empty() && changes.retries.is_empty()
                    || shared.storage.apply(changes).await.is_ok();
                if stored {
                    c.undecodable.fetch_add(batch.undecodable, Ordering::Relaxed);
                }
                // Not acknowledged: sent again with the same id, which the receiver knows.
                stored
            }
            Err(_) => false,
        };
        if delivered {
            failures = 0;
            signal.failures.store(0, Ordering::Relaxed);
        } else {
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            failures = failures.saturating_add(1);
            signal.failures.store(failures, Ordering::Relaxed);
            let wait_for = shared.options.backoff(failures);
            let retry_after_ts = crate::now_ms()
                .saturating_add(i64::try_from(wait_for.as_millis()).unwrap_or(i64::MAX));
            let mut changes = ChangeSet::new();
            changes
                .retries
                .push((destination.clone(), Some(RetryState { failures, retry_after_ts })));
            // Not stored: the backoff still holds for this run, from the start for the next.
            let _ = shared.storage.apply(changes).await;
            unsent = Some(Unsent { upto: batch.ids.map(|(_, last)| last), ephemeral, txn_id });
            delay = Some(wait_for);
        }
    }
}
