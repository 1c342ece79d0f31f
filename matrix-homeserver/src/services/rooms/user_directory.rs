//! The user directory (`/user_directory/search`): the users a user may find, and the index it
//! searches, kept up as states change.
//!
//! The index ([`matrix_storage::UserDirectoryStore`]) holds an entry per local user (written
//! at registration and by each profile change, deleted at deactivation) and per user of
//! another server seen joining a room (the name and avatar of their latest join), and the
//! rooms whose join rule is `public`. A search reads the entries matching the term and keeps
//! those the searcher may find: users sharing a joined room with them and users in public
//! rooms (with `search_all_local_users`, every local user too).

use std::collections::{BTreeMap, HashSet};

use matrix_storage::{ChangeSet, DirectoryUser, EventStatus};
use ruma::UserId;

use super::Rooms;
use crate::error::ApiError;

/// At most this many matching entries are read for one search (the answer is `limited`
/// past it): the search's cost is bounded whatever the term.
pub(crate) const MAX_SCANNED: usize = 20_000;

/// The directory changes of a change set's new state: rooms whose join rule is now (not)
/// public, and the name and avatar of users of other servers joining (local users' entries
/// follow their global profile instead). Reads the state changes the change set's snapshot
/// names and the events the change set stores.
pub(crate) fn index_state(changes: &mut ChangeSet, server_name: &str) {
    let Some(snapshot) = &changes.snapshot else { return };
    let wanted: HashSet<&str> = snapshot
        .changes
        .iter()
        .filter(|(kind, _, _)| kind == "m.room.join_rules" || kind == "m.room.member")
        .filter_map(|(_, _, id)| id.as_deref())
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut rooms = BTreeMap::new();
    let mut users = BTreeMap::new();
    for event in &changes.events {
        if !wanted.contains(event.event_id.as_str())
            || matches!(event.status, EventStatus::Rejected | EventStatus::SoftFailed)
        {
            continue;
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&event.json) else { continue };
        let content = &json["content"];
        match (json["type"].as_str(), json["state_key"].as_str()) {
            (Some("m.room.join_rules"), Some("")) => {
                let public = content["join_rule"].as_str() == Some("public");
                rooms.insert(event.room_id.clone(), public);
            }
            (Some("m.room.member"), Some(user))
                if content["membership"].as_str() == Some("join")
                    && UserId::parse(user)
                        .is_ok_and(|u| u.server_name().as_str() != server_name) =>
            {
                let text = |key: &str| content[key].as_str().map(str::to_owned);
                users.insert(
                    user.to_owned(),
                    DirectoryUser {
                        user_id: user.to_owned(),
                        displayname: text("displayname"),
                        avatar_url: text("avatar_url"),
                    },
                );
            }
            _ => {}
        }
    }
    changes.public_join_rules.extend(rooms);
    changes.directory_users.extend(users.into_values());
}

impl Rooms {
    /// The users `searcher` may find whose id or display name contains `term` (ignoring
    /// case), sorted by user id, at most `limit`; and whether there were more.
    pub(crate) async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
        search_all_local_users: bool,
    ) -> Result<(Vec<DirectoryUser>, bool), ApiError> {
        let term = term.trim().to_lowercase();
        let storage = self.storage();
        let mut visible: HashSet<String> = HashSet::new();
        let mut rooms: Vec<String> = storage
            .rooms_of_user(searcher.as_str())
            .await?
            .into_iter()
            .filter(|(_, membership)| membership == "join")
            .map(|(room, _)| room)
            .collect();
        rooms.extend(storage.public_join_rooms().await?);
        rooms.sort_unstable();
        rooms.dedup();
        for room in rooms {
            for (user, membership) in storage.members(&room).await? {
                if membership == "join" {
                    visible.insert(user);
                }
            }
        }
        let ours = |user: &str| {
            UserId::parse(user).is_ok_and(|u| u.server_name() == self.server_name().as_str())
        };
        let matches = storage.search_user_directory(&term, MAX_SCANNED).await?;
        let scanned_all = matches.len() < MAX_SCANNED;
        let mut found: Vec<DirectoryUser> = matches
            .into_iter()
            .filter(|u| {
                visible.contains(&u.user_id) || (search_all_local_users && ours(&u.user_id))
            })
            .take(limit.saturating_add(1))
            .collect();
        let limited = found.len() > limit || !scanned_all;
        found.truncate(limit);
        Ok((found, limited))
    }
}
