//! Cross-signing keys and signatures, key backups and pushers: their part of a change set
//! ([`apply_in`], in the in-memory backend's order) and their reads. New tables of schema 3,
//! empty in a store written before them, so the schema number did not change; their writes
//! go through the change set's batch and its write-ahead log record like every other.
//!
//! A backup version's record holds its session count, kept up to date by the change sets
//! that write and delete its sessions, so that reading a version scans none of them.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::batch::Tx;
use super::{
    BACKUP_SESSION, BACKUP_VERSION, CROSS_SIGNING_KEY, KEY_SIGNATURE, PUSHER, PUSHER_KEY,
    SledStore, unavailable,
};
use crate::codec::{Dec, Enc};
use crate::model::backup_version_number;
use crate::{
    Applied, BackupScope, BackupSession, BackupVersion, ChangeSet, CrossSigningKeyKind,
    CrossSigningKeys, CrossSigningStore, ErrorKind, KeyBackupStore, KeySignature, Pusher,
    PusherStore, Result, StorageError,
};

/// Names the record that did not decode.
fn corrupt(what: String) -> impl FnOnce(StorageError) -> StorageError {
    move |error| {
        StorageError::with_source(
            ErrorKind::Corrupt,
            format!("the stored {what} does not decode"),
            error,
        )
    }
}

/// A backup version's record.
#[derive(Debug, Clone)]
struct Version {
    algorithm: String,
    auth_data: Vec<u8>,
    etag: u64,
    count: u64,
    deleted: bool,
}

impl Version {
    fn encode(&self) -> Vec<u8> {
        Enc::default()
            .str(&self.algorithm)
            .bytes(&self.auth_data)
            .u64(self.etag)
            .u64(self.count)
            .bool(self.deleted)
            .done()
    }

    fn decode(user: &str, number: u64, value: &[u8]) -> Result<Self> {
        let read = || {
            let mut dec = Dec::new(value);
            Ok(Version {
                algorithm: dec.str()?,
                auth_data: dec.bytes()?.to_vec(),
                etag: dec.u64()?,
                count: dec.u64()?,
                deleted: dec.bool()?,
            })
        };
        read().map_err(corrupt(format!("backup version {number} of {user}")))
    }

    fn public(self, user: &str, number: u64) -> BackupVersion {
        BackupVersion {
            user_id: user.to_owned(),
            version: number.to_string(),
            algorithm: self.algorithm,
            auth_data: self.auth_data,
            etag: self.etag,
            count: self.count,
            deleted: self.deleted,
        }
    }
}

fn version_key(user: &str, number: u64) -> Vec<u8> {
    Enc::table(BACKUP_VERSION).str(user).u64(number).done()
}

fn session_key(user: &str, number: u64, room: &str, session: &str) -> Vec<u8> {
    Enc::table(BACKUP_SESSION).str(user).u64(number).str(room).str(session).done()
}

fn cross_signing_key(user: &str, kind: CrossSigningKeyKind) -> Vec<u8> {
    Enc::table(CROSS_SIGNING_KEY).str(user).str(kind.as_str()).done()
}

fn signature_key(s: &KeySignature) -> Vec<u8> {
    Enc::table(KEY_SIGNATURE)
        .str(&s.target_user)
        .str(&s.target_key)
        .str(&s.signer_user)
        .str(&s.signer_key_id)
        .done()
}

fn pusher_key(user: &str, app_id: &str, pushkey: &str) -> Vec<u8> {
    Enc::table(PUSHER).str(user).str(app_id).str(pushkey).done()
}

/// The index of pushers by `(app_id, pushkey)`, for [`ChangeSet::exclusive_pushers`].
fn pusher_index(app_id: &str, pushkey: &str, user: &str) -> Vec<u8> {
    Enc::table(PUSHER_KEY).str(app_id).str(pushkey).str(user).done()
}

/// A version's record as the change set left it so far, if it is stored and not deleted.
fn live(tx: &Tx<'_>, user: &str, version: &str) -> Result<Option<(u64, Version)>> {
    let Some(number) = backup_version_number(version) else { return Ok(None) };
    let Some(value) = tx.get(version_key(user, number))? else { return Ok(None) };
    let stored = Version::decode(user, number, &value)?;
    Ok((!stored.deleted).then_some((number, stored)))
}

/// This module's part of a change set, as buffered writes, after the rest of it.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet, applied: &mut Applied) -> Result<()> {
    // The versions written to must be stored and not deleted, before the change set.
    let mut versions: BTreeMap<(&str, u64), (Version, bool)> = BTreeMap::new();
    let written = changes
        .updated_backup_versions
        .iter()
        .map(|(user, version, _)| (user, version))
        .chain(changes.deleted_backup_sessions.iter().map(|(user, version, _)| (user, version)))
        .chain(changes.backup_sessions.iter().map(|s| (&s.user_id, &s.version)));
    for (user, version) in written {
        match live(tx, user, version)? {
            Some((number, stored)) => {
                versions.entry((user.as_str(), number)).or_insert((stored, false));
            }
            None => {
                return Err(StorageError::new(
                    ErrorKind::MissingReference,
                    format!("backup version {version} of {user}"),
                ));
            }
        }
    }

    for (user, kind, key) in &changes.cross_signing_keys {
        tx.insert(cross_signing_key(user, *kind), key.clone())?;
    }
    for signature in &changes.key_signatures {
        tx.insert(signature_key(signature), Enc::default().str(&signature.signature).done())?;
    }

    // Backups: new versions, auth data, sessions deleted, sessions written, versions deleted.
    for new in &changes.new_backup_versions {
        let last = match tx.scan_prefix(&Enc::table(BACKUP_VERSION).str(&new.user_id).done())?.pop()
        {
            Some((key, _)) => {
                let read = || {
                    let mut dec = Dec::new(&key).skip_table()?;
                    let _user = dec.str()?;
                    dec.u64()
                };
                read().map_err(corrupt(format!("backup version key of {}", new.user_id)))?
            }
            None => 0,
        };
        let number = last.checked_add(1).ok_or_else(|| {
            StorageError::new(ErrorKind::Corrupt, format!("backup versions of {}", new.user_id))
        })?;
        let version = Version {
            algorithm: new.algorithm.clone(),
            auth_data: new.auth_data.clone(),
            etag: 0,
            count: 0,
            deleted: false,
        };
        tx.insert(version_key(&new.user_id, number), version.encode())?;
        applied.backup_versions.push(number.to_string());
    }
    fn number<'a>(user: &'a str, version: &str) -> Option<(&'a str, u64)> {
        backup_version_number(version).map(|n| (user, n))
    }
    for (user, version, auth_data) in &changes.updated_backup_versions {
        if let Some(key) = number(user, version)
            && let Some((stored, _)) = versions.get_mut(&key)
        {
            stored.auth_data = auth_data.clone();
        }
    }
    for (user, version, scope) in &changes.deleted_backup_sessions {
        let Some((user, n)) = number(user, version) else { continue };
        let Some((stored, touched)) = versions.get_mut(&(user, n)) else { continue };
        let prefix = Enc::table(BACKUP_SESSION).str(user).u64(n);
        let removed = match scope {
            BackupScope::All => remove_all(tx, &prefix.done())?,
            BackupScope::Room(room) => remove_all(tx, &prefix.str(room).done())?,
            BackupScope::Session(room, session) => {
                u64::from(tx.remove(session_key(user, n, room, session))?.is_some())
            }
        };
        stored.count = stored.count.saturating_sub(removed);
        *touched = true;
    }
    for session in &changes.backup_sessions {
        let Some((user, n)) = number(&session.user_id, &session.version) else { continue };
        let Some((stored, touched)) = versions.get_mut(&(user, n)) else { continue };
        let key = session_key(user, n, &session.room_id, &session.session_id);
        if tx.get(&key)?.is_none() {
            stored.count = stored.count.saturating_add(1);
        }
        tx.insert(key, session.data.clone())?;
        *touched = true;
    }
    for ((user, n), (mut stored, touched)) in versions {
        if touched {
            stored.etag = stored.etag.saturating_add(1);
        }
        tx.insert(version_key(user, n), stored.encode())?;
    }
    for (user, version) in &changes.deleted_backup_versions {
        let Some((n, mut stored)) = live(tx, user, version)? else { continue };
        remove_all(tx, &Enc::table(BACKUP_SESSION).str(user).u64(n).done())?;
        stored.count = 0;
        stored.deleted = true;
        tx.insert(version_key(user, n), stored.encode())?;
    }

    // Pushers: deleted, made exclusive, set.
    for (user, app_id, pushkey) in &changes.deleted_pushers {
        tx.remove(pusher_key(user, app_id, pushkey))?;
        tx.remove(pusher_index(app_id, pushkey, user))?;
    }
    for (user, app_id, pushkey) in &changes.exclusive_pushers {
        let prefix = Enc::table(PUSHER_KEY).str(app_id).str(pushkey).done();
        for (key, _) in tx.scan_prefix(&prefix)? {
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, _) = (dec.str()?, dec.str()?);
                dec.str()
            };
            let other = read().map_err(corrupt(format!("pusher index of {app_id}")))?;
            if other != *user {
                tx.remove(pusher_key(&other, app_id, pushkey))?;
                tx.remove(key)?;
            }
        }
    }
    for pusher in &changes.pushers {
        tx.insert(
            pusher_key(&pusher.user_id, &pusher.app_id, &pusher.pushkey),
            Enc::default().str(&pusher.device_id).bytes(&pusher.data).done(),
        )?;
        tx.insert(pusher_index(&pusher.app_id, &pusher.pushkey, &pusher.user_id), vec![])?;
    }
    Ok(())
}

/// Removes every entry under `prefix`; answers how many.
fn remove_all(tx: &Tx<'_>, prefix: &[u8]) -> Result<u64> {
    let entries = tx.scan_prefix(prefix)?;
    for (key, _) in &entries {
        tx.remove(key)?;
    }
    Ok(entries.len() as u64)
}

/// A pusher's entry; one that does not decode is an error naming it (`whose` names the user
/// when the key itself does not decode).
fn decode_pusher(key: &[u8], value: &[u8], whose: &str) -> Result<Pusher> {
    let read_key = || {
        let mut dec = Dec::new(key).skip_table()?;
        Ok((dec.str()?, dec.str()?, dec.str()?))
    };
    let (user_id, app_id, pushkey) = read_key().map_err(corrupt(format!("pusher of {whose}")))?;
    let mut dec = Dec::new(value);
    let mut read = || Ok((dec.str()?, dec.bytes()?.to_vec()));
    let what = format!("pusher of {user_id} (app {app_id:?}, pushkey {pushkey:?})");
    let (device_id, data) = read().map_err(corrupt(what))?;
    Ok(Pusher { user_id, app_id, pushkey, device_id, data })
}

impl SledStore {
    fn pushers_under(&self, prefix: Vec<u8>, whose: &str) -> Result<Vec<Pusher>> {
        let mut pushers = Vec::new();
        for entry in self.scan(prefix) {
            let (key, value) = entry?;
            pushers.push(decode_pusher(&key, &value, whose)?);
        }
        pushers.sort_by(|a, b| {
            (&a.user_id, &a.app_id, &a.pushkey).cmp(&(&b.user_id, &b.app_id, &b.pushkey))
        });
        Ok(pushers)
    }
}

#[async_trait]
impl CrossSigningStore for SledStore {
    async fn cross_signing_keys(&self, user_id: &str) -> Result<CrossSigningKeys> {
        self.flusher.check()?;
        let mut keys = CrossSigningKeys::default();
        for kind in CrossSigningKeyKind::ALL {
            keys.set(kind, self.get(&cross_signing_key(user_id, kind))?.map(|v| v.to_vec()));
        }
        Ok(keys)
    }

    async fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignature>> {
        self.flusher.check()?;
        let mut signatures = Vec::new();
        for entry in self.scan(Enc::table(KEY_SIGNATURE).str(target_user).done()) {
            let (key, value) = entry?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                Ok(KeySignature {
                    target_user: dec.str()?,
                    target_key: dec.str()?,
                    signer_user: dec.str()?,
                    signer_key_id: dec.str()?,
                    signature: Dec::new(&value).str()?,
                })
            };
            signatures
                .push(read().map_err(corrupt(format!("signature on keys of {target_user}")))?);
        }
        signatures.sort();
        Ok(signatures)
    }
}

#[async_trait]
impl KeyBackupStore for SledStore {
    async fn backup_version(&self, user_id: &str, version: &str) -> Result<Option<BackupVersion>> {
        self.flusher.check()?;
        let Some(number) = backup_version_number(version) else { return Ok(None) };
        let Some(value) = self.get(&version_key(user_id, number))? else { return Ok(None) };
        Ok(Some(Version::decode(user_id, number, &value)?.public(user_id, number)))
    }

    async fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersion>> {
        self.flusher.check()?;
        let versions = self.tree.scan_prefix(Enc::table(BACKUP_VERSION).str(user_id).done());
        for entry in versions.rev() {
            let (key, value) = entry.map_err(unavailable)?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let _user = dec.str()?;
                dec.u64()
            };
            let number = read().map_err(corrupt(format!("backup version key of {user_id}")))?;
            let stored = Version::decode(user_id, number, &value)?;
            if !stored.deleted {
                return Ok(Some(stored.public(user_id, number)));
            }
        }
        Ok(None)
    }

    async fn backup_sessions(
        &self,
        user_id: &str,
        version: &str,
        room_id: Option<&str>,
    ) -> Result<Vec<BackupSession>> {
        self.flusher.check()?;
        let Some(number) = backup_version_number(version) else { return Ok(Vec::new()) };
        let prefix = Enc::table(BACKUP_SESSION).str(user_id).u64(number);
        let prefix = match room_id {
            Some(room) => prefix.str(room),
            None => prefix,
        };
        let mut sessions = Vec::new();
        for entry in self.scan(prefix.done()) {
            let (key, value) = entry?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                let (_, _) = (dec.str()?, dec.u64()?);
                Ok(BackupSession {
                    room_id: dec.str()?,
                    session_id: dec.str()?,
                    data: value.to_vec(),
                })
            };
            let what = format!("backed-up session of {user_id} in version {version}");
            sessions.push(read().map_err(corrupt(what))?);
        }
        sessions.sort_by(|a, b| (&a.room_id, &a.session_id).cmp(&(&b.room_id, &b.session_id)));
        Ok(sessions)
    }

    async fn backup_session(
        &self,
        user_id: &str,
        version: &str,
        room_id: &str,
        session_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.flusher.check()?;
        let Some(number) = backup_version_number(version) else { return Ok(None) };
        Ok(self.get(&session_key(user_id, number, room_id, session_id))?.map(|v| v.to_vec()))
    }
}

#[async_trait]
impl PusherStore for SledStore {
    async fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>> {
        self.flusher.check()?;
        self.pushers_under(Enc::table(PUSHER).str(user_id).done(), user_id)
    }

    async fn all_pushers(&self) -> Result<Vec<Pusher>> {
        self.flusher.check()?;
        self.pushers_under(Enc::table(PUSHER).done(), "a user")
    }
}
