//! Requests to application services (`/_matrix/app/v1/...`): `hs_token` as bearer
//! authentication, a time limit, no redirects, and answers read with a size bound. The
//! service's URL is the operator's (bridges listen on loopback), so no address is refused.

use std::time::Duration;

use serde_json::Value;

use super::Appservice;

/// How long one request to a service may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from a service.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a request to a service failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppserviceCallError {
    /// The registration has no `url`.
    #[error("the application service has no url")]
    NoUrl,
    /// The service could not be reached, or took too long.
    #[error("the application service could not be reached: {0}")]
    Unreachable(String),
    /// The service did not answer in the time given ([`AppserviceClient::call_within`]).
    #[error("the application service did not answer in time")]
    TimedOut,
    /// The service answered with an error status.
    #[error("the application service answered {status}")]
    Status {
        /// The status.
        status: u16,
        /// Its body, when it was JSON.
        body: Option<Value>,
    },
    /// The answer was not JSON, or too large.
    #[error("the application service's answer is not valid: {0}")]
    BadAnswer(String),
}

/// One HTTP client for every service.
#[derive(Debug, Clone)]
pub(crate) struct AppserviceClient {
    client: reqwest::Client,
}

impl AppserviceClient {
    pub(crate) fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(AppserviceClient { client })
    }

    /// `method` `path` (from `/_matrix/app/...`, query included) on `service`, with `body` as
    /// JSON when given; the answer's JSON (`{}` for an empty body).
    pub(crate) async fn call(
        &self,
        service: &Appservice,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, AppserviceCallError> {
        self.call_within(service, method, path_and_query, body, TIMEOUT).await
    }

    /// [`Self::call`], with the whole exchange bounded by `limit` (a client waits on queries
    /// and pings); running out of it is [`AppserviceCallError::TimedOut`].
    pub(crate) async fn call_within(
        &self,
        service: &Appservice,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Value, AppserviceCallError> {
        tokio::time::timeout(limit, self.exchange(service, method, path_and_query, body))
            .await
            .unwrap_or(Err(AppserviceCallError::TimedOut))
    }

    async fn exchange(
        &self,
        service: &Appservice,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, AppserviceCallError> {
        let base = service.registration.url.as_deref().ok_or(AppserviceCallError::NoUrl)?;
        let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
        let mut request =
            self.client.request(method, url).bearer_auth(&service.registration.hs_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response =
            request.send().await.map_err(|e| AppserviceCallError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| AppserviceCallError::Unreachable(e.to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(AppserviceCallError::BadAnswer("larger than 1 MiB".to_owned()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json = if bytes.iter().all(u8::is_ascii_whitespace) {
            Some(Value::Object(Default::default()))
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if !(200..300).contains(&status) {
            return Err(AppserviceCallError::Status { status, body: json });
        }
        json.ok_or_else(|| AppserviceCallError::BadAnswer("not JSON".to_owned()))
    }
}
