//! Cross-signing keys and signatures, key backups and pushers, in memory: their part of a
//! change set (checked first, then applied in the order the other backends follow) and their
//! reads.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::MemoryStore;
use crate::model::backup_version_number;
use crate::{
    Applied, BackupScope, BackupSession, BackupVersion, ChangeSet, CrossSigningKeyKind,
    CrossSigningKeys, CrossSigningStore, ErrorKind, KeyBackupStore, KeySignature, Pusher,
    PusherStore, Result, StorageError,
};

/// `(target user, target key, signer user, signer key id)`.
type SignatureKey = (String, String, String, String);

/// `(user, version, room, session id)`.
type SessionKey = (String, u64, String, String);

#[derive(Debug, Clone)]
struct Version {
    algorithm: String,
    auth_data: Vec<u8>,
    etag: u64,
    deleted: bool,
}

/// What the domains of this module hold.
#[derive(Debug, Default)]
pub(super) struct UserData {
    cross_signing: BTreeMap<(String, CrossSigningKeyKind), Vec<u8>>,
    signatures: BTreeMap<SignatureKey, String>,
    /// `(user, version)`; deleted versions stay, marked.
    versions: BTreeMap<(String, u64), Version>,
    sessions: BTreeMap<SessionKey, Vec<u8>>,
    /// `(user, app_id, pushkey)`.
    pushers: BTreeMap<(String, String, String), Pusher>,
}

fn no_version(user: &str, version: &str) -> StorageError {
    StorageError::new(ErrorKind::MissingReference, format!("backup version {version} of {user}"))
}

impl UserData {
    /// The number of a stored version that is not deleted.
    fn live(&self, user: &str, version: &str) -> Option<u64> {
        let number = backup_version_number(version)?;
        let stored = self.versions.get(&(user.to_owned(), number))?;
        (!stored.deleted).then_some(number)
    }

    /// Checks that the backup versions `changes` writes to are stored and not deleted (as
    /// before the change set: a version it creates has no number the caller could know).
    pub(super) fn validate(&self, changes: &ChangeSet) -> Result<()> {
        let written = changes
            .updated_backup_versions
            .iter()
            .map(|(user, version, _)| (user, version))
            .chain(changes.deleted_backup_sessions.iter().map(|(user, version, _)| (user, version)))
            .chain(changes.backup_sessions.iter().map(|s| (&s.user_id, &s.version)));
        for (user, version) in written {
            if self.live(user, version).is_none() {
                return Err(no_version(user, version));
            }
        }
        Ok(())
    }

    /// Takes this module's part out of `changes`, to apply after the rest.
    pub(super) fn take(changes: &mut ChangeSet) -> ChangeSet {
        use std::mem::take;
        ChangeSet {
            cross_signing_keys: take(&mut changes.cross_signing_keys),
            key_signatures: take(&mut changes.key_signatures),
            new_backup_versions: take(&mut changes.new_backup_versions),
            updated_backup_versions: take(&mut changes.updated_backup_versions),
            deleted_backup_sessions: take(&mut changes.deleted_backup_sessions),
            backup_sessions: take(&mut changes.backup_sessions),
            deleted_backup_versions: take(&mut changes.deleted_backup_versions),
            deleted_pushers: take(&mut changes.deleted_pushers),
            exclusive_pushers: take(&mut changes.exclusive_pushers),
            pushers: take(&mut changes.pushers),
            ..ChangeSet::default()
        }
    }

    /// Applies this module's part of validated changes (taken by [`UserData::take`]), after
    /// the rest of the change set.
    pub(super) fn apply(&mut self, mut changes: ChangeSet, applied: &mut Applied) {
        for (user, kind, key) in changes.cross_signing_keys.drain(..) {
            self.cross_signing.insert((user, kind), key);
        }
        for s in changes.key_signatures.drain(..) {
            self.signatures
                .insert((s.target_user, s.target_key, s.signer_user, s.signer_key_id), s.signature);
        }

        // Backups: new versions, auth data, sessions deleted, sessions written, versions
        // deleted.
        for new in changes.new_backup_versions.drain(..) {
            let last = self
                .versions
                .range((new.user_id.clone(), 0)..=(new.user_id.clone(), u64::MAX))
                .next_back()
                .map_or(0, |((_, n), _)| *n);
            let version = Version {
                algorithm: new.algorithm,
                auth_data: new.auth_data,
                etag: 0,
                deleted: false,
            };
            self.versions.insert((new.user_id, last + 1), version);
            applied.backup_versions.push((last + 1).to_string());
        }
        for (user, version, auth_data) in changes.updated_backup_versions.drain(..) {
            if let Some(n) = self.live(&user, &version)
                && let Some(stored) = self.versions.get_mut(&(user, n))
            {
                stored.auth_data = auth_data;
            }
        }
        let mut touched = BTreeSet::new();
        for (user, version, scope) in changes.deleted_backup_sessions.drain(..) {
            let Some(n) = self.live(&user, &version) else { continue };
            self.sessions.retain(|(u, v, room, session), _| {
                !(u == &user
                    && *v == n
                    && match &scope {
                        BackupScope::All => true,
                        BackupScope::Room(r) => room == r,
                        BackupScope::Session(r, s) => room == r && session == s,
                    })
            });
            touched.insert((user, n));
        }
        for session in changes.backup_sessions.drain(..) {
            let Some(n) = self.live(&session.user_id, &session.version) else { continue };
            let key = (session.user_id.clone(), n, session.room_id, session.session_id);
            self.sessions.insert(key, session.data);
            touched.insert((session.user_id, n));
        }
        for key in touched {
            if let Some(version) = self.versions.get_mut(&key) {
                version.etag += 1;
            }
        }
        for (user, version) in changes.deleted_backup_versions.drain(..) {
            let Some(n) = self.live(&user, &version) else { continue };
            self.sessions.retain(|(u, v, _, _), _| !(u == &user && *v == n));
            if let Some(stored) = self.versions.get_mut(&(user, n)) {
                stored.deleted = true;
            }
        }

        // Pushers: deleted, made exclusive, set.
        for (user, app_id, pushkey) in changes.deleted_pushers.drain(..) {
            self.pushers.remove(&(user, app_id, pushkey));
        }
        for (user, app_id, pushkey) in changes.exclusive_pushers.drain(..) {
            self.pushers.retain(|(u, a, p), _| u == &user || a != &app_id || p != &pushkey);
        }
        for pusher in changes.pushers.drain(..) {
            let key = (pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone());
            self.pushers.insert(key, pusher);
        }
    }

    /// Deletes the signatures on a deleted device's keys.
    pub(super) fn delete_device(&mut self, user: &str, device: &str) {
        self.signatures.retain(|(u, target, _, _), _| u != user || target != device);
    }

    fn version(&self, user: &str, number: u64) -> Option<BackupVersion> {
        let stored = self.versions.get(&(user.to_owned(), number))?;
        let count = self.sessions_of(user, number).count() as u64;
        Some(BackupVersion {
            user_id: user.to_owned(),
            version: number.to_string(),
            algorithm: stored.algorithm.clone(),
            auth_data: stored.auth_data.clone(),
            etag: stored.etag,
            count,
            deleted: stored.deleted,
        })
    }

    fn sessions_of(
        &self,
        user: &str,
        number: u64,
    ) -> impl Iterator<Item = (&SessionKey, &Vec<u8>)> + '_ {
        let from = (user.to_owned(), number, String::new(), String::new());
        let user = user.to_owned();
        self.sessions.range(from..).take_while(move |((u, v, _, _), _)| *u == user && *v == number)
    }
}

#[async_trait]
impl CrossSigningStore for MemoryStore {
    async fn cross_signing_keys(&self, user_id: &str) -> Result<CrossSigningKeys> {
        let inner = self.lock()?;
        let mut keys = CrossSigningKeys::default();
        for kind in CrossSigningKeyKind::ALL {
            let key = inner.user_data.cross_signing.get(&(user_id.to_owned(), kind)).cloned();
            keys.set(kind, key);
        }
        Ok(keys)
    }

    async fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignature>> {
        let inner = self.lock()?;
        let from = (target_user.to_owned(), String::new(), String::new(), String::new());
        Ok(inner
            .user_data
            .signatures
            .range(from..)
            .take_while(|((user, _, _, _), _)| user == target_user)
            .map(|((target_user, target_key, signer_user, signer_key_id), signature)| {
                KeySignature {
                    target_user: target_user.clone(),
                    target_key: target_key.clone(),
                    signer_user: signer_user.clone(),
                    signer_key_id: signer_key_id.clone(),
                    signature: signature.clone(),
                }
            })
            .collect())
    }
}

#[async_trait]
impl KeyBackupStore for MemoryStore {
    async fn backup_version(&self, user_id: &str, version: &str) -> Result<Option<BackupVersion>> {
        let Some(number) = backup_version_number(version) else { return Ok(None) };
        Ok(self.lock()?.user_data.version(user_id, number))
    }

    async fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersion>> {
        let inner = self.lock()?;
        let data = &inner.user_data;
        let range = (user_id.to_owned(), 0)..=(user_id.to_owned(), u64::MAX);
        let latest = data.versions.range(range).rev().find(|(_, v)| !v.deleted);
        Ok(latest.and_then(|((_, n), _)| data.version(user_id, *n)))
    }

    async fn backup_sessions(
        &self,
        user_id: &str,
        version: &str,
        room_id: Option<&str>,
    ) -> Result<Vec<BackupSession>> {
        let Some(number) = backup_version_number(version) else { return Ok(Vec::new()) };
        let inner = self.lock()?;
        Ok(inner
            .user_data
            .sessions_of(user_id, number)
            .filter(|((_, _, room, _), _)| room_id.is_none_or(|r| r == room))
            .map(|((_, _, room, session), data)| BackupSession {
                room_id: room.clone(),
                session_id: session.clone(),
                data: data.clone(),
            })
            .collect())
    }

    async fn backup_session(
        &self,
        user_id: &str,
        version: &str,
        room_id: &str,
        session_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let Some(number) = backup_version_number(version) else { return Ok(None) };
        let key = (user_id.to_owned(), number, room_id.to_owned(), session_id.to_owned());
        Ok(self.lock()?.user_data.sessions.get(&key).cloned())
    }
}

#[async_trait]
impl PusherStore for MemoryStore {
    async fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>> {
        let inner = self.lock()?;
        let from = (user_id.to_owned(), String::new(), String::new());
        Ok(inner
            .user_data
            .pushers
            .range(from..)
            .take_while(|((user, _, _), _)| user == user_id)
            .map(|(_, pusher)| pusher.clone())
            .collect())
    }

    async fn all_pushers(&self) -> Result<Vec<Pusher>> {
        Ok(self.lock()?.user_data.pushers.values().cloned().collect())
    }
}
