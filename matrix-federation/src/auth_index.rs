//! Each room's auth chains as an index: a chain cover (`matrix_stateres::chain_cover`) of the
//! auth DAG of the room's state events, persisted as [`AuthChainEntry`] rows and cached per
//! room, so that resolving forked states reads only what resolution needs (a
//! [`ResolutionPlan`]: the conflicted events, the auth difference and their auth chains), not
//! every state event of the room and its auth chain. A [`crate::inbound::RoomContext`] gives
//! [`AuthIndexes::plan`] as its `resolution_plan`.
//!
//! The index grows lazily. A resolution first indexes the state events its states name that
//! are not indexed yet, with the auth events they need, parents first, and stores the new
//! entries before it answers; the next one indexes only what is new since. The entries are
//! numbered per room: another process numbering its entries alike makes storage refuse the
//! second change set (a conflict), and the index is then read again from storage. An event
//! that cannot be indexed (an auth event not stored) leaves the resolution without a plan, and
//! it loads the states' events as it did before the index.

use std::collections::HashMap;
use std::sync::Arc;

use matrix_core::Pdu;
use matrix_stateres::chain_cover::{ChainCover, ChainCoverBuilder, ChainLink, ChainPosition};
use matrix_storage::{AuthChainEntry, ChangeSet, ErrorKind, Storage, StorageError};

use crate::FederationError;
use crate::inbound::{MAX_RESOLUTION_EVENTS, ResolutionPlan, StateSplit};

/// The default bound of [`AuthIndexes`]: index entries cached over all rooms (about 100 bytes
/// each).
pub const CACHED_ENTRIES: u64 = 500_000;

/// At most this many events are indexed for one resolution (a room's whole state the first
/// time; the bound of resolution without an index is the same).
const MAX_INDEXED: usize = MAX_RESOLUTION_EVENTS;

/// Index entries are read from storage this many at a time.
const PAGE: usize = 16_384;

/// Rooms' indexes of auth chains over a store: each room's read from storage when first asked
/// for and cached (bounded in entries over all rooms), each behind its own lock.
pub struct AuthIndexes {
    storage: Arc<dyn Storage>,
    rooms: std::sync::Mutex<Cached>,
}

/// The cached rooms, least recently used first out once their entries pass the bound. (A
/// general cache would not do: one room's index is a large share of the bound, where such
/// caches admit only items small against it.)
#[derive(Debug, Default)]
struct Cached {
    rooms: HashMap<String, CachedRoom>,
    /// Entries of all the rooms' indexes.
    entries: u64,
    /// The bound on `entries`.
    bound: u64,
    /// A clock for recency.
    tick: u64,
}

#[derive(Debug)]
struct CachedRoom {
    index: Arc<CachedIndex>,
    entries: u64,
    used: u64,
}

/// At most this many rooms' indexes are cached, however small.
const CACHED_ROOMS: usize = 1_024;

impl Cached {
    /// The room's index, made empty if it is not cached.
    fn get(&mut self, room_id: &str) -> Arc<CachedIndex> {
        self.tick += 1;
        let tick = self.tick;
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.used = tick;
            return room.index.clone();
        }
        let index = Arc::new(CachedIndex::default());
        let room = CachedRoom { index: index.clone(), entries: 0, used: tick };
        self.rooms.insert(room_id.to_owned(), room);
        self.evict(room_id);
        index
    }

    /// Notes that the room's index now holds `entries`.
    fn grown(&mut self, room_id: &str, index: &Arc<CachedIndex>, entries: u64) {
        if let Some(room) = self.rooms.get_mut(room_id)
            && Arc::ptr_eq(&room.index, index)
        {
            self.entries = self.entries - room.entries + entries;
            room.entries = entries;
            self.evict(room_id);
        }
    }

    /// Forgets the room's index (it is read from storage again when next asked for).
    fn remove(&mut self, room_id: &str) {
        if let Some(room) = self.rooms.remove(room_id) {
            self.entries -= room.entries;
        }
    }

    /// Drops the least recently used rooms but `keep` while over the bounds.
    fn evict(&mut self, keep: &str) {
        while self.entries > self.bound || self.rooms.len() > CACHED_ROOMS {
            let oldest = self
                .rooms
                .iter()
                .filter(|(id, _)| id.as_str() != keep)
                .min_by_key(|(_, room)| room.used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.remove(&id),
                None => break,
            }
        }
    }
}

impl std::fmt::Debug for AuthIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthIndexes").finish_non_exhaustive()
    }
}

/// A room's index in the cache.
#[derive(Debug, Default)]
struct CachedIndex {
    index: tokio::sync::Mutex<RoomIndex>,
}

/// A room's index in memory: the cover being built, and the event of each entry.
#[derive(Debug, Default)]
struct RoomIndex {
    builder: ChainCoverBuilder,
    ids: Vec<Arc<str>>,
    by_id: HashMap<Arc<str>, u32>,
    /// The cover of the entries so far, once asked for (until the next entry).
    cover: Option<Arc<ChainCover>>,
}

/// Why a plan cannot be made; resolution then goes without one.
enum NoPlan {
    /// An event (or one of its auth events) is not stored, or not in the room.
    Unindexable,
    /// Another process stored entries under the same numbers first.
    Conflict,
    /// Entries were added in memory but could not all be: the index must be read again.
    Abandoned,
    /// Storage failed.
    Storage(StorageError),
}

impl From<StorageError> for NoPlan {
    fn from(error: StorageError) -> Self {
        match error.kind() {
            ErrorKind::Conflict => NoPlan::Conflict,
            _ => NoPlan::Storage(error),
        }
    }
}

impl RoomIndex {
    /// Adds entries read from storage (numbered from `self.ids.len()` on).
    fn extend_from(
        &mut self,
        room_id: &str,
        entries: Vec<AuthChainEntry>,
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let corrupt = |what: &str| {
            StorageError::new(
                ErrorKind::Corrupt,
                format!("the auth chain index of {room_id} {what}"),
            )
        };
        let mut labels = self.builder.labels().to_vec();
        let mut links = self.builder.links().to_vec();
        for entry in entries {
            if entry.index as usize != self.ids.len() {
                return Err(corrupt("skips an entry"));
            }
            let position = ChainPosition { chain: entry.chain, seq: entry.seq };
            labels.push(position);
            for (chain, seq) in entry.links {
                links.push((
                    entry.chain,
                    ChainLink { from_seq: entry.seq, to: ChainPosition { chain, seq } },
                ));
            }
            let id: Arc<str> = Arc::from(entry.event_id);
            self.by_id.insert(id.clone(), entry.index);
            self.ids.push(id);
        }
        self.builder = ChainCoverBuilder::from_parts(labels, links)
            .map_err(|e| corrupt(&format!("is not a chain cover: {e}")))?;
        self.cover = None;
        Ok(())
    }

    /// The cover of every entry.
    fn cover(&mut self) -> Arc<ChainCover> {
        self.cover.get_or_insert_with(|| Arc::new(self.builder.cover())).clone()
    }
}

impl AuthIndexes {
    /// The indexes of the rooms of `storage`, caching at most `cached_entries` entries
    /// ([`CACHED_ENTRIES`] is a good default).
    pub fn new(storage: Arc<dyn Storage>, cached_entries: u64) -> Self {
        let rooms = Cached { bound: cached_entries, ..Cached::default() };
        AuthIndexes { storage, rooms: std::sync::Mutex::new(rooms) }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets what is cached of a room's index (the room was purged from storage): it is
    /// read from storage again when next asked for.
    pub fn forget(&self, room_id: &str) {
        self.cached().remove(room_id);
    }

    /// What resolving states (given split) of a room reads, from the room's index (grown first
    /// with the states' events not indexed yet, stored before it answers). `pending` is an
    /// event being stored, which the states may name before it is stored (it counts through
    /// its auth events). `None` when an event cannot be indexed (an auth event is not stored).
    pub async fn plan(
        &self,
        room_id: &str,
        split: &StateSplit<'_>,
        pending: Option<&Pdu>,
    ) -> Result<Option<ResolutionPlan>, FederationError> {
        for attempt in 0..2 {
            let cached = self.cached().get(room_id);
            let mut index = cached.index.lock().await;
            let outcome = self.plan_with(&mut index, room_id, split, pending).await;
            let entries = index.ids.len() as u64;
            drop(index);
            match outcome {
                Ok(plan) => {
                    self.cached().grown(room_id, &cached, entries);
                    return Ok(Some(plan));
                }
                Err(NoPlan::Unindexable) => {
                    self.cached().grown(room_id, &cached, entries);
                    return Ok(None);
                }
                // What was added but not stored must not stay: read from storage again (where
                // the other process's entries now are).
                Err(NoPlan::Conflict) if attempt == 0 => self.cached().remove(room_id),
                Err(NoPlan::Conflict | NoPlan::Abandoned) => {
                    self.cached().remove(room_id);
                    return Ok(None);
                }
                Err(NoPlan::Storage(error)) => {
                    self.cached().remove(room_id);
                    return Err(error.into());
                }
            }
        }
        Ok(None)
    }

    async fn plan_with(
        &self,
        index: &mut RoomIndex,
        room_id: &str,
        split: &StateSplit<'_>,
        pending: Option<&Pdu>,
    ) -> Result<ResolutionPlan, NoPlan> {
        // What other processes (or an earlier run of this one) stored.
        loop {
            let from = u32::try_from(index.ids.len()).map_err(|_| NoPlan::Unindexable)?;
            let entries = self.storage.auth_chain_index(room_id, from, PAGE).await?;
            let full = entries.len() == PAGE;
            index.extend_from(room_id, entries).map_err(NoPlan::Storage)?;
            if !full {
                break;
            }
        }
        let pending_id = pending.map(Pdu::event_id);
        let ids = || {
            let conflicted = split.conflicted.iter().flatten();
            split.unconflicted.iter().chain(conflicted).map(|(_, id)| *id)
        };
        let unindexed: Vec<&str> =
            ids().filter(|id| Some(*id) != pending_id && !index.by_id.contains_key(*id)).collect();
        if !unindexed.is_empty() {
            self.index_events(index, room_id, &unindexed).await?;
        }
        let lookup = |id: &str| index.by_id.get(id).copied().ok_or(NoPlan::Unindexable);
        let pending_auth: Vec<u32> = match pending {
            Some(pdu) => pdu.auth_events().map(lookup).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let unconflicted: Vec<u32> =
            split.unconflicted.iter().map(|(_, id)| lookup(id)).collect::<Result<_, _>>()?;
        let mut conflicted: Vec<Vec<u32>> = Vec::with_capacity(split.conflicted.len());
        let mut outside: Vec<Vec<u32>> = Vec::with_capacity(split.conflicted.len());
        for entries in &split.conflicted {
            let mut set = Vec::with_capacity(entries.len());
            let mut out = Vec::new();
            for (_, id) in entries {
                if Some(*id) == pending_id {
                    out.extend(&pending_auth);
                } else {
                    set.push(lookup(id)?);
                }
            }
            conflicted.push(set);
            outside.push(out);
        }
        let cover = index.cover();
        let difference = cover.split_auth_difference(&unconflicted, &conflicted, &outside);

        // Read: the conflicted events, the difference, and their auth chains.
        let roots: Vec<u32> = conflicted
            .iter()
            .flatten()
            .chain(&difference)
            .chain(outside.iter().flatten())
            .copied()
            .collect();
        let reach = cover.with_auth_chain(roots);
        let mut events: Vec<String> =
            reach.events(&cover).map(|ix| index.ids[ix as usize].to_string()).collect();
        // The create event, which room version 12 events do not name as an auth event.
        let create =
            split.unconflicted.iter().find(|(key, _)| key.0 == "m.room.create" && key.1.is_empty());
        if let Some((_, id)) = create {
            events.push((*id).to_owned());
        }
        let auth_difference =
            difference.iter().map(|&ix| index.ids[ix as usize].to_string()).collect();
        Ok(ResolutionPlan { auth_difference, events })
    }

    /// Indexes `ids` and the auth events they need that are not indexed, parents first, and
    /// stores the new entries.
    async fn index_events(
        &self,
        index: &mut RoomIndex,
        room_id: &str,
        ids: &[&str],
    ) -> Result<(), NoPlan> {
        // Load the new events and, level by level, their unindexed auth events.
        let mut auth: HashMap<String, Vec<String>> = HashMap::new();
        let mut wanted: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        while !wanted.is_empty() {
            wanted.sort_unstable();
            wanted.dedup();
            if auth.len() + wanted.len() > MAX_INDEXED {
                return Err(NoPlan::Unindexable);
            }
            let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let found = self.storage.events(&refs).await?;
            if found.len() < wanted.len() || found.iter().any(|e| e.room_id != room_id) {
                return Err(NoPlan::Unindexable);
            }
            let mut next = Vec::new();
            for event in found {
                for parent in &event.auth_events {
                    if !index.by_id.contains_key(parent.as_str()) && !auth.contains_key(parent) {
                        next.push(parent.clone());
                    }
                }
                auth.insert(event.event_id, event.auth_events);
            }
            next.retain(|id| !auth.contains_key(id));
            wanted = next;
        }

        // Parents first (Kahn's algorithm over the new events); a cycle cannot be indexed.
        let order = parents_first(&auth).ok_or(NoPlan::Unindexable)?;
        let mut entries = Vec::with_capacity(order.len());
        for id in order {
            let parents: Vec<u32> = auth[id.as_str()]
                .iter()
                .map(|p| index.by_id.get(p.as_str()).copied().ok_or(NoPlan::Abandoned))
                .collect::<Result<_, _>>()?;
            let made = index.builder.links().len();
            let position = index.builder.push(&parents, None).map_err(|_| NoPlan::Abandoned)?;
            let links = index.builder.links()[made..].iter().map(|(_, l)| (l.to.chain, l.to.seq));
            let number = u32::try_from(index.ids.len()).map_err(|_| NoPlan::Abandoned)?;
            entries.push(AuthChainEntry {
                room_id: room_id.to_owned(),
                index: number,
                event_id: id.clone(),
                chain: position.chain,
                seq: position.seq,
                links: links.collect(),
            });
            let id: Arc<str> = Arc::from(id);
            index.by_id.insert(id.clone(), number);
            index.ids.push(id);
        }
        index.cover = None;
        let mut changes = ChangeSet::new();
        changes.auth_chain = entries;
        self.storage.apply(changes).await?;
        Ok(())
    }
}

/// The events of `auth` (event to its auth events) ordered parents first, considering only
/// edges between them; `None` on a cycle.
fn parents_first(auth: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    let mut waiting: HashMap<&str, usize> = HashMap::with_capacity(auth.len());
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut ready: Vec<&str> = Vec::new();
    for (id, parents) in auth {
        let mut count = 0;
        for parent in parents {
            if auth.contains_key(parent) {
                children.entry(parent.as_str()).or_default().push(id.as_str());
                count += 1;
            }
        }
        if count == 0 {
            ready.push(id.as_str());
        } else {
            waiting.insert(id.as_str(), count);
        }
    }
    // Deterministic order among events ready at once.
    ready.sort_unstable();
    let mut order = Vec::with_capacity(auth.len());
    while let Some(id) = ready.pop() {
        order.push(id.to_owned());
        for &child in children.get(id).map(Vec::as_slice).unwrap_or_default() {
            if let Some(count) = waiting.get_mut(child) {
                *count -= 1;
                if *count == 0 {
                    waiting.remove(child);
                    ready.push(child);
                }
            }
        }
    }
    (order.len() == auth.len()).then_some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_rooms_go_first_past_the_bound() {
        let mut cached = Cached { bound: 100, ..Cached::default() };
        let a = cached.get("!a");
        cached.grown("!a", &a, 60);
        let b = cached.get("!b");
        cached.grown("!b", &b, 30);
        // a used again: b is now the oldest.
        assert!(Arc::ptr_eq(&cached.get("!a"), &a));
        let c = cached.get("!c");
        cached.grown("!c", &c, 30);
        assert!(!cached.rooms.contains_key("!b"));
        assert!(cached.rooms.contains_key("!a") && cached.rooms.contains_key("!c"));
        assert_eq!(cached.entries, 90);
        // A room bigger than the bound alone stays (the one being used), the others go.
        cached.grown("!c", &c, 500);
        assert_eq!(cached.rooms.len(), 1);
        assert_eq!(cached.entries, 500);
        // An index replaced meanwhile (read again after a conflict) is not counted twice.
        cached.remove("!c");
        cached.grown("!c", &c, 10);
        assert_eq!(cached.entries, 0);
    }
}
