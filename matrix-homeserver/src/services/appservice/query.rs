//! What the homeserver asks services on a client's behalf: whether an unknown user or alias
//! of their namespaces exists (`/_matrix/app/v1/users/{userId}`, `/rooms/{alias}`: the
//! service creates it before answering 200), and pings. Each question is bounded in time (a
//! client is waiting); a service that is down, slow or answers garbage means "no".

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::AppserviceCallError;
use super::{Appservice, Appservices};
use crate::error::ApiError;

/// How long a client's lookup waits for one service.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a ping waits for the service.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// `text` percent-encoded as one path segment.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl Appservices {
    /// Asks the services whose user namespace holds `user` (a local id nobody has) whether it
    /// exists: whether one answered yes (having created it, as the spec asks).
    pub(crate) async fn query_user(&self, user: &str) -> bool {
        let path = format!("/_matrix/app/v1/users/{}", segment(user));
        self.ask(|service| service.is_interested_in_user(user), &path).await
    }

    /// Asks the services whose alias namespace holds `alias` (a local alias nobody has)
    /// whether it exists: whether one answered yes (having created it).
    pub(crate) async fn query_alias(&self, alias: &str) -> bool {
        let path = format!("/_matrix/app/v1/rooms/{}", segment(alias));
        self.ask(|service| service.is_interested_in_alias(alias), &path).await
    }

    async fn ask(&self, interested: impl Fn(&Appservice) -> bool, path: &str) -> bool {
        for service in self.all() {
            if service.registration.url.is_none() || !interested(service) {
                continue;
            }
            let answer = self
                .client()
                .call_within(service, reqwest::Method::GET, path, None, QUERY_TIMEOUT)
                .await;
            match answer {
                Ok(_) => return true,
                // 404 is the service's "no"; anything else is for the operator's log.
                Err(AppserviceCallError::Status { status: 404, .. }) => {}
                Err(e) => {
                    tracing::warn!("application service {:?}: query {path}: {e}", service.id())
                }
            }
        }
        false
    }

    /// Pings `service` (`POST /_matrix/app/v1/ping`) with the client's `transaction_id`: how
    /// long it took to answer, or the error the client-server API names for why not.
    pub(crate) async fn ping(
        &self,
        service: &Appservice,
        transaction_id: Option<&str>,
    ) -> Result<u64, ApiError> {
        if service.registration.url.is_none() {
            return Err(ApiError::with_code(
                400,
                "M_URL_NOT_SET",
                "the application service has no url",
            ));
        }
        let mut body = json!({});
        if let Some(id) = transaction_id {
            body["transaction_id"] = json!(id);
        }
        let start = Instant::now();
        let answer = self
            .client()
            .call_within(
                service,
                reqwest::Method::POST,
                "/_matrix/app/v1/ping",
                Some(&body),
                PING_TIMEOUT,
            )
            .await;
        match answer {
            Ok(_) => Ok(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)),
            Err(AppserviceCallError::NoUrl) => {
                Err(ApiError::with_code(400, "M_URL_NOT_SET", "the application service has no url"))
            }
            Err(AppserviceCallError::TimedOut) => Err(ApiError::with_code(
                504,
                "M_CONNECTION_TIMEOUT",
                "the application service did not answer in time",
            )),
            Err(AppserviceCallError::Status { status, body }) => {
                let mut extra = serde_json::Map::new();
                extra.insert("status".to_owned(), json!(status));
                let body = body.map(|b| b.to_string()).unwrap_or_default();
                extra.insert("body".to_owned(), Value::String(body));
                Err(ApiError::with_fields(
                    502,
                    "M_BAD_STATUS",
                    format!("the application service answered {status}"),
                    extra,
                ))
            }
            // A 2xx whose body is not JSON is still an answer; the spec asks for `{}`, but a
            // service that answered is reachable.
            Err(AppserviceCallError::BadAnswer(_)) => {
                Ok(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
            }
            Err(AppserviceCallError::Unreachable(e)) => Err(ApiError::with_code(
                502,
                "M_CONNECTION_FAILED",
                format!("the application service could not be reached: {e}"),
            )),
        }
    }
}
