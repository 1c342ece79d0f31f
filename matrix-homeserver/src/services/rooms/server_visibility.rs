//! History visibility for other servers: what of a room a server may read over federation
//! (`/event`, `/state`, `/state_ids`, `/event_auth`, `/backfill`, `/get_missing_events`), and
//! the room's server ACL. Every federation read asks this module and nothing else.
//!
//! A server may see an event if one of its users may: the user rules of `visibility.rs`
//! (`History::allows` over each user's membership history, their own member events, and an
//! `m.room.history_visibility` event seen with the value before or after it), folded over
//! the server's users in the room. This is what Synapse's `filter_events_for_server` decides
//! in effect (a server sees `shared` history once one of its users joined, `invited` history
//! while one was invited or joined, `joined` history while one was joined).
//!
//! What a server may not see is, per event:
//! - sent redacted (the room version's redaction, no content) to a server that has a user
//!   joined *now*: it is in the room and needs the DAG's shape to follow it, as Synapse
//!   sends it;
//! - left out for anyone else (a server whose users all left sees nothing after they left).
//!
//! Before any of that, per room: an unknown room is 404; a server the room's
//! `m.room.server_acl` denies is 403; a server none of whose users was ever joined, in a
//! room that is not `world_readable` now, is 403.

use std::sync::Arc;

use matrix_core::{Object, Pdu, ServerAcl};
use matrix_storage::{SnapshotId, StreamPos};
use ruma::OwnedUserId;

use super::Rooms;
use super::visibility::{History, Membership, Memberships};
use crate::error::ApiError;

/// The most users of one server whose membership histories are read for one request (a
/// server with more users in a room than this is judged by the first ones by user id: it
/// may see less, never more).
const MAX_USERS_PER_SERVER: usize = 1_000;

/// How a server gets an event it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerView {
    /// As stored.
    Full,
    /// Redacted per the room version (the server is in the room but may not read this).
    Redacted,
    /// Not at all.
    Hidden,
}

/// A server looking at a room: its users there with their membership histories.
#[derive(Debug, Clone)]
pub(crate) struct ServerLooker {
    users: Vec<(OwnedUserId, Arc<Memberships>)>,
}

impl ServerLooker {
    /// A looker from membership histories (tests, and [`Rooms::server_access`]).
    pub(crate) fn new(users: Vec<(OwnedUserId, Arc<Memberships>)>) -> Self {
        ServerLooker { users }
    }

    /// Whether a user of the server is joined now.
    pub(crate) fn joined_now(&self) -> bool {
        self.users.iter().any(|(_, m)| matches!(m.current(), Some((_, Membership::Join))))
    }

    /// Whether a user of the server was ever joined.
    pub(crate) fn ever_joined(&self) -> bool {
        self.users.iter().any(|(_, m)| m.ever_joined())
    }

    /// Whether `pdu` (at `pos` in the timeline, if it has a position) is visible to the
    /// server, given the history visibility before it and, for an
    /// `m.room.history_visibility` event, after it. Pure: the one decision.
    pub(crate) fn sees(
        &self,
        pdu: &Pdu,
        pos: Option<StreamPos>,
        before: History,
        after: Option<History>,
    ) -> bool {
        if pdu.kind() == "m.room.member"
            && let Some(target) = pdu.state_key()
            && self.users.iter().any(|(user, _)| user.as_str() == target)
        {
            return true;
        }
        // World-readable history needs no member; anything else, one who may see it (an
        // event outside the timeline has no position to judge membership at).
        let allows = |history: History| {
            history == History::WorldReadable
                || pos.is_some_and(|pos| self.users.iter().any(|(_, m)| history.allows(m, pos)))
        };
        allows(before) || after.is_some_and(allows)
    }

    /// [`ServerLooker::sees`], and what follows for the answer.
    pub(crate) fn view(
        &self,
        pdu: &Pdu,
        pos: Option<StreamPos>,
        before: History,
        after: Option<History>,
    ) -> ServerView {
        if self.sees(pdu, pos, before, after) {
            ServerView::Full
        } else if self.joined_now() {
            ServerView::Redacted
        } else {
            ServerView::Hidden
        }
    }
}

/// Whether `user_id` is a user of `server` (`@local:server`).
fn of_server(user_id: &str, server: &str) -> bool {
    user_id.split_once(':').is_some_and(|(_, name)| name == server)
}

impl Rooms {
    /// Whether the room's server ACL (`m.room.server_acl` in its current state) lets
    /// `server` take part: `true` without an ACL, and for an unknown room (the caller
    /// answers 404 for that). Every federation request about a room asks this (reads,
    /// `make_join`, and each PDU and EDU of `/send`).
    pub(crate) async fn server_allowed(
        &self,
        room_id: &str,
        server: &str,
    ) -> Result<bool, ApiError> {
        let Some(current) = self.storage().room(room_id).await?.and_then(|r| r.current_state)
        else {
            return Ok(true);
        };
        self.server_allowed_at(current, server).await
    }

    /// [`Rooms::server_allowed`] in a given state.
    pub(crate) async fn server_allowed_at(
        &self,
        snapshot: SnapshotId,
        server: &str,
    ) -> Result<bool, ApiError> {
        Ok(match self.state_pdu(snapshot, "m.room.server_acl", "").await? {
            Some(acl) => ServerAcl::from_content(acl.content()).allows(server),
            None => true,
        })
    }

    /// What `server` may read of a room at all: 404 for an unknown room, 403 when its ACL
    /// denies the server or when no user of the server was ever joined and the room is not
    /// world-readable now.
    pub(crate) async fn server_access(
        &self,
        room_id: &str,
        server: &str,
    ) -> Result<ServerLooker, ApiError> {
        let info = self.storage().room(room_id).await?.ok_or_else(ApiError::room_not_found)?;
        let current = info.current_state.ok_or_else(ApiError::room_not_found)?;
        if !self.server_allowed_at(current, server).await? {
            return Err(ApiError::forbidden("the room's server ACL denies your server"));
        }
        let mut users = Vec::new();
        let members = self.storage().members(room_id).await?;
        for (user, _) in members.iter().filter(|(user, _)| of_server(user, server)) {
            if users.len() == MAX_USERS_PER_SERVER {
                break;
            }
            let Ok(user) = ruma::UserId::parse(user.as_str()) else { continue };
            let memberships = self.memberships_at(room_id, &user, current).await?;
            users.push((user, memberships));
        }
        let looker = ServerLooker::new(users);
        if !looker.ever_joined() && self.history_of(current).await? != History::WorldReadable {
            return Err(ApiError::forbidden("your server is not in this room"));
        }
        Ok(looker)
    }

    /// How `looker`'s server gets `pdu` (at `pos` in the timeline, if it has one).
    pub(crate) async fn server_view(
        &self,
        looker: &ServerLooker,
        pdu: &Pdu,
        pos: Option<StreamPos>,
    ) -> Result<ServerView, ApiError> {
        let before = match self.state_before_event(pdu).await? {
            Some(before) => self.history_of(before).await?,
            None => History::Shared,
        };
        let after = (pdu.kind() == "m.room.history_visibility" && pdu.state_key() == Some(""))
            .then(|| History::parse(pdu.content().get_str("history_visibility")));
        let view = looker.view(pdu, pos, before, after);
        // An erased user's events go out redacted (see `erase.rs`).
        if view == ServerView::Full && self.is_erased(pdu.sender()).await? {
            return Ok(ServerView::Redacted);
        }
        Ok(view)
    }

    /// `pdu` as `looker`'s server may have it: whole, redacted, or not at all.
    pub(crate) async fn pdu_for_server(
        &self,
        looker: &ServerLooker,
        pdu: &Pdu,
        pos: Option<StreamPos>,
    ) -> Result<Option<Object>, ApiError> {
        Ok(match self.server_view(looker, pdu, pos).await? {
            ServerView::Full => Some(pdu.json().clone()),
            ServerView::Redacted => Some(matrix_core::redaction::redact(pdu.json(), pdu.rules())),
            ServerView::Hidden => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(kind: &str, state_key: Option<&str>) -> Pdu {
        let mut json = Object::new();
        json.insert("type", kind);
        json.insert("sender", "@alice:a.test");
        json.insert("room_id", "!r:a.test");
        json.insert("content", Object::new());
        if let Some(key) = state_key {
            json.insert("state_key", key);
        }
        Pdu::with_event_id(json, "$e".to_owned(), &matrix_core::RoomVersionRules::V10)
    }

    fn looker(users: &[(&str, &[(u64, Membership)])]) -> ServerLooker {
        let users = users
            .iter()
            .map(|(user, changes)| {
                let changes = changes.iter().map(|(p, m)| (StreamPos(*p), *m)).collect();
                let user = ruma::UserId::parse(*user).expect("a user id");
                (user, Arc::new(Memberships::from_changes(changes)))
            })
            .collect();
        ServerLooker::new(users)
    }

    const MESSAGE: (&str, Option<&str>) = ("m.room.message", None);

    fn view(looker: &ServerLooker, pos: u64, before: History) -> ServerView {
        looker.view(&pdu(MESSAGE.0, MESSAGE.1), Some(StreamPos(pos)), before, None)
    }

    #[test]
    fn a_server_whose_user_is_joined_sees_what_that_user_sees() {
        let b = looker(&[("@bob:b.test", &[(10, Membership::Join)])]);
        assert!(b.joined_now() && b.ever_joined());
        assert_eq!(view(&b, 11, History::Joined), ServerView::Full);
        // Before the join: `shared` yes (joined later), `joined` and `invited` redacted.
        assert_eq!(view(&b, 5, History::Shared), ServerView::Full);
        assert_eq!(view(&b, 5, History::Joined), ServerView::Redacted);
        assert_eq!(view(&b, 5, History::Invited), ServerView::Redacted);
        assert_eq!(view(&b, 5, History::WorldReadable), ServerView::Full);
    }

    #[test]
    fn a_server_whose_users_left_sees_nothing_after_they_left() {
        let b = looker(&[
            ("@bob:b.test", &[(10, Membership::Join), (20, Membership::Leave)]),
            ("@bea:b.test", &[(12, Membership::Join), (18, Membership::Ban)]),
        ]);
        assert!(!b.joined_now() && b.ever_joined());
        assert_eq!(view(&b, 15, History::Joined), ServerView::Full);
        assert_eq!(view(&b, 19, History::Joined), ServerView::Full, "bob was still joined");
        assert_eq!(view(&b, 21, History::Shared), ServerView::Hidden);
        assert_eq!(view(&b, 21, History::Joined), ServerView::Hidden);
        assert_eq!(view(&b, 21, History::WorldReadable), ServerView::Full);
        // Before they joined, `shared` history was theirs to see.
        assert_eq!(view(&b, 3, History::Shared), ServerView::Full);
        assert_eq!(view(&b, 3, History::Joined), ServerView::Hidden);
    }

    #[test]
    fn one_joined_user_is_enough_and_invites_count_for_invited_history() {
        let b = looker(&[
            ("@bob:b.test", &[(10, Membership::Invite)]),
            ("@bea:b.test", &[(12, Membership::Join), (14, Membership::Leave)]),
        ]);
        assert!(!b.joined_now());
        assert_eq!(view(&b, 11, History::Invited), ServerView::Full);
        assert_eq!(view(&b, 11, History::Joined), ServerView::Hidden);
        assert_eq!(view(&b, 13, History::Joined), ServerView::Full);
        assert_eq!(view(&b, 9, History::Invited), ServerView::Hidden);
    }

    #[test]
    fn a_server_never_in_the_room_sees_only_world_readable_history_and_its_users_events() {
        let b = looker(&[("@bob:b.test", &[(10, Membership::Ban)])]);
        assert!(!b.ever_joined());
        assert_eq!(view(&b, 11, History::Shared), ServerView::Hidden);
        assert_eq!(view(&b, 11, History::WorldReadable), ServerView::Full);
        let ban = pdu("m.room.member", Some("@bob:b.test"));
        assert_eq!(b.view(&ban, Some(StreamPos(10)), History::Joined, None), ServerView::Full);
        let other = pdu("m.room.member", Some("@carol:c.test"));
        assert_eq!(b.view(&other, Some(StreamPos(10)), History::Joined, None), ServerView::Hidden);
        // Outside the timeline, only world-readable history.
        let message = pdu(MESSAGE.0, MESSAGE.1);
        assert_eq!(b.view(&message, None, History::Shared, None), ServerView::Hidden);
        assert_eq!(b.view(&message, None, History::WorldReadable, None), ServerView::Full);
    }

    #[test]
    fn a_history_visibility_event_is_seen_with_the_value_before_or_after_it() {
        let nobody = looker(&[]);
        let message = pdu(MESSAGE.0, MESSAGE.1);
        let readable = nobody.view(&message, Some(StreamPos(5)), History::WorldReadable, None);
        assert_eq!(readable, ServerView::Full);
        let change = pdu("m.room.history_visibility", Some(""));
        let at = Some(StreamPos(5));
        let opened = nobody.view(&change, at, History::Joined, Some(History::WorldReadable));
        assert_eq!(opened, ServerView::Full);
        let closed = nobody.view(&change, at, History::WorldReadable, Some(History::Joined));
        assert_eq!(closed, ServerView::Full);
        let private = nobody.view(&change, at, History::Shared, Some(History::Joined));
        assert_eq!(private, ServerView::Hidden);
    }

    #[test]
    fn users_are_matched_to_servers_by_the_whole_server_name() {
        assert!(of_server("@bob:b.test", "b.test"));
        assert!(!of_server("@bob:bb.test", "b.test"));
        assert!(!of_server("@bob:b.test.evil", "b.test"));
        assert!(of_server("@bob:b.test:8448", "b.test:8448"));
        assert!(!of_server("@bob:b.test:8448", "b.test"));
    }
}
