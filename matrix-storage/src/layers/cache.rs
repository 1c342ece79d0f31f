//! Decoded records and the names they hold, cached in the process (sled and PostgreSQL).
//!
//! Everything here is keyed by ids that never change meaning once committed: a record never
//! changes, and an interned key or event id always names the same key or event. So the cache
//! needs no invalidation, also when other processes write the same database, as long as it
//! is only filled from committed data (a record read inside a change set that may still fail
//! could be that change set's own).

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, UnitWeighter};

use super::{Layer, StateKey};
use crate::Result;

#[derive(Debug, Clone)]
struct Weight;

impl quick_cache::Weighter<u64, Arc<Layer>> for Weight {
    fn weight(&self, _id: &u64, layer: &Arc<Layer>) -> u64 {
        layer.entries.len() as u64 + 1
    }
}

type Names<V> = Cache<u64, V, UnitWeighter>;

/// Decoded records, weighed by their entries, and the names of keys and events by id.
pub(crate) struct LayerCache {
    layers: Cache<u64, Arc<Layer>, Weight>,
    keys: Names<Arc<StateKey>>,
    events: Names<Arc<str>>,
    entries: u64,
}

impl std::fmt::Debug for LayerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerCache").field("entries", &self.layers.weight()).finish()
    }
}

fn cache<V: Clone, W: quick_cache::Weighter<u64, V> + Clone>(
    items: u64,
    weight: u64,
    weighter: W,
) -> Cache<u64, V, W> {
    let options = OptionsBuilder::new()
        .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX).max(16))
        .weight_capacity(weight.max(1))
        // Few shards: each holds an equal part of the capacity, and a big record (the bottom
        // of a large room's stack) must fit in one.
        .shards(4)
        .build();
    match options {
        Ok(options) => Cache::with_options(
            options,
            weighter,
            DefaultHashBuilder::default(),
            Default::default(),
        ),
        Err(_) => Cache::with_weighter(16, weight.max(1), weighter),
    }
}

impl LayerCache {
    /// A cache of about `entries` decoded state entries (each about 50 bytes with its index,
    /// plus the names it shares with the other records of its room), and of as many names.
    pub(crate) fn new(entries: u64) -> Self {
        LayerCache {
            layers: cache(entries / 64, entries, Weight),
            keys: cache(entries, entries, UnitWeighter),
            events: cache(entries, entries, UnitWeighter),
            entries,
        }
    }

    /// Whether a record of this many entries is worth decoding into the cache: one that
    /// would push out much of everything else is read in place instead.
    pub(crate) fn fits(&self, entries: u64) -> bool {
        entries <= self.entries / 8
    }

    /// The decoded record `id`, if cached.
    pub(crate) fn layer(&self, id: u64) -> Option<Arc<Layer>> {
        self.layers.get(&id)
    }

    /// Caches the decoded record `id`, read from committed data.
    pub(crate) fn insert(&self, id: u64, layer: Arc<Layer>) {
        self.layers.insert(id, layer);
    }

    /// The name of the interned key `id`, from the cache or else from `read` (committed data).
    pub(crate) fn key(
        &self,
        id: u64,
        read: impl FnOnce() -> Result<StateKey>,
    ) -> Result<Arc<StateKey>> {
        if let Some(key) = self.keys.get(&id) {
            return Ok(key);
        }
        let key = Arc::new(read()?);
        self.keys.insert(id, key.clone());
        Ok(key)
    }

    /// The id of the interned event `nid`, from the cache or else from `read` (committed data).
    pub(crate) fn event(
        &self,
        nid: u64,
        read: impl FnOnce() -> Result<String>,
    ) -> Result<Arc<str>> {
        if let Some(event) = self.events.get(&nid) {
            return Ok(event);
        }
        let event: Arc<str> = Arc::from(read()?);
        self.events.insert(nid, event.clone());
        Ok(event)
    }
}
