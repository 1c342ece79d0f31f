//! OpenID tokens and delayed events: their part of a change set ([`apply_in`]) and their
//! reads. Tables added after schema 3 without a new number: a store written before them has
//! neither, which reads as none.
//!
//! - `OPENID` token hash -> owner, expiry;
//! - `DELAYED` (user, delay id) -> the delayed event;
//! - `DELAYED_DUE` (send time, user, delay id) -> nothing: the order they are due in.

use async_trait::async_trait;

use super::batch::Tx;
use super::{DELAYED, DELAYED_DUE, OPENID, SledStore};
use crate::codec::{Dec, Enc};
use crate::{
    ChangeSet, DelayedEvent, DelayedEventStore, ErrorKind, OpenIdStore, OpenIdToken, Result,
    StorageError,
};

fn openid_key(hash: &str) -> Vec<u8> {
    Enc::table(OPENID).str(hash).done()
}

fn delayed_key(user: &str, delay_id: &str) -> Vec<u8> {
    Enc::table(DELAYED).str(user).str(delay_id).done()
}

fn due_key(send_ts: u64, user: &str, delay_id: &str) -> Vec<u8> {
    Enc::table(DELAYED_DUE).u64(send_ts).str(user).str(delay_id).done()
}

fn corrupt(what: &str) -> impl FnOnce(StorageError) -> StorageError + '_ {
    move |e| StorageError::with_source(ErrorKind::Corrupt, format!("{what} does not decode"), e)
}

fn encode_token(token: &OpenIdToken) -> Vec<u8> {
    Enc::default().str(&token.user_id).u64(token.expires_ts).done()
}

fn decode_token(value: &[u8]) -> Result<OpenIdToken> {
    let mut dec = Dec::new(value);
    let mut read = || Ok(OpenIdToken { user_id: dec.str()?, expires_ts: dec.u64()? });
    read().map_err(corrupt("an OpenID token"))
}

fn encode_event(event: &DelayedEvent) -> Vec<u8> {
    Enc::default()
        .str(&event.user_id)
        .str(&event.delay_id)
        .str(&event.device_id)
        .str(&event.room_id)
        .str(&event.kind)
        .opt_str(event.state_key.as_deref())
        .bytes(&event.content)
        .u64(event.delay_ms)
        .u64(event.scheduled_at)
        .done()
}

fn decode_event(value: &[u8]) -> Result<DelayedEvent> {
    let mut dec = Dec::new(value);
    let mut read = || {
        Ok(DelayedEvent {
            user_id: dec.str()?,
            delay_id: dec.str()?,
            device_id: dec.str()?,
            room_id: dec.str()?,
            kind: dec.str()?,
            state_key: dec.opt_str()?,
            content: dec.bytes()?.to_vec(),
            delay_ms: dec.u64()?,
            scheduled_at: dec.u64()?,
        })
    };
    read().map_err(corrupt("a delayed event"))
}

/// Writes the change set's OpenID tokens and delayed events.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for (hash, token) in &changes.openid_tokens {
        tx.insert(openid_key(hash), encode_token(token))?;
    }
    for hash in &changes.deleted_openid_tokens {
        tx.remove(openid_key(hash))?;
    }
    let remove = |user: &str, delay_id: &str| -> Result<()> {
        if let Some(old) = tx.remove(delayed_key(user, delay_id))? {
            let old = decode_event(&old)?;
            tx.remove(due_key(old.send_ts(), user, delay_id))?;
        }
        Ok(())
    };
    for event in &changes.delayed_events {
        remove(&event.user_id, &event.delay_id)?;
        tx.insert(delayed_key(&event.user_id, &event.delay_id), encode_event(event))?;
        tx.insert(due_key(event.send_ts(), &event.user_id, &event.delay_id), Vec::new())?;
    }
    for (user, delay_id) in &changes.deleted_delayed_events {
        remove(user, delay_id)?;
    }
    Ok(())
}

#[async_trait]
impl OpenIdStore for SledStore {
    async fn openid_token(&self, token_hash: &str) -> Result<Option<OpenIdToken>> {
        self.flusher.check()?;
        self.get(&openid_key(token_hash))?.map(|v| decode_token(&v)).transpose()
    }

    async fn expired_openid_tokens(&self, now_ts: u64, limit: usize) -> Result<Vec<String>> {
        self.flusher.check()?;
        let mut expired = Vec::new();
        for entry in self.scan(Enc::table(OPENID).done()) {
            if expired.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if decode_token(&value)?.expires_ts <= now_ts {
                let hash = Dec::new(&key)
                    .skip_table()
                    .and_then(|mut d| d.str())
                    .map_err(corrupt("an OpenID token key"))?;
                expired.push(hash);
            }
        }
        Ok(expired)
    }
}

#[async_trait]
impl DelayedEventStore for SledStore {
    async fn delayed_event(&self, user_id: &str, delay_id: &str) -> Result<Option<DelayedEvent>> {
        self.flusher.check()?;
        self.get(&delayed_key(user_id, delay_id))?.map(|v| decode_event(&v)).transpose()
    }

    async fn delayed_events_of(&self, user_id: &str) -> Result<Vec<DelayedEvent>> {
        self.flusher.check()?;
        let mut events = Vec::new();
        for entry in self.scan(Enc::table(DELAYED).str(user_id).done()) {
            let (_, value) = entry?;
            events.push(decode_event(&value)?);
        }
        events.sort_by(|a, b| (a.send_ts(), &a.delay_id).cmp(&(b.send_ts(), &b.delay_id)));
        Ok(events)
    }

    async fn next_delayed_events(&self, limit: usize) -> Result<Vec<DelayedEvent>> {
        self.flusher.check()?;
        let mut events = Vec::new();
        for entry in self.scan(Enc::table(DELAYED_DUE).done()) {
            if events.len() >= limit {
                break;
            }
            let (key, _) = entry?;
            let mut dec = Dec::new(&key).skip_table().map_err(corrupt("a delayed event key"))?;
            let mut read = || Ok((dec.u64()?, dec.str()?, dec.str()?));
            let (_, user, delay_id) = read().map_err(corrupt("a delayed event key"))?;
            if let Some(value) = self.get(&delayed_key(&user, &delay_id))? {
                events.push(decode_event(&value)?);
            }
        }
        Ok(events)
    }
}
