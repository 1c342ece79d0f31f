//! Notifications and pushers' delivery cursors: their part of a change set and their reads.
//! Tables of their own (a store written before them has none): [`NOTIFICATION`] by
//! `(user, position)`, [`NOTIFICATION_ROOM`] for unread counts, and [`PUSH_STATE`]: each
//! user's notification count (kind 0, so that keeping the newest [`NOTIFICATIONS_KEPT`] reads
//! one entry) and each pusher's cursor (kind 1).
//!
//! **Unread counts** are asked by every `/sync` for every room, so they are not counted one
//! notification at a time. [`NOTIFICATION_ROOM`] keys each notification by `(user, room,
//! thread, position)` (no thread: the main timeline) and its value holds running
//! totals: the notifications and highlights of that `(user, room, thread)` up to and with it
//! (and whether it is a highlight itself). The notifications after a read position are then
//! the last entry's totals less the totals before the first entry after that position: two
//! seeks per thread, whatever the count. Dropping a user's oldest notifications takes entries
//! from the front of their `(user, room, thread)` runs, which leaves the later totals right
//! (counts are differences); storing one anywhere but at the end renumbers the entries after
//! it. Stores written before the totals are indexed again once, at open ([`index_counts`]).

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;

use super::batch::Tx;
use super::engine::Tree;
use super::{
    APPSERVICE_CURSOR, NOTIFICATION, NOTIFICATION_ROOM, PUSH_STATE, SledStore, meta, unavailable,
};
use crate::codec::{Dec, Enc};
use crate::{
    AppserviceCursor, AppserviceStore, ChangeSet, ErrorKind, NOTIFICATIONS_KEPT, Notification,
    NotificationCounts, NotificationStore, PushCursor, ReadUpTo, Result, StorageError, StreamPos,
    UnreadCounts,
};

const COUNT: u8 = 0;
const CURSOR: u8 = 1;

/// The META entry saying [`NOTIFICATION_ROOM`] holds running totals ([`index_counts`]).
pub(super) const COUNTS_INDEXED: &str = "notification_counts_indexed";

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

/// The [`NOTIFICATION_ROOM`] keys of a `(user, room, thread)`: this, then a position. The
/// main timeline's run (kind 0) sorts before the threads' (kind 1, then the root).
fn run_prefix(user: &str, room: &str, thread: Option<&str>) -> Vec<u8> {
    let room = Enc::table(NOTIFICATION_ROOM).str(user).str(room);
    match thread {
        None => room.raw(&[0]).done(),
        Some(root) => room.raw(&[1]).str(root).done(),
    }
}

fn at(prefix: &[u8], pos: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&pos.to_be_bytes());
    key
}

/// A [`NOTIFICATION_ROOM`] value: whether the notification is a highlight, and the running
/// totals of notifications and highlights of its run up to and with it.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    highlight: bool,
    notifications: u64,
    highlights: u64,
}

impl Totals {
    fn encode(self) -> Vec<u8> {
        Enc::default().bool(self.highlight).u64(self.notifications).u64(self.highlights).done()
    }

    /// The totals of an entry, or none before the first.
    fn of(entry: Option<(Vec<u8>, ::sled::IVec)>) -> Result<Totals> {
        entry.map_or(Ok(Totals::default()), |(_, value)| Totals::decode(&value))
    }

    fn decode(value: &[u8]) -> Result<Totals> {
        let mut dec = Dec::new(value);
        let mut read = || {
            Ok(Totals { highlight: dec.bool()?, notifications: dec.u64()?, highlights: dec.u64()? })
        };
        read().map_err(corrupt("notification count"))
    }

    /// The totals of the entry after this one, a notification that highlights or not.
    fn then(self, highlight: bool) -> Totals {
        Totals {
            highlight,
            notifications: self.notifications + 1,
            highlights: self.highlights + u64::from(highlight),
        }
    }

    /// The notifications from `first` to `self` (both in one run, `first` not after `self`).
    fn since(self, first: Totals) -> NotificationCounts {
        NotificationCounts {
            notifications: (self.notifications + 1).saturating_sub(first.notifications),
            highlights: (self.highlights + u64::from(first.highlight))
                .saturating_sub(first.highlights),
        }
    }
}

/// Indexes `n` in its run, and gives the entries after it (if any: it is usually the last)
/// their new totals.
fn index_in(tx: &Tx<'_>, n: &Notification) -> Result<()> {
    let prefix = run_prefix(&n.user_id, &n.room_id, n.thread_id.as_deref());
    let here = at(&prefix, n.pos.0);
    // Usually the newest of its run: one seek, to the run's last entry, and nothing to
    // renumber.
    let last = tx.first_between(prefix.clone(), at(&prefix, u64::MAX), true)?;
    if last.as_ref().is_none_or(|(key, _)| *key < here) {
        let base = Totals::of(last)?;
        return tx.insert(here, base.then(n.highlight).encode());
    }
    let before = tx.first_between(prefix.clone(), here, true)?;
    let base = Totals::of(before)?;
    let totals = base.then(n.highlight);
    tx.insert(at(&prefix, n.pos.0), totals.encode())?;
    renumber(tx, &prefix, n.pos.0, totals)
}

/// Removes the entry at `pos` of a run, and gives the entries after it their new totals.
fn unindex_in(tx: &Tx<'_>, user: &str, old: &Notification) -> Result<()> {
    let prefix = run_prefix(user, &old.room_id, old.thread_id.as_deref());
    tx.remove(at(&prefix, old.pos.0))?;
    let before = tx.first_between(prefix.clone(), at(&prefix, old.pos.0), true)?;
    let base = Totals::of(before)?;
    renumber(tx, &prefix, old.pos.0, base)
}

/// Gives the entries of a run after `pos` totals following on from `totals`.
fn renumber(tx: &Tx<'_>, prefix: &[u8], pos: u64, mut totals: Totals) -> Result<()> {
    let end = at(prefix, u64::MAX);
    let mut from = at(prefix, pos.saturating_add(1));
    while let Some((key, value)) = tx.first_between(from, end.clone(), false)? {
        let own = Totals::decode(&value)?;
        totals = totals.then(own.highlight);
        tx.insert(key.clone(), totals.encode())?;
        from = key;
        from.push(0);
    }
    Ok(())
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
            unindex_in(tx, &n.user_id, &decode(&n.user_id, n.pos.0, &old)?)?;
        } else {
            count += 1;
        }
        tx.insert(key, encode(n))?;
        index_in(tx, n)?;
        while count > NOTIFICATIONS_KEPT as u64 {
            let prefix = Enc::table(NOTIFICATION).str(&n.user_id).done();
            let Some((oldest, value)) = tx.first_with_prefix(&prefix)? else { break };
            let pos = key_pos(&oldest)?;
            let old = decode(&n.user_id, pos, &value)?;
            tx.remove(&oldest)?;
            // The user's oldest is the first of its run: the totals after it stay right.
            let run = run_prefix(&n.user_id, &old.room_id, old.thread_id.as_deref());
            tx.remove(at(&run, pos))?;
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
    /// The unread counts of one run (`prefix`) after `read`, if any are unread.
    fn run_counts(&self, prefix: &[u8], read: StreamPos) -> Result<Option<NotificationCounts>> {
        let mut unread =
            self.tree.range(at(prefix, read.0.saturating_add(1))..=at(prefix, u64::MAX));
        let Some(first) = unread.next() else { return Ok(None) };
        let first = Totals::decode(&first.map_err(unavailable)?.1)?;
        let last = match unread.next_back() {
            Some(last) => Totals::decode(&last.map_err(unavailable)?.1)?,
            None => first,
        };
        Ok(Some(last.since(first)))
    }
}

/// Builds [`NOTIFICATION_ROOM`] from the notifications, once, for a store written before it
/// held running totals (its entries then were keyed by `(user, room, position)`).
pub(super) fn index_counts(tree: &Tree, flush: impl FnOnce() -> Result<()>) -> Result<()> {
    if tree.get(meta(COUNTS_INDEXED)).map_err(unavailable)?.is_some() {
        return Ok(());
    }
    let mut ops: Vec<(Vec<u8>, Option<::sled::IVec>)> = Vec::new();
    for entry in tree.scan_prefix([NOTIFICATION_ROOM]) {
        ops.push((entry.map_err(unavailable)?.0.to_vec(), None));
    }
    // Notifications are keyed by user then position: each run's in order.
    let mut runs: BTreeMap<Vec<u8>, Totals> = BTreeMap::new();
    for entry in tree.scan_prefix([NOTIFICATION]) {
        let (key, value) = entry.map_err(unavailable)?;
        let read = || {
            let mut dec = Dec::new(&key).skip_table()?;
            Ok((dec.str()?, dec.u64()?))
        };
        let (user, pos) = read().map_err(corrupt("notification key"))?;
        let n = decode(&user, pos, &value)?;
        let prefix = run_prefix(&user, &n.room_id, n.thread_id.as_deref());
        let totals = runs.get(&prefix).copied().unwrap_or_default().then(n.highlight);
        ops.push((at(&prefix, pos), Some(totals.encode().into())));
        runs.insert(prefix, totals);
    }
    ops.push((meta(COUNTS_INDEXED), Some(::sled::IVec::from(&b""[..]))));
    tree.apply(ops).map_err(unavailable)?;
    flush()
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

    async fn unread_counts(
        &self,
        user_id: &str,
        room_id: &str,
        read: &ReadUpTo,
    ) -> Result<UnreadCounts> {
        self.flusher.check()?;
        let mut unread = UnreadCounts::default();
        let main = run_prefix(user_id, room_id, None);
        if let Some(counts) = self.run_counts(&main, read.main)? {
            unread.main = counts;
        }
        // The threads' runs follow the main timeline's: one seek to find each, two to count
        // it.
        let room = Enc::table(NOTIFICATION_ROOM).str(user_id).str(room_id).done();
        let mut after = at(&main, u64::MAX);
        loop {
            let next = self.tree.range((Bound::Excluded(after), Bound::Unbounded)).next();
            let Some(entry) = next else { break };
            let key = entry.map_err(unavailable)?.0;
            if !key.starts_with(&room) {
                break;
            }
            let read_root = || {
                let mut dec = Dec::new(&key[room.len()..]);
                dec.raw(1)?;
                dec.str()
            };
            let root = read_root().map_err(corrupt("notification key"))?;
            let prefix = run_prefix(user_id, room_id, Some(&root));
            if let Some(counts) = self.run_counts(&prefix, read.of(Some(&root)))? {
                unread.threads.insert(root, counts);
            }
            after = at(&prefix, u64::MAX);
        }
        Ok(unread)
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
