//! Rate limits: a token bucket per action and per user or address, as Synapse's `rc_*`
//! settings describe them (`per_second` refills, up to `burst_count`).
//!
//! Buckets that have refilled are worth nothing (a new one starts full), so the table is
//! pruned of them whenever it has doubled since the last pruning: each check costs O(1)
//! amortised, and the table holds only the keys that were limited recently.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{RateLimit, RateLimitsConfig};
use crate::error::ApiError;

/// What is limited (the key is a user id or a client address, as each says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// Sending events and redactions, per user.
    Message,
    /// Logging in, per address.
    Login,
    /// Logging in, per account named.
    LoginAccount,
    /// Failed password checks, per account.
    LoginFailed,
    /// Registering, per address.
    Registration,
    /// Registration token tries, per address.
    RegistrationToken,
    /// The user-interactive password stage, per user.
    UiaPassword,
    /// Joining rooms, per user.
    Join,
    /// Invites, kicks, bans, unbans, leaves, per user.
    Membership,
    /// State events, aliases, directory visibility, per user.
    State,
    /// Creating rooms, per user.
    CreateRoom,
    /// Profile changes, per user.
    Profile,
    /// Typing notices, per user.
    Typing,
    /// Receipts and read markers, per user.
    Receipt,
    /// Account data, tags, device names, forgetting rooms, per user.
    AccountData,
    /// To-device messages, per user.
    ToDevice,
    /// Key uploads, per user.
    KeyUpload,
    /// Media uploads, per user.
    MediaUpload,
    /// URL previews, per user.
    UrlPreview,
    /// Lookups of whether users exist, per user or address.
    Lookup,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The limit it fills by (the configured one, or the user's own).
    limit: RateLimit,
}

/// The table is never pruned below this size (pruning a small table is not worth it).
const PRUNE_FLOOR: usize = 1024;

#[derive(Debug)]
struct Table {
    buckets: HashMap<(Action, String), Bucket>,
    /// The size at which the next pruning runs.
    prune_at: usize,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    config: RateLimitsConfig,
    table: Mutex<Table>,
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitsConfig) -> Self {
        RateLimiter {
            config,
            table: Mutex::new(Table { buckets: HashMap::new(), prune_at: PRUNE_FLOOR }),
        }
    }

    fn limit(&self, action: Action) -> RateLimit {
        let c = &self.config;
        match action {
            Action::Message => c.message,
            Action::Login => c.login,
            Action::LoginAccount => c.login_account,
            Action::LoginFailed => c.login_failed,
            Action::Registration => c.registration,
            Action::RegistrationToken => c.registration_token,
            Action::UiaPassword => c.uia_password,
            Action::Join => c.joins,
            Action::Membership => c.membership,
            Action::State => c.state,
            Action::CreateRoom => c.create_room,
            Action::Profile => c.profile,
            Action::Typing => c.typing,
            Action::Receipt => c.receipts,
            Action::AccountData => c.account_data,
            Action::ToDevice => c.to_device,
            Action::KeyUpload => c.key_upload,
            Action::MediaUpload => c.media_upload,
            Action::UrlPreview => c.url_preview,
            Action::Lookup => c.lookups,
        }
    }

    /// Takes one token of `action` for `key`, or answers 429 with when to retry.
    pub(crate) fn check(&self, action: Action, key: &str) -> Result<(), ApiError> {
        self.bucket(action, key, true)
    }

    /// Takes one token of `action` for the user `user_id`, under the user's own limit when an
    /// administrator set one (Synapse's `override_ratelimit`; 0 and 0: not limited).
    pub(crate) fn check_user(
        &self,
        action: Action,
        user_id: &str,
        limit: Option<matrix_storage::RatelimitOverride>,
    ) -> Result<(), ApiError> {
        match limit {
            None => self.bucket(action, user_id, true),
            Some(limit) if limit.messages_per_second == 0 && limit.burst_count == 0 => Ok(()),
            Some(limit) => {
                let own =
                    RateLimit::new(limit.messages_per_second as f64, limit.burst_count as f64);
                self.bucket_with(action, user_id, true, own)
            }
        }
    }

    /// Answers 429 when `action`'s bucket for `key` is empty, without taking a token (for
    /// limits that count failures only: see [`RateLimiter::spend`]).
    pub(crate) fn ready(&self, action: Action, key: &str) -> Result<(), ApiError> {
        self.bucket(action, key, false)
    }

    /// Takes one token if there is one (a failure being counted after the fact).
    pub(crate) fn spend(&self, action: Action, key: &str) {
        let _ = self.bucket(action, key, true);
    }

    fn bucket(&self, action: Action, key: &str, take: bool) -> Result<(), ApiError> {
        self.bucket_with(action, key, take, self.limit(action))
    }

    fn bucket_with(
        &self,
        action: Action,
        key: &str,
        take: bool,
        limit: RateLimit,
    ) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        let burst = limit.burst_count.max(1.0);
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.buckets.len() >= table.prune_at {
            table.buckets.retain(|_, bucket| {
                let limit = bucket.limit;
                bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * limit.per_second
                    < limit.burst_count.max(1.0)
            });
            table.prune_at = (table.buckets.len() * 2).max(PRUNE_FLOOR);
        }
        let bucket = match table.buckets.get_mut(&(action, key.to_owned())) {
            Some(bucket) => bucket,
            // A key never seen has a full bucket: nothing to store unless a token is taken.
            None if !take => return Ok(()),
            None => table.buckets.entry((action, key.to_owned())).or_insert(Bucket {
                tokens: burst,
                at: now,
                limit,
            }),
        };
        if bucket.limit != limit {
            // An administrator changed the user's own limit: a bucket of the new one starts.
            *bucket = Bucket { tokens: burst, at: now, limit };
        }
        let refilled =
            bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * limit.per_second;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        let wait =
            if limit.per_second > 0.0 { (1.0 - bucket.tokens) / limit.per_second } else { 3600.0 };
        Err(ApiError::limit_exceeded((wait * 1000.0).ceil() as u64))
    }

    /// How many buckets are kept (for the pruning test).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|t| t.buckets.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refilled_buckets_are_pruned_so_the_table_stays_small() {
        // Refills at once: every bucket is prunable as soon as it is made.
        let config =
            RateLimitsConfig { typing: RateLimit::new(1.0e9, 2.0), ..RateLimitsConfig::default() };
        let limiter = RateLimiter::new(config);
        for i in 0..100_000 {
            limiter.check(Action::Typing, &format!("@u{i}:x")).expect("a full bucket");
        }
        assert!(limiter.len() <= 2 * PRUNE_FLOOR, "{} buckets kept", limiter.len());
    }

    #[test]
    fn an_empty_bucket_refuses_with_a_retry_time_and_ready_does_not_take() {
        let config = RateLimitsConfig {
            login_failed: RateLimit::new(0.1, 2.0),
            ..RateLimitsConfig::default()
        };
        let limiter = RateLimiter::new(config);
        for _ in 0..5 {
            limiter.ready(Action::LoginFailed, "@a:x").expect("ready never takes");
        }
        limiter.spend(Action::LoginFailed, "@a:x");
        limiter.spend(Action::LoginFailed, "@a:x");
        let error = limiter.ready(Action::LoginFailed, "@a:x").expect_err("spent");
        assert_eq!(error.errcode(), "M_LIMIT_EXCEEDED");
        limiter.ready(Action::LoginFailed, "@b:x").expect("another account is not limited");
    }
}
