//! The writes of the smaller domains, in the in-memory backend's order: client transaction
//! ids, device deletion, account data, end-to-end encryption keys, the device-list stream,
//! to-device queues, receipts, aliases and the directory, redactions, profiles, forgotten
//! rooms and the media quota.
//!
//! A change set may hold many rows of a table: each table is written by one statement over
//! arrays (`unnest`). Of two writes to one key the later wins, as in memory, so the rows are
//! folded by key first (an `ON CONFLICT DO UPDATE` may not touch a row twice); folding into a
//! `BTreeMap` also sorts them, so concurrent writers lock rows in one order.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;

use super::{Doing, to_i64};
use crate::{ChangeSet, Result, TransactionId};

/// Hands out the stream positions a change set reserved, in order.
#[derive(Debug)]
pub(super) struct Positions {
    next: u64,
}

impl Positions {
    /// Positions from `first` on.
    pub(super) fn new(first: u64) -> Self {
        Positions { next: first }
    }

    /// The next position.
    pub(super) fn take(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }
}

/// Records the change set's client transaction ids. An id recorded already, or twice in the
/// change set, fails the statement with a unique violation: [`crate::ErrorKind::Conflict`],
/// and the transaction (the whole change set) rolls back. Written first, so that a retried
/// request fails before it writes anything else, and checked against what was stored before
/// the change set, as the in-memory backend checks.
pub(super) async fn record_transaction_ids(
    tx: &mut PgConnection,
    ids: &[TransactionId],
) -> Result<()> {
    // Sorted: concurrent writers of the same ids wait for each other in one order.
    let mut sorted: Vec<&TransactionId> = ids.iter().collect();
    sorted.sort_by_key(|&t| (&t.user_id, &t.device_id, &t.scope, &t.txn_id));
    insert_transaction_ids(tx, sorted.into_iter(), false).await
}

async fn insert_transaction_ids<'a>(
    tx: &mut PgConnection,
    ids: impl Iterator<Item = &'a TransactionId>,
    again: bool,
) -> Result<()> {
    let mut columns: [Vec<&str>; 5] = Default::default();
    for t in ids {
        for (column, value) in
            columns.iter_mut().zip([&t.user_id, &t.device_id, &t.scope, &t.txn_id, &t.result])
        {
            column.push(value);
        }
    }
    if columns[0].is_empty() {
        return Ok(());
    }
    let [users, devices, scopes, txn_ids, results] = columns;
    let insert = "INSERT INTO transaction_ids (user_id, device_id, scope, txn_id, result) \
                  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])";
    sqlx::query(&if again { format!("{insert} ON CONFLICT DO NOTHING") } else { insert.into() })
        .bind(users)
        .bind(devices)
        .bind(scopes)
        .bind(txn_ids)
        .bind(results)
        .execute(&mut *tx)
        .await
        .doing("recording client transaction ids")?;
    Ok(())
}

/// Deletes devices with everything they hold: access tokens, device keys, one-time and
/// fallback keys, the to-device queue, transaction ids and the signatures on their keys.
/// `recorded` are the change set's transaction ids (written before): those of a deleted device
/// are written again, since the change set records them after the deletion.
pub(super) async fn delete_devices(
    tx: &mut PgConnection,
    devices: &[(String, String)],
    recorded: &[TransactionId],
) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let (users, ids): (Vec<&str>, Vec<&str>) =
        devices.iter().map(|(u, d)| (u.as_str(), d.as_str())).unzip();
    sqlx::query(
        "WITH d AS (SELECT * FROM unnest($1::text[], $2::text[]) AS d(user_id, device_id)), \
         tokens AS (DELETE FROM access_tokens t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id), \
         dkeys AS (DELETE FROM device_keys t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id), \
         otks AS (DELETE FROM one_time_keys t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id), \
         fallbacks AS (DELETE FROM fallback_keys t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id), \
         inbox AS (DELETE FROM to_device t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id), \
         txns AS (DELETE FROM transaction_ids t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id), \
         sigs AS (DELETE FROM key_signatures t USING d \
             WHERE t.target_user = d.user_id AND t.target_key = d.device_id), \
         dehydrated AS (DELETE FROM dehydrated_devices t USING d \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id) \
         DELETE FROM devices t USING d WHERE t.user_id = d.user_id AND t.device_id = d.device_id",
    )
    .bind(users)
    .bind(ids)
    .execute(&mut *tx)
    .await
    .doing("deleting devices")?;
    let deleted: BTreeSet<(&str, &str)> =
        devices.iter().map(|(u, d)| (u.as_str(), d.as_str())).collect();
    let again =
        recorded.iter().filter(|t| deleted.contains(&(t.user_id.as_str(), t.device_id.as_str())));
    insert_transaction_ids(tx, again, true).await
}

/// Account data set (each write with its position; of two writes to one item the later
/// wins), then account data deleted.
pub(super) async fn write_account_data(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    positions: &mut Positions,
) -> Result<()> {
    const DOING: &str = "writing account data";
    if !changes.account_data.is_empty() {
        let mut latest: BTreeMap<(&str, &str, &str), (&[u8], i64)> = BTreeMap::new();
        for (user, room, kind, content) in &changes.account_data {
            let key = (user.as_str(), room.as_deref().unwrap_or(""), kind.as_str());
            latest.insert(key, (content.as_slice(), to_i64(positions.take())));
        }
        let ((users, rooms), kinds): ((Vec<&str>, Vec<&str>), Vec<&str>) =
            latest.keys().map(|&(u, r, k)| ((u, r), k)).unzip();
        let (contents, positions): (Vec<&[u8]>, Vec<i64>) = latest.into_values().unzip();
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, kind, content, pos) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[]) \
             ON CONFLICT (user_id, room_id, kind) DO UPDATE \
             SET content = excluded.content, pos = excluded.pos",
        )
        .bind(users)
        .bind(rooms)
        .bind(kinds)
        .bind(contents)
        .bind(positions)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_account_data.is_empty() {
        let ((users, rooms), kinds): ((Vec<&str>, Vec<&str>), Vec<&str>) = changes
            .deleted_account_data
            .iter()
            .map(|(u, r, k)| ((u.as_str(), r.as_deref().unwrap_or("")), k.as_str()))
            .unzip();
        sqlx::query(
            "DELETE FROM account_data a \
             USING unnest($1::text[], $2::text[], $3::text[]) AS d(user_id, room_id, kind) \
             WHERE a.user_id = d.user_id AND a.room_id = d.room_id AND a.kind = d.kind",
        )
        .bind(users)
        .bind(rooms)
        .bind(kinds)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// Device keys, one-time and fallback keys, device-list changes and to-device messages (both
/// with positions), then delivered to-device messages deleted.
pub(super) async fn write_e2ee(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    positions: &mut Positions,
) -> Result<()> {
    write_device_keys(tx, changes).await?;
    const DOING: &str = "writing the device-list stream and to-device messages";
    if !changes.device_list_changes.is_empty() {
        let (positions, users): (Vec<i64>, Vec<&str>) = changes
            .device_list_changes
            .iter()
            .map(|user| (to_i64(positions.take()), user.as_str()))
            .unzip();
        sqlx::query(
            "INSERT INTO device_list_changes (pos, user_id) \
             SELECT * FROM unnest($1::int8[], $2::text[])",
        )
        .bind(positions)
        .bind(users)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.to_device.is_empty() {
        let mut text: [Vec<&str>; 4] = Default::default();
        let mut at = Vec::new();
        let mut contents: Vec<&[u8]> = Vec::new();
        for m in &changes.to_device {
            for (column, value) in
                text.iter_mut().zip([&m.user_id, &m.device_id, &m.sender, &m.kind])
            {
                column.push(value);
            }
            at.push(to_i64(positions.take()));
            contents.push(&m.content);
        }
        let [users, devices, senders, kinds] = text;
        sqlx::query(
            "INSERT INTO to_device (user_id, device_id, pos, sender, kind, content) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], \
             $6::bytea[])",
        )
        .bind(users)
        .bind(devices)
        .bind(at)
        .bind(senders)
        .bind(kinds)
        .bind(contents)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.to_device_delivered.is_empty() {
        let mut columns: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        for (user, device, upto) in &changes.to_device_delivered {
            columns.0.push(user);
            columns.1.push(device);
            columns.2.push(to_i64(upto.0));
        }
        sqlx::query(
            "DELETE FROM to_device t \
             USING unnest($1::text[], $2::text[], $3::int8[]) AS d(user_id, device_id, upto) \
             WHERE t.user_id = d.user_id AND t.device_id = d.device_id AND t.pos <= d.upto",
        )
        .bind(columns.0)
        .bind(columns.1)
        .bind(columns.2)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

async fn write_device_keys(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing device keys";
    if !changes.device_keys.is_empty() {
        let latest: BTreeMap<(&str, &str), &[u8]> = changes
            .device_keys
            .iter()
            .map(|(user, device, keys)| ((user.as_str(), device.as_str()), keys.as_slice()))
            .collect();
        let (users, devices): (Vec<&str>, Vec<&str>) = latest.keys().copied().unzip();
        let keys: Vec<&[u8]> = latest.into_values().collect();
        sqlx::query(
            "INSERT INTO device_keys (user_id, device_id, keys) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET keys = excluded.keys",
        )
        .bind(users)
        .bind(devices)
        .bind(keys)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.one_time_keys.is_empty() {
        // A key id held already keeps its stored key; of two in the change set, the first.
        let mut first: BTreeMap<(&str, &str, &str), &[u8]> = BTreeMap::new();
        for key in &changes.one_time_keys {
            first.entry((&key.user_id, &key.device_id, &key.key_id)).or_insert(&key.key);
        }
        let ((users, devices), key_ids): ((Vec<&str>, Vec<&str>), Vec<&str>) =
            first.keys().map(|&(u, d, k)| ((u, d), k)).unzip();
        let keys: Vec<&[u8]> = first.into_values().collect();
        sqlx::query(
            "INSERT INTO one_time_keys (user_id, device_id, key_id, key) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(users)
        .bind(devices)
        .bind(key_ids)
        .bind(keys)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.fallback_keys.is_empty() {
        let latest: BTreeMap<(&str, &str, &str), &crate::FallbackKey> = changes
            .fallback_keys
            .iter()
            .map(|key| {
                ((key.user_id.as_str(), key.device_id.as_str(), key.algorithm.as_str()), key)
            })
            .collect();
        let mut text: [Vec<&str>; 4] = Default::default();
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut used = Vec::new();
        for key in latest.into_values() {
            for (column, value) in
                text.iter_mut().zip([&key.user_id, &key.device_id, &key.algorithm, &key.key_id])
            {
                column.push(value);
            }
            keys.push(&key.key);
            used.push(key.used);
        }
        let [users, devices, algorithms, key_ids] = text;
        sqlx::query(
            "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key, used) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
             $6::bool[]) \
             ON CONFLICT (user_id, device_id, algorithm) DO UPDATE \
             SET key_id = excluded.key_id, key = excluded.key, used = excluded.used",
        )
        .bind(users)
        .bind(devices)
        .bind(algorithms)
        .bind(key_ids)
        .bind(keys)
        .bind(used)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// Receipts deleted, then receipts set, each with its position (of two under one key the
/// later wins). An unthreaded receipt has the thread `''`.
pub(super) async fn write_receipts(
    tx: &mut PgConnection,
    changes: &ChangeSet,
    positions: &mut Positions,
) -> Result<()> {
    const DOING: &str = "writing receipts";
    if !changes.deleted_receipts.is_empty() {
        let mut columns: [Vec<&str>; 4] = Default::default();
        for key in &changes.deleted_receipts {
            columns[0].push(&key.room_id);
            columns[1].push(&key.user_id);
            columns[2].push(&key.kind);
            columns[3].push(key.thread.as_deref().unwrap_or(""));
        }
        let [rooms, users, kinds, threads] = columns;
        sqlx::query(
            "DELETE FROM receipts r \
             USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
             AS d(room_id, user_id, kind, thread) \
             WHERE r.room_id = d.room_id AND r.user_id = d.user_id AND r.kind = d.kind \
             AND r.thread = d.thread",
        )
        .bind(rooms)
        .bind(users)
        .bind(kinds)
        .bind(threads)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.receipts.is_empty() {
        let mut latest: BTreeMap<&crate::ReceiptKey, (&crate::Receipt, i64)> = BTreeMap::new();
        for receipt in &changes.receipts {
            latest.insert(&receipt.key, (receipt, to_i64(positions.take())));
        }
        let mut keys: [Vec<&str>; 5] = Default::default();
        let mut numbers: [Vec<i64>; 3] = Default::default();
        for (key, (receipt, pos)) in latest {
            keys[0].push(&key.room_id);
            keys[1].push(&key.user_id);
            keys[2].push(&key.kind);
            keys[3].push(key.thread.as_deref().unwrap_or(""));
            keys[4].push(&receipt.event_id);
            numbers[0].push(to_i64(receipt.event_pos.0));
            numbers[1].push(to_i64(receipt.ts));
            numbers[2].push(pos);
        }
        let [rooms, users, kinds, threads, events] = keys;
        let [event_positions, timestamps, positions] = numbers;
        sqlx::query(
            "INSERT INTO receipts (room_id, user_id, kind, thread, event_id, event_pos, ts, pos) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::int8[], $7::int8[], $8::int8[]) \
             ON CONFLICT (room_id, user_id, kind, thread) DO UPDATE SET \
             event_id = excluded.event_id, event_pos = excluded.event_pos, ts = excluded.ts, \
             pos = excluded.pos",
        )
        .bind(rooms)
        .bind(users)
        .bind(kinds)
        .bind(threads)
        .bind(events)
        .bind(event_positions)
        .bind(timestamps)
        .bind(positions)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(())
}

/// Aliases (set, then deleted), the directory, redactions, profiles, forgotten rooms and the
/// media quota.
pub(super) async fn write_records(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing aliases, the directory, redactions and profiles";
    if !changes.aliases.is_empty() {
        let latest: BTreeMap<&str, &crate::Alias> =
            changes.aliases.iter().map(|a| (a.alias.as_str(), a)).collect();
        let mut columns: [Vec<&str>; 3] = Default::default();
        for alias in latest.into_values() {
            columns[0].push(&alias.alias);
            columns[1].push(&alias.room_id);
            columns[2].push(&alias.creator);
        }
        let [aliases, rooms, creators] = columns;
        sqlx::query(
            "INSERT INTO aliases (alias, room_id, creator) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (alias) DO UPDATE SET room_id = excluded.room_id, \
             creator = excluded.creator",
        )
        .bind(aliases)
        .bind(rooms)
        .bind(creators)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_aliases.is_empty() {
        sqlx::query("DELETE FROM aliases WHERE alias = ANY($1::text[])")
            .bind(&changes.deleted_aliases)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    if !changes.directory.is_empty() {
        let latest: BTreeMap<&str, bool> =
            changes.directory.iter().map(|(room, published)| (room.as_str(), *published)).collect();
        let (publish, withdraw) = split_by_flag(latest);
        sqlx::query(
            "WITH gone AS (DELETE FROM directory WHERE room_id = ANY($2::text[])) \
             INSERT INTO directory (room_id) SELECT * FROM unnest($1::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(publish)
        .bind(withdraw)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (listing, published) in &changes.appservice_directory {
        let query = if *published {
            "INSERT INTO appservice_room_list (appservice_id, network_id, room_id) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM appservice_room_list \
             WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3"
        };
        sqlx::query(query)
            .bind(&listing.appservice_id)
            .bind(&listing.network_id)
            .bind(&listing.room_id)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    if !changes.redactions.is_empty() {
        let latest: BTreeMap<&str, &str> =
            changes.redactions.iter().map(|(e, r)| (e.as_str(), r.as_str())).collect();
        let (events, redactions): (Vec<&str>, Vec<&str>) = latest.into_iter().unzip();
        sqlx::query(
            "INSERT INTO redactions (event_id, redaction_id) \
             SELECT * FROM unnest($1::text[], $2::text[]) \
             ON CONFLICT (event_id) DO UPDATE SET redaction_id = excluded.redaction_id",
        )
        .bind(events)
        .bind(redactions)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.profiles.is_empty() {
        let latest: BTreeMap<&str, &crate::Profile> =
            changes.profiles.iter().map(|(user, profile)| (user.as_str(), profile)).collect();
        let mut users = Vec::new();
        let mut names: Vec<Option<&str>> = Vec::new();
        let mut avatars: Vec<Option<&str>> = Vec::new();
        for (user, profile) in latest {
            users.push(user);
            names.push(profile.displayname.as_deref());
            avatars.push(profile.avatar_url.as_deref());
        }
        sqlx::query(
            "INSERT INTO profiles (user_id, displayname, avatar_url) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, \
             avatar_url = excluded.avatar_url",
        )
        .bind(users)
        .bind(names)
        .bind(avatars)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.forgotten.is_empty() {
        let latest: BTreeMap<(&str, &str), bool> = changes
            .forgotten
            .iter()
            .map(|(user, room, forgotten)| ((room.as_str(), user.as_str()), *forgotten))
            .collect();
        let (forget, remember) = split_by_flag(latest);
        let (forget_rooms, forget_users): (Vec<&str>, Vec<&str>) = forget.into_iter().unzip();
        let (rooms, users): (Vec<&str>, Vec<&str>) = remember.into_iter().unzip();
        sqlx::query(
            "WITH gone AS (DELETE FROM forgotten f \
                 USING unnest($3::text[], $4::text[]) AS d(room_id, user_id) \
                 WHERE f.room_id = d.room_id AND f.user_id = d.user_id) \
             INSERT INTO forgotten (room_id, user_id) \
             SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(forget_rooms)
        .bind(forget_users)
        .bind(rooms)
        .bind(users)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.media_usage.is_empty() {
        let latest: BTreeMap<&str, i64> = changes
            .media_usage
            .iter()
            .map(|(user, bytes)| (user.as_str(), to_i64(*bytes)))
            .collect();
        let (users, bytes): (Vec<&str>, Vec<i64>) = latest.into_iter().unzip();
        sqlx::query(
            "INSERT INTO media_usage (user_id, bytes) SELECT * FROM unnest($1::text[], $2::int8[]) \
             ON CONFLICT (user_id) DO UPDATE SET bytes = excluded.bytes",
        )
        .bind(users)
        .bind(bytes)
        .execute(&mut *tx)
        .await
        .doing("writing media quotas")?;
    }
    Ok(())
}

/// The keys whose flag is set, and those whose flag is not.
fn split_by_flag<K>(flags: BTreeMap<K, bool>) -> (Vec<K>, Vec<K>) {
    let (set, unset): (Vec<_>, Vec<_>) = flags.into_iter().partition(|(_, flag)| *flag);
    (set.into_iter().map(|(k, _)| k).collect(), unset.into_iter().map(|(k, _)| k).collect())
}
