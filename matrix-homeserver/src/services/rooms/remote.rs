//! Events other servers send into rooms stored here: checked by matrix-federation's
//! `check_pdu` (signatures, hashes, the authorization rules against the auth events, the
//! state before the event and the current state), then stored with the state after them, the
//! room's new forward extremities and, where the room forked, the current state resolved by
//! matrix-stateres.
//!
//! A rejected event is stored as rejected (events that cite it are rejected in turn) and never
//! reaches a client; a soft-failed one is stored but neither shown nor built on.
//!
//! **Reads.** The checks read the state before an event with one prev event, and the
//! current state, at the keys the authorization rules look up only
//! (`RoomContext::state_after_at`, `current_state_at`: one `state_get` each). An event that
//! changes no state, after the event the current state is at, is stored with its prev
//! event's snapshot and reads no whole state; otherwise each whole state it needs (after the
//! prev events, the one it changes, the current one) is read once ([`StateMemo`]). Before
//! this, a message read the whole state five times (50 messages into a room of 10,000 state
//! entries: 8.4 s before, 1.4 s after; debug build, memory storage).
//!
//! An event stored as an outlier (fetched to fill a gap, `outliers.rs`, or with a join's
//! state) that arrives as a PDU is checked like any other and then stored over the outlier,
//! in the timeline.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use matrix_core::{Object, Pdu};
use matrix_federation::FederationError;
use matrix_federation::inbound::{
    self, CheckError, KnownEvent, PduCheck, ResolutionPlan, RoomContext, StateIds, StateSplit,
};
use matrix_federation::keys::KeyProvider;
use matrix_storage::{
    ChangeSet, EventStatus, ExpectedRoom, NewSnapshot, RoomChanges, SnapshotId, SnapshotRef,
};

use super::{APPEND_TRIES, Rooms};
use crate::error::ApiError;

/// What became of a received event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// Stored, in the timeline.
    Accepted(Arc<Pdu>),
    /// Stored, but not shown: it fails against the room's current state.
    SoftFailed(String),
    /// Rejected (stored as rejected when it was well formed and signed).
    Rejected(String),
    /// Already stored (in the room's DAG; an outlier is checked and stored again).
    Known,
}

/// Why a received event could not be decided on.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// Events it needs are not here: fetch them and try again.
    Missing(String),
    /// Our own failure (storage, a room too busy): the sender should try again later.
    Transient(ApiError),
    /// Anything else.
    Failed(ApiError),
}

impl From<ApiError> for ReceiveError {
    fn from(error: ApiError) -> Self {
        ReceiveError::Failed(error)
    }
}

impl From<matrix_storage::StorageError> for ReceiveError {
    fn from(error: matrix_storage::StorageError) -> Self {
        ReceiveError::Transient(error.into())
    }
}

fn storage_failed(error: impl std::fmt::Display) -> FederationError {
    FederationError::Malformed { destination: "storage".to_owned(), reason: error.to_string() }
}

/// A room as `check_pdu` reads it: from storage, through the room service's caches.
#[derive(Clone, Copy)]
struct Context<'a> {
    rooms: &'a Rooms,
    room_id: &'a str,
    current: Option<SnapshotId>,
    /// The event being stored, which resolving the state after it needs before it is stored.
    pending: Option<&'a Pdu>,
    /// The whole states read while one event is received ([`StateMemo`]).
    memo: &'a StateMemo,
}

/// The whole states (by snapshot) read while one event is checked and stored: its checks
/// read the state after its prev event, and storing it the same state again, the state the
/// event changes and (for its extremities) the current state; in a room without forks these
/// are one snapshot, read from storage once. Lives as long as one `receive` (a few snapshots).
#[derive(Default)]
struct StateMemo(std::sync::Mutex<std::collections::HashMap<SnapshotId, Arc<StateIds>>>);

impl Context<'_> {
    /// The entries of a snapshot at `keys` (those it has): from the memo when the whole
    /// state was read, else one `state_get` each.
    async fn state_at(
        &self,
        snapshot: SnapshotId,
        keys: &[(String, String)],
    ) -> Result<StateIds, FederationError> {
        let cached = self.memo.0.lock().unwrap_or_else(|e| e.into_inner()).get(&snapshot).cloned();
        let mut state = StateIds::new();
        for (kind, state_key) in keys {
            let id = match &cached {
                Some(whole) => whole.get(&(kind.clone(), state_key.clone())).cloned(),
                None => self.rooms.storage().state_get(snapshot, kind, state_key).await?,
            };
            if let Some(id) = id {
                state.insert((kind.clone(), state_key.clone()), id);
            }
        }
        Ok(state)
    }

    async fn state_map(&self, snapshot: SnapshotId) -> Result<StateIds, FederationError> {
        let cached = self.memo.0.lock().unwrap_or_else(|e| e.into_inner()).get(&snapshot).cloned();
        if let Some(state) = cached {
            return Ok((*state).clone());
        }
        let entries = self.rooms.storage().state_full(snapshot).await?;
        let state: StateIds =
            entries.into_iter().map(|e| ((e.kind, e.state_key), e.event_id)).collect();
        let mut memo = self.memo.0.lock().unwrap_or_else(|e| e.into_inner());
        memo.insert(snapshot, Arc::new(state.clone()));
        Ok(state)
    }
}

#[async_trait]
impl RoomContext for Context<'_> {
    async fn event(&self, event_id: &str) -> Result<Option<KnownEvent>, FederationError> {
        if let Some(pending) = self.pending
            && pending.event_id() == event_id
        {
            return Ok(Some(KnownEvent { pdu: pending.clone(), rejected: false }));
        }
        let Some(stored) = self.rooms.storage().event(event_id).await? else { return Ok(None) };
        if stored.room_id != self.room_id {
            return Ok(None);
        }
        let pdu = self.rooms.pdu(event_id).await.map_err(storage_failed)?;
        Ok(pdu.map(|pdu| KnownEvent {
            pdu: (*pdu).clone(),
            rejected: stored.status == EventStatus::Rejected,
        }))
    }

    async fn state_after(&self, event_id: &str) -> Result<Option<StateIds>, FederationError> {
        let Some(stored) = self.rooms.storage().event(event_id).await? else { return Ok(None) };
        if stored.room_id != self.room_id {
            return Ok(None);
        }
        match stored.state_after {
            Some(snapshot) => Ok(Some(self.state_map(snapshot).await?)),
            None => Ok(None),
        }
    }

    async fn state_after_at(
        &self,
        event_id: &str,
        keys: &[(String, String)],
    ) -> Result<Option<StateIds>, FederationError> {
        let Some(stored) = self.rooms.storage().event(event_id).await? else { return Ok(None) };
        if stored.room_id != self.room_id {
            return Ok(None);
        }
        match stored.state_after {
            Some(snapshot) => Ok(Some(self.state_at(snapshot, keys).await?)),
            None => Ok(None),
        }
    }

    async fn current_state(&self) -> Result<StateIds, FederationError> {
        match self.current {
            Some(snapshot) => self.state_map(snapshot).await,
            None => Ok(StateIds::new()),
        }
    }

    async fn current_state_at(
        &self,
        keys: &[(String, String)],
    ) -> Result<StateIds, FederationError> {
        match self.current {
            Some(snapshot) => self.state_at(snapshot, keys).await,
            None => Ok(StateIds::new()),
        }
    }

    async fn auth_chain(&self, event_ids: &[String]) -> Result<Vec<String>, FederationError> {
        let mut ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
        let mut chain = Vec::new();
        // The pending event is not stored: its chain is its auth events and theirs.
        if let Some(pending) = self.pending
            && let Some(at) = ids.iter().position(|id| *id == pending.event_id())
        {
            ids.remove(at);
            for auth in pending.auth_events() {
                ids.push(auth);
                chain.push(auth.to_owned());
            }
        }
        chain.extend(self.rooms.storage().auth_chain(&ids).await?);
        chain.sort_unstable();
        chain.dedup();
        Ok(chain)
    }

    async fn events(&self, event_ids: &[String]) -> Result<Vec<KnownEvent>, FederationError> {
        let mut known = Vec::with_capacity(event_ids.len());
        let mut ids: Vec<&str> = Vec::with_capacity(event_ids.len());
        for id in event_ids {
            match self.pending {
                Some(pending) if pending.event_id() == id => {
                    known.push(KnownEvent { pdu: pending.clone(), rejected: false });
                }
                _ => ids.push(id),
            }
        }
        for stored in self.rooms.storage().events(&ids).await? {
            if stored.room_id != self.room_id {
                continue;
            }
            let rejected = stored.status == EventStatus::Rejected;
            if let Some(pdu) = self.rooms.parsed(stored).await.map_err(storage_failed)? {
                known.push(KnownEvent { pdu: (*pdu).clone(), rejected });
            }
        }
        Ok(known)
    }

    async fn resolution_plan(
        &self,
        split: &StateSplit<'_>,
    ) -> Result<Option<ResolutionPlan>, FederationError> {
        self.rooms.auth_indexes().plan(self.room_id, split, self.pending).await
    }
}

/// The changes that turn state `from` into state `to`.
pub(super) fn diff(from: &StateIds, to: &StateIds) -> Vec<(String, String, Option<String>)> {
    let mut changes = Vec::new();
    for (key, id) in to {
        if from.get(key) != Some(id) {
            changes.push((key.0.clone(), key.1.clone(), Some(id.clone())));
        }
    }
    for key in from.keys() {
        if !to.contains_key(key) {
            changes.push((key.0.clone(), key.1.clone(), None));
        }
    }
    changes
}

impl Rooms {
    /// Checks and stores an event another server sent for a room stored here. Works under
    /// the room's lock, once the signing keys are fetched (outside it); wakes the syncs of the
    /// room's users when the event is accepted.
    pub(crate) async fn receive(
        &self,
        keys: &dyn KeyProvider,
        event: Object,
    ) -> Result<Received, ReceiveError> {
        let room_id = event.get_str("room_id").unwrap_or_default().to_owned();
        let rules = self
            .rules(&room_id)
            .await?
            .ok_or_else(|| ApiError::not_found("the room is not known here"))?;
        // A room none of our users is in (left, or only invited to) takes no events: we
        // could not check them, and they would concern nobody here.
        if !self.is_resident(&room_id).await? {
            return Ok(Received::Rejected("no user of this server is in the room".to_owned()));
        }
        // The keys its checks need, fetched before the room's lock is taken: no lock is held
        // while another server is asked for its keys (the checks under the lock ask no one).
        let keys = match inbound::prefetch_signing_keys(&event, rules.id, keys).await {
            Ok(keys) => keys,
            Err(FederationError::Storage(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::unknown(e.to_string()).into()),
        };
        let lock = self.room_lock(&room_id);
        let _guard = lock.lock().await;
        // Snapshots are never changed once written: what was read stays true across tries.
        let memo = StateMemo::default();
        for _ in 0..APPEND_TRIES {
            let info = self.storage().room(&room_id).await?.ok_or_else(ApiError::room_not_found)?;
            let context = Context {
                rooms: self,
                room_id: &room_id,
                current: info.current_state,
                pending: None,
                memo: &memo,
            };
            let check = match inbound::check_pdu(event.clone(), rules.id, &keys, &context).await {
                Ok(check) => check,
                Err(CheckError::MissingAuthEvent(id) | CheckError::MissingState(id)) => {
                    return Err(ReceiveError::Missing(id));
                }
                Err(CheckError::Federation(FederationError::Storage(e))) => return Err(e.into()),
                Err(e) => return Err(ApiError::unknown(e.to_string()).into()),
            };
            // An outlier (fetched to fill a gap) that now arrives as a PDU takes its place in
            // the room like any other event.
            let stored = match check_event_id(&check) {
                Some(id) => self.storage().event(id).await?.map(|stored| stored.status),
                None => None,
            };
            if stored.is_some_and(|status| status != EventStatus::Outlier) {
                return Ok(Received::Known);
            }
            let was_outlier = stored.is_some();
            match self.store_received(&context, &info, check, was_outlier).await? {
                Some(received) => return Ok(received),
                // Another process wrote to the room meanwhile: check again.
                None => continue,
            }
        }
        Err(ReceiveError::Transient(ApiError::limit_exceeded_with(100, "the room is busy")))
    }

    /// Stores a checked event; `None` when the room changed under us.
    async fn store_received(
        &self,
        context: &Context<'_>,
        info: &matrix_storage::RoomInfo,
        check: PduCheck,
        was_outlier: bool,
    ) -> Result<Option<Received>, ReceiveError> {
        let (pdu, status, outcome) = match check {
            PduCheck::Accepted(pdu) => (pdu, EventStatus::Accepted, None),
            PduCheck::SoftFailed(pdu, reason) => {
                (pdu, EventStatus::SoftFailed, Some(Received::SoftFailed(reason.to_string())))
            }
            PduCheck::Rejected(rejection) => match rejection.event() {
                Some(pdu) => (
                    pdu.clone(),
                    EventStatus::Rejected,
                    Some(Received::Rejected(rejection.to_string())),
                ),
                None => return Ok(Some(Received::Rejected(rejection.to_string()))),
            },
            _ => return Err(ApiError::unknown("an outcome this server does not know").into()),
        };
        let room_id = context.room_id;
        let rules = pdu.rules();

        let create = pdu.kind() == "m.room.create";
        let accepted = status == EventStatus::Accepted;
        // An outlier was fetched because a newer event named it: it is older than the room's
        // forward extremities, so it becomes none of them and leaves the current state as is.
        let moves_the_room = accepted && !was_outlier;
        let first = if create { None } else { pdu.prev_events().next().map(str::to_owned) };
        let base = match &first {
            Some(prev) => self.state_after_of(prev).await?,
            None => None,
        };
        // An event that changes no state, with one prev event (the one the current state is
        // at, when the event moves the room): the state after it is its prev event's and the
        // current state stays. No whole state is read.
        let keeps_state = status == EventStatus::Rejected || pdu.state_key().is_none();
        let unchanged = !create
            && keeps_state
            && pdu.prev_events().nth(1).is_none()
            && base.is_some()
            && (!moves_the_room || base == info.current_state);
        // The state after the event (`None`: its prev event's), the changes that make it from
        // its first prev event's, and the snapshot that will hold it: the new one, or its
        // first prev event's when it changes nothing.
        let (after, after_changes, after_ref) = if unchanged {
            (None, Vec::new(), base.map(SnapshotRef::Existing))
        } else {
            let after = self.state_after_received(context, &pdu, status, create).await?;
            let base_map = match base {
                Some(snapshot) => context.state_map(snapshot).await.map_err(federation_failed)?,
                None => StateIds::new(),
            };
            let after_changes = diff(&base_map, &after);
            let after_ref = if after_changes.is_empty() {
                base.map(SnapshotRef::Existing)
            } else {
                Some(SnapshotRef::New)
            };
            (Some(after), after_changes, after_ref)
        };

        // The room after it: forward extremities, and the current state (resolved with the
        // state after the event where the room forks).
        let mut changes = ChangeSet::new();
        let mut room = RoomChanges {
            room_id: room_id.to_owned(),
            expected: Some(ExpectedRoom {
                current_state: info.current_state,
                forward_extremities: info.forward_extremities.clone(),
            }),
            ..RoomChanges::default()
        };
        let mut current_ref = None;
        let mut membership_from = StateIds::new();
        let mut membership_to = StateIds::new();
        if moves_the_room {
            let prevs: BTreeSet<&str> = pdu.prev_events().collect();
            let mut extremities: Vec<String> = info
                .forward_extremities
                .iter()
                .filter(|id| !prevs.contains(id.as_str()))
                .cloned()
                .collect();
            extremities.push(pdu.event_id().to_owned());
            extremities.sort_unstable();
            room.forward_extremities = Some(extremities);
        }
        // The current state, resolved with the state after the event where the room forks
        // (it stays as it is for an event that changed nothing: `after` is `None`).
        if moves_the_room && let Some(after) = &after {
            let forked = room.forward_extremities.as_ref().is_some_and(|e| e.len() > 1);
            let current = context.current_state().await.map_err(federation_failed)?;
            let new_current = if !forked || current.is_empty() {
                after.clone()
            } else if *after == current {
                current.clone()
            } else {
                let with_pending = Context { pending: Some(&pdu), ..*context };
                let _timer = crate::metrics::service().state_resolution.start_timer();
                inbound::resolve(rules, &[current.clone(), after.clone()], &with_pending)
                    .await
                    .map_err(|e| ReceiveError::Failed(ApiError::unknown(e.to_string())))?
            };
            if new_current != current {
                let as_after = after_ref.filter(|_| new_current == *after);
                current_ref = Some(if let Some(after_ref) = as_after {
                    after_ref
                } else {
                    // Written first, alone: the event's change set names it.
                    let mut resolved = ChangeSet::new();
                    resolved.snapshot = Some(NewSnapshot {
                        parent: info.current_state,
                        changes: diff(&current, &new_current),
                    });
                    let applied = self.storage().apply(resolved).await?;
                    let id = applied
                        .snapshot
                        .ok_or_else(|| ApiError::unknown("the resolved state was not stored"))?;
                    SnapshotRef::Existing(id)
                });
                membership_from = current;
                membership_to = new_current;
            }
        }
        if create {
            room.create_with_version = Some(rules.id.to_owned());
        }
        room.current_state = current_ref;
        for ((kind, state_key), id) in &membership_to {
            if kind != "m.room.member"
                || membership_from.get(&(kind.clone(), state_key.clone())) == Some(id)
            {
                continue;
            }
            let membership = if id == pdu.event_id() {
                pdu.content().get_str("membership").map(str::to_owned)
            } else {
                self.pdu(id)
                    .await?
                    .and_then(|p| p.content().get_str("membership").map(str::to_owned))
            };
            if let Some(membership) = membership {
                room.memberships.push((state_key.clone(), membership));
            }
        }
        if !after_changes.is_empty() {
            changes.snapshot = Some(NewSnapshot { parent: base, changes: after_changes });
        }
        let state_after = after_ref;
        changes.events.push(super::new_event(&pdu, status, accepted, state_after));
        super::relations::index(&mut changes, &pdu, status, accepted);
        if accepted {
            changes.search.extend(super::search::search_entry(&pdu));
        }
        if accepted
            && let Some(redacts) = pdu.redacts()
            && let Some(target) = self.pdu(redacts).await?
            && target.room_id() == room_id
        {
            // The server's rule for redactions of others' events (the redact level) is the
            // authorization rules' since room version 3; the sending server checked it, and
            // clients see the redaction only where it is allowed (matrix-core's redaction).
            changes.redactions.push((redacts.to_owned(), pdu.event_id().to_owned()));
        }
        changes.rooms.push(room);
        super::user_directory::index_state(&mut changes, self.server_name().as_str());
        let (applied, durable) =
            match crate::metrics::service().apply_ordered(self.storage().as_ref(), changes).await {
                Ok(applied) => applied,
                Err(e) if e.kind() == matrix_storage::ErrorKind::Conflict => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        durable.await.map_err(ApiError::from)?;
        crate::metrics::service().events_persisted.inc();
        let pdu = Arc::new(pdu);
        self.events.insert(pdu.event_id().to_owned(), pdu.clone());
        let snapshot = match state_after {
            Some(SnapshotRef::New) => applied.snapshot,
            Some(SnapshotRef::Existing(id)) => Some(id),
            None => None,
        };
        if let Some(snapshot) = snapshot {
            self.snapshots_of.insert(pdu.event_id().to_owned(), snapshot);
        }
        if accepted {
            if let Some(pos) = applied.stream.first().copied() {
                self.notify(&pdu, pos).await;
            }
            self.ephemeral.event_appended(room_id, &pdu, applied.stream.first().copied()).await;
        }
        Ok(Some(outcome.unwrap_or(Received::Accepted(pdu))))
    }
}

fn federation_failed(error: FederationError) -> ReceiveError {
    match error {
        FederationError::Storage(e) => e.into(),
        other => ReceiveError::Failed(ApiError::unknown(other.to_string())),
    }
}

impl Rooms {
    /// The state after a received event that changes the state (or has several prev
    /// events): the state before it, resolved from its prev events', with it.
    async fn state_after_received(
        &self,
        context: &Context<'_>,
        pdu: &Pdu,
        status: EventStatus,
        create: bool,
    ) -> Result<StateIds, ReceiveError> {
        let mut after = if create {
            StateIds::new()
        } else {
            inbound::state_before(pdu, context).await.map_err(|e| match e {
                CheckError::MissingAuthEvent(id) | CheckError::MissingState(id) => {
                    ReceiveError::Missing(id)
                }
                other => ReceiveError::Failed(ApiError::unknown(other.to_string())),
            })?
        };
        if status != EventStatus::Rejected
            && let Some(state_key) = pdu.state_key()
        {
            after.insert((pdu.kind().to_owned(), state_key.to_owned()), pdu.event_id().to_owned());
        }
        Ok(after)
    }
}

/// The id of the event a check decided on.
fn check_event_id(check: &PduCheck) -> Option<&str> {
    match check {
        PduCheck::Accepted(pdu) | PduCheck::SoftFailed(pdu, _) => Some(pdu.event_id()),
        PduCheck::Rejected(rejection) => rejection.event().map(Pdu::event_id),
        _ => None,
    }
}

impl Rooms {
    /// The state before a stored event, by type and state key (the states after its prev
    /// events, resolved).
    pub(crate) async fn state_before_map(
        &self,
        pdu: &Pdu,
    ) -> Result<matrix_federation::inbound::StateIds, ApiError> {
        let info =
            self.storage().room(pdu.room_id()).await?.ok_or_else(ApiError::room_not_found)?;
        let memo = StateMemo::default();
        let context = Context {
            rooms: self,
            room_id: pdu.room_id(),
            current: info.current_state,
            pending: None,
            memo: &memo,
        };
        let before = inbound::state_before(pdu, &context)
            .await
            .map_err(|e| ApiError::unknown(format!("the state before the event: {e}")))?;
        Ok(before)
    }

    /// Events by id, in the order given (unknown ones left out).
    pub(crate) async fn pdus(&self, ids: &[String]) -> Result<Vec<Arc<Pdu>>, ApiError> {
        let mut pdus = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(pdu) = self.pdu(id).await? {
                pdus.push(pdu);
            }
        }
        Ok(pdus)
    }
}
