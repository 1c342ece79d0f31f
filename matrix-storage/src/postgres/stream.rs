//! Stream positions in commit order for concurrent PostgreSQL transactions.
//!
//! Positions are handed out by this process (one writer process per database, which the store
//! makes sure of with an advisory lock). A transaction reserves its positions before it writes
//! them and releases the reservation once its commit returned (or it failed). The readable
//! head is one below the lowest reservation still open, so a reader never passes a position
//! whose transaction might still commit.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct State {
    /// The next position to hand out.
    next: u64,
    /// The first position of every open reservation.
    open: BTreeSet<u64>,
}

/// Hands out positions and says how far readers may read.
#[derive(Debug)]
pub(super) struct StreamTracker {
    state: Mutex<State>,
}

impl StreamTracker {
    /// A tracker whose highest committed position is `head`.
    pub(super) fn new(head: u64) -> Arc<Self> {
        Arc::new(StreamTracker {
            state: Mutex::new(State { next: head + 1, open: BTreeSet::new() }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain values, consistent after any panic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `count` consecutive positions; the first is returned with the reservation.
    pub(super) fn reserve(self: &Arc<Self>, count: u64) -> Reservation {
        let mut state = self.lock();
        let first = state.next;
        state.next += count;
        state.open.insert(first);
        Reservation { tracker: self.clone(), first, count, reclaim: true }
    }

    /// The highest position handed out so far (committed, being written, or abandoned): every
    /// position that committed is at or below it.
    pub(super) fn handed_out(&self) -> u64 {
        self.lock().next - 1
    }

    /// The highest position a reader may read up to.
    pub(super) fn head(&self) -> u64 {
        let state = self.lock();
        match state.open.first() {
            Some(&first) => first - 1,
            None => state.next - 1,
        }
    }
}

/// Positions being written by one transaction; dropped once its commit returned or failed.
#[derive(Debug)]
pub(super) struct Reservation {
    tracker: Arc<StreamTracker>,
    first: u64,
    count: u64,
    /// Whether the positions may be handed out again if no later ones were: true until the
    /// transaction tries to commit (a commit that failed may still have landed).
    reclaim: bool,
}

impl Reservation {
    /// The first reserved position.
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// Called before `COMMIT` is sent: from now on the positions are never handed out again.
    pub(super) fn committing(&mut self) {
        self.reclaim = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.tracker.lock();
        state.open.remove(&self.first);
        // A transaction that failed before committing leaves no gap when it was the last.
        if self.reclaim && state.next == self.first + self.count {
            state.next = self.first;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StreamTracker;

    #[test]
    fn the_head_waits_for_the_lowest_open_reservation() {
        let tracker = StreamTracker::new(10);
        assert_eq!(tracker.head(), 10);
        let mut a = tracker.reserve(2);
        let mut b = tracker.reserve(1);
        assert_eq!((a.first(), b.first()), (11, 13));
        a.committing();
        b.committing();
        assert_eq!(tracker.head(), 10);
        drop(b);
        assert_eq!(tracker.head(), 10, "13 committed, but 11 and 12 may still commit");
        drop(a);
        assert_eq!(tracker.head(), 13);
    }

    #[test]
    fn positions_of_a_transaction_that_never_committed_are_reused_if_last() {
        let tracker = StreamTracker::new(0);
        let a = tracker.reserve(1);
        let b = tracker.reserve(2);
        drop(b);
        assert_eq!(tracker.head(), 0);
        let mut c = tracker.reserve(1);
        assert_eq!(c.first(), 2, "b's positions are handed out again");
        c.committing();
        drop(c);
        drop(a); // not the last: its position stays a gap
        assert_eq!(tracker.head(), 2);
        assert_eq!(tracker.reserve(1).first(), 3, "c tried to commit: never handed out again");
    }
}
