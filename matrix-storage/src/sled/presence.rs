//! Presence: its part of a change set ([`apply_in`]) and its reads. A table added after schema
//! 3 without a new number: a store written before it has no presence, which reads as none.
//!
//! One record per user, keyed by the user id: the state as a byte (its order in
//! [`PresenceState::ALL`]), the last-active time, `currently_active` and the status message.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::batch::Tx;
use super::{PRESENCE, SledStore};
use crate::codec::{Dec, Enc};
use crate::{ChangeSet, ErrorKind, Presence, PresenceState, PresenceStore, Result, StorageError};

fn key(user: &str) -> Vec<u8> {
    Enc::table(PRESENCE).str(user).done()
}

fn encode(presence: &Presence) -> Vec<u8> {
    let state = PresenceState::ALL.iter().position(|s| *s == presence.state).unwrap_or(2);
    Enc::default()
        .u64(state as u64)
        .u64(presence.last_active_ts)
        .bool(presence.currently_active)
        .opt_str(presence.status_msg.as_deref())
        .done()
}

fn decode(user: &str, value: &[u8]) -> Result<Presence> {
    let mut dec = Dec::new(value);
    let mut read = || {
        let state = dec.u64()?;
        Ok((state, dec.u64()?, dec.bool()?, dec.opt_str()?))
    };
    let corrupt = |error: StorageError| {
        StorageError::with_source(
            ErrorKind::Corrupt,
            format!("the stored presence of {user} does not decode"),
            error,
        )
    };
    let (state, last_active_ts, currently_active, status_msg) = read().map_err(corrupt)?;
    let state =
        usize::try_from(state).ok().and_then(|i| PresenceState::ALL.get(i).copied()).ok_or_else(
            || StorageError::new(ErrorKind::Corrupt, format!("unknown presence state of {user}")),
        )?;
    Ok(Presence { state, status_msg, last_active_ts, currently_active })
}

/// Writes the change set's presence.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for (user, presence) in &changes.presence {
        tx.insert(key(user), encode(presence))?;
    }
    Ok(())
}

#[async_trait]
impl PresenceStore for SledStore {
    async fn presence(&self, user_id: &str) -> Result<Option<Presence>> {
        self.flusher.check()?;
        self.get(&key(user_id))?.map(|v| decode(user_id, &v)).transpose()
    }

    async fn presences(&self, user_ids: &[&str]) -> Result<Vec<(String, Presence)>> {
        self.flusher.check()?;
        let wanted: BTreeSet<&str> = user_ids.iter().copied().collect();
        let mut out = Vec::new();
        for user in wanted {
            if let Some(value) = self.get(&key(user))? {
                out.push((user.to_owned(), decode(user, &value)?));
            }
        }
        Ok(out)
    }

    async fn present_users(&self) -> Result<Vec<(String, Presence)>> {
        self.flusher.check()?;
        let mut out = Vec::new();
        for entry in self.scan(Enc::table(PRESENCE).done()) {
            let (key, value) = entry?;
            let user = Dec::new(&key).skip_table().and_then(|mut d| d.str()).map_err(|e| {
                StorageError::with_source(ErrorKind::Corrupt, "a presence key does not decode", e)
            })?;
            let presence = decode(&user, &value)?;
            if presence.state != PresenceState::Offline {
                out.push((user, presence));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
