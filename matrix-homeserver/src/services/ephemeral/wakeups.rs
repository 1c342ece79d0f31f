//! Addressed wake-ups: each user with a waiting `/sync` has a channel of their own, and a
//! change wakes only the users it concerns. A channel exists while someone waits on it, so
//! memory follows the number of waiting syncs, not the number of users. The same table
//! counts the syncs of each device, to cap them.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Debug, Default)]
struct Table {
    /// User -> the channel their waiting syncs listen on.
    users: HashMap<String, watch::Sender<u64>>,
    /// (user, device) -> how many syncs of the device run now.
    syncs: HashMap<(String, String), usize>,
}

/// The per-user channels and the per-device sync counts.
#[derive(Debug)]
pub(crate) struct Wakeups {
    table: Mutex<Table>,
    max_syncs_per_device: usize,
}

/// One running sync: its user's channel, and its place in the device's count. Dropping it
/// (the sync answered, or the client went away) gives both back.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    wakeups: &'a Wakeups,
    user: String,
    device: String,
    receiver: Option<watch::Receiver<u64>>,
}

/// The device has as many syncs running as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySyncs;

impl Wakeups {
    pub(crate) fn new(max_syncs_per_device: usize) -> Self {
        Wakeups { table: Mutex::new(Table::default()), max_syncs_per_device }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds counts and channels only; a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a sync of `device`; refused when the device has its maximum running.
    pub(crate) fn waiter(&self, user: &str, device: &str) -> Result<Waiter<'_>, TooManySyncs> {
        let mut table = self.lock();
        let count = table.syncs.entry((user.to_owned(), device.to_owned())).or_insert(0);
        if *count >= self.max_syncs_per_device {
            return Err(TooManySyncs);
        }
        *count += 1;
        let receiver = table.users.entry(user.to_owned()).or_insert_with(|| watch::channel(0).0);
        let receiver = receiver.subscribe();
        Ok(Waiter {
            wakeups: self,
            user: user.to_owned(),
            device: device.to_owned(),
            receiver: Some(receiver),
        })
    }

    /// Wakes the syncs of `user` (nothing when none waits).
    pub(crate) fn wake(&self, user: &str) {
        if let Some(sender) = self.lock().users.get(user) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes the syncs of each of `users`.
    pub(crate) fn wake_all_of<'u>(&self, users: impl IntoIterator<Item = &'u str>) {
        let table = self.lock();
        for user in users {
            if let Some(sender) = table.users.get(user) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every waiting sync: only when whom a change concerns could not be found out
    /// (storage failed), so that nobody misses it.
    pub(crate) fn wake_everybody(&self) {
        for sender in self.lock().users.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// How many users have a channel now (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn channels(&self) -> usize {
        self.lock().users.len()
    }
}

impl Waiter<'_> {
    /// Marks every wake-up so far as seen: call before computing an answer, so that a change
    /// during the computation still ends the next wait.
    pub(crate) fn mark_seen(&mut self) {
        if let Some(receiver) = &mut self.receiver {
            receiver.borrow_and_update();
        }
    }

    /// Waits for a wake-up after the last [`Waiter::mark_seen`], until `deadline`; answers
    /// whether one came.
    pub(crate) async fn woken_before(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(receiver) = &mut self.receiver else { return false };
        matches!(tokio::time::timeout_at(deadline, receiver.changed()).await, Ok(Ok(())))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut table = self.wakeups.lock();
        // Dropped under the lock, so that no new waiter subscribes between the count and the
        // removal.
        drop(self.receiver.take());
        if table.users.get(&self.user).is_some_and(|s| s.receiver_count() == 0) {
            table.users.remove(&self.user);
        }
        let key = (std::mem::take(&mut self.user), std::mem::take(&mut self.device));
        if let Some(count) = table.syncs.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.syncs.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_exist_only_while_someone_waits_and_syncs_are_capped() {
        let wakeups = Wakeups::new(2);
        let first = wakeups.waiter("@a:x", "D").expect("one");
        let second = wakeups.waiter("@a:x", "D").expect("two");
        assert_eq!(wakeups.waiter("@a:x", "D").err(), Some(TooManySyncs));
        let other = wakeups.waiter("@a:x", "E").expect("another device");
        assert_eq!(wakeups.channels(), 1);
        drop((first, second, other));
        assert_eq!(wakeups.channels(), 0);
        assert!(wakeups.lock().syncs.is_empty());
        // A wake-up reaches only the user it is addressed to.
        let mut alice = wakeups.waiter("@a:x", "D").expect("alice");
        let mut bob = wakeups.waiter("@b:x", "D").expect("bob");
        alice.mark_seen();
        bob.mark_seen();
        wakeups.wake("@b:x");
        let alice_receiver = alice.receiver.as_mut().expect("a receiver");
        assert!(!alice_receiver.has_changed().expect("open"));
        let bob_receiver = bob.receiver.as_mut().expect("a receiver");
        assert!(bob_receiver.has_changed().expect("open"));
        wakeups.wake_all_of(["@a:x", "@c:x"]);
        let alice_receiver = alice.receiver.as_mut().expect("a receiver");
        assert!(alice_receiver.has_changed().expect("open"));
        drop((alice, bob));
        // Waking someone who does not wait creates nothing.
        wakeups.wake("@b:x");
        assert_eq!(wakeups.channels(), 0);
    }
}
