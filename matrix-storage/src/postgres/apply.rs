//! One change set, one transaction. The writes follow the in-memory backend's order (the
//! oracle of the model test): snapshot, rooms, events, accounts, keys, queues, account data,
//! media, then the smaller domains ([`super::apply_domains`]), then cross-signing, key
//! backups and pushers ([`super::user_data`]). Client transaction ids and auth-chain index
//! entries come first, so that a reused id or number fails the change set before anything
//! else is written; then the rooms whose writer said what it built on are locked and checked,
//! so that a writer of another process that changed them meanwhile makes this one a conflict
//! before it writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sqlx::PgConnection;
use sqlx::postgres::PgPool;

use super::apply_domains::{self, Positions};
use super::snapshots::write_snapshot;
use super::stream::{Reservation, SharedStream};
use super::user_data;
use super::{Doing, status_code, to_i64, to_u64};
use crate::{Applied, ChangeSet, ErrorKind, Result, RoomChanges, SnapshotRef, StorageError};

fn missing(what: String) -> StorageError {
    StorageError::new(ErrorKind::MissingReference, what)
}

fn conflict(what: String) -> StorageError {
    StorageError::new(ErrorKind::Conflict, what)
}

/// Applies `changes` in one transaction; returns once it committed.
pub(super) async fn apply(
    pool: &PgPool,
    stream: &Arc<SharedStream>,
    changes: ChangeSet,
) -> Result<Applied> {
    let mut reserved = None;
    let result = write(pool, stream, &changes, &mut reserved).await;
    if result.is_err()
        && let Some(run) = reserved
    {
        stream.abandon(run).await;
    }
    result
}

/// Locks the rooms whose writer said what it built on (in room order) and checks that they
/// are still that; the locks are held until the commit.
async fn check_rooms(tx: &mut PgConnection, rooms: &[RoomChanges]) -> Result<()> {
    const DOING: &str = "checking a room";
    let mut expecting: Vec<&RoomChanges> = rooms.iter().filter(|r| r.expected.is_some()).collect();
    expecting.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    for room in expecting {
        let Some(expected) = &room.expected else { continue };
        let row: Option<(Option<i64>, Vec<String>)> = sqlx::query_as(
            "SELECT current_state, forward_extremities FROM rooms WHERE room_id = $1 FOR UPDATE",
        )
        .bind(&room.room_id)
        .fetch_optional(&mut *tx)
        .await
        .doing(DOING)?;
        let (state, extremities) = row.unwrap_or_default();
        let state = state.map(to_u64).transpose()?.map(crate::SnapshotId);
        if !expected.matches(state, &extremities) {
            return Err(conflict(format!("room {} changed since it was read", room.room_id)));
        }
    }
    Ok(())
}

async fn write(
    pool: &PgPool,
    stream: &Arc<SharedStream>,
    changes: &ChangeSet,
    reserved: &mut Option<Reservation>,
) -> Result<Applied> {
    let mut tx = pool.begin().await.doing("starting a transaction")?;
    apply_domains::record_transaction_ids(&mut tx, &changes.transaction_ids).await?;
    super::auth_chain::record(&mut tx, &changes.auth_chain).await?;
    complete_pending_media(&mut tx, &changes.completed_pending_media).await?;
    check_rooms(&mut tx, &changes.rooms).await?;
    let mut applied = Applied::default();
    if let Some(new) = &changes.snapshot {
        applied.snapshot = Some(write_snapshot(&mut tx, new).await?);
    }
    let resolve = |r: SnapshotRef| -> Result<i64> {
        match r {
            SnapshotRef::New => applied
                .snapshot
                .map(|s| to_i64(s.0))
                .ok_or_else(|| missing("the change set's new snapshot".to_owned())),
            // An unknown snapshot fails the foreign key: a missing reference.
            SnapshotRef::Existing(id) => Ok(to_i64(id.0)),
        }
    };

    for room in &changes.rooms {
        let creating = room.create_with_version.is_some();
        if let Some(version) = &room.create_with_version {
            let created = sqlx::query(
                "INSERT INTO rooms (room_id, version, current_state, forward_extremities) \
                 VALUES ($1, $2, NULL, '{}') ON CONFLICT DO NOTHING",
            )
            .bind(&room.room_id)
            .bind(version)
            .execute(&mut *tx)
            .await
            .doing("creating a room")?;
            if created.rows_affected() == 0 {
                return Err(conflict(format!("room {} exists", room.room_id)));
            }
        }
        let state = room.current_state.map(resolve).transpose()?;
        let extremities = room.forward_extremities.as_ref().map(|list| {
            list.iter().collect::<BTreeSet<_>>().into_iter().cloned().collect::<Vec<String>>()
        });
        if !creating || state.is_some() || extremities.is_some() {
            let updated = sqlx::query(
                "UPDATE rooms SET current_state = COALESCE($2, current_state), \
                 forward_extremities = COALESCE($3, forward_extremities) WHERE room_id = $1",
            )
            .bind(&room.room_id)
            .bind(state)
            .bind(extremities)
            .execute(&mut *tx)
            .await
            .doing("updating a room")?;
            if updated.rows_affected() == 0 {
                return Err(missing(format!("room {}", room.room_id)));
            }
        }
        if !room.memberships.is_empty() {
            // Of two changes to one user, the later wins (one row per user per statement).
            let latest: BTreeMap<&String, &String> =
                room.memberships.iter().map(|(u, m)| (u, m)).collect();
            let (users, memberships): (Vec<&String>, Vec<&String>) = latest.into_iter().unzip();
            sqlx::query(
                "INSERT INTO memberships (room_id, user_id, membership) \
                 SELECT $1, * FROM unnest($2::text[], $3::text[]) \
                 ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership",
            )
            .bind(&room.room_id)
            .bind(users)
            .bind(memberships)
            .execute(&mut *tx)
            .await
            .doing("writing memberships")?;
        }
    }

    // Positions are reserved as late as possible: readers (of every process) wait for them
    // until the commit. One reservation for everything of the change set that takes a
    // position, handed out in the in-memory backend's order: timeline events, account data,
    // device-list changes, to-device messages, receipts.
    let timeline = changes.events.iter().filter(|e| e.in_timeline).count();
    let positioned = (timeline
        + changes.account_data.len()
        + changes.device_list_changes.len()
        + changes.to_device.len()
        + changes.receipts.len()) as u64;
    if positioned > 0 {
        *reserved = Some(stream.reserve(&mut tx, positioned).await?);
    }
    let mut positions = Positions::new(reserved.map_or(0, |r| r.first));
    let mut timeline_positions: Vec<(&str, u64)> = Vec::new();
    for event in &changes.events {
        let position = event.in_timeline.then(|| positions.take());
        if let Some(position) = position {
            timeline_positions.push((&event.event_id, position));
        }
        let state_after = event.state_after.map(resolve).transpose()?;
        sqlx::query(
            "INSERT INTO events (event_id, room_id, json, status, stream, state_after, \
             auth_events, prev_events) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (event_id) DO UPDATE SET room_id = excluded.room_id, \
             json = excluded.json, status = excluded.status, stream = excluded.stream, \
             state_after = excluded.state_after, auth_events = excluded.auth_events, \
             prev_events = excluded.prev_events",
        )
        .bind(&event.event_id)
        .bind(&event.room_id)
        .bind(&*event.json)
        .bind(status_code(event.status))
        .bind(position.map(to_i64))
        .bind(state_after)
        .bind(&event.auth_events)
        .bind(&event.prev_events)
        .execute(&mut *tx)
        .await
        .doing("writing an event")?;
        if let Some(position) = position {
            applied.stream.push(crate::StreamPos(position));
        }
    }

    super::backfill::write(&mut tx, changes).await?;
    write_accounts(&mut tx, changes).await?;
    write_keys_and_queues(&mut tx, changes, &mut applied).await?;
    apply_domains::write_account_data(&mut tx, changes, &mut positions).await?;
    write_media(&mut tx, changes).await?;
    apply_domains::write_e2ee(&mut tx, changes, &mut positions).await?;
    apply_domains::write_receipts(&mut tx, changes, &mut positions).await?;
    apply_domains::write_records(&mut tx, changes).await?;
    super::relations::write(&mut tx, changes).await?;
    user_data::write(&mut tx, changes, &mut applied).await?;
    super::presence::write(&mut tx, changes).await?;
    super::scheduled::write(&mut tx, changes).await?;
    super::registration_tokens::write(&mut tx, changes).await?;
    super::moderation::write(&mut tx, changes).await?;
    super::user_directory::write(&mut tx, changes).await?;
    super::search::write(&mut tx, changes, &timeline_positions).await?;
    super::push::write(&mut tx, changes).await?;

    // Readers pass the positions as soon as PostgreSQL counts the transaction as ended.
    tx.commit().await.doing("committing")?;
    if let Some(run) = *reserved {
        stream.committed(run);
    }
    Ok(applied)
}

async fn write_accounts(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing accounts";
    for user in &changes.new_users {
        let created = sqlx::query(
            "INSERT INTO users (user_id, password_hash, admin, deactivated) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&user.user_id)
        .bind(&user.password_hash)
        .bind(user.admin)
        .bind(user.deactivated)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
        if created.rows_affected() == 0 {
            return Err(conflict(format!("user {} exists", user.user_id)));
        }
    }
    for user in &changes.updated_users {
        let updated = sqlx::query(
            "UPDATE users SET password_hash = $2, admin = $3, deactivated = $4 \
             WHERE user_id = $1",
        )
        .bind(&user.user_id)
        .bind(&user.password_hash)
        .bind(user.admin)
        .bind(user.deactivated)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
        if updated.rows_affected() == 0 {
            return Err(missing(format!("user {}", user.user_id)));
        }
    }
    for device in &changes.devices {
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(&device.user_id)
        .bind(&device.device_id)
        .bind(&device.display_name)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    apply_domains::delete_devices(tx, &changes.deleted_devices, &changes.transaction_ids).await?;
    for dehydrated in &changes.dehydrated_devices {
        sqlx::query(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data) \
             VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET \
             device_id = excluded.device_id, device_data = excluded.device_data",
        )
        .bind(&dehydrated.user_id)
        .bind(&dehydrated.device_id)
        .bind(&dehydrated.device_data)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (token, owner) in &changes.new_tokens {
        sqlx::query(
            "INSERT INTO access_tokens (token, user_id, device_id) VALUES ($1, $2, $3) \
             ON CONFLICT (token) DO UPDATE SET user_id = excluded.user_id, \
             device_id = excluded.device_id",
        )
        .bind(token)
        .bind(&owner.user_id)
        .bind(&owner.device_id)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_tokens.is_empty() {
        sqlx::query("DELETE FROM access_tokens WHERE token = ANY($1)")
            .bind(&changes.deleted_tokens)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    Ok(())
}

async fn write_keys_and_queues(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    applied: &mut Applied,
) -> Result<()> {
    const DOING: &str = "writing keys and queues";
    for key in &changes.our_keys {
        sqlx::query(
            "INSERT INTO our_keys (key_id, seed, expired_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id) DO UPDATE SET seed = excluded.seed, \
             expired_ts = excluded.expired_ts",
        )
        .bind(&key.key_id)
        .bind(&key.seed)
        .bind(key.expired_ts)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for key in &changes.remote_keys {
        sqlx::query(
            "INSERT INTO remote_keys (server, key_id, public_key, valid_until_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (server, key_id) DO UPDATE SET \
             public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts",
        )
        .bind(&key.server)
        .bind(&key.key_id)
        .bind(&key.public_key)
        .bind(key.valid_until_ts)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (origin, txn_id) in &changes.seen_transactions {
        sqlx::query(
            "INSERT INTO inbound_transactions (origin, txn_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (destination, payload) in &changes.enqueue {
        // The head row stays locked until the commit: a destination's ids follow commit order.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbound_heads (destination, next_id) VALUES ($1, 2) \
             ON CONFLICT (destination) DO UPDATE SET next_id = outbound_heads.next_id + 1 \
             RETURNING next_id - 1",
        )
        .bind(destination)
        .fetch_one(&mut *tx)
        .await
        .doing(DOING)?;
        sqlx::query("INSERT INTO outbound_queue (destination, id, payload) VALUES ($1, $2, $3)")
            .bind(destination)
            .bind(id)
            .bind(&**payload)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
        applied.enqueued.push(to_u64(id)?);
    }
    for (destination, upto) in &changes.acknowledge {
        sqlx::query("DELETE FROM outbound_queue WHERE destination = $1 AND id <= $2")
            .bind(destination)
            .bind(to_i64(*upto))
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    for (destination, retry) in &changes.retries {
        match retry {
            Some(retry) => sqlx::query(
                "INSERT INTO destination_retries (destination, failures, retry_after_ts) \
                 VALUES ($1, $2, $3) ON CONFLICT (destination) DO UPDATE SET \
                 failures = excluded.failures, retry_after_ts = excluded.retry_after_ts",
            )
            .bind(destination)
            .bind(i64::from(retry.failures))
            .bind(retry.retry_after_ts),
            None => sqlx::query("DELETE FROM destination_retries WHERE destination = $1")
                .bind(destination),
        }
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// Deletes the pending entries of `completed` media ids: one that is not pending (or named
/// twice) is a conflict. A concurrent transaction deleting the same entry waits for this one
/// and then finds nothing to delete.
async fn complete_pending_media(tx: &mut PgConnection, completed: &[String]) -> Result<()> {
    if completed.is_empty() {
        return Ok(());
    }
    let distinct: BTreeSet<&String> = completed.iter().collect();
    let deleted: i64 = sqlx::query_scalar(
        "WITH d AS (DELETE FROM pending_media WHERE media_id = ANY($1) RETURNING 1) \
         SELECT count(*) FROM d",
    )
    .bind(completed)
    .fetch_one(&mut *tx)
    .await
    .doing("completing pending media")?;
    if distinct.len() != completed.len() || to_u64(deleted)? != completed.len() as u64 {
        return Err(conflict("an uploaded media id is not pending".to_owned()));
    }
    Ok(())
}

async fn write_media(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing media metadata";
    if !changes.deleted_media.is_empty() {
        sqlx::query("DELETE FROM media WHERE media_id = ANY($1)")
            .bind(&changes.deleted_media)
            .execute(&mut *tx)
            .await
            .doing("deleting media metadata")?;
    }
    if !changes.quarantine_changes.is_empty() {
        let (keys, quarantined): (Vec<&str>, Vec<bool>) =
            changes.quarantine_changes.iter().map(|(k, q)| (k.as_str(), *q)).unzip();
        sqlx::query(
            "INSERT INTO quarantine_changes (media_key, quarantined) \
             SELECT k, q FROM unnest($1::text[], $2::bool[]) WITH ORDINALITY AS c(k, q, n) \
             ORDER BY n",
        )
        .bind(&keys)
        .bind(&quarantined)
        .execute(&mut *tx)
        .await
        .doing("logging quarantine changes")?;
    }
    for media in &changes.media {
        sqlx::query(
            "INSERT INTO media (media_id, content_type, size, upload_name, uploader, created_ts, \
             sha256, authenticated, quarantined_by, safe_from_quarantine) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (media_id) DO UPDATE SET \
             content_type = excluded.content_type, size = excluded.size, \
             upload_name = excluded.upload_name, uploader = excluded.uploader, \
             created_ts = excluded.created_ts, sha256 = excluded.sha256, \
             authenticated = excluded.authenticated, quarantined_by = excluded.quarantined_by, \
             safe_from_quarantine = excluded.safe_from_quarantine",
        )
        .bind(&media.media_id)
        .bind(&media.content_type)
        .bind(to_i64(media.size))
        .bind(&media.upload_name)
        .bind(&media.uploader)
        .bind(media.created_ts)
        .bind(&media.sha256)
        .bind(media.authenticated)
        .bind(&media.quarantined_by)
        .bind(media.safe_from_quarantine)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_pending_media.is_empty() {
        sqlx::query("DELETE FROM pending_media WHERE media_id = ANY($1)")
            .bind(&changes.deleted_pending_media)
            .execute(&mut *tx)
            .await
            .doing("forgetting pending media")?;
    }
    for pending in &changes.pending_media {
        sqlx::query(
            "INSERT INTO pending_media (media_id, creator, created_ts, expires_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (media_id) DO UPDATE SET \
             creator = excluded.creator, created_ts = excluded.created_ts, \
             expires_ts = excluded.expires_ts",
        )
        .bind(&pending.media_id)
        .bind(&pending.creator)
        .bind(pending.created_ts)
        .bind(pending.expires_ts)
        .execute(&mut *tx)
        .await
        .doing("writing pending media")?;
    }
    Ok(())
}
