#![doc = include_str!("../README.md")]

mod backup;
#[cfg(feature = "sled")]
mod codec;
#[cfg(feature = "fjall")]
pub mod fjall;
mod layers;
pub mod memory;
mod model;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sled")]
pub mod sled;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;

pub use backup::{StoreSummary, state_hash};
pub use model::*;

/// What went wrong in a backend. Opaque: engine errors never appear in signatures; the
/// [`ErrorKind`] says what a caller can do about it. Not-found is `Ok(None)`, never an error.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StorageError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The kind of a [`StorageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store cannot be reached or read (I/O error, lost connection, full disk).
    #[error("storage unavailable")]
    Unavailable,
    /// The stored data is not what this version reads (corrupt, or written by a newer schema).
    #[error("storage corrupt or from a newer version")]
    Corrupt,
    /// The write conflicts with what is stored (a user or room that already exists...).
    #[error("conflict")]
    Conflict,
    /// The write refers to something that is not stored (a parent snapshot, a user...).
    #[error("reference to something not stored")]
    MissingReference,
    /// The options a store was opened with are not usable (a URL that does not parse...).
    #[error("invalid options")]
    InvalidOptions,
    /// The store is in use by another process (its directory is locked: a homeserver runs on
    /// it); stop that process first.
    #[error("store locked")]
    Locked,
    /// The backend does not do this (an online backup of the in-memory store...).
    #[error("not supported by this backend")]
    Unsupported,
}

impl StorageError {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError { kind, message: message.into(), source: None }
    }
    /// A new error of `kind` caused by a backend's error.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError { kind, message: message.into(), source: Some(Box::new(source)) }
    }
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// The result of a storage operation.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Resolves when a change set applied by [`Storage::apply_ordered`] is durable.
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Events: PDUs by id, kept as received, with their status and graph edges, and each room's
/// auth-chain index.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// The event with this id.
    async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>>;
    /// The union of the auth chains of `event_ids` (their auth events, recursively; the events
    /// themselves are not included unless one is an ancestor of another). Ids not stored are
    /// skipped.
    async fn auth_chain(&self, event_ids: &[&str]) -> Result<Vec<String>>;
    /// The redaction that redacted an event, if one did.
    async fn redaction_of(&self, event_id: &str) -> Result<Option<String>>;
    /// The stored events among `event_ids`, each once (ids not stored are skipped, an id
    /// given twice gives one event), in no particular order: one read for many events.
    async fn events(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>>;
    /// The entries of a room's auth-chain index ([`ChangeSet::auth_chain`]) numbered `from`
    /// or higher, by number, at most `limit`.
    async fn auth_chain_index(
        &self,
        room_id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<AuthChainEntry>>;
}

/// State snapshots, stored as deltas against a parent snapshot.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The event at `(kind, state_key)` in a snapshot.
    async fn state_get(
        &self,
        snapshot: SnapshotId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>>;
    /// The whole state of a snapshot, sorted by `(type, state_key)`.
    async fn state_full(&self, snapshot: SnapshotId) -> Result<Vec<StateEntry>>;
}

/// Rooms: version, current state, forward extremities, membership and the timeline's stream
/// order.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// A room's version, current state and forward extremities.
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>>;
    /// A user's membership in a room.
    async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>>;
    /// The rooms a user has a membership in, with that membership, sorted by room id.
    async fn rooms_of_user(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// The members of a room with their membership, sorted by user id.
    async fn members(&self, room_id: &str) -> Result<Vec<(String, String)>>;
    /// The highest stream position a reader may read up to: everything at or below it is
    /// committed, and nothing that commits later gets a position at or below it. (The stream
    /// is one sequence shared by timeline events, account-data writes, receipts, to-device
    /// messages and device-list changes, so one position says what a reader has seen of all.)
    async fn stream_position(&self) -> Result<StreamPos>;
    /// Timeline events of all rooms with positions in `(after, upto]`, oldest first, at most
    /// `limit`.
    async fn stream_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<StreamItem>>;
    /// Whether a user forgot a room.
    async fn forgotten(&self, room_id: &str, user_id: &str) -> Result<bool>;
    /// A room's timeline before (backwards) or after (forwards) `from`, at most `limit`,
    /// nearest first.
    async fn timeline(
        &self,
        room_id: &str,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<StreamItem>>;
    /// A room's backfilled events (its history before its timeline, see [`BackfillPos`])
    /// before (backwards: older, higher positions) or after (forwards: newer, lower positions)
    /// `from`, at most `limit`, nearest first. `BackfillPos(0)` is the timeline's start.
    async fn backfilled(
        &self,
        room_id: &str,
        from: BackfillPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<BackfillItem>>;
    /// The backfill position of an event, if it has one.
    async fn backfill_position(&self, event_id: &str) -> Result<Option<BackfillPos>>;
    /// The ids of the rooms this server holds (the ones [`RoomStore::room`] answers), above
    /// `after` in byte order, sorted, at most `limit`: the server administrators' room list,
    /// a page at a time.
    async fn room_ids(&self, after: &str, limit: usize) -> Result<Vec<String>>;
}

/// Accounts: users, devices and access tokens.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// A user.
    async fn user(&self, user_id: &str) -> Result<Option<User>>;
    /// The users (deactivated ones too) whose ids are above `after` in byte order, sorted by
    /// id, at most `limit`: the server administrators' user list, a page at a time.
    async fn users(&self, after: &str, limit: usize) -> Result<Vec<User>>;
    /// A device of a user.
    async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>>;
    /// A user's devices, sorted by device id.
    async fn devices(&self, user_id: &str) -> Result<Vec<Device>>;
    /// Who an access token belongs to.
    async fn token(&self, token: &str) -> Result<Option<TokenOwner>>;
    /// A user's dehydrated device, if the user has one.
    async fn dehydrated_device(&self, user_id: &str) -> Result<Option<DehydratedDevice>>;
    /// A user's global profile.
    async fn profile(&self, user_id: &str) -> Result<Option<Profile>>;
    /// What a client transaction id produced, if a request with it committed (a deleted
    /// device's ids are gone with it).
    async fn transaction_id(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<String>>;
}

/// Signing keys: ours, and remote servers' with their validity.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Our signing keys, sorted by key id.
    async fn our_keys(&self) -> Result<Vec<OurKey>>;
    /// A remote server's key.
    async fn remote_key(&self, server: &str, key_id: &str) -> Result<Option<RemoteKey>>;
}

/// Federation queues: inbound transactions seen, outbound items per destination.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Whether a transaction from `origin` was already processed.
    async fn transaction_seen(&self, origin: &str, txn_id: &str) -> Result<bool>;
    /// The oldest unacknowledged outbound items for `destination`, at most `limit`.
    async fn outbound(&self, destination: &str, limit: usize) -> Result<Vec<OutboundItem>>;
    /// The destinations with unacknowledged outbound items, sorted, each once (what an outbound
    /// sender resumes at start).
    async fn outbound_destinations(&self) -> Result<Vec<String>>;
    /// The retry state of a destination.
    async fn retry(&self, destination: &str) -> Result<Option<RetryState>>;
}

/// Account data, global (`room_id` `None`) or per room.
#[async_trait]
pub trait AccountDataStore: Send + Sync {
    /// One item of account data.
    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<Vec<u8>>>;
    /// All of a user's account data, sorted by (room, type).
    async fn all_account_data(&self, user_id: &str) -> Result<Vec<AccountDataItem>>;
    /// What of a user's account data was written at stream positions in `(after, upto]`,
    /// sorted, each item once.
    async fn account_data_changes(
        &self,
        user_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataChange>>;
}

/// Media metadata.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// The metadata of a media item.
    async fn media(&self, media_id: &str) -> Result<Option<Media>>;
    /// A user's media quota counter (0 when never set).
    async fn media_usage(&self, user_id: &str) -> Result<u64>;
    /// A media id created and not uploaded yet (expired ones too, until deleted).
    async fn pending_media(&self, media_id: &str) -> Result<Option<PendingMedia>>;
    /// The pending media ids a user created, sorted by media id.
    async fn pending_media_of(&self, user_id: &str) -> Result<Vec<PendingMedia>>;
    /// The media rows (ours and other servers') whose keys are above `after` in byte order,
    /// sorted by key, at most `limit`: every row, a page at a time.
    async fn media_rows(&self, after: &str, limit: usize) -> Result<Vec<Media>>;
    /// The media rows of one uploader (a user; for other servers' media, the server) whose
    /// keys are above `after` in byte order, sorted by key, at most `limit`.
    async fn media_of(&self, uploader: &str, after: &str, limit: usize) -> Result<Vec<Media>>;
    /// The media rows whose content has the SHA-256 `sha256` (lowercase hex) and whose keys
    /// are above `after` in byte order, sorted by key, at most `limit`.
    async fn media_with_content(
        &self,
        sha256: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>>;
    /// The logged quarantine changes with ids above `after`, by id, at most `limit`.
    async fn quarantine_changes(&self, after: u64, limit: usize) -> Result<Vec<QuarantineChange>>;
    /// The highest id a quarantine change was given (0 before the first).
    async fn last_quarantine_change(&self) -> Result<u64>;
}

/// Room aliases and the public room directory of this server.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// An alias.
    async fn alias(&self, alias: &str) -> Result<Option<Alias>>;
    /// The aliases pointing to a room, sorted.
    async fn room_aliases(&self, room_id: &str) -> Result<Vec<Alias>>;
    /// Whether a room is published in the public room directory.
    async fn published(&self, room_id: &str) -> Result<bool>;
    /// The rooms published in the public room directory, sorted.
    async fn published_rooms(&self) -> Result<Vec<String>>;
    /// The rooms published in application services' room lists, sorted (by service,
    /// network, room).
    async fn appservice_listings(&self) -> Result<Vec<AppserviceListing>>;
}

/// End-to-end encryption keys of devices, and the stream of device-list changes.
#[async_trait]
pub trait E2eeStore: Send + Sync {
    /// The device keys of a user's devices `(device, keys)`, sorted by device.
    async fn device_keys(&self, user_id: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// An unclaimed one-time key of a device.
    async fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        key_id: &str,
    ) -> Result<Option<Vec<u8>>>;
    /// How many unclaimed one-time keys of each algorithm a device holds (algorithms with
    /// none are left out).
    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>>;
    /// A device's fallback keys, sorted by algorithm.
    async fn fallback_keys(&self, user_id: &str, device_id: &str) -> Result<Vec<FallbackKey>>;
    /// The users whose device list changed at stream positions in `(after, upto]`, sorted,
    /// each once.
    async fn device_list_changes(&self, after: StreamPos, upto: StreamPos) -> Result<Vec<String>>;
}

/// To-device messages: one queue per device, in stream order.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// A device's messages at positions in `(after, upto]`, oldest first, at most `limit`.
    async fn to_device(
        &self,
        user_id: &str,
        device_id: &str,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>>;
    /// The messages of every device at positions in `(after, upto]`, in stream order, at
    /// most `limit`, each with the device it waits for (an application service reads its
    /// users' messages so, MSC4203). Delivered messages are gone from it as from
    /// [`InboxStore::to_device`].
    async fn to_device_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<AddressedToDevice>>;
    /// What waits in a device's queue, in all and from `sender`.
    async fn to_device_usage(
        &self,
        user_id: &str,
        device_id: &str,
        sender: &str,
    ) -> Result<ToDeviceUsage>;
}

/// Read receipts.
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// The receipts of a room that changed at stream positions in `(after, upto]`, in stream
    /// order.
    async fn receipts(
        &self,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<StoredReceipt>>;
    /// A user's receipts in a room, sorted by key.
    async fn user_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<StoredReceipt>>;
}

/// Cross-signing keys, and the signatures uploaded on keys through `/keys/signatures/upload`.
#[async_trait]
pub trait CrossSigningStore: Send + Sync {
    /// A user's cross-signing keys (all `None` when the user uploaded none).
    async fn cross_signing_keys(&self, user_id: &str) -> Result<CrossSigningKeys>;
    /// The signatures on a user's keys (devices and cross-signing keys), sorted by target
    /// key, signer and signer key, for a reader to merge into the keys it lists.
    async fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignature>>;
}

/// Server-side key backups: versions per user, and the sessions backed up in each.
///
/// A version string that is not one the store hands out (`"01"`, `"x"`) names nothing.
#[async_trait]
pub trait KeyBackupStore: Send + Sync {
    /// A backup version, also a deleted one (see [`BackupVersion::deleted`]).
    async fn backup_version(&self, user_id: &str, version: &str) -> Result<Option<BackupVersion>>;
    /// A user's highest version that is not deleted.
    async fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersion>>;
    /// The sessions of a version, of one room or of all, sorted by room and session id.
    async fn backup_sessions(
        &self,
        user_id: &str,
        version: &str,
        room_id: Option<&str>,
    ) -> Result<Vec<BackupSession>>;
    /// One session of a version.
    async fn backup_session(
        &self,
        user_id: &str,
        version: &str,
        room_id: &str,
        session_id: &str,
    ) -> Result<Option<Vec<u8>>>;
}

/// Pushers.
#[async_trait]
pub trait PusherStore: Send + Sync {
    /// A user's pushers, sorted by `app_id` and `pushkey`.
    async fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>>;
    /// Every pusher (for the push sender at start), sorted by user, `app_id` and `pushkey`.
    async fn all_pushers(&self) -> Result<Vec<Pusher>>;
}

/// Notifications (what the push rules said to notify a user of) and pushers' delivery cursors.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// A user's notifications at positions below `before` (all when `None`), newest first,
    /// at most `limit`; only highlights when `highlights_only`.
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<StreamPos>,
        limit: usize,
        highlights_only: bool,
    ) -> Result<Vec<Notification>>;
    /// A user's notifications at positions above `after`, oldest first, at most `limit`.
    async fn notifications_after(
        &self,
        user_id: &str,
        after: StreamPos,
        limit: usize,
    ) -> Result<Vec<Notification>>;
    /// A user's unread counts in one room: their kept notifications there that `read` does
    /// not cover, counted by thread. Answered without reading each notification (what every
    /// `/sync` asks, for every room).
    async fn unread_counts(
        &self,
        user_id: &str,
        room_id: &str,
        read: &ReadUpTo,
    ) -> Result<UnreadCounts>;
    /// A pusher's delivery cursor.
    async fn push_cursor(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<PushCursor>>;
}

/// Application services' delivery cursors (see [`AppserviceCursor`]).
#[async_trait]
pub trait AppserviceStore: Send + Sync {
    /// The delivery cursor of the application service `appservice_id`.
    async fn appservice_cursor(&self, appservice_id: &str) -> Result<Option<AppserviceCursor>>;
}

/// Presence: the last saved presence of users, ours and other servers'.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// A user's presence.
    async fn presence(&self, user_id: &str) -> Result<Option<Presence>>;
    /// The presence of those of `user_ids` that have one, each once, sorted by user: one read
    /// for many users.
    async fn presences(&self, user_ids: &[&str]) -> Result<Vec<(String, Presence)>>;
    /// Every user whose saved presence is not offline, sorted by user: what a server
    /// starting again must time out (users who do not come back go offline).
    async fn present_users(&self) -> Result<Vec<(String, Presence)>>;
}

/// OpenID tokens: who a token handed to a third party vouches for, and until when.
#[async_trait]
pub trait OpenIdStore: Send + Sync {
    /// The owner of the token with this hash (also an expired one, until deleted).
    async fn openid_token(&self, token_hash: &str) -> Result<Option<OpenIdToken>>;
    /// Hashes of tokens whose `expires_ts` is at or before `now_ts`, at most `limit`, for a
    /// caller to delete.
    async fn expired_openid_tokens(&self, now_ts: u64, limit: usize) -> Result<Vec<String>>;
}

/// Registration tokens made by the server's administrators.
#[async_trait]
pub trait RegistrationTokenStore: Send + Sync {
    /// One token.
    async fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>>;
    /// Every token, sorted by token (byte order).
    async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>>;
}

/// Administrators' decisions about users (shadow bans, suspensions, rate-limit overrides)
/// and the tokens they had made to act as users.
#[async_trait]
pub trait ModerationStore: Send + Sync {
    /// A user's record; `None` when no decision about them is kept.
    async fn user_moderation(&self, user_id: &str) -> Result<Option<UserModeration>>;
    /// An administrator's token acting as a user, by its hash.
    async fn puppet_token(&self, token_hash: &str) -> Result<Option<PuppetToken>>;
}

/// Delayed events (MSC4140): scheduled events waiting for their send time.
#[async_trait]
pub trait DelayedEventStore: Send + Sync {
    /// A user's delayed event.
    async fn delayed_event(&self, user_id: &str, delay_id: &str) -> Result<Option<DelayedEvent>>;
    /// A user's delayed events, by send time (then `delay_id`).
    async fn delayed_events_of(&self, user_id: &str) -> Result<Vec<DelayedEvent>>;
    /// Everybody's delayed events due first, by send time (then user and `delay_id`), at most
    /// `limit`: what the sender fires next.
    async fn next_delayed_events(&self, limit: usize) -> Result<Vec<DelayedEvent>>;
}

/// The relations index: events that relate to another (`m.relates_to`), by room and the
/// event they relate to (the parent), in stream order. Written through
/// [`ChangeSet::relations`]; a redaction ([`ChangeSet::redactions`]) takes its event out.
#[async_trait]
pub trait RelationStore: Send + Sync {
    /// The relations to `parent` in `room_id` (of `rel_type` only, when given) at positions
    /// before `from` (backwards: newest first) or after it (forwards: oldest first), at most
    /// `limit`.
    async fn relations(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Relation>>;
    /// The relations of `rel_type` to `parent` in `room_id` at positions up to `upto`: how
    /// many, the latest, and whether `sender` sent one.
    async fn relation_summary(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: &str,
        upto: StreamPos,
        sender: &str,
    ) -> Result<RelationSummary>;
    /// The thread replies (relations of type `m.thread`) of a room at positions before
    /// `from`, newest first, at most `limit`.
    async fn thread_replies(
        &self,
        room_id: &str,
        from: StreamPos,
        limit: usize,
    ) -> Result<Vec<Relation>>;
    /// The indexed relation of an event (the event as the child).
    async fn relation_of(&self, event_id: &str) -> Result<Option<Relation>>;
}

/// The user directory: users this server knows (its own, and other servers' it shares rooms
/// with) by id and display name, and the rooms whose join rule is `public`.
#[async_trait]
pub trait UserDirectoryStore: Send + Sync {
    /// The users whose id or display name contains `term` (lowercased by the caller; see
    /// [`DirectoryUser::matches`]), sorted by user id, at most `limit`.
    async fn search_user_directory(&self, term: &str, limit: usize) -> Result<Vec<DirectoryUser>>;
    /// The rooms whose join rule is `public`, sorted.
    async fn public_join_rooms(&self) -> Result<Vec<String>>;
}

/// Server-side search of room events: the index of [`ChangeSet::search`].
#[async_trait]
pub trait SearchStore: Send + Sync {
    /// The indexed events matching `query` (see [`SearchQuery`] and the module's rules:
    /// every token, the rooms up to their bounds, the filters), a page in the query's order.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage>;
}

/// Content reports ([`ChangeSet::reports`]), for the server's administrators.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// The reports with ids above `after`, oldest first, at most `limit`.
    async fn reports(&self, after: u64, limit: usize) -> Result<Vec<StoredReport>>;
}

/// A whole store: every domain, and atomic writes through one change set.
#[async_trait]
pub trait Storage:
    EventStore
    + StateStore
    + RoomStore
    + AccountStore
    + KeyStore
    + QueueStore
    + AccountDataStore
    + MediaStore
    + DirectoryStore
    + E2eeStore
    + InboxStore
    + ReceiptStore
    + CrossSigningStore
    + KeyBackupStore
    + PusherStore
    + NotificationStore
    + AppserviceStore
    + PresenceStore
    + OpenIdStore
    + RegistrationTokenStore
    + ModerationStore
    + DelayedEventStore
    + RelationStore
    + UserDirectoryStore
    + SearchStore
    + ReportStore
{
    /// Applies every change of `changes` in one transaction: all or nothing. When it returns
    /// `Ok`, the changes are durable (they survive a crash of the process or the machine, as
    /// far as the backend's medium allows; see the backend's docs).
    async fn apply(&self, changes: ChangeSet) -> Result<Applied>;

    /// [`Storage::apply`] in two steps, for a caller that orders its writes with a lock of
    /// its own (a room's events) and should not hold that lock across a flush to disk: it
    /// returns once the change set is applied in order, so that what this process writes or
    /// reads next builds on it (readers bounded by [`RoomStore::stream_position`] still see
    /// it only once it is durable), with a future that resolves when it is durable. Nothing
    /// may be acknowledged before that future resolved `Ok`; if it fails, so does every later
    /// write (a backend that splits the steps stops on a failed flush).
    ///
    /// The default applies and waits for durability first, for backends whose commit is
    /// their only step.
    async fn apply_ordered(&self, changes: ChangeSet) -> Result<(Applied, Durable)> {
        let applied = self.apply(changes).await?;
        Ok((applied, Box::pin(std::future::ready(Ok(())))))
    }

    /// The backend's name (`memory`, `sled`, `fjall`, `postgres`), for metrics and logs.
    fn backend(&self) -> &'static str {
        "other"
    }

    /// Moves of the stream head made by *other processes* writing the same store, for a
    /// backend that several processes share (PostgreSQL): the receiver's value is the
    /// highest position another process is known to have committed (it may be above
    /// [`RoomStore::stream_position`] for a moment, while a lower position is still being
    /// written), and it changes after each such commit, or after the backend may have missed
    /// some (a lost connection). This process's own writes do not move it: their writer knows
    /// what they were. Read what changed with [`RoomStore::stream_range`],
    /// [`Storage::stream_changes`] and [`E2eeStore::device_list_changes`].
    ///
    /// `None` (the default): nobody else writes this store (the in-memory and sled
    /// backends, one process each).
    fn foreign_writes(&self) -> Option<tokio::sync::watch::Receiver<StreamPos>> {
        None
    }

    /// Writes a consistent copy of the whole store into the directory `dir` (new, or empty)
    /// while the store goes on serving reads and writes, and answers the copy's summary
    /// (computed on the copy). The copy is the store as it stood at one moment between two
    /// change sets (the embedded store: a new store of its engine in `dir`; PostgreSQL: a
    /// dump of its tables).
    ///
    /// The default: an error of kind [`ErrorKind::Unsupported`]. The in-memory store has
    /// nothing worth a backup: it is gone with its process.
    async fn backup(&self, dir: &std::path::Path) -> Result<StoreSummary> {
        Err(StorageError::new(
            ErrorKind::Unsupported,
            format!("this storage backend makes no backups (asked for one in {})", dir.display()),
        ))
    }

    /// What a backup records of the store (see [`StoreSummary`]), for a restore to compare
    /// with what the backup recorded. Reads every room's current state. The default: an
    /// error of kind [`ErrorKind::Unsupported`].
    async fn summary(&self) -> Result<StoreSummary> {
        Err(StorageError::new(ErrorKind::Unsupported, "this storage backend makes no summary"))
    }

    /// Whose receipts, account data and to-device messages were written at positions in
    /// `(after, upto]`, for waking the syncs they concern after another process wrote them
    /// ([`Storage::foreign_writes`]). Backends that are never shared need not answer: the
    /// default is an [`ErrorKind::Unavailable`] error.
    async fn stream_changes(&self, after: StreamPos, upto: StreamPos) -> Result<StreamChanges> {
        let _ = (after, upto);
        Err(StorageError::new(
            ErrorKind::Unavailable,
            "this backend is written by one process only and does not list stream changes",
        ))
    }

    /// Deletes everything stored for a room (the server administrators' purge): the room,
    /// all its events whatever their status (timeline, backfilled, outliers, rejected), their
    /// stream positions, redaction marks, relations and search entries, the memberships (both
    /// ways), forgotten marks, receipts, aliases, its places in the room directory and in
    /// application services' lists, the public-join mark of the user directory and its
    /// auth-chain index; atomically and durably when it returns, like [`Storage::apply`].
    /// Other rooms are untouched. Kept: state snapshot records (they carry no room and are
    /// named by nothing once the room and its events are gone), users' own data that names the
    /// room (room account data, key backups, notifications, delayed events) and content
    /// reports. Answers the ids of the events deleted (none for a room not stored).
    async fn purge_room(&self, room_id: &str) -> Result<Vec<String>>;

    /// Deletes some events of a room (the server administrators' history purge): each of
    /// `event_ids` stored in `room_id` goes with its stream or backfill position, its
    /// redaction mark, its relation and its search entry; ids not stored in that room are
    /// skipped. Whatever else names them stays (a state snapshot, a receipt, another event's
    /// edges): the caller chooses events nothing it keeps needs. Atomic and durable when it
    /// returns; answers how many were deleted.
    async fn purge_events(&self, room_id: &str, event_ids: &[String]) -> Result<usize>;

    /// Hands out one unclaimed one-time key of `algorithm` of a device and deletes it, or,
    /// when none is left, the device's fallback key of that algorithm, which is marked used
    /// and kept. Durable like [`Storage::apply`] when it returns; under concurrency (and
    /// across processes sharing a database) no key is handed out twice.
    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>>;
}
