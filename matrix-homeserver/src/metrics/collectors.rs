//! Metrics read at each scrape from what the services already keep: the caches' hit counts
//! and the federation sender's queue.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// How many destinations the per-destination failure gauge lists at most (those failing
/// longest), so that the label set stays bounded however many servers are unreachable.
const MAX_FAILING_DESTINATIONS: usize = 20;

/// One cache's counts since the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheStats {
    /// Its name, the `name` label.
    pub(crate) name: &'static str,
    /// Lookups that found an entry.
    pub(crate) hits: u64,
    /// Lookups that found none.
    pub(crate) misses: u64,
    /// Entries held now.
    pub(crate) len: u64,
    /// Its bound (in entries, or in its weight's unit).
    pub(crate) capacity: u64,
}

/// The caches, as Synapse reports its own (`synapse/util/caches/__init__.py`): gauges of hits,
/// of lookups (`synapse_util_caches_cache`), of entries and of the bound, per cache name.
pub(crate) struct Caches(pub(crate) Box<dyn Fn() -> Vec<CacheStats> + Send + Sync>);

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// What one of the cache families reports of a cache.
type CacheCount = fn(&CacheStats) -> u64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabel {
    name: &'static str,
}

impl Collector for Caches {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = (self.0)();
        let families: [(&str, &str, CacheCount); 4] = [
            ("synapse_util_caches_cache_hits", "Cache lookups that found an entry", |s| s.hits),
            ("synapse_util_caches_cache", "Cache lookups", |s| s.hits.saturating_add(s.misses)),
            ("synapse_util_caches_cache_size", "Entries in the cache", |s| s.len),
            ("synapse_util_caches_cache_max_size", "The cache's bound", |s| s.capacity),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for cache in &stats {
                let gauge = ConstGauge::new(i64::try_from(value(cache)).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(&CacheLabel { name: cache.name })?)?;
            }
        }
        Ok(())
    }
}

/// The federation sender's queue: destinations with something to send, transactions sent,
/// failed attempts, and the consecutive failures of the destinations failing longest.
#[derive(Debug)]
pub(crate) struct FederationQueue(pub(crate) Arc<matrix_federation::sender::Sender>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

impl Collector for FederationQueue {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts = self.0.counts();
        let mut destinations = self.0.destinations();
        let counters = [
            (
                "synapse_federation_client_sent_transactions",
                "Federation transactions sent and acknowledged",
                counts.transactions,
            ),
            (
                "matrix_homeserver_federation_send_failures",
                "Federation send attempts that failed (and are retried)",
                counts.failures,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let pending = ConstGauge::new(i64::try_from(destinations.len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "synapse_federation_transaction_queue_pending_destinations",
            "Destinations with events or EDUs waiting to be sent",
            None,
            pending.metric_type(),
        )?;
        pending.encode(metric)?;
        destinations.retain(|(_, failures)| *failures > 0);
        destinations.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        destinations.truncate(MAX_FAILING_DESTINATIONS);
        let mut family = encoder.encode_descriptor(
            "matrix_homeserver_federation_destination_failures",
            "Consecutive failed sends to a destination (the 20 failing longest)",
            None,
            MetricType::Gauge,
        )?;
        for (destination, failures) in destinations {
            let gauge = ConstGauge::new(i64::from(failures));
            gauge.encode(family.encode_family(&DestinationLabel { destination })?)?;
        }
        Ok(())
    }
}
