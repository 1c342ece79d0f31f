//! Rate limits: a token bucket per action and per user or address, as Synapse's `rc_*`
//! settings describe them (`per_second` refills, up to `burst_count`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{RateLimit, RateLimitsConfig};
use crate::error::ApiError;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// Sending events, per user.
    Message,
    /// Logging in, per address.
    Login,
    /// Registering, per address.
    Registration,
    /// Joining rooms, per user.
    Join,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// When the table holds this many buckets, full ones are dropped.
const PRUNE_AT: usize = 100_000;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    config: RateLimitsConfig,
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitsConfig) -> Self {
        RateLimiter { config, buckets: Mutex::new(HashMap::new()) }
    }

    fn limit(&self, action: Action) -> RateLimit {
        match action {
            Action::Message => self.config.message,
            Action::Login => self.config.login,
            Action::Registration => self.config.registration,
            Action::Join => self.config.joins,
        }
    }

    /// Takes one token of `action` for `key`, or answers 429 with when to retry.
    pub(crate) fn check(&self, action: Action, key: &str) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        let limit = self.limit(action);
        let burst = limit.burst_count.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|(action, _), bucket| {
                let limit = self.limit(*action);
                bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * limit.per_second
                    < limit.burst_count
            });
        }
        let bucket =
            buckets.entry((action, key.to_owned())).or_insert(Bucket { tokens: burst, at: now });
        let refilled =
            bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * limit.per_second;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait =
            if limit.per_second > 0.0 { (1.0 - bucket.tokens) / limit.per_second } else { 3600.0 };
        Err(ApiError::limit_exceeded((wait * 1000.0).ceil() as u64))
    }
}
