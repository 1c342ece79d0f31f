//! VoIP settings: the TURN server handed to clients (`GET /voip/turnServer`), and delayed
//! events (MSC4140, which Element Call uses for its call memberships).

use serde::{Deserialize, Serialize};

/// The TURN server clients are told about, as Synapse's `turn_*` settings. With `uris` and
/// `shared_secret`, each client gets credentials of the TURN REST API (coturn's
/// `use-auth-secret`): the username `{expiry}:{user_id}` and the password
/// `base64(HMAC-SHA1(shared_secret, username))`. With `uris`, `username` and `password` and
/// no secret, every client gets those. Otherwise `/voip/turnServer` answers `{}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TurnConfig {
    /// The TURN URIs (`turn:turn.example.org:3478?transport=udp`, `turns:...`).
    pub uris: Vec<String>,
    /// The secret shared with the TURN server.
    pub shared_secret: Option<String>,
    /// A fixed username, used when there is no shared secret.
    pub username: Option<String>,
    /// The password of the fixed username.
    pub password: Option<String>,
    /// How long credentials are valid, in seconds (Synapse's default: an hour).
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            uris: Vec::new(),
            shared_secret: None,
            username: None,
            password: None,
            ttl_secs: 3600,
        }
    }
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets stay out of logs.
        f.debug_struct("TurnConfig")
            .field("uris", &self.uris)
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "..."))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "..."))
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// Delayed events (MSC4140): events a user schedules with `?org.matrix.msc4140.delay=` on
/// `/send` and `/state`, sent by the server later with the user's authority unless restarted
/// or cancelled meanwhile. Either bound at 0 turns them off (403 `M_FORBIDDEN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DelayedEventsConfig {
    /// The longest delay accepted, in milliseconds (longer: 403 `M_FORBIDDEN`).
    pub max_delay_ms: u64,
    /// How many delayed events one user may have waiting (more: 429 `M_LIMIT_EXCEEDED`);
    /// Synapse's default.
    pub max_per_user: usize,
}

impl Default for DelayedEventsConfig {
    fn default() -> Self {
        DelayedEventsConfig { max_delay_ms: 24 * 60 * 60 * 1000, max_per_user: 100 }
    }
}

impl DelayedEventsConfig {
    /// Whether delayed events may be scheduled at all.
    pub fn enabled(&self) -> bool {
        self.max_delay_ms > 0 && self.max_per_user > 0
    }
}
