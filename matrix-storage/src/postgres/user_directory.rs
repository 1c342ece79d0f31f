//! The user directory (migration 13): its part of a change set ([`write`]) and its reads.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore};
use crate::{ChangeSet, DirectoryUser, Result, UserDirectoryStore};

/// Writes the change set's user directory entries (the last one of a user wins, then the
/// deletions) and public rooms.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing the user directory";
    if !changes.directory_users.is_empty() {
        let latest: BTreeMap<&str, &DirectoryUser> =
            changes.directory_users.iter().map(|u| (u.user_id.as_str(), u)).collect();
        let mut users = Vec::new();
        let mut names: Vec<Option<&str>> = Vec::new();
        let mut avatars: Vec<Option<&str>> = Vec::new();
        let mut search_ids = Vec::new();
        let mut search_names: Vec<Option<String>> = Vec::new();
        for (user, entry) in latest {
            users.push(user);
            names.push(entry.displayname.as_deref());
            avatars.push(entry.avatar_url.as_deref());
            search_ids.push(user.to_lowercase());
            search_names.push(entry.displayname.as_deref().map(str::to_lowercase));
        }
        sqlx::query(
            "INSERT INTO user_directory (user_id, displayname, avatar_url, search_id, \
             search_name) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
             ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, \
             avatar_url = excluded.avatar_url, search_id = excluded.search_id, \
             search_name = excluded.search_name",
        )
        .bind(users)
        .bind(names)
        .bind(avatars)
        .bind(search_ids)
        .bind(search_names)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if !changes.deleted_directory_users.is_empty() {
        sqlx::query("DELETE FROM user_directory WHERE user_id = ANY($1)")
            .bind(&changes.deleted_directory_users)
            .execute(&mut *tx)
            .await
            .doing(DOING)?;
    }
    for (room, public) in &changes.public_join_rules {
        let sql = if *public {
            "INSERT INTO public_join_rooms (room_id) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM public_join_rooms WHERE room_id = $1"
        };
        sqlx::query(sql).bind(room).execute(&mut *tx).await.doing(DOING)?;
    }
    Ok(())
}

#[async_trait]
impl UserDirectoryStore for PostgresStore {
    async fn search_user_directory(&self, term: &str, limit: usize) -> Result<Vec<DirectoryUser>> {
        const DOING: &str = "searching the user directory";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT user_id, displayname, avatar_url FROM user_directory \
             WHERE strpos(search_id, $1) > 0 OR strpos(search_name, $1) > 0 \
             ORDER BY user_id COLLATE \"C\" LIMIT $2",
        )
        .bind(term)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(DirectoryUser {
                    user_id: row.try_get(0).doing(DOING)?,
                    displayname: row.try_get(1).doing(DOING)?,
                    avatar_url: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }

    async fn public_join_rooms(&self) -> Result<Vec<String>> {
        const DOING: &str = "reading the public rooms";
        let rows =
            sqlx::query("SELECT room_id FROM public_join_rooms ORDER BY room_id COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await
                .doing(DOING)?;
        rows.iter().map(|row| row.try_get(0).doing(DOING)).collect()
    }
}
