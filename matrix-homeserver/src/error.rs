//! The one place that picks an HTTP status and a Matrix errcode.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A client-server API error: a status, an errcode and a message, sent as Matrix JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{errcode}: {message}")]
pub struct ApiError {
    status: StatusCode,
    errcode: &'static str,
    message: String,
    /// A whole body to send instead (the user-interactive auth's 401).
    body: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, errcode, message: message.into(), body: None }
    }

    /// The errcode (`M_FORBIDDEN`).
    pub fn errcode(&self) -> &'static str {
        self.errcode
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// An error with the status and errcode another module chose (matrix-federation's
    /// transaction errors); an unknown status answers 400.
    pub(crate) fn with_code(
        status: u16,
        errcode: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, errcode, message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }
    pub(crate) fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "no access token was given")
    }
    pub(crate) fn unknown_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "the access token is not known")
    }
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", message)
    }
    pub(crate) fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }
    pub(crate) fn not_json() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", "the request body is not JSON")
    }
    /// 400 `M_UNKNOWN`: a request Synapse refuses without a more specific code.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
    }
    pub(crate) fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }
    /// 400 `M_UNKNOWN_POS`: a sliding sync position this server does not hold (any more).
    pub(crate) fn unknown_pos() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN_POS",
            "unknown position: start the sliding sync connection again",
        )
    }
    pub(crate) fn unrecognized() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "unrecognized request")
    }
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "method not allowed here")
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("the request body is over {limit} bytes"),
        )
    }
    pub(crate) fn user_in_use() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_USER_IN_USE", "the user id is taken")
    }
    pub(crate) fn invalid_username(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", message)
    }
    pub(crate) fn user_deactivated() -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_USER_DEACTIVATED", "the account is deactivated")
    }
    /// An administrator suspended the account (MSC3823): it may read, not act.
    pub(crate) fn user_suspended() -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_USER_SUSPENDED", "the account is suspended")
    }
    pub(crate) fn guest_access_forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN", "guests may not register here")
    }
    pub(crate) fn unknown_login_type() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "this login type is not supported")
    }
    pub(crate) fn unknown(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", message)
    }
    /// 502 `M_UNKNOWN`: another server answered in a way we cannot use (nothing the client
    /// can change).
    pub(crate) fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
    }
    pub(crate) fn limit_exceeded(retry_after_ms: u64) -> Self {
        let mut error =
            Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "too many requests");
        error.body = Some(json!({"errcode": "M_LIMIT_EXCEEDED", "error": "too many requests",
                                 "retry_after_ms": retry_after_ms}));
        error
    }
    /// 429 `M_LIMIT_EXCEEDED` for a bound that waiting does not lift by itself (a full
    /// queue, a full key store), saying which; `retry_after_ms` 0 is left out.
    pub(crate) fn limit_exceeded_with(retry_after_ms: u64, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", &*message);
        let mut body = json!({"errcode": "M_LIMIT_EXCEEDED", "error": message});
        if retry_after_ms > 0 {
            body["retry_after_ms"] = json!(retry_after_ms);
        }
        error.body = Some(body);
        error
    }
    pub(crate) fn room_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room on this server")
    }
    pub(crate) fn room_in_use() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE", "the room alias is taken")
    }
    pub(crate) fn alias_exists() -> Self {
        Self::new(StatusCode::CONFLICT, "M_UNKNOWN", "the alias exists already")
    }
    pub(crate) fn unsupported_room_version(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION", message)
    }
    pub(crate) fn incompatible_room_version(version: &str) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("the room is of version {version}, which your server does not support"),
        );
        error.body = Some(json!({
            "errcode": "M_INCOMPATIBLE_ROOM_VERSION",
            "error": error.message,
            "room_version": version,
        }));
        error
    }
    pub(crate) fn event_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", "the event is over 65536 bytes")
    }
    pub(crate) fn bad_state(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_STATE", message)
    }
    pub(crate) fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }
    /// 400 `M_THREEPID_MEDIUM_NOT_SUPPORTED`: no way to validate the medium (no email or SMS
    /// sender is configured).
    pub(crate) fn threepid_medium_not_supported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_THREEPID_MEDIUM_NOT_SUPPORTED", message)
    }
    /// 403 `M_THREEPID_DENIED`: the server does not permit the identifier as a contact point.
    pub(crate) fn threepid_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_THREEPID_DENIED", message)
    }
    /// 400 `M_THREEPID_AUTH_FAILED`: no validated session for the identifier.
    pub(crate) fn threepid_auth_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED", message)
    }
    pub(crate) fn bad_alias(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_ALIAS", message)
    }
    /// A list (or string) of the request longer than the server's bound: 400 `M_TOO_LARGE`
    /// (400 rather than 413: the body's size is within bounds, one of its parts is not).
    pub(crate) fn list_too_long(what: &str, max: usize) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_TOO_LARGE", format!("{what} is over {max} long"))
    }
    /// A profile field over its bound: 400 `M_PROFILE_TOO_LARGE` (the spec's code for a
    /// profile value the server will not store).
    pub(crate) fn profile_too_large(field: &str, max: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_PROFILE_TOO_LARGE",
            format!("{field} is over {max} characters"),
        )
    }
    /// A request body that did not arrive in time: 408.
    pub(crate) fn body_timeout() -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN", "the request body came too slowly")
    }
    /// Account data the server manages (`m.fully_read`, `m.push_rules`): 405 `M_BAD_JSON`, as
    /// the spec says.
    pub(crate) fn server_managed_data(kind: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("{kind} is managed by the server and cannot be set as account data"),
        )
    }
    /// A signature that does not verify: 400 `M_INVALID_SIGNATURE`.
    pub(crate) fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", message)
    }
    /// A key backup write to a version that is not the current one: 403
    /// `M_WRONG_ROOM_KEYS_VERSION`, naming the current version.
    pub(crate) fn wrong_room_keys_version(current: &str) -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "M_WRONG_ROOM_KEYS_VERSION",
            "the backup version is not the current one",
        );
        error.body = Some(json!({
            "errcode": "M_WRONG_ROOM_KEYS_VERSION",
            "error": error.message,
            "current_version": current,
        }));
        error
    }
    /// What an application service holds exclusively (a user id, an alias), asked for by
    /// someone else: 400 `M_EXCLUSIVE`.
    pub(crate) fn exclusive(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_EXCLUSIVE", message)
    }
    /// `m.login.application_service` for a service that manages its devices itself
    /// (MSC4190): 400 `M_APPSERVICE_LOGIN_UNSUPPORTED`.
    pub(crate) fn appservice_login_unsupported() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_APPSERVICE_LOGIN_UNSUPPORTED",
            "this application service manages its devices itself (MSC4190): it cannot log in",
        )
    }
    /// An error whose body carries more than `errcode` and `error` (`extra`'s fields).
    pub(crate) fn with_fields(
        status: u16,
        errcode: &'static str,
        message: impl Into<String>,
        extra: serde_json::Map<String, Value>,
    ) -> Self {
        let mut error = Self::with_code(status, errcode, message);
        let mut body = extra;
        body.insert("errcode".to_owned(), json!(errcode));
        body.insert("error".to_owned(), json!(error.message));
        error.body = Some(Value::Object(body));
        error
    }
    /// The user-interactive authentication's answer: 401 with the flows to follow.
    pub(crate) fn auth_required(body: Value) -> Self {
        let mut error = Self::new(StatusCode::UNAUTHORIZED, "M_FORBIDDEN", "authentication needed");
        error.body = Some(body);
        error
    }
}

impl From<matrix_storage::StorageError> for ApiError {
    fn from(error: matrix_storage::StorageError) -> Self {
        // The details are the operator's, not the client's.
        tracing::error!("storage error: {error}");
        ApiError::unknown("the server could not reach its storage")
    }
}

impl From<matrix_federation::FederationError> for ApiError {
    fn from(error: matrix_federation::FederationError) -> Self {
        match error {
            matrix_federation::FederationError::Storage(e) => e.into(),
            matrix_federation::FederationError::TooLarge { destination, limit } => Self::new(
                StatusCode::BAD_GATEWAY,
                "M_TOO_LARGE",
                format!("{destination} answered more than {limit} bytes"),
            ),
            // Another server failed us: the details are for the operator's log; the client
            // is told which way (its status, where it answered one).
            other => {
                tracing::warn!("federation: {other}");
                let message = match &other {
                    matrix_federation::FederationError::Status { status, .. } => {
                        format!("another server refused the request ({status})")
                    }
                    matrix_federation::FederationError::Malformed { .. } => {
                        "another server answered something malformed".to_owned()
                    }
                    _ => "another server did not answer".to_owned(),
                };
                Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
            }
        }
    }
}

impl From<crate::services::url_preview::fetch::FetchError> for ApiError {
    /// As Synapse answers: a blocked address named in the URL is 403; a name that does not
    /// resolve, or resolves to a blocked address, is 502 (Synapse cannot tell the two
    /// apart, and neither does a client); anything the other server did is 502.
    fn from(error: crate::services::url_preview::fetch::FetchError) -> Self {
        use crate::services::url_preview::fetch::FetchError;
        let message = error.to_string();
        match error {
            FetchError::InvalidUrl(_) => Self::invalid_param(message),
            FetchError::BlockedAddress => Self::new(StatusCode::FORBIDDEN, "M_UNKNOWN", message),
            FetchError::TooLarge(_) => Self::new(StatusCode::BAD_GATEWAY, "M_TOO_LARGE", message),
            _ => Self::bad_gateway(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            self.body.unwrap_or_else(|| json!({"errcode": self.errcode, "error": self.message}));
        // A 429 also says when to come back in `Retry-After` (seconds, rounded up; v1.10).
        let retry_after = (self.status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| body.get("retry_after_ms").and_then(Value::as_u64))
            .flatten()
            .map(|ms| ms.div_ceil(1000).to_string());
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = retry_after
            && let Ok(value) = http::HeaderValue::from_str(&seconds)
        {
            response.headers_mut().insert(http::header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_federation::FederationError;

    #[test]
    fn a_rate_limit_says_when_to_come_back_in_a_header_too() {
        let response = ApiError::limit_exceeded(1_500).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
        let other = ApiError::forbidden("no").into_response();
        assert!(other.headers().get(http::header::RETRY_AFTER).is_none());
    }

    /// Another server's failure is a 502 that says which kind it was (its status, when it
    /// answered one), nothing more of what it sent.
    #[test]
    fn another_servers_failure_says_which_kind() {
        let refused = ApiError::from(FederationError::Status {
            destination: "remote.test".to_owned(),
            status: 401,
            body: "a secret of theirs".to_owned(),
        });
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refused.message, "another server refused the request (401)");
        let gone = ApiError::from(FederationError::Unreachable {
            destination: "remote.test".to_owned(),
            reason: "connection refused".to_owned(),
        });
        assert_eq!(gone.message, "another server did not answer");
        let odd = ApiError::from(FederationError::Malformed {
            destination: "remote.test".to_owned(),
            reason: "not JSON".to_owned(),
        });
        assert_eq!((odd.status(), odd.errcode()), (StatusCode::BAD_GATEWAY, "M_UNKNOWN"));
        assert_eq!(odd.message, "another server answered something malformed");
    }
}
