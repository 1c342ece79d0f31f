//! Fetching a page or an image for a preview without reaching what the blocklist protects.
//!
//! - Only `http` and `https` URLs.
//! - A host that is an IP address is checked before anything is sent.
//! - A host name is resolved here, through [`HostResolver`], by the HTTP client's resolver
//!   hook: every address of the answer is checked, one blocked address refuses the name, and
//!   the client connects to the checked addresses it was handed (it never looks the name up
//!   again, so a second DNS answer cannot point it elsewhere: no DNS rebinding).
//! - Redirects are followed here, one request at a time, so that each new URL is checked
//!   the same way (and at most `max_redirects` of them).
//! - No proxy from the environment, no compressed bodies (nothing to inflate), the body
//!   read as it comes and refused once past the limit, and one deadline for all of it.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use url::{Host, Url};

use crate::config::UrlPreviewConfig;

/// Addresses of one name used at most.
const MAX_ADDRESSES: usize = 16;

/// Looks host names up for URL previews. The real one asks the system's DNS; tests give
/// fixed answers.
#[async_trait]
pub trait HostResolver: Send + Sync + std::fmt::Debug {
    /// The addresses of `host` (AAAA and A records, CNAMEs followed); empty when it has none.
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError>;
}

/// Why a name could not be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS look-up failed: {0}")]
pub struct ResolveError(pub String);

/// The system's DNS (`/etc/resolv.conf`), through hickory-resolver, which caches answers by
/// their TTLs.
#[derive(Debug)]
pub(crate) struct SystemResolver(matrix_federation::resolve::HickoryDns);

impl SystemResolver {
    pub(crate) fn new() -> Result<Self, ResolveError> {
        matrix_federation::resolve::HickoryDns::from_system()
            .map(SystemResolver)
            .map_err(|e| ResolveError(e.0))
    }
}

#[async_trait]
impl HostResolver for SystemResolver {
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        use matrix_federation::resolve::Dns as _;
        self.0.ips(host).await.map_err(|e| ResolveError(e.0))
    }
}

/// Why a fetch failed. Each becomes the answer Synapse gives in the same case
/// (`From<FetchError> for ApiError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FetchError {
    /// Not an absolute http(s) URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The URL's host is a blocked IP address.
    #[error("IP address blocked")]
    BlockedAddress,
    /// The name did not resolve, or resolved to a blocked address.
    #[error("DNS resolution failure during URL preview generation")]
    Resolution,
    /// More redirects than allowed.
    #[error("too many redirects")]
    TooManyRedirects,
    /// The server answered with an error status (or a redirect with nowhere to go).
    #[error("Got error {0}")]
    Status(u16),
    /// The answer is not of a type previews read.
    #[error("Requested file's content type not allowed for this operation: {0}")]
    ContentType(String),
    /// The answer is larger than the limit.
    #[error("Requested file is too large > {0} bytes")]
    TooLarge(usize),
    /// The deadline passed.
    #[error("Requested file took too long to download")]
    Timeout,
    /// Connecting or reading failed.
    #[error("Failed to download content: {0}")]
    Failed(String),
}

/// What a fetch brought back.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The URL the body came from (after redirects).
    pub(crate) url: Url,
    /// The `Content-Type`, as sent.
    pub(crate) content_type: String,
    /// Its media type, lower case, without parameters (`text/html`).
    pub(crate) media_type: String,
    pub(crate) body: Bytes,
}

/// The refusal the resolver hook hands the HTTP client, found again in its error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(&'static str);

/// The HTTP client's resolver: [`HostResolver`], then the blocklist.
#[derive(Debug)]
struct CheckedResolve {
    resolver: Arc<dyn HostResolver>,
    config: Arc<UrlPreviewConfig>,
}

/// The addresses of an answer, if none is blocked.
fn checked(config: &UrlPreviewConfig, mut ips: Vec<IpAddr>) -> Result<Vec<IpAddr>, Refused> {
    if ips.is_empty() {
        return Err(Refused("the name has no address"));
    }
    if ips.iter().any(|ip| config.is_blocked(*ip)) {
        return Err(Refused("the name resolves to a blocked address"));
    }
    ips.truncate(MAX_ADDRESSES);
    Ok(ips)
}

impl reqwest::dns::Resolve for CheckedResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.resolver.clone();
        let config = self.config.clone();
        Box::pin(async move {
            // Boxed as the client's error type itself (not a box in a box), so that
            // `classify` finds it again.
            let refuse =
                |refused: Refused| -> Box<dyn StdError + Send + Sync> { Box::new(refused) };
            let ips = match resolver.lookup(name.as_str()).await {
                Ok(ips) => ips,
                Err(_) => return Err(refuse(Refused("the look-up failed"))),
            };
            let ips = checked(&config, ips).map_err(refuse)?;
            // Port 0: the client uses the URL's port.
            let addresses = ips.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addresses) as reqwest::dns::Addrs)
        })
    }
}

/// Fetches pages and images for previews.
#[derive(Debug)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    config: Arc<UrlPreviewConfig>,
}

/// Why the fetcher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the URL preview client: {0}")]
pub(crate) struct BuildError(String);

impl Fetcher {
    pub(crate) fn new(
        config: Arc<UrlPreviewConfig>,
        resolver: Arc<dyn HostResolver>,
    ) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "matrix-homeserver/",
                env!("CARGO_PKG_VERSION"),
                " (URL preview bot)"
            ))
            .dns_resolver(Arc::new(CheckedResolve { resolver, config: config.clone() }))
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        Ok(Fetcher { client, config })
    }

    /// Checks what can be checked of `url` before a request: its scheme, and its host if
    /// that is an address.
    fn check(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::InvalidUrl("only http and https URLs are previewed".into()));
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            // The URL parser turns every IPv4 spelling (`0x7f.1`, `2130706433`) into an
            // address, so a name here is a name; checked as an address anyway, should the
            // client think otherwise.
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Ok(()),
            },
            None => return Err(FetchError::InvalidUrl("the URL has no host".into())),
        };
        if self.config.is_blocked(ip) {
            return Err(FetchError::BlockedAddress);
        }
        Ok(())
    }

    /// GETs `url`, following redirects, and reads the body if `accept` takes its media type;
    /// at most `max_bytes` of it, all before `deadline`.
    pub(crate) async fn fetch(
        &self,
        mut url: Url,
        accept: impl Fn(&str) -> bool,
        max_bytes: usize,
        deadline: Instant,
    ) -> Result<Fetched, FetchError> {
        let mut redirects = 0;
        let response = loop {
            url.set_fragment(None);
            match self.check(&url) {
                // The client asked for a fine URL; the server sent it somewhere we do not go.
                Err(FetchError::InvalidUrl(_)) if redirects > 0 => {
                    return Err(FetchError::Failed(
                        "a redirect to a URL that is not http(s)".into(),
                    ));
                }
                checked => checked?,
            }
            let sent = self.client.get(url.clone()).send();
            let response = match tokio::time::timeout_at(deadline, sent).await {
                Err(_) => return Err(FetchError::Timeout),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(response)) => response,
            };
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                break response;
            }
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or(FetchError::Status(status))?;
            if redirects >= self.config.max_redirects {
                return Err(FetchError::TooManyRedirects);
            }
            redirects += 1;
            url = location;
        };
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !accept(&media_type) {
            return Err(FetchError::ContentType(media_type));
        }
        if response.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let body = read_body(response, max_bytes, deadline).await?;
        Ok(Fetched { url, content_type, media_type, body })
    }
}

/// The body, as it comes: refused once past `max_bytes`, or when the deadline passes.
async fn read_body(
    mut response: reqwest::Response,
    max_bytes: usize,
    deadline: Instant,
) -> Result<Bytes, FetchError> {
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(FetchError::Timeout),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(None)) => return Ok(body.freeze()),
            Ok(Ok(Some(chunk))) => {
                if body.len().saturating_add(chunk.len()) > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// What a client error means for the preview: a refusal of the resolver hook is a
/// resolution failure; anything else, a failed download.
fn classify(error: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        // An I/O error's `source` skips the error it wraps: that one is looked at too.
        let wrapped = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if e.downcast_ref::<Refused>().is_some()
            || wrapped.is_some_and(|w| w.downcast_ref::<Refused>().is_some())
        {
            return FetchError::Resolution;
        }
        source = e.source();
    }
    if error.is_timeout() {
        return FetchError::Timeout;
    }
    let reason = if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    FetchError::Failed(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_one_blocked_address_is_refused_whole() {
        let config = UrlPreviewConfig::default();
        let public: IpAddr = "93.184.215.14".parse().expect("an address");
        let private: IpAddr = "10.1.2.3".parse().expect("an address");
        assert_eq!(checked(&config, vec![public]).ok(), Some(vec![public]));
        assert!(checked(&config, vec![public, private]).is_err());
        assert!(checked(&config, vec!["::ffff:127.0.0.1".parse().expect("an address")]).is_err());
        assert!(checked(&config, Vec::new()).is_err());
    }

    #[test]
    fn addresses_and_schemes_are_checked_before_sending() {
        /// Knows no name: nothing here is looked up.
        #[derive(Debug)]
        struct NoNames;
        #[async_trait]
        impl HostResolver for NoNames {
            async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
                Err(ResolveError(format!("{host} was looked up")))
            }
        }
        let fetcher =
            Fetcher::new(Arc::new(UrlPreviewConfig::default()), Arc::new(NoNames)).expect("builds");
        let check = |url: &str| fetcher.check(&Url::parse(url).expect("a URL"));
        for blocked in [
            "http://127.0.0.1/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://127.1:8080/",
            "http://10.0.0.1/",
            "https://[::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
        ] {
            assert_eq!(check(blocked), Err(FetchError::BlockedAddress), "{blocked}");
        }
        for invalid in ["ftp://example.org/", "file:///etc/passwd", "data:text/html,hi"] {
            assert!(matches!(check(invalid), Err(FetchError::InvalidUrl(_))), "{invalid}");
        }
        assert_eq!(check("https://example.org/"), Ok(()));
        assert_eq!(check("http://93.184.215.14/"), Ok(()));
    }
}
