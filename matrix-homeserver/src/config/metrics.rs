//! `[metrics]`: Prometheus metrics on a listener of their own.

use serde::{Deserialize, Serialize};

/// Prometheus metrics (off by default). When on, the server counts requests, events and the
/// rest (see `docs/metrics.md`) and [`crate::Homeserver::serve_metrics`] answers
/// `GET /metrics` in the Prometheus text format. The library binds nothing itself: `listen` is
/// where the binary listens (keep it on loopback or a private network: the metrics name the
/// server's routes, rooms count and federation peers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Whether metrics are collected and served.
    pub enabled: bool,
    /// The address of the metrics listener (Synapse's customary port, 9000, on loopback).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: false, listen: "127.0.0.1:9000".to_owned() }
    }
}
