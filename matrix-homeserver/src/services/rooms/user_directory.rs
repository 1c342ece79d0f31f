//! The user directory (`/user_directory/search`): the users a user may find, and the index it
//! searches, kept up as states change.
//!
//! The index ([`matrix_storage::UserDirectoryStore`]) holds an entry per local user (written
//! at registration and by each profile change, deleted at deactivation) and per user of
//! another server seen joining a room (the name and avatar of their latest join), and the
//! rooms whose join rule is `public`. A search reads the entries matching the term and keeps
//! those the searcher may find: users sharing a joined room with them and users in public
//! rooms (with `search_all_local_users`, every local user too). What was stored before the
//! index existed is indexed once at start ([`index_stored`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use matrix_storage::{ChangeSet, DirectoryUser, EventStatus, Storage, StreamPos};
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

/// The account-data owner and type marking what was stored before the index as indexed.
const INDEXED_OWNER: &str = "!user_directory";
const INDEXED_KIND: &str = "indexed";

/// Fills the index with what was stored before it existed, once (a mark in storage says it
/// was done; a crash half-way fills again, writing the same entries): every room met in the
/// timeline, by its current state: whether its join rule is `public`, and its joined members
/// (our users, not deactivated, with their global profile; other servers' users with the name
/// and avatar of their member event). Our users who never joined a room enter the index at
/// their next profile change. Answers how many users it wrote.
pub(crate) async fn index_stored(
    storage: &Arc<dyn Storage>,
    server_name: &str,
) -> Result<u64, ApiError> {
    if storage.account_data(INDEXED_OWNER, None, INDEXED_KIND).await?.is_some() {
        return Ok(0);
    }
    let head = storage.stream_position().await?;
    let mut rooms = BTreeSet::new();
    let mut after = StreamPos(0);
    loop {
        let items = storage.stream_range(after, head, 1_000).await?;
        let Some(last) = items.last() else { break };
        after = last.pos;
        rooms.extend(items.into_iter().map(|item| item.room_id));
    }
    let mut seen = HashSet::new();
    let mut written = 0;
    for room in rooms {
        let Some(snapshot) = storage.room(&room).await?.and_then(|info| info.current_state) else {
            continue;
        };
        let content = |id: Option<String>| async move {
            let Some(id) = id else { return Ok::<_, ApiError>(None) };
            let event = storage.events(&[id.as_str()]).await?.pop();
            Ok(event
                .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e.json).ok())
                .map(|json| json["content"].clone()))
        };
        let mut changes = ChangeSet::new();
        let rule = content(storage.state_get(snapshot, "m.room.join_rules", "").await?).await?;
        let public = rule.is_some_and(|c| c["join_rule"].as_str() == Some("public"));
        changes.public_join_rules.push((room.clone(), public));
        for (user, membership) in storage.members(&room).await? {
            if membership != "join" || !seen.insert(user.clone()) {
                continue;
            }
            let ours = UserId::parse(&user).is_ok_and(|u| u.server_name().as_str() == server_name);
            let entry = if ours {
                if storage.user(&user).await?.is_none_or(|account| account.deactivated) {
                    continue;
                }
                let profile = storage.profile(&user).await?.unwrap_or_default();
                DirectoryUser {
                    user_id: user,
                    displayname: profile.displayname,
                    avatar_url: profile.avatar_url,
                }
            } else {
                let member =
                    content(storage.state_get(snapshot, "m.room.member", &user).await?).await?;
                let text =
                    |key: &str| member.as_ref().and_then(|c| c[key].as_str()).map(str::to_owned);
                DirectoryUser {
                    displayname: text("displayname"),
                    avatar_url: text("avatar_url"),
                    user_id: user,
                }
            };
            changes.directory_users.push(entry);
        }
        written += changes.directory_users.len() as u64;
        storage.apply(changes).await?;
    }
    let mut changes = ChangeSet::new();
    changes.account_data.push((
        INDEXED_OWNER.to_owned(),
        None,
        INDEXED_KIND.to_owned(),
        b"{}".to_vec(),
    ));
    storage.apply(changes).await?;
    Ok(written)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use matrix_storage::{
        ChangeSet, EventStatus, NewEvent, NewSnapshot, Profile, RoomChanges, SnapshotRef, Storage,
        User,
    };

    use super::index_stored;

    fn state_event(id: &str, json: &str) -> NewEvent {
        NewEvent {
            event_id: id.to_owned(),
            room_id: "!r".to_owned(),
            json: Arc::from(json.as_bytes()),
            status: EventStatus::Accepted,
            auth_events: Vec::new(),
            prev_events: Vec::new(),
            in_timeline: true,
            state_after: None,
        }
    }

    /// A store written before the index: its public room and joined members (ours with
    /// their profile, another server's with their member event's name) are indexed once;
    /// a deactivated user and a user who left are not.
    #[tokio::test]
    async fn what_was_stored_before_the_index_is_indexed_once() {
        let storage: Arc<dyn Storage> = Arc::new(matrix_storage::memory::MemoryStore::new());
        let mut changes = ChangeSet::new();
        for (user, deactivated) in [("@a:here", false), ("@gone:here", true)] {
            changes.new_users.push(User {
                user_id: user.to_owned(),
                password_hash: None,
                admin: false,
                deactivated,
            });
        }
        changes.profiles.push((
            "@a:here".to_owned(),
            Profile { displayname: Some("Alice".to_owned()), ..Profile::default() },
        ));
        let member = |user: &str, membership: &str, name: &str| {
            format!(
                r#"{{"type":"m.room.member","state_key":"{user}","sender":"{user}","content":{{"membership":"{membership}","displayname":"{name}"}}}}"#
            )
        };
        changes.events = vec![
            state_event(
                "$rules",
                r#"{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"public"}}"#,
            ),
            state_event("$a", &member("@a:here", "join", "stale")),
            state_event("$gone", &member("@gone:here", "join", "x")),
            state_event("$b", &member("@b:there", "join", "Bob")),
            state_event("$c", &member("@c:there", "leave", "Carol")),
        ];
        let key = |kind: &str, state_key: &str, id: &str| {
            (kind.to_owned(), state_key.to_owned(), Some(id.to_owned()))
        };
        changes.snapshot = Some(NewSnapshot {
            parent: None,
            changes: vec![
                key("m.room.join_rules", "", "$rules"),
                key("m.room.member", "@a:here", "$a"),
                key("m.room.member", "@gone:here", "$gone"),
                key("m.room.member", "@b:there", "$b"),
                key("m.room.member", "@c:there", "$c"),
            ],
        });
        changes.rooms.push(RoomChanges {
            room_id: "!r".to_owned(),
            create_with_version: Some("12".to_owned()),
            current_state: Some(SnapshotRef::New),
            memberships: vec![
                ("@a:here".to_owned(), "join".to_owned()),
                ("@gone:here".to_owned(), "join".to_owned()),
                ("@b:there".to_owned(), "join".to_owned()),
                ("@c:there".to_owned(), "leave".to_owned()),
            ],
            ..RoomChanges::default()
        });
        storage.apply(changes).await.expect("applies");
        assert!(storage.search_user_directory("", 10).await.expect("reads").is_empty());

        assert_eq!(index_stored(&storage, "here").await.expect("indexes"), 2);
        let found = storage.search_user_directory("", 10).await.expect("reads");
        let names: Vec<(&str, Option<&str>)> =
            found.iter().map(|u| (u.user_id.as_str(), u.displayname.as_deref())).collect();
        assert_eq!(names, [("@a:here", Some("Alice")), ("@b:there", Some("Bob"))]);
        assert_eq!(storage.public_join_rooms().await.expect("reads"), ["!r"]);
        assert_eq!(index_stored(&storage, "here").await.expect("runs again"), 0, "once");
    }
}
