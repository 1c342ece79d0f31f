//! Rooms' auth-chain indexes ([`crate::ChangeSet::auth_chain`]): the `auth_chain` table of
//! migration 7, keyed `(room_id, idx)`; and the batch read of events.
//!
//! A change set's entries are inserted first of all its writes, by one statement: a number
//! stored already (by any process sharing the database), or taken twice in the change set,
//! fails it on the primary key ([`crate::ErrorKind::Conflict`]) and the transaction, the whole
//! change set, rolls back. A writer that inserts a number another transaction has inserted
//! but not committed yet waits for that transaction: one of the two commits.

use std::sync::Arc;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

use super::{Doing, status_of, to_u64};
use crate::{AuthChainEntry, ErrorKind, Result, SnapshotId, StorageError, StoredEvent, StreamPos};

/// One link's bytes in the `links` column: the chain, then the sequence number, big-endian.
const LINK_BYTES: usize = 8;

/// Adds the change set's entries (see the module's doc for conflicts).
pub(super) async fn record(tx: &mut PgConnection, entries: &[AuthChainEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    // Sorted: concurrent writers of the same numbers wait for each other in one order.
    let mut sorted: Vec<&AuthChainEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| (&e.room_id, e.index));
    let mut rooms = Vec::with_capacity(sorted.len());
    let mut indexes = Vec::with_capacity(sorted.len());
    let mut events = Vec::with_capacity(sorted.len());
    let mut chains = Vec::with_capacity(sorted.len());
    let mut seqs = Vec::with_capacity(sorted.len());
    let mut links = Vec::with_capacity(sorted.len());
    for entry in sorted {
        rooms.push(entry.room_id.as_str());
        indexes.push(i64::from(entry.index));
        events.push(entry.event_id.as_str());
        chains.push(i64::from(entry.chain));
        seqs.push(i64::from(entry.seq));
        links.push(encode_links(&entry.links));
    }
    sqlx::query(
        "INSERT INTO auth_chain (room_id, idx, event_id, chain, seq, links) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], \
         $6::bytea[])",
    )
    .bind(rooms)
    .bind(indexes)
    .bind(events)
    .bind(chains)
    .bind(seqs)
    .bind(links)
    .execute(&mut *tx)
    .await
    .doing("adding to auth-chain indexes")?;
    Ok(())
}

fn encode_links(links: &[(u32, u32)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(links.len() * LINK_BYTES);
    for (chain, seq) in links {
        bytes.extend_from_slice(&chain.to_be_bytes());
        bytes.extend_from_slice(&seq.to_be_bytes());
    }
    bytes
}

fn decode_links(bytes: &[u8]) -> Option<Vec<(u32, u32)>> {
    if !bytes.len().is_multiple_of(LINK_BYTES) {
        return None;
    }
    let word = |b: &[u8]| b.try_into().ok().map(u32::from_be_bytes);
    bytes
        .chunks_exact(LINK_BYTES)
        .map(|link| Some((word(&link[..4])?, word(&link[4..])?)))
        .collect()
}

/// [`crate::EventStore::auth_chain_index`].
pub(super) async fn range(
    pool: &PgPool,
    room_id: &str,
    from: u32,
    limit: usize,
) -> Result<Vec<AuthChainEntry>> {
    const DOING: &str = "reading an auth-chain index";
    let rows = sqlx::query(
        "SELECT idx, event_id, chain, seq, links FROM auth_chain \
         WHERE room_id = $1 AND idx >= $2 ORDER BY idx LIMIT $3",
    )
    .bind(room_id)
    .bind(i64::from(from))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .doing(DOING)?;
    rows.iter().map(|row| entry(room_id, row)).collect()
}

/// An entry's row; one the types cannot hold is an error naming it.
fn entry(room_id: &str, row: &PgRow) -> Result<AuthChainEntry> {
    const DOING: &str = "reading an auth-chain index";
    let idx: i64 = row.try_get(0).doing(DOING)?;
    let corrupt = |what: &str| {
        StorageError::new(
            ErrorKind::Corrupt,
            format!("the stored auth-chain index entry {idx} of room {room_id}: {what}"),
        )
    };
    let number = |n: i64, what: &str| u32::try_from(n).map_err(|_| corrupt(what));
    let links: Vec<u8> = row.try_get(4).doing(DOING)?;
    Ok(AuthChainEntry {
        room_id: room_id.to_owned(),
        index: number(idx, "a number past u32")?,
        event_id: row.try_get(1).doing(DOING)?,
        chain: number(row.try_get(2).doing(DOING)?, "a chain past u32")?,
        seq: number(row.try_get(3).doing(DOING)?, "a sequence number past u32")?,
        links: decode_links(&links).ok_or_else(|| corrupt("links cut short"))?,
    })
}

/// The columns [`stored_event`] reads, in its order.
pub(super) const EVENT_COLUMNS: &str =
    "event_id, room_id, json, status, stream, state_after, auth_events, prev_events";

/// An event's row of [`EVENT_COLUMNS`].
pub(super) fn stored_event(row: &PgRow) -> Result<StoredEvent> {
    const DOING: &str = "reading an event";
    let json: Vec<u8> = row.try_get(2).doing(DOING)?;
    let stream: Option<i64> = row.try_get(4).doing(DOING)?;
    let state: Option<i64> = row.try_get(5).doing(DOING)?;
    Ok(StoredEvent {
        event_id: row.try_get(0).doing(DOING)?,
        room_id: row.try_get(1).doing(DOING)?,
        json: Arc::from(json),
        status: status_of(row.try_get(3).doing(DOING)?)?,
        auth_events: row.try_get(6).doing(DOING)?,
        prev_events: row.try_get(7).doing(DOING)?,
        stream: stream.map(to_u64).transpose()?.map(StreamPos),
        state_after: state.map(to_u64).transpose()?.map(SnapshotId),
    })
}

/// [`crate::EventStore::events`]: one query.
pub(super) async fn events(pool: &PgPool, event_ids: &[&str]) -> Result<Vec<StoredEvent>> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ANY($1)"))
        .bind(event_ids)
        .fetch_all(pool)
        .await
        .doing("reading events")?;
    rows.iter().map(stored_event).collect()
}
