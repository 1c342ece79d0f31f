//! The counts of the rooms' caches, for the metrics.

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::Rooms;
use crate::metrics::CacheStats;

impl Rooms {
    /// Hits, misses, entries and bound of each cache, named as the metrics label them.
    pub(crate) fn cache_stats(&self) -> Vec<CacheStats> {
        vec![
            stats("events", &self.events),
            stats("snapshots_of", &self.snapshots_of),
            stats("visibility_at", &self.visibility_at),
            stats("replaced", &self.replaced),
            stats("member_summaries", &self.summaries),
            stats("directory_entries", &self.directory_entries),
            stats("memberships", &self.memberships),
            stats("room_versions", &self.versions),
            stats("erased", &self.erased),
            stats("transaction_ids", &self.txns),
            stats("echoes", &self.echoes),
            stats("remote_servers", &self.remote_servers),
            stats("residency", &self.residency),
        ]
    }
}

fn stats<K, V, W>(name: &'static str, cache: &Cache<K, V, W>) -> CacheStats
where
    K: Eq + std::hash::Hash,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    CacheStats {
        name,
        hits: cache.hits(),
        misses: cache.misses(),
        len: u64::try_from(cache.len()).unwrap_or(u64::MAX),
        capacity: cache.capacity(),
    }
}
