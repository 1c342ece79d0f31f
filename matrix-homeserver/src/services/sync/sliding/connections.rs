//! Sliding sync connections: per user, device and `conn_id`, the state each answer left
//! (which rooms the client was sent, with what config), kept until the client's next
//! position says which answer it processed. In memory and bounded (per device and in all,
//! least recently used first out): a connection the server no longer holds answers
//! `M_UNKNOWN_POS`, and the client starts it again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use matrix_storage::StreamPos;

use super::request::{Pos, RoomConfig};
use crate::config::LimitsConfig;

/// `(user, device, conn_id)`.
pub(crate) type ConnKey = (String, String, String);

/// What a connection has sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ConnState {
    pub(crate) rooms: HashMap<String, SentRoom>,
}

/// A room as the connection last sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentRoom {
    pub(crate) status: Status,
    /// The config it was sent with.
    pub(crate) config: RoomConfig,
    /// The user's membership then (a change sends the room whole again).
    pub(crate) membership: String,
    /// The member events sent for lazy loading: user to event id.
    pub(crate) lazy: HashMap<String, String>,
}

/// How up to date the client is with a room it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Up to the position of the connection.
    Live,
    /// Up to this stream position: it changed after, while outside the lists.
    Previously(StreamPos),
}

/// The states a connection keeps: the one the client's last position named, and the ones
/// answered since (the client processes at most one of them).
const STATES_KEPT: usize = 4;

#[derive(Debug)]
struct Conn {
    states: VecDeque<(u64, Arc<ConnState>)>,
    used: u64,
}

/// The connections of every user.
#[derive(Debug)]
pub(crate) struct Connections {
    inner: Mutex<HashMap<ConnKey, Conn>>,
    /// Numbers states: unique in this process and across restarts (it starts from the clock),
    /// so a position from before a restart is never taken for a state of now.
    next_seq: AtomicU64,
    /// Orders uses, for least-recently-used eviction.
    clock: AtomicU64,
}

impl Default for Connections {
    fn default() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        Connections {
            inner: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(start),
            clock: AtomicU64::new(0),
        }
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnKey, Conn>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state position `seq` of the connection names, if it is held.
    pub(crate) fn take(&self, key: &ConnKey, seq: u64) -> Option<Arc<ConnState>> {
        let inner = self.lock();
        let conn = inner.get(key)?;
        conn.states.iter().find(|(s, _)| *s == seq).map(|(_, state)| state.clone())
    }

    /// Records the state an answer left; the client's position (`from`, with its state
    /// `previous`) is kept beside it, everything older dropped. A new connection (no
    /// position) replaces one of the same key. Returns the new state's number.
    pub(crate) fn record(
        &self,
        key: ConnKey,
        previous: Option<Arc<ConnState>>,
        from: Option<Pos>,
        state: ConnState,
        limits: &LimitsConfig,
    ) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let conn =
            inner.entry(key.clone()).or_insert_with(|| Conn { states: VecDeque::new(), used });
        conn.used = used;
        match (from, previous) {
            (Some(from), Some(previous)) => {
                // Answers to positions before the client's are gone; keep the client's own
                // and the later ones (retries of the same position), bounded.
                conn.states.retain(|(s, _)| *s > from.seq);
                conn.states.push_front((from.seq, previous));
            }
            _ => conn.states.clear(),
        }
        conn.states.push_back((seq, Arc::new(state)));
        while conn.states.len() > STATES_KEPT {
            // The oldest answers the client did not take first; the client's own stays.
            conn.states.remove(1);
        }
        Self::evict(&mut inner, &key, limits);
        seq
    }

    /// Keeps the connection at the client's position `seq` (its state unchanged), dropping
    /// older ones; returns the number to answer with.
    pub(crate) fn keep(
        &self,
        key: ConnKey,
        seq: u64,
        previous: Arc<ConnState>,
        limits: &LimitsConfig,
    ) -> u64 {
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let conn =
            inner.entry(key.clone()).or_insert_with(|| Conn { states: VecDeque::new(), used });
        conn.used = used;
        conn.states.retain(|(s, _)| *s > seq);
        conn.states.push_front((seq, previous));
        conn.states.truncate(STATES_KEPT);
        Self::evict(&mut inner, &key, limits);
        seq
    }

    /// Ends the least recently used connections past the bounds (per device, then in all),
    /// never `keep`.
    fn evict(inner: &mut HashMap<ConnKey, Conn>, keep: &ConnKey, limits: &LimitsConfig) {
        let per_device = limits.max_sliding_sync_connections_per_device.max(1);
        let device: Vec<(&ConnKey, u64)> = inner
            .iter()
            .filter(|(k, _)| k.0 == keep.0 && k.1 == keep.1)
            .map(|(k, c)| (k, c.used))
            .collect();
        let mut gone = Vec::new();
        if device.len() > per_device {
            let mut device = device;
            device.sort_by_key(|(_, used)| *used);
            gone.extend(device.iter().take(device.len() - per_device).map(|(k, _)| (*k).clone()));
        }
        for key in gone.drain(..) {
            if key != *keep {
                inner.remove(&key);
            }
        }
        let total = limits.max_sliding_sync_connections.max(1);
        if inner.len() > total {
            let mut all: Vec<(&ConnKey, u64)> = inner.iter().map(|(k, c)| (k, c.used)).collect();
            all.sort_by_key(|(_, used)| *used);
            gone.extend(all.iter().take(all.len() - total).map(|(k, _)| (*k).clone()));
            for key in gone {
                if key != *keep {
                    inner.remove(&key);
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::sync::Token;

    fn key(user: &str, conn: &str) -> ConnKey {
        (user.to_owned(), "D".to_owned(), conn.to_owned())
    }

    fn pos(seq: u64) -> Pos {
        Pos { token: Token::default(), seq }
    }

    #[test]
    fn a_position_names_its_state_and_older_ones_go() {
        let limits = LimitsConfig::default();
        let conns = Connections::default();
        let first = conns.record(key("@a:x", ""), None, None, ConnState::default(), &limits);
        let state = conns.take(&key("@a:x", ""), first).expect("first state");
        let second = conns.record(
            key("@a:x", ""),
            Some(state.clone()),
            Some(pos(first)),
            ConnState::default(),
            &limits,
        );
        // A retry of the first position still works.
        assert!(conns.take(&key("@a:x", ""), first).is_some());
        let third = conns.record(
            key("@a:x", ""),
            Some(state),
            Some(pos(second)),
            ConnState::default(),
            &limits,
        );
        assert!(conns.take(&key("@a:x", ""), first).is_none());
        assert!(conns.take(&key("@a:x", ""), second).is_some());
        assert!(conns.take(&key("@a:x", ""), third).is_some());
        // Another user's key never finds it.
        assert!(conns.take(&key("@b:x", ""), third).is_none());
    }

    #[test]
    fn connections_are_bounded_per_device_and_in_all() {
        let limits = LimitsConfig {
            max_sliding_sync_connections_per_device: 2,
            max_sliding_sync_connections: 3,
            ..LimitsConfig::default()
        };
        let conns = Connections::default();
        for conn in ["a", "b", "c"] {
            conns.record(key("@a:x", conn), None, None, ConnState::default(), &limits);
        }
        assert_eq!(conns.len(), 2);
        for user in ["@b:x", "@c:x", "@d:x"] {
            conns.record(key(user, ""), None, None, ConnState::default(), &limits);
        }
        assert_eq!(conns.len(), 3);
    }
}
