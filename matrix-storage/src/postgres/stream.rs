//! Stream positions shared by every process that writes the database, and the wake-ups
//! between them.
//!
//! **Handing out.** A change set that takes positions reserves a run of them in the database:
//! one autocommitted statement (on a connection of its own, not the change set's) moves
//! `stream_alloc.next` past the run and records the run in `stream_reservations` with the
//! id of the change set's transaction (`pg_current_xact_id()`). The row lock on
//! `stream_alloc` is held only for that statement, so writers of every process interleave
//! freely; the allocation and its reservation become visible together. The change set's
//! transaction itself takes no lock and writes nothing shared for it: once it ended
//! (committed, or not), its reservation no longer holds readers back, and the rows of ended
//! transactions are swept (with each notification, below, after a failed change set, and at
//! open). A transaction that fails leaves its positions a gap, never handed out again.
//!
//! **The readable head** ([`head`]): in one statement, so one snapshot, the lowest
//! reserved position whose transaction is still running in that snapshot
//! (`NOT pg_visible_in_snapshot(xid, pg_current_snapshot())`), minus one; or, when none is,
//! `next - 1`. Why it never passes a position that may still commit: every position at or
//! below `next - 1` was allocated by a statement visible in the snapshot, together with its
//! reservation. If that reservation row is visible, its transaction is either running in the
//! snapshot (and holds the head below it) or ended before the snapshot was taken: committed,
//! and then its rows are visible in this snapshot and every later one, or not, and then its
//! positions are a gap. If the row is gone, a sweep saw its transaction ended. Anything
//! allocated later gets positions above `next - 1`. Reads that follow use later snapshots, so
//! they see everything at or below the head. The head never goes back (positions are never
//! handed out twice, and a running transaction's positions are above every head computed
//! before it reserved them).
//!
//! **Wake-ups.** After a change set that took positions committed, the store sends `NOTIFY`
//! on the schema's channel with its instance id and the highest position it committed, from
//! a task of its own ([`notify`]) on an autocommitted connection (which also sweeps the
//! reservations of ended transactions): not in the change set's
//! transaction, since PostgreSQL serialises the commits of notifying transactions (a
//! database-wide lock held across the WAL flush) and concurrent change sets would lose their
//! group commit. Bursts are coalesced (the task sends the latest position). A process that
//! dies between a commit and its notification leaves the others to hear of that commit with
//! the next one (they read the whole range up to the head each time). Each store listens on a
//! connection of its own ([`listen`]) and publishes the positions other instances committed
//! on a watch channel; after a lost connection it listens again and publishes the head, since
//! notifications sent meanwhile are lost.
//!
//! **Durability of reservations.** The reservation is committed with `synchronous_commit =
//! off`: the change set's own commit (synchronous) flushes the write-ahead log past it. A
//! PostgreSQL *server* crash within a fraction of a second of a reservation whose change set
//! then failed, with no commit after it, may hand its (never used) positions out again.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use super::{Doing, to_i64, to_u64};
use crate::{Result, StreamPos};

/// The highest position readers may read up to, by the rule of the module docs.
pub(super) async fn head<'c, E>(executor: E) -> Result<u64>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let head: i64 = sqlx::query_scalar(
        "SELECT COALESCE( \
            (SELECT MIN(first) FROM stream_reservations \
             WHERE NOT pg_visible_in_snapshot(xid::text::xid8, pg_current_snapshot())), \
            (SELECT next FROM stream_alloc)) - 1",
    )
    .fetch_one(executor)
    .await
    .doing("reading the stream head")?;
    to_u64(head.max(0))
}

/// Deletes the reservations of transactions that ended (those that committed deleted their
/// own).
pub(super) async fn forget_finished(connection: &mut PgConnection) -> Result<()> {
    sqlx::query(
        "DELETE FROM stream_reservations \
         WHERE pg_visible_in_snapshot(xid::text::xid8, pg_current_snapshot())",
    )
    .execute(connection)
    .await
    .doing("forgetting finished stream reservations")?;
    Ok(())
}

/// The shared stream of one store: where positions are reserved, and the wake-ups.
#[derive(Debug)]
pub(super) struct SharedStream {
    /// Autocommitted connections for reservations.
    reserve: PgPool,
    /// This store's id among the processes writing the database (from a sequence).
    instance: i64,
    /// The schema's notification channel.
    channel: String,
    /// The highest position other instances committed, as far as this one heard.
    foreign: watch::Sender<StreamPos>,
    /// The highest position this instance committed, for the notifying task.
    committed: watch::Sender<u64>,
    /// The listening and notifying tasks, stopped with the store.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A run of positions reserved by a transaction that has not committed yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reservation {
    pub(super) first: u64,
    pub(super) last: u64,
}

impl SharedStream {
    /// Starts listening on `channel` (from `listen_pool`, a pool of one connection) and
    /// publishes what other instances than `instance` commit, starting at `head`.
    pub(super) async fn start(
        reserve: PgPool,
        listen_pool: PgPool,
        instance: i64,
        channel: String,
        head: u64,
    ) -> Result<Arc<Self>> {
        let mut listener =
            PgListener::connect_with(&listen_pool).await.doing("connecting the listener")?;
        listener.listen(&channel).await.doing("listening for other writers")?;
        let (foreign, _) = watch::channel(StreamPos(head));
        let (committed, to_notify) = watch::channel(head);
        let notifying = tokio::spawn(notify(to_notify, reserve.clone(), channel.clone(), instance));
        let stream = Arc::new(SharedStream {
            reserve,
            instance,
            channel,
            foreign,
            committed,
            tasks: std::sync::Mutex::new(vec![notifying]),
        });
        let listening = tokio::spawn(listen(listener, listen_pool, Arc::downgrade(&stream)));
        stream.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(listening);
        Ok(stream)
    }

    /// Stops listening and notifying, and closes the connections.
    pub(super) async fn close(&self) {
        self.stop();
        self.reserve.close().await;
    }

    fn stop(&self) {
        let tasks = std::mem::take(
            &mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            task.abort();
        }
    }

    /// A receiver of the positions other instances committed.
    pub(super) fn foreign_writes(&self) -> watch::Receiver<StreamPos> {
        self.foreign.subscribe()
    }

    /// Reserves `count` positions for the transaction on `tx` (which gets its transaction id
    /// here, if it had none).
    pub(super) async fn reserve(&self, tx: &mut PgConnection, count: u64) -> Result<Reservation> {
        const DOING: &str = "reserving stream positions";
        let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
            .fetch_one(&mut *tx)
            .await
            .doing(DOING)?;
        let count = to_i64(count.max(1));
        let first: i64 = sqlx::query_scalar(
            "WITH a AS (UPDATE stream_alloc SET next = next + $1 RETURNING next - $1 AS first) \
             INSERT INTO stream_reservations (first, last, xid) \
             SELECT first, first + $1 - 1, $2 FROM a RETURNING first",
        )
        .bind(count)
        .bind(xid)
        .fetch_one(&self.reserve)
        .await
        .doing(DOING)?;
        let first = to_u64(first)?;
        Ok(Reservation { first, last: first + to_u64(count)? - 1 })
    }

    /// After the reserving transaction committed: the other instances are told.
    pub(super) fn committed(&self, run: Reservation) {
        self.committed.send_modify(|last| *last = (*last).max(run.last));
    }

    /// After the reserving transaction failed: deletes its reservation (best effort; the
    /// head ignores it anyway once the transaction ended, and the next open deletes it).
    pub(super) async fn abandon(&self, run: Reservation) {
        let _ = sqlx::query("DELETE FROM stream_reservations WHERE first = $1")
            .bind(to_i64(run.first))
            .execute(&self.reserve)
            .await;
    }
}

impl Drop for SharedStream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `NOTIFY` with the highest position this instance committed, each time it moved
/// (coalesced: a burst of commits may be one notification), until the store is dropped, and
/// sweeps the reservations of transactions that ended. A failed send is tried again after a
/// pause.
async fn notify(mut committed: watch::Receiver<u64>, pool: PgPool, channel: String, instance: i64) {
    let mut failed = false;
    loop {
        if !failed && committed.changed().await.is_err() {
            return;
        }
        let last = *committed.borrow_and_update();
        failed = sqlx::query(
            "WITH swept AS (DELETE FROM stream_reservations \
                 WHERE pg_visible_in_snapshot(xid::text::xid8, pg_current_snapshot())) \
             SELECT pg_notify($1, $2)",
        )
        .bind(&channel)
        .bind(format!("{instance} {last}"))
        .execute(&pool)
        .await
        .is_err();
        if failed {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Publishes the positions other instances commit, until the store is dropped. After a lost
/// connection (or any error), it listens again on a new connection from `listen_pool` and
/// then publishes the head, since notifications sent meanwhile are lost.
async fn listen(listener: PgListener, listen_pool: PgPool, stream: std::sync::Weak<SharedStream>) {
    let mut listener = Some(listener);
    loop {
        let received = match &mut listener {
            Some(listener) => listener.try_recv().await,
            None => Ok(None),
        };
        let Some(shared) = stream.upgrade() else { return };
        match received {
            Ok(Some(notification)) => {
                let mut words = notification.payload().split(' ');
                let instance = words.next().and_then(|w| w.parse::<i64>().ok());
                let pos = words.next().and_then(|w| w.parse::<u64>().ok());
                if let (Some(instance), Some(pos)) = (instance, pos)
                    && instance != shared.instance
                {
                    shared.foreign.send_modify(|p| p.0 = p.0.max(pos));
                }
                continue;
            }
            // Lost and reconnected already (the listener does that).
            Ok(None) if listener.is_some() => {}
            // An error, or no listener: a new one.
            Ok(None) | Err(_) => {
                drop(listener.take());
                let channel = shared.channel.clone();
                drop(shared);
                let mut new = PgListener::connect_with(&listen_pool).await.ok();
                if let Some(fresh) = &mut new
                    && fresh.listen(&channel).await.is_err()
                {
                    new = None;
                }
                if new.is_none() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                listener = new;
            }
        }
        // Catch up with what was missed.
        if let Some(connection) = &mut listener
            && let Ok(head) = head(&mut *connection).await
            && let Some(shared) = stream.upgrade()
        {
            shared.foreign.send_modify(|p| p.0 = p.0.max(head));
        } else {
            drop(listener.take());
        }
    }
}
