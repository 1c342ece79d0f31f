//! The homeserver's settings. Plain data: the binary reads them from a file, a test builds
//! them in code; this crate never reads files or the environment.

use serde::{Deserialize, Serialize};

pub(crate) mod appservice;
mod metrics;
mod network;
mod server_notices;
mod url_preview;
mod voip;
pub use metrics::MetricsConfig;
pub use network::{IpNetwork, IpNetworkError};
pub use server_notices::ServerNoticesConfig;
pub use url_preview::{DEFAULT_IP_BLOCKLIST, UrlPreviewConfig, default_ip_blocklist};
pub use voip::{DelayedEventsConfig, TurnConfig};

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
    /// Connection handling: timeouts, the connection cap, trusted reverse proxies.
    pub http: HttpConfig,
    /// Talking to other servers (off by default).
    pub federation: FederationConfig,
    /// URL previews (off by default).
    pub url_preview: UrlPreviewConfig,
    /// Presence: who is online (on by default).
    pub presence: PresenceConfig,
    /// The TURN server handed to clients (none by default).
    pub turn: TurnConfig,
    /// Delayed events (MSC4140; on by default, bounded).
    pub delayed_events: DelayedEventsConfig,
    /// Who the user directory finds.
    pub user_directory: UserDirectoryConfig,
    /// Application services (bridges): none by default. The binary reads them from Synapse's
    /// YAML registration files.
    pub appservices: Vec<appservice::AppserviceRegistration>,
    /// Prometheus metrics (off by default).
    pub metrics: MetricsConfig,
    /// Server notices (off by default).
    pub server_notices: ServerNoticesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost".to_owned(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            well_known: WellKnownConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            http: HttpConfig::default(),
            federation: FederationConfig::default(),
            url_preview: UrlPreviewConfig::default(),
            presence: PresenceConfig::default(),
            turn: TurnConfig::default(),
            delayed_events: DelayedEventsConfig::default(),
            user_directory: UserDirectoryConfig::default(),
            appservices: Vec::new(),
            metrics: MetricsConfig::default(),
            server_notices: ServerNoticesConfig::default(),
        }
    }
}

impl Config {
    /// The default settings for `server_name`.
    pub fn new(server_name: impl Into<String>) -> Self {
        Config { server_name: server_name.into(), ..Config::default() }
    }
}

/// The user directory (`/user_directory/search`): by default a user finds the users sharing a
/// room with them and the users in public rooms (as Synapse's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UserDirectoryConfig {
    /// Whether every (not deactivated) user of this server is found too, rooms or not
    /// (Synapse's `user_directory.search_all_users`).
    pub search_all_local_users: bool,
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
    /// Synapse's `registration_shared_secret`: whoever holds it registers users (and
    /// administrators) through `/_synapse/admin/v1/register`, whatever `mode` says; unset,
    /// that endpoint is off. Keep it as secret as the signing key.
    pub shared_secret: Option<String>,
    /// Synapse's `enable_registration_without_verification`: the reference binary refuses to
    /// start with `mode = "open"` (anyone may make accounts, spammers included) unless this
    /// says the operator means it. The library itself does not read it.
    pub enable_registration_without_verification: bool,
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
    /// Where uploaded media is kept (content addressed: `content/{sha256}`); unset: a
    /// temporary directory removed when the server stops (tests, embedding).
    pub media_path: Option<std::path::PathBuf>,
    /// The most media bytes one user may have uploaded in all (over: 403 `M_FORBIDDEN`);
    /// 0: no quota.
    pub media_quota_bytes: u64,
    /// Freezes unauthenticated media, as Synapse's `enable_authenticated_media` (whose default
    /// this is): media uploaded or fetched while it is on is served only on the authenticated
    /// paths (`/_matrix/client/v1/media/...`); the legacy `/_matrix/media/v3/download` and
    /// `thumbnail` answer 404 `M_NOT_FOUND` for it. Media stored before it was turned on is
    /// still served there; turned off, the legacy paths serve everything again.
    pub enable_authenticated_media: bool,
    /// How many media ids made by `POST /_matrix/media/v1/create` one user may have waiting
    /// for their content (more: 429 `M_LIMIT_EXCEEDED`); Synapse's default.
    pub max_pending_media_per_user: usize,
    /// Seconds a media id made by `create` waits for its content (the spec's recommended 24
    /// hours); later, uploading to it is 404 `M_NOT_FOUND`.
    pub pending_media_lifetime_secs: u64,
    /// The most `initial_state` entries a `createRoom` may carry (each is an event, written
    /// and synced to disk in turn). Over: 400 `M_TOO_LARGE`.
    pub max_create_room_initial_state: usize,
    /// The most users a `createRoom` may invite. Over: 400 `M_TOO_LARGE`.
    pub max_create_room_invites: usize,
    /// The longest display name, in characters (Synapse's bound). Over: 400
    /// `M_PROFILE_TOO_LARGE`.
    pub max_displayname_chars: usize,
    /// The longest avatar URL, in characters (Synapse's bound). Over: 400
    /// `M_PROFILE_TOO_LARGE`.
    pub max_avatar_url_chars: usize,
    /// The most entries of each list of a filter (`types`, `not_types`, `senders`,
    /// `not_senders`, `rooms`, `not_rooms`): each is matched against every event read. Over:
    /// 400 `M_TOO_LARGE`.
    pub max_filter_list_len: usize,
    /// The largest filter, as JSON bytes (stored, inline or in a filter id). Over: 400
    /// `M_TOO_LARGE`.
    pub max_filter_bytes: usize,
    /// The longest password accepted, in bytes (Synapse's bound): hashing a longer one only
    /// costs the server. Over: 400 `M_INVALID_PARAM`.
    pub max_password_bytes: usize,
    /// How many password hashes may wait for the hashing thread; more at once answer 429
    /// `M_LIMIT_EXCEEDED` rather than stalling every login behind them.
    pub password_hash_queue: usize,
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
    /// The largest `device_data` of a dehydrated device (MSC3814), as JSON bytes (more: 400
    /// `M_TOO_LARGE`); clients store an encrypted key pickle of a few kilobytes.
    pub max_dehydrated_device_bytes: usize,
    /// How many room keys one server-side key backup version may hold (more: 429
    /// `M_LIMIT_EXCEEDED`); a client backs up one per Megolm session it receives.
    pub max_backup_sessions_per_version: usize,
    /// No longer read: unread counts follow each user's push rules (kept so that existing
    /// configuration files still load).
    pub max_mentions_per_event: usize,
    /// How many pushers one user may have (more: 429 `M_LIMIT_EXCEEDED`).
    pub max_pushers_per_user: usize,
    /// Whether push gateways may be on private, loopback or link-local addresses (off: a
    /// pusher cannot make the server post to its own network).
    pub allow_private_push_gateways: bool,
    /// How many push rules of their own a user may keep (more: 429 `M_LIMIT_EXCEEDED`).
    pub max_push_rules: usize,
    /// How large a user's whole push rule set may be, as JSON bytes (more: 400
    /// `M_TOO_LARGE`); every sync carries it.
    pub max_push_rules_bytes: usize,
    /// What the cache of parsed events may hold, in bytes (about three times their JSON).
    pub event_cache_bytes: u64,
    /// How long one transaction to an application service may take, in milliseconds (then
    /// it is sent again, with the same id, after a backoff).
    pub appservice_timeout_ms: u64,
    /// The most lists one sliding sync request may hold (MSC4186's bound). Over: 400
    /// `M_INVALID_PARAM`.
    pub max_sliding_sync_lists: usize,
    /// The most room subscriptions one sliding sync request may hold (MSC4186's bound). Over:
    /// 400 `M_INVALID_PARAM`.
    pub max_sliding_sync_subscriptions: usize,
    /// The most `required_state` entries of one list or subscription, and the most ranges of
    /// one list. Over: 400 `M_INVALID_PARAM`.
    pub max_sliding_sync_required_state: usize,
    /// How many sliding sync connections (`conn_id`s) one device keeps; a new one past this
    /// ends the least recently used (its next request answers `M_UNKNOWN_POS`).
    pub max_sliding_sync_connections_per_device: usize,
    /// How many sliding sync connections the server keeps in all (in memory: a restart ends
    /// them, and clients start again on `M_UNKNOWN_POS`); past this the least recently used
    /// end.
    pub max_sliding_sync_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 1024 * 1024,
            max_media_bytes: 50 * 1024 * 1024,
            media_path: None,
            media_quota_bytes: 1024 * 1024 * 1024,
            enable_authenticated_media: true,
            max_pending_media_per_user: 5,
            pending_media_lifetime_secs: 24 * 60 * 60,
            max_create_room_initial_state: 100,
            max_create_room_invites: 100,
            max_displayname_chars: 256,
            max_avatar_url_chars: 1000,
            max_filter_list_len: 256,
            max_filter_bytes: 16 * 1024,
            max_password_bytes: 512,
            password_hash_queue: 32,
            max_syncs_per_device: 4,
            max_to_device_per_device: 1000,
            max_to_device_bytes_per_device: 4 * 1024 * 1024,
            max_to_device_per_sender: 100,
            max_to_device_bytes_per_sender: 1024 * 1024,
            max_thread_receipts_per_room: 100,
            max_one_time_keys_per_device: 200,
            max_users_per_key_query: 1000,
            max_dehydrated_device_bytes: 64 * 1024,
            max_backup_sessions_per_version: 1_000_000,
            max_mentions_per_event: 64,
            max_pushers_per_user: 10,
            allow_private_push_gateways: false,
            max_push_rules: 500,
            max_push_rules_bytes: 256 * 1024,
            event_cache_bytes: 4 * 1024 * 1024,
            appservice_timeout_ms: 30_000,
            max_sliding_sync_lists: 100,
            max_sliding_sync_subscriptions: 100,
            max_sliding_sync_required_state: 100,
            max_sliding_sync_connections_per_device: 10,
            max_sliding_sync_connections: 10_000,
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
    /// Who to contact about this server (`/.well-known/matrix/support`); with no contact
    /// and no `support_page`: 404.
    pub support_contacts: Vec<SupportContact>,
    /// A page with help specific to this server.
    pub support_page: Option<String>,
}

/// A way to reach the server's administrators (`/.well-known/matrix/support`): a Matrix user,
/// an email address, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SupportContact {
    /// `m.role.admin` (any question) or `m.role.security` (sensitive reports), or a
    /// namespaced role of one's own.
    pub role: String,
    /// A Matrix user (on another server too, to be reachable when this one is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_id: Option<String>,
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}

impl SupportContact {
    /// A contact for `role`.
    pub fn new(
        role: impl Into<String>,
        matrix_id: Option<String>,
        email_address: Option<String>,
    ) -> Self {
        SupportContact { role: role.into(), matrix_id, email_address }
    }
}

impl WellKnownConfig {
    /// Checks the support contacts: each has a role and a user or an email address, and a
    /// user id is one.
    pub(crate) fn check(&self) -> Result<(), String> {
        for contact in &self.support_contacts {
            if contact.role.is_empty() {
                return Err("a support contact has no role".to_owned());
            }
            if contact.matrix_id.is_none() && contact.email_address.is_none() {
                return Err(format!(
                    "the support contact of role {:?} has neither matrix_id nor email_address",
                    contact.role
                ));
            }
            if let Some(user) = &contact.matrix_id
                && ruma::UserId::parse(user.as_str()).is_err()
            {
                return Err(format!("the support contact {user:?} is not a user id"));
            }
        }
        if let Some(page) = &self.support_page
            && !(page.starts_with("https://") || page.starts_with("http://"))
        {
            return Err(format!("support_page {page:?} is not an http(s) URL"));
        }
        Ok(())
    }
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

/// Rate limits, per user for what a logged-in user does and per client address (see
/// [`HttpConfig::trusted_proxies`]) for what a stranger can do. Exceeding one answers 429
/// `M_LIMIT_EXCEEDED` with `retry_after_ms`. The defaults follow Synapse's `rc_*` where it has
/// one; the ephemeral ones (typing, receipts) are generous, as clients send those often.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitsConfig {
    /// Whether the limits apply at all.
    pub enabled: bool,
    /// Sending events and redactions, per user (Synapse's `rc_message`).
    pub message: RateLimit,
    /// Logging in, per client address (`rc_login.address`).
    pub login: RateLimit,
    /// Logging in, per account named, from any address (`rc_login.account`).
    pub login_account: RateLimit,
    /// Failed password checks, per account, from any address (`rc_login.failed_attempts`):
    /// once spent, the account's logins answer 429 until it refills.
    pub login_failed: RateLimit,
    /// Registering, per client address (`rc_registration`).
    pub registration: RateLimit,
    /// Registration token tries, per client address, counted before the token is checked.
    pub registration_token: RateLimit,
    /// The user-interactive password stage, per user (a stolen access token must not
    /// brute-force the password).
    pub uia_password: RateLimit,
    /// Joining rooms, per user (`rc_joins.local`).
    pub joins: RateLimit,
    /// Invites, kicks, bans, unbans and leaves, per user (`rc_invites.per_room`-like).
    pub membership: RateLimit,
    /// State events (`PUT /state`), alias and directory changes, per user.
    pub state: RateLimit,
    /// Creating rooms, per user (`rc_room_creation`).
    pub create_room: RateLimit,
    /// Profile changes, per user (each fans out to every joined room).
    pub profile: RateLimit,
    /// Typing notices, per user.
    pub typing: RateLimit,
    /// Receipts and read markers, per user.
    pub receipts: RateLimit,
    /// Account data, tags, device renames and forgetting rooms, per user.
    pub account_data: RateLimit,
    /// `sendToDevice`, per user (`rc_key_requests`).
    pub to_device: RateLimit,
    /// Key uploads, per user.
    pub key_upload: RateLimit,
    /// Media uploads, per user (`rc_media_create`).
    pub media_upload: RateLimit,
    /// URL previews, per user (each may fetch a page and an image).
    pub url_preview: RateLimit,
    /// Lookups that tell whether a user exists (`/register/available`, `/profile`), per
    /// client address.
    pub lookups: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            enabled: true,
            message: RateLimit::new(0.2, 10.0),
            login: RateLimit::new(0.17, 5.0),
            login_account: RateLimit::new(0.17, 5.0),
            login_failed: RateLimit::new(0.17, 3.0),
            registration: RateLimit::new(0.17, 3.0),
            registration_token: RateLimit::new(0.17, 5.0),
            uia_password: RateLimit::new(0.17, 5.0),
            joins: RateLimit::new(0.1, 10.0),
            membership: RateLimit::new(0.3, 10.0),
            state: RateLimit::new(0.5, 20.0),
            create_room: RateLimit::new(0.016, 10.0),
            profile: RateLimit::new(0.05, 5.0),
            typing: RateLimit::new(2.0, 30.0),
            receipts: RateLimit::new(2.0, 50.0),
            account_data: RateLimit::new(1.0, 50.0),
            to_device: RateLimit::new(20.0, 100.0),
            key_upload: RateLimit::new(2.0, 50.0),
            media_upload: RateLimit::new(10.0, 50.0),
            url_preview: RateLimit::new(2.0, 30.0),
            lookups: RateLimit::new(5.0, 50.0),
        }
    }
}

impl RateLimitsConfig {
    /// No limits (for tests and benchmarks).
    pub fn disabled() -> Self {
        RateLimitsConfig { enabled: false, ..Self::default() }
    }
}

/// How connections are handled. Every wait is bounded, so that a client that sends slowly
/// (slowloris) or not at all cannot hold a connection, and the number of connections is
/// capped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The reverse proxies whose `X-Forwarded-For` is believed, as addresses or networks
    /// (`10.0.0.1`, `10.0.0.0/8`): only when the TCP peer is one of these is the client's
    /// address read from that header (its rightmost address that is not itself a trusted
    /// proxy). Empty (the default): the TCP peer is the client.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Seconds a request's headers may take to arrive, counted from when the connection is
    /// ready for a request (so a kept-alive connection with no new request is closed after it).
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go with no byte read or written while no request is being
    /// handled (a client that stops reading its answer).
    pub idle_timeout_secs: u64,
    /// Seconds a request body (other than a media upload) may take to arrive. Over: 408.
    pub body_read_timeout_secs: u64,
    /// Seconds a media upload's body may take to arrive. Over: 408.
    pub media_upload_timeout_secs: u64,
    /// The most connections open at once; more wait in the listen queue.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            trusted_proxies: Vec::new(),
            header_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 60,
            media_upload_timeout_secs: 600,
            max_connections: 1024,
        }
    }
}

/// Federation: whether this server talks to others, and how it trusts them. Where it listens
/// and its TLS certificate are the binary's business ([`crate::Homeserver::serve_federation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FederationConfig {
    /// Whether to federate: answer other servers and send them our rooms' events.
    pub enabled: bool,
    /// Check other servers' TLS certificates; `false` only on test networks with self-signed
    /// certificates.
    pub verify_certificates: bool,
    /// Notary servers asked for a server's keys when it cannot be asked itself
    /// (`["matrix.org"]`); none by default.
    pub trusted_key_servers: Vec<String>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            enabled: false,
            verify_certificates: true,
            trusted_key_servers: Vec::new(),
        }
    }
}

/// Presence: users' online, idle (`unavailable`) and offline states and status messages,
/// shown to the users who share a room with them and sent to the servers in those rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PresenceConfig {
    /// Whether presence is tracked, shown and federated (Synapse's `presence.enabled`). Off:
    /// `GET /presence/{userId}/status` answers `offline`, `PUT` is accepted and does nothing,
    /// syncs carry no presence, and no `m.presence` EDU is sent or taken.
    pub enabled: bool,
    /// Milliseconds without activity (a sync with `set_presence=online`, a sent event, a
    /// presence set to `online`) after which an online user becomes `unavailable`.
    pub idle_timeout_ms: u64,
    /// Milliseconds after the last sync of a device ended (and its last activity) after
    /// which the device no longer counts; a user with no device left is `offline`.
    pub offline_timeout_ms: u64,
    /// Milliseconds after an activity during which an online user is `currently_active`.
    pub active_window_ms: u64,
    /// The longest status message accepted, in bytes. Over: 400 `M_TOO_LARGE`; one in an
    /// `m.presence` EDU drops that user's update.
    pub max_status_msg_bytes: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        // Synapse's timers: idle after 5 minutes, offline 30 s after the last sync,
        // currently active for a minute.
        PresenceConfig {
            enabled: true,
            idle_timeout_ms: 5 * 60 * 1000,
            offline_timeout_ms: 30 * 1000,
            active_window_ms: 60 * 1000,
            max_status_msg_bytes: 1024,
        }
    }
}
