//! Notifications and pushers' delivery cursors, in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::{
    AppserviceCursor, AppserviceStore, ChangeSet, NOTIFICATIONS_KEPT, Notification,
    NotificationStore, PushCursor, ReadUpTo, Result, StreamPos, UnreadCounts,
};

/// `(user, app_id, pushkey)`.
type PusherKey = (String, String, String);

#[derive(Debug, Default)]
pub(super) struct Push {
    /// User -> position -> notification.
    notifications: BTreeMap<String, BTreeMap<u64, Notification>>,
    cursors: BTreeMap<PusherKey, PushCursor>,
    /// Application services' cursors by service id.
    appservices: BTreeMap<String, AppserviceCursor>,
}

impl Push {
    /// This domain's part of a change set.
    pub(super) fn apply(&mut self, changes: &mut ChangeSet) {
        for n in changes.notifications.drain(..) {
            let mine = self.notifications.entry(n.user_id.clone()).or_default();
            mine.insert(n.pos.0, n);
            while mine.len() > NOTIFICATIONS_KEPT {
                mine.pop_first();
            }
        }
        for key in changes.deleted_push_cursors.drain(..) {
            self.cursors.remove(&key);
        }
        for c in changes.push_cursors.drain(..) {
            self.cursors.insert((c.user_id.clone(), c.app_id.clone(), c.pushkey.clone()), c);
        }
        for c in changes.appservice_cursors.drain(..) {
            self.appservices.insert(c.appservice_id.clone(), c);
        }
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<StreamPos>,
        limit: usize,
        highlights_only: bool,
    ) -> Result<Vec<Notification>> {
        let inner = self.lock()?;
        let Some(mine) = inner.push.notifications.get(user_id) else { return Ok(Vec::new()) };
        let below = before.map_or(u64::MAX, |b| b.0);
        Ok(mine
            .range(..below)
            .rev()
            .map(|(_, n)| n)
            .filter(|n| !highlights_only || n.highlight)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: StreamPos,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let inner = self.lock()?;
        let Some(mine) = inner.push.notifications.get(user_id) else { return Ok(Vec::new()) };
        Ok(mine.range(after.0.saturating_add(1)..).take(limit).map(|(_, n)| n.clone()).collect())
    }

    async fn unread_counts(
        &self,
        user_id: &str,
        room_id: &str,
        read: &ReadUpTo,
    ) -> Result<UnreadCounts> {
        let inner = self.lock()?;
        let mut unread = UnreadCounts::default();
        let Some(mine) = inner.push.notifications.get(user_id) else { return Ok(unread) };
        for n in mine.range(read.lowest().0.saturating_add(1)..).map(|(_, n)| n) {
            if n.room_id == room_id {
                unread.count(read, n.pos, n.thread_id.as_deref(), n.highlight);
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
        let key = (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        Ok(self.lock()?.push.cursors.get(&key).cloned())
    }
}

#[async_trait]
impl AppserviceStore for MemoryStore {
    async fn appservice_cursor(&self, appservice_id: &str) -> Result<Option<AppserviceCursor>> {
        Ok(self.lock()?.push.appservices.get(appservice_id).cloned())
    }
}
