//! What an online backup of a store records about it ([`StoreSummary`]), so that a restore can
//! check that it holds the same: the stream position the copy stands at, how many events it
//! holds, and a hash of each room's current state.

use std::collections::BTreeMap;

use std::path::Path;

use crate::{ErrorKind, Result, StateEntry, StorageError};

/// A summary of a store's content, computed on a backup's copy and again on what a restore
/// made of it; the two must be equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreSummary {
    /// The backend the summary is of: `sled`, `fjall` or `postgres`.
    pub backend: String,
    /// The stream position the store stands at (every position up to it is in the copy).
    pub stream_position: u64,
    /// How many events the store holds (timeline, outliers, backfilled, rejected).
    pub events: u64,
    /// Each room's current state, as [`state_hash`] hashes it.
    pub rooms: BTreeMap<String, String>,
}

impl StoreSummary {
    /// A summary of `backend` with nothing in it yet.
    pub fn new(backend: impl Into<String>) -> Self {
        StoreSummary { backend: backend.into(), ..StoreSummary::default() }
    }
}

/// Refuses a `dir` that holds anything: a backup never writes over another.
#[cfg_attr(not(any(feature = "sled", feature = "postgres")), allow(dead_code))]
pub(crate) fn check_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StorageError::new(
                    ErrorKind::Conflict,
                    format!("{} is not empty; back up into a new directory", dir.display()),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::with_source(
            ErrorKind::Unavailable,
            "backup: cannot read the target directory",
            e,
        )),
    }
}

/// The hash of a room's state: SHA-256, in lowercase hex, of its entries sorted by (type,
/// state key, event id), each written as `type NUL state_key NUL event_id LF`.
pub fn state_hash(entries: &[StateEntry]) -> String {
    use sha2::Digest;
    let mut sorted: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.kind.as_str(), e.state_key.as_str(), e.event_id.as_str()))
        .collect();
    sorted.sort_unstable();
    let mut hasher = sha2::Sha256::new();
    for (kind, state_key, event_id) in sorted {
        for (part, end) in [(kind, b"\0"), (state_key, b"\0"), (event_id, b"\n")] {
            hasher.update(part.as_bytes());
            hasher.update(end);
        }
    }
    hasher.finalize().iter().fold(String::with_capacity(64), |mut hex, byte| {
        hex.push_str(&format!("{byte:02x}"));
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, state_key: &str, event_id: &str) -> StateEntry {
        StateEntry { kind: kind.into(), state_key: state_key.into(), event_id: event_id.into() }
    }

    #[test]
    fn the_state_hash_ignores_order_and_sees_every_field() {
        let a = entry("m.room.create", "", "$a");
        let b = entry("m.room.member", "@u:x", "$b");
        let hash = state_hash(&[a.clone(), b.clone()]);
        assert_eq!(hash, state_hash(&[b.clone(), a.clone()]));
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, state_hash(std::slice::from_ref(&a)));
        assert_ne!(hash, state_hash(&[a, entry("m.room.member", "@u:x", "$c")]));
        // The separators keep fields from running into each other.
        assert_ne!(state_hash(&[entry("ab", "", "$e")]), state_hash(&[entry("a", "b", "$e")]));
    }
}
