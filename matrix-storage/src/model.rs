//! What the stores hold, and the change set that writes it.

mod auth_chain;
mod e2ee;
mod moderation;
mod records;
mod relations;
mod scheduled;
mod search;
mod user_data;

use std::sync::Arc;

pub use auth_chain::*;
pub use e2ee::*;
pub use moderation::*;
pub use records::*;
pub use relations::*;
pub use scheduled::*;
pub use search::*;
pub use user_data::*;

/// A position in the global stream (starts at 1; 0 is "before anything"): timeline events,
/// account-data writes, receipts, to-device messages and device-list changes all take their
/// positions from it, in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamPos(pub u64);

/// A state snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(pub u64);

/// Reading direction of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Older events first from `from` (exclusive).
    Backwards,
    /// Newer events first from `from` (exclusive).
    Forwards,
}

/// How an event was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventStatus {
    /// Accepted into the room's DAG.
    Accepted,
    /// Known, but not part of the room's DAG here (fetched for auth or state).
    Outlier,
    /// Failed the authorization rules.
    Rejected,
    /// Passed its own auth events but not the current state.
    SoftFailed,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event id.
    pub event_id: String,
    /// The room.
    pub room_id: String,
    /// The event's canonical JSON as received.
    pub json: Arc<[u8]>,
    /// How it was received.
    pub status: EventStatus,
    /// Its `auth_events`.
    pub auth_events: Vec<String>,
    /// Its `prev_events`.
    pub prev_events: Vec<String>,
    /// Its position in the timeline, if it is in one.
    pub stream: Option<StreamPos>,
    /// The room state after it, if known.
    pub state_after: Option<SnapshotId>,
}

/// One entry of a state map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateEntry {
    /// The event type.
    pub kind: String,
    /// The state key.
    pub state_key: String,
    /// The event id.
    pub event_id: String,
}

/// What the room store knows about a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room version id.
    pub version: String,
    /// The current state, if any.
    pub current_state: Option<SnapshotId>,
    /// The forward extremities, sorted.
    pub forward_extremities: Vec<String>,
}

/// One timeline event in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamItem {
    /// Its position.
    pub pos: StreamPos,
    /// Its room.
    pub room_id: String,
    /// The event.
    pub event_id: String,
}

/// A position among a room's backfilled events: history older than the room's timeline,
/// fetched from other servers after the room's timeline here had started. Backfill positions
/// count backwards from the start of the room's timeline: 1 is just before the room's first
/// timeline event, higher is older, and 0 is the timeline's start itself. They are per room and
/// not stream positions: a backfilled event never shows in [`crate::RoomStore::stream_range`]
/// (nor in `/sync`), only in [`crate::RoomStore::backfilled`] (a room's history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackfillPos(pub u64);

/// One backfilled event of a room, at its backfill position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillItem {
    /// Its position (higher is older).
    pub pos: BackfillPos,
    /// The event.
    pub event_id: String,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub user_id: String,
    /// The password hash (PHC string), if the user can log in with a password.
    pub password_hash: Option<String>,
    /// Server administrator.
    pub admin: bool,
    /// Deactivated accounts keep their id but can no longer log in.
    pub deactivated: bool,
}

/// A device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The owner.
    pub user_id: String,
    /// The device id.
    pub device_id: String,
    /// The display name.
    pub display_name: Option<String>,
}

/// Whom an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
}

/// One of our signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurKey {
    /// `ed25519:...`.
    pub key_id: String,
    /// The seed, base64.
    pub seed: String,
    /// When it stopped being used, if it did (ms since the epoch).
    pub expired_ts: Option<i64>,
}

/// A remote server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKey {
    /// The server.
    pub server: String,
    /// `ed25519:...`.
    pub key_id: String,
    /// The public key, base64.
    pub public_key: String,
    /// Valid until (ms since the epoch).
    pub valid_until_ts: i64,
}

/// An item queued for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundItem {
    /// Its position in the destination's queue.
    pub id: u64,
    /// The payload (a PDU or EDU, serialised).
    pub payload: Arc<[u8]>,
}

/// How often a destination failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryState {
    /// Consecutive failures.
    pub failures: u32,
    /// Not before this time (ms since the epoch).
    pub retry_after_ts: i64,
}

/// One item of account data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDataItem {
    /// The room, or `None` for global account data.
    pub room_id: Option<String>,
    /// The type.
    pub kind: String,
    /// The content (JSON).
    pub content: Vec<u8>,
}

/// Media metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The media id.
    pub media_id: String,
    /// The content type.
    pub content_type: Option<String>,
    /// The size in bytes.
    pub size: u64,
    /// The file name given at upload.
    pub upload_name: Option<String>,
    /// Who uploaded it.
    pub uploader: String,
    /// When (ms since the epoch).
    pub created_ts: i64,
    /// The SHA-256 of the content, lowercase hex: the name its bytes are kept under (content
    /// addressed). `None` for items stored before content addressing.
    pub sha256: Option<String>,
    /// Whether it came while unauthenticated media was frozen (Synapse's
    /// `enable_authenticated_media`): such an item is served on the authenticated paths
    /// only. `false` for items stored before the switch existed.
    pub authenticated: bool,
    /// The administrator who quarantined it (Synapse's `quarantined_by`): quarantined media
    /// is not served. `None`: not quarantined.
    pub quarantined_by: Option<String>,
    /// Whether it is protected from quarantine by room or by user (Synapse's
    /// `safe_from_quarantine`).
    pub safe_from_quarantine: bool,
}

/// A change of a media item's quarantine, with the id the store gave it (increasing in the
/// order they were stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineChange {
    /// Its id.
    pub id: u64,
    /// The media row's key (`{media_id}` for ours, `{server}/{media_id}` for others').
    pub key: String,
    /// Whether it was quarantined (or freed).
    pub quarantined: bool,
}

/// A media id handed out by `POST /_matrix/media/v1/create` whose content has not been
/// uploaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMedia {
    /// The media id.
    pub media_id: String,
    /// Who created it: only they may upload its content.
    pub creator: String,
    /// When (ms since the epoch).
    pub created_ts: i64,
    /// Until when the content may be uploaded (ms since the epoch).
    pub expires_ts: i64,
}

/// A new event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event id.
    pub event_id: String,
    /// The room.
    pub room_id: String,
    /// Its canonical JSON as received.
    pub json: Arc<[u8]>,
    /// How it was received.
    pub status: EventStatus,
    /// Its `auth_events`.
    pub auth_events: Vec<String>,
    /// Its `prev_events`.
    pub prev_events: Vec<String>,
    /// Whether it gets a position in the timeline.
    pub in_timeline: bool,
    /// The state after it: the change set's new snapshot, or an existing one.
    pub state_after: Option<SnapshotRef>,
}

impl NewEvent {
    /// The stored form, once the backend assigned its position and resolved its snapshot.
    pub(crate) fn into_stored(
        self,
        stream: Option<StreamPos>,
        state_after: Option<SnapshotId>,
    ) -> StoredEvent {
        StoredEvent {
            event_id: self.event_id,
            room_id: self.room_id,
            json: self.json,
            status: self.status,
            auth_events: self.auth_events,
            prev_events: self.prev_events,
            stream,
            state_after,
        }
    }
}

/// A snapshot named in a change set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotRef {
    /// The snapshot this change set creates.
    New,
    /// A stored snapshot.
    Existing(SnapshotId),
}

/// A new state snapshot: a parent and the entries that differ from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewSnapshot {
    /// The snapshot this one changes, or `None` for a state built from nothing.
    pub parent: Option<SnapshotId>,
    /// `(type, state_key)` set to an event id, or removed (`None`); applied in order, so of
    /// two changes to one key the later wins.
    pub changes: Vec<(String, String, Option<String>)>,
}

/// Changes to a room other than its events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomChanges {
    /// The room.
    pub room_id: String,
    /// The room version, when creating the room.
    pub create_with_version: Option<String>,
    /// The new current state.
    pub current_state: Option<SnapshotRef>,
    /// The new forward extremities.
    pub forward_extremities: Option<Vec<String>>,
    /// Membership changes: `(user, membership)`.
    pub memberships: Vec<(String, String)>,
    /// What the writer read of the room and built on: when set, the change set applies only
    /// if the room's current state and forward extremities are still these (else
    /// [`crate::ErrorKind::Conflict`] and nothing is written), so that two writers (two
    /// processes sharing a database) never both build on the same state and overwrite each
    /// other. The writer reads the room again and rebuilds its event.
    pub expected: Option<ExpectedRoom>,
}

/// What a writer expects a room to be when its change set applies ([`RoomChanges::expected`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpectedRoom {
    /// The room's current state.
    pub current_state: Option<SnapshotId>,
    /// The room's forward extremities (compared as a set).
    pub forward_extremities: Vec<String>,
}

impl ExpectedRoom {
    /// Whether `info` is what was expected.
    pub fn matches(
        &self,
        current_state: Option<SnapshotId>,
        forward_extremities: &[String],
    ) -> bool {
        let expected: std::collections::BTreeSet<&String> =
            self.forward_extremities.iter().collect();
        let found: std::collections::BTreeSet<&String> = forward_extremities.iter().collect();
        self.current_state == current_state && expected == found
    }
}

/// What was written at a range of stream positions besides timeline events (those are in
/// [`crate::RoomStore::stream_range`], device-list changes in
/// [`crate::E2eeStore::device_list_changes`]): whose syncs a process should wake when another
/// process wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamChanges {
    /// Rooms whose receipts changed, sorted, each once.
    pub receipt_rooms: Vec<String>,
    /// Users whose account data or to-device inbox changed, sorted, each once.
    pub users: Vec<String>,
}

/// A room in an application service's room list of one of its networks (the directory of a
/// bridged network, `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppserviceListing {
    /// The service's registration id.
    pub appservice_id: String,
    /// The network, as the service names it.
    pub network_id: String,
    /// The room.
    pub room_id: String,
}

/// Everything one write changes, applied atomically by [`crate::Storage::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChangeSet {
    /// New events.
    pub events: Vec<NewEvent>,
    /// Events to put before the start of their room's timeline `(room, event)`, newest first:
    /// each gets its room's next backfill position (one above the highest it holds, see
    /// [`BackfillPos`]), in this order. Each event must be stored in that room, by this change
    /// set or before (else [`crate::ErrorKind::MissingReference`]); one that has a stream or a
    /// backfill position already keeps it and is skipped.
    pub backfill: Vec<(String, String)>,
    /// A new state snapshot (named [`SnapshotRef::New`] elsewhere in this change set).
    pub snapshot: Option<NewSnapshot>,
    /// Room changes.
    pub rooms: Vec<RoomChanges>,
    /// Users to create (a user that exists is a [`crate::ErrorKind::Conflict`]).
    pub new_users: Vec<User>,
    /// Users to replace (password, admin, deactivation).
    pub updated_users: Vec<User>,
    /// Devices to create or replace.
    pub devices: Vec<Device>,
    /// Devices to delete `(user, device)`, with their tokens, device keys, one-time and
    /// fallback keys, to-device queue, transaction ids and the signatures on their keys (not
    /// the pushers they created: see [`Pusher`]).
    pub deleted_devices: Vec<(String, String)>,
    /// Dehydrated devices to record, each replacing its user's record, after
    /// [`ChangeSet::deleted_devices`] (the device, its keys and its display name are written as
    /// any device's, in [`ChangeSet::devices`] and the key fields). Deleting the device a
    /// record names deletes the record.
    pub dehydrated_devices: Vec<DehydratedDevice>,
    /// Access tokens to add.
    pub new_tokens: Vec<(String, TokenOwner)>,
    /// Access tokens to delete.
    pub deleted_tokens: Vec<String>,
    /// Our keys to add or replace.
    pub our_keys: Vec<OurKey>,
    /// Remote keys to add or replace.
    pub remote_keys: Vec<RemoteKey>,
    /// Inbound transactions `(origin, txn_id)` now processed.
    pub seen_transactions: Vec<(String, String)>,
    /// Outbound items to queue `(destination, payload)`.
    pub enqueue: Vec<(String, Arc<[u8]>)>,
    /// Outbound items acknowledged: everything of `destination` up to and including `id`.
    pub acknowledge: Vec<(String, u64)>,
    /// Retry states to set (`None` clears).
    pub retries: Vec<(String, Option<RetryState>)>,
    /// Account data to set `(user, room, type, content)`; each write gets a stream position.
    pub account_data: Vec<(String, Option<String>, String, Vec<u8>)>,
    /// Media metadata to add.
    pub media: Vec<Media>,
    /// Users' media quota counters to set `(user, bytes uploaded)`.
    pub media_usage: Vec<(String, u64)>,
    /// Media ids to record as created and not uploaded yet (each replaces the pending entry
    /// of its id).
    pub pending_media: Vec<PendingMedia>,
    /// Pending media ids whose content is uploaded (by [`ChangeSet::media`] of this change
    /// set): their pending entries are deleted. One that is not pending (never created,
    /// uploaded already, or named twice) makes the whole change set a
    /// [`crate::ErrorKind::Conflict`]: of two uploads to one id, exactly one commits.
    pub completed_pending_media: Vec<String>,
    /// Pending media ids to forget (expired); one that is not pending is skipped.
    pub deleted_pending_media: Vec<String>,
    /// Media rows to delete, by key (written before [`ChangeSet::media`]); a missing one is
    /// skipped.
    pub deleted_media: Vec<String>,
    /// Changes of media quarantines to log `(key, quarantined)`; each gets the next id.
    pub quarantine_changes: Vec<(String, bool)>,
    /// Account data to delete `(user, room, type)`.
    pub deleted_account_data: Vec<(String, Option<String>, String)>,
    /// Device keys to set `(user, device, keys as JSON)`; a deleted device loses them.
    pub device_keys: Vec<(String, String, Vec<u8>)>,
    /// One-time keys to add (a key id the device holds already keeps its stored key).
    pub one_time_keys: Vec<OneTimeKey>,
    /// Fallback keys to set: each replaces the device's key of its algorithm.
    pub fallback_keys: Vec<FallbackKey>,
    /// Users whose device list changed; each change gets a stream position.
    pub device_list_changes: Vec<String>,
    /// To-device messages to queue; each gets a stream position.
    pub to_device: Vec<NewToDevice>,
    /// To-device messages delivered: a device's messages up to and including a position are
    /// deleted `(user, device, position)`.
    pub to_device_delivered: Vec<(String, String, StreamPos)>,
    /// Receipts to set (each replaces the one under its key and gets a stream position).
    pub receipts: Vec<Receipt>,
    /// Receipts to delete.
    pub deleted_receipts: Vec<ReceiptKey>,
    /// Client transaction ids to record. One recorded already makes the whole change set a
    /// [`crate::ErrorKind::Conflict`]: of two requests with one id, exactly one commits.
    pub transaction_ids: Vec<TransactionId>,
    /// Entries to add to rooms' auth-chain indexes. An entry whose `(room, index)` is stored
    /// already, or taken twice in the change set, makes the whole change set a
    /// [`crate::ErrorKind::Conflict`]: of two writers (two processes sharing a database) that
    /// number an event alike, exactly one commits, and the other reads the index again.
    pub auth_chain: Vec<AuthChainEntry>,
    /// Aliases to set.
    pub aliases: Vec<Alias>,
    /// Aliases to delete.
    pub deleted_aliases: Vec<String>,
    /// Rooms to publish in (`true`) or take out of (`false`) the public room directory.
    pub directory: Vec<(String, bool)>,
    /// Rooms to publish in (`true`) or take out of (`false`) an application service's room
    /// list of one of its networks, in order.
    pub appservice_directory: Vec<(AppserviceListing, bool)>,
    /// Redactions `(redacted event, redaction event)`. A redacted event's relation leaves
    /// the relations index (redaction strips `m.relates_to` from its content).
    pub redactions: Vec<(String, String)>,
    /// Relations to index (see [`crate::RelationStore`]), written after
    /// [`ChangeSet::events`]: each takes the stream position of its event, whether the event is
    /// in this change set or stored before. One whose event has no stream position (an
    /// outlier, backfilled history, an event not stored) is skipped, as is one whose event is
    /// indexed already, or whose event is redacted (also by this change set).
    pub relations: Vec<NewRelation>,
    /// Profiles to set.
    pub profiles: Vec<(String, Profile)>,
    /// Presence to set `(user, presence)`: each replaces what is stored for the user (who may
    /// be of another server: no user record is needed).
    pub presence: Vec<(String, Presence)>,
    /// User directory entries to set: each replaces its user's entry.
    pub directory_users: Vec<DirectoryUser>,
    /// Users to take out of the user directory (after [`ChangeSet::directory_users`]).
    pub deleted_directory_users: Vec<String>,
    /// Rooms whose join rule became (`true`) or is no longer (`false`) `public`, for the
    /// user directory ("users in public rooms").
    pub public_join_rules: Vec<(String, bool)>,
    /// Rooms a user forgot (`true`) or no longer forgets (`false`) `(user, room, forgotten)`.
    pub forgotten: Vec<(String, String, bool)>,
    /// Cross-signing keys to set `(user, kind, key as JSON)`: each replaces the user's key of
    /// its kind whole. An upload that others must learn of also names the user in
    /// [`ChangeSet::device_list_changes`], in the same change set.
    pub cross_signing_keys: Vec<(String, CrossSigningKeyKind, Vec<u8>)>,
    /// Signatures to store; each replaces the one by the same signer key on the same target
    /// key. Deleting a device deletes the signatures on it.
    pub key_signatures: Vec<KeySignature>,
    /// Key backup versions to create; the store allocates their versions, per user in
    /// increasing order and never twice (also after a deletion), and lists them in
    /// [`Applied::backup_versions`].
    pub new_backup_versions: Vec<NewBackupVersion>,
    /// Backup versions whose `auth_data` to replace `(user, version, auth_data)`.
    pub updated_backup_versions: Vec<(String, String, Vec<u8>)>,
    /// Backed-up sessions to delete `(user, version, which)`, before [`ChangeSet::backup_sessions`]
    /// are written.
    pub deleted_backup_sessions: Vec<(String, String, BackupScope)>,
    /// Backed-up sessions to write: each replaces the one stored under its key (whether it is
    /// "better" is the caller's question, see [`NewBackupSession`]).
    pub backup_sessions: Vec<NewBackupSession>,
    /// Backup versions to delete `(user, version)`, with their sessions, after everything
    /// else of the change set; deleting a deleted or unknown version does nothing.
    pub deleted_backup_versions: Vec<(String, String)>,
    /// Pushers to delete `(user, app_id, pushkey)`.
    pub deleted_pushers: Vec<(String, String, String)>,
    /// `(user, app_id, pushkey)`: deletes the pushers with this `app_id` and `pushkey` of
    /// every other user (the spec's `append: false`). Applied before [`ChangeSet::pushers`].
    pub exclusive_pushers: Vec<(String, String, String)>,
    /// Pushers to set: each replaces the user's pusher of the same `app_id` and `pushkey`.
    /// Applied after the deletions above.
    pub pushers: Vec<Pusher>,
    /// OpenID tokens to add `(token hash, owner)`.
    pub openid_tokens: Vec<(String, OpenIdToken)>,
    /// OpenID tokens to delete (by hash); one not stored is skipped.
    pub deleted_openid_tokens: Vec<String>,
    /// Registration tokens to store: each replaces the one with the same token.
    pub registration_tokens: Vec<RegistrationToken>,
    /// Registration tokens to delete, after [`ChangeSet::registration_tokens`]; one not
    /// stored is skipped.
    pub deleted_registration_tokens: Vec<String>,
    /// Administrators' decisions about users: each replaces the user's record (an empty one
    /// deletes it).
    pub user_moderation: Vec<UserModeration>,
    /// Administrators' tokens acting as users to store: each replaces the one with the same
    /// hash.
    pub puppet_tokens: Vec<PuppetToken>,
    /// Administrators' tokens to delete (by hash), after [`ChangeSet::puppet_tokens`]; one
    /// not stored is skipped.
    pub deleted_puppet_tokens: Vec<String>,
    /// Delayed events to store: each replaces the one of its user with its `delay_id`.
    pub delayed_events: Vec<DelayedEvent>,
    /// Delayed events to delete `(user, delay_id)`, after [`ChangeSet::delayed_events`]; one
    /// not stored is skipped.
    pub deleted_delayed_events: Vec<(String, String)>,
    /// Texts of this change set's timeline events to add to the search index (an entry whose
    /// event is not a timeline event of the change set is skipped). An event redacted (by
    /// [`ChangeSet::redactions`], in this change set or a later one) leaves the index.
    pub search: Vec<SearchEntry>,
    /// Content reports to store; each gets the next report id.
    pub reports: Vec<ContentReport>,
    /// Content reports to delete (by id), after [`ChangeSet::reports`]; an id not stored is
    /// skipped. Ids are never handed out again.
    pub deleted_reports: Vec<u64>,
    /// Notifications to store: each replaces the user's notification at the same position;
    /// past [`NOTIFICATIONS_KEPT`] a user's oldest are deleted.
    pub notifications: Vec<Notification>,
    /// Pushers' delivery cursors to set (each replaces the one of its pusher).
    pub push_cursors: Vec<PushCursor>,
    /// Pushers' delivery cursors to delete `(user, app_id, pushkey)`, before
    /// [`ChangeSet::push_cursors`] are set.
    pub deleted_push_cursors: Vec<(String, String, String)>,
    /// Application services' delivery cursors to set (each replaces the one of its service).
    pub appservice_cursors: Vec<AppserviceCursor>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What [`crate::Storage::apply`] assigned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// The stream position of each new timeline event, in the change set's order.
    pub stream: Vec<StreamPos>,
    /// The id of the new snapshot, if the change set made one.
    pub snapshot: Option<SnapshotId>,
    /// The queue ids of the enqueued items, in order.
    pub enqueued: Vec<u64>,
    /// The versions allocated to [`ChangeSet::new_backup_versions`], in order.
    pub backup_versions: Vec<String>,
}
