//! Our users joining rooms of other servers: `make_join` on a resident server, the template
//! signed by us, `send_join`, and the room's state and auth chain from the answer checked
//! (signatures in one batch, hashes, the authorization rules of each event against its auth
//! events, the join against the state) before anything is stored. An event that fails its
//! checks is left out, with those that need it as an auth event; the join goes on if the rest
//! holds the create event and the join's auth events, and allows the join.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use matrix_core::signing::{KeyRing, Verified};
use matrix_core::{Object, Pdu, RoomVersionRules, Value, auth, redaction};
use matrix_federation::client::FederationClient;
use matrix_federation::keys::KeyProvider;
use matrix_storage::{ChangeSet, EventStatus, NewSnapshot, RoomChanges, SnapshotRef};
use ruma::UserId;

use super::Rooms;
use crate::error::ApiError;

/// The most events (state and auth chain) a `send_join` answer may hold.
const MAX_JOIN_EVENTS: usize = 500_000;

/// The most keys of one server looked up for the events of one answer.
const MAX_KEYS_PER_SERVER: usize = 16;

/// The most servers whose keys are looked up for one answer (the events of others fail).
const MAX_SERVERS: usize = 1_000;

/// The most events left out of an answer that are named in the log.
const MAX_LOGGED_DROPS: usize = 10;

impl Rooms {
    /// Our user's `membership` event from a `make_join`/`make_leave` answer's template, checked
    /// to be that (our user, this room, this membership), dated now, hashed and signed by us.
    pub(super) fn sign_template(
        &self,
        template: &Object,
        rules: &'static RoomVersionRules,
        room_id: &str,
        user: &UserId,
        membership: &str,
        profile: Option<&matrix_storage::Profile>,
    ) -> Result<Pdu, ApiError> {
        let mut event = template.get_object("event").cloned().ok_or_else(|| {
            ApiError::unknown(format!("the make_{membership} answer has no event"))
        })?;
        let is_ours = event.get_str("type") == Some("m.room.member")
            && event.get_str("sender") == Some(user.as_str())
            && event.get_str("state_key") == Some(user.as_str())
            && event.get_str("room_id") == Some(room_id)
            && event.get_object("content").and_then(|c| c.get_str("membership"))
                == Some(membership);
        if !is_ours {
            return Err(ApiError::unknown(format!(
                "the {membership} template is not our user's {membership}"
            )));
        }
        if let Some(profile) = profile
            && let Some(matrix_core::Value::Object(content)) = event.get_mut("content")
        {
            for (key, value) in
                [("displayname", &profile.displayname), ("avatar_url", &profile.avatar_url)]
            {
                if let Some(value) = value {
                    content.insert(key, value.as_str());
                }
            }
        }
        event.insert("origin_server_ts", super::now_ms());
        if event.contains_key("origin") {
            event.insert("origin", self.server_name().as_str());
        }
        event.remove("signatures");
        event.remove("hashes");
        event.remove("unsigned");
        self.seal(event, rules)
    }

    /// Whether one of our users is joined to the room (we can then build events in it, and
    /// take the room's events from other servers). Cached per current state.
    pub(crate) async fn is_resident(&self, room_id: &str) -> Result<bool, ApiError> {
        let Some(info) = self.storage().room(room_id).await? else { return Ok(false) };
        let Some(snapshot) = info.current_state else { return Ok(false) };
        if let Some((at, resident)) = self.residency.get(room_id)
            && at == snapshot
        {
            return Ok(resident);
        }
        let ours = format!(":{}", self.server_name());
        let resident = self
            .storage()
            .members(room_id)
            .await?
            .iter()
            .any(|(user, membership)| membership == "join" && user.ends_with(&ours));
        self.residency.insert(room_id.to_owned(), (snapshot, resident));
        Ok(resident)
    }

    /// Joins `user` to the room `room_id` of other servers, through the first of `servers`
    /// that answers. Answers the join event.
    pub(crate) async fn join_remote(
        &self,
        client: &FederationClient,
        keys: &dyn KeyProvider,
        room_id: &str,
        user: &UserId,
        servers: &[String],
    ) -> Result<Arc<Pdu>, ApiError> {
        let mut last_error: Option<ApiError> = None;
        for server in servers.iter().filter(|s| s.as_str() != self.server_name().as_str()) {
            match self.join_through(client, keys, server, room_id, user).await {
                Ok(pdu) => return Ok(pdu),
                Err(e) => {
                    tracing::warn!("federation: joining {room_id} through {server}: {e}");
                    // A refusal of the join says more than a server that was down.
                    let keep = last_error.as_ref().is_some_and(|last| {
                        last.status().is_client_error() && !e.status().is_client_error()
                    });
                    if !keep {
                        last_error = Some(e);
                    }
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| ApiError::not_found("no server in the room could be asked")))
    }

    async fn join_through(
        &self,
        client: &FederationClient,
        keys: &dyn KeyProvider,
        server: &str,
        room_id: &str,
        user: &UserId,
    ) -> Result<Arc<Pdu>, ApiError> {
        let versions: Vec<&str> = RoomVersionRules::ALL.iter().map(|r| r.id).collect();
        let template = client
            .make_join(server, room_id, user.as_str(), &versions)
            .await
            .map_err(refusal(server, "join"))?;
        let version = template.get_str("room_version").unwrap_or("1");
        let rules = RoomVersionRules::get(version).ok_or_else(|| {
            ApiError::unsupported_room_version(format!("the room is of version {version}"))
        })?;
        // Our user's display name and avatar go in the join, as in a join of ours.
        let profile = self.storage().profile(user.as_str()).await?.unwrap_or_default();
        let join = self.sign_template(&template, rules, room_id, user, "join", Some(&profile))?;
        let started = std::time::Instant::now();
        let answer = client
            .send_join(server, room_id, join.event_id(), join.json(), false)
            .await
            .map_err(refusal(server, "join"))?;
        let fetched = started.elapsed();
        // A restricted join comes back signed by the resident server too: its signature is
        // all that is taken from it (the checks of the state below verify it).
        let join = match answer
            .get_object("event")
            .and_then(|e| e.get_object("signatures"))
            .and_then(|s| s.get_object(server))
        {
            Some(theirs) => {
                let mut json = join.json().clone();
                json.object_entry("signatures").insert(server, theirs.clone());
                Pdu::with_event_id(json, join.event_id().to_owned(), rules)
            }
            _ => join,
        };
        let state = events_of(&answer, "state")?;
        let chain = events_of(&answer, "auth_chain")?;
        if state.len() + chain.len() > MAX_JOIN_EVENTS {
            return Err(ApiError::unknown("the room's state is larger than this server takes"));
        }
        let events = state.len() + chain.len();
        let stored = self.store_joined_room(keys, rules, room_id, join, state, chain).await?;
        tracing::warn!(
            "joined {room_id} through {server}: {events} events of state and auth chain, \
             answered in {fetched:?}, checked and stored in {:?}",
            started.elapsed().saturating_sub(fetched)
        );
        Ok(stored)
    }

    /// Checks the state and auth chain of a `send_join` answer and stores the room with our
    /// join as its one forward extremity.
    async fn store_joined_room(
        &self,
        keys: &dyn KeyProvider,
        rules: &'static RoomVersionRules,
        room_id: &str,
        join: Pdu,
        state: Vec<Object>,
        chain: Vec<Object>,
    ) -> Result<Arc<Pdu>, ApiError> {
        // Parse, dedup by id, keep only this room's events.
        let mut events: HashMap<String, Pdu> = HashMap::new();
        let mut state_ids = Vec::with_capacity(state.len());
        for (list, is_state) in [(state, true), (chain, false)] {
            for object in list {
                let Ok(pdu) = Pdu::from_object(object, rules) else { continue };
                if pdu.room_id() != room_id {
                    continue;
                }
                if is_state && pdu.state_key().is_some() {
                    state_ids.push(pdu.event_id().to_owned());
                }
                events.entry(pdu.event_id().to_owned()).or_insert(pdu);
            }
        }
        let received: Vec<String> = events.keys().cloned().collect();
        let verified = verify_all(keys, rules, events.into_values().collect()).await?;
        let accepted = authorize_in_order(rules, verified);
        // Events that fail their checks (or need one that does) are left out, and only they:
        // the join goes on if what is left is a state of the room that allows it.
        let dropped: Vec<&str> =
            received.iter().map(String::as_str).filter(|id| !accepted.contains_key(*id)).collect();
        if !dropped.is_empty() {
            let named = dropped.iter().take(MAX_LOGGED_DROPS).copied().collect::<Vec<_>>();
            tracing::warn!(
                "federation: joining {room_id}: {} events of the answer failed their checks and \
                 are left out: {}{}",
                dropped.len(),
                named.join(", "),
                if dropped.len() > named.len() { " and more" } else { "" }
            );
        }
        if let Some(missing) = join.auth_events().find(|id| !accepted.contains_key(*id)) {
            return Err(ApiError::unknown(format!(
                "the join's auth event {missing} is not in the answer or failed its checks"
            )));
        }

        // The state before our join: the answer's state events that passed.
        let mut state_map: HashMap<(String, String), String> = HashMap::new();
        for id in &state_ids {
            if let Some(pdu) = accepted.get(id)
                && let Some(key) = pdu.state_key()
            {
                state_map.insert((pdu.kind().to_owned(), key.to_owned()), id.clone());
            }
        }
        let state_events: HashMap<(String, String), Pdu> = state_map
            .iter()
            .filter_map(|(key, id)| accepted.get(id).map(|pdu| (key.clone(), pdu.clone())))
            .collect();
        let create_key = ("m.room.create".to_owned(), String::new());
        if !state_events.contains_key(&create_key) {
            return Err(ApiError::unknown(
                "the room's create event is not in the answer's state or failed its checks",
            ));
        }
        auth::check(rules, &join, &state_events).map_err(|e| {
            ApiError::forbidden(format!("the join is not allowed by the room: {e}"))
        })?;

        // Store: every checked event as an outlier, the join with the state after it.
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        let existing = self.storage().room(room_id).await?;
        let mut changes = ChangeSet::new();
        for pdu in accepted.values() {
            if self.storage().event(pdu.event_id()).await?.is_some() {
                continue;
            }
            changes.events.push(super::new_event(pdu, EventStatus::Outlier, false, None));
        }
        let mut snapshot: Vec<(String, String, Option<String>)> = state_map
            .iter()
            .map(|((kind, key), id)| (kind.clone(), key.clone(), Some(id.clone())))
            .collect();
        snapshot.sort_unstable();
        let user = join.sender().to_owned();
        snapshot.push(("m.room.member".to_owned(), user.clone(), Some(join.event_id().to_owned())));
        changes.snapshot = Some(NewSnapshot { parent: None, changes: snapshot });
        changes.events.push(super::new_event(
            &join,
            EventStatus::Accepted,
            true,
            Some(SnapshotRef::New),
        ));
        super::relations::index(&mut changes, &join, EventStatus::Accepted, true);
        let mut room = RoomChanges {
            room_id: room_id.to_owned(),
            current_state: Some(SnapshotRef::New),
            forward_extremities: Some(vec![join.event_id().to_owned()]),
            ..RoomChanges::default()
        };
        super::built_on_or_created(&mut room, existing.as_ref(), rules);
        for ((kind, key), id) in &state_map {
            if kind == "m.room.member"
                && *key != user
                && let Some(membership) =
                    accepted.get(id).and_then(|p| p.content().get_str("membership"))
            {
                room.memberships.push((key.clone(), membership.to_owned()));
            }
        }
        room.memberships.push((user, "join".to_owned()));
        changes.rooms.push(room);
        super::user_directory::index_state(&mut changes, self.server_name().as_str());
        let (applied, durable) = self.storage().apply_ordered(changes).await?;
        durable.await?;
        self.versions.insert(room_id.to_owned(), rules);
        let join = Arc::new(join);
        self.events.insert(join.event_id().to_owned(), join.clone());
        if let Some(snapshot) = applied.snapshot {
            self.snapshots_of.insert(join.event_id().to_owned(), snapshot);
        }
        self.ephemeral.event_appended(room_id, &join, applied.stream.first().copied()).await;
        Ok(join)
    }
}

/// The events of one list of a `send_join` answer.
fn events_of(answer: &Object, field: &str) -> Result<Vec<Object>, ApiError> {
    match answer.get(field) {
        Some(Value::Array(list)) => Ok(list.iter().filter_map(Value::as_object).cloned().collect()),
        _ => Err(ApiError::unknown(format!("the send_join answer has no {field} list"))),
    }
}

/// The events whose signatures verify (one batch), redacted where their content hash is
/// wrong.
pub(super) async fn verify_all(
    keys: &dyn KeyProvider,
    rules: &'static RoomVersionRules,
    events: Vec<Pdu>,
) -> Result<Vec<Pdu>, ApiError> {
    let mut ring = KeyRing::new();
    let mut looked_up: HashSet<(String, String)> = HashSet::new();
    let mut per_server: HashMap<String, usize> = HashMap::new();
    for pdu in &events {
        let Ok(servers) = matrix_core::signing::required_signers(pdu.json(), rules) else {
            continue;
        };
        let valid_at = if rules.enforce_key_validity { pdu.origin_server_ts() } else { i64::MIN };
        for server in servers {
            let Some(signatures) =
                pdu.json().get_object("signatures").and_then(|s| s.get_object(server))
            else {
                continue;
            };
            for key_id in signatures.keys() {
                let entry = (server.to_owned(), key_id.to_owned());
                if looked_up.contains(&entry) {
                    continue;
                }
                if !per_server.contains_key(server) && per_server.len() >= MAX_SERVERS {
                    continue;
                }
                let count = per_server.entry(server.to_owned()).or_default();
                if *count >= MAX_KEYS_PER_SERVER {
                    continue;
                }
                *count += 1;
                looked_up.insert(entry);
                // A server whose keys cannot be had now (it is down, and no notary has
                // them): its events fail their signature check, the others go on.
                match keys.public_key(server, key_id, valid_at).await {
                    Ok(Some(key)) => ring.insert(server, key_id, key),
                    Ok(None) => {}
                    Err(matrix_federation::FederationError::Storage(e)) => return Err(e.into()),
                    Err(e) => tracing::warn!("federation: keys of {server}: {e}"),
                }
            }
        }
    }
    let refs: Vec<&Pdu> = events.iter().collect();
    let results = matrix_core::signing::verify_events_batch(&refs, &ring, rules);
    let mut verified = Vec::with_capacity(events.len());
    for (pdu, result) in events.into_iter().zip(results) {
        match result {
            Ok(Verified::All) => verified.push(pdu),
            Ok(_) => {
                let redacted = redaction::redact(pdu.json(), rules);
                verified.push(Pdu::with_event_id(redacted, pdu.event_id().to_owned(), rules));
            }
            Err(_) => {}
        }
    }
    Ok(verified)
}

/// The events that pass the authorization rules against their own auth events, each checked
/// after its auth events (an event whose auth events are missing or failed fails too), in one
/// topological pass (Kahn's): linear in the events and their auth references. Events in a
/// cycle are never ready and are left out.
pub(super) fn authorize_in_order(
    rules: &'static RoomVersionRules,
    events: Vec<Pdu>,
) -> HashMap<String, Pdu> {
    authorize_against(rules, events, &HashMap::new(), None)
}

/// [`authorize_in_order`] for events whose auth events may also be stored here already:
/// `known` holds those (checked when they were stored, and not rejected), `create` the room's
/// create event when the batch does not hold it (room version 12 checks every event against
/// it).
pub(super) fn authorize_against(
    rules: &'static RoomVersionRules,
    events: Vec<Pdu>,
    known: &HashMap<String, Pdu>,
    room_create: Option<&Pdu>,
) -> HashMap<String, Pdu> {
    let mut pending: HashMap<String, Pdu> =
        events.into_iter().map(|p| (p.event_id().to_owned(), p)).collect();
    let mut accepted: HashMap<String, Pdu> = HashMap::with_capacity(pending.len());
    let create_id = pending
        .values()
        .find(|p| p.kind() == "m.room.create" && p.state_key() == Some(""))
        .map(|p| p.event_id().to_owned());
    // The create event first: in room version 12 every other event needs it.
    if let Some(id) = &create_id
        && let Some(create) = pending.remove(id)
        && auth::check_with_auth_events(rules, &create, &[], None).is_ok()
    {
        accepted.insert(id.clone(), create);
    }
    // How many of its auth events each event still waits for, and who waits for whom.
    let mut waiting: HashMap<&str, usize> = HashMap::with_capacity(pending.len());
    let mut waiters: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, pdu) in &pending {
        let mut count = 0;
        for auth in pdu.auth_events() {
            if let Some((auth_id, _)) = pending.get_key_value(auth) {
                count += 1;
                waiters.entry(auth_id.as_str()).or_default().push(id.as_str());
            }
        }
        waiting.insert(id.as_str(), count);
    }
    let mut ready: Vec<&str> =
        waiting.iter().filter(|(_, count)| **count == 0).map(|(id, _)| *id).collect();
    let mut order = Vec::with_capacity(pending.len());
    while let Some(id) = ready.pop() {
        order.push(id.to_owned());
        for waiter in waiters.get(id).map(Vec::as_slice).unwrap_or_default() {
            if let Some(count) = waiting.get_mut(waiter) {
                *count -= 1;
                if *count == 0 {
                    ready.push(waiter);
                }
            }
        }
    }
    drop(waiters);
    drop(waiting);
    for id in order {
        let Some(pdu) = pending.remove(&id) else { continue };
        let auth_events: Option<Vec<&Pdu>> =
            pdu.auth_events().map(|a| accepted.get(a).or_else(|| known.get(a))).collect();
        let Some(auth_events) = auth_events else { continue };
        let create = if rules.room_id_from_create_event && pdu.kind() != "m.room.create" {
            create_id.as_ref().and_then(|c| accepted.get(c)).or(room_create)
        } else {
            None
        };
        if auth::check_with_auth_events(rules, &pdu, &auth_events, create).is_ok() {
            accepted.insert(id, pdu);
        }
    }
    accepted
}

/// A refusal by the resident server (a 4xx) as our client's error with its reason; other
/// failures as they are.
pub(super) fn refusal<'a>(
    server: &'a str,
    action: &'static str,
) -> impl Fn(matrix_federation::FederationError) -> ApiError + 'a {
    move |e| {
        let refused = matches!(
            &e,
            matrix_federation::FederationError::Status { status, .. }
                if (400..500).contains(status) && *status != 429
        );
        if !refused {
            return e.into();
        }
        let errcode = e.errcode().unwrap_or_default();
        let error = match &e {
            matrix_federation::FederationError::Status { body, .. } => {
                serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|json| json["error"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            }
            _ => String::new(),
        };
        let error: String = error.chars().take(300).collect();
        let message = format!("{server} refused the {action}: {error}");
        match errcode.as_str() {
            "M_NOT_FOUND" => ApiError::not_found(message),
            "M_INCOMPATIBLE_ROOM_VERSION" | "M_UNSUPPORTED_ROOM_VERSION" => {
                ApiError::unsupported_room_version(message)
            }
            _ => ApiError::forbidden(message),
        }
    }
}
