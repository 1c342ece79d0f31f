//! Rooms: building, authorizing and appending our users' events, and reading rooms back.
//!
//! Every event of a room is built under that room's lock: the current state gives the auth
//! events, the forward extremities give `prev_events` and the depth, matrix-core hashes and
//! signs it and checks it against the authorization rules, and one change set stores it with
//! its state snapshot (a delta against the room's current one), the new extremity and any
//! membership change. Rooms are written in parallel with each other.
//!
//! Several processes may serve one database: the room's lock is this process's, so the change
//! set also names the state and extremities the event was built on, and the storage refuses
//! it ([`matrix_storage::ErrorKind::Conflict`]) if another process appended meanwhile; the
//! event is then built again on what is there now ([`APPEND_TRIES`] times at most). Events
//! other processes append are followed from the storage (`rooms/foreign.rs`): the syncs
//! they concern are woken and their notices and departures noted, as for our own.

mod authorize;
mod backfill;
mod caches;
mod create;
pub(crate) mod directory;
mod erase;
mod federated;
mod foreign;
pub(crate) mod format;
pub(crate) mod hierarchy;
pub(crate) mod invite_remote;
mod join_remote;
mod knock;
mod membership;
pub(crate) mod notify;
pub(crate) mod outliers;
mod peer_reads;
mod purge;
mod read;
pub(crate) mod relations;
pub(crate) mod remote;
pub(crate) mod search;
mod send;
mod server_visibility;
mod timestamp;
mod upgrade;
pub(crate) mod user_directory;
mod visibility;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use matrix_core::json::{Object, Value};
use matrix_core::{Pdu, RoomVersionRules, SigningKey, auth};
use matrix_storage::Durable;
use matrix_storage::{
    ChangeSet, EventStatus, NewEvent, NewSnapshot, RoomChanges, SnapshotId, SnapshotRef, Storage,
    StreamPos, TransactionId,
};
use ruma::{OwnedServerName, UserId};

use authorize::{Authorized, RoomGuard};
pub(crate) use create::{CreateRoom, DEFAULT_ROOM_VERSION, Preset};
pub(crate) use peer_reads::{MAX_BACKFILL, MAX_MISSING, MAX_START_EVENTS};
pub(crate) use read::{EventFilter, Page, Viewer};
pub(crate) use upgrade::MAX_ADDITIONAL_CREATORS;
pub(crate) use visibility::{Looker, Memberships, Reader};

use super::ephemeral::Ephemeral;
use crate::error::ApiError;

/// The most `prev_events` an event names (the forward extremities beyond are left to later
/// events).
const MAX_PREV_EVENTS: usize = 10;

/// What a parsed event costs the event cache: about three times its canonical JSON (the
/// parsed tree keeps every key and string apart), so that the cache is bounded in bytes, not
/// in events, whatever their size.
#[derive(Debug, Clone, Copy)]
struct EventWeight;

impl quick_cache::Weighter<String, Arc<Pdu>> for EventWeight {
    fn weight(&self, _id: &String, pdu: &Arc<Pdu>) -> u64 {
        (pdu.canonical_bytes().len() as u64).saturating_mul(3).saturating_add(256)
    }
}

/// What a membership history costs its cache: one per change it holds, so that a user with
/// thousands of changes cannot make 16,384 entries hold millions (at most 2^20 changes, about
/// 16 MiB, are cached in all).
#[derive(Debug, Clone, Copy)]
struct HistoryWeight;

impl quick_cache::Weighter<(String, String), (String, Arc<Memberships>)> for HistoryWeight {
    fn weight(&self, _key: &(String, String), value: &(String, Arc<Memberships>)) -> u64 {
        value.1.len() as u64 + 1
    }
}

/// How many times an event is built when other processes keep appending to its room first.
const APPEND_TRIES: usize = 16;

/// How many times an event another server countersigns (an invite of its user) is built and
/// sent to it, when the room keeps changing while that server answers.
const COUNTERSIGN_TRIES: usize = 3;

/// How many room locks are kept before those nobody holds are dropped.
const LOCKS_KEPT: usize = 1_024;

/// An event to build: its type, state key, content (and for redactions what it redacts).
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) kind: String,
    pub(crate) state_key: Option<String>,
    pub(crate) content: Object,
    pub(crate) redacts: Option<String>,
}

impl Draft {
    pub(crate) fn message(kind: &str, content: Object) -> Self {
        Draft { kind: kind.to_owned(), state_key: None, content, redacts: None }
    }
    pub(crate) fn state(kind: &str, state_key: &str, content: Object) -> Self {
        Draft {
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }
}

/// The room service.
pub(crate) struct Rooms {
    /// This service itself, for work that must outlive the request that asked for it.
    me: Weak<Rooms>,
    storage: Arc<dyn Storage>,
    server_name: OwnedServerName,
    key: SigningKey,
    ephemeral: Arc<Ephemeral>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Parsed events by id (events never change once stored).
    events: quick_cache::sync::Cache<String, Arc<Pdu>, EventWeight>,
    /// The state after each event (never changes).
    snapshots_of: quick_cache::sync::Cache<String, SnapshotId>,
    /// The history visibility of each state snapshot (never changes).
    visibility_at: quick_cache::sync::Cache<SnapshotId, visibility::History>,
    /// The state event each state event replaced (never changes).
    replaced: quick_cache::sync::Cache<String, Option<Arc<str>>>,
    /// Member summaries of snapshots (never change).
    summaries: quick_cache::sync::Cache<SnapshotId, Arc<read::MemberSummary>>,
    /// `publicRooms` entries by room, with the snapshot they were made at.
    directory_entries: quick_cache::sync::Cache<String, (SnapshotId, Arc<serde_json::Value>)>,
    /// Membership histories by (room, user), with the member event they end with.
    memberships:
        quick_cache::sync::Cache<(String, String), (String, Arc<Memberships>), HistoryWeight>,
    /// Room versions by room id (a room's version never changes).
    versions: quick_cache::sync::Cache<String, &'static RoomVersionRules>,
    /// Whether each of our users asked for their content to be erased (see `erase.rs`).
    erased: quick_cache::sync::Cache<String, bool>,
    txns: send::Transactions,
    /// Serialises alias changes (check, then write).
    alias_lock: tokio::sync::Mutex<()>,
    /// Serialises room upgrades (a room is upgraded once).
    upgrade_lock: tokio::sync::Mutex<()>,
    echoes: send::Echoes,
    /// Woken when notifications are stored, for the push sender.
    pub(crate) push_wake: Arc<tokio::sync::Notify>,
    /// Where our events go: other servers, when federation is on.
    outbound: std::sync::OnceLock<Arc<matrix_federation::sender::Sender>>,
    /// Signed requests to other servers, when federation is on.
    client: std::sync::OnceLock<Arc<matrix_federation::client::FederationClient>>,
    /// Where other servers' keys are found, when federation is on.
    keys: std::sync::OnceLock<Arc<dyn matrix_federation::keys::KeyProvider>>,
    /// The other servers with joined members, by room, with the state snapshot they were
    /// read at.
    remote_servers: quick_cache::sync::Cache<String, (SnapshotId, Arc<Vec<String>>)>,
    /// Whether a user of ours is joined, by room, with the state snapshot it was read at.
    residency: quick_cache::sync::Cache<String, (SnapshotId, bool)>,
    /// Rooms' indexes of auth chains, for state resolution.
    auth_indexes: matrix_federation::auth_index::AuthIndexes,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses JSON a client sent as event content: strict canonical JSON rules for room versions
/// that require them (no floats, integers in range), and an object.
pub(crate) fn parse_content(bytes: &[u8], rules: &RoomVersionRules) -> Result<Object, ApiError> {
    let value = if rules.strict_canonical_json {
        matrix_core::json::parse_strict(bytes)
    } else {
        matrix_core::json::parse_lenient(bytes)
    }
    .map_err(|e| ApiError::bad_json(format!("the event content is not valid: {e}")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::bad_json("the event content must be an object")),
    }
}

fn pdu_error(error: matrix_core::PduError) -> ApiError {
    match error {
        matrix_core::PduError::TooLarge { .. } => ApiError::event_too_large(),
        other => ApiError::bad_json(format!("the event is not valid: {other}")),
    }
}

impl Rooms {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
        key: SigningKey,
        ephemeral: Arc<Ephemeral>,
        event_cache_bytes: u64,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Rooms {
            me: me.clone(),
            server_name,
            key,
            ephemeral,
            locks: Mutex::new(HashMap::new()),
            events: quick_cache::sync::Cache::with_weighter(
                4_096,
                event_cache_bytes.max(1),
                EventWeight,
            ),
            versions: quick_cache::sync::Cache::new(16_384),
            erased: quick_cache::sync::Cache::new(16_384),
            snapshots_of: quick_cache::sync::Cache::new(16_384),
            visibility_at: quick_cache::sync::Cache::new(4_096),
            memberships: quick_cache::sync::Cache::with_weighter(16_384, 1 << 20, HistoryWeight),
            replaced: quick_cache::sync::Cache::new(16_384),
            summaries: quick_cache::sync::Cache::new(1_024),
            directory_entries: quick_cache::sync::Cache::new(4_096),
            txns: quick_cache::sync::Cache::new(16_384),
            alias_lock: tokio::sync::Mutex::new(()),
            upgrade_lock: tokio::sync::Mutex::new(()),
            echoes: quick_cache::sync::Cache::new(16_384),
            push_wake: Arc::new(tokio::sync::Notify::new()),
            outbound: std::sync::OnceLock::new(),
            client: std::sync::OnceLock::new(),
            keys: std::sync::OnceLock::new(),
            remote_servers: quick_cache::sync::Cache::new(4_096),
            residency: quick_cache::sync::Cache::new(4_096),
            auth_indexes: matrix_federation::auth_index::AuthIndexes::new(
                storage.clone(),
                matrix_federation::auth_index::CACHED_ENTRIES,
            ),
            storage,
        })
    }

    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Rooms' indexes of auth chains, for state resolution.
    pub(crate) fn auth_indexes(&self) -> &matrix_federation::auth_index::AuthIndexes {
        &self.auth_indexes
    }

    pub(crate) fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Sends our events to the other servers in their rooms from now on, asks other servers
    /// with `client` where a room needs it (invites, joins), and checks their signatures on
    /// what they answer with `keys`.
    pub(crate) fn federate(
        &self,
        sender: Arc<matrix_federation::sender::Sender>,
        client: Arc<matrix_federation::client::FederationClient>,
        keys: Arc<dyn matrix_federation::keys::KeyProvider>,
    ) {
        let _ = self.outbound.set(sender);
        let _ = self.client.set(client);
        let _ = self.keys.set(keys);
    }

    /// Where other servers' keys are found, when federation is on.
    pub(crate) fn key_provider(&self) -> Option<Arc<dyn matrix_federation::keys::KeyProvider>> {
        self.keys.get().cloned()
    }

    /// Signed requests to other servers, when federation is on.
    pub(crate) fn federation_client(
        &self,
    ) -> Option<Arc<matrix_federation::client::FederationClient>> {
        self.client.get().cloned()
    }

    /// The outbound sender, when federation is on (EDUs our users cause go through it).
    pub(crate) fn outbound(&self) -> Option<&Arc<matrix_federation::sender::Sender>> {
        self.outbound.get()
    }

    /// `server` contacted us: what is queued for it is sent now rather than after its backoff.
    pub(crate) fn wake_destination(&self, server: &str) {
        if let Some(sender) = self.outbound.get() {
            sender.wake(server);
        }
    }

    /// The other servers with joined members in a room whose current state is `snapshot`.
    pub(crate) async fn remote_servers(
        &self,
        room_id: &str,
        snapshot: SnapshotId,
    ) -> Result<Arc<Vec<String>>, ApiError> {
        if let Some((at, servers)) = self.remote_servers.get(room_id)
            && at == snapshot
        {
            return Ok(servers);
        }
        let ours = self.server_name.as_str();
        let mut servers: Vec<String> = self
            .storage
            .members(room_id)
            .await?
            .into_iter()
            .filter(|(_, membership)| membership == "join")
            .filter_map(|(user, _)| user.split_once(':').map(|(_, server)| server.to_owned()))
            .filter(|server| server != ours)
            .collect();
        servers.sort_unstable();
        servers.dedup();
        let servers = Arc::new(servers);
        self.remote_servers.insert(room_id.to_owned(), (snapshot, servers.clone()));
        Ok(servers)
    }

    /// The servers an event of ours goes to: those with joined members before it (an invitee's
    /// server gets the invite by `/invite`; a server with no member in the room could not
    /// check an event of it), and the server of a user of another server kicked or banned
    /// (which takes it as the end of its user's knock or invite).
    async fn destinations(
        &self,
        pdu: &Pdu,
        state_before: Option<SnapshotId>,
    ) -> Result<Vec<String>, ApiError> {
        if self.outbound.get().is_none() {
            return Ok(Vec::new());
        }
        let Some(snapshot) = state_before else { return Ok(Vec::new()) };
        let mut servers = (*self.remote_servers(pdu.room_id(), snapshot).await?).clone();
        // A kick or ban of another server's user (a denied knock, a revoked invite) reaches
        // that user's server even when no user of it is joined.
        if pdu.kind() == "m.room.member"
            && matches!(pdu.content().get_str("membership"), Some("leave" | "ban"))
            && let Some(target) = pdu.state_key().filter(|target| *target != pdu.sender())
            && let Some((_, server)) = target.split_once(':')
            && server != self.server_name.as_str()
            && !servers.iter().any(|s| s == server)
        {
            servers.push(server.to_owned());
        }
        Ok(servers)
    }

    /// The lock of a room (callers check that the room exists first). Locks nobody holds are
    /// dropped once the map grows past [`LOCKS_KEPT`], so the map stays bounded.
    fn room_lock(&self, room_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.len() >= LOCKS_KEPT && !locks.contains_key(room_id) {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    /// The rules of a room's version, or `None` for a room not stored here.
    pub(crate) async fn rules(
        &self,
        room_id: &str,
    ) -> Result<Option<&'static RoomVersionRules>, ApiError> {
        if let Some(rules) = self.versions.get(room_id) {
            return Ok(Some(rules));
        }
        let Some(info) = self.storage.room(room_id).await? else { return Ok(None) };
        let rules = RoomVersionRules::get(&info.version)
            .ok_or_else(|| ApiError::unknown("a stored room has an unknown version"))?;
        self.versions.insert(room_id.to_owned(), rules);
        Ok(Some(rules))
    }

    /// A stored event, parsed.
    pub(crate) async fn pdu(&self, event_id: &str) -> Result<Option<Arc<Pdu>>, ApiError> {
        if let Some(pdu) = self.events.get(event_id) {
            return Ok(Some(pdu));
        }
        let Some(stored) = self.storage.event(event_id).await? else { return Ok(None) };
        self.parsed(stored).await
    }

    /// A stored event read from storage, parsed (or taken from the cache).
    pub(crate) async fn parsed(
        &self,
        stored: matrix_storage::StoredEvent,
    ) -> Result<Option<Arc<Pdu>>, ApiError> {
        if let Some(pdu) = self.events.get(&stored.event_id) {
            return Ok(Some(pdu));
        }
        let Some(rules) = self.rules(&stored.room_id).await? else { return Ok(None) };
        let value = matrix_core::json::parse_lenient(&stored.json)
            .map_err(|_| ApiError::unknown("a stored event does not parse"))?;
        let Value::Object(json) = value else {
            return Err(ApiError::unknown("a stored event is not an object"));
        };
        let event_id = stored.event_id;
        let pdu = Arc::new(Pdu::with_event_id(json, event_id.clone(), rules));
        self.events.insert(event_id, pdu.clone());
        Ok(Some(pdu))
    }

    /// The state event at `(kind, state_key)` of a snapshot.
    pub(crate) async fn state_pdu(
        &self,
        snapshot: SnapshotId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>, ApiError> {
        match self.storage.state_get(snapshot, kind, state_key).await? {
            Some(id) => self.pdu(&id).await,
            None => Ok(None),
        }
    }

    /// Builds, authorizes and stores an event of `sender` in `room_id`.
    ///
    /// The work runs in a task of its own: once started it finishes (stored, cached, noted,
    /// syncs woken) even if the request that asked for it is dropped.
    pub(crate) async fn append(
        &self,
        room_id: &str,
        sender: &UserId,
        draft: Draft,
    ) -> Result<Arc<Pdu>, ApiError> {
        let me = self.me.upgrade().ok_or_else(|| ApiError::unknown("the server is stopping"))?;
        let (room_id, sender) = (room_id.to_owned(), sender.to_owned());
        tokio::spawn(async move { me.append_now(&room_id, &sender, draft).await })
            .await
            .map_err(|_| ApiError::unknown("the event could not be stored"))?
    }

    /// [`Rooms::append`], in the caller's task.
    pub(crate) async fn append_now(
        &self,
        room_id: &str,
        sender: &UserId,
        draft: Draft,
    ) -> Result<Arc<Pdu>, ApiError> {
        self.append_recording(room_id, sender, draft, None, None).await
    }

    /// [`Rooms::append_now`], recording the client's transaction id in the same change set
    /// as the event.
    pub(crate) async fn append_recording(
        &self,
        room_id: &str,
        sender: &UserId,
        draft: Draft,
        txn: Option<TransactionId>,
        countersign: Option<invite_remote::Countersign<'_>>,
    ) -> Result<Arc<Pdu>, ApiError> {
        // Unknown rooms are refused before a lock is made for them.
        let rules = self.rules(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let lock = self.room_lock(room_id);
        let mut tries = 0;
        // Each try of a countersigned event asks another server: fewer of them.
        let max_tries = if countersign.is_some() { COUNTERSIGN_TRIES } else { APPEND_TRIES };
        let (pdu, pos, durable, destinations, guard) = loop {
            tries += 1;
            let mut guard = RoomGuard { room_id, _guard: lock.lock().await };
            let info = self.storage.room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
            let mut authorized =
                self.authorize(&guard, &info, rules, sender, draft.clone()).await?;
            if let Some(countersign) = &countersign {
                // The other server is asked without the room's lock held (others append
                // meanwhile); under it again, the event is stored only if the room is still
                // what it was built on, else built (and countersigned) again.
                drop(guard);
                authorized = self.countersign(countersign, authorized, &info).await?;
                guard = RoomGuard { room_id, _guard: lock.lock().await };
            }
            match self.commit(authorized, txn.clone()).await {
                Ok((pdu, pos, durable, destinations)) => {
                    break (pdu, pos, durable, destinations, guard);
                }
                Err(Retry::Rebuild) if tries < max_tries => {}
                Err(Retry::Rebuild) => {
                    // Other processes kept appending first: the client retries shortly.
                    return Err(ApiError::limit_exceeded_with(100, "the room is busy"));
                }
                Err(Retry::Fail(error)) => return Err(error),
            }
        };
        // The room's next event may be built on this one while it goes to disk; nothing is
        // acknowledged (or woken) before it is there.
        drop(guard);
        durable.await?;
        // Queued with the event; the workers read the queue once it is durable.
        if let Some(sender) = self.outbound.get() {
            for server in &destinations {
                sender.notify(server);
            }
        }
        if let Some(pos) = pos {
            self.notify(&pdu, pos).await;
        }
        self.ephemeral.event_appended(room_id, &pdu, pos).await;
        Ok(pdu)
    }

    /// Stores an authorized event in one change set: the event, its state snapshot (a delta
    /// on the state before it), the new extremity, a membership change, a redaction, the
    /// client's transaction id.
    /// It answers once the change set is applied in order, with the future that says when
    /// it is durable.
    ///
    /// [`Retry::Rebuild`] when another process appended to the room since it was read (the
    /// client's transaction id, if any, is then not recorded either).
    async fn commit(
        &self,
        authorized: Authorized,
        txn: Option<TransactionId>,
    ) -> Result<(Arc<Pdu>, Option<StreamPos>, Durable, Vec<String>), Retry> {
        let pdu = authorized.pdu();
        let room_id = pdu.room_id().to_owned();
        let mut changes = ChangeSet::new();
        let state_key = pdu.state_key().map(str::to_owned);
        let mut room = RoomChanges {
            room_id: room_id.clone(),
            forward_extremities: Some(vec![pdu.event_id().to_owned()]),
            expected: authorized.built_on().cloned(),
            ..RoomChanges::default()
        };
        let state_before = authorized.state_before();
        if state_before.is_none() {
            room.create_with_version = Some(pdu.rules().id.to_owned());
        }
        let state_after = match (&state_key, state_before) {
            (Some(state_key), parent) => {
                changes.snapshot = Some(NewSnapshot {
                    parent,
                    changes: vec![(
                        pdu.kind().to_owned(),
                        state_key.clone(),
                        Some(pdu.event_id().to_owned()),
                    )],
                });
                room.current_state = Some(SnapshotRef::New);
                if pdu.kind() == "m.room.member"
                    && let Some(membership) = pdu.content().get_str("membership")
                {
                    room.memberships.push((state_key.clone(), membership.to_owned()));
                }
                SnapshotRef::New
            }
            (None, Some(snapshot)) => SnapshotRef::Existing(snapshot),
            (None, None) => {
                return Err(Retry::Fail(ApiError::unknown("an event without state to follow")));
            }
        };
        changes.events.push(NewEvent {
            event_id: pdu.event_id().to_owned(),
            room_id: room_id.clone(),
            json: Arc::from(pdu.canonical_bytes()),
            status: EventStatus::Accepted,
            auth_events: authorized.auth_ids().to_vec(),
            prev_events: authorized.prev_ids().to_vec(),
            in_timeline: true,
            state_after: Some(state_after),
        });
        relations::index(&mut changes, pdu, EventStatus::Accepted, true);
        changes.rooms.push(room);
        changes.search.extend(search::search_entry(pdu));
        if let Some(redacts) = authorized.redacts() {
            changes.redactions.push((redacts.to_owned(), pdu.event_id().to_owned()));
        }
        if let Some(mut txn) = txn {
            txn.result = pdu.event_id().to_owned();
            changes.transaction_ids.push(txn);
        }
        let destinations = self.destinations(pdu, state_before).await.map_err(Retry::Fail)?;
        if !destinations.is_empty() {
            let payload = matrix_federation::sender::Outbound::Pdu(pdu.json().clone()).to_payload();
            changes.enqueue =
                destinations.iter().map(|server| (server.clone(), payload.clone())).collect();
        }
        user_directory::index_state(&mut changes, self.server_name().as_str());
        let (applied, durable) = match crate::metrics::service()
            .apply_ordered(self.storage.as_ref(), changes)
            .await
        {
            Ok(applied) => applied,
            Err(e) if state_before.is_none() && e.kind() == matrix_storage::ErrorKind::Conflict => {
                return Err(Retry::Fail(ApiError::room_in_use()));
            }
            Err(e) if e.kind() == matrix_storage::ErrorKind::Conflict => {
                // The room changed under us, or the client's transaction id was recorded by
                // another request (the caller finds that out): the room says which.
                let now = self.storage.room(&room_id).await.map_err(|e| Retry::Fail(e.into()))?;
                let moved = match (authorized.built_on(), now) {
                    (Some(built_on), Some(now)) => {
                        !built_on.matches(now.current_state, &now.forward_extremities)
                    }
                    _ => false,
                };
                return Err(if moved { Retry::Rebuild } else { Retry::Fail(e.into()) });
            }
            Err(e) => return Err(Retry::Fail(e.into())),
        };
        let pdu = Arc::new(authorized.into_pdu());
        crate::metrics::service().events_persisted.inc();
        self.events.insert(pdu.event_id().to_owned(), pdu.clone());
        let state_after = match state_after {
            SnapshotRef::New => applied.snapshot,
            SnapshotRef::Existing(snapshot) => Some(snapshot),
        };
        if let Some(snapshot) = state_after {
            self.snapshots_of.insert(pdu.event_id().to_owned(), snapshot);
        }
        Ok((pdu, applied.stream.first().copied(), durable, destinations))
    }

    /// Stores a new room's create event.
    async fn append_create(
        &self,
        json: Object,
        rules: &'static RoomVersionRules,
    ) -> Result<Arc<Pdu>, ApiError> {
        let authorized = self.authorize_create(json, rules)?;
        let room_id = authorized.pdu().room_id().to_owned();
        let lock = self.room_lock(&room_id);
        let guard = lock.lock().await;
        let (pdu, pos, durable, _) = self.commit(authorized, None).await.map_err(|e| match e {
            Retry::Fail(error) => error,
            // A create event names no state it was built on; never rebuilt.
            Retry::Rebuild => ApiError::room_in_use(),
        })?;
        self.versions.insert(room_id, rules);
        drop(guard);
        durable.await?;
        self.ephemeral.event_appended(pdu.room_id(), &pdu, pos).await;
        Ok(pdu)
    }

    /// The position readers may read up to.
    pub(crate) async fn stream_position(&self) -> Result<StreamPos, ApiError> {
        Ok(self.storage.stream_position().await?)
    }
}

/// A stored form of `pdu`: its JSON as received, its references, `status`, whether it gets a
/// timeline position, and the state after it.
pub(crate) fn new_event(
    pdu: &Pdu,
    status: EventStatus,
    in_timeline: bool,
    state_after: Option<SnapshotRef>,
) -> NewEvent {
    NewEvent {
        event_id: pdu.event_id().to_owned(),
        room_id: pdu.room_id().to_owned(),
        json: Arc::from(pdu.canonical_bytes()),
        status,
        auth_events: pdu.auth_events().map(str::to_owned).collect(),
        prev_events: pdu.prev_events().map(str::to_owned).collect(),
        in_timeline,
        state_after,
    }
}

/// Makes `room` apply only to the room as read (`existing`), or create it with `rules`'
/// version when it is not stored yet.
pub(crate) fn built_on_or_created(
    room: &mut RoomChanges,
    existing: Option<&matrix_storage::RoomInfo>,
    rules: &RoomVersionRules,
) {
    match existing {
        Some(info) => {
            room.expected = Some(matrix_storage::ExpectedRoom {
                current_state: info.current_state,
                forward_extremities: info.forward_extremities.clone(),
            });
        }
        None => room.create_with_version = Some(rules.id.to_owned()),
    }
}

/// Why an event was not stored.
#[derive(Debug)]
enum Retry {
    /// Another process appended to the room since it was read: build it again.
    Rebuild,
    /// Anything else.
    Fail(ApiError),
}

/// A power level the room's power levels event sets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level<'a> {
    /// Sending a state event of this type (`events`, else `state_default`).
    State(&'a str),
    /// Redacting other users' events.
    Redact,
    /// Inviting users (default 0).
    Invite,
}

impl Rooms {
    /// Whether `user` has `level` in the state `snapshot` (creators of room version 12 have
    /// every level; without a power levels event the levels are the spec's defaults, 50).
    pub(crate) async fn has_level(
        &self,
        rules: &'static RoomVersionRules,
        snapshot: SnapshotId,
        user: &UserId,
        level: Level<'_>,
    ) -> Result<bool, ApiError> {
        let levels = self.state_pdu(snapshot, "m.room.power_levels", "").await?;
        let create = self.state_pdu(snapshot, "m.room.create", "").await?;
        let has =
            auth::user_power_level(rules, levels.as_deref(), create.as_deref(), user.as_str());
        let needed = levels.as_ref().and_then(|levels| {
            let content = levels.content();
            let value = match level {
                Level::State(kind) => content
                    .get_object("events")
                    .and_then(|e| e.get(kind))
                    .or_else(|| content.get("state_default")),
                Level::Redact => content.get("redact"),
                Level::Invite => content.get("invite"),
            };
            value.and_then(|v| auth::parse_level(v, rules))
        });
        let default = if matches!(level, Level::Invite) { 0 } else { 50 };
        Ok(has >= i128::from(needed.unwrap_or(default)))
    }
}
