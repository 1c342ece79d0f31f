//! Registration tokens (migration 22): their part of a change set ([`write`]) and their
//! reads.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{ChangeSet, RegistrationToken, RegistrationTokenStore, Result};

const COLUMNS: &str = "token, uses_allowed, pending, completed, expiry_time";

/// Writes the change set's registration tokens.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing registration tokens";
    for token in &changes.registration_tokens {
        sqlx::query(&format!(
            "INSERT INTO registration_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (token) DO UPDATE SET uses_allowed = excluded.uses_allowed, \
             pending = excluded.pending, completed = excluded.completed, \
             expiry_time = excluded.expiry_time"
        ))
        .bind(&token.token)
        .bind(token.uses_allowed.map(to_i64))
        .bind(to_i64(token.pending))
        .bind(to_i64(token.completed))
        .bind(token.expiry_time.map(to_i64))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_registration_tokens.is_empty() {
        sqlx::query("DELETE FROM registration_tokens WHERE token = ANY($1::text[])")
            .bind(&changes.deleted_registration_tokens)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    Ok(())
}

fn token(row: &PgRow) -> Result<RegistrationToken> {
    const DOING: &str = "reading a registration token";
    let optional = |n: Option<i64>| n.map(to_u64).transpose();
    Ok(RegistrationToken {
        token: row.try_get(0).doing(DOING)?,
        uses_allowed: optional(row.try_get(1).doing(DOING)?)?,
        pending: to_u64(row.try_get(2).doing(DOING)?)?,
        completed: to_u64(row.try_get(3).doing(DOING)?)?,
        expiry_time: optional(row.try_get(4).doing(DOING)?)?,
    })
}

#[async_trait]
impl RegistrationTokenStore for PostgresStore {
    async fn registration_token(&self, token_value: &str) -> Result<Option<RegistrationToken>> {
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM registration_tokens WHERE token = $1"))
                .bind(token_value)
                .fetch_optional(&self.pool)
                .await
                .doing("reading a registration token")?;
        row.as_ref().map(token).transpose()
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM registration_tokens ORDER BY token COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .doing("reading registration tokens")?;
        rows.iter().map(token).collect()
    }
}
