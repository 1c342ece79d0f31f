//! The client-server HTTP API: the router, the request and response adapters for ruma's
//! endpoint types, and authentication. Handlers live in one file per endpoint group; each
//! authenticates, calls one service method and returns.

mod account;
mod admin;
mod appservice;
mod backup;
mod dehydrated;
mod delayed_events;
mod directory;
mod discovery;
pub(crate) mod e2ee;
pub(crate) mod federation;
mod key_backup;
mod log;
pub(crate) mod media;
pub(crate) mod metrics;
mod openid;
mod presence;
mod push;
mod push_rules;
mod rooms;
mod search;
mod self_check;
mod spaces;
mod sync;
mod thirdparty;
mod threepid;
pub(crate) mod user;
mod voip;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::de::DeserializeOwned;

use crate::State;
use crate::error::ApiError;

/// The router of every endpoint this server answers.
pub(crate) fn router(state: Arc<State>) -> Router {
    // With previews off, their paths are not routes at all (as in Synapse).
    let previews = state.url_preview.is_some();
    Router::new()
        .route("/_matrix/client/versions", route(get(discovery::versions)))
        .route("/.well-known/matrix/client", route(get(discovery::well_known_client)))
        .route("/.well-known/matrix/server", route(get(discovery::well_known_server)))
        .route("/.well-known/matrix/support", route(get(discovery::well_known_support)))
        .route("/_matrix/client/v3/capabilities", route(get(discovery::capabilities)))
        .route("/_matrix/client/v3/register", route(post(account::register)))
        .route("/_matrix/client/v3/register/available", route(get(account::available)))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            route(get(account::registration_token_validity)),
        )
        .route("/_matrix/client/v3/login", route(get(account::login_types).post(account::login)))
        // Still called by some clients (matrix-commander).
        .route("/_matrix/client/r0/login", route(get(account::login_types).post(account::login)))
        .route("/_matrix/client/v3/logout", route(post(account::logout)))
        .route("/_matrix/client/v3/logout/all", route(post(account::logout_all)))
        .route("/_matrix/client/v3/account/whoami", route(get(account::whoami)))
        .merge(rooms::routes())
        .merge(search::routes())
        .merge(directory::routes())
        .merge(spaces::routes())
        .merge(user::routes())
        .merge(sync::routes())
        .merge(push_rules::routes())
        .merge(push::routes())
        .merge(e2ee::routes())
        .merge(dehydrated::routes())
        .merge(key_backup::routes())
        .merge(media::routes(previews))
        .merge(presence::routes())
        .merge(openid::routes())
        .merge(voip::routes())
        .merge(thirdparty::routes())
        .merge(threepid::routes())
        .merge(delayed_events::routes())
        .merge(appservice::routes())
        .merge(admin::routes())
        .merge(self_check::routes())
        .merge(backup::routes())
        .fallback(|| async { ApiError::unrecognized() })
        .layer(cors())
        .layer(axum::middleware::from_fn_with_state(state.clone(), log::log_request))
        .with_state(state)
}

pub(crate) type Routes = Router<Arc<State>>;

/// The CORS headers the spec asks of client routes, so that web clients (Element Web) on any
/// origin can call them; preflight `OPTIONS` requests are answered here.
fn cors() -> tower_http::cors::CorsLayer {
    use http::{Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
}

/// A route whose other methods answer 405 `M_UNRECOGNIZED`.
pub(crate) fn route(
    method: axum::routing::MethodRouter<Arc<State>>,
) -> axum::routing::MethodRouter<Arc<State>> {
    method.fallback(|| async { ApiError::method_not_allowed() })
}

/// A handler's JSON answer.
pub(crate) type JsonResult = Result<axum::Json<serde_json::Value>, ApiError>;

/// The JSON body of a request, parsed into `T` (limits and errcodes as for [`Ruma`]).
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Arc<State>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<State>) -> Result<Self, ApiError> {
        let bytes = read_body(request.into_body(), state).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::not_json()
            } else {
                ApiError::bad_json(e.to_string())
            }
        })
    }
}

/// The raw body of a request (event contents are parsed by matrix-core's strict parser).
pub(crate) struct RawBody(pub(crate) bytes::Bytes);

impl FromRequest<Arc<State>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<State>) -> Result<Self, ApiError> {
        read_body(request.into_body(), state).await.map(RawBody)
    }
}

/// Reads a JSON request body: at most `max_request_bytes`, within `body_read_timeout_secs`,
/// and with no NUL character escaped in it (every JSON body goes through here).
async fn read_body(body: Body, state: &State) -> Result<bytes::Bytes, ApiError> {
    let limit = state.config.limits.max_request_bytes;
    let timeout = std::time::Duration::from_secs(state.config.http.body_read_timeout_secs);
    let bytes = read_limited(body, limit, timeout).await?;
    refuse_escaped_nul(&bytes)?;
    Ok(bytes)
}

/// Reads a body of at most `limit` bytes within `timeout`: over, 413 `M_TOO_LARGE`; too slow,
/// 408.
pub(crate) async fn read_limited(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::too_large(limit)),
        Err(_) => Err(ApiError::body_timeout()),
    }
}

/// A NUL character (`\u0000`) in a JSON string: no client needs one, and PostgreSQL's `text`
/// columns (device names and ids, user ids, account data) cannot hold it, so it is refused
/// here, once for every JSON body, rather than failing later as a 500. A raw NUL byte is
/// not JSON at all (control characters must be escaped), so the escape is all there is to find;
/// `\\u0000` (an escaped backslash, then `u0000`) is text, not a NUL.
fn refuse_escaped_nul(bytes: &[u8]) -> Result<(), ApiError> {
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'u' && backslashes % 2 == 1 && bytes.get(i + 1..i + 5) == Some(b"0000") {
            return Err(ApiError::bad_json("a NUL character (\\u0000) in a JSON string"));
        }
        backslashes = 0;
    }
    Ok(())
}

/// A NUL character in a path or query (`%00`) names nothing, and some stores cannot keep it.
fn refuse_nul(parts: &Parts) -> Result<(), ApiError> {
    let uri = parts.uri.to_string();
    if uri.contains("%00") || uri.contains('\0') {
        return Err(ApiError::invalid_param("a NUL character in the path or query"));
    }
    Ok(())
}

/// Path parameters, percent-decoded.
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<State>> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        refuse_nul(parts)?;
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|e| ApiError::invalid_param(e.body_text()))
    }
}

/// Query parameters (unknown ones are ignored, as clients send extra ones).
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<State>> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        refuse_nul(parts)?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(t)| Query(t))
            .map_err(|e| ApiError::invalid_param(e.body_text()))
    }
}

/// The client's address (for per-address rate limits): the TCP peer, or, when the peer is a
/// trusted reverse proxy, the rightmost `X-Forwarded-For` address that is not a trusted proxy
/// (the ones left of it were written by the client and prove nothing). IPv6 addresses count
/// by their /64, which one client usually holds whole.
pub(crate) fn client_address(parts: &Parts, trusted: &[crate::config::IpNetwork]) -> String {
    let Some(peer) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
    else {
        return String::new();
    };
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut address = peer;
    if is_trusted(peer) {
        let hops = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.parse::<std::net::IpAddr>() {
                Ok(ip) if is_trusted(ip) => address = ip,
                Ok(ip) => {
                    address = ip;
                    break;
                }
                // Unparsable: the proxy's own address is all that can be said.
                Err(_) => break,
            }
        }
    }
    match address {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The client's address, as an extractor.
pub(crate) struct ClientAddress(pub(crate) String);

impl FromRequestParts<Arc<State>> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        Ok(ClientAddress(client_address(parts, &state.config.http.trusted_proxies)))
    }
}

/// A room id from a path, checked.
pub(crate) fn room_id(text: &str) -> Result<ruma::OwnedRoomId, ApiError> {
    ruma::RoomId::parse(text).map_err(|e| ApiError::invalid_param(format!("not a room id: {e}")))
}

/// A user id from a path or body, checked.
pub(crate) fn user_id(text: &str) -> Result<OwnedUserId, ApiError> {
    ruma::UserId::parse(text).map_err(|e| ApiError::invalid_param(format!("not a user id: {e}")))
}

/// A request parsed into ruma's type for its endpoint.
pub(crate) struct Ruma<T>(pub(crate) T);

fn request_error(error: ruma::api::error::FromHttpRequestError) -> ApiError {
    use ruma::api::error::{DeserializationError, FromHttpRequestError};
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            if e.is_syntax() || e.is_eof() {
                ApiError::not_json()
            } else {
                ApiError::bad_json(e.to_string())
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            ApiError::invalid_param(e.to_string())
        }
        FromHttpRequestError::Deserialization(e) => ApiError::invalid_param(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => ApiError::method_not_allowed(),
        other => ApiError::bad_json(other.to_string()),
    }
}

impl<T: IncomingRequest + Send> FromRequest<Arc<State>> for Ruma<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<State>) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let args: Vec<String> =
            match Path::<Vec<String>>::from_request_parts(&mut parts, state).await {
                Ok(Path(args)) => args,
                Err(_) => Vec::new(),
            };
        let bytes = read_body(body, state).await?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let request = http::Request::from_parts(parts, bytes.as_ref());
        T::try_from_http_request(request, &args).map(Ruma).map_err(request_error)
    }
}

/// A response sent as ruma serialises it.
pub(crate) struct RumaResponse<R>(pub(crate) R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())).into_response(),
            Err(e) => {
                ApiError::unknown(format!("the response did not serialise: {e}")).into_response()
            }
        }
    }
}

/// The result of a handler.
pub(crate) type ApiResult<R> = Result<RumaResponse<R>, ApiError>;

/// Who a request comes from: the user and device of its access token (`Authorization:
/// Bearer`, or the deprecated `access_token` query parameter), or, for an application
/// service's `as_token`, the user it acts as (see [`masquerade`]).
///
/// [`masquerade`]: crate::services::appservice::masquerade
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub(crate) user_id: OwnedUserId,
    /// The device; `None` for an application service that named none (`device_id`, MSC4190).
    pub(crate) device_id: Option<OwnedDeviceId>,
    /// The service whose `as_token` authenticated the request.
    pub(crate) appservice: Option<Arc<crate::services::appservice::Appservice>>,
    /// What transaction ids, syncs and presence are kept per: the device, or for a service
    /// acting without one, a name of its own (`!as:{id}`, which no device id a client picks
    /// can collide with in a way that matters: it is the service's own user's), or for an
    /// administrator's token acting as the user, `!admin:` and the start of its hash.
    scope: String,
    /// What the server's administrators decided about the user (shadow ban, suspension,
    /// rate limit).
    pub(crate) restrictions: crate::services::accounts::Restrictions,
    /// The hash of the token, when it is one an administrator had made to act as the user
    /// (it has no device; `/logout` revokes it).
    pub(crate) puppet_token: Option<String>,
}

impl Auth {
    /// The request's user and device, as the viewer of events.
    pub(crate) fn viewer(&self) -> crate::services::rooms::Viewer<'_> {
        crate::services::rooms::Viewer { user: self.user_id.as_str(), device: &self.scope }
    }

    /// The request's device, for what only a device can do (upload its keys, log out): an
    /// application service acting without a device is refused.
    pub(crate) fn device(&self) -> Result<&ruma::DeviceId, ApiError> {
        self.device_id.as_deref().ok_or_else(|| {
            ApiError::missing_param(
                "this request needs a device: an application service names one with `device_id`",
            )
        })
    }

    /// The device the request's transaction ids, sync position and presence are kept for.
    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }

    /// Checks `action`'s rate limit for the request's user, unless an application service
    /// that is not rate limited made it.
    pub(crate) fn limit(
        &self,
        limiter: &crate::services::rate_limit::RateLimiter,
        action: crate::services::rate_limit::Action,
    ) -> Result<(), ApiError> {
        match &self.appservice {
            Some(service) if !service.registration.is_rate_limited() => Ok(()),
            _ => limiter.check_user(action, self.user_id.as_str(), self.restrictions.ratelimit),
        }
    }

    /// Whether the user is shadow-banned: their request is to succeed without effect.
    pub(crate) fn shadow_banned(&self) -> bool {
        self.restrictions.shadow_banned
    }

    /// 403 `M_USER_SUSPENDED` when an administrator suspended the user.
    pub(crate) fn not_suspended(&self) -> Result<(), ApiError> {
        self.restrictions.not_suspended()
    }
}

fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    query_param(parts, "access_token")
}

/// The first value of `name` in the query string, percent-decoded.
pub(crate) fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find_map(|(key, value)| (key == name).then(|| value.into_owned()))
}

/// The application service whose `as_token` the request carries (registration and login as
/// a service), or why not: `M_MISSING_TOKEN`, or `M_UNKNOWN_TOKEN` for a token that is no
/// service's. It never refuses the request itself (a password login may carry a stale token).
pub(crate) struct AppserviceToken(
    pub(crate) Result<Arc<crate::services::appservice::Appservice>, ApiError>,
);

impl FromRequestParts<Arc<State>> for AppserviceToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        Ok(AppserviceToken(match access_token(parts) {
            None => Err(ApiError::missing_token()),
            Some(token) => {
                state.appservices.by_as_token(&token).cloned().ok_or_else(ApiError::unknown_token)
            }
        }))
    }
}

impl FromRequestParts<Arc<State>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        let auth = Self::authenticate(parts, state).await?;
        if let Some(requester) = parts.extensions.get::<log::Requester>() {
            requester.set(auth.user_id.as_str());
        }
        Ok(auth)
    }
}

impl Auth {
    async fn authenticate(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or_else(ApiError::missing_token)?;
        if let Some(service) = state.appservices.by_as_token(&token) {
            let user = query_param(parts, "user_id");
            let device = query_param(parts, "device_id")
                .or_else(|| query_param(parts, "org.matrix.msc3202.device_id"));
            let (user_id, device_id) = crate::services::appservice::masquerade(
                service,
                user.as_deref(),
                device.as_deref(),
                &state.accounts,
            )
            .await?;
            let scope = match &device_id {
                Some(device) => device.to_string(),
                None => format!("!as:{}", service.id()),
            };
            let restrictions = state.accounts.restrictions(user_id.as_str()).await?;
            return Ok(Auth {
                user_id,
                device_id,
                appservice: Some(service.clone()),
                scope,
                restrictions,
                puppet_token: None,
            });
        }
        let (user_id, device_id) = state.accounts.authenticate(&token).await?;
        let (scope, puppet_token) = match &device_id {
            Some(device) => (device.to_string(), None),
            None => {
                let hash = crate::services::accounts::token_key(&token);
                (format!("!admin:{}", hash.get(..16).unwrap_or_default()), Some(hash))
            }
        };
        let restrictions = state.accounts.restrictions(user_id.as_str()).await?;
        Ok(Auth { user_id, scope, device_id, appservice: None, restrictions, puppet_token })
    }
}

/// The request's user when it carries an access token (checked as [`Auth`] checks it: a bad
/// token is refused), nobody when it carries none: for endpoints open to anyone.
#[derive(Debug, Clone)]
pub(crate) struct OptionalAuth(pub(crate) Option<Auth>);

impl FromRequestParts<Arc<State>> for OptionalAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        if access_token(parts).is_none() {
            return Ok(OptionalAuth(None));
        }
        Ok(OptionalAuth(Some(Auth::from_request_parts(parts, state).await?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = http::Request::builder();
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        let (mut parts, ()) = request.body(()).expect("a request").into_parts();
        let peer: std::net::SocketAddr = peer.parse().expect("an address");
        parts.extensions.insert(axum::extract::ConnectInfo(peer));
        parts
    }

    #[test]
    fn the_client_address_believes_only_trusted_proxies() {
        let proxy: crate::config::IpNetwork = "10.0.0.1".parse().expect("an address");
        let inner: crate::config::IpNetwork = "10.0.0.2/31".parse().expect("a network");
        let trusted = [proxy, inner];
        // Untrusted peer: the header is ignored.
        assert_eq!(client_address(&parts("192.0.2.1:5", &["198.51.100.1"]), &trusted), "192.0.2.1");
        // Trusted peer: the rightmost hop that is not a trusted proxy.
        let chain = parts("10.0.0.1:5", &["6.6.6.6, 198.51.100.1, 10.0.0.2"]);
        assert_eq!(client_address(&chain, &trusted), "198.51.100.1");
        // Several headers count as one list, in order.
        let split = parts("10.0.0.1:5", &["6.6.6.6", "198.51.100.2"]);
        assert_eq!(client_address(&split, &trusted), "198.51.100.2");
        // Garbage from the client stops the walk at what is known.
        let garbage = parts("10.0.0.1:5", &["not-an-ip"]);
        assert_eq!(client_address(&garbage, &trusted), "10.0.0.1");
        // IPv6 by /64; IPv4-mapped as IPv4.
        let v6 = parts("[2001:db8:1:2:3:4:5:6]:5", &[]);
        assert_eq!(client_address(&v6, &trusted), "2001:db8:1:2::/64");
        let mapped = parts("[::ffff:192.0.2.9]:5", &[]);
        assert_eq!(client_address(&mapped, &trusted), "192.0.2.9");
    }

    #[test]
    fn only_an_escaped_nul_is_refused() {
        assert!(refuse_escaped_nul(br#"{"a":"x\u0000"}"#).is_err());
        assert!(refuse_escaped_nul(br#"{"a\u0000":1}"#).is_err());
        assert!(refuse_escaped_nul(br#"{"a":"\\\u0000"}"#).is_err());
        assert!(refuse_escaped_nul(br#"{"a":"\\u0000"}"#).is_ok());
        assert!(refuse_escaped_nul(br#"{"a":"\u00001"}"#).is_err());
        assert!(refuse_escaped_nul(br#"{"a":"\u0001 u0000"}"#).is_ok());
    }
}
