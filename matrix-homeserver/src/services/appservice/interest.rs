//! Which rooms an application service is interested in (spec: Application Service API,
//! "Pushing events"; as Synapse decides): a room whose id is in its room namespace, whose
//! aliases (local ones, or the `m.room.canonical_alias` alias and alternatives) are in its
//! alias namespace, or with a joined or invited member in its user namespace (its own sender
//! included). An event is also of interest when its sender is in the user namespace, or when
//! it is a membership of a namespace user (an invite to a ghost).
//!
//! One cache per service, by room, built once from the room's current members and aliases
//! and then kept up to date by the events the service's sender reads in stream order: each
//! membership of a namespace user and each canonical alias change updates its room's entry,
//! so no event costs a scan of the members. An entry built while the sender is behind the
//! stream's head reflects the state at the head; replaying the events after it in order
//! leaves the entry where the head has it again. Local aliases are read when the entry is
//! built (they are not events). The cache holds at most [`MAX_ROOMS`] rooms; past that it
//! starts again empty.

use std::collections::{HashMap, HashSet};

use matrix_core::Pdu;

use super::Appservice;
use crate::error::ApiError;
use crate::services::rooms::Rooms;

/// The most rooms one service's cache holds.
pub(crate) const MAX_ROOMS: usize = 16_384;

/// What makes a room interesting to one service.
#[derive(Debug, Default)]
struct RoomInterest {
    /// The room id is in the room namespace.
    room_id: bool,
    /// A local alias of the room is in the alias namespace.
    local_alias: bool,
    /// The canonical alias (or an alternative) is in the alias namespace.
    canonical_alias: bool,
    /// The namespace users joined or invited.
    members: HashSet<String>,
}

impl RoomInterest {
    fn any(&self) -> bool {
        self.room_id || self.local_alias || self.canonical_alias || !self.members.is_empty()
    }
}

/// One service's view of which rooms interest it.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    rooms: HashMap<String, RoomInterest>,
}

/// Whether the canonical alias content names an alias of the namespace.
fn canonical_matches(service: &Appservice, content: &matrix_core::Object) -> bool {
    let alias = content.get_str("alias").into_iter();
    let alternatives = content
        .get("alt_aliases")
        .and_then(matrix_core::Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(matrix_core::Value::as_str);
    alias.chain(alternatives).any(|a| service.is_interested_in_alias(a))
}

impl Interest {
    async fn entry(
        &mut self,
        rooms: &Rooms,
        service: &Appservice,
        room: &str,
    ) -> Result<&mut RoomInterest, ApiError> {
        if !self.rooms.contains_key(room) {
            let built = build(rooms, service, room).await?;
            if self.rooms.len() >= MAX_ROOMS {
                self.rooms.clear();
            }
            self.rooms.insert(room.to_owned(), built);
        }
        // Inserted above when missing.
        self.rooms.get_mut(room).ok_or_else(|| ApiError::unknown("the interest cache lost a room"))
    }

    /// Whether `room` interests the service now.
    pub(crate) async fn room(
        &mut self,
        rooms: &Rooms,
        service: &Appservice,
        room: &str,
    ) -> Result<bool, ApiError> {
        Ok(self.entry(rooms, service, room).await?.any())
    }

    /// Whether `pdu` (the next event of `room` in stream order) interests the service; the
    /// room's entry follows the event (a membership of a namespace user, a canonical alias).
    pub(crate) async fn event(
        &mut self,
        rooms: &Rooms,
        service: &Appservice,
        room: &str,
        pdu: &Pdu,
    ) -> Result<bool, ApiError> {
        let entry = self.entry(rooms, service, room).await?;
        let mut wanted = entry.any() || service.is_interested_in_user(pdu.sender());
        match (pdu.kind(), pdu.state_key()) {
            ("m.room.member", Some(target)) if service.is_interested_in_user(target) => {
                // The membership of a namespace user: its invite, join, leave, ban.
                wanted = true;
                match pdu.content().get_str("membership") {
                    Some("join" | "invite") => entry.members.insert(target.to_owned()),
                    _ => entry.members.remove(target),
                };
            }
            ("m.room.canonical_alias", Some("")) => {
                // The event naming a namespace alias goes out, and so does the one taking it
                // away (the service learns it lost the room).
                let matches = canonical_matches(service, pdu.content());
                wanted |= matches;
                entry.canonical_alias = matches;
            }
            _ => {}
        }
        Ok(wanted)
    }

    /// Forgets `room` (its local aliases changed): the next event builds it again.
    pub(crate) fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }
}

/// A room's entry from its current state and local aliases.
async fn build(rooms: &Rooms, service: &Appservice, room: &str) -> Result<RoomInterest, ApiError> {
    let storage = rooms.storage();
    let mut interest =
        RoomInterest { room_id: service.is_interested_in_room_id(room), ..RoomInterest::default() };
    interest.members = storage
        .members(room)
        .await?
        .into_iter()
        .filter(|(user, membership)| {
            matches!(membership.as_str(), "join" | "invite") && service.is_interested_in_user(user)
        })
        .map(|(user, _)| user)
        .collect();
    interest.local_alias = storage
        .room_aliases(room)
        .await?
        .iter()
        .any(|alias| service.is_interested_in_alias(&alias.alias));
    if let Some(snapshot) = storage.room(room).await?.and_then(|info| info.current_state)
        && let Some(canonical) = rooms.state_pdu(snapshot, "m.room.canonical_alias", "").await?
    {
        interest.canonical_alias = canonical_matches(service, canonical.content());
    }
    Ok(interest)
}
