//! Received transactions and PDUs: the transaction's bounds, origin and deduplication
//! ([`transaction`]), and the spec's "Checks performed on receipt of a PDU" ([`check_pdu`]).
//!
//! [`check_pdu`] runs the six checks in order:
//!
//! 1. a valid event of the room's version (an unknown version, a bad format: dropped);
//! 2. the signatures of every server that must sign it, by keys valid at its
//!    `origin_server_ts` (room versions 5 and later; any key the server had before): dropped;
//! 3. the content hash: on a mismatch the event is redacted and checked further as redacted;
//! 4. its `auth_events` (all known, none rejected, the ones the selection algorithm picks) and
//!    the authorization rules against them: rejected;
//! 5. the authorization rules against the state before it (the state after its one prev event,
//!    or the states after its prev events resolved with `matrix-stateres`): rejected;
//! 6. the authorization rules against the room's current state: soft failed.
//!
//! The room's data comes from a [`RoomContext`] the homeserver implements. Steps 5 (for an
//! event with one prev event) and 6 read the states only at the keys the authorization rules
//! look up ([`RoomContext::state_after_at`], [`RoomContext::current_state_at`]), so a context
//! over storage need not load a large room's whole state for each event.

pub mod transaction;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use matrix_core::auth::{self, AuthRejection};
use matrix_core::json::{Object, Value};
use matrix_core::pdu::{Pdu, PduError};
use matrix_core::room_version::StateResAlgorithm;
use matrix_core::signing::{self, KeyRing, PublicKey, Verified, VerifyError};
use matrix_core::{RoomVersionRules, redaction};

pub use transaction::{
    Incoming, Transaction, TransactionError, parse_transaction, receive_transaction,
};

use crate::FederationError;
use crate::keys::KeyProvider;

/// A room state: `(type, state_key)` to event id.
pub type StateIds = BTreeMap<(String, String), String>;

/// At most this many keys of one server are looked up for one event's signatures.
pub const MAX_KEYS_PER_SERVER: usize = 8;

/// At most this many events are loaded to resolve the states after an event's prev events.
pub const MAX_RESOLUTION_EVENTS: usize = 100_000;

/// An event the room knows, and whether it was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEvent {
    /// The event.
    pub pdu: Pdu,
    /// Whether it was rejected (by [`check_pdu`]'s steps 4 or 5).
    pub rejected: bool,
}

/// What [`check_pdu`] reads of the room the event is in. The homeserver implements it over its
/// storage; every method is a read.
#[async_trait]
pub trait RoomContext: Send + Sync {
    /// An event of the room (also a rejected or soft-failed one), `None` if not stored.
    async fn event(&self, event_id: &str) -> Result<Option<KnownEvent>, FederationError>;
    /// The state after an event: the state before it, updated with it if it is an accepted
    /// (or soft-failed) state event; for a rejected event, the state before it. `None` if not
    /// known. Never holds rejected events.
    async fn state_after(&self, event_id: &str) -> Result<Option<StateIds>, FederationError>;
    /// The state after an event ([`RoomContext::state_after`]) at `keys` only (those it
    /// has): what the authorization rules read of the state before an event with one prev
    /// event. The default reads the whole state; a context over storage reads the keys.
    async fn state_after_at(
        &self,
        event_id: &str,
        keys: &[(String, String)],
    ) -> Result<Option<StateIds>, FederationError> {
        let Some(state) = self.state_after(event_id).await? else { return Ok(None) };
        Ok(Some(
            keys.iter().filter_map(|k| state.get(k).map(|id| (k.clone(), id.clone()))).collect(),
        ))
    }
    /// The current state of the room (the state resolved across its forward extremities).
    async fn current_state(&self) -> Result<StateIds, FederationError>;
    /// The entries of the current state at `keys` only (those it has): what the soft-fail
    /// check reads. The default reads the whole state; a context over storage reads the keys.
    async fn current_state_at(
        &self,
        keys: &[(String, String)],
    ) -> Result<StateIds, FederationError> {
        let current = self.current_state().await?;
        Ok(keys.iter().filter_map(|k| current.get(k).map(|id| (k.clone(), id.clone()))).collect())
    }
    /// The union of the auth chains of `event_ids` (ids only; the events themselves need not
    /// be included), for resolving the states after several prev events.
    async fn auth_chain(&self, event_ids: &[String]) -> Result<Vec<String>, FederationError>;
    /// Several events of the room at once (those not stored are left out).
    async fn events(&self, event_ids: &[String]) -> Result<Vec<KnownEvent>, FederationError> {
        let mut events = Vec::with_capacity(event_ids.len());
        for id in event_ids {
            events.extend(self.event(id).await?);
        }
        Ok(events)
    }
    /// What resolving states (given split) reads, from an index of the room's auth chains;
    /// `None` for a room without one (then resolution loads the states' events and their
    /// whole auth chains).
    async fn resolution_plan(
        &self,
        _split: &StateSplit<'_>,
    ) -> Result<Option<ResolutionPlan>, FederationError> {
        Ok(None)
    }
}

/// States to resolve, split as resolution splits them: the entries every state holds, and
/// each state's others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSplit<'s> {
    /// The entries every state holds alike, by key.
    pub unconflicted: Vec<(&'s (String, String), &'s str)>,
    /// Each state's other entries.
    pub conflicted: Vec<Vec<(&'s (String, String), &'s str)>>,
}

impl<'s> StateSplit<'s> {
    /// Splits `states` in one merged walk over their keys (they are sorted maps), without
    /// hashing an id.
    pub fn new(states: &'s [StateIds]) -> Self {
        let mut split =
            StateSplit { unconflicted: Vec::new(), conflicted: vec![Vec::new(); states.len()] };
        let mut heads: Vec<_> = states.iter().map(|state| state.iter().peekable()).collect();
        let mut at: Vec<Option<(&'s (String, String), &'s String)>> =
            Vec::with_capacity(states.len());
        loop {
            at.clear();
            at.extend(heads.iter_mut().map(|head| head.peek().copied()));
            let Some(key) = at.iter().flatten().map(|(key, _)| *key).min() else { break };
            let first = at[0].filter(|(k, _)| *k == key).map(|(_, id)| id);
            let alike = first.is_some()
                && at
                    .iter()
                    .all(|entry| entry.is_some_and(|(k, id)| k == key && Some(id) == first));
            for (i, entry) in at.iter().enumerate() {
                if let Some((k, id)) = entry
                    && *k == key
                {
                    heads[i].next();
                    if !alike {
                        split.conflicted[i].push((key, id.as_str()));
                    }
                }
            }
            if let (true, Some(id)) = (alike, first) {
                split.unconflicted.push((key, id.as_str()));
            }
        }
        split
    }
}

/// What resolving some states reads, computed from an index of the room's auth chains (such
/// as a persisted `matrix_stateres::chain_cover`): the rest of the room is never loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolutionPlan {
    /// The auth difference of the states: the events in some but not all of their full auth
    /// chains.
    pub auth_difference: Vec<String>,
    /// The events to load: the conflicted events, the auth difference, and their auth chains
    /// (the unconflicted events the authorization rules look up are loaded by key after them).
    pub events: Vec<String>,
}

/// The outcome of [`check_pdu`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PduCheck {
    /// Passed every check: store it and send it to clients. Redacted if its content hash was
    /// wrong.
    Accepted(Pdu),
    /// Passed against its auth events and the state before it, not against the current state:
    /// store it, but neither relay it to clients nor use it as a prev event.
    SoftFailed(Pdu, AuthRejection),
    /// Dropped or rejected; see [`Rejection::event`].
    Rejected(Rejection),
}

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The room version is not one this server knows.
    #[error("unknown room version {0:?}")]
    UnknownRoomVersion(String),
    /// Not a valid event of the room version.
    #[error("invalid event: {0}")]
    Format(#[from] PduError),
    /// A required signature is missing or wrong.
    #[error("signature check failed: {0}")]
    Signature(#[from] VerifyError),
    /// One of its auth events was rejected.
    #[error("auth event {auth_event} was rejected")]
    RejectedAuthEvent {
        /// The event (stored as rejected).
        event: Box<Pdu>,
        /// The rejected auth event.
        auth_event: String,
    },
    /// It fails the authorization rules against its auth events.
    #[error("not authorized by its auth events: {reason}")]
    AuthEvents {
        /// The event (stored as rejected).
        event: Box<Pdu>,
        /// The rule.
        reason: AuthRejection,
    },
    /// It fails the authorization rules against the state before it.
    #[error("not authorized by the state before it: {reason}")]
    StateBefore {
        /// The event (stored as rejected).
        event: Box<Pdu>,
        /// The rule.
        reason: AuthRejection,
    },
}

impl Rejection {
    /// The event to store as rejected (so that events citing it are rejected too), or `None`
    /// when it is dropped (steps 1 and 2: not stored at all).
    pub fn event(&self) -> Option<&Pdu> {
        match self {
            Rejection::RejectedAuthEvent { event, .. }
            | Rejection::AuthEvents { event, .. }
            | Rejection::StateBefore { event, .. } => Some(event),
            _ => None,
        }
    }
}

/// Why [`check_pdu`] could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Storage failed, or keys could not be fetched.
    #[error(transparent)]
    Federation(#[from] FederationError),
    /// An auth event (or, in room version 12, the create event) is not known: fetch it
    /// (`/event_auth`, `/event`) and check again.
    #[error("auth event {0} is not known")]
    MissingAuthEvent(String),
    /// The state after a prev event is not known: fetch the missing events or the state
    /// (`/get_missing_events`, `/state_ids`) and check again.
    #[error("the state after prev event {0} is not known")]
    MissingState(String),
    /// The states after the prev events could not be resolved.
    #[error("state resolution failed: {0}")]
    Resolve(#[from] matrix_stateres::ResolveError),
    /// Resolving would load more than [`MAX_RESOLUTION_EVENTS`] events.
    #[error("resolving the state before the event needs too many events")]
    TooManyEvents,
}

/// The keys of `event`'s required signers that sign it, looked up at the time the room version
/// says (step 2 of the checks).
async fn signing_keys(
    event: &Object,
    rules: &RoomVersionRules,
    keys: &(impl KeyProvider + ?Sized),
) -> Result<Result<KeyRing, VerifyError>, FederationError> {
    Ok(signing_key_list(event, rules, keys).await?.map(|list| {
        let mut ring = KeyRing::new();
        for ((server, key_id), key) in list {
            ring.insert(&server, &key_id, key);
        }
        ring
    }))
}

/// [`signing_keys`] as a list: `(server, key id)` and the key, for those found.
async fn signing_key_list(
    event: &Object,
    rules: &RoomVersionRules,
    keys: &(impl KeyProvider + ?Sized),
) -> Result<Result<Vec<((String, String), PublicKey)>, VerifyError>, FederationError> {
    let servers = match signing::required_signers(event, rules) {
        Ok(servers) => servers,
        Err(e) => return Ok(Err(e)),
    };
    // Room versions 1-4 accept any key the server ever had.
    let valid_at = if rules.enforce_key_validity {
        event.get("origin_server_ts").and_then(Value::as_i64).unwrap_or_default()
    } else {
        0
    };
    let mut found = Vec::new();
    let signatures = event.get_object("signatures");
    for server in servers {
        let Some(by_server) = signatures.and_then(|s| s.get_object(server)) else { continue };
        let key_ids = by_server.keys().filter(|id| id.starts_with("ed25519:"));
        for key_id in key_ids.take(MAX_KEYS_PER_SERVER) {
            if let Some(key) = keys.public_key(server, key_id, valid_at).await? {
                found.push(((server.to_owned(), key_id.to_owned()), key));
            }
        }
    }
    Ok(Ok(found))
}

/// The signing keys an event's checks ([`check_pdu`]) need, looked up ahead of the checks:
/// a [`KeyProvider`] that answers from them alone, never asking anyone. A receiver fetches
/// them before it takes a room's lock, so that no lock is held while another server's keys
/// are fetched over the network.
#[derive(Debug, Clone, Default)]
pub struct PrefetchedKeys {
    keys: HashMap<(String, String), PublicKey>,
}

/// Looks up, with `keys`, the keys [`check_pdu`] needs to check `event` of `room_version`
/// (those of its required signers that sign it). An event whose signers cannot be told (or
/// of an unknown version) needs none: its checks reject it before any key is asked.
pub async fn prefetch_signing_keys(
    event: &Object,
    room_version: &str,
    keys: &(impl KeyProvider + ?Sized),
) -> Result<PrefetchedKeys, FederationError> {
    let Some(rules) = RoomVersionRules::get(room_version) else {
        return Ok(PrefetchedKeys::default());
    };
    let found = signing_key_list(event, rules, keys).await?.unwrap_or_default();
    Ok(PrefetchedKeys { keys: found.into_iter().collect() })
}

#[async_trait::async_trait]
impl KeyProvider for PrefetchedKeys {
    async fn public_key(
        &self,
        server: &str,
        key_id: &str,
        _valid_at_ts: i64,
    ) -> Result<Option<PublicKey>, FederationError> {
        Ok(self.keys.get(&(server.to_owned(), key_id.to_owned())).copied())
    }
}

/// Steps 1 to 3: the event of `room_version` parsed, its signatures checked, redacted if its
/// content hash is wrong.
async fn verified_event(
    event: Object,
    room_version: &str,
    keys: &(impl KeyProvider + ?Sized),
) -> Result<Result<Pdu, Rejection>, FederationError> {
    let Some(rules) = RoomVersionRules::get(room_version) else {
        return Ok(Err(Rejection::UnknownRoomVersion(room_version.to_owned())));
    };
    let pdu = if rules.strict_canonical_json {
        // Received leniently with its transaction: now strictly, as the version requires.
        let mut bytes = Vec::with_capacity(event.canonical_len());
        event.write_canonical(&mut bytes);
        Pdu::from_slice(&bytes, rules)
    } else {
        Pdu::from_object(event, rules)
    };
    let pdu = match pdu {
        Ok(pdu) => pdu,
        Err(e) => return Ok(Err(e.into())),
    };
    let ring = match signing_keys(pdu.json(), rules, keys).await? {
        Ok(ring) => ring,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(match signing::verify_event(&pdu, &ring, rules) {
        Ok(Verified::Signatures) => {
            let redacted = redaction::redact(pdu.json(), rules);
            Ok(Pdu::with_event_id(redacted, pdu.event_id().to_owned(), rules))
        }
        Ok(_) => Ok(pdu),
        Err(e) => Err(e.into()),
    })
}

/// Runs the checks a server makes on a PDU received from another server (module docs) for a
/// room of `room_version`. `Ok` holds the verdict; `Err` means it could not be reached (and
/// says what is missing).
pub async fn check_pdu(
    event: Object,
    room_version: &str,
    keys: &(impl KeyProvider + ?Sized),
    room: &(impl RoomContext + ?Sized),
) -> Result<PduCheck, CheckError> {
    let pdu = match verified_event(event, room_version, keys).await? {
        Ok(pdu) => pdu,
        Err(rejection) => return Ok(PduCheck::Rejected(rejection)),
    };
    let rules = pdu.rules();

    // Step 4: the auth events.
    let mut auth_events = Vec::new();
    let auth_ids: Vec<String> = pdu.auth_events().map(str::to_owned).collect();
    for id in auth_ids {
        let known =
            room.event(&id).await?.ok_or_else(|| CheckError::MissingAuthEvent(id.clone()))?;
        if known.rejected {
            return Ok(PduCheck::Rejected(Rejection::RejectedAuthEvent {
                event: Box::new(pdu),
                auth_event: id,
            }));
        }
        auth_events.push(known.pdu);
    }
    let create = match create_event_id(&pdu) {
        Some(id) => {
            let known =
                room.event(&id).await?.ok_or_else(|| CheckError::MissingAuthEvent(id.clone()))?;
            if known.rejected {
                return Ok(PduCheck::Rejected(Rejection::RejectedAuthEvent {
                    event: Box::new(pdu),
                    auth_event: id,
                }));
            }
            Some(known.pdu)
        }
        None => None,
    };
    let auth_refs: Vec<&Pdu> = auth_events.iter().collect();
    if let Err(reason) = auth::check_with_auth_events(rules, &pdu, &auth_refs, create.as_ref()) {
        return Ok(PduCheck::Rejected(Rejection::AuthEvents { event: Box::new(pdu), reason }));
    }
    if pdu.kind() == "m.room.create" {
        // Nothing comes before a create event: steps 5 and 6 are step 4 again.
        return Ok(PduCheck::Accepted(pdu));
    }

    // Step 5: the state before the event (with one prev event, the state after it at the
    // keys the authorization rules read; with several, resolved).
    let needed = auth_keys(&pdu);
    let before = match only_prev_event(&pdu) {
        Some(prev) => {
            room.state_after_at(&prev, &needed).await?.ok_or(CheckError::MissingState(prev))?
        }
        None => state_before(&pdu, room).await?,
    };
    let before_events = load_state(&before, &needed, room).await?;
    if let Err(reason) = auth::check(rules, &pdu, &before_events) {
        return Ok(PduCheck::Rejected(Rejection::StateBefore { event: Box::new(pdu), reason }));
    }

    // Step 6: the current state, at the keys the authorization rules read.
    let current = room.current_state_at(&needed).await?;
    let same = needed.iter().all(|key| before.get(key) == current.get(key));
    if !same {
        let current_events = load_state(&current, &needed, room).await?;
        if let Err(reason) = auth::check(rules, &pdu, &current_events) {
            return Ok(PduCheck::SoftFailed(pdu, reason));
        }
    }
    Ok(PduCheck::Accepted(pdu))
}

/// The event's prev event when it has exactly one.
fn only_prev_event(pdu: &Pdu) -> Option<String> {
    let mut prevs = pdu.prev_events();
    match (prevs.next(), prevs.next()) {
        (Some(prev), None) => Some(prev.to_owned()),
        _ => None,
    }
}

/// In room version 12, the id of the room's create event (never among the auth events).
fn create_event_id(pdu: &Pdu) -> Option<String> {
    let rules = pdu.rules();
    if !rules.room_id_from_create_event || pdu.kind() == "m.room.create" {
        return None;
    }
    pdu.room_id().strip_prefix('!').map(|hash| format!("${hash}"))
}

/// The state keys the authorization rules read for `pdu`: those the auth events selection
/// picks, and the create event (in room version 12 it is not an auth event).
fn auth_keys(pdu: &Pdu) -> Vec<(String, String)> {
    let mut keys = auth::auth_types_for_event(pdu.rules(), pdu);
    let create = ("m.room.create".to_owned(), String::new());
    if !keys.contains(&create) {
        keys.push(create);
    }
    keys
}

/// The events of `state` at `keys`, for the authorization rules.
async fn load_state(
    state: &StateIds,
    keys: &[(String, String)],
    room: &(impl RoomContext + ?Sized),
) -> Result<HashMap<(String, String), Pdu>, CheckError> {
    let mut events = HashMap::with_capacity(keys.len());
    for key in keys {
        let Some(id) = state.get(key) else { continue };
        let known =
            room.event(id).await?.ok_or_else(|| CheckError::MissingAuthEvent(id.clone()))?;
        events.insert(key.clone(), known.pdu);
    }
    Ok(events)
}

/// The state before `pdu`: the state after its prev event, or the states after its prev
/// events resolved.
pub async fn state_before(
    pdu: &Pdu,
    room: &(impl RoomContext + ?Sized),
) -> Result<StateIds, CheckError> {
    let mut states: Vec<StateIds> = Vec::new();
    for prev in pdu.prev_events() {
        let state =
            room.state_after(prev).await?.ok_or_else(|| CheckError::MissingState(prev.into()))?;
        if !states.contains(&state) {
            states.push(state);
        }
    }
    if states.len() <= 1 {
        return Ok(states.pop().unwrap_or_default());
    }
    resolve(pdu.rules(), &states, room).await
}

/// Resolves `states` with the room version's algorithm: from the room's index of auth chains
/// when it keeps one ([`RoomContext::resolution_plan`]), else loading the states' events and
/// their auth chains.
pub async fn resolve(
    rules: &RoomVersionRules,
    states: &[StateIds],
    room: &(impl RoomContext + ?Sized),
) -> Result<StateIds, CheckError> {
    if rules.state_res != StateResAlgorithm::V1 {
        let split = StateSplit::new(states);
        if let Some(plan) = room.resolution_plan(&split).await?
            && let Some(resolved) = resolve_planned(rules, &split, plan, room).await?
        {
            return Ok(resolved);
        }
    }
    resolve_loading(rules, states, room).await
}

/// How many times resolution from a plan loads an event it asked for and was not given,
/// before it gives up: the plan names everything but, rarely, an unconflicted event the rules
/// read through another event's auth events.
const PLAN_MISSES: usize = 32;

/// [`resolve`] from a plan: the planned events, then the unconflicted events the authorization
/// rules of those events look up, then resolution given the auth difference, over the
/// conflicted entries and only those unconflicted entries (what it reads of the others, it
/// would only copy to its answer).
async fn resolve_planned(
    rules: &RoomVersionRules,
    split: &StateSplit<'_>,
    plan: ResolutionPlan,
    room: &(impl RoomContext + ?Sized),
) -> Result<Option<StateIds>, CheckError> {
    if plan.events.len() > MAX_RESOLUTION_EVENTS {
        return Err(CheckError::TooManyEvents);
    }
    let mut events: HashMap<String, Pdu> = HashMap::with_capacity(plan.events.len() * 2);
    load_into(&mut events, &plan.events, room).await?;
    // The unconflicted entries the rules read for the planned events (room versions 2-11
    // start from the unconflicted state), with the power levels and the create event.
    let mut keys: Vec<(String, String)> = events.values().flat_map(auth_keys).collect();
    keys.push(("m.room.power_levels".to_owned(), String::new()));
    keys.sort_unstable();
    keys.dedup();
    let read: Vec<(&(String, String), &str)> = keys
        .iter()
        .filter_map(|key| {
            let at = split.unconflicted.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
            Some(split.unconflicted[at])
        })
        .collect();
    let wanted: Vec<String> = read
        .iter()
        .filter(|(_, id)| !events.contains_key(*id))
        .map(|(_, id)| (*id).to_owned())
        .collect();
    load_into(&mut events, &wanted, room).await?;

    let maps: Vec<matrix_stateres::StateMap<'_>> = split
        .conflicted
        .iter()
        .map(|conflicted| {
            conflicted
                .iter()
                .chain(&read)
                .map(|((kind, key), id)| ((kind.as_str(), key.as_str()), *id))
                .collect()
        })
        .collect();
    let difference: Vec<&str> = plan.auth_difference.iter().map(String::as_str).collect();
    let options = matrix_stateres::ResolveOptions {
        auth_difference: Some(&difference),
        ..Default::default()
    };
    for _ in 0..PLAN_MISSES {
        let missing = match matrix_stateres::resolve_with(rules, &maps, &events, options) {
            Ok(resolved) => {
                // The unconflicted entries, and what resolution made of the others.
                let mut state: StateIds = split
                    .unconflicted
                    .iter()
                    .map(|(key, id)| ((*key).clone(), (*id).to_owned()))
                    .collect();
                state.extend(owned(resolved));
                return Ok(Some(state));
            }
            Err(matrix_stateres::ResolveError::MissingEvent { event_id, .. }) => event_id,
            Err(e) => return Err(e.into()),
        };
        if events.contains_key(&missing) {
            break;
        }
        load_into(&mut events, std::slice::from_ref(&missing), room).await?;
        if !events.contains_key(&missing) {
            return Err(CheckError::MissingAuthEvent(missing));
        }
    }
    // The plan was not enough: resolve as without one.
    Ok(None)
}

/// Adds the room's events among `ids` to `events`.
async fn load_into(
    events: &mut HashMap<String, Pdu>,
    ids: &[String],
    room: &(impl RoomContext + ?Sized),
) -> Result<(), CheckError> {
    for known in room.events(ids).await? {
        events.insert(known.pdu.event_id().to_owned(), known.pdu);
    }
    Ok(())
}

/// `states` as the state maps matrix-stateres reads.
fn state_maps(states: &[StateIds]) -> Vec<matrix_stateres::StateMap<'_>> {
    states
        .iter()
        .map(|state| {
            state
                .iter()
                .map(|((kind, key), id)| ((kind.as_str(), key.as_str()), id.as_str()))
                .collect()
        })
        .collect()
}

/// A resolved state map as owned ids.
fn owned(resolved: matrix_stateres::StateMap<'_>) -> StateIds {
    resolved
        .into_iter()
        .map(|((kind, key), id)| ((kind.to_owned(), key.to_owned()), id.to_owned()))
        .collect()
}

/// [`resolve`] without an index: every event of the states and of their auth chains loaded.
async fn resolve_loading(
    rules: &RoomVersionRules,
    states: &[StateIds],
    room: &(impl RoomContext + ?Sized),
) -> Result<StateIds, CheckError> {
    let mut ids: Vec<String> = states.iter().flat_map(|s| s.values().cloned()).collect();
    ids.sort_unstable();
    ids.dedup();
    let chain = room.auth_chain(&ids).await?;
    ids.extend(chain);
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_RESOLUTION_EVENTS {
        return Err(CheckError::TooManyEvents);
    }
    let mut events: HashMap<String, Pdu> = HashMap::with_capacity(ids.len());
    for id in ids {
        // An event of the auth chains that is not stored: resolution names it if it needs it.
        if let Some(known) = room.event(&id).await? {
            events.insert(id, known.pdu);
        }
    }
    let maps = state_maps(states);
    Ok(owned(matrix_stateres::resolve(rules, &maps, &events)?))
}
