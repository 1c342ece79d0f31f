//! [`FederationClient`]: signed requests to other servers, one helper per endpoint.
//!
//! Every request carries an `X-Matrix` signature by our key over its method, URI (path and
//! query, as sent) and JSON body. Bodies and answers are [`matrix_core`] JSON, not
//! `serde_json`: events of room versions 1 to 5 must keep their numbers exactly as written
//! for their hashes and signatures to verify, which `serde_json::Value` does not do.
//! Requests to one destination run at most [`ClientOptions::max_concurrent_per_destination`]
//! at a time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use matrix_core::json::{Object, parse_lenient, to_canonical_vec};
use matrix_core::xmatrix::sign_request;
use matrix_core::{SigningKey, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::transport::{ResponseLimit, Transport};
use crate::{FederationError, FederationOptions, now_ms};

/// Bounds of [`FederationClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Requests in flight to one destination at most; others wait: 16.
    pub max_concurrent_per_destination: usize,
    /// The largest answer of the endpoints that return rooms' state or history (`send_join`,
    /// `state`, `state_ids`, `backfill`, `get_missing_events`, `event_auth`): 64 MiB. Other
    /// answers are bounded by the transport's default.
    pub large_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { max_concurrent_per_destination: 16, large_response_bytes: 64 << 20 }
    }
}

/// `GET /_matrix/federation/v1/version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// The implementation's name, if given.
    pub name: Option<String>,
    /// Its version, if given.
    pub version: Option<String>,
}

/// Percent-encodes `text` for a path segment or a query value: everything but RFC 3986's
/// unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A semaphore per destination, alive while someone holds or waits for it (the map keeps
/// weak references and sweeps the dead when it doubled).
#[derive(Debug, Default)]
struct Gates {
    inner: Mutex<(HashMap<String, Weak<Semaphore>>, usize)>,
}

impl Gates {
    async fn enter(&self, destination: &str, permits: usize) -> Option<OwnedSemaphorePermit> {
        let gate = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let (map, sweep_at) = &mut *inner;
            match map.get(destination).and_then(Weak::upgrade) {
                Some(gate) => gate,
                None => {
                    if map.len() >= *sweep_at {
                        map.retain(|_, gate| gate.strong_count() > 0);
                        *sweep_at = (map.len() * 2).max(64);
                    }
                    let gate = Arc::new(Semaphore::new(permits.max(1)));
                    map.insert(destination.to_owned(), Arc::downgrade(&gate));
                    gate
                }
            }
        };
        gate.acquire_owned().await.ok()
    }
}

impl FederationError {
    /// The Matrix `errcode` of a [`FederationError::Status`] answer, if its body has one.
    pub fn errcode(&self) -> Option<String> {
        let FederationError::Status { body, .. } = self else { return None };
        let value = parse_lenient(body.as_bytes()).ok()?;
        value.as_object()?.get_str("errcode").map(str::to_owned)
    }
}

/// Signed JSON requests to other servers over a [`Transport`].
#[derive(Debug, Clone)]
pub struct FederationClient {
    server_name: String,
    key: Arc<SigningKey>,
    transport: Arc<dyn Transport>,
    options: ClientOptions,
    gates: Arc<Gates>,
}

impl FederationClient {
    /// A client signing as `federation.server_name` with `key`.
    pub fn new(
        federation: &FederationOptions,
        key: Arc<SigningKey>,
        transport: Arc<dyn Transport>,
        options: ClientOptions,
    ) -> Self {
        FederationClient {
            server_name: federation.server_name.clone(),
            key,
            transport,
            options,
            gates: Arc::default(),
        }
    }

    /// The server name requests are signed as.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Sends a signed request and returns the answer's JSON object. `path_and_query` must be
    /// encoded already ([`encode`]); `limit` overrides the transport's bound on the answer.
    /// A status other than 2xx is [`FederationError::Status`].
    pub async fn request(
        &self,
        destination: &str,
        method: http::Method,
        path_and_query: &str,
        body: Option<&Object>,
        limit: Option<usize>,
    ) -> Result<Object, FederationError> {
        let malformed = |reason: String| FederationError::Malformed {
            destination: destination.to_owned(),
            reason,
        };
        let response = self.send(destination, method, path_and_query, body, limit).await?;
        match parse_lenient(response.body()) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err(malformed("the answer is not a JSON object".to_owned())),
            Err(e) => Err(malformed(format!("the answer is not JSON: {e}"))),
        }
    }

    /// Sends a signed request and returns the answer as it came (a 2xx status; any other
    /// is [`FederationError::Status`]), for endpoints whose answers are not JSON.
    pub async fn send(
        &self,
        destination: &str,
        method: http::Method,
        path_and_query: &str,
        body: Option<&Object>,
        limit: Option<usize>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        self.send_signed(destination, method, path_and_query, body, limit, false).await
    }

    /// [`FederationClient::send`]; with `redirects`, a 3xx answer is returned as it came too.
    async fn send_signed(
        &self,
        destination: &str,
        method: http::Method,
        path_and_query: &str,
        body: Option<&Object>,
        limit: Option<usize>,
        redirects: bool,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let redirects = redirects && method == http::Method::GET;
        let malformed = |reason: String| FederationError::Malformed {
            destination: destination.to_owned(),
            reason,
        };
        let content = body.map(|body| Value::Object(body.clone()));
        let header = sign_request(
            &self.key,
            &self.server_name,
            destination,
            method.as_str(),
            path_and_query,
            content.as_ref(),
        )
        .to_header_value();
        let bytes = content.as_ref().map(to_canonical_vec).map(Bytes::from).unwrap_or_default();
        let mut request = http::Request::new(bytes);
        *request.method_mut() = method;
        *request.uri_mut() = path_and_query
            .parse()
            .map_err(|_| malformed(format!("cannot send to the URI {path_and_query:?}")))?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&header)
                .map_err(|_| malformed("unrepresentable Authorization header".to_owned()))?,
        );
        if content.is_some() {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        if let Some(limit) = limit {
            request.extensions_mut().insert(ResponseLimit(limit));
        }
        let _permit =
            self.gates.enter(destination, self.options.max_concurrent_per_destination).await;
        let response = self.transport.send(destination, request).await?;
        let passed =
            response.status().is_success() || (redirects && response.status().is_redirection());
        if !passed {
            let body = response.body();
            let start = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            return Err(FederationError::Status {
                destination: destination.to_owned(),
                status: response.status().as_u16(),
                body: start,
            });
        }
        Ok(response)
    }

    /// `GET /_matrix/federation/v1/media/download/{mediaId}`: a media item of
    /// `destination`, its answer at most `limit` bytes (a larger one is an error). The
    /// `multipart/mixed` answer is read by [`crate::media::parse`]; a 307 or 308 redirect is
    /// answered as a [`crate::media::MediaBody::Location`] (see [`crate::media::location`]).
    pub async fn media_download(
        &self,
        destination: &str,
        media_id: &str,
        limit: usize,
    ) -> Result<crate::media::MediaAnswer, FederationError> {
        let path = format!("/_matrix/federation/v1/media/download/{}", encode(media_id));
        let response = self
            .send_signed(destination, http::Method::GET, &path, None, Some(limit), true)
            .await?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .filter(|_| matches!(response.status().as_u16(), 307 | 308));
            let Some(location) = location else {
                return Err(FederationError::Status {
                    destination: destination.to_owned(),
                    status: response.status().as_u16(),
                    body: "a redirect that is not a 307 or 308 with a Location".to_owned(),
                });
            };
            return Ok(crate::media::MediaAnswer {
                metadata: Object::new(),
                content: crate::media::MediaBody::Location(location.to_owned()),
            });
        }
        if response.body().len() > limit {
            return Err(FederationError::TooLarge { destination: destination.to_owned(), limit });
        }
        let content_type =
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        crate::media::parse(content_type, response.body().clone()).map_err(|e| {
            FederationError::Malformed {
                destination: destination.to_owned(),
                reason: e.to_string(),
            }
        })
    }

    async fn get(&self, destination: &str, path: &str) -> Result<Object, FederationError> {
        self.request(destination, http::Method::GET, path, None, None).await
    }

    async fn get_large(&self, destination: &str, path: &str) -> Result<Object, FederationError> {
        let limit = Some(self.options.large_response_bytes);
        self.request(destination, http::Method::GET, path, None, limit).await
    }

    async fn put(
        &self,
        destination: &str,
        path: &str,
        body: &Object,
        limit: Option<usize>,
    ) -> Result<Object, FederationError> {
        self.request(destination, http::Method::PUT, path, Some(body), limit).await
    }

    async fn post(
        &self,
        destination: &str,
        path: &str,
        body: &Object,
        limit: Option<usize>,
    ) -> Result<Object, FederationError> {
        self.request(destination, http::Method::POST, path, Some(body), limit).await
    }

    /// `GET /_matrix/federation/v1/version`.
    pub async fn version(&self, destination: &str) -> Result<ServerVersion, FederationError> {
        let answer = self.get(destination, "/_matrix/federation/v1/version").await?;
        let server = answer.get_object("server");
        let field = |name| server.and_then(|s| s.get_str(name)).map(str::to_owned);
        Ok(ServerVersion { name: field("name"), version: field("version") })
    }

    /// `GET /_matrix/key/v2/server`: check it with [`crate::keys::verify_server_keys`].
    pub async fn server_keys(&self, destination: &str) -> Result<Object, FederationError> {
        self.get(destination, "/_matrix/key/v2/server").await
    }

    /// `POST /_matrix/key/v2/query` to a notary; `server_keys` is the query's criteria
    /// (`{"example.org": {"ed25519:abc": {"minimum_valid_until_ts": ...}}}`).
    pub async fn query_keys(
        &self,
        notary: &str,
        server_keys: Object,
    ) -> Result<Object, FederationError> {
        let mut body = Object::new();
        body.insert("server_keys", server_keys);
        self.post(notary, "/_matrix/key/v2/query", &body, None).await
    }

    /// `PUT /_matrix/federation/v1/send/{txnId}` with our origin and the time now.
    pub async fn send_transaction(
        &self,
        destination: &str,
        txn_id: &str,
        pdus: Vec<Value>,
        edus: Vec<Value>,
    ) -> Result<Object, FederationError> {
        let mut body = Object::new();
        body.insert("origin", self.server_name.as_str());
        body.insert("origin_server_ts", now_ms());
        body.insert("pdus", pdus);
        body.insert("edus", edus);
        let path = format!("/_matrix/federation/v1/send/{}", encode(txn_id));
        self.put(destination, &path, &body, None).await
    }

    /// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...`.
    pub async fn make_join(
        &self,
        destination: &str,
        room_id: &str,
        user_id: &str,
        room_versions: &[&str],
    ) -> Result<Object, FederationError> {
        let path = with_versions(
            format!("/_matrix/federation/v1/make_join/{}/{}", encode(room_id), encode(user_id)),
            room_versions,
        );
        self.get(destination, &path).await
    }

    /// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}[?omit_members=true]`.
    pub async fn send_join(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
        event: &Object,
        omit_members: bool,
    ) -> Result<Object, FederationError> {
        let mut path =
            format!("/_matrix/federation/v2/send_join/{}/{}", encode(room_id), encode(event_id));
        if omit_members {
            path.push_str("?omit_members=true");
        }
        let limit = Some(self.options.large_response_bytes);
        self.put(destination, &path, event, limit).await
    }

    /// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`.
    pub async fn make_leave(
        &self,
        destination: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<Object, FederationError> {
        let path =
            format!("/_matrix/federation/v1/make_leave/{}/{}", encode(room_id), encode(user_id));
        self.get(destination, &path).await
    }

    /// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
    pub async fn send_leave(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
        event: &Object,
    ) -> Result<Object, FederationError> {
        let path =
            format!("/_matrix/federation/v2/send_leave/{}/{}", encode(room_id), encode(event_id));
        self.put(destination, &path, event, None).await
    }

    /// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`.
    pub async fn invite(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
        room_version: &str,
        event: Object,
        invite_room_state: Vec<Value>,
    ) -> Result<Object, FederationError> {
        let mut body = Object::new();
        body.insert("room_version", room_version);
        body.insert("event", event);
        body.insert("invite_room_state", invite_room_state);
        let path =
            format!("/_matrix/federation/v2/invite/{}/{}", encode(room_id), encode(event_id));
        self.put(destination, &path, &body, None).await
    }

    /// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=...`.
    pub async fn make_knock(
        &self,
        destination: &str,
        room_id: &str,
        user_id: &str,
        room_versions: &[&str],
    ) -> Result<Object, FederationError> {
        let path = with_versions(
            format!("/_matrix/federation/v1/make_knock/{}/{}", encode(room_id), encode(user_id)),
            room_versions,
        );
        self.get(destination, &path).await
    }

    /// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`.
    pub async fn send_knock(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
        event: &Object,
    ) -> Result<Object, FederationError> {
        let path =
            format!("/_matrix/federation/v1/send_knock/{}/{}", encode(room_id), encode(event_id));
        self.put(destination, &path, event, None).await
    }

    /// `GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=...`.
    pub async fn backfill(
        &self,
        destination: &str,
        room_id: &str,
        from: &[&str],
        limit: u32,
    ) -> Result<Object, FederationError> {
        let mut path = format!("/_matrix/federation/v1/backfill/{}?limit={limit}", encode(room_id));
        for event_id in from {
            let _ = write!(path, "&v={}", encode(event_id));
        }
        self.get_large(destination, &path).await
    }

    /// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
    pub async fn get_missing_events(
        &self,
        destination: &str,
        room_id: &str,
        earliest_events: &[&str],
        latest_events: &[&str],
        limit: u32,
        min_depth: i64,
    ) -> Result<Object, FederationError> {
        let list = |ids: &[&str]| ids.iter().map(|id| Value::from(*id)).collect::<Vec<_>>();
        let mut body = Object::new();
        body.insert("earliest_events", list(earliest_events));
        body.insert("latest_events", list(latest_events));
        body.insert("limit", i64::from(limit));
        body.insert("min_depth", min_depth);
        let path = format!("/_matrix/federation/v1/get_missing_events/{}", encode(room_id));
        let limit = Some(self.options.large_response_bytes);
        self.post(destination, &path, &body, limit).await
    }

    /// `GET /_matrix/federation/v1/state/{roomId}?event_id=...`.
    pub async fn state(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Object, FederationError> {
        let path = format!(
            "/_matrix/federation/v1/state/{}?event_id={}",
            encode(room_id),
            encode(event_id)
        );
        self.get_large(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=...`.
    pub async fn state_ids(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Object, FederationError> {
        let path = format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            encode(room_id),
            encode(event_id)
        );
        self.get_large(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/event/{eventId}`.
    pub async fn event(
        &self,
        destination: &str,
        event_id: &str,
    ) -> Result<Object, FederationError> {
        let path = format!("/_matrix/federation/v1/event/{}", encode(event_id));
        self.get(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`: the event nearest `ts`, at
    /// or after it (`forwards`) or at or before it.
    pub async fn timestamp_to_event(
        &self,
        destination: &str,
        room_id: &str,
        ts: u64,
        forwards: bool,
    ) -> Result<Object, FederationError> {
        let dir = if forwards { "f" } else { "b" };
        let path = format!(
            "/_matrix/federation/v1/timestamp_to_event/{}?ts={ts}&dir={dir}",
            encode(room_id)
        );
        self.get(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
    pub async fn event_auth(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Object, FederationError> {
        let path =
            format!("/_matrix/federation/v1/event_auth/{}/{}", encode(room_id), encode(event_id));
        self.get_large(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/query/profile?user_id=...[&field=...]`.
    pub async fn query_profile(
        &self,
        destination: &str,
        user_id: &str,
        field: Option<&str>,
    ) -> Result<Object, FederationError> {
        let mut path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode(user_id));
        if let Some(field) = field {
            let _ = write!(path, "&field={}", encode(field));
        }
        self.get(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/query/directory?room_alias=...`.
    pub async fn query_directory(
        &self,
        destination: &str,
        room_alias: &str,
    ) -> Result<Object, FederationError> {
        let path =
            format!("/_matrix/federation/v1/query/directory?room_alias={}", encode(room_alias));
        self.get(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/hierarchy/{roomId}[?suggested_only=true]`: a space and
    /// its children as `destination` knows them.
    pub async fn hierarchy(
        &self,
        destination: &str,
        room_id: &str,
        suggested_only: bool,
    ) -> Result<Object, FederationError> {
        let mut path = format!("/_matrix/federation/v1/hierarchy/{}", encode(room_id));
        if suggested_only {
            path.push_str("?suggested_only=true");
        }
        self.get_large(destination, &path).await
    }

    /// `GET /_matrix/federation/v1/publicRooms[?limit=...][&since=...]`.
    pub async fn public_rooms(
        &self,
        destination: &str,
        limit: Option<u32>,
        since: Option<&str>,
    ) -> Result<Object, FederationError> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(since) = since {
            query.push(format!("since={}", encode(since)));
        }
        let mut path = "/_matrix/federation/v1/publicRooms".to_owned();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.get(destination, &path).await
    }

    /// `POST /_matrix/federation/v1/publicRooms` with a filter body.
    pub async fn public_rooms_filtered(
        &self,
        destination: &str,
        body: &Object,
    ) -> Result<Object, FederationError> {
        self.post(destination, "/_matrix/federation/v1/publicRooms", body, None).await
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}`.
    pub async fn user_devices(
        &self,
        destination: &str,
        user_id: &str,
    ) -> Result<Object, FederationError> {
        let path = format!("/_matrix/federation/v1/user/devices/{}", encode(user_id));
        self.get(destination, &path).await
    }

    /// `POST /_matrix/federation/v1/user/keys/query`; `device_keys` is
    /// `{"@u:example.org": ["DEVICE", ...]}`.
    pub async fn user_keys_query(
        &self,
        destination: &str,
        device_keys: Object,
    ) -> Result<Object, FederationError> {
        let mut body = Object::new();
        body.insert("device_keys", device_keys);
        self.post(destination, "/_matrix/federation/v1/user/keys/query", &body, None).await
    }

    /// `POST /_matrix/federation/v1/user/keys/claim`; `one_time_keys` is
    /// `{"@u:example.org": {"DEVICE": "signed_curve25519"}}`.
    pub async fn user_keys_claim(
        &self,
        destination: &str,
        one_time_keys: Object,
    ) -> Result<Object, FederationError> {
        let mut body = Object::new();
        body.insert("one_time_keys", one_time_keys);
        self.post(destination, "/_matrix/federation/v1/user/keys/claim", &body, None).await
    }
}

fn with_versions(mut path: String, versions: &[&str]) -> String {
    for (i, version) in versions.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str("ver=");
        path.push_str(&encode(version));
    }
    path
}

#[cfg(test)]
mod tests;

#[async_trait::async_trait]
impl crate::sender::TransactionSink for FederationClient {
    async fn send_transaction(
        &self,
        destination: &str,
        txn_id: &str,
        body: &Object,
    ) -> Result<Object, FederationError> {
        let path = format!("/_matrix/federation/v1/send/{}", encode(txn_id));
        self.put(destination, &path, body, None).await
    }
}
