//! Group commit: one thread appends to the write-ahead log ([`super::wal`]) the records of every
//! change set committed since its last append, syncs it once, and wakes their writers
//! together; now and then (every [`CHECKPOINT_EVERY`], or past [`CHECKPOINT_BYTES`] of log) it
//! flushes the engine (sled or fjall) and deletes the log segments it then holds.
//!
//! A writer commits its transaction under the writer lock, takes the next commit number (its
//! log sequence) while still holding it, so numbers follow commit order, and hands its record
//! over; then it waits for the flusher to report a durable number at or past its own. An
//! append covers every transaction committed before it started, so while one sync runs, the
//! writers that commit meanwhile are all made durable by the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::engine::Journal;
use crate::{ErrorKind, Result, StorageError};

/// How often sled itself is flushed (so that the log's older segments can go).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// How much log makes a checkpoint come early.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default)]
struct State {
    /// The number (log sequence) of the last committed transaction.
    committed: u64,
    /// The log records of the transactions committed since the last append.
    records: Vec<u8>,
    /// The stream head after the last committed transaction.
    stream_head: u64,
    /// Writers waiting for their commit number to be durable.
    waiters: Vec<(u64, oneshot::Sender<Result<()>>)>,
    /// Set when the store closes: the flusher flushes what is pending and stops.
    closing: bool,
    /// While an online backup copies the tree: the log records of every transaction
    /// committed since it began, for it to apply again to its copy (`backup.rs`).
    tap: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The stream head of the last flush that succeeded: readers never see past it, so an
    /// event a reader saw is never lost in a crash (and its position never handed out again).
    durable_stream: AtomicU64,
    /// Set when a flush failed. The store then stops (fail-stop, as PostgreSQL does on a
    /// failed fsync): what the failed flush covered was applied to sled's tree in memory but
    /// is not known to be on disk, so no reader may see it and no later flush may quietly
    /// make durable what a writer was told had failed. A restart recovers what is on disk.
    failed: std::sync::atomic::AtomicBool,
    /// Makes the next flush fail, for the tests of this behaviour.
    #[cfg(test)]
    fail_next_flush: std::sync::atomic::AtomicBool,
}

/// The flusher thread, stopped (after a last flush) and joined when dropped.
#[derive(Debug)]
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn poisoned() -> StorageError {
    StorageError::new(ErrorKind::Unavailable, "the flusher panicked")
}

impl Flusher {
    /// Starts the flusher thread over `journal`, whose stream head on disk is `stream_head`
    /// and whose last log sequence is `seq`.
    pub(super) fn start(journal: Journal, stream_head: u64, seq: u64) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        shared.durable_stream.store(stream_head, Ordering::Release);
        {
            let mut state = shared.state.lock().map_err(|_| poisoned())?;
            state.stream_head = stream_head;
            state.committed = seq;
        }
        let thread = std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, journal, seq)
            })
            .map_err(|e| {
                StorageError::with_source(ErrorKind::Unavailable, "cannot start the flusher", e)
            })?;
        Ok(Flusher { shared, thread: Some(thread) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.shared.state.lock().map_err(|_| poisoned())
    }

    /// `Err` once a flush has failed: the store serves nothing more until it is reopened.
    pub(super) fn check(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(StorageError::new(
                ErrorKind::Unavailable,
                "a flush to disk failed earlier; the store stopped (restart to recover what is \
                 on disk)",
            ));
        }
        Ok(())
    }

    /// Makes the next flush fail.
    #[cfg(test)]
    pub(super) fn fail_next_flush(&self) {
        self.shared.fail_next_flush.store(true, Ordering::Release);
    }

    /// The highest stream position on disk.
    pub(super) fn durable_stream(&self) -> u64 {
        self.shared.durable_stream.load(Ordering::Acquire)
    }

    /// The log sequence the next transaction gets (read under the writer lock, which makes
    /// it the next one to call [`Flusher::committed`]).
    pub(super) fn next_seq(&self) -> Result<u64> {
        Ok(self.lock()?.committed + 1)
    }

    /// Called under the writer lock right after a transaction committed, with the stream head
    /// after it and its log record: the receiver says when the transaction is on disk.
    pub(super) fn committed(
        &self,
        stream_head: u64,
        record: &[u8],
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (send, receive) = oneshot::channel();
        let mut state = self.lock()?;
        // After a failed flush the flusher has stopped: nobody would answer this writer.
        self.check()?;
        state.committed += 1;
        state.records.extend_from_slice(record);
        if let Some(tap) = &mut state.tap {
            tap.extend_from_slice(record);
        }
        state.stream_head = stream_head;
        let number = state.committed;
        state.waiters.push((number, send));
        drop(state);
        self.shared.wake.notify_one();
        Ok(receive)
    }
}

impl Flusher {
    /// Starts keeping a copy of the log record of every transaction committed from now on
    /// (for an online backup); an error if a backup already does.
    pub(super) fn start_tap(&self) -> Result<()> {
        let mut state = self.lock()?;
        if state.tap.is_some() {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                "a backup of this store is already being made",
            ));
        }
        state.tap = Some(Vec::new());
        Ok(())
    }

    /// The records kept since the last call (the tap goes on), or, with `stop`, the last of
    /// them (the tap ends).
    pub(super) fn drain_tap(&self, stop: bool) -> Result<Vec<u8>> {
        let mut state = self.lock()?;
        Ok(if stop {
            state.tap.take().unwrap_or_default()
        } else {
            state.tap.as_mut().map(std::mem::take).unwrap_or_default()
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.closing = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panicked flusher has already failed its waiters; nothing more to do here.
            let _ = thread.join();
        }
    }
}

/// The flusher loop: wait for commits, append their records to the log and sync it, wake
/// every writer the append covered; checkpoint now and then.
fn run(shared: &Shared, mut journal: Journal, mut durable: u64) {
    let mut checkpointed = Instant::now();
    loop {
        let Ok(mut state) = shared.state.lock() else { return };
        while state.committed == durable && !state.closing {
            let timeout = CHECKPOINT_EVERY.saturating_sub(checkpointed.elapsed());
            state = match shared.wake.wait_timeout(state, timeout.max(Duration::from_millis(10))) {
                Ok((state, _)) => state,
                Err(_) => return,
            };
            if state.committed == durable && checkpointed.elapsed() >= CHECKPOINT_EVERY {
                break;
            }
        }
        if state.committed == durable {
            drop(state);
            // Idle (or closing): a checkpoint if anything was logged since the last one.
            if journal.pending() > 0
                && let Err(error) = journal.checkpoint(durable)
            {
                eprintln!("checkpoint failed (the log keeps what it covers): {error}");
            }
            checkpointed = Instant::now();
            if shared.state.lock().map(|s| s.closing && s.committed == durable).unwrap_or(true) {
                return;
            }
            continue;
        }
        let (target, stream_head) = (state.committed, state.stream_head);
        let records = std::mem::take(&mut state.records);
        drop(state);

        #[cfg(test)]
        let injected = shared.fail_next_flush.swap(false, Ordering::AcqRel);
        #[cfg(not(test))]
        let injected = false;
        let flushed = if injected {
            Err("an injected failure".to_owned())
        } else {
            journal.sync(&records).map_err(|e| e.to_string())
        };
        match &flushed {
            Ok(()) => shared.durable_stream.store(stream_head, Ordering::Release),
            Err(_) => shared.failed.store(true, Ordering::Release),
        }

        let Ok(mut state) = shared.state.lock() else { return };
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.waiters).into_iter().partition(|(n, _)| *n <= target);
        state.waiters = waiting;
        drop(state);
        durable = target;
        for (_, waiter) in done {
            let result = match &flushed {
                Ok(()) => Ok(()),
                Err(message) => Err(StorageError::new(
                    ErrorKind::Unavailable,
                    format!("the store could not flush to disk: {message}"),
                )),
            };
            // A writer that stopped waiting (its task was dropped) needs no answer.
            let _ = waiter.send(result);
        }
        if flushed.is_err() {
            // Fail-stop: every later writer is refused before it commits (see `check`), and
            // those already waiting are told now; nothing is flushed again.
            let Ok(mut state) = shared.state.lock() else { return };
            for (_, waiter) in std::mem::take(&mut state.waiters) {
                let _ = waiter.send(Err(StorageError::new(
                    ErrorKind::Unavailable,
                    "a flush to disk failed earlier; the store stopped",
                )));
            }
            return;
        }
        if checkpointed.elapsed() >= CHECKPOINT_EVERY || journal.pending() >= CHECKPOINT_BYTES {
            if let Err(error) = journal.checkpoint(durable) {
                eprintln!("checkpoint failed (the log keeps what it covers): {error}");
            }
            checkpointed = Instant::now();
        }
    }
}
