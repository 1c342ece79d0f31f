//! Rooms' auth-chain indexes ([`crate::ChangeSet::auth_chain`]): the AUTH_CHAIN table
//! `(room, number) -> entry`, so that a room's entries from a number on are one range scan in
//! order; and the batch read of events.
//!
//! **Records** are compact (a 50,000-member room holds about 52,000 entries): the chain, the
//! sequence number, the count of links and each link's chain and sequence number as LEB128
//! integers, then the event id to the end of the record. Writes go through the change set's
//! batch and its write-ahead log record like every other.

use std::collections::{BTreeSet, HashSet};

use super::batch::Tx;
use super::records::decode_event;
use super::{AUTH_CHAIN, EVENT, SledStore, unavailable};
use crate::codec::{Dec, Enc};
use crate::{AuthChainEntry, ChangeSet, ErrorKind, Result, StorageError, StoredEvent};

fn key(room_id: &str, index: u32) -> Vec<u8> {
    Enc::table(AUTH_CHAIN).str(room_id).u32(index).done()
}

fn encode(entry: &AuthChainEntry) -> Vec<u8> {
    let mut enc =
        Enc::default().var(entry.chain.into()).var(entry.seq.into()).var(entry.links.len() as u64);
    for &(chain, seq) in &entry.links {
        enc = enc.var(chain.into()).var(seq.into());
    }
    enc.raw(entry.event_id.as_bytes()).done()
}

/// The entry of `room_id` numbered `index` stored as `value`; one that does not decode is an
/// error naming it.
fn decode(room_id: &str, index: u32, value: &[u8]) -> Result<AuthChainEntry> {
    let read = || -> Result<AuthChainEntry> {
        let mut dec = Dec::new(value);
        let mut number = || -> Result<u32> {
            let n = dec.var()?;
            u32::try_from(n).map_err(|_| StorageError::new(ErrorKind::Corrupt, "past u32"))
        };
        let (chain, seq) = (number()?, number()?);
        let count = dec.var()?;
        let mut links = Vec::new();
        for _ in 0..count {
            let chain = u32::try_from(dec.var()?);
            let seq = u32::try_from(dec.var()?);
            match (chain, seq) {
                (Ok(chain), Ok(seq)) => links.push((chain, seq)),
                _ => return Err(StorageError::new(ErrorKind::Corrupt, "a link past u32")),
            }
        }
        let event_id = dec.tail()?;
        Ok(AuthChainEntry { room_id: room_id.to_owned(), index, event_id, chain, seq, links })
    };
    read().map_err(|error| {
        StorageError::with_source(
            ErrorKind::Corrupt,
            format!("the stored auth-chain index entry {index} of room {room_id} does not decode"),
            error,
        )
    })
}

/// Checks that no entry of `changes` takes a number stored already or taken twice in the
/// change set (else the whole change set is a conflict); done before anything is written.
pub(super) fn check(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    let mut taken = HashSet::new();
    for entry in &changes.auth_chain {
        if !taken.insert((&entry.room_id, entry.index))
            || tx.get(key(&entry.room_id, entry.index))?.is_some()
        {
            return Err(entry.taken());
        }
    }
    Ok(())
}

/// Writes the change set's entries (checked by [`check`]).
pub(super) fn write(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for entry in &changes.auth_chain {
        tx.insert(key(&entry.room_id, entry.index), encode(entry))?;
    }
    Ok(())
}

impl SledStore {
    /// [`crate::EventStore::auth_chain_index`]: one range scan.
    pub(super) fn auth_chain_range(
        &self,
        room_id: &str,
        from: u32,
        limit: usize,
    ) -> Result<Vec<AuthChainEntry>> {
        let mut entries = Vec::new();
        if limit == 0 {
            return Ok(entries);
        }
        let range = key(room_id, from)..=key(room_id, u32::MAX);
        for entry in self.tree.range(range).take(limit) {
            let (key, value) = entry.map_err(unavailable)?;
            let index = {
                let mut dec = Dec::new(&key).skip_table()?;
                dec.str()?;
                dec.u32()
            };
            let index = index.map_err(|error| {
                StorageError::with_source(
                    ErrorKind::Corrupt,
                    format!("a stored auth-chain index key of room {room_id} does not decode"),
                    error,
                )
            })?;
            entries.push(decode(room_id, index, &value)?);
        }
        Ok(entries)
    }

    /// [`crate::EventStore::events`]: a read per distinct id.
    pub(super) fn events_among(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>> {
        let wanted: BTreeSet<&str> = event_ids.iter().copied().collect();
        let mut events = Vec::with_capacity(wanted.len());
        for id in wanted {
            if let Some(value) = self.get(&Enc::table(EVENT).str(id).done())? {
                events.push(decode_event(id, &value)?);
            }
        }
        Ok(events)
    }
}
