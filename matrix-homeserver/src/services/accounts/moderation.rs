//! What the server's administrators decided about a user (shadow ban, suspension, their own
//! rate limit), read on every authenticated request through a cache of storage, and the
//! tokens administrators have made to act as users (Synapse's
//! `/_synapse/admin/v1/users/{userId}/login`).
//!
//! The cache is this process's: a change made through another process sharing the same
//! PostgreSQL database reaches this one when the entry is evicted (as the cache of active
//! accounts does).

use matrix_storage::{ChangeSet, PuppetToken, RatelimitOverride, UserModeration};
use ruma::UserId;

use super::{Accounts, random_string, token_key};
use crate::error::ApiError;

/// What the administrators decided about the request's user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Restrictions {
    /// Requests succeed but change nothing anyone else sees.
    pub(crate) shadow_banned: bool,
    /// Reading works, acting in rooms is refused with `M_USER_SUSPENDED`.
    pub(crate) suspended: bool,
    /// Their own rate limit, in place of the configured ones.
    pub(crate) ratelimit: Option<RatelimitOverride>,
}

impl Restrictions {
    /// 403 `M_USER_SUSPENDED` when the user is suspended.
    pub(crate) fn not_suspended(&self) -> Result<(), ApiError> {
        if self.suspended {
            return Err(ApiError::user_suspended());
        }
        Ok(())
    }
}

impl From<&UserModeration> for Restrictions {
    fn from(record: &UserModeration) -> Self {
        Restrictions {
            shadow_banned: record.shadow_banned,
            suspended: record.suspended,
            ratelimit: record.ratelimit,
        }
    }
}

/// The milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Accounts {
    /// What the administrators decided about `user_id` (nothing for a user of another
    /// server or without a record).
    pub(crate) async fn restrictions(&self, user_id: &str) -> Result<Restrictions, ApiError> {
        if let Some(restrictions) = self.restrictions.get(user_id) {
            return Ok(restrictions);
        }
        let restrictions = self
            .storage
            .user_moderation(user_id)
            .await?
            .as_ref()
            .map(Restrictions::from)
            .unwrap_or_default();
        self.restrictions.insert(user_id.to_owned(), restrictions);
        Ok(restrictions)
    }

    /// Changes what the administrators decided about `user_id` (a user of ours who exists)
    /// with `change`, stores it and answers it.
    pub(crate) async fn restrict(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut UserModeration),
    ) -> Result<Restrictions, ApiError> {
        let _guard = self.moderation_writes.lock().await;
        let mut record =
            self.storage.user_moderation(user_id.as_str()).await?.unwrap_or_else(|| {
                UserModeration { user_id: user_id.to_string(), ..Default::default() }
            });
        change(&mut record);
        let restrictions = Restrictions::from(&record);
        let mut changes = ChangeSet::new();
        changes.user_moderation.push(record);
        self.storage.apply(changes).await?;
        self.restrictions.insert(user_id.to_string(), restrictions);
        Ok(restrictions)
    }

    /// A new token acting as `user_id`, made by the administrator `issued_by`, working until
    /// `valid_until_ms` if given. It belongs to no device of the user's.
    pub(crate) async fn puppet_token(
        &self,
        user_id: &UserId,
        issued_by: &UserId,
        valid_until_ms: Option<u64>,
    ) -> Result<String, ApiError> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let access_token = format!("syt_{}", random_string(ALPHABET, 32)?);
        let mut changes = ChangeSet::new();
        changes.puppet_tokens.push(PuppetToken {
            token_hash: token_key(&access_token),
            user_id: user_id.to_string(),
            issued_by: issued_by.to_string(),
            valid_until_ms,
        });
        self.storage.apply(changes).await?;
        Ok(access_token)
    }

    /// The user an administrator's token acts as, by the token's hash: `None` when it is no
    /// such token, it has expired, or the administrator who had it made was deactivated
    /// since (it is theirs, as Synapse's is).
    pub(super) async fn puppet_owner(&self, hash: &str) -> Result<Option<String>, ApiError> {
        let Some(token) = self.storage.puppet_token(hash).await? else { return Ok(None) };
        if token.valid_until_ms.is_some_and(|until| now_ms() >= until) {
            return Ok(None);
        }
        match self.storage.user(&token.issued_by).await? {
            Some(issuer) if !issuer.deactivated => Ok(Some(token.user_id)),
            _ => Ok(None),
        }
    }

    /// Revokes an administrator's token, by its hash (the `/logout` of a request made with
    /// it).
    pub(crate) async fn revoke_puppet_token(&self, hash: &str) -> Result<(), ApiError> {
        let mut changes = ChangeSet::new();
        changes.deleted_puppet_tokens.push(hash.to_owned());
        self.storage.apply(changes).await?;
        Ok(())
    }
}

/// A made-up id for what a shadow-banned user was told was done (Synapse answers a random
/// event id, as an event id of room versions 4 and later looks): `sigil` then `len`
/// characters of unpadded URL-safe base64.
pub(crate) fn made_up_id(sigil: char, len: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::with_capacity(len + 1);
    id.push(sigil);
    while id.len() <= len {
        let part = random_string(ALPHABET, (len + 1 - id.len()).min(32))?;
        id.push_str(&part);
    }
    Ok(id)
}
