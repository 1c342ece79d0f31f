//! Received requests: who sent them, checked by their `X-Matrix` signature.

use matrix_core::Value;
use matrix_core::ids::{OwnedServerName, ServerName};
use matrix_core::xmatrix::{XMatrix, XMatrixError, verify_request};

use crate::FederationError;
use crate::keys::KeyProvider;

/// What [`authenticate`] needs of a received request.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path with its query string, as received (`/_matrix/...?...`).
    pub uri: &'a str,
    /// The `Authorization` header, if there was one.
    pub authorization: Option<&'a str>,
    /// The body, if the request has one.
    pub body: Option<&'a [u8]>,
}

/// Why a request is refused: every case is a 401 `M_UNAUTHORIZED` except a body that is not
/// JSON (400 `M_NOT_JSON`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// No `Authorization` header.
    #[error("the request has no X-Matrix authorization")]
    Missing,
    /// The header is malformed, names another destination, or its signature does not verify.
    #[error("{0}")]
    Header(#[from] XMatrixError),
    /// The origin is not a valid server name.
    #[error("{0:?} is not a server name")]
    Origin(String),
    /// The origin's key is unknown or expired.
    #[error("no valid key {key} of {origin}")]
    UnknownKey {
        /// The origin.
        origin: String,
        /// The key id.
        key: String,
    },
    /// The body is not JSON.
    #[error("the body is not JSON")]
    NotJson,
}

/// Checks a received request: its `X-Matrix` header names `this_server` as destination (when it
/// names one), and it is signed by a key of its origin valid at `now_ms`. Returns the origin.
///
/// `Err` is for a failure to decide (the origin's keys could not be fetched); a request that is
/// refused is `Ok(Err(_))`.
pub async fn authenticate(
    request: &Received<'_>,
    this_server: &str,
    keys: &(impl KeyProvider + ?Sized),
    now_ms: i64,
) -> Result<Result<OwnedServerName, Refused>, FederationError> {
    let Some(header) = request.authorization else {
        return Ok(Err(Refused::Missing));
    };
    let header = match XMatrix::parse(header) {
        Ok(header) => header,
        Err(e) => return Ok(Err(e.into())),
    };
    let origin = match <&ServerName>::try_from(header.origin.as_str()) {
        Ok(origin) => origin.to_owned(),
        Err(_) => return Ok(Err(Refused::Origin(header.origin))),
    };
    if let Some(destination) = &header.destination
        && destination != this_server
    {
        return Ok(Err(XMatrixError::WrongDestination {
            expected: this_server.to_owned(),
            found: destination.clone(),
        }
        .into()));
    }
    let content = match request.body.filter(|body| !body.is_empty()) {
        None => None,
        Some(body) => match matrix_core::json::parse_lenient(body) {
            Ok(value) => Some(value),
            Err(_) => return Ok(Err(Refused::NotJson)),
        },
    };
    let Some(key) = keys.public_key(origin.as_str(), &header.key, now_ms).await? else {
        return Ok(Err(Refused::UnknownKey { origin: header.origin, key: header.key }));
    };
    let checked = verify_request(
        &header,
        this_server,
        request.method,
        request.uri,
        content.as_ref().map(|v: &Value| v),
        &key,
    );
    Ok(checked.map(|()| origin).map_err(Refused::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::StaticKeys;
    use matrix_core::SigningKey;
    use matrix_core::xmatrix::sign_request;

    fn setup() -> (SigningKey, StaticKeys) {
        let key = SigningKey::from_seed("1", &[3; 32]);
        let mut keys = StaticKeys::default();
        keys.insert("a.example", key.key_id(), key.public_key());
        (key, keys)
    }

    async fn check(
        method: &str,
        uri: &str,
        header: Option<&str>,
        body: Option<&[u8]>,
        keys: &StaticKeys,
    ) -> Result<OwnedServerName, Refused> {
        let request = Received { method, uri, authorization: header, body };
        authenticate(&request, "b.example", keys, 0).await.expect("static keys never fail")
    }

    #[tokio::test]
    async fn signed_requests_pass_and_everything_else_is_refused() {
        let (key, keys) = setup();
        let body = br#"{"pdus":[],"edus":[]}"#;
        let content = matrix_core::json::parse_lenient(body).expect("json");
        let uri = "/_matrix/federation/v1/send/1";
        let good = sign_request(&key, "a.example", "b.example", "PUT", uri, Some(&content))
            .to_header_value();
        assert_eq!(
            check("PUT", uri, Some(&good), Some(body), &keys).await.map(|o| o.to_string()),
            Ok("a.example".to_owned())
        );
        // The same header on another method, path or body.
        assert!(check("POST", uri, Some(&good), Some(body), &keys).await.is_err());
        assert!(
            check("PUT", "/_matrix/federation/v1/send/2", Some(&good), Some(body), &keys)
                .await
                .is_err()
        );
        assert!(check("PUT", uri, Some(&good), Some(br#"{"pdus":[]}"#), &keys).await.is_err());
        assert_eq!(check("PUT", uri, None, Some(body), &keys).await, Err(Refused::Missing));
        assert_eq!(check("PUT", uri, Some(&good), Some(b"{"), &keys).await, Err(Refused::NotJson));
        // For another destination.
        let elsewhere = sign_request(&key, "a.example", "c.example", "PUT", uri, Some(&content))
            .to_header_value();
        assert!(matches!(
            check("PUT", uri, Some(&elsewhere), Some(body), &keys).await,
            Err(Refused::Header(XMatrixError::WrongDestination { .. }))
        ));
        // From a server whose key we do not have, or claiming another origin.
        let stranger = SigningKey::from_seed("1", &[4; 32]);
        let forged = sign_request(&stranger, "a.example", "b.example", "GET", uri, None);
        assert_eq!(
            check("GET", uri, Some(&forged.to_header_value()), None, &keys).await,
            Err(Refused::Header(XMatrixError::BadSignature))
        );
        let unknown = sign_request(&stranger, "c.example", "b.example", "GET", uri, None);
        assert!(matches!(
            check("GET", uri, Some(&unknown.to_header_value()), None, &keys).await,
            Err(Refused::UnknownKey { .. })
        ));
        let bad_origin = sign_request(&key, "a example", "b.example", "GET", uri, None);
        assert!(matches!(
            check("GET", uri, Some(&bad_origin.to_header_value()), None, &keys).await,
            Err(Refused::Origin(_))
        ));
    }
}
