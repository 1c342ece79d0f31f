//! Server-side key backups (`/room_keys/*`): a user's backup versions and the room keys
//! (Megolm sessions, encrypted by the client) backed up in each, all in storage.
//!
//! Sessions are written only to the current version (the highest not deleted); another
//! version answers `M_WRONG_ROOM_KEYS_VERSION`. A session already held is replaced only by a
//! better one, as the spec says: a verified one over an unverified one, then the lower
//! `first_message_index`, then the lower `forwarded_count`. Writes of sessions are
//! serialised in this process (read, compare, write); a version holds at most
//! `max_backup_sessions_per_version` sessions, and one request at most
//! [`MAX_SESSIONS_PER_REQUEST`].

use std::collections::BTreeMap;
use std::sync::Arc;

use matrix_storage::Storage;
use matrix_storage::{BackupScope, BackupVersion, ChangeSet, NewBackupSession, NewBackupVersion};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The most sessions one upload may carry (clients send a few hundred at a time).
pub(crate) const MAX_SESSIONS_PER_REQUEST: usize = 1000;

/// The longest algorithm name, room id or session id accepted, in bytes.
const MAX_ID_BYTES: usize = 255;

/// Sessions to back up: room id -> session id -> `KeyBackupData`.
pub(crate) type BackupRooms = BTreeMap<String, BTreeMap<String, Value>>;

/// What decides whether a backed-up session replaces another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rank {
    is_verified: bool,
    first_message_index: u64,
    forwarded_count: u64,
}

impl Rank {
    /// The rank of a `KeyBackupData`, if it has the fields the spec requires (and
    /// `session_data` is an object).
    fn of(data: &Value) -> Option<Rank> {
        data["session_data"].as_object()?;
        Some(Rank {
            is_verified: data["is_verified"].as_bool()?,
            first_message_index: data["first_message_index"].as_u64()?,
            forwarded_count: data["forwarded_count"].as_u64()?,
        })
    }

    /// Whether a session of this rank replaces one of rank `held` (the spec's order).
    fn replaces(self, held: Rank) -> bool {
        if self.is_verified != held.is_verified {
            return self.is_verified;
        }
        if self.first_message_index != held.first_message_index {
            return self.first_message_index < held.first_message_index;
        }
        self.forwarded_count < held.forwarded_count
    }
}

/// A version as `GET /room_keys/version` answers it.
fn version_json(version: &BackupVersion) -> Result<Value, ApiError> {
    let auth_data: Value = serde_json::from_slice(&version.auth_data).map_err(|_| {
        ApiError::unknown(format!(
            "the stored auth_data of backup {} does not parse",
            version.version
        ))
    })?;
    Ok(json!({
        "algorithm": version.algorithm,
        "auth_data": auth_data,
        "count": version.count,
        "etag": version.etag.to_string(),
        "version": version.version,
    }))
}

/// What a write of sessions answers: the version's `etag` and `count`.
fn counts_json(version: &BackupVersion) -> Value {
    json!({"etag": version.etag.to_string(), "count": version.count})
}

fn stored_data(room: &str, session: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| {
        ApiError::unknown(format!(
            "the stored backup of session {session} in {room} does not parse"
        ))
    })
}

fn check_algorithm(algorithm: &str, auth_data: &Value) -> Result<(), ApiError> {
    if algorithm.is_empty() || algorithm.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid_param("algorithm must be a name of at most 255 bytes"));
    }
    if !auth_data.is_object() {
        return Err(ApiError::bad_json("auth_data must be an object"));
    }
    Ok(())
}

/// The backups of every user.
pub(crate) struct KeyBackups {
    storage: Arc<dyn Storage>,
    max_sessions: u64,
    /// Serialises writes of sessions (each reads what is held, then writes).
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyBackups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBackups")
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

impl KeyBackups {
    /// The backups in `storage`, each version holding at most `max_sessions` sessions.
    pub(crate) fn new(storage: Arc<dyn Storage>, max_sessions: usize) -> Self {
        let max_sessions = u64::try_from(max_sessions).unwrap_or(u64::MAX);
        KeyBackups { storage, max_sessions, writes: tokio::sync::Mutex::new(()) }
    }

    /// A version that exists and is not deleted; 404 `M_NOT_FOUND` otherwise.
    async fn existing(&self, user: &str, version: &str) -> Result<BackupVersion, ApiError> {
        match self.storage.backup_version(user, version).await? {
            Some(found) if !found.deleted => Ok(found),
            _ => Err(ApiError::not_found(format!("no backup version {version:?}"))),
        }
    }

    /// Creates a version, which becomes the current one; answers its name.
    pub(crate) async fn create_version(
        &self,
        user: &str,
        algorithm: String,
        auth_data: &Value,
    ) -> Result<String, ApiError> {
        check_algorithm(&algorithm, auth_data)?;
        let mut changes = ChangeSet::new();
        changes.new_backup_versions.push(NewBackupVersion {
            user_id: user.to_owned(),
            algorithm,
            auth_data: serde_json::to_vec(auth_data).unwrap_or_default(),
        });
        let applied = self.storage.apply(changes).await?;
        applied
            .backup_versions
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::unknown("the storage allocated no backup version"))
    }

    /// The current version (`None`) or the one named, with its `count` and `etag`.
    pub(crate) async fn version(
        &self,
        user: &str,
        version: Option<&str>,
    ) -> Result<Value, ApiError> {
        let found = match version {
            Some(version) => self.existing(user, version).await?,
            None => self
                .storage
                .latest_backup_version(user)
                .await?
                .ok_or_else(|| ApiError::not_found("no current backup version"))?,
        };
        version_json(&found)
    }

    /// Replaces a version's `auth_data`; its algorithm (and the `version` of the body, when
    /// given) must be the version's.
    pub(crate) async fn update_version(
        &self,
        user: &str,
        version: &str,
        algorithm: &str,
        auth_data: &Value,
        body_version: Option<&str>,
    ) -> Result<(), ApiError> {
        check_algorithm(algorithm, auth_data)?;
        if body_version.is_some_and(|given| given != version) {
            return Err(ApiError::invalid_param("the version in the body is not the path's"));
        }
        let found = self.existing(user, version).await?;
        if found.algorithm != algorithm {
            return Err(ApiError::invalid_param("the algorithm is not the version's"));
        }
        let mut changes = ChangeSet::new();
        changes.updated_backup_versions.push((
            user.to_owned(),
            version.to_owned(),
            serde_json::to_vec(auth_data).unwrap_or_default(),
        ));
        self.storage.apply(changes).await?;
        Ok(())
    }

    /// Deletes a version and its sessions; deleting a deleted version succeeds, one that
    /// never existed is 404.
    pub(crate) async fn delete_version(&self, user: &str, version: &str) -> Result<(), ApiError> {
        if self.storage.backup_version(user, version).await?.is_none() {
            return Err(ApiError::not_found(format!("no backup version {version:?}")));
        }
        let _writes = self.writes.lock().await;
        let mut changes = ChangeSet::new();
        changes.deleted_backup_versions.push((user.to_owned(), version.to_owned()));
        self.storage.apply(changes).await?;
        Ok(())
    }

    /// Backs up sessions into the current version, each replacing a held one only when it
    /// is better; answers the version's `etag` and `count`.
    pub(crate) async fn put_sessions(
        &self,
        user: &str,
        version: &str,
        rooms: BackupRooms,
    ) -> Result<Value, ApiError> {
        let given: usize = rooms.values().map(BTreeMap::len).sum();
        if given > MAX_SESSIONS_PER_REQUEST {
            return Err(ApiError::list_too_long("the sessions", MAX_SESSIONS_PER_REQUEST));
        }
        let mut ranked = Vec::with_capacity(given);
        for (room, sessions) in rooms {
            if room.len() > MAX_ID_BYTES || sessions.keys().any(|s| s.len() > MAX_ID_BYTES) {
                return Err(ApiError::invalid_param("a room or session id is too long"));
            }
            for (session, data) in sessions {
                let rank = Rank::of(&data).ok_or_else(|| {
                    ApiError::bad_json(format!(
                        "the key of session {session} needs first_message_index, \
                         forwarded_count, is_verified and session_data"
                    ))
                })?;
                ranked.push((room.clone(), session, data, rank));
            }
        }
        let _writes = self.writes.lock().await;
        let current = self
            .storage
            .latest_backup_version(user)
            .await?
            .ok_or_else(|| ApiError::not_found("no current backup version"))?;
        if current.version != version {
            return Err(ApiError::wrong_room_keys_version(&current.version));
        }
        let mut changes = ChangeSet::new();
        let mut added = 0u64;
        for (room, session, data, rank) in ranked {
            match self.storage.backup_session(user, version, &room, &session).await? {
                Some(held) => {
                    let held = Rank::of(&stored_data(&room, &session, &held)?);
                    if held.is_some_and(|held| !rank.replaces(held)) {
                        continue;
                    }
                }
                None => added += 1,
            }
            changes.backup_sessions.push(NewBackupSession {
                user_id: user.to_owned(),
                version: version.to_owned(),
                room_id: room,
                session_id: session,
                data: serde_json::to_vec(&data).unwrap_or_default(),
            });
        }
        if current.count.saturating_add(added) > self.max_sessions {
            return Err(ApiError::limit_exceeded_with(
                0,
                format!("a backup version may hold at most {} sessions", self.max_sessions),
            ));
        }
        if changes.backup_sessions.is_empty() {
            return Ok(counts_json(&current));
        }
        self.storage.apply(changes).await?;
        Ok(counts_json(&self.existing(user, version).await?))
    }

    /// The sessions of a version: all (`{"rooms": ...}`), of a room (`{"sessions": ...}`),
    /// or one (its `KeyBackupData`, 404 when not held).
    pub(crate) async fn sessions(
        &self,
        user: &str,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.existing(user, version).await?;
        if let (Some(room), Some(session)) = (room, session) {
            let held = self.storage.backup_session(user, version, room, session).await?;
            let held = held.ok_or_else(|| ApiError::not_found("no such session in the backup"))?;
            return stored_data(room, session, &held);
        }
        let mut rooms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for held in self.storage.backup_sessions(user, version, room).await? {
            let data = stored_data(&held.room_id, &held.session_id, &held.data)?;
            rooms.entry(held.room_id).or_default().insert(held.session_id, data);
        }
        match room {
            Some(room) => Ok(json!({"sessions": rooms.remove(room).unwrap_or_default()})),
            None => {
                let rooms: Map<String, Value> = rooms
                    .into_iter()
                    .map(|(room, sessions)| (room, json!({"sessions": sessions})))
                    .collect();
                Ok(json!({"rooms": rooms}))
            }
        }
    }

    /// Deletes sessions of a version (all, a room's, or one); answers its `etag` and `count`.
    pub(crate) async fn delete_sessions(
        &self,
        user: &str,
        version: &str,
        scope: BackupScope,
    ) -> Result<Value, ApiError> {
        let _writes = self.writes.lock().await;
        self.existing(user, version).await?;
        let mut changes = ChangeSet::new();
        changes.deleted_backup_sessions.push((user.to_owned(), version.to_owned(), scope));
        self.storage.apply(changes).await?;
        Ok(counts_json(&self.existing(user, version).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::Rank;

    fn rank(is_verified: bool, first_message_index: u64, forwarded_count: u64) -> Rank {
        Rank { is_verified, first_message_index, forwarded_count }
    }

    #[test]
    fn the_spec_order_decides_replacement() {
        // Verified beats unverified whatever the indexes.
        assert!(rank(true, 9, 9).replaces(rank(false, 0, 0)));
        assert!(!rank(false, 0, 0).replaces(rank(true, 9, 9)));
        // Then the lower first message index, whatever the forward counts.
        assert!(rank(false, 1, 9).replaces(rank(false, 2, 0)));
        assert!(!rank(true, 3, 0).replaces(rank(true, 2, 9)));
        // Then the lower forward count; an equal one does not replace.
        assert!(rank(true, 2, 0).replaces(rank(true, 2, 1)));
        assert!(!rank(true, 2, 1).replaces(rank(true, 2, 1)));
    }

    #[test]
    fn a_key_without_the_required_fields_has_no_rank() {
        let full = serde_json::json!({"first_message_index": 1, "forwarded_count": 0,
                                      "is_verified": false, "session_data": {}});
        assert_eq!(
            Rank::of(&full),
            Some(Rank { is_verified: false, first_message_index: 1, forwarded_count: 0 })
        );
        for field in ["first_message_index", "forwarded_count", "is_verified", "session_data"] {
            let mut partial = full.clone();
            partial.as_object_mut().map(|o| o.remove(field));
            assert_eq!(Rank::of(&partial), None, "{field}");
        }
        let mut negative = full;
        negative["first_message_index"] = serde_json::json!(-1);
        assert_eq!(Rank::of(&negative), None);
    }
}
