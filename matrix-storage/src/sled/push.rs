//! Notifications and pushers' delivery cursors: their part of a change set and their reads.
//! Tables of their own (a store written before them has none): [`NOTIFICATION`] by
//! `(user, position)`, [`NOTIFICATION_ROOM`] by `(user, room, position)` for unread counts, and
//! [`PUSH_STATE`]: each user's notification count (kind 0, so that keeping the newest
//! [`NOTIFICATIONS_KEPT`] reads one entry) and each pusher's cursor (kind 1).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::batch::Tx;
use super::{
    APPSERVICE_CURSOR, NOTIFICATION, NOTIFICATION_ROOM, PUSH_STATE, SledStore, unavailable,
};
use crate::codec::{Dec, Enc};
use crate::{
    AppserviceCursor, AppserviceStore, ChangeSet, ErrorKind, NOTIFICATIONS_KEPT, Notification,
    NotificationStore, PushCursor, Result, StorageError, StreamPos,
};

const COUNT: u8 = 0;
const CURSOR: u8 = 1;

fn corrupt(what: &str) -> impl FnOnce(StorageError) -> StorageError + '_ {
    move |error| {
        StorageError::with_source(
            ErrorKind::Corrupt,
            format!("a stored {what} does not decode"),
            error,
        )
    }
}

fn by_pos(user: &str, pos: u64) -> Vec<u8> {
    Enc::table(NOTIFICATION).str(user).u64(pos).done()
}

fn by_room(user: &str, room: &str, pos: u64) -> Vec<u8> {
    Enc::table(NOTIFICATION_ROOM).str(user).str(room).u64(pos).done()
}

fn count_key(user: &str) -> Vec<u8> {
    Enc::table(PUSH_STATE).raw(&[COUNT]).str(user).done()
}

fn cursor_key(user: &str, app_id: &str, pushkey: &str) -> Vec<u8> {
    Enc::table(PUSH_STATE).raw(&[CURSOR]).str(user).str(app_id).str(pushkey).done()
}

fn encode(n: &Notification) -> Vec<u8> {
    Enc::default()
        .str(&n.room_id)
        .str(&n.event_id)
        .opt_str(n.thread_id.as_deref())
        .bool(n.highlight)
        .bytes(&n.actions)
        .u64(n.ts)
        .done()
}

fn decode(user: &str, pos: u64, value: &[u8]) -> Result<Notification> {
    let mut dec = Dec::new(value);
    let mut read = || {
        Ok(Notification {
            user_id: user.to_owned(),
            pos: StreamPos(pos),
            room_id: dec.str()?,
            event_id: dec.str()?,
            thread_id: dec.opt_str()?,
            highlight: dec.bool()?,
            actions: dec.bytes()?.to_vec(),
            ts: dec.u64()?,
        })
    };
    read().map_err(corrupt("notification"))
}

/// The position in a [`NOTIFICATION`] key.
fn key_pos(key: &[u8]) -> Result<u64> {
    let read = || {
        let mut dec = Dec::new(key).skip_table()?;
        dec.str()?;
        dec.u64()
    };
    read().map_err(corrupt("notification key"))
}

/// This domain's part of a change set, as buffered writes.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for n in &changes.notifications {
        let count = match counts.get(n.user_id.as_str()) {
            Some(count) => *count,
            None => match tx.get(count_key(&n.user_id))? {
                Some(v) => Dec::new(&v).u64().map_err(corrupt("notification count"))?,
                None => 0,
            },
        };
        let key = by_pos(&n.user_id, n.pos.0);
        let mut count = count;
        if let Some(old) = tx.get(&key)? {
            let old = decode(&n.user_id, n.pos.0, &old)?;
            tx.remove(by_room(&n.user_id, &old.room_id, n.pos.0))?;
        } else {
            count += 1;
        }
        tx.insert(key, encode(n))?;
        tx.insert(by_room(&n.user_id, &n.room_id, n.pos.0), vec![])?;
        while count > NOTIFICATIONS_KEPT as u64 {
            let prefix = Enc::table(NOTIFICATION).str(&n.user_id).done();
            let Some((oldest, value)) = tx.first_with_prefix(&prefix)? else { break };
            let pos = key_pos(&oldest)?;
            let old = decode(&n.user_id, pos, &value)?;
            tx.remove(&oldest)?;
            tx.remove(by_room(&n.user_id, &old.room_id, pos))?;
            count -= 1;
        }
        counts.insert(&n.user_id, count);
    }
    for (user, count) in counts {
        tx.insert(count_key(user), Enc::default().u64(count).done())?;
    }
    for (user, app_id, pushkey) in &changes.deleted_push_cursors {
        tx.remove(cursor_key(user, app_id, pushkey))?;
    }
    for c in &changes.push_cursors {
        tx.insert(
            cursor_key(&c.user_id, &c.app_id, &c.pushkey),
            Enc::default().u64(c.pos.0).u32(c.failures).u64(c.retry_at).done(),
        )?;
    }
    for c in &changes.appservice_cursors {
        // `in_flight` as a flag and a position.
        tx.insert(
            Enc::table(APPSERVICE_CURSOR).str(&c.appservice_id).done(),
            Enc::default()
                .u64(c.pos.0)
                .u64(c.txn_id)
                .bool(c.in_flight.is_some())
                .u64(c.in_flight.map_or(0, |p| p.0))
                .u32(c.failures)
                .u64(c.retry_at)
                .done(),
        )?;
    }
    Ok(())
}

impl SledStore {
    fn notification_at(&self, user: &str, pos: u64) -> Result<Option<Notification>> {
        match self.tree.get(by_pos(user, pos)).map_err(unavailable)? {
            Some(value) => Ok(Some(decode(user, pos, &value)?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl NotificationStore for SledStore {
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<StreamPos>,
        limit: usize,
        highlights_only: bool,
    ) -> Result<Vec<Notification>> {
        self.flusher.check()?;
        let mut found = Vec::new();
        let start = by_pos(user_id, 0);
        let end = by_pos(user_id, before.map_or(u64::MAX, |b| b.0));
        for entry in self.tree.range(start..end).rev() {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(unavailable)?;
            let n = decode(user_id, key_pos(&key)?, &value)?;
            if !highlights_only || n.highlight {
                found.push(n);
            }
        }
        Ok(found)
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: StreamPos,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        self.flusher.check()?;
        let mut found = Vec::new();
        let start = by_pos(user_id, after.0.saturating_add(1));
        let end = by_pos(user_id, u64::MAX);
        for entry in self.tree.range(start..=end).take(limit) {
            let (key, value) = entry.map_err(unavailable)?;
            found.push(decode(user_id, key_pos(&key)?, &value)?);
        }
        Ok(found)
    }

    async fn room_notifications(
        &self,
        user_id: &str,
        room_id: &str,
        after: StreamPos,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        self.flusher.check()?;
        let mut found = Vec::new();
        let start = by_room(user_id, room_id, after.0.saturating_add(1));
        let end = by_room(user_id, room_id, u64::MAX);
        for entry in self.tree.range(start..=end).take(limit) {
            let (key, _) = entry.map_err(unavailable)?;
            let read = || {
                let mut dec = Dec::new(&key).skip_table()?;
                dec.str()?;
                dec.str()?;
                dec.u64()
            };
            let pos = read().map_err(corrupt("notification key"))?;
            // Both entries are written in one batch: the record is there.
            if let Some(n) = self.notification_at(user_id, pos)? {
                found.push(n);
            }
        }
        Ok(found)
    }

    async fn push_cursor(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<PushCursor>> {
        self.flusher.check()?;
        let Some(value) =
            self.tree.get(cursor_key(user_id, app_id, pushkey)).map_err(unavailable)?
        else {
            return Ok(None);
        };
        let mut dec = Dec::new(&value);
        let mut read = || Ok((dec.u64()?, dec.u32()?, dec.u64()?));
        let (pos, failures, retry_at) = read().map_err(corrupt("push cursor"))?;
        Ok(Some(PushCursor {
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            pos: StreamPos(pos),
            failures,
            retry_at,
        }))
    }
}

#[async_trait]
impl AppserviceStore for SledStore {
    async fn appservice_cursor(&self, appservice_id: &str) -> Result<Option<AppserviceCursor>> {
        self.flusher.check()?;
        let key = Enc::table(APPSERVICE_CURSOR).str(appservice_id).done();
        let Some(value) = self.tree.get(key).map_err(unavailable)? else { return Ok(None) };
        let mut dec = Dec::new(&value);
        let mut read = || {
            let pos = dec.u64()?;
            let txn_id = dec.u64()?;
            let flying = dec.bool()?;
            let upto = dec.u64()?;
            Ok(AppserviceCursor {
                appservice_id: appservice_id.to_owned(),
                pos: StreamPos(pos),
                txn_id,
                in_flight: flying.then_some(StreamPos(upto)),
                failures: dec.u32()?,
                retry_at: dec.u64()?,
            })
        };
        read().map(Some).map_err(corrupt("application service cursor"))
    }
}
