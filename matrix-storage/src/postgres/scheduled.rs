//! OpenID tokens and delayed events (migration 17): their part of a change set ([`write`])
//! and their reads.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{ChangeSet, DelayedEvent, DelayedEventStore, OpenIdStore, OpenIdToken, Result};

/// Writes the change set's OpenID tokens and delayed events.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing OpenID tokens and delayed events";
    for (hash, token) in &changes.openid_tokens {
        sqlx::query(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (token_hash) DO UPDATE SET user_id = excluded.user_id, \
             expires_ts = excluded.expires_ts",
        )
        .bind(hash)
        .bind(&token.user_id)
        .bind(to_i64(token.expires_ts))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_openid_tokens.is_empty() {
        sqlx::query("DELETE FROM openid_tokens WHERE token_hash = ANY($1::text[])")
            .bind(&changes.deleted_openid_tokens)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    for event in &changes.delayed_events {
        sqlx::query(
            "INSERT INTO delayed_events (user_id, delay_id, device_id, room_id, event_type, \
             state_key, content, delay_ms, scheduled_at, send_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (user_id, delay_id) DO UPDATE SET device_id = excluded.device_id, \
             room_id = excluded.room_id, event_type = excluded.event_type, \
             state_key = excluded.state_key, content = excluded.content, \
             delay_ms = excluded.delay_ms, scheduled_at = excluded.scheduled_at, \
             send_ts = excluded.send_ts",
        )
        .bind(&event.user_id)
        .bind(&event.delay_id)
        .bind(&event.device_id)
        .bind(&event.room_id)
        .bind(&event.kind)
        .bind(event.state_key.as_deref())
        .bind(&event.content)
        .bind(to_i64(event.delay_ms))
        .bind(to_i64(event.scheduled_at))
        .bind(to_i64(event.send_ts()))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (user, delay_id) in &changes.deleted_delayed_events {
        sqlx::query("DELETE FROM delayed_events WHERE user_id = $1 AND delay_id = $2")
            .bind(user)
            .bind(delay_id)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    Ok(())
}

const COLUMNS: &str = "user_id, delay_id, device_id, room_id, event_type, state_key, content, \
                       delay_ms, scheduled_at";

fn delayed(row: &PgRow) -> Result<DelayedEvent> {
    const DOING: &str = "reading a delayed event";
    Ok(DelayedEvent {
        user_id: row.try_get(0).doing(DOING)?,
        delay_id: row.try_get(1).doing(DOING)?,
        device_id: row.try_get(2).doing(DOING)?,
        room_id: row.try_get(3).doing(DOING)?,
        kind: row.try_get(4).doing(DOING)?,
        state_key: row.try_get(5).doing(DOING)?,
        content: row.try_get(6).doing(DOING)?,
        delay_ms: to_u64(row.try_get(7).doing(DOING)?)?,
        scheduled_at: to_u64(row.try_get(8).doing(DOING)?)?,
    })
}

#[async_trait]
impl OpenIdStore for PostgresStore {
    async fn openid_token(&self, token_hash: &str) -> Result<Option<OpenIdToken>> {
        const DOING: &str = "reading an OpenID token";
        let row =
            sqlx::query("SELECT user_id, expires_ts FROM openid_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .doing(DOING)?;
        row.map(|row| {
            Ok(OpenIdToken {
                user_id: row.try_get(0).doing(DOING)?,
                expires_ts: to_u64(row.try_get(1).doing(DOING)?)?,
            })
        })
        .transpose()
    }

    async fn expired_openid_tokens(&self, now_ts: u64, limit: usize) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT token_hash FROM openid_tokens WHERE expires_ts <= $1 \
             ORDER BY token_hash LIMIT $2",
        )
        .bind(to_i64(now_ts))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing("reading expired OpenID tokens")
    }
}

#[async_trait]
impl DelayedEventStore for PostgresStore {
    async fn delayed_event(&self, user_id: &str, delay_id: &str) -> Result<Option<DelayedEvent>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delayed_events WHERE user_id = $1 AND delay_id = $2"
        ))
        .bind(user_id)
        .bind(delay_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a delayed event")?;
        row.as_ref().map(delayed).transpose()
    }

    async fn delayed_events_of(&self, user_id: &str) -> Result<Vec<DelayedEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delayed_events WHERE user_id = $1 ORDER BY send_ts, delay_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading delayed events")?;
        rows.iter().map(delayed).collect()
    }

    async fn next_delayed_events(&self, limit: usize) -> Result<Vec<DelayedEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM delayed_events ORDER BY send_ts, user_id, delay_id LIMIT $1"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing("reading delayed events")?;
        rows.iter().map(delayed).collect()
    }
}
