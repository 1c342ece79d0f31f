//! Receipts, client transaction ids, aliases, profiles, presence.

use super::StreamPos;

/// Which receipt: one per room, user, type and thread.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReceiptKey {
    /// The room.
    pub room_id: String,
    /// The user.
    pub user_id: String,
    /// The receipt type (`m.read`, `m.read.private`).
    pub kind: String,
    /// The thread (`main` or a thread root), or `None` for an unthreaded receipt.
    pub thread: Option<String>,
}

/// A read receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Which receipt it is (it replaces the one stored under the same key).
    pub key: ReceiptKey,
    /// The event it is for.
    pub event_id: String,
    /// That event's position in the stream (for unread counts).
    pub event_pos: StreamPos,
    /// When it was sent (ms since the epoch).
    pub ts: u64,
}

/// A stored receipt, with the stream position of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// When it changed last.
    pub pos: StreamPos,
    /// The receipt.
    pub receipt: Receipt,
}

/// A client's transaction id and what it produced, so that a retried request gets the first
/// answer (an event id, or nothing for a to-device send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionId {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The endpoint it was used with (`send`, `sendToDevice`...): ids are per endpoint.
    pub scope: String,
    /// The id the client chose.
    pub txn_id: String,
    /// What the first request produced (an event id; empty when it produced nothing to name).
    pub result: String,
}

/// A room alias of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// `#name:server`.
    pub alias: String,
    /// The room it points to.
    pub room_id: String,
    /// Who made it.
    pub creator: String,
}

/// A user as the user directory knows them: searched by user id and display name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectoryUser {
    /// The user id (of this server or another).
    pub user_id: String,
    /// The display name.
    pub displayname: Option<String>,
    /// The avatar's `mxc://` URL.
    pub avatar_url: Option<String>,
}

impl DirectoryUser {
    /// Whether the user id or the display name contains `term`, which is lowercased already
    /// (both are compared lowercased with [`str::to_lowercase`]; every backend matches so).
    pub fn matches(&self, term: &str) -> bool {
        self.user_id.to_lowercase().contains(term)
            || self.displayname.as_deref().is_some_and(|name| name.to_lowercase().contains(term))
    }
}

/// A user's global profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// The display name.
    pub displayname: Option<String>,
    /// The avatar's `mxc://` URL.
    pub avatar_url: Option<String>,
}

/// A presence state of the spec (`presence` of `m.presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PresenceState {
    /// `online`.
    Online,
    /// `unavailable` (idle, away).
    Unavailable,
    /// `offline`.
    Offline,
}

impl PresenceState {
    /// Every state.
    pub const ALL: [PresenceState; 3] =
        [PresenceState::Online, PresenceState::Unavailable, PresenceState::Offline];

    /// The spec's name of the state, which is also how the durable backends store it.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Online => "online",
            PresenceState::Unavailable => "unavailable",
            PresenceState::Offline => "offline",
        }
    }

    /// The state whose [`as_str`](Self::as_str) is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// A user's presence as last saved (of a user of this server, or of another server as its
/// `m.presence` EDU told). The stores keep it as given; callers bound `status_msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The state.
    pub state: PresenceState,
    /// The status message, if any.
    pub status_msg: Option<String>,
    /// When the user was last active, in milliseconds since the Unix epoch (0: not known).
    pub last_active_ts: u64,
    /// Whether the user was active just now when this was saved.
    pub currently_active: bool,
}

/// One change of account data, as [`crate::AccountDataStore::account_data_changes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccountDataChange {
    /// The room, or `None` for global account data.
    pub room_id: Option<String>,
    /// The type.
    pub kind: String,
}
