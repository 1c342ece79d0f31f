//! Server administration: Synapse's admin API (`/_synapse/admin/...`), for the server's
//! administrators (users whose `admin` flag is set) and for shared-secret registration.
//! One submodule per group of endpoints; the HTTP side is `http/admin`.

pub(crate) mod destinations;
pub(crate) mod devices;
mod history;
pub(crate) mod media;
pub(crate) mod moderation;
pub(crate) mod purge_history;
pub(crate) mod redact;
mod register;
pub(crate) mod reports;
pub(crate) mod room_admin;
pub(crate) mod rooms;
pub(crate) mod server_notices;
pub(crate) mod tasks;
pub(crate) mod tokens;
pub(crate) mod users;

pub use register::registration_mac;
pub(crate) use register::{RegistrationNonces, same_mac};

use ruma::{OwnedUserId, UserId};

use crate::error::ApiError;

/// The most items one page of an admin list holds (a larger `limit` is clamped to it).
pub(crate) const MAX_PAGE: usize = 1_000;

/// A page's `limit` when none is given (Synapse's).
pub(crate) const DEFAULT_PAGE: usize = 100;

/// The user named in an admin path: a valid user id, or 400 `M_INVALID_PARAM`.
pub(crate) fn parse_user(user: &str) -> Result<OwnedUserId, ApiError> {
    UserId::parse(user).map_err(|_| ApiError::invalid_param(format!("{user:?} is not a user id")))
}

/// A page's offset and size from Synapse's `from` and `limit` (decimal strings): 400
/// `M_INVALID_PARAM` when they are not non-negative integers; `limit` clamped to
/// [`MAX_PAGE`].
pub(crate) fn page(from: Option<&str>, limit: Option<&str>) -> Result<(usize, usize), ApiError> {
    let from = match from {
        None => 0,
        Some(from) => from
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_param("`from` must be a non-negative integer"))?,
    };
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_param("`limit` must be a non-negative integer"))?
            .min(MAX_PAGE),
    };
    Ok((from, limit))
}

/// Synapse's `dir`: `f` (the default) or `b`; anything else is 400 `M_INVALID_PARAM`.
pub(crate) fn backwards(dir: Option<&str>) -> Result<bool, ApiError> {
    match dir {
        None | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(ApiError::invalid_param("`dir` must be f or b")),
    }
}

/// A boolean query parameter as Synapse reads them (`true` or `false`); anything else is 400
/// `M_INVALID_PARAM`.
pub(crate) fn flag(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid_param(format!("`{name}` must be true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_checked() {
        assert_eq!(page(None, None).ok(), Some((0, DEFAULT_PAGE)));
        assert_eq!(page(Some("20"), Some("5000")).ok(), Some((20, MAX_PAGE)));
        assert!(page(Some("-1"), None).is_err());
        assert!(page(None, Some("ten")).is_err());
        assert!(backwards(Some("x")).is_err());
        assert_eq!(backwards(Some("b")).ok(), Some(true));
        assert_eq!(flag("admins", Some("false")).ok(), Some(Some(false)));
        assert!(flag("admins", Some("1")).is_err());
    }
}
