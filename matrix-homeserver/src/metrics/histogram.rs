//! A histogram of durations made of atomics (the Prometheus client's own takes a lock per
//! observation), with the buckets of Python's Prometheus client, which Synapse's histograms
//! use: dashboards' `histogram_quantile` reads the same bounds from either server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The upper bounds of the buckets, in seconds (`+Inf` follows).
const BOUNDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A histogram of durations; clones share their counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    /// The sum of the observations, in nanoseconds (584 years fit).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `elapsed`.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(BOUNDS.len());
        if let Some(count) = self.0.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Times from now until the returned guard is dropped.
    pub(crate) fn start_timer(&self) -> Timer {
        Timer { histogram: self.clone(), started: Instant::now() }
    }

    /// How many observations there were.
    #[cfg(test)]
    fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// Observes the time since it was made when it is dropped ([`Histogram::start_timer`]).
#[derive(Debug)]
pub(crate) struct Timer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Per bucket, as the encoder wants them (it writes them cumulated, as the format does).
        let mut count = 0;
        let mut buckets = Vec::with_capacity(BOUNDS.len() + 1);
        for (observed, bound) in self.0.buckets.iter().zip(BOUNDS.iter().chain([&f64::INFINITY])) {
            let observed = observed.load(Ordering::Relaxed);
            count += observed;
            buckets.push((*bound, observed));
        }
        // The count is the buckets' (always consistent with them); the sum may already hold
        // an observation still on its way into a bucket.
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(10));
        histogram.observe(Duration::from_secs(60));
        let counts: Vec<u64> =
            histogram.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(histogram.count(), 3);
        assert_eq!(histogram.0.sum_nanos.load(Ordering::Relaxed), 60_013_000_000);
    }

    #[test]
    fn the_text_format_has_cumulative_buckets() {
        let histogram = Histogram::default();
        for elapsed in [3, 10, 60_000] {
            histogram.observe(Duration::from_millis(elapsed));
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("t_seconds", "a test", histogram);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("text");
        for line in [
            "t_seconds_bucket{le=\"0.005\"} 1\n",
            "t_seconds_bucket{le=\"0.01\"} 2\n",
            "t_seconds_bucket{le=\"10\"} 2\n",
            "t_seconds_bucket{le=\"+Inf\"} 3\n",
            "t_seconds_count 3\n",
            "t_seconds_sum 60.013\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
