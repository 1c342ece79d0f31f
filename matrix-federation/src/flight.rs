//! Single flight: callers that want the same thing at once take turns, so the first fetches
//! and the others find its result in a cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::OwnedMutexGuard;

/// One lock per key, alive while someone holds or waits for it. The map keeps weak
/// references and drops the dead ones whenever it has doubled since the last sweep, so it
/// never holds more than twice the keys in use at once (plus a small floor).
#[derive(Debug, Default)]
pub(crate) struct Flights {
    inner: Mutex<FlightMap>,
}

#[derive(Debug, Default)]
struct FlightMap {
    locks: HashMap<String, Weak<tokio::sync::Mutex<()>>>,
    sweep_at: usize,
}

impl Flights {
    /// Waits for the turn of `key`: the guard is held while the caller checks its cache and
    /// fetches; whoever waited for the same key goes next and finds the cache filled.
    pub(crate) async fn turn(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let existing = map.locks.get(key).and_then(Weak::upgrade);
            match existing {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    if map.locks.len() >= map.sweep_at {
                        map.locks.retain(|_, weak| weak.strong_count() > 0);
                        map.sweep_at = (map.locks.len() * 2).max(64);
                    }
                    map.locks.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// How many keys the map holds (live or not yet swept): for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_key_waits_and_the_map_stays_small() {
        let flights = Flights::default();
        let first = flights.turn("a").await;
        // Another key does not wait.
        drop(flights.turn("b").await);
        // The same key waits until the first guard is gone.
        let waiting = flights.turn("a");
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        drop(first);
        drop(waiting.await);
        for i in 0..1000 {
            drop(flights.turn(&i.to_string()).await);
        }
        assert!(flights.len() <= 128, "{} keys kept", flights.len());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
