//! The in-memory backend: for tests and embedding. Nothing survives the process.
//!
//! One lock guards the whole store, so a change set is applied atomically and stream positions
//! are assigned in commit order: [`RoomStore::stream_position`] is simply the last position
//! assigned, and no reader can see a later position before an earlier one.

mod auth_chain;
mod moderation;
mod purge;
mod push;
mod registration_tokens;
mod relations;
mod scheduled;
mod search;
mod user_data;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::layers::{self, Layer, StateKey};
use crate::{
    AccountDataChange, AccountDataItem, AccountDataStore, AccountStore, AddressedToDevice, Alias,
    Applied, AppserviceListing, AuthChainEntry, BackfillItem, BackfillPos, ChangeSet, ClaimedKey,
    DehydratedDevice, Device, Direction, DirectoryStore, E2eeStore, ErrorKind, EventStore,
    FallbackKey, InboxStore, KeyStore, Media, MediaStore, NewSnapshot, OurKey, OutboundItem,
    PendingMedia, Presence, PresenceStore, Profile, QuarantineChange, QueueStore, ReceiptKey,
    ReceiptStore, RemoteKey, Result, RetryState, RoomInfo, RoomStore, SnapshotId, SnapshotRef,
    StateEntry, StateStore, Storage, StorageError, StoredEvent, StoredReceipt, StreamItem,
    StreamPos, ToDeviceMessage, ToDeviceUsage, TokenOwner, User,
};

/// `(user, device)`.
type DeviceKey = (String, String);

/// `(user, device, scope, txn id)`.
type TxnKey = (String, String, String, String);

/// `(user, room, type)` of account data.
type DataKey = (String, Option<String>, String);

#[derive(Debug, Default)]
struct Room {
    version: String,
    current_state: Option<SnapshotId>,
    extremities: BTreeSet<String>,
    members: BTreeMap<String, String>,
    timeline: BTreeMap<u64, String>,
    /// Backfill position -> event (higher is older).
    backfill: BTreeMap<u64, String>,
}

#[derive(Debug, Default)]
struct Inner {
    events: HashMap<String, StoredEvent>,
    /// The backfill position of each backfilled event.
    backfill_of: HashMap<String, u64>,
    /// Each snapshot's own record, on the stack of records it names ([`crate::layers`]).
    snapshots: Vec<Arc<Layer>>,
    rooms: HashMap<String, Room>,
    user_rooms: HashMap<String, BTreeMap<String, String>>,
    stream: BTreeMap<u64, (String, String)>,
    users: HashMap<String, User>,
    devices: BTreeMap<(String, String), Device>,
    tokens: HashMap<String, TokenOwner>,
    /// user -> their dehydrated device.
    dehydrated: HashMap<String, DehydratedDevice>,
    our_keys: BTreeMap<String, OurKey>,
    remote_keys: HashMap<(String, String), RemoteKey>,
    transactions: HashSet<(String, String)>,
    queues: HashMap<String, BTreeMap<u64, std::sync::Arc<[u8]>>>,
    next_queue_id: HashMap<String, u64>,
    retries: HashMap<String, RetryState>,
    /// (user, room, type) -> (content, position of the last write).
    account_data: BTreeMap<DataKey, (Vec<u8>, u64)>,
    /// (user, position) -> (room, type): the latest write of each item.
    account_data_log: BTreeMap<(String, u64), (Option<String>, String)>,
    media: BTreeMap<String, Media>,
    /// The quarantine changes by id.
    quarantine_changes: BTreeMap<u64, (String, bool)>,
    media_usage: HashMap<String, u64>,
    /// Pending media by id.
    pending_media: BTreeMap<String, PendingMedia>,
    /// The last stream position handed out.
    stream_head: u64,
    redactions: HashMap<String, String>,
    /// (room, user) of forgotten rooms.
    forgotten: HashSet<(String, String)>,
    profiles: HashMap<String, Profile>,
    presence: BTreeMap<String, Presence>,
    directory_users: BTreeMap<String, crate::DirectoryUser>,
    public_join_rooms: BTreeSet<String>,
    /// (user, device, scope, txn id) -> result.
    transaction_ids: HashMap<TxnKey, String>,
    aliases: BTreeMap<String, Alias>,
    published: BTreeSet<String>,
    appservice_listings: BTreeSet<AppserviceListing>,
    device_keys: BTreeMap<DeviceKey, Vec<u8>>,
    /// (user, device, key id) -> key.
    one_time_keys: BTreeMap<(String, String, String), Vec<u8>>,
    /// (user, device, algorithm) -> key.
    fallback_keys: BTreeMap<(String, String, String), FallbackKey>,
    /// position -> user.
    device_list_log: BTreeMap<u64, String>,
    /// (user, device, position) -> message.
    inbox: BTreeMap<(String, String, u64), ToDeviceMessage>,
    receipts: BTreeMap<ReceiptKey, StoredReceipt>,
    /// (room, position) -> key, of each receipt's last change.
    receipt_log: BTreeMap<(String, u64), ReceiptKey>,
    /// Cross-signing keys and signatures, key backups, pushers.
    user_data: user_data::UserData,
    /// Rooms' auth-chain indexes.
    auth_chains: auth_chain::AuthChains,
    /// OpenID tokens and delayed events.
    scheduled: scheduled::Scheduled,
    /// Registration tokens.
    registration_tokens: registration_tokens::RegistrationTokens,
    /// Administrators' decisions about users and their tokens acting as users.
    moderation: moderation::Moderation,
    relations: relations::Relations,
    /// The search index and the reports.
    search: search::SearchIndex,
    /// Notifications and pushers' delivery cursors.
    push: push::Push,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| StorageError::new(ErrorKind::Unavailable, "a writer panicked"))
    }
}

impl Inner {
    fn snapshot(&self, id: SnapshotId) -> Option<&Arc<Layer>> {
        usize::try_from(id.0).ok().and_then(|i| self.snapshots.get(i))
    }

    /// A record named by a stack (stacks only name records written before them).
    fn record(&self, id: u64) -> Result<Arc<Layer>> {
        self.snapshot(SnapshotId(id)).cloned().ok_or_else(|| layers::dangling_layer(id))
    }

    fn state_get(&self, id: SnapshotId, kind: &str, state_key: &str) -> Result<Option<String>> {
        let Some(top) = self.snapshot(id) else { return Ok(None) };
        let found = layers::lookup(top, kind, state_key, |id| self.record(id))?;
        Ok(found.map(|event| event.to_string()))
    }

    fn state_full(&self, id: SnapshotId) -> Result<Vec<StateEntry>> {
        let Some(top) = self.snapshot(id) else { return Ok(Vec::new()) };
        let stack = top.below.iter().map(|&(id, _)| self.record(id)).collect::<Result<Vec<_>>>()?;
        let mut refs: Vec<&Layer> = stack.iter().map(|layer| &**layer).collect();
        refs.push(top);
        Ok(layers::full(&refs))
    }

    /// The record of a new snapshot ([`layers::compact`]), once `changes` is validated.
    fn new_snapshot(&self, new: &NewSnapshot) -> Result<Layer> {
        // Applied in order: of two changes to one key, the later wins.
        let changes: BTreeMap<StateKey, Option<Arc<str>>> = new
            .changes
            .iter()
            .map(|(kind, state_key, event)| {
                (StateKey::new(kind, state_key), event.as_deref().map(Arc::from))
            })
            .collect();
        let changes = changes.into_iter().map(|(key, event)| (Arc::new(key), event)).collect();
        let stack = match new.parent.and_then(|p| self.snapshot(p)) {
            Some(parent) => parent.stack(new.parent.map_or(0, |p| p.0)),
            None => Vec::new(),
        };
        let load = |id: u64| self.record(id).map(|layer| layer.entries.clone());
        let (kept, entries) = layers::compact(&stack, changes, load)?;
        Ok(Layer::new(stack[..kept].to_vec(), entries))
    }

    /// Checks everything `changes` refers to, so that applying cannot fail half-way.
    fn validate(&self, changes: &ChangeSet) -> Result<()> {
        // Numbers taken first, as the other backends check them before anything else: a
        // change set that is both a conflict and misses a reference is a conflict everywhere.
        let mut txns = HashSet::new();
        for t in &changes.transaction_ids {
            let key = (t.user_id.clone(), t.device_id.clone(), t.scope.clone(), t.txn_id.clone());
            if self.transaction_ids.contains_key(&key) || !txns.insert(key) {
                return Err(StorageError::new(
                    ErrorKind::Conflict,
                    format!("transaction id {} was used already", t.txn_id),
                ));
            }
        }
        let mut completed = HashSet::new();
        for media_id in &changes.completed_pending_media {
            if !self.pending_media.contains_key(media_id) || !completed.insert(media_id) {
                return Err(StorageError::new(
                    ErrorKind::Conflict,
                    format!("media {media_id} is not pending"),
                ));
            }
        }
        self.auth_chains.validate(changes)?;
        let missing = |what: String| Err(StorageError::new(ErrorKind::MissingReference, what));
        let snapshot_ok = |r: &SnapshotRef| match r {
            SnapshotRef::New => changes.snapshot.is_some(),
            SnapshotRef::Existing(id) => self.snapshot(*id).is_some(),
        };
        if let Some(parent) = changes.snapshot.as_ref().and_then(|s| s.parent)
            && self.snapshot(parent).is_none()
        {
            return missing(format!("parent snapshot {}", parent.0));
        }
        for event in &changes.events {
            if event.state_after.as_ref().is_some_and(|r| !snapshot_ok(r)) {
                return missing(format!("state snapshot of {}", event.event_id));
            }
        }
        let mut creating = HashSet::new();
        for room in &changes.rooms {
            if room.create_with_version.is_some() {
                if self.rooms.contains_key(&room.room_id) || !creating.insert(&room.room_id) {
                    return Err(StorageError::new(
                        ErrorKind::Conflict,
                        format!("room {} exists", room.room_id),
                    ));
                }
            } else if !self.rooms.contains_key(&room.room_id) && !creating.contains(&room.room_id) {
                return missing(format!("room {}", room.room_id));
            }
            if room.current_state.as_ref().is_some_and(|r| !snapshot_ok(r)) {
                return missing(format!("current state of {}", room.room_id));
            }
            if let Some(expected) = &room.expected {
                let (state, extremities) = match self.rooms.get(&room.room_id) {
                    Some(r) => (r.current_state, r.extremities.iter().cloned().collect()),
                    None => (None, Vec::new()),
                };
                if !expected.matches(state, &extremities) {
                    return Err(StorageError::new(
                        ErrorKind::Conflict,
                        format!("room {} changed since it was read", room.room_id),
                    ));
                }
            }
        }
        let mut new_users = HashSet::new();
        for user in &changes.new_users {
            if self.users.contains_key(&user.user_id) || !new_users.insert(&user.user_id) {
                return Err(StorageError::new(
                    ErrorKind::Conflict,
                    format!("user {} exists", user.user_id),
                ));
            }
        }
        for user in &changes.updated_users {
            if !self.users.contains_key(&user.user_id) && !new_users.contains(&user.user_id) {
                return missing(format!("user {}", user.user_id));
            }
        }
        for (room, event_id) in &changes.backfill {
            let stored = self.events.get(event_id).map(|e| &e.room_id);
            let new = changes.events.iter().find(|e| e.event_id == *event_id).map(|e| &e.room_id);
            if new.or(stored) != Some(room) {
                return missing(format!("event {event_id} in room {room}"));
            }
        }
        self.user_data.validate(changes)
    }

    fn next_pos(&mut self) -> u64 {
        self.stream_head += 1;
        self.stream_head
    }

    fn delete_device(&mut self, user: &str, device: &str) {
        let key = (user.to_owned(), device.to_owned());
        self.devices.remove(&key);
        self.tokens.retain(|_, owner| owner.user_id != user || owner.device_id != device);
        self.device_keys.remove(&key);
        let of_device = |k: &(String, String, String)| k.0 == user && k.1 == device;
        self.one_time_keys.retain(|k, _| !of_device(k));
        self.fallback_keys.retain(|k, _| !of_device(k));
        self.inbox.retain(|k, _| k.0 != user || k.1 != device);
        self.transaction_ids.retain(|k, _| k.0 != user || k.1 != device);
        self.user_data.delete_device(user, device);
        if self.dehydrated.get(user).is_some_and(|d| d.device_id == device) {
            self.dehydrated.remove(user);
        }
    }

    /// Applies validated `changes`, with the record of their new snapshot.
    fn apply(&mut self, mut changes: ChangeSet, snapshot: Option<Layer>) -> Applied {
        let mut applied = Applied::default();
        let user_changes = user_data::UserData::take(&mut changes);
        self.scheduled.apply(&mut changes);
        self.registration_tokens.apply(&mut changes);
        self.moderation.apply(&mut changes);
        self.push.apply(&mut changes);
        let new_snapshot = snapshot.map(|layer| {
            self.snapshots.push(Arc::new(layer));
            SnapshotId(self.snapshots.len() as u64 - 1)
        });
        applied.snapshot = new_snapshot;
        let resolve = |r: SnapshotRef| match r {
            SnapshotRef::New => new_snapshot,
            SnapshotRef::Existing(id) => Some(id),
        };

        for room in changes.rooms {
            let record = self.rooms.entry(room.room_id.clone()).or_default();
            if let Some(version) = room.create_with_version {
                record.version = version;
            }
            if let Some(state) = room.current_state {
                record.current_state = resolve(state);
            }
            if let Some(extremities) = room.forward_extremities {
                record.extremities = extremities.into_iter().collect();
            }
            for (user, membership) in room.memberships {
                record.members.insert(user.clone(), membership.clone());
                self.user_rooms.entry(user).or_default().insert(room.room_id.clone(), membership);
            }
        }

        let mut indexed = Vec::new();
        for event in changes.events {
            let stream = event.in_timeline.then(|| {
                let pos = self.next_pos();
                self.stream.insert(pos, (event.room_id.clone(), event.event_id.clone()));
                if let Some(room) = self.rooms.get_mut(&event.room_id) {
                    room.timeline.insert(pos, event.event_id.clone());
                }
                applied.stream.push(StreamPos(pos));
                indexed.push((event.event_id.clone(), StreamPos(pos)));
                StreamPos(pos)
            });
            let state_after = event.state_after.and_then(resolve);
            self.events.insert(event.event_id.clone(), event.into_stored(stream, state_after));
        }
        for (room_id, event_id) in changes.backfill {
            let positioned = self.events.get(&event_id).is_some_and(|e| e.stream.is_some());
            if positioned || self.backfill_of.contains_key(&event_id) {
                continue;
            }
            let Some(room) = self.rooms.get_mut(&room_id) else { continue };
            let pos = room.backfill.last_key_value().map_or(1, |(pos, _)| pos + 1);
            room.backfill.insert(pos, event_id.clone());
            self.backfill_of.insert(event_id, pos);
        }

        for user in changes.new_users.into_iter().chain(changes.updated_users) {
            self.users.insert(user.user_id.clone(), user);
        }
        for device in changes.devices {
            self.devices.insert((device.user_id.clone(), device.device_id.clone()), device);
        }
        for (user, device) in changes.deleted_devices {
            self.delete_device(&user, &device);
        }
        for dehydrated in changes.dehydrated_devices {
            self.dehydrated.insert(dehydrated.user_id.clone(), dehydrated);
        }
        for (token, owner) in changes.new_tokens {
            self.tokens.insert(token, owner);
        }
        for token in changes.deleted_tokens {
            self.tokens.remove(&token);
        }
        for key in changes.our_keys {
            self.our_keys.insert(key.key_id.clone(), key);
        }
        for key in changes.remote_keys {
            self.remote_keys.insert((key.server.clone(), key.key_id.clone()), key);
        }
        self.transactions.extend(changes.seen_transactions);
        for (destination, payload) in changes.enqueue {
            let next = self.next_queue_id.entry(destination.clone()).or_insert(1);
            let id = *next;
            *next += 1;
            self.queues.entry(destination).or_default().insert(id, payload);
            applied.enqueued.push(id);
        }
        for (destination, upto) in changes.acknowledge {
            if let Some(queue) = self.queues.get_mut(&destination) {
                *queue = queue.split_off(&(upto + 1));
            }
        }
        for (destination, retry) in changes.retries {
            match retry {
                Some(retry) => self.retries.insert(destination, retry),
                None => self.retries.remove(&destination),
            };
        }
        for (user, room, kind, content) in changes.account_data {
            let pos = self.next_pos();
            let key = (user.clone(), room.clone(), kind.clone());
            if let Some((_, old)) = self.account_data.insert(key, (content, pos)) {
                self.account_data_log.remove(&(user.clone(), old));
            }
            self.account_data_log.insert((user, pos), (room, kind));
        }
        for key in changes.deleted_account_data {
            if let Some((_, old)) = self.account_data.remove(&key) {
                self.account_data_log.remove(&(key.0, old));
            }
        }
        for key in &changes.deleted_media {
            self.media.remove(key);
        }
        for (key, quarantined) in changes.quarantine_changes {
            let id = self.quarantine_changes.last_key_value().map_or(1, |(id, _)| id + 1);
            self.quarantine_changes.insert(id, (key, quarantined));
        }
        for media in changes.media {
            self.media.insert(media.media_id.clone(), media);
        }
        self.media_usage.extend(changes.media_usage);
        for media_id in changes.completed_pending_media.iter().chain(&changes.deleted_pending_media)
        {
            self.pending_media.remove(media_id);
        }
        for pending in changes.pending_media {
            self.pending_media.insert(pending.media_id.clone(), pending);
        }
        for (user, device, keys) in changes.device_keys {
            self.device_keys.insert((user, device), keys);
        }
        for key in changes.one_time_keys {
            self.one_time_keys.entry((key.user_id, key.device_id, key.key_id)).or_insert(key.key);
        }
        for key in changes.fallback_keys {
            let id = (key.user_id.clone(), key.device_id.clone(), key.algorithm.clone());
            self.fallback_keys.insert(id, key);
        }
        for user in changes.device_list_changes {
            let pos = self.next_pos();
            self.device_list_log.insert(pos, user);
        }
        for message in changes.to_device {
            let pos = self.next_pos();
            self.inbox.insert(
                (message.user_id, message.device_id, pos),
                ToDeviceMessage {
                    pos: StreamPos(pos),
                    sender: message.sender,
                    kind: message.kind,
                    content: message.content,
                },
            );
        }
        for (user, device, upto) in changes.to_device_delivered {
            self.inbox.retain(|k, _| k.0 != user || k.1 != device || k.2 > upto.0);
        }
        for key in changes.deleted_receipts {
            if let Some(old) = self.receipts.remove(&key) {
                self.receipt_log.remove(&(key.room_id, old.pos.0));
            }
        }
        for receipt in changes.receipts {
            let pos = self.next_pos();
            let key = receipt.key.clone();
            self.receipt_log.insert((key.room_id.clone(), pos), key.clone());
            let stored = StoredReceipt { pos: StreamPos(pos), receipt };
            if let Some(old) = self.receipts.insert(key.clone(), stored) {
                self.receipt_log.remove(&(key.room_id, old.pos.0));
            }
        }
        for t in changes.transaction_ids {
            self.transaction_ids.insert((t.user_id, t.device_id, t.scope, t.txn_id), t.result);
        }
        for alias in changes.aliases {
            self.aliases.insert(alias.alias.clone(), alias);
        }
        for alias in changes.deleted_aliases {
            self.aliases.remove(&alias);
        }
        for (listing, published) in changes.appservice_directory {
            if published {
                self.appservice_listings.insert(listing);
            } else {
                self.appservice_listings.remove(&listing);
            }
        }
        for (room, published) in changes.directory {
            if published {
                self.published.insert(room);
            } else {
                self.published.remove(&room);
            }
        }
        self.relations.apply(
            &changes.relations,
            &changes.redactions,
            &self.events,
            &self.redactions,
        );
        for entry in changes.search {
            let Some((_, pos)) = indexed.iter().find(|(id, _)| *id == entry.event_id) else {
                continue;
            };
            if !self.redactions.contains_key(&entry.event_id) {
                self.search.add(*pos, entry);
            }
        }
        for (redacted, _) in &changes.redactions {
            self.search.remove(redacted);
        }
        self.search.report(changes.reports, &changes.deleted_reports);
        self.redactions.extend(changes.redactions);
        self.profiles.extend(changes.profiles);
        self.presence.extend(changes.presence);
        for user in changes.directory_users {
            self.directory_users.insert(user.user_id.clone(), user);
        }
        for user in changes.deleted_directory_users {
            self.directory_users.remove(&user);
        }
        for (room, public) in changes.public_join_rules {
            if public {
                self.public_join_rooms.insert(room);
            } else {
                self.public_join_rooms.remove(&room);
            }
        }
        for (user, room, forgotten) in changes.forgotten {
            if forgotten {
                self.forgotten.insert((room, user));
            } else {
                self.forgotten.remove(&(room, user));
            }
        }
        self.auth_chains.apply(changes.auth_chain);
        self.user_data.apply(user_changes, &mut applied);
        applied
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        Ok(self.lock()?.events.get(event_id).cloned())
    }

    async fn auth_chain(&self, event_ids: &[&str]) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<&str> = event_ids
            .iter()
            .filter_map(|id| inner.events.get(*id))
            .flat_map(|e| e.auth_events.iter().map(String::as_str))
            .collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id.to_owned())
                && let Some(event) = inner.events.get(id)
            {
                stack.extend(event.auth_events.iter().map(String::as_str));
            }
        }
        Ok(seen.into_iter().collect())
    }

    async fn redaction_of(&self, event_id: &str) -> Result<Option<String>> {
        Ok(self.lock()?.redactions.get(event_id).cloned())
    }

    async fn events(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>> {
        Ok(auth_chain::events_among(&self.lock()?.events, event_ids))
    }

    async fn auth_chain_index(
        &self,
        room_id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<AuthChainEntry>> {
        Ok(self.lock()?.auth_chains.range(room_id, from, limit))
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn state_get(
        &self,
        snapshot: SnapshotId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        self.lock()?.state_get(snapshot, kind, state_key)
    }

    async fn state_full(&self, snapshot: SnapshotId) -> Result<Vec<StateEntry>> {
        self.lock()?.state_full(snapshot)
    }
}

#[async_trait]
impl RoomStore for MemoryStore {
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>> {
        Ok(self.lock()?.rooms.get(room_id).map(|room| RoomInfo {
            version: room.version.clone(),
            current_state: room.current_state,
            forward_extremities: room.extremities.iter().cloned().collect(),
        }))
    }

    async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        Ok(self.lock()?.rooms.get(room_id).and_then(|r| r.members.get(user_id).cloned()))
    }

    async fn rooms_of_user(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .lock()?
            .user_rooms
            .get(user_id)
            .map(|rooms| rooms.iter().map(|(r, m)| (r.clone(), m.clone())).collect())
            .unwrap_or_default())
    }

    async fn members(&self, room_id: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .lock()?
            .rooms
            .get(room_id)
            .map(|room| room.members.iter().map(|(u, m)| (u.clone(), m.clone())).collect())
            .unwrap_or_default())
    }

    async fn stream_position(&self) -> Result<StreamPos> {
        Ok(StreamPos(self.lock()?.stream_head))
    }

    async fn forgotten(&self, room_id: &str, user_id: &str) -> Result<bool> {
        Ok(self.lock()?.forgotten.contains(&(room_id.to_owned(), user_id.to_owned())))
    }

    async fn stream_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<StreamItem>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let inner = self.lock()?;
        Ok(inner
            .stream
            .range(after.0 + 1..=upto.0)
            .take(limit)
            .map(|(&pos, (room, event))| StreamItem {
                pos: StreamPos(pos),
                room_id: room.clone(),
                event_id: event.clone(),
            })
            .collect())
    }

    async fn timeline(
        &self,
        room_id: &str,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<StreamItem>> {
        let inner = self.lock()?;
        let Some(room) = inner.rooms.get(room_id) else { return Ok(Vec::new()) };
        let item = |(&pos, event): (&u64, &String)| StreamItem {
            pos: StreamPos(pos),
            room_id: room_id.to_owned(),
            event_id: event.clone(),
        };
        Ok(match direction {
            Direction::Backwards => {
                room.timeline.range(..from.0).rev().take(limit).map(item).collect()
            }
            Direction::Forwards => {
                let after = (std::ops::Bound::Excluded(from.0), std::ops::Bound::Unbounded);
                room.timeline.range(after).take(limit).map(item).collect()
            }
        })
    }

    async fn backfilled(
        &self,
        room_id: &str,
        from: BackfillPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<BackfillItem>> {
        let inner = self.lock()?;
        let Some(room) = inner.rooms.get(room_id) else { return Ok(Vec::new()) };
        let item = |(&pos, event): (&u64, &String)| BackfillItem {
            pos: BackfillPos(pos),
            event_id: event.clone(),
        };
        Ok(match direction {
            Direction::Backwards => {
                let older = (std::ops::Bound::Excluded(from.0), std::ops::Bound::Unbounded);
                room.backfill.range(older).take(limit).map(item).collect()
            }
            Direction::Forwards => {
                room.backfill.range(..from.0).rev().take(limit).map(item).collect()
            }
        })
    }

    async fn backfill_position(&self, event_id: &str) -> Result<Option<BackfillPos>> {
        Ok(self.lock()?.backfill_of.get(event_id).copied().map(BackfillPos))
    }

    async fn room_ids(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut ids: Vec<String> =
            inner.rooms.keys().filter(|id| id.as_str() > after).cloned().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn users(&self, after: &str, limit: usize) -> Result<Vec<User>> {
        let inner = self.lock()?;
        let mut users: Vec<User> =
            inner.users.values().filter(|u| u.user_id.as_str() > after).cloned().collect();
        users.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        users.truncate(limit);
        Ok(users)
    }
    async fn user(&self, user_id: &str) -> Result<Option<User>> {
        Ok(self.lock()?.users.get(user_id).cloned())
    }
    async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        Ok(self.lock()?.devices.get(&(user_id.to_owned(), device_id.to_owned())).cloned())
    }
    async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        let inner = self.lock()?;
        let from = (user_id.to_owned(), String::new());
        Ok(inner
            .devices
            .range(from..)
            .take_while(|((user, _), _)| user == user_id)
            .map(|(_, d)| d.clone())
            .collect())
    }
    async fn token(&self, token: &str) -> Result<Option<TokenOwner>> {
        Ok(self.lock()?.tokens.get(token).cloned())
    }
    async fn dehydrated_device(&self, user_id: &str) -> Result<Option<DehydratedDevice>> {
        Ok(self.lock()?.dehydrated.get(user_id).cloned())
    }
    async fn profile(&self, user_id: &str) -> Result<Option<Profile>> {
        Ok(self.lock()?.profiles.get(user_id).cloned())
    }
    async fn transaction_id(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        let key = (user_id.to_owned(), device_id.to_owned(), scope.to_owned(), txn_id.to_owned());
        Ok(self.lock()?.transaction_ids.get(&key).cloned())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn our_keys(&self) -> Result<Vec<OurKey>> {
        Ok(self.lock()?.our_keys.values().cloned().collect())
    }
    async fn remote_key(&self, server: &str, key_id: &str) -> Result<Option<RemoteKey>> {
        Ok(self.lock()?.remote_keys.get(&(server.to_owned(), key_id.to_owned())).cloned())
    }
}

#[async_trait]
impl QueueStore for MemoryStore {
    async fn transaction_seen(&self, origin: &str, txn_id: &str) -> Result<bool> {
        Ok(self.lock()?.transactions.contains(&(origin.to_owned(), txn_id.to_owned())))
    }
    async fn outbound(&self, destination: &str, limit: usize) -> Result<Vec<OutboundItem>> {
        Ok(self
            .lock()?
            .queues
            .get(destination)
            .map(|queue| {
                queue
                    .iter()
                    .take(limit)
                    .map(|(&id, payload)| OutboundItem { id, payload: payload.clone() })
                    .collect()
            })
            .unwrap_or_default())
    }
    async fn outbound_destinations(&self) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut destinations: Vec<String> = inner
            .queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(destination, _)| destination.clone())
            .collect();
        destinations.sort_unstable();
        Ok(destinations)
    }
    async fn retry(&self, destination: &str) -> Result<Option<RetryState>> {
        Ok(self.lock()?.retries.get(destination).copied())
    }
}

#[async_trait]
impl AccountDataStore for MemoryStore {
    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = (user_id.to_owned(), room_id.map(str::to_owned), kind.to_owned());
        Ok(self.lock()?.account_data.get(&key).map(|(content, _)| content.clone()))
    }
    async fn all_account_data(&self, user_id: &str) -> Result<Vec<AccountDataItem>> {
        Ok(self
            .lock()?
            .account_data
            .iter()
            .filter(|((user, _, _), _)| user == user_id)
            .map(|((_, room, kind), (content, _))| AccountDataItem {
                room_id: room.clone(),
                kind: kind.clone(),
                content: content.clone(),
            })
            .collect())
    }
    async fn account_data_changes(
        &self,
        user_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataChange>> {
        let inner = self.lock()?;
        let range = (user_id.to_owned(), after.0.saturating_add(1))..=(user_id.to_owned(), upto.0);
        let mut changes: Vec<AccountDataChange> = if after >= upto {
            Vec::new()
        } else {
            inner
                .account_data_log
                .range(range)
                .map(|(_, (room, kind))| AccountDataChange {
                    room_id: room.clone(),
                    kind: kind.clone(),
                })
                .collect()
        };
        changes.sort();
        Ok(changes)
    }
}

#[async_trait]
impl MediaStore for MemoryStore {
    async fn media(&self, media_id: &str) -> Result<Option<Media>> {
        Ok(self.lock()?.media.get(media_id).cloned())
    }
    async fn media_usage(&self, user_id: &str) -> Result<u64> {
        Ok(self.lock()?.media_usage.get(user_id).copied().unwrap_or(0))
    }
    async fn pending_media(&self, media_id: &str) -> Result<Option<PendingMedia>> {
        Ok(self.lock()?.pending_media.get(media_id).cloned())
    }
    async fn pending_media_of(&self, user_id: &str) -> Result<Vec<PendingMedia>> {
        let inner = self.lock()?;
        Ok(inner.pending_media.values().filter(|p| p.creator == user_id).cloned().collect())
    }
    async fn media_rows(&self, after: &str, limit: usize) -> Result<Vec<Media>> {
        self.media_where(after, limit, |_| true)
    }
    async fn media_of(&self, uploader: &str, after: &str, limit: usize) -> Result<Vec<Media>> {
        self.media_where(after, limit, |m| m.uploader == uploader)
    }
    async fn media_with_content(
        &self,
        sha256: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>> {
        self.media_where(after, limit, |m| m.sha256.as_deref() == Some(sha256))
    }
    async fn quarantine_changes(&self, after: u64, limit: usize) -> Result<Vec<QuarantineChange>> {
        let inner = self.lock()?;
        let above = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
        Ok(inner
            .quarantine_changes
            .range(above)
            .take(limit)
            .map(|(&id, (key, quarantined))| QuarantineChange {
                id,
                key: key.clone(),
                quarantined: *quarantined,
            })
            .collect())
    }
    async fn last_quarantine_change(&self) -> Result<u64> {
        Ok(self.lock()?.quarantine_changes.last_key_value().map_or(0, |(id, _)| *id))
    }
}

impl MemoryStore {
    /// The media rows `pass` keeps whose keys are above `after`, sorted, at most `limit`.
    fn media_where(
        &self,
        after: &str,
        limit: usize,
        pass: impl Fn(&Media) -> bool,
    ) -> Result<Vec<Media>> {
        let inner = self.lock()?;
        let above = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
        Ok(inner
            .media
            .range::<str, _>(above)
            .map(|(_, m)| m)
            .filter(|m| pass(m))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl DirectoryStore for MemoryStore {
    async fn alias(&self, alias: &str) -> Result<Option<Alias>> {
        Ok(self.lock()?.aliases.get(alias).cloned())
    }
    async fn room_aliases(&self, room_id: &str) -> Result<Vec<Alias>> {
        Ok(self.lock()?.aliases.values().filter(|a| a.room_id == room_id).cloned().collect())
    }
    async fn published(&self, room_id: &str) -> Result<bool> {
        Ok(self.lock()?.published.contains(room_id))
    }
    async fn published_rooms(&self) -> Result<Vec<String>> {
        Ok(self.lock()?.published.iter().cloned().collect())
    }
    async fn appservice_listings(&self) -> Result<Vec<AppserviceListing>> {
        Ok(self.lock()?.appservice_listings.iter().cloned().collect())
    }
}

fn device_range(user: &str, device: &str) -> std::ops::RangeInclusive<(String, String, String)> {
    let from = (user.to_owned(), device.to_owned(), String::new());
    let to = (user.to_owned(), device.to_owned(), char::MAX.to_string());
    from..=to
}

#[async_trait]
impl E2eeStore for MemoryStore {
    async fn device_keys(&self, user_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let inner = self.lock()?;
        let from = (user_id.to_owned(), String::new());
        Ok(inner
            .device_keys
            .range(from..)
            .take_while(|((user, _), _)| user == user_id)
            .map(|((_, device), keys)| (device.clone(), keys.clone()))
            .collect())
    }
    async fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        key_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = (user_id.to_owned(), device_id.to_owned(), key_id.to_owned());
        Ok(self.lock()?.one_time_keys.get(&key).cloned())
    }
    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<BTreeMap<String, u64>> {
        let inner = self.lock()?;
        let mut counts = BTreeMap::new();
        for (_, _, key_id) in
            inner.one_time_keys.range(device_range(user_id, device_id)).map(|(k, _)| k)
        {
            let algorithm = key_id.split(':').next().unwrap_or_default();
            *counts.entry(algorithm.to_owned()).or_insert(0) += 1;
        }
        Ok(counts)
    }
    async fn fallback_keys(&self, user_id: &str, device_id: &str) -> Result<Vec<FallbackKey>> {
        let inner = self.lock()?;
        Ok(inner
            .fallback_keys
            .range(device_range(user_id, device_id))
            .map(|(_, k)| k.clone())
            .collect())
    }
    async fn device_list_changes(&self, after: StreamPos, upto: StreamPos) -> Result<Vec<String>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let inner = self.lock()?;
        let users: BTreeSet<&String> =
            inner.device_list_log.range(after.0 + 1..=upto.0).map(|(_, u)| u).collect();
        Ok(users.into_iter().cloned().collect())
    }
}

#[async_trait]
impl InboxStore for MemoryStore {
    async fn to_device(
        &self,
        user_id: &str,
        device_id: &str,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let inner = self.lock()?;
        let from = (user_id.to_owned(), device_id.to_owned(), after.0 + 1);
        let to = (user_id.to_owned(), device_id.to_owned(), upto.0);
        Ok(inner.inbox.range(from..=to).take(limit).map(|(_, m)| m.clone()).collect())
    }
    async fn to_device_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<AddressedToDevice>> {
        let inner = self.lock()?;
        // The queues are keyed by device: a scan (this backend is for tests and embedding).
        let mut found: Vec<AddressedToDevice> = inner
            .inbox
            .iter()
            .filter(|(key, _)| key.2 > after.0 && key.2 <= upto.0)
            .map(|(key, message)| AddressedToDevice {
                user_id: key.0.clone(),
                device_id: key.1.clone(),
                message: message.clone(),
            })
            .collect();
        found.sort_by_key(|m| m.message.pos);
        found.truncate(limit);
        Ok(found)
    }

    async fn to_device_usage(
        &self,
        user_id: &str,
        device_id: &str,
        sender: &str,
    ) -> Result<ToDeviceUsage> {
        let inner = self.lock()?;
        let from = (user_id.to_owned(), device_id.to_owned(), 0);
        let to = (user_id.to_owned(), device_id.to_owned(), u64::MAX);
        let mut usage = ToDeviceUsage::default();
        for message in inner.inbox.range(from..=to).map(|(_, m)| m) {
            usage.count(message, sender);
        }
        Ok(usage)
    }
}

#[async_trait]
impl ReceiptStore for MemoryStore {
    async fn receipts(
        &self,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<StoredReceipt>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let inner = self.lock()?;
        let range = (room_id.to_owned(), after.0 + 1)..=(room_id.to_owned(), upto.0);
        Ok(inner
            .receipt_log
            .range(range)
            .filter_map(|(_, key)| inner.receipts.get(key).cloned())
            .collect())
    }
    async fn user_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<StoredReceipt>> {
        let inner = self.lock()?;
        Ok(inner
            .receipts
            .values()
            .filter(|r| r.receipt.key.room_id == room_id && r.receipt.key.user_id == user_id)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl crate::RelationStore for MemoryStore {
    async fn relations(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        from: StreamPos,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<crate::Relation>> {
        Ok(self.lock()?.relations.relations(room_id, parent, rel_type, from, direction, limit))
    }

    async fn relation_summary(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: &str,
        upto: StreamPos,
        sender: &str,
    ) -> Result<crate::RelationSummary> {
        Ok(self.lock()?.relations.summary(room_id, parent, rel_type, upto, sender))
    }

    async fn thread_replies(
        &self,
        room_id: &str,
        from: StreamPos,
        limit: usize,
    ) -> Result<Vec<crate::Relation>> {
        Ok(self.lock()?.relations.thread_replies(room_id, from, limit))
    }

    async fn relation_of(&self, event_id: &str) -> Result<Option<crate::Relation>> {
        Ok(self.lock()?.relations.relation_of(event_id))
    }
}

#[async_trait]
impl crate::UserDirectoryStore for MemoryStore {
    async fn search_user_directory(
        &self,
        term: &str,
        limit: usize,
    ) -> Result<Vec<crate::DirectoryUser>> {
        let inner = self.lock()?;
        Ok(inner
            .directory_users
            .values()
            .filter(|u| u.matches(term))
            .take(limit)
            .cloned()
            .collect())
    }
    async fn public_join_rooms(&self) -> Result<Vec<String>> {
        Ok(self.lock()?.public_join_rooms.iter().cloned().collect())
    }
}

#[async_trait]
impl PresenceStore for MemoryStore {
    async fn presence(&self, user_id: &str) -> Result<Option<Presence>> {
        Ok(self.lock()?.presence.get(user_id).cloned())
    }
    async fn presences(&self, user_ids: &[&str]) -> Result<Vec<(String, Presence)>> {
        let inner = self.lock()?;
        let wanted: BTreeSet<&str> = user_ids.iter().copied().collect();
        Ok(wanted
            .into_iter()
            .filter_map(|u| inner.presence.get(u).map(|p| (u.to_owned(), p.clone())))
            .collect())
    }
    async fn present_users(&self) -> Result<Vec<(String, Presence)>> {
        let inner = self.lock()?;
        Ok(inner
            .presence
            .iter()
            .filter(|(_, p)| p.state != crate::PresenceState::Offline)
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect())
    }
}

#[async_trait]
impl crate::SearchStore for MemoryStore {
    async fn search(&self, query: &crate::SearchQuery) -> Result<crate::SearchPage> {
        Ok(self.lock()?.search.search(query))
    }
}

#[async_trait]
impl crate::ReportStore for MemoryStore {
    async fn reports(&self, after: u64, limit: usize) -> Result<Vec<crate::StoredReport>> {
        Ok(self.lock()?.search.reports(after, limit))
    }
}

#[async_trait]
impl Storage for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn apply(&self, changes: ChangeSet) -> Result<Applied> {
        let mut inner = self.lock()?;
        inner.validate(&changes)?;
        let snapshot = changes.snapshot.as_ref().map(|new| inner.new_snapshot(new)).transpose()?;
        Ok(inner.apply(changes, snapshot))
    }

    async fn purge_room(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(self.lock()?.purge_room(room_id))
    }

    async fn purge_events(&self, room_id: &str, event_ids: &[String]) -> Result<usize> {
        Ok(self.lock()?.purge_events(room_id, event_ids))
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>> {
        let mut inner = self.lock()?;
        let prefix = format!("{algorithm}:");
        let from = (user_id.to_owned(), device_id.to_owned(), prefix.clone());
        let found = inner
            .one_time_keys
            .range(from..)
            .next()
            .map(|(k, _)| k.clone())
            .filter(|k| k.0 == user_id && k.1 == device_id && k.2.starts_with(&prefix));
        if let Some(id) = found
            && let Some(key) = inner.one_time_keys.remove(&id)
        {
            return Ok(Some(ClaimedKey { key_id: id.2, key, fallback: false }));
        }
        let id = (user_id.to_owned(), device_id.to_owned(), algorithm.to_owned());
        Ok(inner.fallback_keys.get_mut(&id).map(|fallback| {
            fallback.used = true;
            ClaimedKey {
                key_id: fallback.key_id.clone(),
                key: fallback.key.clone(),
                fallback: true,
            }
        }))
    }
}
