//! Storage with injected faults, for tests of what the server does when storage is slow.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use std::collections::BTreeMap;

use matrix_storage::{
    AccountDataChange, AccountDataItem, AccountDataStore, AccountStore, Alias, Applied,
    AuthChainEntry, ChangeSet, ClaimedKey, Device, Direction, DirectoryStore, E2eeStore,
    EventStore, FallbackKey, InboxStore, KeyStore, Media, MediaStore, OurKey, OutboundItem,
    PendingMedia, Profile, QuarantineChange, QueueStore, ReceiptStore, RemoteKey, Result,
    RetryState, RoomInfo, RoomStore, SnapshotId, StateEntry, StateStore, Storage, StoredEvent,
    StoredReceipt, StreamItem, StreamPos, ToDeviceMessage, ToDeviceUsage, TokenOwner, User,
};
use matrix_storage::{AppserviceCursor, AppserviceStore};
use matrix_storage::{
    BackfillItem, BackfillPos, BackupSession, BackupVersion, CrossSigningKeys, CrossSigningStore,
    DehydratedDevice, DirectoryUser, KeyBackupStore, KeySignature, Notification, NotificationStore,
    Presence, PresenceStore, PushCursor, Pusher, PusherStore, Relation, RelationStore,
    RelationSummary, ReportStore, SearchStore, UserDirectoryStore,
};
use matrix_storage::{DelayedEvent, DelayedEventStore, OpenIdStore, OpenIdToken};
use matrix_storage::{ModerationStore, PuppetToken, UserModeration};
use matrix_storage::{ReadUpTo, RegistrationToken, RegistrationTokenStore, UnreadCounts};

/// A store whose change sets are acknowledged `delay` after they are applied (durable, but
/// the acknowledgement is late: a client may give up in between).
pub(crate) struct SlowAcks {
    pub(crate) inner: Arc<dyn Storage>,
    pub(crate) delay: Duration,
}

/// Forwards the read methods to `inner`.
macro_rules! forward {
    ($trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $out:ty;)* }) => {
        #[async_trait]
        impl $trait for SlowAcks {
            $(async fn $name(&self $(, $arg: $ty)*) -> $out { self.inner.$name($($arg),*).await })*
        }
    };
}

forward!(ModerationStore {
    fn user_moderation(&self, user_id: &str) -> Result<Option<UserModeration>>;
    fn puppet_token(&self, token_hash: &str) -> Result<Option<PuppetToken>>;
});
forward!(RegistrationTokenStore {
    fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>>;
    fn registration_tokens(&self) -> Result<Vec<RegistrationToken>>;
});
forward!(EventStore {
    fn event(&self, event_id: &str) -> Result<Option<StoredEvent>>;
    fn auth_chain(&self, event_ids: &[&str]) -> Result<Vec<String>>;
    fn redaction_of(&self, event_id: &str) -> Result<Option<String>>;
    fn events(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>>;
    fn auth_chain_index(&self, room_id: &str, from: u32, limit: usize) -> Result<Vec<AuthChainEntry>>;
});
forward!(StateStore {
    fn state_get(&self, snapshot: SnapshotId, kind: &str, state_key: &str) -> Result<Option<String>>;
    fn state_full(&self, snapshot: SnapshotId) -> Result<Vec<StateEntry>>;
});
forward!(RoomStore {
    fn room(&self, room_id: &str) -> Result<Option<RoomInfo>>;
    fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>>;
    fn rooms_of_user(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    fn members(&self, room_id: &str) -> Result<Vec<(String, String)>>;
    fn stream_position(&self) -> Result<StreamPos>;
    fn stream_range(&self, after: StreamPos, upto: StreamPos, limit: usize) -> Result<Vec<StreamItem>>;
    fn timeline(&self, room_id: &str, from: StreamPos, direction: Direction, limit: usize) -> Result<Vec<StreamItem>>;
    fn forgotten(&self, room_id: &str, user_id: &str) -> Result<bool>;
    fn backfilled(&self, room_id: &str, from: BackfillPos, direction: Direction, limit: usize) -> Result<Vec<BackfillItem>>;
    fn backfill_position(&self, event_id: &str) -> Result<Option<BackfillPos>>;
    fn room_ids(&self, after: &str, limit: usize) -> Result<Vec<String>>;
});
forward!(AccountStore {
    fn user(&self, user_id: &str) -> Result<Option<User>>;
    fn users(&self, after: &str, limit: usize) -> Result<Vec<User>>;
    fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>>;
    fn devices(&self, user_id: &str) -> Result<Vec<Device>>;
    fn token(&self, token: &str) -> Result<Option<TokenOwner>>;
    fn dehydrated_device(&self, user_id: &str) -> Result<Option<DehydratedDevice>>;
    fn profile(&self, user_id: &str) -> Result<Option<Profile>>;
    fn transaction_id(&self, user_id: &str, device_id: &str, scope: &str, txn_id: &str) -> Result<Option<String>>;
});
forward!(KeyStore {
    fn our_keys(&self) -> Result<Vec<OurKey>>;
    fn remote_key(&self, server: &str, key_id: &str) -> Result<Option<RemoteKey>>;
});
forward!(QueueStore {
    fn transaction_seen(&self, origin: &str, txn_id: &str) -> Result<bool>;
    fn outbound(&self, destination: &str, limit: usize) -> Result<Vec<OutboundItem>>;
    fn retry(&self, destination: &str) -> Result<Option<RetryState>>;
    fn outbound_destinations(&self) -> Result<Vec<String>>;
});
forward!(AccountDataStore {
    fn account_data(&self, user_id: &str, room_id: Option<&str>, kind: &str) -> Result<Option<Vec<u8>>>;
    fn all_account_data(&self, user_id: &str) -> Result<Vec<AccountDataItem>>;
    fn account_data_changes(&self, user_id: &str, after: StreamPos, upto: StreamPos) -> Result<Vec<AccountDataChange>>;
});
forward!(MediaStore {
    fn media(&self, media_id: &str) -> Result<Option<Media>>;
    fn media_usage(&self, user_id: &str) -> Result<u64>;
    fn pending_media(&self, media_id: &str) -> Result<Option<PendingMedia>>;
    fn pending_media_of(&self, user_id: &str) -> Result<Vec<PendingMedia>>;
    fn media_rows(&self, after: &str, limit: usize) -> Result<Vec<Media>>;
    fn media_of(&self, uploader: &str, after: &str, limit: usize) -> Result<Vec<Media>>;
    fn media_with_content(&self, sha256: &str, after: &str, limit: usize) -> Result<Vec<Media>>;
    fn quarantine_changes(&self, after: u64, limit: usize) -> Result<Vec<QuarantineChange>>;
    fn last_quarantine_change(&self) -> Result<u64>;
});
forward!(DirectoryStore {
    fn alias(&self, alias: &str) -> Result<Option<Alias>>;
    fn room_aliases(&self, room_id: &str) -> Result<Vec<Alias>>;
    fn published(&self, room_id: &str) -> Result<bool>;
    fn published_rooms(&self) -> Result<Vec<String>>;
    fn appservice_listings(&self) -> Result<Vec<matrix_storage::AppserviceListing>>;
});
forward!(E2eeStore {
    fn device_keys(&self, user_id: &str) -> Result<Vec<(String, Vec<u8>)>>;
    fn one_time_key(&self, user_id: &str, device_id: &str, key_id: &str) -> Result<Option<Vec<u8>>>;
    fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<BTreeMap<String, u64>>;
    fn fallback_keys(&self, user_id: &str, device_id: &str) -> Result<Vec<FallbackKey>>;
    fn device_list_changes(&self, after: StreamPos, upto: StreamPos) -> Result<Vec<String>>;
});
forward!(InboxStore {
    fn to_device(&self, user_id: &str, device_id: &str, after: StreamPos, upto: StreamPos, limit: usize) -> Result<Vec<ToDeviceMessage>>;
    fn to_device_usage(&self, user_id: &str, device_id: &str, sender: &str) -> Result<ToDeviceUsage>;
    fn to_device_range(&self, after: StreamPos, upto: StreamPos, limit: usize) -> Result<Vec<matrix_storage::AddressedToDevice>>;
});
forward!(ReceiptStore {
    fn receipts(&self, room_id: &str, after: StreamPos, upto: StreamPos) -> Result<Vec<StoredReceipt>>;
    fn user_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<StoredReceipt>>;
});
forward!(CrossSigningStore {
    fn cross_signing_keys(&self, user_id: &str) -> Result<CrossSigningKeys>;
    fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignature>>;
});
forward!(KeyBackupStore {
    fn backup_version(&self, user_id: &str, version: &str) -> Result<Option<BackupVersion>>;
    fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersion>>;
    fn backup_sessions(&self, user_id: &str, version: &str, room_id: Option<&str>) -> Result<Vec<BackupSession>>;
    fn backup_session(&self, user_id: &str, version: &str, room_id: &str, session_id: &str) -> Result<Option<Vec<u8>>>;
});
forward!(PusherStore {
    fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>>;
    fn all_pushers(&self) -> Result<Vec<Pusher>>;
});
forward!(RelationStore {
    fn relations(&self, room_id: &str, parent: &str, rel_type: Option<&str>, from: StreamPos, direction: Direction, limit: usize) -> Result<Vec<Relation>>;
    fn relation_summary(&self, room_id: &str, parent: &str, rel_type: &str, upto: StreamPos, sender: &str) -> Result<RelationSummary>;
    fn thread_replies(&self, room_id: &str, from: StreamPos, limit: usize) -> Result<Vec<Relation>>;
    fn relation_of(&self, event_id: &str) -> Result<Option<Relation>>;
});
forward!(NotificationStore {
    fn notifications(&self, user_id: &str, before: Option<StreamPos>, limit: usize, highlights_only: bool) -> Result<Vec<Notification>>;
    fn notifications_after(&self, user_id: &str, after: StreamPos, limit: usize) -> Result<Vec<Notification>>;
    fn unread_counts(&self, user_id: &str, room_id: &str, read: &ReadUpTo) -> Result<UnreadCounts>;
    fn push_cursor(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<Option<PushCursor>>;
});
forward!(AppserviceStore {
    fn appservice_cursor(&self, appservice_id: &str) -> Result<Option<AppserviceCursor>>;
});
forward!(PresenceStore {
    fn presence(&self, user_id: &str) -> Result<Option<Presence>>;
    fn presences(&self, user_ids: &[&str]) -> Result<Vec<(String, Presence)>>;
    fn present_users(&self) -> Result<Vec<(String, Presence)>>;
});
forward!(OpenIdStore {
    fn openid_token(&self, token_hash: &str) -> Result<Option<OpenIdToken>>;
    fn expired_openid_tokens(&self, now_ts: u64, limit: usize) -> Result<Vec<String>>;
});
forward!(DelayedEventStore {
    fn delayed_event(&self, user_id: &str, delay_id: &str) -> Result<Option<DelayedEvent>>;
    fn delayed_events_of(&self, user_id: &str) -> Result<Vec<DelayedEvent>>;
    fn next_delayed_events(&self, limit: usize) -> Result<Vec<DelayedEvent>>;
});

forward!(UserDirectoryStore {
    fn search_user_directory(&self, term: &str, limit: usize) -> Result<Vec<DirectoryUser>>;
    fn public_join_rooms(&self) -> Result<Vec<String>>;
});
forward!(SearchStore {
    fn search(&self, query: &matrix_storage::SearchQuery) -> Result<matrix_storage::SearchPage>;
});
forward!(ReportStore {
    fn reports(&self, after: u64, limit: usize) -> Result<Vec<matrix_storage::StoredReport>>;
});

#[async_trait]
impl Storage for SlowAcks {
    async fn apply(&self, changes: ChangeSet) -> Result<Applied> {
        let applied = self.inner.apply(changes).await?;
        tokio::time::sleep(self.delay).await;
        Ok(applied)
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>> {
        self.inner.claim_key(user_id, device_id, algorithm).await
    }

    async fn purge_room(&self, room_id: &str) -> Result<Vec<String>> {
        self.inner.purge_room(room_id).await
    }

    async fn purge_events(&self, room_id: &str, event_ids: &[String]) -> Result<usize> {
        self.inner.purge_events(room_id, event_ids).await
    }
}
