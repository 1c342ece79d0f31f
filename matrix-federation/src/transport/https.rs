//! The real [`Transport`]: HTTPS (rustls, HTTP/1.1, pooled connections) to the address
//! [`crate::resolve`] finds, with the `Host` header and TLS name the spec asks for.
//!
//! The connection goes to the resolved addresses while the URL names the TLS name: requests
//! are made to `https://<tls name>[:<port>]/...`, and the client's DNS resolver answers that
//! name with the addresses resolution found (a bounded table of pins). Without an explicit
//! port, the pinned addresses carry the port (SRV or 8448); with one, the URL carries it. So
//! SNI and certificate checks use the TLS name (none for an IP address), and connections are
//! pooled per TLS name and port.
//!
//! A limitation of pooling by name: a host reached both through SRV records (or the default
//! port) and as an explicit `host:port` shares its pin, so one of the two may be sent to the
//! other's addresses for a moment; the certificate is still checked for the same name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{ResponseLimit, Transport};
use crate::resolve::{
    Dns, HickoryDns, Resolver, ResolverOptions, ServerResolver, WellKnownResponse, WellKnownSource,
    cache_lifetime,
};
use crate::{FederationError, FederationOptions};

/// Names pinned at most (one per TLS name in use).
const MAX_PINS: usize = 4096;

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTPS transport: {0}")]
pub struct BuildError(String);

/// Timeouts and bounds of [`HttpsTransport`] and [`HttpsWellKnown`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpsOptions {
    /// A whole request, connection to last byte: 60 s.
    pub request_timeout: Duration,
    /// Connecting (TCP and TLS): 10 s.
    pub connect_timeout: Duration,
    /// The largest answer body, unless the request carries a [`ResponseLimit`]: 16 MiB.
    pub max_response_bytes: usize,
    /// A whole well-known request, redirects included: 30 s.
    pub well_known_timeout: Duration,
    /// The largest well-known body: 64 KiB.
    pub well_known_max_bytes: usize,
    /// Redirects followed at most for well-known: 5 (a loop stops earlier).
    pub well_known_max_redirects: usize,
    /// Idle connections kept per host: 8; they close after `pool_idle_timeout`.
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept: 90 s.
    pub pool_idle_timeout: Duration,
    /// Well-known resolution cache.
    pub resolver: ResolverOptions,
}

impl Default for HttpsOptions {
    fn default() -> Self {
        HttpsOptions {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 16 << 20,
            well_known_timeout: Duration::from_secs(30),
            well_known_max_bytes: 64 << 10,
            well_known_max_redirects: 5,
            max_idle_per_host: 8,
            pool_idle_timeout: Duration::from_secs(90),
            resolver: ResolverOptions::default(),
        }
    }
}

/// The client's DNS: pinned names first, then [`Dns`].
#[derive(Debug)]
struct Names {
    dns: Arc<dyn Dns>,
    /// `None` for the well-known client, which must look names up for real.
    pins: Option<Mutex<HashMap<String, Vec<SocketAddr>>>>,
}

impl Names {
    fn pin(&self, name: &str, addresses: &[SocketAddr]) {
        let Some(pins) = &self.pins else { return };
        let mut pins = pins.lock().unwrap_or_else(PoisonError::into_inner);
        if pins.get(name).is_some_and(|pinned| pinned == addresses) {
            return;
        }
        if pins.len() >= MAX_PINS && !pins.contains_key(name) {
            // Names in use are pinned again before each request: forgetting one is safe
            // (a request between its pin and its connection would look the name up itself).
            let evicted = pins.keys().find(|pinned| pinned.as_str() != name).cloned();
            if let Some(evicted) = evicted {
                pins.remove(&evicted);
            }
        }
        pins.insert(name.to_owned(), addresses.to_vec());
    }

    fn pinned(&self, name: &str) -> Option<Vec<SocketAddr>> {
        let pins = self.pins.as_ref()?.lock().unwrap_or_else(PoisonError::into_inner);
        pins.get(name).cloned()
    }
}

/// Adapter from [`Names`] to reqwest's resolver trait.
#[derive(Debug, Clone)]
struct NamesResolve(Arc<Names>);

impl reqwest::dns::Resolve for NamesResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let names = self.0.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            if let Some(addresses) = names.pinned(&name) {
                return Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs);
            }
            let ips = names.dns.ips(&name).await?;
            // Port 0: the URL's port (or 443) is used.
            let addresses: Vec<SocketAddr> =
                ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn builder(federation: &FederationOptions, names: Arc<Names>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .https_only(true)
        .no_proxy()
        .user_agent(concat!("matrix-federation/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!federation.verify_certificates)
        .dns_resolver(Arc::new(NamesResolve(names)))
}

/// HTTPS to other servers. Cheap to share (`Arc`); keeps its connections pooled.
#[derive(Debug, Clone)]
pub struct HttpsTransport {
    client: reqwest::Client,
    resolver: Arc<dyn ServerResolver>,
    names: Arc<Names>,
    options: HttpsOptions,
}

impl HttpsTransport {
    /// The transport with the spec's resolution over the system's DNS
    /// ([`HickoryDns::from_system`]) and [`HttpsWellKnown`].
    pub fn new(federation: &FederationOptions, options: HttpsOptions) -> Result<Self, BuildError> {
        let dns: Arc<dyn Dns> =
            Arc::new(HickoryDns::from_system().map_err(|e| BuildError(e.to_string()))?);
        let well_known = Arc::new(HttpsWellKnown::new(federation, &options, dns.clone())?);
        let resolver = Arc::new(Resolver::new(dns.clone(), well_known, options.resolver));
        Self::with_resolver(federation, options, resolver, dns)
    }

    /// The transport with another resolution (tests, fixed addresses): `dns` answers names
    /// the resolver did not pin.
    pub fn with_resolver(
        federation: &FederationOptions,
        options: HttpsOptions,
        resolver: Arc<dyn ServerResolver>,
        dns: Arc<dyn Dns>,
    ) -> Result<Self, BuildError> {
        let names = Arc::new(Names { dns, pins: Some(Mutex::default()) });
        let client = builder(federation, names.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.max_idle_per_host)
            .pool_idle_timeout(options.pool_idle_timeout)
            .build()
            .map_err(|e| BuildError(error_text(&e)))?;
        Ok(HttpsTransport { client, resolver, names, options })
    }

    /// The URL for `path` on a resolved server, pinning its addresses.
    fn url(&self, resolved: &crate::resolve::Resolved, path: &str) -> String {
        match resolved.tls_name.parse::<IpAddr>() {
            Ok(ip) => {
                let port = resolved
                    .explicit_port
                    .or(resolved.addresses.first().map(SocketAddr::port))
                    .unwrap_or(crate::resolve::DEFAULT_PORT);
                format!("https://{}{path}", SocketAddr::new(ip, port))
            }
            Err(_) => {
                self.names.pin(&resolved.tls_name, &resolved.addresses);
                match resolved.explicit_port {
                    Some(port) => format!("https://{}:{port}{path}", resolved.tls_name),
                    None => format!("https://{}{path}", resolved.tls_name),
                }
            }
        }
    }
}

/// An error with its causes, which is where reqwest says what went wrong.
pub(crate) fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a body of at most `limit` bytes. The error: `Ok(reason)` when the body could not be
/// read, `Err(reason)` when it is over `limit`.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, Result<String, String>> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(Err(format!("the answer is larger than {limit} bytes")));
    }
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(Err(format!("the answer is larger than {limit} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(Ok(error_text(&e))),
        }
    }
}

#[async_trait]
impl Transport for HttpsTransport {
    async fn send(
        &self,
        destination: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let unreachable = |reason: String| FederationError::Unreachable {
            destination: destination.to_owned(),
            reason,
        };
        let resolved = self.resolver.resolve(destination).await?;
        let limit = request
            .extensions()
            .get::<ResponseLimit>()
            .map_or(self.options.max_response_bytes, |limit| limit.0);
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = self.url(&resolved, path);
        let mut headers = parts.headers;
        let host = http::HeaderValue::from_str(&resolved.host_header)
            .map_err(|_| unreachable(format!("invalid Host {:?}", resolved.host_header)))?;
        headers.insert(http::header::HOST, host);
        let response = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(body)
            .timeout(self.options.request_timeout)
            .send()
            .await
            .map_err(|e| unreachable(error_text(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, limit).await.map_err(|e| match e {
            Ok(reason) => unreachable(reason),
            Err(reason) => {
                FederationError::Malformed { destination: destination.to_owned(), reason }
            }
        })?;
        let mut answer = http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

/// [`WellKnownSource`] over HTTPS: follows redirects (at most
/// [`HttpsOptions::well_known_max_redirects`], never in a loop, never to plain HTTP),
/// checks certificates as the transport does, bounds time and size.
#[derive(Debug, Clone)]
pub struct HttpsWellKnown {
    client: reqwest::Client,
    max_bytes: usize,
    /// 443, except in tests.
    port: u16,
}

impl HttpsWellKnown {
    /// The fetcher, looking names up with `dns`.
    pub fn new(
        federation: &FederationOptions,
        options: &HttpsOptions,
        dns: Arc<dyn Dns>,
    ) -> Result<Self, BuildError> {
        let names = Arc::new(Names { dns, pins: None });
        let max_redirects = options.well_known_max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                attempt.error("too many redirects")
            } else if attempt.previous().contains(attempt.url()) {
                attempt.error("a redirect loop")
            } else if attempt.url().scheme() != "https" {
                attempt.error("a redirect away from HTTPS")
            } else {
                attempt.follow()
            }
        });
        let client = builder(federation, names)
            .redirect(policy)
            .connect_timeout(options.connect_timeout)
            .timeout(options.well_known_timeout)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| BuildError(error_text(&e)))?;
        Ok(HttpsWellKnown { client, max_bytes: options.well_known_max_bytes, port: 443 })
    }

    #[cfg(test)]
    fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

#[async_trait]
impl WellKnownSource for HttpsWellKnown {
    async fn fetch(&self, hostname: &str) -> Result<WellKnownResponse, String> {
        let url = format!("https://{hostname}:{}/.well-known/matrix/server", self.port);
        let response = self.client.get(url).send().await.map_err(|e| error_text(&e))?;
        let status = response.status().as_u16();
        let max_age = cache_lifetime(response.headers());
        let body = read_limited(response, self.max_bytes).await.map_err(|e| match e {
            Ok(reason) | Err(reason) => reason,
        })?;
        Ok(WellKnownResponse { status, body: body.to_vec(), max_age })
    }
}

#[cfg(test)]
mod tests;
