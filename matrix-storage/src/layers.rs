//! State snapshots as a few layers, shared by every backend.
//!
//! A snapshot is one record (its *layer*) on a *stack* of older records: the state is the
//! stack read top down, the first entry for a key winning (an entry without an event removes
//! the key). The bottom record of a stack holds a whole state; the others are deltas on the
//! records below them. Records never change once written, so they are shared by every
//! snapshot whose stack holds them, and readers may cache them without invalidation.
//!
//! **Writing** a snapshot on a parent: the new record starts as the changes, and absorbs the
//! parent's top record (merging it in, the newer entry of a key winning) while it is at
//! least a [`RATIO`]th of that record's size, or while the stack would be deeper than
//! [`MAX_DEPTH`]. What is left of the parent's stack goes below it. A record that absorbs the
//! bottom one becomes a whole state itself (its removals dropped). So sizes shrink at least
//! [`RATIO`]-fold from one record to the next going up a stack, which is what keeps stacks
//! short (`1 + log3` of the state size, and never more than [`MAX_DEPTH`]), and a record of
//! size `s` is only rewritten once about `s / RATIO` newer entries piled up on it, which is
//! what keeps writing cheap: an entry is rewritten a few times per layer, and a chain of
//! `n` one-key changes writes about `1.2 * log3(n)` entries per change (7.3 at 1,000
//! members, 12.2 at 50,000, against 8.7 and 392 for a whole copy every 64 changes). An
//! unbounded delta chain would write one per change, at the cost of reading the whole chain;
//! any bound on the records a read touches costs a factor that grows with the state, and the
//! layers make it the logarithm. `layers::tests::writes_grow_with_the_logarithm` measures it.
//!
//! **Reading**: a lookup searches the stack's records top down (at most [`MAX_DEPTH`], or the
//! length of a delta chain written by an older version: at most 64), and a whole state merges
//! them. [`Layer`] is a record decoded with its names, sorted by `(type, state_key)`, so a
//! whole state is a merge of sorted runs, already in the order it is returned in.

#[cfg(any(feature = "sled", feature = "postgres"))]
mod cache;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

#[cfg(any(feature = "sled", feature = "postgres"))]
pub(crate) use cache::LayerCache;

use crate::{ErrorKind, Result, StateEntry, StorageError};

/// A new record absorbs the top record of its stack while it has at least a `RATIO`th of
/// that record's entries.
pub(crate) const RATIO: u64 = 3;

/// The most records a stack written by this version holds: a read touches at most this many.
pub(crate) const MAX_DEPTH: usize = 8;

/// The most records any stack may hold (delta chains written by an older version are up to
/// 64 records deep); a longer one is corrupt.
#[cfg(any(feature = "sled", feature = "postgres"))]
pub(crate) const MAX_STACK: usize = 256;

/// Entries `key -> event` sorted by key, one per key (`None` removes the key).
pub(crate) type Sorted<K, V> = Vec<(K, Option<V>)>;

/// Whether a new record of `merged` entries, to go on a stack of `depth` records whose top
/// one has `top` entries, absorbs that top record first.
pub(crate) fn absorbs(depth: usize, top: u64, merged: usize) -> bool {
    depth >= MAX_DEPTH || (merged.max(1) as u64).saturating_mul(RATIO) > top
}

/// `upper` merged over `lower` (both sorted by key, one entry per key): of two entries for
/// one key, `upper`'s wins.
pub(crate) fn merge<K: Ord, V>(
    lower: impl IntoIterator<Item = (K, Option<V>)>,
    upper: impl IntoIterator<Item = (K, Option<V>)>,
) -> Sorted<K, V> {
    let mut lower = lower.into_iter().peekable();
    let mut upper = upper.into_iter().peekable();
    let mut out = Vec::with_capacity(lower.size_hint().0 + upper.size_hint().0);
    loop {
        let order = match (lower.peek(), upper.peek()) {
            (Some(l), Some(u)) => l.0.cmp(&u.0),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return out,
        };
        match order {
            Ordering::Less => out.extend(lower.next()),
            Ordering::Greater => out.extend(upper.next()),
            Ordering::Equal => {
                lower.next();
                out.extend(upper.next());
            }
        }
    }
}

/// The record of a new snapshot whose parent's stack is `stack` (`(id, entries)`, bottom
/// first): `changes` (sorted by key, one entry per key) merged with the records from the top
/// of `stack` that [`absorbs`] asks for, read with `load`. Returns how many records of
/// `stack` stay below the new one, and its entries (without removals if it is a whole state).
pub(crate) fn compact<K: Ord, V, L>(
    stack: &[(u64, u64)],
    changes: Sorted<K, V>,
    mut load: impl FnMut(u64) -> Result<L>,
) -> Result<(usize, Sorted<K, V>)>
where
    L: IntoIterator<Item = (K, Option<V>)>,
{
    let mut kept = stack.len();
    let mut record = changes;
    while kept > 0 && absorbs(kept, stack[kept - 1].1, record.len()) {
        kept -= 1;
        record = merge(load(stack[kept].0)?, record);
    }
    if kept == 0 {
        record.retain(|(_, event)| event.is_some());
    }
    Ok((kept, record))
}

/// `(type, state_key)`, ordered by type, then state key (byte-wise, as every backend sorts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StateKey {
    pub(crate) kind: Box<str>,
    pub(crate) state_key: Box<str>,
}

impl StateKey {
    pub(crate) fn new(kind: &str, state_key: &str) -> Self {
        StateKey { kind: kind.into(), state_key: state_key.into() }
    }

    fn cmp_to(&self, kind: &str, state_key: &str) -> Ordering {
        (&*self.kind, &*self.state_key).cmp(&(kind, state_key))
    }
}

/// A record decoded with its names: `key -> event` sorted by key (`None` removes the key).
pub(crate) type Entries = Vec<(Arc<StateKey>, Option<Arc<str>>)>;

/// A decoded record and the stack it sits on.
#[derive(Debug)]
pub(crate) struct Layer {
    /// The records below this one, bottom first, as `(id, entries)`.
    pub(crate) below: Vec<(u64, u64)>,
    /// Sorted by key, one entry per key.
    pub(crate) entries: Entries,
    /// The hash of each key ([`key_hash`]) to its entry, so that a lookup in a record that
    /// does not hold the key costs one probe; `None` for a small record, or if two keys share
    /// a hash (then the entries are searched by key).
    index: Option<HashMap<u64, u32, BuildHasherDefault<Prehashed>>>,
}

/// A hasher for keys that are hashes already.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A hash of `(kind, state_key)`, keyed at random per process (state keys come from users).
pub(crate) fn key_hash(kind: &str, state_key: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = KEYS.get_or_init(RandomState::new).build_hasher();
    hasher.write(kind.as_bytes());
    // Never in UTF-8: `("ab", "c")` and `("a", "bc")` hash apart.
    hasher.write_u8(0xff);
    hasher.write(state_key.as_bytes());
    hasher.finish()
}

impl Layer {
    /// A decoded record on the stack `below` (bottom first, `(id, entries)`); `entries` are
    /// sorted by key, one per key.
    pub(crate) fn new(below: Vec<(u64, u64)>, entries: Entries) -> Self {
        // A small record is searched as fast by key as by hash.
        if entries.len() <= 16 {
            return Layer { below, entries, index: None };
        }
        let mut index = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut unique = u32::try_from(entries.len()).is_ok();
        for (i, (key, _)) in entries.iter().enumerate() {
            if !unique {
                break;
            }
            unique = index.insert(key_hash(&key.kind, &key.state_key), i as u32).is_none();
        }
        Layer { below, entries, index: unique.then_some(index) }
    }

    /// The entry for a key whose [`key_hash`] is `hash`: `Some(None)` if this record removes
    /// it, `None` if it says nothing.
    pub(crate) fn get(&self, kind: &str, state_key: &str, hash: u64) -> Option<Option<&Arc<str>>> {
        let i = match &self.index {
            Some(index) => {
                let i = *index.get(&hash)? as usize;
                // Another key with the same hash: this one is not here (each hash is one key's).
                if self.entries[i].0.cmp_to(kind, state_key) != Ordering::Equal {
                    return None;
                }
                i
            }
            None => self.entries.binary_search_by(|(k, _)| k.cmp_to(kind, state_key)).ok()?,
        };
        Some(self.entries[i].1.as_ref())
    }

    /// The stack of this record: the records below it and itself, `(id, entries)`.
    pub(crate) fn stack(&self, id: u64) -> Vec<(u64, u64)> {
        let mut stack = self.below.clone();
        stack.push((id, self.entries.len() as u64));
        stack
    }
}

#[cfg(any(feature = "sled", feature = "postgres"))]
pub(crate) fn chain_loops() -> StorageError {
    StorageError::new(ErrorKind::Corrupt, "a snapshot's stack of records loops or is too deep")
}

pub(crate) fn dangling_layer(id: u64) -> StorageError {
    StorageError::new(ErrorKind::Corrupt, format!("snapshot record {id} of a stack is missing"))
}

/// The event at a key in the snapshot whose own record is `top`, reading the records below it
/// with `get` (top down, stopping at the first that has the key).
pub(crate) fn lookup(
    top: &Layer,
    kind: &str,
    state_key: &str,
    mut get: impl FnMut(u64) -> Result<Arc<Layer>>,
) -> Result<Option<Arc<str>>> {
    let hash = key_hash(kind, state_key);
    if let Some(found) = top.get(kind, state_key, hash) {
        return Ok(found.cloned());
    }
    for &(id, _) in top.below.iter().rev() {
        if let Some(found) = get(id)?.get(kind, state_key, hash) {
            return Ok(found.cloned());
        }
    }
    Ok(None)
}

/// The whole state of a stack of records (bottom first), sorted by `(type, state_key)`.
pub(crate) fn full(stack: &[&Layer]) -> Vec<StateEntry> {
    // Merged from the top down: the upper records are the small ones, so the merged part
    // stays small until the bottom record.
    let mut merged: Vec<(&StateKey, Option<&str>)> = Vec::new();
    for layer in stack.iter().rev() {
        let lower = layer.entries.iter().map(|(k, e)| (&**k, e.as_deref()));
        merged = merge(lower, merged);
    }
    merged
        .into_iter()
        .filter_map(|(key, event)| {
            Some(StateEntry {
                kind: key.kind.to_string(),
                state_key: key.state_key.to_string(),
                event_id: event?.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
