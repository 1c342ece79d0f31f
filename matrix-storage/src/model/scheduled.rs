//! OpenID tokens and delayed events: small records with an expiry or a send time.

/// The owner of an OpenID token (`/user/{userId}/openid/request_token`), kept under the
/// token's hash as access tokens are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIdToken {
    /// The user the token vouches for.
    pub user_id: String,
    /// When it stops being valid, in milliseconds since the Unix epoch.
    pub expires_ts: u64,
}

/// A registration token an administrator made (Synapse's admin API), which lets a client
/// register through `m.login.registration_token` while it is valid: before its expiry and
/// while fewer than `uses_allowed` registrations (pending and completed) used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    /// The token.
    pub token: String,
    /// How many registrations may use it; `None`: any number.
    pub uses_allowed: Option<u64>,
    /// Registrations that passed the token stage and did not finish yet.
    pub pending: u64,
    /// Registrations that finished with it.
    pub completed: u64,
    /// When it stops being valid, in milliseconds since the Unix epoch; `None`: never.
    pub expiry_time: Option<u64>,
}

impl RegistrationToken {
    /// Whether a registration may use it at `now_ms`.
    pub fn valid_at(&self, now_ms: u64) -> bool {
        let uses = self.pending.saturating_add(self.completed);
        self.uses_allowed.is_none_or(|allowed| uses < allowed)
            && self.expiry_time.is_none_or(|expiry| now_ms < expiry)
    }
}

/// An event a user scheduled to be sent later (MSC4140), kept until it is sent or cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedEvent {
    /// The owner, whose authority the event is sent with.
    pub user_id: String,
    /// The id the server handed out, unique per user.
    pub delay_id: String,
    /// The device that scheduled it.
    pub device_id: String,
    /// The room it is for.
    pub room_id: String,
    /// Its event type.
    pub kind: String,
    /// Its state key, for a state event.
    pub state_key: Option<String>,
    /// Its content, as JSON.
    pub content: Vec<u8>,
    /// The delay asked for, in milliseconds.
    pub delay_ms: u64,
    /// When it was scheduled or last restarted, in milliseconds since the Unix epoch.
    pub scheduled_at: u64,
}

impl DelayedEvent {
    /// When it is due: `scheduled_at + delay_ms`.
    pub fn send_ts(&self) -> u64 {
        self.scheduled_at.saturating_add(self.delay_ms)
    }
}
