//! Cross-signing keys and signatures, key backups and pushers (migration 4): their part of a
//! change set ([`write`], in the in-memory backend's order) and their reads.
//!
//! A change set writing to a backup version first locks the version's row (`FOR UPDATE`), so
//! that a concurrent deletion waits for it; new versions take their numbers from a per-user
//! head row, locked until the commit, so concurrent change sets never get one number twice.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_u64};
use crate::model::backup_version_number;
use crate::{
    Applied, BackupScope, BackupSession, BackupVersion, ChangeSet, CrossSigningKeyKind,
    CrossSigningKeys, CrossSigningStore, ErrorKind, KeyBackupStore, KeySignature, Pusher,
    PusherStore, Result, StorageError,
};

/// A version's number as stored (`None`: no stored version has this name).
fn number(version: &str) -> Option<i64> {
    backup_version_number(version).and_then(|n| i64::try_from(n).ok())
}

fn no_version(user: &str, version: &str) -> StorageError {
    StorageError::new(ErrorKind::MissingReference, format!("backup version {version} of {user}"))
}

/// This module's part of a change set, after the rest of it.
pub(super) async fn write(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    applied: &mut Applied,
) -> Result<()> {
    let live = lock_versions(tx, changes).await?;
    write_cross_signing(tx, changes).await?;
    write_backups(tx, changes, &live, applied).await?;
    write_pushers(tx, changes).await
}

/// Locks the versions the change set writes to, which must be stored and not deleted.
async fn lock_versions<'a>(
    tx: &mut PgConnection,
    changes: &'a ChangeSet,
) -> Result<BTreeSet<(&'a str, i64)>> {
    let written: BTreeSet<(&str, &str)> = changes
        .updated_backup_versions
        .iter()
        .map(|(user, version, _)| (user.as_str(), version.as_str()))
        .chain(
            changes
                .deleted_backup_sessions
                .iter()
                .map(|(user, version, _)| (user.as_str(), version.as_str())),
        )
        .chain(changes.backup_sessions.iter().map(|s| (s.user_id.as_str(), s.version.as_str())))
        .collect();
    let mut live = BTreeSet::new();
    for (user, version) in written {
        let n = number(version).ok_or_else(|| no_version(user, version))?;
        let deleted: Option<bool> = sqlx::query_scalar(
            "SELECT deleted FROM backup_versions WHERE user_id = $1 AND version = $2 FOR UPDATE",
        )
        .bind(user)
        .bind(n)
        .fetch_optional(&mut *tx)
        .await
        .doing("reading a backup version")?;
        if deleted != Some(false) {
            return Err(no_version(user, version));
        }
        live.insert((user, n));
    }
    Ok(live)
}

async fn write_cross_signing(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing cross-signing keys and signatures";
    if !changes.cross_signing_keys.is_empty() {
        // Of two writes to one key, the later wins.
        let latest: BTreeMap<(&str, &str), &[u8]> = changes
            .cross_signing_keys
            .iter()
            .map(|(user, kind, key)| ((user.as_str(), kind.as_str()), key.as_slice()))
            .collect();
        let (users, kinds): (Vec<&str>, Vec<&str>) = latest.keys().copied().unzip();
        let keys: Vec<&[u8]> = latest.into_values().collect();
        sqlx::query(
            "INSERT INTO cross_signing_keys (user_id, kind, key) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
             ON CONFLICT (user_id, kind) DO UPDATE SET key = excluded.key",
        )
        .bind(users)
        .bind(kinds)
        .bind(keys)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.key_signatures.is_empty() {
        let latest: BTreeMap<[&str; 4], &str> = changes
            .key_signatures
            .iter()
            .map(|s| {
                (
                    [&*s.target_user, &*s.target_key, &*s.signer_user, &*s.signer_key_id],
                    &*s.signature,
                )
            })
            .collect();
        let mut columns: [Vec<&str>; 5] = Default::default();
        for (key, signature) in latest {
            for (column, value) in columns.iter_mut().zip(key.into_iter().chain([signature])) {
                column.push(value);
            }
        }
        let [target_users, target_keys, signer_users, signer_keys, signatures] = columns;
        sqlx::query(
            "INSERT INTO key_signatures \
             (target_user, target_key, signer_user, signer_key_id, signature) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
             ON CONFLICT (target_user, target_key, signer_user, signer_key_id) \
             DO UPDATE SET signature = excluded.signature",
        )
        .bind(target_users)
        .bind(target_keys)
        .bind(signer_users)
        .bind(signer_keys)
        .bind(signatures)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// New versions, auth data, sessions deleted, sessions written, versions deleted. `live` are
/// the versions written to, locked.
async fn write_backups(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    live: &BTreeSet<(&str, i64)>,
    applied: &mut Applied,
) -> Result<()> {
    const DOING: &str = "writing key backups";
    for new in &changes.new_backup_versions {
        let version: i64 = sqlx::query_scalar(
            "WITH head AS (INSERT INTO backup_heads (user_id, last_version) VALUES ($1, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET last_version = backup_heads.last_version + 1 \
                 RETURNING last_version) \
             INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted) \
             SELECT $1, last_version, $2, $3, 0, false FROM head RETURNING version",
        )
        .bind(&new.user_id)
        .bind(&new.algorithm)
        .bind(&new.auth_data)
        .fetch_one(&mut *tx)
        .await
        .doing(DOING)?;
        applied.backup_versions.push(to_u64(version)?.to_string());
    }
    for (user, version, auth_data) in &changes.updated_backup_versions {
        sqlx::query(
            "UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2",
        )
        .bind(user)
        .bind(number(version))
        .bind(auth_data)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (user, version, scope) in &changes.deleted_backup_sessions {
        let (room, session) = match scope {
            BackupScope::All => (None, None),
            BackupScope::Room(room) => (Some(room), None),
            BackupScope::Session(room, session) => (Some(room), Some(session)),
        };
        sqlx::query(
            "DELETE FROM backup_sessions WHERE user_id = $1 AND version = $2 \
             AND ($3::text IS NULL OR room_id = $3) AND ($4::text IS NULL OR session_id = $4)",
        )
        .bind(user)
        .bind(number(version))
        .bind(room)
        .bind(session)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.backup_sessions.is_empty() {
        let mut latest: BTreeMap<(&str, i64, &str, &str), &[u8]> = BTreeMap::new();
        for s in &changes.backup_sessions {
            let n = number(&s.version).ok_or_else(|| no_version(&s.user_id, &s.version))?;
            latest.insert((&s.user_id, n, &s.room_id, &s.session_id), &s.data);
        }
        let mut text: [Vec<&str>; 3] = Default::default();
        let mut versions = Vec::new();
        let mut data: Vec<&[u8]> = Vec::new();
        for ((user, n, room, session), bytes) in latest {
            text[0].push(user);
            text[1].push(room);
            text[2].push(session);
            versions.push(n);
            data.push(bytes);
        }
        let [users, rooms, sessions] = text;
        sqlx::query(
            "INSERT INTO backup_sessions (user_id, version, room_id, session_id, data) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::bytea[]) \
             ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET data = excluded.data",
        )
        .bind(users)
        .bind(versions)
        .bind(rooms)
        .bind(sessions)
        .bind(data)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    // Every version whose sessions the change set wrote or deleted.
    let touched: BTreeSet<(&str, i64)> = changes
        .deleted_backup_sessions
        .iter()
        .map(|(user, version, _)| (user.as_str(), version.as_str()))
        .chain(changes.backup_sessions.iter().map(|s| (s.user_id.as_str(), s.version.as_str())))
        .filter_map(|(user, version)| number(version).map(|n| (user, n)))
        .filter(|key| live.contains(key))
        .collect();
    if !touched.is_empty() {
        let (users, versions): (Vec<&str>, Vec<i64>) = touched.into_iter().unzip();
        sqlx::query(
            "UPDATE backup_versions v SET etag = v.etag + 1 \
             FROM unnest($1::text[], $2::int8[]) AS t(user_id, version) \
             WHERE v.user_id = t.user_id AND v.version = t.version",
        )
        .bind(users)
        .bind(versions)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (user, version) in &changes.deleted_backup_versions {
        let Some(n) = number(version) else { continue };
        sqlx::query(
            "WITH gone AS (DELETE FROM backup_sessions WHERE user_id = $1 AND version = $2) \
             UPDATE backup_versions SET deleted = true WHERE user_id = $1 AND version = $2",
        )
        .bind(user)
        .bind(n)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// Pushers deleted, made exclusive, then set.
async fn write_pushers(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing pushers";
    if !changes.deleted_pushers.is_empty() {
        let mut columns: [Vec<&str>; 3] = Default::default();
        for (user, app_id, pushkey) in &changes.deleted_pushers {
            columns[0].push(user);
            columns[1].push(app_id);
            columns[2].push(pushkey);
        }
        let [users, apps, pushkeys] = columns;
        sqlx::query(
            "DELETE FROM pushers p USING unnest($1::text[], $2::text[], $3::text[]) \
             AS d(user_id, app_id, pushkey) \
             WHERE p.user_id = d.user_id AND p.app_id = d.app_id AND p.pushkey = d.pushkey",
        )
        .bind(users)
        .bind(apps)
        .bind(pushkeys)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (user, app_id, pushkey) in &changes.exclusive_pushers {
        sqlx::query("DELETE FROM pushers WHERE app_id = $2 AND pushkey = $3 AND user_id <> $1")
            .bind(user)
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    if !changes.pushers.is_empty() {
        let latest: BTreeMap<(&str, &str, &str), &Pusher> = changes
            .pushers
            .iter()
            .map(|p| ((p.user_id.as_str(), p.app_id.as_str(), p.pushkey.as_str()), p))
            .collect();
        let mut text: [Vec<&str>; 4] = Default::default();
        let mut data: Vec<&[u8]> = Vec::new();
        for p in latest.into_values() {
            for (column, value) in
                text.iter_mut().zip([&p.user_id, &p.app_id, &p.pushkey, &p.device_id])
            {
                column.push(value);
            }
            data.push(&p.data);
        }
        let [users, apps, pushkeys, devices] = text;
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, device_id, data) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) \
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET \
             device_id = excluded.device_id, data = excluded.data",
        )
        .bind(users)
        .bind(apps)
        .bind(pushkeys)
        .bind(devices)
        .bind(data)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// The columns of `backup_versions` a read selects, with the session count.
const VERSION_COLUMNS: &str = "v.version, v.algorithm, v.auth_data, v.etag, v.deleted, \
     (SELECT count(*) FROM backup_sessions s \
      WHERE s.user_id = v.user_id AND s.version = v.version)";

/// A version's row; a row that does not decode is an error naming the version.
fn backup_version(user: &str, row: &PgRow) -> Result<BackupVersion> {
    const DOING: &str = "reading a backup version";
    let version: i64 = row.try_get(0).doing(DOING)?;
    let read = || {
        Ok(BackupVersion {
            user_id: user.to_owned(),
            version: to_u64(version)?.to_string(),
            algorithm: row.try_get(1).doing(DOING)?,
            auth_data: row.try_get(2).doing(DOING)?,
            etag: to_u64(row.try_get(3).doing(DOING)?)?,
            deleted: row.try_get(4).doing(DOING)?,
            count: to_u64(row.try_get(5).doing(DOING)?)?,
        })
    };
    read().map_err(|error: StorageError| {
        let message = format!("the stored backup version {version} of {user} does not decode");
        StorageError::with_source(error.kind(), message, error)
    })
}

fn pusher(row: &PgRow) -> Result<Pusher> {
    const DOING: &str = "reading pushers";
    Ok(Pusher {
        user_id: row.try_get(0).doing(DOING)?,
        app_id: row.try_get(1).doing(DOING)?,
        pushkey: row.try_get(2).doing(DOING)?,
        device_id: row.try_get(3).doing(DOING)?,
        data: row.try_get(4).doing(DOING)?,
    })
}

#[async_trait]
impl CrossSigningStore for PostgresStore {
    async fn cross_signing_keys(&self, user_id: &str) -> Result<CrossSigningKeys> {
        const DOING: &str = "reading cross-signing keys";
        let rows = sqlx::query("SELECT kind, key FROM cross_signing_keys WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .doing(DOING)?;
        let mut keys = CrossSigningKeys::default();
        for row in rows {
            let kind: String = row.try_get(0).doing(DOING)?;
            let kind = CrossSigningKeyKind::from_usage(&kind).ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("a cross-signing key of {user_id} has the unknown kind {kind:?}"),
                )
            })?;
            keys.set(kind, Some(row.try_get(1).doing(DOING)?));
        }
        Ok(keys)
    }

    async fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignature>> {
        const DOING: &str = "reading signatures";
        let rows = sqlx::query(
            "SELECT target_key, signer_user, signer_key_id, signature FROM key_signatures \
             WHERE target_user = $1 ORDER BY target_key, signer_user, signer_key_id",
        )
        .bind(target_user)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(KeySignature {
                    target_user: target_user.to_owned(),
                    target_key: row.try_get(0).doing(DOING)?,
                    signer_user: row.try_get(1).doing(DOING)?,
                    signer_key_id: row.try_get(2).doing(DOING)?,
                    signature: row.try_get(3).doing(DOING)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl KeyBackupStore for PostgresStore {
    async fn backup_version(&self, user_id: &str, version: &str) -> Result<Option<BackupVersion>> {
        let Some(n) = number(version) else { return Ok(None) };
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM backup_versions v WHERE v.user_id = $1 AND v.version = $2"
        ))
        .bind(user_id)
        .bind(n)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a backup version")?;
        row.map(|row| backup_version(user_id, &row)).transpose()
    }

    async fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM backup_versions v \
             WHERE v.user_id = $1 AND NOT v.deleted ORDER BY v.version DESC LIMIT 1"
        ))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a backup version")?;
        row.map(|row| backup_version(user_id, &row)).transpose()
    }

    async fn backup_sessions(
        &self,
        user_id: &str,
        version: &str,
        room_id: Option<&str>,
    ) -> Result<Vec<BackupSession>> {
        const DOING: &str = "reading backed-up sessions";
        let Some(n) = number(version) else { return Ok(Vec::new()) };
        let rows = sqlx::query(
            "SELECT room_id, session_id, data FROM backup_sessions \
             WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3) \
             ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(n)
        .bind(room_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(BackupSession {
                    room_id: row.try_get(0).doing(DOING)?,
                    session_id: row.try_get(1).doing(DOING)?,
                    data: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn backup_session(
        &self,
        user_id: &str,
        version: &str,
        room_id: &str,
        session_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let Some(n) = number(version) else { return Ok(None) };
        sqlx::query_scalar(
            "SELECT data FROM backup_sessions \
             WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
        )
        .bind(user_id)
        .bind(n)
        .bind(room_id)
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a backed-up session")
    }
}

#[async_trait]
impl PusherStore for PostgresStore {
    async fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>> {
        let rows = sqlx::query(
            "SELECT user_id, app_id, pushkey, device_id, data FROM pushers WHERE user_id = $1 \
             ORDER BY app_id, pushkey",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading pushers")?;
        rows.iter().map(pusher).collect()
    }

    async fn all_pushers(&self) -> Result<Vec<Pusher>> {
        let rows = sqlx::query(
            "SELECT user_id, app_id, pushkey, device_id, data FROM pushers \
             ORDER BY user_id, app_id, pushkey",
        )
        .fetch_all(&self.pool)
        .await
        .doing("reading pushers")?;
        rows.iter().map(pusher).collect()
    }
}
