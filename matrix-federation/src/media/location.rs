//! Following a media `Location`: a server may answer a media download with where the content
//! is (the `Location` header of the multipart answer's second part, or a 307/308 redirect of
//! the request itself). That URL is fetched with a plain GET (no `X-Matrix` signature, no
//! server discovery), following redirects up to a bound, within the same size and time
//! limits as the media request, and never to an address of the local network: the URL comes
//! from another server, and must not make this one reach what only it can reach.

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::MediaContent;
use crate::FederationError;
use crate::resolve::{Dns, HickoryDns};
use crate::transport::https::{error_text, read_limited};

/// Plain GETs of URLs.
#[async_trait]
pub trait UrlFetcher: Send + Sync + Debug {
    /// GETs `url` without following redirects: answers the status, headers and body (at most
    /// `limit` bytes; more is [`FederationError::TooLarge`]), within `timeout`.
    async fn get(
        &self,
        url: &reqwest::Url,
        limit: usize,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, FederationError>;
}

/// Bounds of [`follow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowOptions {
    /// Redirects followed at most after the first URL: 5.
    pub max_redirects: usize,
    /// The whole fetch, redirects included: 60 s.
    pub timeout: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions { max_redirects: 5, timeout: Duration::from_secs(60) }
    }
}

fn failed(url: &str, reason: impl Into<String>) -> FederationError {
    FederationError::Unreachable { destination: url.to_owned(), reason: reason.into() }
}

/// Fetches the content at `url` (a `Location` of `origin`'s): follows 301, 302, 303, 307
/// and 308 redirects (at most `options.max_redirects`, never in a loop), within
/// `options.timeout` in all; the content is at most `limit` bytes. Answers it with its
/// `Content-Type` and `Content-Disposition`.
pub async fn follow(
    fetcher: &dyn UrlFetcher,
    url: &str,
    limit: usize,
    options: FollowOptions,
) -> Result<MediaContent, FederationError> {
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut current = reqwest::Url::parse(url).map_err(|e| failed(url, format!("bad URL: {e}")))?;
    let mut seen = vec![current.clone()];
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(failed(current.as_str(), "the media took too long"));
        }
        let response = fetcher.get(&current, limit, left).await?;
        let status = response.status().as_u16();
        let header = |name: http::header::HeaderName| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = header(http::header::LOCATION)
                .ok_or_else(|| failed(current.as_str(), "a redirect without a Location"))?;
            let next = current
                .join(&location)
                .map_err(|e| failed(current.as_str(), format!("a bad redirect: {e}")))?;
            if seen.len() > options.max_redirects {
                return Err(failed(current.as_str(), "too many redirects"));
            }
            if seen.contains(&next) {
                return Err(failed(current.as_str(), "a redirect loop"));
            }
            seen.push(next.clone());
            current = next;
            continue;
        }
        if !response.status().is_success() {
            let body = response.body();
            return Err(FederationError::Status {
                destination: current.to_string(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned(),
            });
        }
        return Ok(MediaContent {
            content_type: header(http::header::CONTENT_TYPE),
            content_disposition: header(http::header::CONTENT_DISPOSITION),
            bytes: response.into_body(),
        });
    }
}

/// Whether `ip` is an address this server must not be sent to by another server: this host,
/// the local networks, link-local, multicast and the other special ranges (IPv4-mapped IPv6
/// addresses as their IPv4 address). With `allow_loopback` (tests), this host is allowed.
pub fn blocked(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            if v4.is_loopback() {
                return !allow_loopback;
            }
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return blocked(IpAddr::V4(v4), allow_loopback);
            }
            if v6.is_loopback() {
                return !allow_loopback;
            }
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64 (reaches IPv4)
        }
    }
}

/// The DNS of [`HttpsUrlFetcher`]: names whose addresses are all blocked do not resolve, and
/// blocked addresses are never connected to.
#[derive(Debug, Clone)]
struct Filtered {
    dns: Arc<dyn Dns>,
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for Filtered {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let ips = this.dns.ips(&name).await?;
            let allowed: Vec<SocketAddr> = ips
                .into_iter()
                .filter(|ip| !blocked(*ip, this.allow_loopback))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{name} resolves to no address this server may reach").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// [`UrlFetcher`] over HTTPS (certificates checked), refusing addresses [`blocked`] says
/// are off limits, whether written in the URL or found by DNS.
#[derive(Debug, Clone)]
pub struct HttpsUrlFetcher {
    client: reqwest::Client,
    allow_loopback_http: bool,
}

impl HttpsUrlFetcher {
    /// The fetcher over the system's DNS.
    pub fn new() -> Result<Self, FederationError> {
        let dns = HickoryDns::from_system().map_err(|e| failed("DNS", e.to_string()))?;
        Self::with_dns(Arc::new(dns), false)
    }

    /// The fetcher over `dns`; with `allow_loopback_http` (tests only), plain HTTP and this
    /// host's addresses are allowed too.
    pub fn with_dns(dns: Arc<dyn Dns>, allow_loopback_http: bool) -> Result<Self, FederationError> {
        let client = reqwest::Client::builder()
            .https_only(!allow_loopback_http)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("matrix-federation/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .dns_resolver(Arc::new(Filtered { dns, allow_loopback: allow_loopback_http }))
            .build()
            .map_err(|e| failed("HTTPS", e.to_string()))?;
        Ok(HttpsUrlFetcher { client, allow_loopback_http })
    }
}

#[async_trait]
impl UrlFetcher for HttpsUrlFetcher {
    async fn get(
        &self,
        url: &reqwest::Url,
        limit: usize,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let text = url.as_str();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_loopback_http => {}
            other => return Err(failed(text, format!("a {other} URL is not fetched"))),
        }
        let host = url.host_str().ok_or_else(|| failed(text, "a URL without a host"))?;
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        if literal.is_some_and(|ip| blocked(ip, self.allow_loopback_http)) {
            return Err(failed(text, "an address this server may not reach"));
        }
        let fetch = async {
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| failed(text, error_text(&e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_limited(response, limit).await.map_err(|e| match e {
                Ok(reason) => failed(text, reason),
                Err(_) => FederationError::TooLarge { destination: text.to_owned(), limit },
            })?;
            let mut answer = http::Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok(answer)
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| failed(text, "the media took too long"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_networks_are_blocked() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(blocked(ip, false), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(!blocked(ip, false), "{ip}");
        }
        assert!(!blocked("127.0.0.1".parse().expect("an address"), true));
        assert!(!blocked("::1".parse().expect("an address"), true));
        assert!(blocked("10.0.0.1".parse().expect("an address"), true));
    }
}
