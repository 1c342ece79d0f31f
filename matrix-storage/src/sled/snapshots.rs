//! State snapshot records in sled: the layered records of [`crate::layers`] over interned ids.
//!
//! A record is stored under its snapshot id, in one of two formats:
//! - **layered** (schema 3): a tag byte `2`; the stack of records below it, bottom first, as
//!   `(id, entries)` varints; then its entries `key -> event` sorted by key, packed at a fixed
//!   width per record (the fewest bytes that hold its largest key and event), so that a key is
//!   found by a binary search in the stored bytes;
//! - **chained** (schema 1 and 2): `bool` has-parent, then parent, depth in its delta chain,
//!   count, and `(key, event)` pairs, all `u64`, sorted by key. The stack of such a record is
//!   its chain of parents, down to a record stored whole (at most 64).
//!
//! Event `0` removes a key. Readers decode records with their names into the process's
//! [`LayerCache`]; a record too big for the cache is searched in place instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::sled::IVec;

use super::batch::Tx;
use super::{KEY_ID, SNAPSHOT, SledStore, bump, intern_event, intern_key, missing, u64_of};
use crate::codec::{Dec, Enc};
use crate::layers::{self, Layer, LayerCache, MAX_STACK, StateKey};
use crate::{ErrorKind, NewSnapshot, Result, SnapshotId, StateEntry, StorageError};

/// The tag of a layered record (a chained one starts with a `bool`: 0 or 1).
const LAYERED: u8 = 2;

fn corrupt(what: &str) -> StorageError {
    StorageError::new(ErrorKind::Corrupt, format!("a snapshot record {what}"))
}

pub(super) fn record_key(id: u64) -> Vec<u8> {
    Enc::table(SNAPSHOT).u64(id).done()
}

/// What is below a record.
#[derive(Debug)]
enum Below {
    /// Layered: the stack below, bottom first, `(id, entries)`.
    Stack(Vec<(u64, u64)>),
    /// Chained: the parent, if any.
    Parent(Option<u64>),
}

/// A stored record, read in place.
#[derive(Debug)]
struct Record {
    bytes: IVec,
    below: Below,
    /// Where the entries start, their count, and the widths of a key and of an event.
    start: usize,
    count: usize,
    key_width: usize,
    event_width: usize,
}

fn read_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn width(n: u64) -> usize {
    (8 - n.leading_zeros() as usize / 8).max(1)
}

impl Record {
    fn parse(bytes: IVec) -> Result<Self> {
        let mut dec = Dec::new(&bytes);
        let (below, key_width, event_width, count) = match bytes.first() {
            Some(&LAYERED) => {
                dec.raw(1)?;
                let depth = dec.var()?;
                if depth as usize >= MAX_STACK {
                    return Err(layers::chain_loops());
                }
                let mut below = Vec::with_capacity(depth as usize);
                for _ in 0..depth {
                    below.push((dec.var()?, dec.var()?));
                }
                let widths = dec.raw(2)?;
                (Below::Stack(below), usize::from(widths[0]), usize::from(widths[1]), dec.var()?)
            }
            _ => {
                let has_parent = dec.bool()?;
                let parent = dec.u64()?;
                let _depth = dec.u64()?;
                (Below::Parent(has_parent.then_some(parent)), 8, 8, dec.u64()?)
            }
        };
        if !(1..=8).contains(&key_width) || !(1..=8).contains(&event_width) {
            return Err(corrupt("has a bad width"));
        }
        let start = bytes.len() - dec.rest().len();
        let count = usize::try_from(count).map_err(|_| corrupt("is too long"))?;
        if count.checked_mul(key_width + event_width) != Some(dec.rest().len()) {
            return Err(corrupt("does not decode"));
        }
        let record = Record { bytes, below, start, count, key_width, event_width };
        if !(1..count).all(|i| record.key(i - 1) < record.key(i)) {
            return Err(corrupt("is not sorted"));
        }
        Ok(record)
    }

    fn at(&self, i: usize) -> &[u8] {
        let size = self.key_width + self.event_width;
        &self.bytes[self.start + i * size..self.start + (i + 1) * size]
    }

    fn key(&self, i: usize) -> u64 {
        read_be(&self.at(i)[..self.key_width])
    }

    fn entry(&self, i: usize) -> (u64, u64) {
        let bytes = self.at(i);
        (read_be(&bytes[..self.key_width]), read_be(&bytes[self.key_width..]))
    }

    /// The event this record sets `key` to (`Some(0)`: it removes the key).
    fn find(&self, key: u64) -> Option<u64> {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let mid = (low + high) / 2;
            match self.key(mid).cmp(&key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(self.entry(mid).1),
            }
        }
        None
    }

    /// The entries, sorted by key, `None` removing the key.
    fn entries(&self) -> impl Iterator<Item = (u64, Option<u64>)> + '_ {
        (0..self.count).map(|i| {
            let (key, event) = self.entry(i);
            (key, (event != 0).then_some(event))
        })
    }
}

/// A layered record: the stack below it (bottom first) and its entries (sorted by key).
fn encode(below: &[(u64, u64)], entries: &[(u64, Option<u64>)]) -> Vec<u8> {
    let mut enc = Enc::default().raw(&[LAYERED]).var(below.len() as u64);
    for &(id, size) in below {
        enc = enc.var(id).var(size);
    }
    let key_width = width(entries.iter().map(|e| e.0).max().unwrap_or(0));
    let event_width = width(entries.iter().filter_map(|e| e.1).max().unwrap_or(0));
    enc = enc.raw(&[key_width as u8, event_width as u8]).var(entries.len() as u64);
    let mut bytes = enc.done();
    bytes.reserve(entries.len() * (key_width + event_width));
    for &(key, event) in entries {
        bytes.extend_from_slice(&key.to_be_bytes()[8 - key_width..]);
        bytes.extend_from_slice(&event.unwrap_or(0).to_be_bytes()[8 - event_width..]);
    }
    bytes
}

/// The stack of record `id` (bottom first, `(id, entries)`, itself last), reading records
/// with `get`; `None` if there is no record `id`.
fn stack_with(
    id: u64,
    mut get: impl FnMut(u64) -> Result<Option<IVec>>,
) -> Result<Option<Vec<(u64, u64)>>> {
    let mut chain = Vec::new();
    let mut next = Some(id);
    while let Some(current) = next {
        let Some(bytes) = get(current)? else {
            return if current == id { Ok(None) } else { Err(layers::dangling_layer(current)) };
        };
        let record = Record::parse(bytes)?;
        chain.push((current, record.count as u64));
        next = match record.below {
            Below::Parent(parent) => parent,
            Below::Stack(mut stack) => {
                stack.extend(chain.into_iter().rev());
                return Ok(Some(stack));
            }
        };
        if chain.len() > MAX_STACK {
            return Err(layers::chain_loops());
        }
    }
    chain.reverse();
    Ok(Some(chain))
}

/// Writes the change set's new snapshot ([`layers::compact`]) and returns its id.
pub(super) fn write(tx: &Tx<'_>, new: &NewSnapshot) -> Result<SnapshotId> {
    let get = |id: u64| tx.get(record_key(id));
    let stack = match new.parent {
        Some(parent) => match stack_with(parent.0, get)? {
            Some(stack) => stack,
            None => return missing(format!("parent snapshot {}", parent.0)),
        },
        None => Vec::new(),
    };
    // Applied in order: of two changes to one key, the later wins.
    let mut delta: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for (kind, state_key, event) in &new.changes {
        let key = intern_key(tx, kind, state_key)?;
        let nid = match event {
            Some(event) => Some(intern_event(tx, event)?),
            None => None,
        };
        delta.insert(key, nid);
    }
    let load = |id: u64| -> Result<Vec<(u64, Option<u64>)>> {
        let bytes = get(id)?.ok_or_else(|| layers::dangling_layer(id))?;
        Ok(Record::parse(bytes)?.entries().collect())
    };
    let (kept, entries) = layers::compact(&stack, delta.into_iter().collect(), load)?;
    let id = bump(tx, "next_snapshot", 1, 0)?;
    tx.insert(record_key(id), encode(&stack[..kept], &entries))?;
    Ok(SnapshotId(id))
}

/// Whether snapshot `id` exists, as the change set sees it.
pub(super) fn exists(tx: &Tx<'_>, cache: &LayerCache, id: u64) -> Result<bool> {
    Ok(cache.layer(id).is_some() || tx.get(record_key(id))?.is_some())
}

impl SledStore {
    fn record(&self, id: u64) -> Result<Option<Record>> {
        self.get(&record_key(id))?.map(Record::parse).transpose()
    }

    /// The stack of snapshot `id` (bottom first, itself last), or `None` if it does not exist.
    fn stack(&self, id: u64) -> Result<Option<Vec<(u64, u64)>>> {
        if let Some(layer) = self.snapshots.layer(id) {
            return Ok(Some(layer.stack(id)));
        }
        stack_with(id, |id| self.get(&record_key(id)))
    }

    /// Record `id` decoded with its names; cached if it fits. `below` is its stack below it.
    fn layer(&self, id: u64, below: &[(u64, u64)]) -> Result<Arc<Layer>> {
        if let Some(layer) = self.snapshots.layer(id) {
            return Ok(layer);
        }
        let record = self.record(id)?.ok_or_else(|| layers::dangling_layer(id))?;
        let mut entries = Vec::with_capacity(record.count);
        for (key, nid) in record.entries() {
            let name = self.snapshots.key(key, || {
                let (kind, state_key) = self.key_name(key)?;
                Ok(StateKey { kind: kind.into(), state_key: state_key.into() })
            })?;
            let event = match nid {
                Some(nid) => Some(self.snapshots.event(nid, || self.event_name(nid))?),
                None => None,
            };
            entries.push((name, event));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if !entries.windows(2).all(|pair| pair[0].0 != pair[1].0) {
            return Err(corrupt("names one key twice"));
        }
        let layer = Arc::new(Layer::new(below.to_vec(), entries));
        if self.snapshots.fits(record.count as u64) {
            self.snapshots.insert(id, layer.clone());
        }
        Ok(layer)
    }

    /// The event at `(kind, state_key)` in snapshot `id`.
    pub(super) fn lookup(&self, id: u64, kind: &str, state_key: &str) -> Result<Option<String>> {
        let Some(stack) = self.stack(id)? else { return Ok(None) };
        // The key's interned id, for records searched in place (read once, if needed).
        let mut interned: Option<Option<u64>> = None;
        let hash = layers::key_hash(kind, state_key);
        for (i, &(record, entries)) in stack.iter().enumerate().rev() {
            let layer = match self.snapshots.layer(record) {
                Some(layer) => Some(layer),
                None if self.snapshots.fits(entries) => Some(self.layer(record, &stack[..i])?),
                None => None,
            };
            let found = if let Some(layer) = layer {
                layer.get(kind, state_key, hash).map(|e| e.cloned())
            } else {
                let key = match interned {
                    Some(key) => key,
                    None => {
                        let key = Enc::table(KEY_ID).str(kind).str(state_key).done();
                        *interned.insert(self.get(&key)?.map(|v| u64_of(&v)).transpose()?)
                    }
                };
                // A key never interned is in no record.
                let Some(key) = key else { return Ok(None) };
                let record = self.record(record)?.ok_or_else(|| layers::dangling_layer(record))?;
                match record.find(key) {
                    Some(0) => Some(None),
                    Some(nid) => Some(Some(self.snapshots.event(nid, || self.event_name(nid))?)),
                    None => None,
                }
            };
            if let Some(event) = found {
                return Ok(event.map(|e| e.to_string()));
            }
        }
        Ok(None)
    }

    /// The whole state of snapshot `id`, sorted.
    pub(super) fn full_state(&self, id: u64) -> Result<Vec<StateEntry>> {
        let Some(stack) = self.stack(id)? else { return Ok(Vec::new()) };
        let layers = stack
            .iter()
            .enumerate()
            .map(|(i, &(record, _))| self.layer(record, &stack[..i]))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Layer> = layers.iter().map(|layer| &**layer).collect();
        Ok(layers::full(&refs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_found_in_place() {
        let entries = vec![(1, Some(300)), (2, None), (70_000, Some(5))];
        let bytes = encode(&[(4, 1_000), (9, 12)], &entries);
        let record = Record::parse(IVec::from(bytes)).expect("parses");
        assert_eq!((record.key_width, record.event_width), (3, 2));
        assert_eq!(record.entries().collect::<Vec<_>>(), entries);
        assert_eq!(record.find(2), Some(0));
        assert_eq!(record.find(70_000), Some(5));
        assert_eq!(record.find(3), None);
        assert!(matches!(record.below, Below::Stack(ref s) if s == &[(4, 1_000), (9, 12)]));
    }

    #[test]
    fn chained_records_still_read() {
        // As schemas 1 and 2 wrote them: parent 7, depth 3, two entries.
        let bytes = Enc::default().bool(true).u64(7).u64(3).u64(2);
        let bytes = bytes.u64(5).u64(50).u64(6).u64(0).done();
        let record = Record::parse(IVec::from(bytes)).expect("parses");
        assert!(matches!(record.below, Below::Parent(Some(7))));
        assert_eq!(record.entries().collect::<Vec<_>>(), vec![(5, Some(50)), (6, None)]);
    }

    #[test]
    fn bad_records_are_corrupt() {
        let unsorted = Enc::default().bool(false).u64(0).u64(0).u64(2);
        let unsorted = unsorted.u64(6).u64(1).u64(5).u64(1).done();
        let short = encode(&[], &[(1, Some(1))]);
        let loops = Enc::default().raw(&[LAYERED]).var(1_000).done();
        for bytes in [unsorted, short[..short.len() - 1].to_vec(), loops, vec![9]] {
            let err = Record::parse(IVec::from(bytes)).expect_err("corrupt");
            assert_eq!(err.kind(), ErrorKind::Corrupt);
        }
    }
}
