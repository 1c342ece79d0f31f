//! Per-user records of the client-server API: cross-signing keys and the signatures uploaded
//! on keys, server-side key backups, pushers, notifications and push cursors.

//!
//! The stores keep these as given: JSON bytes are neither parsed nor checked, and nothing is
//! bounded here. Callers check what they store (signatures, `auth_data`, the "better session"
//! rule of backups) and bound its size.

use std::collections::BTreeMap;

use super::StreamPos;

/// One of a user's three cross-signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrossSigningKeyKind {
    /// The master key: signs the other two, and is what other users verify.
    Master,
    /// The self-signing key: signs the user's own devices.
    SelfSigning,
    /// The user-signing key: signs other users' master keys (only its owner reads it).
    UserSigning,
}

impl CrossSigningKeyKind {
    /// Every kind, in their order.
    pub const ALL: [CrossSigningKeyKind; 3] = [
        CrossSigningKeyKind::Master,
        CrossSigningKeyKind::SelfSigning,
        CrossSigningKeyKind::UserSigning,
    ];

    /// The kind's `usage` in the spec (`master`, `self_signing`, `user_signing`), which is
    /// also how the durable backends store it.
    pub fn as_str(self) -> &'static str {
        match self {
            CrossSigningKeyKind::Master => "master",
            CrossSigningKeyKind::SelfSigning => "self_signing",
            CrossSigningKeyKind::UserSigning => "user_signing",
        }
    }

    /// The kind whose [`as_str`](Self::as_str) is `usage`.
    pub fn from_usage(usage: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == usage)
    }
}

/// A user's cross-signing keys, each the JSON the client uploaded (a `CrossSigningKey`
/// object), or `None` when none was uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrossSigningKeys {
    /// The master key.
    pub master: Option<Vec<u8>>,
    /// The self-signing key.
    pub self_signing: Option<Vec<u8>>,
    /// The user-signing key.
    pub user_signing: Option<Vec<u8>>,
}

impl CrossSigningKeys {
    /// The key of `kind`.
    pub fn get(&self, kind: CrossSigningKeyKind) -> Option<&[u8]> {
        match kind {
            CrossSigningKeyKind::Master => self.master.as_deref(),
            CrossSigningKeyKind::SelfSigning => self.self_signing.as_deref(),
            CrossSigningKeyKind::UserSigning => self.user_signing.as_deref(),
        }
    }

    /// Sets the key of `kind`.
    pub fn set(&mut self, kind: CrossSigningKeyKind, key: Option<Vec<u8>>) {
        match kind {
            CrossSigningKeyKind::Master => self.master = key,
            CrossSigningKeyKind::SelfSigning => self.self_signing = key,
            CrossSigningKeyKind::UserSigning => self.user_signing = key,
        }
    }
}

/// A signature uploaded through `/keys/signatures/upload`: `signer_user`'s key
/// `signer_key_id` signed the key `target_key` of `target_user`. Stored apart from the keys
/// it signs, so that a reader merges it into the `signatures` of the key it lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeySignature {
    /// The owner of the signed key.
    pub target_user: String,
    /// The signed key: a device id, or the id of a cross-signing key (its unpadded base64
    /// public key).
    pub target_key: String,
    /// The user who signed.
    pub signer_user: String,
    /// The key that signed, `ed25519:<id>` (a device id or a cross-signing key's public key).
    pub signer_key_id: String,
    /// The signature (unpadded base64).
    pub signature: String,
}

/// A server-side key backup version, as the stores hand it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVersion {
    /// The owner.
    pub user_id: String,
    /// The version: a decimal number the store allocated, `"1"`, `"2"`... per user.
    pub version: String,
    /// The backup's algorithm (`m.megolm_backup.v1.curve25519-aes-sha2`).
    pub algorithm: String,
    /// The algorithm's `auth_data` (JSON), as last uploaded.
    pub auth_data: Vec<u8>,
    /// Changes whenever the version's sessions change (the spec's `etag`, as a counter: it
    /// grows by one with each change set that writes or deletes sessions of the version).
    pub etag: u64,
    /// How many sessions the version holds (the spec's `count`).
    pub count: u64,
    /// Whether the version was deleted. A deleted version keeps its number, so that it is
    /// never handed out again and deleting it again can succeed; it holds no sessions.
    pub deleted: bool,
}

/// A new backup version for [`crate::ChangeSet::new_backup_versions`]; the store allocates its
/// version number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackupVersion {
    /// The owner.
    pub user_id: String,
    /// The backup's algorithm.
    pub algorithm: String,
    /// The algorithm's `auth_data` (JSON).
    pub auth_data: Vec<u8>,
}

/// One backed-up session (a room key), for [`crate::ChangeSet::backup_sessions`].
///
/// The store replaces what it holds under the same key with whatever it is given. The spec's
/// rule that an upload replaces a stored session only if it is better (verified first, then
/// a lower `first_message_index`, then a lower `forwarded_count`) is the caller's to apply,
/// reading the stored session first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackupSession {
    /// The owner.
    pub user_id: String,
    /// The version (a version not stored, or deleted, refuses the change set).
    pub version: String,
    /// The room.
    pub room_id: String,
    /// The Megolm session id.
    pub session_id: String,
    /// The `KeyBackupData` JSON (`first_message_index`, `forwarded_count`, `is_verified`,
    /// `session_data`).
    pub data: Vec<u8>,
}

/// A stored backed-up session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSession {
    /// The room.
    pub room_id: String,
    /// The Megolm session id.
    pub session_id: String,
    /// The `KeyBackupData` JSON.
    pub data: Vec<u8>,
}

/// Which sessions of a backup version [`crate::ChangeSet::deleted_backup_sessions`] deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupScope {
    /// All of the version's sessions.
    All,
    /// The sessions of one room.
    Room(String),
    /// One session: `(room, session id)`.
    Session(String, String),
}

/// A pusher: where to send a user's push notifications. Keyed by `(user, app_id, pushkey)`.
///
/// Deleting a device or its access token does not delete the pushers it created (Synapse
/// deletes a pusher with the access token that made it); a caller that wants that deletes
/// them in the same change set, finding them by [`Pusher::device_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    /// The owner.
    pub user_id: String,
    /// The `app_id`.
    pub app_id: String,
    /// The `pushkey`.
    pub pushkey: String,
    /// The device of the access token that created the pusher.
    pub device_id: String,
    /// The rest of the pusher as the client set it (JSON: `kind`, `app_display_name`,
    /// `device_display_name`, `profile_tag`, `lang`, `data`).
    pub data: Vec<u8>,
}

/// The number of a backup version string, if it is one the stores hand out: a decimal
/// number from 1, without a sign or leading zeros (so that one version has one spelling).
pub(crate) fn backup_version_number(version: &str) -> Option<u64> {
    if version.is_empty()
        || version.starts_with('0')
        || !version.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    version.parse().ok()
}

/// How many notifications each user keeps: the newest; storing one more drops the oldest.
pub const NOTIFICATIONS_KEPT: usize = 1000;

/// A notification: an event whose push rules' actions for a user said `notify`. Keyed by
/// `(user, pos)`; each user keeps the newest [`NOTIFICATIONS_KEPT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Whose.
    pub user_id: String,
    /// The event's stream position.
    pub pos: StreamPos,
    /// The event's room.
    pub room_id: String,
    /// The event.
    pub event_id: String,
    /// The thread the event is in (its root's id); `None`: the main timeline.
    pub thread_id: Option<String>,
    /// Whether the actions set the `highlight` tweak.
    pub highlight: bool,
    /// The actions (a JSON array).
    pub actions: Vec<u8>,
    /// When it was made, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Where a user has read a room up to, for its unread counts: a notification in the main
/// timeline is unread when its position is above `main`; one in a thread, when it is above
/// that thread's entry in `threads`, else above `other_threads`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadUpTo {
    /// The main timeline's read position.
    pub main: StreamPos,
    /// Threads' read positions, by thread root.
    pub threads: BTreeMap<String, StreamPos>,
    /// The read position of the threads not in `threads`.
    pub other_threads: StreamPos,
}

impl ReadUpTo {
    /// The read position of the main timeline (`None`) or of a thread.
    pub fn of(&self, thread: Option<&str>) -> StreamPos {
        match thread {
            None => self.main,
            Some(root) => self.threads.get(root).copied().unwrap_or(self.other_threads),
        }
    }

    /// The lowest of the read positions: no notification at or below it is unread.
    pub fn lowest(&self) -> StreamPos {
        self.threads.values().fold(self.main.min(self.other_threads), |low, p| low.min(*p))
    }
}

/// Unread notifications and, among them, highlights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    /// Notifications.
    pub notifications: u64,
    /// Of those, highlights.
    pub highlights: u64,
}

/// A user's unread counts in a room (of the notifications kept, see [`NOTIFICATIONS_KEPT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// The main timeline's.
    pub main: NotificationCounts,
    /// Each thread's with unread notifications, by thread root.
    pub threads: BTreeMap<String, NotificationCounts>,
}

impl UnreadCounts {
    /// The main timeline's and every thread's together.
    pub fn total(&self) -> NotificationCounts {
        self.threads.values().fold(self.main, |sum, c| NotificationCounts {
            notifications: sum.notifications + c.notifications,
            highlights: sum.highlights + c.highlights,
        })
    }

    /// Counts one notification, if `read` does not cover it.
    pub fn count(
        &mut self,
        read: &ReadUpTo,
        pos: StreamPos,
        thread: Option<&str>,
        highlight: bool,
    ) {
        if pos <= read.of(thread) {
            return;
        }
        let counts = match thread {
            None => &mut self.main,
            Some(root) => self.threads.entry(root.to_owned()).or_default(),
        };
        counts.notifications += 1;
        counts.highlights += u64::from(highlight);
    }
}

/// Where a pusher's delivery stands: the notifications up to `pos` are sent (or given up on),
/// and after `failures` failed tries the next is not before `retry_at` (ms since the epoch).
/// Keyed like its pusher, `(user, app_id, pushkey)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCursor {
    /// The pusher's owner.
    pub user_id: String,
    /// The pusher's `app_id`.
    pub app_id: String,
    /// The pusher's `pushkey`.
    pub pushkey: String,
    /// The last notification handled.
    pub pos: StreamPos,
    /// Failed tries of the next one.
    pub failures: u32,
    /// No try before this time.
    pub retry_at: u64,
}

/// Where delivery to an application service stands (its transactions,
/// `PUT /_matrix/app/v1/transactions/{txnId}`): the stream up to `pos` is delivered. When
/// `in_flight` is set, the transaction `txn_id` covers the stream in `(pos, in_flight]` and is
/// not acknowledged yet: it is sent again, with the same id, until it is; then `pos` moves to
/// `in_flight` and `txn_id` to the next id. After `failures` failed tries the next is not
/// before `retry_at` (ms since the epoch). Keyed by the registration's `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppserviceCursor {
    /// The registration's `id`.
    pub appservice_id: String,
    /// The last stream position delivered.
    pub pos: StreamPos,
    /// The id of the transaction in flight, or of the next one.
    pub txn_id: u64,
    /// The last stream position the transaction in flight covers, if one is in flight.
    pub in_flight: Option<StreamPos>,
    /// Failed tries of the transaction in flight.
    pub failures: u32,
    /// No try before this time.
    pub retry_at: u64,
}
