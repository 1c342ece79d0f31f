//! Registration tokens the administrators make (Synapse's `/v1/registration_tokens`), and
//! their use by registration (`m.login.registration_token`, beside the config's tokens, when
//! registration is by token).
//!
//! A registration reserves a use (`pending`) before it creates the account and turns it
//! into a `completed` use after (or gives it back when the account could not be made), so a
//! token is never used more than `uses_allowed` times by this process: the read, check and
//! write of a token happen under one lock. (Processes sharing a PostgreSQL database each
//! hold their own lock.)

use serde::{Deserialize, Serialize};

use super::flag;
use crate::State;
use crate::error::ApiError;
use crate::services::rooms::now_ms;

/// Serialises the changes of tokens (read, check, write).
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest token (Synapse's bound).
const MAX_TOKEN_CHARS: usize = 64;

/// The length of a generated token when none is asked for.
const DEFAULT_LENGTH: usize = 16;

/// The characters a token may have (Synapse's: unreserved URI characters).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";

/// A token as the admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct TokenInfo {
    token: String,
    uses_allowed: Option<u64>,
    pending: u64,
    completed: u64,
    expiry_time: Option<u64>,
}

impl From<matrix_storage::RegistrationToken> for TokenInfo {
    fn from(t: matrix_storage::RegistrationToken) -> Self {
        TokenInfo {
            token: t.token,
            uses_allowed: t.uses_allowed,
            pending: t.pending,
            completed: t.completed,
            expiry_time: t.expiry_time,
        }
    }
}

fn now() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

fn not_found(token: &str) -> ApiError {
    ApiError::not_found(format!("No such registration token: {token}"))
}

/// `GET /_synapse/admin/v1/registration_tokens`: every token, or only the valid (`true`) or
/// invalid (`false`) ones.
pub(crate) async fn list(state: &State, valid: Option<&str>) -> Result<Vec<TokenInfo>, ApiError> {
    let valid = flag("valid", valid)?;
    let now = now();
    let tokens = state.rooms.storage().registration_tokens().await?;
    Ok(tokens
        .into_iter()
        .filter(|t| valid.is_none_or(|v| t.valid_at(now) == v))
        .map(TokenInfo::from)
        .collect())
}

/// `GET /_synapse/admin/v1/registration_tokens/{token}`.
pub(crate) async fn get(state: &State, token: &str) -> Result<TokenInfo, ApiError> {
    let stored = state.rooms.storage().registration_token(token).await?;
    Ok(stored.ok_or_else(|| not_found(token))?.into())
}

/// The body of `POST /_synapse/admin/v1/registration_tokens/new`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NewToken {
    token: Option<String>,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
    length: Option<i64>,
}

/// The body of `PUT /_synapse/admin/v1/registration_tokens/{token}`: an absent field stays,
/// `null` removes the bound.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenChange {
    #[serde(default, deserialize_with = "present")]
    uses_allowed: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    expiry_time: Option<Option<i64>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

fn uses_allowed(value: Option<i64>) -> Result<Option<u64>, ApiError> {
    value
        .map(|n| {
            u64::try_from(n).map_err(|_| {
                ApiError::invalid_param("`uses_allowed` must be a non-negative integer or null")
            })
        })
        .transpose()
}

fn expiry_time(value: Option<i64>) -> Result<Option<u64>, ApiError> {
    value
        .map(|n| match u64::try_from(n) {
            Ok(n) if n >= now() => Ok(n),
            _ => Err(ApiError::invalid_param("`expiry_time` must be a time in the future or null")),
        })
        .transpose()
}

/// `POST /_synapse/admin/v1/registration_tokens/new`: a token as given (1 to 64 of
/// `A-Za-z0-9._~-`, not in use) or generated (`length` characters, 16 by default).
pub(crate) async fn create(state: &State, body: NewToken) -> Result<TokenInfo, ApiError> {
    let uses_allowed = uses_allowed(body.uses_allowed)?;
    let expiry_time = expiry_time(body.expiry_time)?;
    let token = match body.token {
        Some(token) => {
            if token.is_empty()
                || token.chars().count() > MAX_TOKEN_CHARS
                || !token.bytes().all(|b| ALPHABET.contains(&b))
            {
                return Err(ApiError::invalid_param(
                    "`token` must be 1 to 64 of the characters A-Z, a-z, 0-9, '.', '_', '~', '-'",
                ));
            }
            token
        }
        None => {
            let length = match body.length {
                None => DEFAULT_LENGTH,
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_TOKEN_CHARS).contains(n))
                    .ok_or_else(|| ApiError::invalid_param("`length` must be 1 to 64"))?,
            };
            crate::services::accounts::random_string(ALPHABET, length)?
        }
    };
    let _guard = LOCK.lock().await;
    let storage = state.rooms.storage();
    if storage.registration_token(&token).await?.is_some() {
        return Err(ApiError::invalid_param(format!("Token already exists: {token}")));
    }
    let stored = matrix_storage::RegistrationToken {
        token,
        uses_allowed,
        pending: 0,
        completed: 0,
        expiry_time,
    };
    let mut changes = matrix_storage::ChangeSet::new();
    changes.registration_tokens.push(stored.clone());
    storage.apply(changes).await?;
    Ok(stored.into())
}

/// `PUT /_synapse/admin/v1/registration_tokens/{token}`.
pub(crate) async fn update(
    state: &State,
    token: &str,
    change: TokenChange,
) -> Result<TokenInfo, ApiError> {
    let new_uses = change.uses_allowed.map(uses_allowed).transpose()?;
    let new_expiry = change.expiry_time.map(expiry_time).transpose()?;
    let _guard = LOCK.lock().await;
    let storage = state.rooms.storage();
    let mut stored = storage.registration_token(token).await?.ok_or_else(|| not_found(token))?;
    if let Some(uses) = new_uses {
        stored.uses_allowed = uses;
    }
    if let Some(expiry) = new_expiry {
        stored.expiry_time = expiry;
    }
    let mut changes = matrix_storage::ChangeSet::new();
    changes.registration_tokens.push(stored.clone());
    storage.apply(changes).await?;
    Ok(stored.into())
}

/// `DELETE /_synapse/admin/v1/registration_tokens/{token}`.
pub(crate) async fn delete(state: &State, token: &str) -> Result<(), ApiError> {
    let _guard = LOCK.lock().await;
    let storage = state.rooms.storage();
    if storage.registration_token(token).await?.is_none() {
        return Err(not_found(token));
    }
    let mut changes = matrix_storage::ChangeSet::new();
    changes.deleted_registration_tokens.push(token.to_owned());
    storage.apply(changes).await?;
    Ok(())
}

/// Whether a stored token would let a registration through now.
pub(crate) async fn is_valid(state: &State, token: &str) -> Result<bool, ApiError> {
    let stored = state.rooms.storage().registration_token(token).await?;
    Ok(stored.is_some_and(|t| t.valid_at(now())))
}

/// Reserves a use of a stored token for a registration about to be made (`pending` + 1):
/// whether it was valid. Every reservation is ended by [`finish`].
pub(crate) async fn reserve(state: &State, token: &str) -> Result<bool, ApiError> {
    let _guard = LOCK.lock().await;
    let storage = state.rooms.storage();
    let Some(mut stored) = storage.registration_token(token).await? else { return Ok(false) };
    if !stored.valid_at(now()) {
        return Ok(false);
    }
    stored.pending = stored.pending.saturating_add(1);
    let mut changes = matrix_storage::ChangeSet::new();
    changes.registration_tokens.push(stored);
    storage.apply(changes).await?;
    Ok(true)
}

/// Ends a reservation: a `completed` use when the registration was made, else the use is
/// given back. A token deleted meanwhile stays deleted.
pub(crate) async fn finish(state: &State, token: &str, registered: bool) -> Result<(), ApiError> {
    let _guard = LOCK.lock().await;
    let storage = state.rooms.storage();
    let Some(mut stored) = storage.registration_token(token).await? else { return Ok(()) };
    stored.pending = stored.pending.saturating_sub(1);
    if registered {
        stored.completed = stored.completed.saturating_add(1);
    }
    let mut changes = matrix_storage::ChangeSet::new();
    changes.registration_tokens.push(stored);
    storage.apply(changes).await?;
    Ok(())
}
