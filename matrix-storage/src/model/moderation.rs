//! What the server's administrators decided about one of our users (Synapse's admin API):
//! shadow bans, suspensions and rate-limit overrides, and the access tokens they had made
//! to act as a user.

/// An administrator's decisions about one user; a user without a record has none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserModeration {
    /// The user.
    pub user_id: String,
    /// Their requests succeed but change nothing others see (Synapse's shadow ban).
    pub shadow_banned: bool,
    /// They may read but not act in rooms (MSC3823, `M_USER_SUSPENDED`).
    pub suspended: bool,
    /// Their own rate limit in place of the configured ones.
    pub ratelimit: Option<RatelimitOverride>,
}

impl UserModeration {
    /// No decision at all (a record with nothing in it is as good as none).
    pub fn is_empty(&self) -> bool {
        !self.shadow_banned && !self.suspended && self.ratelimit.is_none()
    }
}

/// A user's own rate limit (Synapse's `override_ratelimit`): `messages_per_second` actions
/// regained per second, up to `burst_count`; both 0 means not limited at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RatelimitOverride {
    /// Actions regained per second.
    pub messages_per_second: u64,
    /// The most actions in a burst.
    pub burst_count: u64,
}

/// An access token an administrator had made for a user (Synapse's
/// `/_synapse/admin/v1/users/{userId}/login`): it acts as the user, belongs to none of
/// their devices and ends at `valid_until_ms` if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PuppetToken {
    /// The token's hash (as access tokens are kept).
    pub token_hash: String,
    /// The user it acts as.
    pub user_id: String,
    /// The administrator who had it made.
    pub issued_by: String,
    /// When it stops working, in milliseconds since the Unix epoch; `None`: never.
    pub valid_until_ms: Option<u64>,
}
