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
