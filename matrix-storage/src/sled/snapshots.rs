//! State snapshot records and the cache of decoded ones.
//!
//! A record is a parent, its depth in the delta chain, and `key -> event` sorted by key (event
//! `0` removes the key). Records never change once committed, so a cache of decoded records
//! needs no invalidation: a lookup walks at most [`FULL_EVERY`] cached records with a binary
//! search in each, instead of reading and decoding each from sled.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codec::{Dec, Enc};
use crate::{ErrorKind, Result, StorageError};

/// Every this many deltas, a snapshot is stored whole, so a lookup reads at most this many
/// records.
pub(super) const FULL_EVERY: u64 = 64;

/// A stored snapshot: parent, depth in its delta chain, and `key -> event` (0 removes).
#[derive(Debug, Clone)]
pub(super) struct SnapshotRecord {
    pub(super) parent: Option<u64>,
    pub(super) depth: u64,
    /// Sorted by key, one entry per key.
    pub(super) changes: Vec<(u64, u64)>,
}

impl SnapshotRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut enc = Enc::default().bool(self.parent.is_some()).u64(self.parent.unwrap_or(0));
        enc = enc.u64(self.depth).u64(self.changes.len() as u64);
        for &(key, event) in &self.changes {
            enc = enc.u64(key).u64(event);
        }
        enc.done()
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut dec = Dec::new(bytes);
        let has_parent = dec.bool()?;
        let parent = dec.u64()?;
        let depth = dec.u64()?;
        let count = dec.u64()?;
        let mut changes = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            changes.push((dec.u64()?, dec.u64()?));
        }
        if !changes.is_sorted_by(|a, b| a.0 < b.0) {
            return Err(StorageError::new(ErrorKind::Corrupt, "a snapshot record is not sorted"));
        }
        Ok(SnapshotRecord { parent: has_parent.then_some(parent), depth, changes })
    }

    /// The change this record makes to `key`, if any (`Some(0)` is a removal).
    fn change(&self, key: u64) -> Option<u64> {
        self.changes.binary_search_by_key(&key, |&(k, _)| k).ok().map(|i| self.changes[i].1)
    }
}

fn chain_loops() -> StorageError {
    StorageError::new(ErrorKind::Corrupt, "a snapshot chain loops")
}

/// The event at `key` in snapshot `id` (`None`: not set), reading records with `get`.
pub(super) fn lookup(
    id: u64,
    key: u64,
    mut get: impl FnMut(u64) -> Result<Option<Arc<SnapshotRecord>>>,
) -> Result<Option<u64>> {
    let mut next = Some(id);
    let mut steps = 0;
    while let Some(current) = next {
        let Some(record) = get(current)? else { break };
        if let Some(event) = record.change(key) {
            return Ok((event != 0).then_some(event));
        }
        next = record.parent;
        steps += 1;
        if steps > FULL_EVERY * 4 {
            return Err(chain_loops());
        }
    }
    Ok(None)
}

/// The whole state of snapshot `id` as `key -> event`, reading records with `get`.
pub(super) fn walk_full(
    id: u64,
    mut get: impl FnMut(u64) -> Result<Option<Arc<SnapshotRecord>>>,
) -> Result<BTreeMap<u64, u64>> {
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = Some(id);
    let mut steps = 0;
    while let Some(current) = next {
        let Some(record) = get(current)? else { break };
        for &(key, event) in &record.changes {
            seen.entry(key).or_insert(event);
        }
        next = record.parent;
        steps += 1;
        if steps > FULL_EVERY * 4 {
            return Err(chain_loops());
        }
    }
    seen.retain(|_, event| *event != 0);
    Ok(seen)
}

#[derive(Debug, Clone)]
struct Weight;

impl quick_cache::Weighter<u64, Arc<SnapshotRecord>> for Weight {
    fn weight(&self, _id: &u64, record: &Arc<SnapshotRecord>) -> u64 {
        record.changes.len() as u64 + 1
    }
}

/// Decoded snapshot records, weighed by their entries.
pub(super) struct SnapshotCache(quick_cache::sync::Cache<u64, Arc<SnapshotRecord>, Weight>);

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache").field("entries", &self.0.weight()).finish()
    }
}

impl SnapshotCache {
    /// A cache holding about `entries` state entries (16 bytes each).
    pub(super) fn new(entries: u64) -> Self {
        let records = usize::try_from(entries / 64).unwrap_or(usize::MAX).max(16);
        SnapshotCache(quick_cache::sync::Cache::with_weighter(records, entries.max(1), Weight))
    }

    /// The record `id` if it is cached.
    pub(super) fn cached(&self, id: u64) -> Option<Arc<SnapshotRecord>> {
        self.0.get(&id)
    }

    /// The record `id`, from the cache or else from `read` (then cached). `read` must read
    /// committed data only: a record read inside a transaction could be that transaction's own.
    pub(super) fn get(
        &self,
        id: u64,
        read: impl FnOnce() -> Result<Option<SnapshotRecord>>,
    ) -> Result<Option<Arc<SnapshotRecord>>> {
        if let Some(record) = self.0.get(&id) {
            return Ok(Some(record));
        }
        let Some(record) = read()? else { return Ok(None) };
        let record = Arc::new(record);
        self.0.insert(id, record.clone());
        Ok(Some(record))
    }
}
