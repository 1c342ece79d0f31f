//! History visibility: what of a room a user may see. Every reader asks this module and
//! nothing else (`/sync` in all its sections, `/messages`, `/context`, `/event`, `/state`,
//! `/members`, `/joined_members`, redaction targets).
//!
//! Per event it is the spec's algorithm (client-server API, "Room History Visibility"), with
//! the room's state *at* the event, which is the state before it:
//! 1. `world_readable` then: allow;
//! 2. the user's membership then was `join`: allow;
//! 3. `shared` then, and the user joined at any point after the event: allow;
//! 4. `invited` then, and the user's membership then was `invite`: allow;
//! 5. otherwise deny.
//!
//! An `m.room.history_visibility` event is visible if the value before *or* after it allows
//! it. A user always sees their own membership events (the spec allows it when the membership
//! before or after would; we go as far as Synapse does, so that a rejected or revoked invite
//! still reaches the client that must drop the room): that is all a user who never joined
//! sees of a room that is not world-readable.
//!
//! A server administrator reading through the admin API ([`Reader::Administrator`]) sees
//! every event: the same readers, asked with that reader, skip the rules.
//!
//! The membership history of a user in a room (each change with its stream position) is
//! walked once from their current member event back through the state before each change,
//! and cached until their membership changes again.

use std::sync::Arc;

use matrix_core::Pdu;
use matrix_storage::{SnapshotId, StreamPos};
use ruma::UserId;

use super::Rooms;
use crate::error::ApiError;

/// The most membership changes of one user in one room that are walked back (older ones are
/// not looked at: a user with more changes than this sees less of the oldest history).
const MAX_CHANGES: usize = 4_096;

/// How much of a room a user may see at all; each event is then checked with
/// [`Rooms::sees`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Up to now, with the current state (joined, or a world-readable room).
    Now(SnapshotId),
    /// Up to and including their last leave (or ban) at this position, with the state then
    /// (a user who was joined before).
    Until(StreamPos, SnapshotId),
}

impl Visibility {
    pub(crate) fn snapshot(self) -> SnapshotId {
        match self {
            Visibility::Now(s) | Visibility::Until(_, s) => s,
        }
    }
    pub(crate) fn allows(self, pos: Option<StreamPos>) -> bool {
        match (self, pos) {
            (Visibility::Now(_), _) => true,
            (Visibility::Until(until, _), Some(pos)) => pos <= until,
            (Visibility::Until(..), None) => false,
        }
    }
}

/// A membership value (`knock` and values the spec does not define count as `leave`, which
/// grants nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    Join,
    Invite,
    Leave,
    Ban,
}

impl Membership {
    fn parse(value: Option<&str>) -> Membership {
        match value {
            Some("join") => Membership::Join,
            Some("invite") => Membership::Invite,
            Some("ban") => Membership::Ban,
            _ => Membership::Leave,
        }
    }
}

/// The changes of one user's membership in one room, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Memberships {
    changes: Vec<(StreamPos, Membership)>,
    /// The state after the latest change.
    latest_state: Option<SnapshotId>,
}

impl Memberships {
    /// Builds a history from changes in any order (tests, and the walk).
    pub(crate) fn from_changes(mut changes: Vec<(StreamPos, Membership)>) -> Self {
        changes.sort_by_key(|(pos, _)| *pos);
        Memberships { changes, latest_state: None }
    }

    /// The membership in force at `pos` (set by a change strictly before it).
    pub(crate) fn at(&self, pos: StreamPos) -> Option<Membership> {
        let i = self.changes.partition_point(|(p, _)| *p < pos);
        i.checked_sub(1).map(|i| self.changes[i].1)
    }

    /// Whether the user joined at some point after `pos`.
    pub(crate) fn joined_after(&self, pos: StreamPos) -> bool {
        let i = self.changes.partition_point(|(p, _)| *p <= pos);
        self.changes[i..].iter().any(|(_, m)| *m == Membership::Join)
    }

    /// The current membership and when it was set.
    pub(crate) fn current(&self) -> Option<(StreamPos, Membership)> {
        self.changes.last().copied()
    }

    /// How many changes it holds.
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the user was ever joined.
    pub(crate) fn ever_joined(&self) -> bool {
        self.changes.iter().any(|(_, m)| *m == Membership::Join)
    }
}

/// A history visibility value (values the spec does not define read as `shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum History {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl History {
    pub(crate) fn parse(value: Option<&str>) -> History {
        match value {
            Some("world_readable") => History::WorldReadable,
            Some("invited") => History::Invited,
            Some("joined") => History::Joined,
            _ => History::Shared,
        }
    }

    /// Rules 1-5 for an event at `pos`, given the history visibility then.
    pub(crate) fn allows(self, memberships: &Memberships, pos: StreamPos) -> bool {
        let then = memberships.at(pos);
        match self {
            History::WorldReadable => true,
            _ if then == Some(Membership::Join) => true,
            History::Shared => memberships.joined_after(pos),
            History::Invited => then == Some(Membership::Invite),
            History::Joined => false,
        }
    }
}

/// Someone looking at a room: the user and their membership history there.
#[derive(Debug, Clone)]
pub(crate) struct Looker<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) memberships: Arc<Memberships>,
    /// A server administrator reading through the admin API: sees every event.
    pub(crate) administrator: bool,
}

/// Who reads a room.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reader<'a> {
    /// A user: the history visibility rules apply.
    User(&'a UserId),
    /// A server administrator reading through the admin API (Synapse's `/rooms/{roomId}/
    /// messages`, `/context`): every event this server holds of the room, whatever their
    /// membership, with the current state, as a user joined since the room began would.
    Administrator(&'a UserId),
}

impl<'a> From<&'a UserId> for Reader<'a> {
    fn from(user: &'a UserId) -> Self {
        Reader::User(user)
    }
}

impl<'a> From<&'a ruma::OwnedUserId> for Reader<'a> {
    fn from(user: &'a ruma::OwnedUserId) -> Self {
        Reader::User(user)
    }
}

impl Rooms {
    /// The membership history of `user` in a room whose current state is `current` (cached
    /// until it changes).
    pub(crate) async fn memberships_at(
        &self,
        room_id: &str,
        user: &UserId,
        current: SnapshotId,
    ) -> Result<Arc<Memberships>, ApiError> {
        let Some(latest) =
            self.storage().state_get(current, "m.room.member", user.as_str()).await?
        else {
            return Ok(Arc::default());
        };
        let key = (room_id.to_owned(), user.as_str().to_owned());
        if let Some((id, memberships)) = self.memberships.get(&key)
            && id == latest
        {
            return Ok(memberships);
        }
        let mut changes = Vec::new();
        let mut latest_state = None;
        let mut next = Some(latest.clone());
        while let Some(id) = next.take() {
            if changes.len() == MAX_CHANGES {
                break;
            }
            let Some(stored) = self.storage().event(&id).await? else { break };
            let Some(pdu) = self.pdu(&id).await? else { break };
            if latest_state.is_none() {
                latest_state = stored.state_after;
            }
            let membership = Membership::parse(pdu.content().get_str("membership"));
            // A member event with no timeline position came with the room's state when we
            // joined it through another server: in force since before everything we hold.
            let Some(pos) = stored.stream else {
                changes.push((StreamPos(0), membership));
                break;
            };
            changes.push((pos, membership));
            // The member event before this one: in the state before it.
            if let Some(before) = self.state_before_event(&pdu).await? {
                next = self
                    .storage()
                    .state_get(before, "m.room.member", user.as_str())
                    .await?
                    .filter(|previous| *previous != id);
            }
        }
        let mut memberships = Memberships::from_changes(changes);
        memberships.latest_state = latest_state;
        let memberships = Arc::new(memberships);
        self.memberships.insert(key, (latest, memberships.clone()));
        Ok(memberships)
    }

    /// Who looks at a room: `user` with their membership history there (`current` is the
    /// room's current state).
    pub(crate) async fn looker_at<'a>(
        &self,
        room_id: &str,
        user: &'a UserId,
        current: SnapshotId,
    ) -> Result<Looker<'a>, ApiError> {
        let memberships = self.memberships_at(room_id, user, current).await?;
        Ok(Looker { user, memberships, administrator: false })
    }

    /// What `user` may see of a room at all; `M_FORBIDDEN` if nothing but their own
    /// membership events.
    pub(crate) async fn visibility<'a>(
        &self,
        room_id: &str,
        reader: impl Into<Reader<'a>>,
    ) -> Result<Visibility, ApiError> {
        Ok(self.access(room_id, reader).await?.0)
    }

    /// [`Rooms::visibility`], with the looker to check each event with (one read of the room).
    /// An administrator ([`Reader::Administrator`]) sees all of a room this server holds (404
    /// for one it does not).
    pub(crate) async fn access<'a>(
        &self,
        room_id: &str,
        reader: impl Into<Reader<'a>>,
    ) -> Result<(Visibility, Looker<'a>), ApiError> {
        let user = match reader.into() {
            Reader::User(user) => user,
            Reader::Administrator(user) => {
                let not_found = || ApiError::not_found("Room not found");
                let info = self.storage().room(room_id).await?.ok_or_else(not_found)?;
                let current = info.current_state.ok_or_else(not_found)?;
                let memberships = Arc::new(Memberships::default());
                return Ok((
                    Visibility::Now(current),
                    Looker { user, memberships, administrator: true },
                ));
            }
        };
        let not_allowed = || ApiError::forbidden("you are not in this room");
        let info = self.storage().room(room_id).await?.ok_or_else(not_allowed)?;
        let current = info.current_state.ok_or_else(not_allowed)?;
        let looker = self.looker_at(room_id, user, current).await?;
        let memberships = &looker.memberships;
        let latest = memberships.current();
        let visibility = if matches!(latest, Some((_, Membership::Join)))
            || self.history_of(current).await? == History::WorldReadable
        {
            Visibility::Now(current)
        } else {
            // Departed users see up to their departure, with the state then; users who
            // never joined see nothing.
            match (latest, memberships.latest_state) {
                (Some((pos, Membership::Leave | Membership::Ban)), Some(state))
                    if memberships.ever_joined() =>
                {
                    Visibility::Until(pos, state)
                }
                _ => return Err(not_allowed()),
            }
        };
        Ok((visibility, looker))
    }

    /// Whether `looker` may see `pdu`, which is at `pos` in its room's timeline.
    pub(crate) async fn sees(
        &self,
        looker: &Looker<'_>,
        pdu: &Pdu,
        pos: StreamPos,
    ) -> Result<bool, ApiError> {
        let memberships = &looker.memberships;
        if looker.administrator
            || pdu.kind() == "m.room.member" && pdu.state_key() == Some(looker.user.as_str())
        {
            return Ok(true);
        }
        // The usual case (a member reading what was sent while joined) needs no state.
        if memberships.at(pos) == Some(Membership::Join) {
            return Ok(true);
        }
        let before = match self.state_before_event(pdu).await? {
            Some(before) => self.history_of(before).await?,
            None => History::Shared,
        };
        if before.allows(memberships, pos) {
            return Ok(true);
        }
        if pdu.kind() == "m.room.history_visibility" && pdu.state_key() == Some("") {
            let after = History::parse(pdu.content().get_str("history_visibility"));
            return Ok(after.allows(memberships, pos));
        }
        Ok(false)
    }

    /// The history visibility in a state snapshot (cached: snapshots never change).
    pub(crate) async fn history_of(&self, snapshot: SnapshotId) -> Result<History, ApiError> {
        if let Some(history) = self.visibility_at.get(&snapshot) {
            return Ok(history);
        }
        let history = match self.state_pdu(snapshot, "m.room.history_visibility", "").await? {
            Some(pdu) => History::parse(pdu.content().get_str("history_visibility")),
            None => History::Shared,
        };
        self.visibility_at.insert(snapshot, history);
        Ok(history)
    }

    /// The state before an event: the state after it, unless it is a state event, whose
    /// state before is the state after the event it follows.
    pub(crate) async fn state_before_event(
        &self,
        pdu: &Pdu,
    ) -> Result<Option<SnapshotId>, ApiError> {
        if pdu.state_key().is_none() {
            return self.state_after_of(pdu.event_id()).await;
        }
        match pdu.prev_events().next() {
            Some(prev) => self.state_after_of(prev).await,
            None => Ok(None),
        }
    }

    /// The state after an event, cached (it never changes).
    pub(crate) async fn state_after_of(
        &self,
        event_id: &str,
    ) -> Result<Option<SnapshotId>, ApiError> {
        if let Some(snapshot) = self.snapshots_of.get(event_id) {
            return Ok(Some(snapshot));
        }
        let snapshot = self.storage().event(event_id).await?.and_then(|e| e.state_after);
        if let Some(snapshot) = snapshot {
            self.snapshots_of.insert(event_id.to_owned(), snapshot);
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(changes: &[(u64, Membership)]) -> Memberships {
        Memberships::from_changes(changes.iter().map(|(p, m)| (StreamPos(*p), *m)).collect())
    }

    #[test]
    fn membership_at_an_event_is_set_strictly_before_it() {
        let h = history(&[(5, Membership::Invite), (8, Membership::Join), (12, Membership::Leave)]);
        assert_eq!(h.at(StreamPos(5)), None);
        assert_eq!(h.at(StreamPos(6)), Some(Membership::Invite));
        assert_eq!(h.at(StreamPos(9)), Some(Membership::Join));
        assert_eq!(h.at(StreamPos(13)), Some(Membership::Leave));
        assert!(h.joined_after(StreamPos(7)));
        assert!(!h.joined_after(StreamPos(8)));
    }

    #[test]
    fn shared_needs_a_later_join_and_world_readable_needs_nothing() {
        let banned_then_unbanned = history(&[(5, Membership::Ban), (8, Membership::Leave)]);
        assert!(!History::Shared.allows(&banned_then_unbanned, StreamPos(3)));
        assert!(History::WorldReadable.allows(&banned_then_unbanned, StreamPos(3)));
        let joined_later = history(&[(5, Membership::Join), (9, Membership::Leave)]);
        assert!(History::Shared.allows(&joined_later, StreamPos(3)));
        assert!(!History::Shared.allows(&joined_later, StreamPos(10)));
        assert!(!History::Joined.allows(&joined_later, StreamPos(3)));
        assert!(History::Joined.allows(&joined_later, StreamPos(7)));
        let invited = history(&[(5, Membership::Invite)]);
        assert!(History::Invited.allows(&invited, StreamPos(6)));
        assert!(!History::Invited.allows(&invited, StreamPos(4)));
    }
}
