//! Presence (migration 8): its part of a change set ([`write`]) and its reads.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{ChangeSet, ErrorKind, Presence, PresenceState, PresenceStore, Result, StorageError};

/// Writes the change set's presence (the last one of a user wins).
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing presence";
    if changes.presence.is_empty() {
        return Ok(());
    }
    let latest: BTreeMap<&str, &Presence> =
        changes.presence.iter().map(|(user, presence)| (user.as_str(), presence)).collect();
    let mut users = Vec::new();
    let mut states = Vec::new();
    let mut messages: Vec<Option<&str>> = Vec::new();
    let mut active_ts = Vec::new();
    let mut active = Vec::new();
    for (user, presence) in latest {
        users.push(user);
        states.push(presence.state.as_str());
        messages.push(presence.status_msg.as_deref());
        active_ts.push(to_i64(presence.last_active_ts));
        active.push(presence.currently_active);
    }
    sqlx::query(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::boolean[]) \
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, \
         status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, \
         currently_active = excluded.currently_active",
    )
    .bind(users)
    .bind(states)
    .bind(messages)
    .bind(active_ts)
    .bind(active)
    .execute(&mut *tx)
    .await
    .doing(DOING)?;
    Ok(())
}

fn presence(row: &PgRow) -> Result<(String, Presence)> {
    const DOING: &str = "reading presence";
    let user: String = row.try_get(0).doing(DOING)?;
    let state: String = row.try_get(1).doing(DOING)?;
    let state = PresenceState::from_name(&state).ok_or_else(|| {
        StorageError::new(ErrorKind::Corrupt, format!("unknown presence state of {user}"))
    })?;
    let presence = Presence {
        state,
        status_msg: row.try_get(2).doing(DOING)?,
        last_active_ts: to_u64(row.try_get(3).doing(DOING)?)?,
        currently_active: row.try_get(4).doing(DOING)?,
    };
    Ok((user, presence))
}

const COLUMNS: &str = "user_id, state, status_msg, last_active_ts, currently_active";

#[async_trait]
impl PresenceStore for PostgresStore {
    async fn presence(&self, user_id: &str) -> Result<Option<Presence>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM presence WHERE user_id = $1"))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .doing("reading presence")?;
        row.as_ref().map(presence).transpose().map(|p| p.map(|(_, p)| p))
    }

    async fn presences(&self, user_ids: &[&str]) -> Result<Vec<(String, Presence)>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM presence WHERE user_id = ANY($1::text[]) ORDER BY user_id"
        ))
        .bind(user_ids)
        .fetch_all(&self.pool)
        .await
        .doing("reading presence")?;
        rows.iter().map(presence).collect()
    }

    async fn present_users(&self) -> Result<Vec<(String, Presence)>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM presence WHERE state <> 'offline' ORDER BY user_id"
        ))
        .fetch_all(&self.pool)
        .await
        .doing("reading presence")?;
        rows.iter().map(presence).collect()
    }
}
