//! Users, as Synapse's admin API shows and changes them: the list (`/v2/users`, `/v3/users`),
//! one user (`/v2/users/{userId}`, get and create-or-modify), deactivation (with erasure),
//! password resets and the administrator flag.
//!
//! Shadow bans and suspensions are the administrators' decisions of [`super::moderation`].
//! What this server does not keep reads as Synapse's defaults: no guests, user types, locks,
//! third-party ids or external ids; no creation or last-seen times (`null`). Ordering by one
//! of those is accepted and orders by name.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{backwards, flag, page};
use crate::State;
use crate::error::ApiError;

/// How many users one read of the store brings while a list is made.
const SCAN_BATCH: usize = 1_000;

/// The query of `GET /_synapse/admin/v2/users` (and v3), as strings: checked here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListUsersParams {
    from: Option<String>,
    limit: Option<String>,
    user_id: Option<String>,
    name: Option<String>,
    guests: Option<String>,
    admins: Option<String>,
    deactivated: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
}

/// The v2 list hides deactivated users unless `deactivated=true`; v3 shows everybody unless
/// `deactivated` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListVersion {
    /// `/_synapse/admin/v2/users`.
    V2,
    /// `/_synapse/admin/v3/users`.
    V3,
}

/// What a list is sorted by (then by name); the fields this server does not keep are all
/// equal, so they sort by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderBy {
    Name,
    Admin,
    Deactivated,
    Displayname,
    AvatarUrl,
    ShadowBanned,
    /// `is_guest`, `user_type`, `creation_ts`, `last_seen_ts`, `locked`.
    Unkept,
}

impl OrderBy {
    fn parse(order_by: Option<&str>) -> Result<Self, ApiError> {
        Ok(match order_by {
            None | Some("name") => OrderBy::Name,
            Some("admin") => OrderBy::Admin,
            Some("deactivated") => OrderBy::Deactivated,
            Some("displayname") => OrderBy::Displayname,
            Some("avatar_url") => OrderBy::AvatarUrl,
            Some("shadow_banned") => OrderBy::ShadowBanned,
            Some("is_guest" | "user_type" | "creation_ts" | "last_seen_ts" | "locked") => {
                OrderBy::Unkept
            }
            Some(_) => return Err(ApiError::invalid_param("unknown `order_by`")),
        })
    }

    fn needs_profile(self) -> bool {
        matches!(self, OrderBy::Displayname | OrderBy::AvatarUrl)
    }
}

/// A user as the list shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UserSummary {
    name: String,
    is_guest: bool,
    admin: bool,
    user_type: Option<String>,
    deactivated: bool,
    erased: bool,
    shadow_banned: bool,
    displayname: Option<String>,
    avatar_url: Option<String>,
    creation_ts: Option<u64>,
    last_seen_ts: Option<u64>,
    locked: bool,
}

/// A user as `GET /_synapse/admin/v2/users/{userId}` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UserDetails {
    #[serde(flatten)]
    summary: UserSummary,
    threepids: Vec<Value>,
    external_ids: Vec<Value>,
    appservice_id: Option<String>,
    consent_server_notice_sent: Option<String>,
    consent_version: Option<String>,
    consent_ts: Option<u64>,
    suspended: bool,
}

/// One page of the user list.
#[derive(Debug, Serialize)]
pub(crate) struct UserPage {
    users: Vec<UserSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    total: usize,
}

/// A user read for a list, with the profile when it was needed.
struct Row {
    user: matrix_storage::User,
    profile: Option<matrix_storage::Profile>,
}

impl Row {
    fn displayname(&self) -> Option<&str> {
        self.profile.as_ref().and_then(|p| p.displayname.as_deref())
    }
    fn avatar_url(&self) -> Option<&str> {
        self.profile.as_ref().and_then(|p| p.avatar_url.as_deref())
    }
}

/// `GET /_synapse/admin/v2/users` and v3: the users of this server that pass the filters,
/// sorted, a page of them from the offset `from`, with the count of all that pass.
///
/// Every request reads the whole user table (as Synapse's count does); the rows kept while
/// sorting are the users that pass the filters, with their profiles only when a filter or
/// the order needs them.
pub(crate) async fn list_users(
    state: &State,
    params: &ListUsersParams,
    version: ListVersion,
) -> Result<UserPage, ApiError> {
    let (from, limit) = page(params.from.as_deref(), params.limit.as_deref())?;
    let order = OrderBy::parse(params.order_by.as_deref())?;
    let backwards = backwards(params.dir.as_deref())?;
    let admins = flag("admins", params.admins.as_deref())?;
    let deactivated = flag("deactivated", params.deactivated.as_deref())?;
    // No guests here: `guests` only needs to be well formed.
    flag("guests", params.guests.as_deref())?;
    let name = params.name.as_deref().filter(|n| !n.is_empty()).map(str::to_lowercase);
    let user_id = params.user_id.as_deref().filter(|n| !n.is_empty()).map(str::to_lowercase);
    let storage = state.rooms.storage();

    let mut rows = Vec::new();
    let mut after = String::new();
    loop {
        let batch = storage.users(&after, SCAN_BATCH).await?;
        let done = batch.len() < SCAN_BATCH;
        if let Some(last) = batch.last() {
            after.clone_from(&last.user_id);
        }
        for user in batch {
            let shown = match (version, deactivated) {
                (ListVersion::V2, Some(true)) | (ListVersion::V3, None) => true,
                (ListVersion::V2, _) => !user.deactivated,
                (ListVersion::V3, Some(wanted)) => user.deactivated == wanted,
            };
            if !shown || admins.is_some_and(|wanted| user.admin != wanted) {
                continue;
            }
            let mut row = Row { user, profile: None };
            if let Some(name) = &name {
                row.profile = storage.profile(&row.user.user_id).await?;
                let id = row.user.user_id.trim_start_matches('@');
                let localpart = id.split(':').next().unwrap_or_default();
                let found = localpart.to_lowercase().contains(name.as_str())
                    || row.displayname().is_some_and(|d| d.to_lowercase().contains(name.as_str()));
                if !found {
                    continue;
                }
            } else if let Some(user_id) = &user_id
                && !row.user.user_id.to_lowercase().contains(user_id.as_str())
            {
                continue;
            }
            if order.needs_profile() && row.profile.is_none() {
                row.profile = storage.profile(&row.user.user_id).await?;
            }
            rows.push(row);
        }
        if done {
            break;
        }
    }

    // The store lists by id: only other orders sort (stably, so ties stay by name).
    match order {
        OrderBy::Name | OrderBy::Unkept => {}
        OrderBy::Admin => rows.sort_by_key(|r| r.user.admin),
        OrderBy::Deactivated => rows.sort_by_key(|r| r.user.deactivated),
        OrderBy::Displayname => rows.sort_by(|a, b| a.displayname().cmp(&b.displayname())),
        OrderBy::AvatarUrl => rows.sort_by(|a, b| a.avatar_url().cmp(&b.avatar_url())),
        OrderBy::ShadowBanned => {
            let mut banned = Vec::with_capacity(rows.len());
            for row in &rows {
                banned.push(state.accounts.restrictions(&row.user.user_id).await?.shadow_banned);
            }
            let mut keyed: Vec<(bool, Row)> = banned.into_iter().zip(rows).collect();
            keyed.sort_by_key(|(banned, _)| *banned);
            rows = keyed.into_iter().map(|(_, row)| row).collect();
        }
    }
    if backwards {
        rows.reverse();
    }
    let total = rows.len();
    let mut users = Vec::new();
    for row in rows.into_iter().skip(from).take(limit) {
        let profile = match row.profile {
            Some(profile) => Some(profile),
            None => storage.profile(&row.user.user_id).await?,
        };
        users.push(summary(state, row.user, profile).await?);
    }
    let next = from.saturating_add(users.len());
    let next_token = (next < total).then(|| next.to_string());
    Ok(UserPage { users, next_token, total })
}

async fn summary(
    state: &State,
    user: matrix_storage::User,
    profile: Option<matrix_storage::Profile>,
) -> Result<UserSummary, ApiError> {
    let profile = profile.unwrap_or_default();
    let restrictions = state.accounts.restrictions(&user.user_id).await?;
    Ok(UserSummary {
        erased: state.rooms.is_erased(&user.user_id).await?,
        name: user.user_id,
        is_guest: false,
        admin: user.admin,
        user_type: None,
        deactivated: user.deactivated,
        shadow_banned: restrictions.shadow_banned,
        displayname: profile.displayname,
        avatar_url: profile.avatar_url,
        creation_ts: None,
        last_seen_ts: None,
        locked: false,
    })
}

/// A user of this server, or 400 for another server's user and 404 for no such user.
pub(crate) async fn local_user(
    state: &State,
    user_id: &UserId,
) -> Result<matrix_storage::User, ApiError> {
    if user_id.server_name().as_str() != state.config.server_name {
        return Err(ApiError::invalid_param("only users of this server can be managed here"));
    }
    state
        .rooms
        .storage()
        .user(user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))
}

/// `GET /_synapse/admin/v2/users/{userId}`.
pub(crate) async fn user_details(state: &State, user_id: &UserId) -> Result<UserDetails, ApiError> {
    let user = local_user(state, user_id).await?;
    let profile = state.rooms.storage().profile(user_id.as_str()).await?;
    let suspended = state.accounts.restrictions(user_id.as_str()).await?.suspended;
    Ok(UserDetails {
        summary: summary(state, user, profile).await?,
        threepids: Vec::new(),
        external_ids: Vec::new(),
        appservice_id: None,
        consent_server_notice_sent: None,
        consent_version: None,
        consent_ts: None,
        suspended,
    })
}

/// The body of `PUT /_synapse/admin/v2/users/{userId}`: what is absent stays as it is.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserChange {
    password: Option<String>,
    logout_devices: Option<bool>,
    displayname: Option<String>,
    avatar_url: Option<String>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    user_type: Option<Option<String>>,
    threepids: Option<Vec<Value>>,
    external_ids: Option<Vec<Value>>,
    locked: Option<bool>,
}

/// A field that may be `null`: `Some(None)` when it is, `None` when it is absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Refuses what this server does not keep (types, third-party and external ids, locks)
/// rather than dropping it; the empty values a UI sends back unchanged pass.
fn check_unkept(change: &UserChange) -> Result<(), ApiError> {
    if matches!(change.user_type, Some(Some(_))) {
        return Err(ApiError::invalid_param("user types are not supported by this server"));
    }
    if change.threepids.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_param("third-party ids are not supported by this server"));
    }
    if change.external_ids.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_param("external ids are not supported by this server"));
    }
    if change.locked == Some(true) {
        return Err(ApiError::invalid_param("locking accounts is not supported by this server"));
    }
    Ok(())
}

/// A profile field of the body: `""` unsets it; bounded as the client API bounds it.
fn profile_field(
    state: &State,
    field: &str,
    value: Option<&String>,
) -> Result<Option<Option<String>>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    if value.is_empty() {
        return Ok(Some(None));
    }
    let limits = &state.config.limits;
    let max = match field {
        "displayname" => limits.max_displayname_chars,
        _ => limits.max_avatar_url_chars,
    };
    if value.chars().count() > max {
        return Err(ApiError::profile_too_large(field, max));
    }
    if field == "avatar_url" && !value.starts_with("mxc://") {
        return Err(ApiError::invalid_param("`avatar_url` must be an mxc:// URI"));
    }
    Ok(Some(Some(value.clone())))
}

fn check_password(state: &State, password: &str) -> Result<(), ApiError> {
    let max = state.config.limits.max_password_bytes;
    if password.len() > max {
        return Err(ApiError::invalid_param(format!("the password is over {max} bytes")));
    }
    Ok(())
}

/// `PUT /_synapse/admin/v2/users/{userId}`: creates the user (`true`, for 201) or changes
/// it (`false`), then answers as the user is now. `requester` may not take away their own
/// administrator flag.
pub(crate) async fn put_user(
    state: &State,
    requester: &UserId,
    user_id: &UserId,
    change: UserChange,
) -> Result<(bool, UserDetails), ApiError> {
    check_unkept(&change)?;
    if user_id.server_name().as_str() != state.config.server_name {
        return Err(ApiError::invalid_param("only users of this server can be managed here"));
    }
    if let Some(password) = &change.password {
        check_password(state, password)?;
    }
    let displayname = profile_field(state, "displayname", change.displayname.as_ref())?;
    let avatar_url = profile_field(state, "avatar_url", change.avatar_url.as_ref())?;
    let storage = state.rooms.storage();
    let created = match storage.user(user_id.as_str()).await? {
        None => {
            let password = change.password.clone();
            let admin = change.admin.unwrap_or(false);
            state.accounts.create_user(Some(user_id.localpart()), password, admin, None).await?;
            if change.deactivated == Some(true) {
                deactivate(state, user_id, false).await?;
            }
            true
        }
        Some(user) => {
            modify(state, requester, user_id, user, &change).await?;
            false
        }
    };
    if displayname.is_some() || avatar_url.is_some() {
        set_profile(state, user_id, displayname, avatar_url).await?;
    }
    Ok((created, user_details(state, user_id).await?))
}

/// The changes of `PUT /_synapse/admin/v2/users/{userId}` to an existing user.
async fn modify(
    state: &State,
    requester: &UserId,
    user_id: &UserId,
    mut user: matrix_storage::User,
    change: &UserChange,
) -> Result<(), ApiError> {
    if let Some(admin) = change.admin
        && admin != user.admin
    {
        if !admin && user_id == requester {
            return Err(ApiError::invalid_param("You may not demote yourself."));
        }
        user.admin = admin;
        let mut changes = matrix_storage::ChangeSet::new();
        changes.updated_users.push(user.clone());
        state.rooms.storage().apply(changes).await?;
    }
    match change.deactivated {
        Some(true) if !user.deactivated => deactivate(state, user_id, false).await?,
        Some(false) if user.deactivated => {
            // Deactivation wiped the password: a reactivated account needs a new one.
            if change.password.is_none() {
                return Err(ApiError::invalid_param(
                    "Must provide a password to re-activate an account.",
                ));
            }
            reactivate(state, user_id).await?;
        }
        _ => {}
    }
    if let Some(password) = &change.password {
        let logout = change.logout_devices.unwrap_or(true);
        state.accounts.set_password(user_id, password.clone(), None, logout).await?;
    }
    Ok(())
}

/// Clears a user's deactivation, and lists them in the user directory again.
async fn reactivate(state: &State, user_id: &UserId) -> Result<(), ApiError> {
    let storage = state.rooms.storage();
    let mut user = local_user(state, user_id).await?;
    user.deactivated = false;
    let profile = storage.profile(user_id.as_str()).await?.unwrap_or_default();
    let mut changes = matrix_storage::ChangeSet::new();
    changes.updated_users.push(user);
    changes.directory_users.push(matrix_storage::DirectoryUser {
        user_id: user_id.to_string(),
        displayname: profile.displayname,
        avatar_url: profile.avatar_url,
    });
    storage.apply(changes).await?;
    Ok(())
}

/// Changes a user's profile (`Some(None)` unsets a field) and carries it into the member
/// events of the rooms they are joined to, each sent through the rooms' authorization as
/// the user's own profile change is.
async fn set_profile(
    state: &State,
    user_id: &UserId,
    displayname: Option<Option<String>>,
    avatar_url: Option<Option<String>>,
) -> Result<(), ApiError> {
    let storage = state.rooms.storage();
    let user = local_user(state, user_id).await?;
    let mut profile = storage.profile(user_id.as_str()).await?.unwrap_or_default();
    let before = profile.clone();
    if let Some(name) = displayname {
        profile.displayname = name;
    }
    if let Some(url) = avatar_url {
        profile.avatar_url = url;
    }
    if profile == before {
        return Ok(());
    }
    let mut changes = matrix_storage::ChangeSet::new();
    if !user.deactivated {
        changes.directory_users.push(matrix_storage::DirectoryUser {
            user_id: user_id.to_string(),
            displayname: profile.displayname.clone(),
            avatar_url: profile.avatar_url.clone(),
        });
    }
    changes.profiles.push((user_id.to_string(), profile));
    storage.apply(changes).await?;
    for (room, membership) in storage.rooms_of_user(user_id.as_str()).await? {
        if membership == "join" {
            let draft = state.rooms.member_draft(user_id, "join", None).await?;
            if let Err(e) = state.rooms.append(&room, user_id, draft).await {
                tracing::warn!("updating the profile of {user_id} in {room}: {e}");
            }
        }
    }
    Ok(())
}

/// `POST /_synapse/admin/v1/deactivate/{userId}`: the user leaves (or declines) every room
/// through the rooms' authorization, as their own deactivation does, then the account is
/// deactivated (devices, tokens and password gone, out of the user directory); with
/// `erase`, their events are served redacted from now on and their profile is emptied.
pub(crate) async fn deactivate(
    state: &State,
    user_id: &UserId,
    erase: bool,
) -> Result<(), ApiError> {
    local_user(state, user_id).await?;
    for (room, membership) in state.rooms.storage().rooms_of_user(user_id.as_str()).await? {
        if matches!(membership.as_str(), "join" | "invite" | "knock")
            && let Err(e) = state.rooms.leave(&room, user_id, None).await
        {
            tracing::warn!("{user_id} leaving {room} on deactivation: {e}");
        }
    }
    state.accounts.deactivate(user_id).await?;
    if erase {
        state.rooms.erase(user_id.as_str()).await?;
        let mut changes = matrix_storage::ChangeSet::new();
        changes.profiles.push((user_id.to_string(), matrix_storage::Profile::default()));
        state.rooms.storage().apply(changes).await?;
    }
    Ok(())
}

/// `POST /_synapse/admin/v1/reset_password/{userId}`: a new password, and (unless
/// `logout_devices` is false) every device logged out.
pub(crate) async fn reset_password(
    state: &State,
    user_id: &UserId,
    password: String,
    logout_devices: bool,
) -> Result<(), ApiError> {
    check_password(state, &password)?;
    let user = local_user(state, user_id).await?;
    if user.deactivated {
        return Err(ApiError::invalid_param("the account is deactivated"));
    }
    state.accounts.set_password(user_id, password, None, logout_devices).await
}

/// `GET /_synapse/admin/v1/users/{userId}/admin`.
pub(crate) async fn is_admin(state: &State, user_id: &UserId) -> Result<bool, ApiError> {
    Ok(local_user(state, user_id).await?.admin)
}

/// `PUT /_synapse/admin/v1/users/{userId}/admin`: `requester` may not demote themself.
pub(crate) async fn set_admin(
    state: &State,
    requester: &UserId,
    user_id: &UserId,
    admin: bool,
) -> Result<(), ApiError> {
    let mut user = local_user(state, user_id).await?;
    if !admin && user_id == requester {
        return Err(ApiError::invalid_param("You may not demote yourself."));
    }
    if user.admin != admin {
        user.admin = admin;
        let mut changes = matrix_storage::ChangeSet::new();
        changes.updated_users.push(user);
        state.rooms.storage().apply(changes).await?;
    }
    Ok(())
}

/// `GET /_synapse/admin/v1/username_available`: whether `localpart` is free and valid.
pub(crate) async fn username_available(state: &State, localpart: &str) -> Result<bool, ApiError> {
    if !state.accounts.available(localpart).await? {
        return Err(ApiError::user_in_use());
    }
    Ok(true)
}

/// Whether `user_id` is an administrator of this server (a remote or unknown user is not).
pub(crate) async fn requester_is_admin(
    state: &State,
    user_id: &OwnedUserId,
) -> Result<bool, ApiError> {
    Ok(state
        .rooms
        .storage()
        .user(user_id.as_str())
        .await?
        .is_some_and(|u| u.admin && !u.deactivated))
}
