//! Administrators' decisions about users and their tokens acting as users: their part of a
//! change set ([`apply_in`]) and their reads. A table added after schema 3 without a new
//! number: a store written before has none.
//!
//! `MODERATION` `u` user -> shadow banned, suspended, rate-limit override;
//! `MODERATION` `t` token hash -> user, issuer, valid until.

use async_trait::async_trait;

use super::batch::Tx;
use super::{MODERATION, SledStore};
use crate::codec::{Dec, Enc};
use crate::{
    ChangeSet, ErrorKind, ModerationStore, PuppetToken, RatelimitOverride, Result, StorageError,
    UserModeration,
};

fn user_key(user_id: &str) -> Vec<u8> {
    Enc::table(MODERATION).raw(b"u").tail(user_id).done()
}

fn token_key(hash: &str) -> Vec<u8> {
    Enc::table(MODERATION).raw(b"t").tail(hash).done()
}

fn encode_user(record: &UserModeration) -> Vec<u8> {
    let enc = Enc::default().bool(record.shadow_banned).bool(record.suspended);
    match record.ratelimit {
        Some(limit) => enc.bool(true).var(limit.messages_per_second).var(limit.burst_count),
        None => enc.bool(false),
    }
    .done()
}

fn decode_user(user_id: &str, value: &[u8]) -> Result<UserModeration> {
    let read = || -> Result<UserModeration> {
        let mut dec = Dec::new(value);
        let (shadow_banned, suspended) = (dec.bool()?, dec.bool()?);
        let ratelimit = if dec.bool()? {
            Some(RatelimitOverride { messages_per_second: dec.var()?, burst_count: dec.var()? })
        } else {
            None
        };
        Ok(UserModeration { user_id: user_id.to_owned(), shadow_banned, suspended, ratelimit })
    };
    read().map_err(|e| {
        StorageError::with_source(ErrorKind::Corrupt, "a user's moderation does not decode", e)
    })
}

fn encode_token(token: &PuppetToken) -> Vec<u8> {
    let enc = Enc::default().str(&token.user_id).str(&token.issued_by);
    match token.valid_until_ms {
        Some(until) => enc.bool(true).var(until),
        None => enc.bool(false),
    }
    .done()
}

fn decode_token(hash: &str, value: &[u8]) -> Result<PuppetToken> {
    let read = || -> Result<PuppetToken> {
        let mut dec = Dec::new(value);
        let (user_id, issued_by) = (dec.str()?, dec.str()?);
        let valid_until_ms = if dec.bool()? { Some(dec.var()?) } else { None };
        Ok(PuppetToken { token_hash: hash.to_owned(), user_id, issued_by, valid_until_ms })
    };
    read().map_err(|e| {
        StorageError::with_source(ErrorKind::Corrupt, "an administrator's token does not decode", e)
    })
}

/// Writes the change set's moderation records and administrators' tokens.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for record in &changes.user_moderation {
        if record.is_empty() {
            tx.remove(user_key(&record.user_id))?;
        } else {
            tx.insert(user_key(&record.user_id), encode_user(record))?;
        }
    }
    for token in &changes.puppet_tokens {
        tx.insert(token_key(&token.token_hash), encode_token(token))?;
    }
    for hash in &changes.deleted_puppet_tokens {
        tx.remove(token_key(hash))?;
    }
    Ok(())
}

#[async_trait]
impl ModerationStore for SledStore {
    async fn user_moderation(&self, user_id: &str) -> Result<Option<UserModeration>> {
        self.flusher.check()?;
        self.get(&user_key(user_id))?.map(|v| decode_user(user_id, &v)).transpose()
    }

    async fn puppet_token(&self, token_hash: &str) -> Result<Option<PuppetToken>> {
        self.flusher.check()?;
        self.get(&token_key(token_hash))?.map(|v| decode_token(token_hash, &v)).transpose()
    }
}
