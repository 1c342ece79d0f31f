//! ruma-state-res 0.18 fed with the same rooms: its event type, the auth chains a server would
//! give it, and the conflicted state subgraph it asks for in room version 12.

use std::collections::{HashMap, HashSet};

use matrix_core::Pdu;
use matrix_core::json::{self, Value};
use ruma::events::TimelineEventType;
use ruma::state_res::{self, Event, StateMap, utils::event_id_set::EventIdSet};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::value::RawValue;

/// An event as ruma-state-res reads it; also read directly from a PDU's JSON with serde (the
/// way a ruma-based server parses what it needs).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RumaPdu {
    event_id: OwnedEventId,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    #[serde(default)]
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    #[serde(default)]
    redacts: Option<OwnedEventId>,
}

impl RumaPdu {
    /// Converts one of our events.
    pub fn new(pdu: &Pdu) -> Self {
        let content = json::to_canonical_string(&Value::Object(pdu.content().clone()));
        let id = |s: &str| EventId::parse(s).expect("valid event id");
        let ts = u64::try_from(pdu.origin_server_ts()).unwrap_or_default();
        RumaPdu {
            event_id: id(pdu.event_id()),
            room_id: pdu.has_room_id().then(|| RoomId::parse(pdu.room_id()).expect("room id")),
            sender: UserId::parse(pdu.sender()).expect("user id"),
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                ruma::UInt::try_from(ts).unwrap_or_default(),
            ),
            kind: pdu.kind().into(),
            content: RawValue::from_string(content).expect("json"),
            state_key: pdu.state_key().map(str::to_owned),
            prev_events: pdu.prev_events().map(id).collect(),
            auth_events: pdu.auth_events().map(id).collect(),
            redacts: pdu.redacts().map(id),
        }
    }
}

impl Event for RumaPdu {
    type Id = OwnedEventId;
    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// A room's events and state sets, converted for ruma.
#[derive(Debug)]
pub struct RumaRoom {
    /// Events by id.
    pub events: HashMap<OwnedEventId, RumaPdu>,
    /// The state sets as ruma's state maps.
    pub state_maps: Vec<StateMap<OwnedEventId>>,
}

impl RumaRoom {
    /// Converts events and state sets (event ids).
    pub fn new<'a>(events: impl IntoIterator<Item = &'a Pdu>, state_sets: &[Vec<String>]) -> Self {
        let events: HashMap<OwnedEventId, RumaPdu> = events
            .into_iter()
            .map(|e| (EventId::parse(e.event_id()).expect("id"), RumaPdu::new(e)))
            .collect();
        let sets: Vec<Vec<OwnedEventId>> = state_sets
            .iter()
            .map(|set| set.iter().map(|id| EventId::parse(id).expect("id")).collect())
            .collect();
        Self::from_events(events, &sets).expect("every state event is known")
    }

    /// A room from events already in ruma's type; `Err` names a state event that is missing.
    pub fn from_events(
        events: HashMap<OwnedEventId, RumaPdu>,
        state_sets: &[Vec<OwnedEventId>],
    ) -> Result<Self, OwnedEventId> {
        let state_maps = state_sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|id| {
                        let event = events.get(id).ok_or_else(|| id.clone())?;
                        let key = (
                            event.kind.to_string().into(),
                            event.state_key.clone().unwrap_or_default(),
                        );
                        Ok::<_, OwnedEventId>((key, event.event_id.clone()))
                    })
                    .collect()
            })
            .collect::<Result<_, _>>()?;
        Ok(RumaRoom { events, state_maps })
    }

    /// The full auth chain of each state set (the union of its events' auth chains), the way a
    /// server without a chain index computes it: a walk over `auth_events`.
    pub fn auth_chains(&self) -> Vec<EventIdSet<OwnedEventId>> {
        self.state_maps
            .iter()
            .map(|state| {
                let mut chain: HashSet<&EventId> = HashSet::new();
                let mut stack: Vec<&EventId> = Vec::new();
                for id in state.values() {
                    stack.extend(self.events[id].auth_events.iter().map(|a| &**a));
                }
                while let Some(id) = stack.pop() {
                    if chain.insert(id)
                        && let Some(event) = self.events.get(id)
                    {
                        stack.extend(event.auth_events.iter().map(|a| &**a));
                    }
                }
                chain.into_iter().map(ToOwned::to_owned).collect()
            })
            .collect()
    }

    /// The conflicted state subgraph ruma asks for in room version 12: events on an auth path
    /// between two conflicted events (endpoints included).
    pub fn conflicted_subgraph(
        &self,
        conflicted: &StateMap<Vec<OwnedEventId>>,
    ) -> Option<EventIdSet<OwnedEventId>> {
        let conflicted: HashSet<&EventId> = conflicted.values().flatten().map(|id| &**id).collect();
        let mut reachable: HashSet<&EventId> = HashSet::new();
        let mut stack: Vec<&EventId> = conflicted.iter().copied().collect();
        while let Some(id) = stack.pop() {
            if reachable.insert(id) {
                stack.extend(self.events.get(id)?.auth_events.iter().map(|a| &**a));
            }
        }
        let mut children: HashMap<&EventId, Vec<&EventId>> = HashMap::new();
        for &id in &reachable {
            for parent in &self.events.get(id)?.auth_events {
                children.entry(&**parent).or_default().push(id);
            }
        }
        let mut seen: HashSet<&EventId> = HashSet::new();
        let mut stack: Vec<&EventId> = conflicted.iter().copied().collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(children.get(id).into_iter().flatten().copied());
            }
        }
        Some(seen.into_iter().map(ToOwned::to_owned).collect())
    }

    /// Resolves with ruma-state-res (v2 or v2.1 by the room version), given the auth chains.
    pub fn resolve(
        &self,
        version: &ruma::RoomVersionId,
        auth_chains: Vec<EventIdSet<OwnedEventId>>,
    ) -> Result<StateMap<OwnedEventId>, state_res::Error> {
        let rules = version.rules().expect("known version");
        let v2_rules = rules.state_res.v2_rules().expect("state res v2");
        state_res::resolve(
            &rules.authorization,
            v2_rules,
            &self.state_maps,
            auth_chains,
            |id: &EventId| self.events.get(id),
            |conflicted| self.conflicted_subgraph(conflicted),
        )
    }

    /// What ruma-state-res resolves `sets` of `room` to, given the auth chains, as sorted
    /// rows: the anchor the differential tests compare with.
    pub fn resolved_rows(
        room: &crate::rooms::Room,
        sets: &[Vec<String>],
    ) -> Vec<(String, String, String)> {
        let ruma = RumaRoom::new(&room.events, sets);
        let version = ruma::RoomVersionId::try_from(room.rules.id).expect("known");
        RumaRoom::rows(&ruma.resolve(&version, ruma.auth_chains()).expect("ruma resolves"))
    }

    /// The resolved state as sorted `(type, state_key, event_id)` rows.
    pub fn rows(state: &StateMap<OwnedEventId>) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> =
            state.iter().map(|((k, s), id)| (k.to_string(), s.clone(), id.to_string())).collect();
        rows.sort();
        rows
    }
}
