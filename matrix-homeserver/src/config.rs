//! The homeserver's settings. Plain data: the binary reads them from a file, a test builds
//! them in code; this crate never reads files or the environment.

use serde::{Deserialize, Serialize};

/// Everything the homeserver can be told. Every field has a default, and the defaults are the
/// secure ones: registration closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The server name, the part of every user id after the `:` (`example.org`).
    pub server_name: String,
    /// Who may create an account.
    pub registration: RegistrationConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// What `/.well-known/matrix/*` answers.
    pub well_known: WellKnownConfig,
    /// Rate limits (on by default).
    pub rate_limits: RateLimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost".to_owned(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            well_known: WellKnownConfig::default(),
            rate_limits: RateLimitsConfig::default(),
        }
    }
}

impl Config {
    /// The default settings for `server_name`.
    pub fn new(server_name: impl Into<String>) -> Self {
        Config { server_name: server_name.into(), ..Config::default() }
    }
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RegistrationMode {
    /// Nobody: accounts are made by an administrator (`homeserver register-user`).
    #[default]
    Closed,
    /// Anybody, after the `m.login.dummy` stage.
    Open,
    /// Whoever has one of the registration tokens (`m.login.registration_token`).
    Token,
}

/// Registration settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistrationConfig {
    /// Who may register.
    pub mode: RegistrationMode,
    /// The tokens that allow registration when `mode` is `token`.
    pub tokens: Vec<String>,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// The largest request body accepted, in bytes (larger: 413 `M_TOO_LARGE`).
    pub max_request_bytes: usize,
    /// The largest media upload accepted, in bytes.
    pub max_media_bytes: usize,
    /// Where uploaded media is kept; unset: in memory (tests, embedding), lost on restart.
    pub media_path: Option<std::path::PathBuf>,
    /// How many `/sync` requests one device may have running at once (a client needs one;
    /// a few more cover a retry while the old request is still being noticed as gone). One
    /// more is refused with 429 `M_LIMIT_EXCEEDED`, so that one client cannot park
    /// thousands of long-polls.
    pub max_syncs_per_device: usize,
    /// How many to-device messages may wait for one device; past it, `sendToDevice` answers
    /// 429 `M_LIMIT_EXCEEDED` (the queue is held in memory until the device syncs).
    pub max_to_device_per_device: usize,
    /// How many bytes of to-device messages may wait for one device.
    pub max_to_device_bytes_per_device: usize,
    /// How many to-device messages one sender may have waiting for one device, so that one
    /// sender cannot fill a device's whole queue.
    pub max_to_device_per_sender: usize,
    /// How many bytes of to-device messages one sender may have waiting for one device.
    pub max_to_device_bytes_per_sender: usize,
    /// How many threaded read receipts a user keeps per room; past it, the oldest is dropped.
    pub max_thread_receipts_per_room: usize,
    /// How many unclaimed one-time keys a device may hold; an upload past it answers 429
    /// `M_LIMIT_EXCEEDED` (clients keep about 50).
    pub max_one_time_keys_per_device: usize,
    /// How many users one `/keys/query` may name (more: 400 `M_INVALID_PARAM`).
    pub max_users_per_key_query: usize,
    /// How many `m.mentions.user_ids` of a message are kept for highlight counts; the rest
    /// are ignored (a message does not legitimately mention more).
    pub max_mentions_per_event: usize,
    /// How many push rules of their own a user may keep (more: 429 `M_LIMIT_EXCEEDED`).
    pub max_push_rules: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 1024 * 1024,
            max_media_bytes: 50 * 1024 * 1024,
            media_path: None,
            max_syncs_per_device: 4,
            max_to_device_per_device: 1000,
            max_to_device_bytes_per_device: 4 * 1024 * 1024,
            max_to_device_per_sender: 100,
            max_to_device_bytes_per_sender: 1024 * 1024,
            max_thread_receipts_per_room: 100,
            max_one_time_keys_per_device: 200,
            max_users_per_key_query: 1000,
            max_mentions_per_event: 64,
            max_push_rules: 500,
        }
    }
}

/// The answers of `/.well-known/matrix/client` and `/.well-known/matrix/server`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WellKnownConfig {
    /// The client base URL (`https://matrix.example.org`); unset: 404.
    pub client_base_url: Option<String>,
    /// The federation endpoint (`matrix.example.org:443`); unset: 404.
    pub server: Option<String>,
}

/// One rate limit: a bucket of `burst_count` actions that refills at `per_second` (Synapse's
/// `rc_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Actions regained per second.
    pub per_second: f64,
    /// The most actions in a burst.
    pub burst_count: f64,
}

impl RateLimit {
    /// A limit of `burst_count` refilled at `per_second`.
    pub const fn new(per_second: f64, burst_count: f64) -> Self {
        RateLimit { per_second, burst_count }
    }
}

/// Rate limits per user (messages, joins) and per client address (login, registration).
/// Exceeding one answers 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitsConfig {
    /// Whether the limits apply at all.
    pub enabled: bool,
    /// Sending events, per user (Synapse's `rc_message`).
    pub message: RateLimit,
    /// Logging in, per client address (`rc_login.address`).
    pub login: RateLimit,
    /// Registering, per client address (`rc_registration`).
    pub registration: RateLimit,
    /// Joining rooms, per user (`rc_joins.local`).
    pub joins: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        // Synapse's defaults, except login, which allows a few more attempts in a burst.
        RateLimitsConfig {
            enabled: true,
            message: RateLimit::new(0.2, 10.0),
            login: RateLimit::new(0.17, 5.0),
            registration: RateLimit::new(0.17, 3.0),
            joins: RateLimit::new(0.1, 10.0),
        }
    }
}

impl RateLimitsConfig {
    /// No limits (for tests and benchmarks).
    pub fn disabled() -> Self {
        RateLimitsConfig { enabled: false, ..Self::default() }
    }
}
