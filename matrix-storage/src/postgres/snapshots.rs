//! State snapshots in PostgreSQL: the layered records of [`crate::layers`] over interned ids.
//!
//! `snapshots` has a row per snapshot: `layers` is its stack of records (bottom first, itself
//! last) and `sizes` their entries, `parent` the record just below it; `snapshot_entries`
//! holds each record's entries (a NULL event removes the key). Snapshots written before
//! migration 3 are delta chains, a whole state every 64; the migration set their stacks to
//! their chains. Reads go through the process's [`LayerCache`] of decoded records: records and
//! interned ids never change once committed and ids are never reused (sequences), so what it
//! holds stays right while other processes write the database. A stack whose records are too
//! big to cache is read by one query instead: an indexed lookup of the key in each record,
//! the nearest record's entry winning.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sqlx::{PgConnection, Row};

use super::{Doing, PostgresStore, to_i64, to_u64};
use crate::layers::{self, Entries, Layer, MAX_STACK, StateKey};
use crate::{ErrorKind, NewSnapshot, Result, SnapshotId, StateEntry, StorageError};

fn missing(what: String) -> StorageError {
    StorageError::new(ErrorKind::MissingReference, what)
}

fn corrupt(what: String) -> StorageError {
    StorageError::new(ErrorKind::Corrupt, what)
}

/// A stack as stored: `layers` and `sizes`, zipped, checked.
fn stack_of(layers: Vec<i64>, sizes: Vec<i64>) -> Result<Vec<(u64, u64)>> {
    if layers.len() != sizes.len() || layers.is_empty() {
        return Err(corrupt("a snapshot's layers and sizes do not match".to_owned()));
    }
    if layers.len() > MAX_STACK {
        return Err(layers::chain_loops());
    }
    layers.into_iter().zip(sizes).map(|(id, size)| Ok((to_u64(id)?, to_u64(size)?))).collect()
}

/// Interns `(type, state_key)`s; returns their ids.
async fn intern_keys(
    tx: &mut PgConnection,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), i64>> {
    const DOING: &str = "interning state keys";
    let kinds: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let state_keys: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let select = "SELECT s.id, s.kind, s.state_key FROM state_keys s \
                  JOIN unnest($1::text[], $2::text[]) AS i(kind, state_key) \
                  ON s.kind = i.kind AND s.state_key = i.state_key";
    let mut found = HashMap::new();
    for attempt in 0..2 {
        let rows = sqlx::query(select)
            .bind(&kinds)
            .bind(&state_keys)
            .fetch_all(&mut *tx)
            .await
            .doing(DOING)?;
        for row in rows {
            found.insert((row.try_get(1).doing(DOING)?, row.try_get(2).doing(DOING)?), {
                row.try_get(0).doing(DOING)?
            });
        }
        if found.len() == keys.len() || attempt == 1 {
            break;
        }
        // Sorted input: concurrent writers interning the same new keys wait in one order.
        sqlx::query(
            "INSERT INTO state_keys (kind, state_key) \
             SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&kinds)
        .bind(&state_keys)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if found.len() != keys.len() {
        return Err(StorageError::new(ErrorKind::Unavailable, "a state key could not be interned"));
    }
    Ok(found)
}

/// Interns event ids; returns their numbers.
async fn intern_events(tx: &mut PgConnection, ids: &[&str]) -> Result<HashMap<String, i64>> {
    const DOING: &str = "interning event ids";
    let mut found = HashMap::new();
    for attempt in 0..2 {
        let rows = sqlx::query("SELECT nid, event_id FROM event_nids WHERE event_id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .doing(DOING)?;
        for row in rows {
            found.insert(row.try_get(1).doing(DOING)?, row.try_get(0).doing(DOING)?);
        }
        if found.len() == ids.len() || attempt == 1 {
            break;
        }
        sqlx::query(
            "INSERT INTO event_nids (event_id) SELECT * FROM unnest($1::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    if found.len() != ids.len() {
        return Err(StorageError::new(ErrorKind::Unavailable, "an event id could not be interned"));
    }
    Ok(found)
}

/// Writes the change set's new snapshot ([`layers::compact`]) and returns its id.
pub(super) async fn write_snapshot(tx: &mut PgConnection, new: &NewSnapshot) -> Result<SnapshotId> {
    const DOING: &str = "writing a state snapshot";
    let stack = match new.parent {
        Some(parent) => {
            let row: Option<(Vec<i64>, Vec<i64>)> =
                sqlx::query_as("SELECT layers, sizes FROM snapshots WHERE id = $1")
                    .bind(to_i64(parent.0))
                    .fetch_optional(&mut *tx)
                    .await
                    .doing(DOING)?;
            let (layers, sizes) =
                row.ok_or_else(|| missing(format!("parent snapshot {}", parent.0)))?;
            stack_of(layers, sizes)?
        }
        None => Vec::new(),
    };
    // Applied in order: of two changes to one key, the later wins.
    let mut by_name: HashMap<(&str, &str), Option<&str>> = HashMap::new();
    for (kind, state_key, event) in &new.changes {
        by_name.insert((kind.as_str(), state_key.as_str()), event.as_deref());
    }
    // Sorted, so that concurrent writers interning the same new keys wait in one order.
    let keys: Vec<(&str, &str)> =
        by_name.keys().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let events: Vec<&str> =
        by_name.values().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let key_ids = if keys.is_empty() { HashMap::new() } else { intern_keys(tx, &keys).await? };
    let nids = if events.is_empty() { HashMap::new() } else { intern_events(tx, &events).await? };
    let not_interned = || StorageError::new(ErrorKind::Unavailable, "interning failed");
    let mut record: Vec<(i64, Option<i64>)> = Vec::with_capacity(by_name.len());
    for ((kind, state_key), event) in by_name {
        let key = key_ids.get(&(kind.to_owned(), state_key.to_owned())).ok_or_else(not_interned)?;
        let nid = match event {
            Some(event) => Some(*nids.get(event).ok_or_else(not_interned)?),
            None => None,
        };
        record.push((*key, nid));
    }
    record.sort_unstable_by_key(|&(key, _)| key);

    // As layers::compact, reading each absorbed record in the transaction.
    let mut kept = stack.len();
    while kept > 0 && layers::absorbs(kept, stack[kept - 1].1, record.len()) {
        kept -= 1;
        let lower: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT key, event FROM snapshot_entries WHERE snapshot = $1 ORDER BY key",
        )
        .bind(to_i64(stack[kept].0))
        .fetch_all(&mut *tx)
        .await
        .doing(DOING)?;
        record = layers::merge(lower, record);
    }
    if kept == 0 {
        record.retain(|(_, event)| event.is_some());
    }

    let id: i64 = sqlx::query_scalar("SELECT nextval('snapshot_ids')")
        .fetch_one(&mut *tx)
        .await
        .doing(DOING)?;
    let below = &stack[..kept];
    let mut layer_ids: Vec<i64> = below.iter().map(|&(id, _)| to_i64(id)).collect();
    let mut sizes: Vec<i64> = below.iter().map(|&(_, size)| to_i64(size)).collect();
    layer_ids.push(id);
    sizes.push(record.len() as i64);
    sqlx::query(
        "INSERT INTO snapshots (id, parent, depth, layers, sizes) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(below.last().map(|&(id, _)| to_i64(id)))
    .bind(kept as i32)
    .bind(&layer_ids)
    .bind(&sizes)
    .execute(&mut *tx)
    .await
    .doing(DOING)?;
    if !record.is_empty() {
        let (keys, events): (Vec<i64>, Vec<Option<i64>>) = record.into_iter().unzip();
        sqlx::query(
            "INSERT INTO snapshot_entries (snapshot, key, event) \
             SELECT $1, * FROM unnest($2::int8[], $3::int8[])",
        )
        .bind(id)
        .bind(&keys)
        .bind(&events)
        .execute(&mut *tx)
        .await
        .doing(DOING)?;
    }
    Ok(SnapshotId(to_u64(id)?))
}

impl PostgresStore {
    /// The stack of snapshot `id` (bottom first, itself last), or `None` if there is none.
    async fn stack(&self, id: u64) -> Result<Option<Vec<(u64, u64)>>> {
        if let Some(layer) = self.snapshots.layer(id) {
            return Ok(Some(layer.stack(id)));
        }
        let row: Option<(Vec<i64>, Vec<i64>)> =
            sqlx::query_as("SELECT layers, sizes FROM snapshots WHERE id = $1")
                .bind(to_i64(id))
                .fetch_optional(&self.pool)
                .await
                .doing("reading a snapshot")?;
        row.map(|(layers, sizes)| stack_of(layers, sizes)).transpose()
    }

    /// The records of `stack`, decoded: from the cache, the others loaded into it by one
    /// query; `None` if those are too big to cache.
    async fn layers(&self, stack: &[(u64, u64)]) -> Result<Option<Vec<Arc<Layer>>>> {
        const DOING: &str = "reading snapshot records";
        let mut found: Vec<Option<Arc<Layer>>> =
            stack.iter().map(|&(id, _)| self.snapshots.layer(id)).collect();
        let wanted: Vec<usize> = (0..stack.len()).filter(|&i| found[i].is_none()).collect();
        if wanted.is_empty() {
            return Ok(Some(found.into_iter().flatten().collect()));
        }
        if !self.snapshots.fits(wanted.iter().map(|&i| stack[i].1).sum()) {
            return Ok(None);
        }
        let ids: Vec<i64> = wanted.iter().map(|&i| to_i64(stack[i].0)).collect();
        let rows = sqlx::query(
            "SELECT e.snapshot, e.key, k.kind, k.state_key, e.event, n.event_id \
             FROM snapshot_entries e JOIN state_keys k ON k.id = e.key \
             LEFT JOIN event_nids n ON n.nid = e.event WHERE e.snapshot = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        let mut records: HashMap<i64, Entries> = HashMap::new();
        for row in rows {
            let key: i64 = row.try_get(1).doing(DOING)?;
            let name = self.snapshots.key(to_u64(key)?, || {
                let kind: String = row.try_get(2).doing(DOING)?;
                let state_key: String = row.try_get(3).doing(DOING)?;
                Ok(StateKey::new(&kind, &state_key))
            })?;
            let event = match row.try_get::<Option<i64>, _>(4).doing(DOING)? {
                Some(nid) => Some(self.snapshots.event(to_u64(nid)?, || {
                    let event: Option<String> = row.try_get(5).doing(DOING)?;
                    event.ok_or_else(|| corrupt(format!("event number {nid} is not stored")))
                })?),
                None => None,
            };
            records.entry(row.try_get(0).doing(DOING)?).or_default().push((name, event));
        }
        for i in wanted {
            let (id, size) = stack[i];
            let mut entries = records.remove(&to_i64(id)).unwrap_or_default();
            if entries.len() as u64 != size {
                return Err(corrupt(format!(
                    "snapshot record {id} has {} entries, its stack says {size}",
                    entries.len()
                )));
            }
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let layer = Arc::new(Layer::new(stack[..i].to_vec(), entries));
            self.snapshots.insert(id, layer.clone());
            found[i] = Some(layer);
        }
        Ok(Some(found.into_iter().flatten().collect()))
    }

    /// The event at `(kind, state_key)` in snapshot `id`.
    pub(super) async fn lookup(
        &self,
        id: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        let Some(stack) = self.stack(id).await? else { return Ok(None) };
        if let Some(layers) = self.layers(&stack).await? {
            let hash = layers::key_hash(kind, state_key);
            for layer in layers.iter().rev() {
                if let Some(event) = layer.get(kind, state_key, hash) {
                    return Ok(event.map(|e| e.to_string()));
                }
            }
            return Ok(None);
        }
        let ids: Vec<i64> = stack.iter().map(|&(id, _)| to_i64(id)).collect();
        let row: Option<Option<String>> = sqlx::query_scalar(
            "SELECT n.event_id FROM unnest($1::int8[]) WITH ORDINALITY AS l(id, pos) \
             JOIN snapshot_entries e ON e.snapshot = l.id \
             LEFT JOIN event_nids n ON n.nid = e.event \
             WHERE e.key = (SELECT id FROM state_keys WHERE kind = $2 AND state_key = $3) \
             ORDER BY l.pos DESC LIMIT 1",
        )
        .bind(&ids)
        .bind(kind)
        .bind(state_key)
        .fetch_optional(&self.pool)
        .await
        .doing("looking up state")?;
        Ok(row.flatten())
    }

    /// The whole state of snapshot `id`, sorted.
    pub(super) async fn full_state(&self, id: u64) -> Result<Vec<StateEntry>> {
        const DOING: &str = "reading a whole state";
        let Some(stack) = self.stack(id).await? else { return Ok(Vec::new()) };
        if let Some(layers) = self.layers(&stack).await? {
            let refs: Vec<&Layer> = layers.iter().map(|layer| &**layer).collect();
            return Ok(layers::full(&refs));
        }
        let ids: Vec<i64> = stack.iter().map(|&(id, _)| to_i64(id)).collect();
        let rows = sqlx::query(
            "SELECT k.kind, k.state_key, n.event_id FROM ( \
                SELECT DISTINCT ON (e.key) e.key, e.event \
                FROM unnest($1::int8[]) WITH ORDINALITY AS l(id, pos) \
                JOIN snapshot_entries e ON e.snapshot = l.id ORDER BY e.key, l.pos DESC \
             ) latest JOIN state_keys k ON k.id = latest.key \
             JOIN event_nids n ON n.nid = latest.event \
             ORDER BY k.kind COLLATE \"C\", k.state_key COLLATE \"C\"",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing(DOING)?;
        rows.iter()
            .map(|row| {
                Ok(StateEntry {
                    kind: row.try_get(0).doing(DOING)?,
                    state_key: row.try_get(1).doing(DOING)?,
                    event_id: row.try_get(2).doing(DOING)?,
                })
            })
            .collect()
    }
}
