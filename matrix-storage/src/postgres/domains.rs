//! The reads of account data, media and the smaller domains (aliases and the directory,
//! end-to-end encryption keys and the device-list stream, to-device queues, receipts,
//! redactions, forgotten rooms, profiles and transaction ids), and [`claim_key`].
//!
//! Sentinels, as the migrations document them: global account data has the room `''`, an
//! unthreaded receipt the thread `''`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{
    AccountDataChange, AccountDataItem, AccountDataStore, AddressedToDevice, Alias,
    AppserviceListing, ClaimedKey, DirectoryStore, E2eeStore, FallbackKey, InboxStore, Media,
    MediaStore, PendingMedia, Profile, QuarantineChange, Receipt, ReceiptKey, ReceiptStore, Result,
    StoredReceipt, StreamPos, ToDeviceMessage, ToDeviceUsage,
};

/// `''` is "none" in a key column.
fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[async_trait]
impl AccountDataStore for PostgresStore {
    async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND kind = $3",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or(""))
        .bind(kind)
        .fetch_optional(&self.pool)
        .await
        .doing("reading account data")
    }

    async fn all_account_data(&self, user_id: &str) -> Result<Vec<AccountDataItem>> {
        const DOING: &str = "reading account data";
        let rows = sqlx::query(
            "SELECT room_id, kind, content FROM account_data WHERE user_id = $1 \
             ORDER BY room_id COLLATE \"C\", kind COLLATE \"C\"",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(AccountDataItem {
                    room_id: optional(row.try_get(0).doing(DOING)?),
                    kind: row.try_get(1).doing(DOING)?,
                    content: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn account_data_changes(
        &self,
        user_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataChange>> {
        const DOING: &str = "reading account-data changes";
        if after >= upto {
            return Ok(Vec::new());
        }
        // Each item has one row, at the position of its last write: listed once.
        let rows = sqlx::query(
            "SELECT room_id, kind FROM account_data WHERE user_id = $1 AND pos > $2 AND pos <= $3 \
             ORDER BY room_id COLLATE \"C\", kind COLLATE \"C\"",
        )
        .bind(user_id)
        .bind(to_i64(after.0))
        .bind(to_i64(upto.0))
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(AccountDataChange {
                    room_id: optional(row.try_get(0).doing(DOING)?),
                    kind: row.try_get(1).doing(DOING)?,
                })
            })
            .collect()
    }
}

impl PostgresStore {
    /// The media rows matching `condition` on `value` (`$1`, which a condition may leave
    /// unused) whose keys are above `after`, sorted by key in byte order, at most `limit`.
    async fn media_where(
        &self,
        condition: &str,
        value: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>> {
        const DOING: &str = "reading media metadata";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(&format!(
            "SELECT media_id, content_type, size, upload_name, uploader, created_ts, sha256, \
             authenticated, quarantined_by, safe_from_quarantine FROM media \
             WHERE {condition} AND ($1 = $1) AND media_id COLLATE \"C\" > $2 \
             ORDER BY media_id COLLATE \"C\" LIMIT $3"
        ))
        .bind(value)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(Media {
                    media_id: row.try_get(0).doing(DOING)?,
                    content_type: row.try_get(1).doing(DOING)?,
                    size: to_u64(row.try_get(2).doing(DOING)?)?,
                    upload_name: row.try_get(3).doing(DOING)?,
                    uploader: row.try_get(4).doing(DOING)?,
                    created_ts: row.try_get(5).doing(DOING)?,
                    sha256: row.try_get(6).doing(DOING)?,
                    authenticated: row.try_get(7).doing(DOING)?,
                    quarantined_by: row.try_get(8).doing(DOING)?,
                    safe_from_quarantine: row.try_get(9).doing(DOING)?,
                })
            })
            .collect()
    }

    /// The pending media rows matching `condition` on `value`, sorted by media id.
    async fn pending_media_where(&self, condition: &str, value: &str) -> Result<Vec<PendingMedia>> {
        const DOING: &str = "reading pending media";
        let rows = sqlx::query(&format!(
            "SELECT media_id, creator, created_ts, expires_ts FROM pending_media \
             WHERE {condition} ORDER BY media_id"
        ))
        .bind(value)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.into_iter()
            .map(|row| {
                Ok(PendingMedia {
                    media_id: row.try_get(0).doing(DOING)?,
                    creator: row.try_get(1).doing(DOING)?,
                    created_ts: row.try_get(2).doing(DOING)?,
                    expires_ts: row.try_get(3).doing(DOING)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl MediaStore for PostgresStore {
    async fn media(&self, media_id: &str) -> Result<Option<Media>> {
        Ok(self.media_where("media_id = $1", media_id, "", usize::MAX).await?.pop())
    }

    async fn media_rows(&self, after: &str, limit: usize) -> Result<Vec<Media>> {
        self.media_where("TRUE", "", after, limit).await
    }

    async fn media_of(&self, uploader: &str, after: &str, limit: usize) -> Result<Vec<Media>> {
        self.media_where("uploader = $1", uploader, after, limit).await
    }

    async fn media_with_content(
        &self,
        sha256: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Media>> {
        self.media_where("sha256 = $1", sha256, after, limit).await
    }

    async fn quarantine_changes(&self, after: u64, limit: usize) -> Result<Vec<QuarantineChange>> {
        const DOING: &str = "reading quarantine changes";
        let rows = sqlx::query(
            "SELECT id, media_key, quarantined FROM quarantine_changes WHERE id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(to_i64(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(QuarantineChange {
                    id: to_u64(row.try_get(0).doing(DOING)?)?,
                    key: row.try_get(1).doing(DOING)?,
                    quarantined: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn last_quarantine_change(&self) -> Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM quarantine_changes")
            .fetch_one(&self.pool)
            .await
            .doing("reading the last quarantine change")?;
        to_u64(last)
    }

    async fn pending_media(&self, media_id: &str) -> Result<Option<PendingMedia>> {
        Ok(self.pending_media_where("media_id = $1", media_id).await?.pop())
    }

    async fn pending_media_of(&self, user_id: &str) -> Result<Vec<PendingMedia>> {
        self.pending_media_where("creator = $1", user_id).await
    }

    async fn media_usage(&self, user_id: &str) -> Result<u64> {
        let bytes: Option<i64> =
            sqlx::query_scalar("SELECT bytes FROM media_usage WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .doing("reading a media quota")?;
        bytes.map_or(Ok(0), to_u64)
    }
}

#[async_trait]
impl DirectoryStore for PostgresStore {
    async fn alias(&self, alias: &str) -> Result<Option<Alias>> {
        const DOING: &str = "reading an alias";
        let row = sqlx::query("SELECT room_id, creator FROM aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await
            .doing(DOING)?;
        row.map(|row| {
            Ok(Alias {
                alias: alias.to_owned(),
                room_id: row.try_get(0).doing(DOING)?,
                creator: row.try_get(1).doing(DOING)?,
            })
        })
        .transpose()
    }

    async fn room_aliases(&self, room_id: &str) -> Result<Vec<Alias>> {
        const DOING: &str = "reading a room's aliases";
        let rows = sqlx::query(
            "SELECT alias, creator FROM aliases WHERE room_id = $1 ORDER BY alias COLLATE \"C\"",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(Alias {
                    alias: row.try_get(0).doing(DOING)?,
                    room_id: room_id.to_owned(),
                    creator: row.try_get(1).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn published(&self, room_id: &str) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM directory WHERE room_id = $1)")
            .bind(room_id)
            .fetch_one(&self.pool)
            .await
            .doing("reading the room directory")
    }

    async fn published_rooms(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT room_id FROM directory ORDER BY room_id COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await
            .doing("reading the room directory")
    }

    async fn appservice_listings(&self) -> Result<Vec<AppserviceListing>> {
        const DOING: &str = "reading the application services' room lists";
        let rows = sqlx::query(
            "SELECT appservice_id, network_id, room_id FROM appservice_room_list \
             ORDER BY appservice_id COLLATE \"C\", network_id COLLATE \"C\", \
             room_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(AppserviceListing {
                    appservice_id: row.try_get(0).doing(DOING)?,
                    network_id: row.try_get(1).doing(DOING)?,
                    room_id: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl E2eeStore for PostgresStore {
    async fn device_keys(&self, user_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        const DOING: &str = "reading device keys";
        let rows = sqlx::query(
            "SELECT device_id, keys FROM device_keys WHERE user_id = $1 \
             ORDER BY device_id COLLATE \"C\"",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| Ok((row.try_get(0).doing(DOING)?, row.try_get(1).doing(DOING)?)))
            .collect()
    }

    async fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        key_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT key FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a one-time key")
    }

    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<BTreeMap<String, u64>> {
        const DOING: &str = "counting one-time keys";
        // The algorithm is the key id up to its first `:` (all of it if it has none).
        let rows = sqlx::query(
            "SELECT split_part(key_id, ':', 1), count(*) FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2 GROUP BY 1",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| Ok((row.try_get(0).doing(DOING)?, to_u64(row.try_get(1).doing(DOING)?)?)))
            .collect()
    }

    async fn fallback_keys(&self, user_id: &str, device_id: &str) -> Result<Vec<FallbackKey>> {
        const DOING: &str = "reading fallback keys";
        let rows = sqlx::query(
            "SELECT algorithm, key_id, key, used FROM fallback_keys \
             WHERE user_id = $1 AND device_id = $2 ORDER BY algorithm COLLATE \"C\"",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(FallbackKey {
                    user_id: user_id.to_owned(),
                    device_id: device_id.to_owned(),
                    algorithm: row.try_get(0).doing(DOING)?,
                    key_id: row.try_get(1).doing(DOING)?,
                    key: row.try_get(2).doing(DOING)?,
                    used: row.try_get(3).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn device_list_changes(&self, after: StreamPos, upto: StreamPos) -> Result<Vec<String>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT user_id FROM device_list_changes WHERE pos > $1 AND pos <= $2 \
             GROUP BY user_id ORDER BY user_id COLLATE \"C\"",
        )
        .bind(to_i64(after.0))
        .bind(to_i64(upto.0))
        .fetch_all(&self.pool)
        .await
        .doing("reading device-list changes")
    }
}

#[async_trait]
impl InboxStore for PostgresStore {
    async fn to_device(
        &self,
        user_id: &str,
        device_id: &str,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>> {
        const DOING: &str = "reading to-device messages";
        if after >= upto {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT pos, sender, kind, content FROM to_device \
             WHERE user_id = $1 AND device_id = $2 AND pos > $3 AND pos <= $4 \
             ORDER BY pos LIMIT $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(to_i64(after.0))
        .bind(to_i64(upto.0))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(ToDeviceMessage {
                    pos: StreamPos(to_u64(row.try_get(0).doing(DOING)?)?),
                    sender: row.try_get(1).doing(DOING)?,
                    kind: row.try_get(2).doing(DOING)?,
                    content: row.try_get(3).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn to_device_range(
        &self,
        after: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Result<Vec<AddressedToDevice>> {
        const DOING: &str = "reading to-device messages by position";
        if after >= upto {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT user_id, device_id, pos, sender, kind, content FROM to_device \
             WHERE pos > $1 AND pos <= $2 ORDER BY pos LIMIT $3",
        )
        .bind(to_i64(after.0))
        .bind(to_i64(upto.0))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(AddressedToDevice {
                    user_id: row.try_get(0).doing(DOING)?,
                    device_id: row.try_get(1).doing(DOING)?,
                    message: ToDeviceMessage {
                        pos: StreamPos(to_u64(row.try_get(2).doing(DOING)?)?),
                        sender: row.try_get(3).doing(DOING)?,
                        kind: row.try_get(4).doing(DOING)?,
                        content: row.try_get(5).doing(DOING)?,
                    },
                })
            })
            .collect()
    }

    async fn to_device_usage(
        &self,
        user_id: &str,
        device_id: &str,
        sender: &str,
    ) -> Result<ToDeviceUsage> {
        const DOING: &str = "measuring a to-device queue";
        // Sizes as `NewToDevice::size`: the bytes of content, type and sender.
        let row = sqlx::query(
            "SELECT count(*), COALESCE(sum(size), 0), count(*) FILTER (WHERE sender = $3), \
             COALESCE(sum(size) FILTER (WHERE sender = $3), 0) \
             FROM (SELECT sender, octet_length(content) + octet_length(kind) \
                 + octet_length(sender) AS size \
                 FROM to_device WHERE user_id = $1 AND device_id = $2) AS m",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(sender)
        .fetch_one(&self.pool)
        .await
        .doing(DOING)?;
        let number = |i: usize| -> Result<u64> { to_u64(row.try_get(i).doing(DOING)?) };
        Ok(ToDeviceUsage {
            messages: number(0)?,
            bytes: number(1)?,
            sender_messages: number(2)?,
            sender_bytes: number(3)?,
        })
    }
}

/// A receipt of `room_id` from `user_id, kind, thread, event_id, event_pos, ts, pos`.
fn stored_receipt(room_id: &str, row: &PgRow) -> Result<StoredReceipt> {
    const DOING: &str = "reading receipts";
    let thread: String = row.try_get(2).doing(DOING)?;
    Ok(StoredReceipt {
        pos: StreamPos(to_u64(row.try_get(6).doing(DOING)?)?),
        receipt: Receipt {
            key: ReceiptKey {
                room_id: room_id.to_owned(),
                user_id: row.try_get(0).doing(DOING)?,
                kind: row.try_get(1).doing(DOING)?,
                thread: optional(thread),
            },
            event_id: row.try_get(3).doing(DOING)?,
            event_pos: StreamPos(to_u64(row.try_get(4).doing(DOING)?)?),
            ts: to_u64(row.try_get(5).doing(DOING)?)?,
        },
    })
}

const RECEIPT_COLUMNS: &str = "user_id, kind, thread, event_id, event_pos, ts, pos";

#[async_trait]
impl ReceiptStore for PostgresStore {
    async fn receipts(
        &self,
        room_id: &str,
        after: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<StoredReceipt>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE room_id = $1 AND pos > $2 AND pos <= $3 \
             ORDER BY pos"
        ))
        .bind(room_id)
        .bind(to_i64(after.0))
        .bind(to_i64(upto.0))
        .fetch_all(&self.pool)
        .await
        .doing("reading receipts")?;
        rows.iter().map(|row| stored_receipt(room_id, row)).collect()
    }

    async fn user_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<StoredReceipt>> {
        let rows = sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE room_id = $1 AND user_id = $2 \
             ORDER BY kind COLLATE \"C\", thread COLLATE \"C\""
        ))
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading a user's receipts")?;
        rows.iter().map(|row| stored_receipt(room_id, row)).collect()
    }
}

/// The redaction that redacted an event.
pub(super) async fn redaction_of(pool: &PgPool, event_id: &str) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT redaction_id FROM redactions WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
        .doing("reading a redaction")
}

/// Whether a user forgot a room.
pub(super) async fn forgotten(pool: &PgPool, room_id: &str, user_id: &str) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM forgotten WHERE room_id = $1 AND user_id = $2)",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_one(pool)
    .await
    .doing("reading forgotten rooms")
}

/// A user's profile.
pub(super) async fn profile(pool: &PgPool, user_id: &str) -> Result<Option<Profile>> {
    const DOING: &str = "reading a profile";
    let row = sqlx::query("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
        .doing(DOING)?;
    row.map(|row| {
        Ok(Profile {
            displayname: row.try_get(0).doing(DOING)?,
            avatar_url: row.try_get(1).doing(DOING)?,
        })
    })
    .transpose()
}

/// What a client transaction id produced.
pub(super) async fn transaction_id(
    pool: &PgPool,
    user_id: &str,
    device_id: &str,
    scope: &str,
    txn_id: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT result FROM transaction_ids \
         WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(scope)
    .bind(txn_id)
    .fetch_optional(pool)
    .await
    .doing("reading a transaction id")
}

/// Hands out a device's first one-time key of `algorithm` (in key-id order) and deletes it,
/// or else its fallback key of that algorithm, marked used. One statement, committed when it
/// returns (`synchronous_commit = on`): durable. Exactly once, across processes too: the key
/// row is locked (`FOR UPDATE`) before it is deleted, and a claim that finds it locked by
/// another takes the next (`SKIP LOCKED`) instead of waiting.
pub(super) async fn claim_key(
    pool: &PgPool,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<ClaimedKey>> {
    const DOING: &str = "claiming a one-time key";
    // Key ids starting with `algorithm:` are those in [`algorithm:`, `algorithm;`) in byte
    // order (`;` follows `:`), a range of the key's index (key ids are COLLATE "C").
    let row = sqlx::query(
        "WITH one_time AS ( \
             DELETE FROM one_time_keys WHERE ctid = ( \
                 SELECT ctid FROM one_time_keys \
                 WHERE user_id = $1 AND device_id = $2 AND key_id >= $3 AND key_id < $4 \
                 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING key_id, key), \
         fallback AS ( \
             UPDATE fallback_keys SET used = true \
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $5 \
             AND NOT EXISTS (SELECT 1 FROM one_time) \
             RETURNING key_id, key) \
         SELECT key_id, key, false FROM one_time UNION ALL SELECT key_id, key, true FROM fallback",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(format!("{algorithm}:"))
    .bind(format!("{algorithm};"))
    .bind(algorithm)
    .fetch_optional(pool)
    .await
    .doing(DOING)?;
    row.map(|row| {
        Ok(ClaimedKey {
            key_id: row.try_get(0).doing(DOING)?,
            key: row.try_get(1).doing(DOING)?,
            fallback: row.try_get(2).doing(DOING)?,
        })
    })
    .transpose()
}

/// [`claim_key`] in a task of its own, as [`crate::Storage::apply`] runs: a caller that stops
/// waiting does not cut the query short on its connection. (The key it claimed is then
/// deleted and handed to no one: lost, never handed out twice.)
pub(super) async fn claim_key_task(
    store: &PostgresStore,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<ClaimedKey>> {
    let pool = store.pool.clone();
    let (user, device, algorithm) =
        (user_id.to_owned(), device_id.to_owned(), algorithm.to_owned());
    let task = tokio::spawn(async move { claim_key(&pool, &user, &device, &algorithm).await });
    task.await.map_err(|e| {
        crate::StorageError::with_source(
            crate::ErrorKind::Unavailable,
            "the claiming task failed",
            e,
        )
    })?
}
