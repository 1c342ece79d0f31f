//! Notifications and pushers' delivery cursors (migration 11): their part of a change set
//! ([`write`]) and their reads.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::{
    AppserviceCursor, AppserviceStore, ChangeSet, NOTIFICATIONS_KEPT, Notification,
    NotificationCounts, NotificationStore, PushCursor, ReadUpTo, Result, StreamPos, UnreadCounts,
};

/// Writes the change set's notifications (keeping each user's newest) and cursors.
pub(super) async fn write(tx: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    const DOING: &str = "writing notifications";
    if !changes.notifications.is_empty() {
        let latest: BTreeMap<(&str, u64), &Notification> =
            changes.notifications.iter().map(|n| ((n.user_id.as_str(), n.pos.0), n)).collect();
        let mut users = Vec::new();
        let mut positions = Vec::new();
        let mut rooms = Vec::new();
        let mut events = Vec::new();
        let mut threads: Vec<Option<&str>> = Vec::new();
        let mut highlights = Vec::new();
        let mut actions: Vec<&[u8]> = Vec::new();
        let mut times = Vec::new();
        for n in latest.into_values() {
            users.push(n.user_id.as_str());
            positions.push(to_i64(n.pos.0));
            rooms.push(n.room_id.as_str());
            events.push(n.event_id.as_str());
            threads.push(n.thread_id.as_deref());
            highlights.push(n.highlight);
            actions.push(&n.actions);
            times.push(to_i64(n.ts));
        }
        let touched: BTreeSet<&str> = users.iter().copied().collect();
        sqlx::query(
            "INSERT INTO notifications \
             (user_id, pos, room_id, event_id, thread_id, highlight, actions, ts) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::boolean[], $7::bytea[], $8::bigint[]) \
             ON CONFLICT (user_id, pos) DO UPDATE SET room_id = excluded.room_id, \
             event_id = excluded.event_id, thread_id = excluded.thread_id, \
             highlight = excluded.highlight, actions = excluded.actions, ts = excluded.ts",
        )
        .bind(&users)
        .bind(positions)
        .bind(rooms)
        .bind(events)
        .bind(threads)
        .bind(highlights)
        .bind(actions)
        .bind(times)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
        let touched: Vec<&str> = touched.into_iter().collect();
        sqlx::query(
            "DELETE FROM notifications n USING unnest($1::text[]) AS u(user_id) \
             WHERE n.user_id = u.user_id AND n.pos < ( \
               SELECT pos FROM notifications k WHERE k.user_id = u.user_id \
               ORDER BY pos DESC OFFSET $2 LIMIT 1)",
        )
        .bind(touched)
        .bind(to_i64(NOTIFICATIONS_KEPT as u64 - 1))
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    for (user, app_id, pushkey) in &changes.deleted_push_cursors {
        sqlx::query("DELETE FROM push_cursors WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user)
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await
            .doing("deleting push cursors")?;
    }
    for c in &changes.push_cursors {
        sqlx::query(
            "INSERT INTO push_cursors (user_id, app_id, pushkey, pos, failures, retry_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, app_id, pushkey) \
             DO UPDATE SET pos = excluded.pos, failures = excluded.failures, \
             retry_at = excluded.retry_at",
        )
        .bind(&c.user_id)
        .bind(&c.app_id)
        .bind(&c.pushkey)
        .bind(to_i64(c.pos.0))
        .bind(i64::from(c.failures))
        .bind(to_i64(c.retry_at))
        .execute(&mut *tx)
        .await
        .doing("writing push cursors")?;
    }
    for c in &changes.appservice_cursors {
        sqlx::query(
            "INSERT INTO appservice_cursors \
             (appservice_id, pos, txn_id, in_flight, failures, retry_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (appservice_id) \
             DO UPDATE SET pos = excluded.pos, txn_id = excluded.txn_id, \
             in_flight = excluded.in_flight, failures = excluded.failures, \
             retry_at = excluded.retry_at",
        )
        .bind(&c.appservice_id)
        .bind(to_i64(c.pos.0))
        .bind(to_i64(c.txn_id))
        .bind(c.in_flight.map(|p| to_i64(p.0)))
        .bind(i64::from(c.failures))
        .bind(to_i64(c.retry_at))
        .execute(&mut *tx)
        .await
        .doing("writing application service cursors")?;
    }
    Ok(())
}

const COLUMNS: &str = "user_id, pos, room_id, event_id, thread_id, highlight, actions, ts";

fn notification(row: &PgRow) -> Result<Notification> {
    const DOING: &str = "reading notifications";
    Ok(Notification {
        user_id: row.try_get("user_id").doing(DOING)?,
        pos: StreamPos(to_u64(row.try_get("pos").doing(DOING)?)?),
        room_id: row.try_get("room_id").doing(DOING)?,
        event_id: row.try_get("event_id").doing(DOING)?,
        thread_id: row.try_get("thread_id").doing(DOING)?,
        highlight: row.try_get("highlight").doing(DOING)?,
        actions: row.try_get("actions").doing(DOING)?,
        ts: to_u64(row.try_get("ts").doing(DOING)?)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<StreamPos>,
        limit_to: usize,
        highlights_only: bool,
    ) -> Result<Vec<Notification>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND pos < $2 \
             AND (highlight OR NOT $3) ORDER BY pos DESC LIMIT $4"
        ))
        .bind(user_id)
        .bind(before.map_or(i64::MAX, |b| to_i64(b.0)))
        .bind(highlights_only)
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .doing("reading notifications")?;
        rows.iter().map(notification).collect()
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: StreamPos,
        limit_to: usize,
    ) -> Result<Vec<Notification>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND pos > $2 \
             ORDER BY pos LIMIT $3"
        ))
        .bind(user_id)
        .bind(to_i64(after.0))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .doing("reading notifications")?;
        rows.iter().map(notification).collect()
    }

    async fn unread_counts(
        &self,
        user_id: &str,
        room_id: &str,
        read: &ReadUpTo,
    ) -> Result<UnreadCounts> {
        let (roots, positions): (Vec<&str>, Vec<i64>) =
            read.threads.iter().map(|(root, pos)| (root.as_str(), to_i64(pos.0))).unzip();
        let rows = sqlx::query(
            "SELECT n.thread_id, count(*), count(*) FILTER (WHERE n.highlight) \
             FROM notifications n \
             LEFT JOIN unnest($4::text[], $5::bigint[]) AS r (root, pos) ON r.root = n.thread_id \
             WHERE n.user_id = $1 AND n.room_id = $2 AND n.pos > $3 \
             AND n.pos > CASE WHEN n.thread_id IS NULL THEN $6 ELSE coalesce(r.pos, $7) END \
             GROUP BY n.thread_id",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(to_i64(read.lowest().0))
        .bind(roots)
        .bind(positions)
        .bind(to_i64(read.main.0))
        .bind(to_i64(read.other_threads.0))
        .fetch_all(&self.pool)
        .await
        .doing("counting unread notifications")?;
        let mut unread = UnreadCounts::default();
        for row in rows {
            let thread: Option<String> = row.try_get(0).doing("counting unread notifications")?;
            let count = |i: usize| -> Result<u64> {
                to_u64(row.try_get::<i64, _>(i).doing("counting unread notifications")?)
            };
            let counts = NotificationCounts { notifications: count(1)?, highlights: count(2)? };
            match thread {
                None => unread.main = counts,
                Some(root) => {
                    unread.threads.insert(root, counts);
                }
            }
        }
        Ok(unread)
    }

    async fn push_cursor(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<PushCursor>> {
        const DOING: &str = "reading push cursors";
        let row = sqlx::query(
            "SELECT pos, failures, retry_at FROM push_cursors \
             WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
        )
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        let Some(row) = row else { return Ok(None) };
        let failures: i64 = row.try_get("failures").doing(DOING)?;
        Ok(Some(PushCursor {
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            pos: StreamPos(to_u64(row.try_get("pos").doing(DOING)?)?),
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            retry_at: to_u64(row.try_get("retry_at").doing(DOING)?)?,
        }))
    }
}

#[async_trait]
impl AppserviceStore for PostgresStore {
    async fn appservice_cursor(&self, appservice_id: &str) -> Result<Option<AppserviceCursor>> {
        const DOING: &str = "reading application service cursors";
        let row = sqlx::query(
            "SELECT pos, txn_id, in_flight, failures, retry_at FROM appservice_cursors \
             WHERE appservice_id = $1",
        )
        .bind(appservice_id)
        .fetch_optional(&self.pool)
        .await
        .doing(DOING)?;
        let Some(row) = row else { return Ok(None) };
        let failures: i64 = row.try_get("failures").doing(DOING)?;
        let in_flight: Option<i64> = row.try_get("in_flight").doing(DOING)?;
        Ok(Some(AppserviceCursor {
            appservice_id: appservice_id.to_owned(),
            pos: StreamPos(to_u64(row.try_get("pos").doing(DOING)?)?),
            txn_id: to_u64(row.try_get("txn_id").doing(DOING)?)?,
            in_flight: in_flight.map(to_u64).transpose()?.map(StreamPos),
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            retry_at: to_u64(row.try_get("retry_at").doing(DOING)?)?,
        }))
    }
}
