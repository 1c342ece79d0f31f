//! Registration tokens: their part of a change set ([`apply_in`]) and their reads. A table
//! added after schema 3 without a new number: a store written before has no tokens.
//!
//! `REGISTRATION_TOKEN` token (as the key's tail, so the table sorts by token) -> uses
//! allowed, pending, completed, expiry.

use async_trait::async_trait;

use super::batch::Tx;
use super::{REGISTRATION_TOKEN, SledStore, unavailable};
use crate::codec::{Dec, Enc};
use crate::{
    ChangeSet, ErrorKind, RegistrationToken, RegistrationTokenStore, Result, StorageError,
};

fn key(token: &str) -> Vec<u8> {
    Enc::table(REGISTRATION_TOKEN).tail(token).done()
}

fn encode(token: &RegistrationToken) -> Vec<u8> {
    let optional = |enc: Enc, n: Option<u64>| match n {
        Some(n) => enc.bool(true).var(n),
        None => enc.bool(false),
    };
    let enc = optional(Enc::default(), token.uses_allowed).var(token.pending).var(token.completed);
    optional(enc, token.expiry_time).done()
}

fn decode(token: &str, value: &[u8]) -> Result<RegistrationToken> {
    let read = || -> Result<RegistrationToken> {
        let mut dec = Dec::new(value);
        let uses_allowed = if dec.bool()? { Some(dec.var()?) } else { None };
        let (pending, completed) = (dec.var()?, dec.var()?);
        let expiry_time = if dec.bool()? { Some(dec.var()?) } else { None };
        Ok(RegistrationToken {
            token: token.to_owned(),
            uses_allowed,
            pending,
            completed,
            expiry_time,
        })
    };
    read().map_err(|e| {
        StorageError::with_source(ErrorKind::Corrupt, "a registration token does not decode", e)
    })
}

/// Writes the change set's registration tokens.
pub(super) fn apply_in(tx: &Tx<'_>, changes: &ChangeSet) -> Result<()> {
    for token in &changes.registration_tokens {
        tx.insert(key(&token.token), encode(token))?;
    }
    for token in &changes.deleted_registration_tokens {
        tx.remove(key(token))?;
    }
    Ok(())
}

#[async_trait]
impl RegistrationTokenStore for SledStore {
    async fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>> {
        self.flusher.check()?;
        self.get(&key(token))?.map(|v| decode(token, &v)).transpose()
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        self.flusher.check()?;
        let mut tokens = Vec::new();
        for entry in self.tree.scan_prefix([REGISTRATION_TOKEN]) {
            let (key, value) = entry.map_err(unavailable)?;
            let token = std::str::from_utf8(key.get(1..).unwrap_or_default()).map_err(|e| {
                StorageError::with_source(ErrorKind::Corrupt, "a registration token key", e)
            })?;
            tokens.push(decode(token, &value)?);
        }
        Ok(tokens)
    }
}
