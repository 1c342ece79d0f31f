//! Whose device lists a user hears about: only users who share a joined room with them (and
//! their own), so that key changes do not leak to the whole server. Read from the membership
//! tables, which are indexed by user and by room.

use std::collections::{BTreeSet, HashSet};

use matrix_storage::StreamPos;

use super::Ephemeral;
use crate::error::ApiError;

/// Past this many changed users, the users sharing a room with the syncing user are read once
/// (one read per joined room) instead of one read per changed user.
const CHECK_EACH_UP_TO: usize = 32;

impl Ephemeral {
    /// The rooms `user` has joined.
    async fn joined_rooms(&self, user: &str) -> Result<HashSet<String>, ApiError> {
        let rooms = self.storage.rooms_of_user(user).await?;
        Ok(rooms.into_iter().filter(|(_, m)| m == "join").map(|(r, _)| r).collect())
    }

    /// `user` and every user who shares a joined room with them.
    pub(crate) async fn sharing(&self, user: &str) -> Result<BTreeSet<String>, ApiError> {
        let mut users = BTreeSet::from([user.to_owned()]);
        for room in self.joined_rooms(user).await? {
            for (member, membership) in self.storage.members(&room).await? {
                if membership == "join" {
                    users.insert(member);
                }
            }
        }
        Ok(users)
    }

    /// Wakes `user` and the users sharing a room with them (their device list changed).
    pub(crate) async fn wake_sharing(&self, user: &str) {
        self.wake_appservices();
        match self.sharing(user).await {
            Ok(users) => self.wakeups.wake_all_of(users.iter().map(String::as_str)),
            Err(error) => {
                tracing::warn!("could not read whom {user}'s key change concerns: {error}");
                self.wakeups.wake_everybody();
            }
        }
    }

    /// Notes that a remote user's device list changed (their server said so, and they share
    /// a room with one of ours): in the device-list stream, so that the syncs of the users
    /// sharing a room with them list them in `device_lists.changed`; those are woken.
    pub(crate) async fn remote_device_list_changed(&self, user: &str) -> Result<(), ApiError> {
        let mut changes = matrix_storage::ChangeSet::new();
        changes.device_list_changes.push(user.to_owned());
        self.storage.apply(changes).await?;
        self.wake_sharing(user).await;
        Ok(())
    }

    /// `device_lists.left` of a sync from `since` up to `upto`: users who no longer
    /// share a joined room with `user`, found from the departures in between (someone left
    /// a room of the user's, or the user left a room: its members). Departures older than
    /// what is remembered are not reported (the client then gets `changed` in full).
    pub(crate) async fn device_lists_left(
        &self,
        user: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<String>, ApiError> {
        let departures: Vec<(String, String)> = {
            let inner = self.lock();
            inner
                .departures
                .iter()
                .filter(|(pos, ..)| *pos > since.0 && *pos <= upto.0)
                .map(|(_, room, who)| (room.clone(), who.clone()))
                .collect()
        };
        if departures.is_empty() {
            return Ok(Vec::new());
        }
        let mine = self.joined_rooms(user).await?;
        let mut candidates = BTreeSet::new();
        for (room, who) in departures {
            if who == user {
                for (member, membership) in self.storage.members(&room).await? {
                    if membership == "join" {
                        candidates.insert(member);
                    }
                }
            } else if mine.contains(&room) {
                candidates.insert(who);
            }
        }
        candidates.remove(user);
        let mut left = Vec::new();
        for other in candidates {
            let theirs = self.storage.rooms_of_user(&other).await?;
            if !theirs.iter().any(|(room, m)| m == "join" && mine.contains(room)) {
                left.push(other);
            }
        }
        Ok(left)
    }

    /// `device_lists.changed` of a sync from `since` up to `upto`: the users among `user` and
    /// those sharing a room with them whose device list changed in between (the stored
    /// device-list stream), and those who came to share a room with `user` in between
    /// ([`Ephemeral::newly_sharing`]).
    pub(crate) async fn device_lists_changed(
        &self,
        user: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<String>, ApiError> {
        let mut out = self.newly_sharing(user, since, upto).await?;
        let changed: BTreeSet<String> =
            self.storage.device_list_changes(since, upto).await?.into_iter().collect();
        out.extend(self.sharing_among(user, changed).await?);
        Ok(out.into_iter().collect())
    }

    /// Those of `candidates` who are `user` or share a joined room with them, sorted.
    pub(crate) async fn sharing_among(
        &self,
        user: &str,
        candidates: BTreeSet<String>,
    ) -> Result<Vec<String>, ApiError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        if candidates.len() > CHECK_EACH_UP_TO {
            let sharing = self.sharing(user).await?;
            return Ok(candidates.intersection(&sharing).cloned().collect());
        }
        let mine = self.joined_rooms(user).await?;
        let mut out = Vec::new();
        for other in candidates {
            let shares = other == user
                || self
                    .storage
                    .rooms_of_user(&other)
                    .await?
                    .iter()
                    .any(|(room, m)| m == "join" && mine.contains(room));
            if shares {
                out.push(other);
            }
        }
        Ok(out)
    }

    /// The users who came to share a joined room with `user` from `since` up to `upto`, whose
    /// keys its client may never have asked for (the spec's "or who now share an encrypted
    /// room with the client"): who joined one of the user's rooms, and the members of a room
    /// the user joined, if they are joined now. Any room counts, encrypted or not, and a
    /// member who was there before counts again, as does a profile change (a join again):
    /// more than the spec asks, which costs the client a key query, never a key it lacks.
    /// For a token older than the arrivals remembered (or than this process), every user
    /// sharing a room with `user`.
    async fn newly_sharing(
        &self,
        user: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<BTreeSet<String>, ApiError> {
        let (arrivals, remembered) = {
            let inner = self.lock();
            let arrivals: Vec<(String, String)> = inner
                .arrivals
                .iter()
                .filter(|(pos, ..)| *pos > since.0 && *pos <= upto.0)
                .map(|(_, room, who)| (room.clone(), who.clone()))
                .collect();
            (arrivals, since.0 >= inner.arrivals_after)
        };
        let mut out = BTreeSet::new();
        if !remembered {
            out = self.sharing(user).await?;
        } else if !arrivals.is_empty() {
            let mine = self.joined_rooms(user).await?;
            for (room, who) in arrivals {
                if !mine.contains(&room) {
                    continue;
                }
                if who == user {
                    let members = self.storage.members(&room).await?;
                    out.extend(members.into_iter().filter(|(_, m)| m == "join").map(|(u, _)| u));
                } else if self.storage.membership(&room, &who).await?.as_deref() == Some("join") {
                    out.insert(who);
                }
            }
        }
        out.remove(user);
        Ok(out)
    }
}
