//! Administrators' decisions about users and their tokens acting as users (migration 24):
//! their part of a change set ([`write`]) and their reads.

use async_trait::async_trait;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{ChangeSet, ModerationStore, PuppetToken, RatelimitOverride, Result, UserModeration};

/// Writes the change set's moderation records and administrators' tokens.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing users' moderation";
    for record in &changes.user_moderation {
        if record.is_empty() {
            sqlx::query("DELETE FROM user_moderation WHERE user_id = $1")
                .bind(&record.user_id)
                .execute(&mut *tx)
                .await
                .doing(DOING)?;
            continue;
        }
        sqlx::query(
            "INSERT INTO user_moderation \
             (user_id, shadow_banned, suspended, messages_per_second, burst_count) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET \
             shadow_banned = excluded.shadow_banned, suspended = excluded.suspended, \
             messages_per_second = excluded.messages_per_second, \
             burst_count = excluded.burst_count",
        )
        .bind(&record.user_id)
        .bind(record.shadow_banned)
        .bind(record.suspended)
        .bind(record.ratelimit.map(|l| to_i64(l.messages_per_second)))
        .bind(record.ratelimit.map(|l| to_i64(l.burst_count)))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for token in &changes.puppet_tokens {
        sqlx::query(
            "INSERT INTO puppet_tokens (token_hash, user_id, issued_by, valid_until_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO UPDATE SET \
             user_id = excluded.user_id, issued_by = excluded.issued_by, \
             valid_until_ms = excluded.valid_until_ms",
        )
        .bind(&token.token_hash)
        .bind(&token.user_id)
        .bind(&token.issued_by)
        .bind(token.valid_until_ms.map(to_i64))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_puppet_tokens.is_empty() {
        sqlx::query("DELETE FROM puppet_tokens WHERE token_hash = ANY($1::text[])")
            .bind(&changes.deleted_puppet_tokens)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    Ok(())
}

#[async_trait]
impl ModerationStore for PostgresStore {
    async fn user_moderation(&self, user_id: &str) -> Result<Option<UserModeration>> {
        const DOING: &str = "reading a user's moderation";
        let row = sqlx::query(
            "SELECT shadow_banned, suspended, messages_per_second, burst_count \
             FROM user_moderation WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        let Some(row) = row else { return Ok(None) };
        let rate: Option<i64> = row.try_get(2).doing(DOING)?;
        let burst: Option<i64> = row.try_get(3).doing(DOING)?;
        let ratelimit = match (rate, burst) {
            (Some(rate), Some(burst)) => Some(RatelimitOverride {
                messages_per_second: to_u64(rate)?,
                burst_count: to_u64(burst)?,
            }),
            _ => None,
        };
        Ok(Some(UserModeration {
            user_id: user_id.to_owned(),
            shadow_banned: row.try_get(0).doing(DOING)?,
            suspended: row.try_get(1).doing(DOING)?,
            ratelimit,
        }))
    }

    async fn puppet_token(&self, token_hash: &str) -> Result<Option<PuppetToken>> {
        const DOING: &str = "reading an administrator's token";
        let row = sqlx::query(
            "SELECT user_id, issued_by, valid_until_ms FROM puppet_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        let Some(row) = row else { return Ok(None) };
        let until: Option<i64> = row.try_get(2).doing(DOING)?;
        Ok(Some(PuppetToken {
            token_hash: token_hash.to_owned(),
            user_id: row.try_get(0).doing(DOING)?,
            issued_by: row.try_get(1).doing(DOING)?,
            valid_until_ms: until.map(to_u64).transpose()?,
        }))
    }
}
