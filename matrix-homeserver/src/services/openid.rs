//! OpenID tokens: `/user/{userId}/openid/request_token` hands one to a user for a third party
//! (an integration manager, a widget), which asks our federation endpoint
//! `/openid/userinfo` who it belongs to. Tokens are kept, as access tokens are, only as
//! their SHA-256, valid for an hour (Synapse's lifetime); expired ones are deleted a batch at a
//! time as new ones are handed out.

use std::sync::Arc;

use matrix_storage::{ChangeSet, OpenIdToken, Storage};
use ruma::UserId;

use super::accounts::{random_string, token_key};
use super::delayed_events::now_ms;
use crate::error::ApiError;

/// How long a token is valid, in seconds.
pub(crate) const LIFETIME_SECS: u64 = 3600;
/// How many expired tokens a new one deletes at most.
const PRUNE: usize = 64;

/// A new token for `user`, stored before it is answered.
pub(crate) async fn issue(storage: &Arc<dyn Storage>, user: &UserId) -> Result<String, ApiError> {
    let token =
        random_string(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 32)?;
    let now = now_ms();
    let mut changes = ChangeSet::new();
    changes.deleted_openid_tokens = storage.expired_openid_tokens(now, PRUNE).await?;
    changes.openid_tokens.push((
        token_key(&token),
        OpenIdToken { user_id: user.to_string(), expires_ts: now + LIFETIME_SECS * 1000 },
    ));
    storage.apply(changes).await?;
    Ok(token)
}

/// Who a token belongs to: 401 `M_UNKNOWN_TOKEN` for one unknown or expired.
pub(crate) async fn owner(storage: &Arc<dyn Storage>, token: &str) -> Result<String, ApiError> {
    match storage.openid_token(&token_key(token)).await? {
        Some(owner) if owner.expires_ts > now_ms() => Ok(owner.user_id),
        _ => Err(ApiError::unknown_token()),
    }
}
