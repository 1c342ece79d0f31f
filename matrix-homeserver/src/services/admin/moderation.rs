//! Moderating a user (Synapse's user admin API): shadow bans, suspensions, rate-limit
//! overrides, and tokens to act as a user. The decisions are kept in storage
//! ([`matrix_storage::ModerationStore`]) and read on every request through the accounts'
//! cache ([`crate::services::accounts::Restrictions`]), which the HTTP handlers honour.

use matrix_storage::RatelimitOverride;
use ruma::UserId;

use super::users::local_user;
use crate::State;
use crate::error::ApiError;
use crate::services::accounts::Restrictions;

/// `POST`/`DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`.
pub(crate) async fn set_shadow_banned(
    state: &State,
    user_id: &UserId,
    banned: bool,
) -> Result<(), ApiError> {
    local_user(state, user_id).await?;
    state.accounts.restrict(user_id, |record| record.shadow_banned = banned).await?;
    Ok(())
}

/// `PUT /_synapse/admin/v1/suspend/{userId}`.
pub(crate) async fn set_suspended(
    state: &State,
    user_id: &UserId,
    suspended: bool,
) -> Result<(), ApiError> {
    local_user(state, user_id).await?;
    state.accounts.restrict(user_id, |record| record.suspended = suspended).await?;
    Ok(())
}

/// What the administrators decided about a user of ours who exists.
pub(crate) async fn restrictions(
    state: &State,
    user_id: &UserId,
) -> Result<Restrictions, ApiError> {
    local_user(state, user_id).await?;
    state.accounts.restrictions(user_id.as_str()).await
}

/// `POST`/`DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit` (`None` deletes).
pub(crate) async fn set_ratelimit(
    state: &State,
    user_id: &UserId,
    limit: Option<RatelimitOverride>,
) -> Result<(), ApiError> {
    local_user(state, user_id).await?;
    state.accounts.restrict(user_id, |record| record.ratelimit = limit).await?;
    Ok(())
}

/// `POST /_synapse/admin/v1/users/{userId}/login`: a token acting as `user_id` for the
/// administrator `admin`, who may not ask for one of their own (as Synapse refuses).
pub(crate) async fn login_as(
    state: &State,
    admin: &UserId,
    user_id: &UserId,
    valid_until_ms: Option<u64>,
) -> Result<String, ApiError> {
    if user_id.server_name().as_str() != state.config.server_name {
        return Err(ApiError::invalid_param("Only local users can be logged in as"));
    }
    if user_id == admin {
        return Err(ApiError::invalid_param("Cannot use admin API to login as self"));
    }
    let user = local_user(state, user_id).await?;
    if user.deactivated {
        return Err(ApiError::invalid_param("the account is deactivated"));
    }
    state.accounts.puppet_token(user_id, admin, valid_until_ms).await
}

/// `GET /_synapse/admin/v1/users/{userId}/cumulative_joined_room_count`: the rooms this
/// server holds that the user was ever joined to (their membership history in each room they
/// have a membership in, as the history visibility reads it).
pub(crate) async fn cumulative_joined_rooms(
    state: &State,
    user_id: &UserId,
) -> Result<usize, ApiError> {
    local_user(state, user_id).await?;
    let storage = state.rooms.storage();
    let mut count = 0;
    for (room, membership) in storage.rooms_of_user(user_id.as_str()).await? {
        let joined = if membership == "join" {
            true
        } else {
            match storage.room(&room).await?.and_then(|info| info.current_state) {
                Some(current) => {
                    state.rooms.memberships_at(&room, user_id, current).await?.ever_joined()
                }
                None => false,
            }
        };
        if joined {
            count += 1;
        }
    }
    Ok(count)
}
