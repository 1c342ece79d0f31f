//! Receipts, client transaction ids, aliases, profiles.

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

/// A user's global profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// The display name.
    pub displayname: Option<String>,
    /// The avatar's `mxc://` URL.
    pub avatar_url: Option<String>,
}

/// One change of account data, as [`crate::AccountDataStore::account_data_changes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccountDataChange {
    /// The room, or `None` for global account data.
    pub room_id: Option<String>,
    /// The type.
    pub kind: String,
}
