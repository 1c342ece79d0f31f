//! Server name resolution: where to connect for a server name, and which `Host` header and
//! TLS name to use there (the spec's "Resolving server names").
//!
//! The steps, in order:
//! 1. an IP literal is used as is, with its port or 8448;
//! 2. a hostname with an explicit port is looked up (AAAA and A) and used with that port;
//! 3. `https://<hostname>/.well-known/matrix/server` may delegate to `<delegated>[:<port>]`,
//!    which is then resolved as an IP literal, a hostname with a port, or through SRV records
//!    of `_matrix-fed._tcp.<delegated>`, then `_matrix._tcp.<delegated>` (deprecated), then
//!    AAAA and A records on port 8448, with the delegated name as `Host` and TLS name;
//! 4. without delegation, the same SRV records of `<hostname>`, then AAAA and A on 8448.
//!
//! DNS and the well-known fetch are traits ([`Dns`], [`WellKnownSource`]) so that the steps
//! are tested with fakes; [`HickoryDns`] and
//! [`crate::transport::https::HttpsWellKnown`] are the real ones. Well-known answers are
//! cached as the spec recommends (the answer's `Cache-Control` or `Expires`, 24 hours without
//! them, at most 48 hours; failures for 5 minutes, doubling on each further failure up to an
//! hour), in a cache of bounded size. DNS answers are cached by the DNS resolver.

mod dns;

pub use dns::HickoryDns;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::FederationError;
use crate::flight::Flights;

/// The port of a server name without one, and of a delegation without one.
pub const DEFAULT_PORT: u16 = 8448;
/// SRV records used at most per name.
pub const MAX_SRV_RECORDS: usize = 8;
/// Addresses kept at most in a [`Resolved`].
pub const MAX_ADDRESSES: usize = 16;

/// Where to connect for a server, and what to present there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The addresses to try, in order, each with its port (never empty).
    pub addresses: Vec<SocketAddr>,
    /// The `Host` header of requests to it.
    pub host_header: String,
    /// The name its certificate must be valid for, also sent as SNI; an IP address (in its
    /// plain text form, without brackets) when the certificate must be valid for that
    /// address, in which case no SNI is sent.
    pub tls_name: String,
    /// The port the server name or its delegation named, if one did (or, for an IP literal,
    /// the port used); `None` when SRV records or the default port chose it.
    pub explicit_port: Option<u16>,
}

/// Finds where a server lives: what [`crate::transport::https::HttpsTransport`] asks before
/// each request. [`Resolver`] is the spec's algorithm; tests give fixed answers.
#[async_trait]
pub trait ServerResolver: Send + Sync + Debug {
    /// Resolves `server_name` (`example.org`, `example.org:8448`, `[::1]:8448`).
    async fn resolve(&self, server_name: &str) -> Result<Resolved, FederationError>;
}

/// An SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Among equal priorities, higher is tried first.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host to look up (`.` means the service is not offered).
    pub target: String,
}

/// Why a DNS look-up failed (other than by finding nothing, which is an empty answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS: {0}")]
pub struct DnsError(pub String);

/// The DNS look-ups resolution needs.
#[async_trait]
pub trait Dns: Send + Sync + Debug {
    /// The SRV records of `name` (`_matrix-fed._tcp.example.org`); empty when there are none.
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError>;
    /// The AAAA and A records of `host` (CNAMEs followed); empty when there are none.
    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// What a `/.well-known/matrix/server` request brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnownResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body (the fetcher bounds its size).
    pub body: Vec<u8>,
    /// How long the answer may be cached, from its `Cache-Control` or `Expires` header
    /// (see [`cache_lifetime`]); `None` when it says nothing.
    pub max_age: Option<Duration>,
}

/// Fetches `https://<hostname>/.well-known/matrix/server`.
#[async_trait]
pub trait WellKnownSource: Send + Sync + Debug {
    /// The answer, or why there is none (unreachable, bad TLS, too many redirects...).
    async fn fetch(&self, hostname: &str) -> Result<WellKnownResponse, String>;
}

/// How long resolution caches well-known answers, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolverOptions {
    /// A valid answer without cache headers: 24 hours.
    pub default_ttl: Duration,
    /// At most, whatever the headers say: 48 hours.
    pub max_ttl: Duration,
    /// At least, whatever the headers say (`no-store` included), so that a server cannot make
    /// us ask for every request: 5 minutes.
    pub min_ttl: Duration,
    /// A failure (or an invalid answer), the first time: 5 minutes, doubled on each further
    /// failure up to `max_error_ttl`.
    pub error_ttl: Duration,
    /// The longest a failure is cached: 1 hour.
    pub max_error_ttl: Duration,
    /// Hostnames cached at most: 10 000.
    pub max_entries: usize,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(48 * 3600),
            min_ttl: Duration::from_secs(300),
            error_ttl: Duration::from_secs(300),
            max_error_ttl: Duration::from_secs(3600),
            max_entries: 10_000,
        }
    }
}

/// The host part of a server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

/// Splits a server name (`hostname [":" port]`, the appendix's grammar) into its host and
/// port. `None` when it is not a server name.
pub fn parse_server_name(name: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inner.parse().ok()?;
        let port = match after {
            "" => None,
            after => Some(parse_port(after.strip_prefix(':')?)?),
        };
        return Some((Host::Ip(IpAddr::V6(ip)), port));
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (name, None),
        }
    };
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some((Host::Ip(IpAddr::V4(ip)), port));
    }
    let valid = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| (Host::Name(host.to_ascii_lowercase()), port))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// How long an HTTP answer may be cached from its headers: `Cache-Control: no-store` or
/// `no-cache` is zero, `max-age` (or `s-maxage`) its value, else `Expires` minus `Date` (or
/// now). `None` when the headers say nothing usable.
pub fn cache_lifetime(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(control) = headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) {
        let mut max_age = None;
        for directive in control.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(value) = directive.strip_prefix("max-age=") {
                max_age = value.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
            }
        }
        if max_age.is_some() {
            return max_age;
        }
    }
    let date = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .and_then(|text| httpdate::parse_http_date(text).ok())
    };
    let expires = headers.get(http::header::EXPIRES)?;
    let Some(expires) = date(http::header::EXPIRES) else {
        // An invalid date (`0`, `-1`) means already expired.
        return expires.to_str().is_ok().then_some(Duration::ZERO);
    };
    let now = date(http::header::DATE).unwrap_or_else(std::time::SystemTime::now);
    Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delegated server name of a well-known body, if it is a valid one.
pub fn parse_well_known(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let server = value.as_object()?.get("m.server")?.as_str()?;
    parse_server_name(server)?;
    Some(server.to_owned())
}

/// A cached well-known outcome.
#[derive(Debug, Clone)]
struct Cached {
    /// The delegation, or `None` for a failure or an invalid answer.
    delegated: Option<String>,
    expires: Instant,
    /// Failures in a row (0 after a success).
    failures: u32,
}

/// The spec's resolution over a [`Dns`] and a [`WellKnownSource`], with the well-known
/// cache.
#[derive(Debug)]
pub struct Resolver {
    dns: Arc<dyn Dns>,
    well_known: Arc<dyn WellKnownSource>,
    options: ResolverOptions,
    cache: Mutex<HashMap<String, Cached>>,
    flights: Flights,
}

impl Resolver {
    /// A resolver with an empty cache.
    pub fn new(
        dns: Arc<dyn Dns>,
        well_known: Arc<dyn WellKnownSource>,
        options: ResolverOptions,
    ) -> Self {
        Resolver { dns, well_known, options, cache: Mutex::default(), flights: Flights::default() }
    }

    fn cached(&self, hostname: &str) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(hostname).filter(|entry| entry.expires > Instant::now()).cloned()
    }

    /// The delegation of `hostname` (step 3), from the cache or fetched once for everyone
    /// asking at the same time.
    async fn delegation(&self, hostname: &str) -> Option<String> {
        if let Some(hit) = self.cached(hostname) {
            return hit.delegated;
        }
        let _turn = self.flights.turn(hostname).await;
        if let Some(hit) = self.cached(hostname) {
            return hit.delegated;
        }
        let answer = self.well_known.fetch(hostname).await;
        let options = &self.options;
        let delegated = match &answer {
            Ok(response) if response.status == 200 => parse_well_known(&response.body),
            _ => None,
        };
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let previous_failures = cache.get(hostname).map_or(0, |entry| entry.failures);
        let entry = match (&delegated, &answer) {
            (Some(_), Ok(response)) => Cached {
                delegated: delegated.clone(),
                expires: now
                    + response
                        .max_age
                        .unwrap_or(options.default_ttl)
                        .clamp(options.min_ttl, options.max_ttl),
                failures: 0,
            },
            _ => {
                let failures = previous_failures.saturating_add(1);
                let factor = 1u32 << (failures - 1).min(16);
                let ttl = options.error_ttl.saturating_mul(factor).min(options.max_error_ttl);
                Cached { delegated: None, expires: now + ttl, failures }
            }
        };
        if cache.len() >= options.max_entries && !cache.contains_key(hostname) {
            cache.retain(|_, entry| entry.expires > now);
            if cache.len() >= options.max_entries {
                // Still full of live entries: drop the one closest to expiring.
                let soonest = cache.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    cache.remove(&soonest);
                }
            }
        }
        if options.max_entries > 0 {
            cache.insert(hostname.to_owned(), entry);
        }
        delegated
    }

    /// The addresses of `host` with `port`.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let ips = self.dns.ips(host).await.map_err(|e| e.to_string())?;
        if ips.is_empty() {
            return Err(format!("{host} has no AAAA or A record"));
        }
        Ok(dedup(ips.into_iter().map(|ip| SocketAddr::new(ip, port))))
    }

    /// SRV records of `_matrix-fed._tcp.<name>`, then `_matrix._tcp.<name>`, then AAAA and A
    /// on port 8448.
    async fn srv_or_default(&self, name: &str) -> Result<Vec<SocketAddr>, String> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            // A failed SRV look-up counts as no record: the address records may still work.
            let mut records = self.dns.srv(&format!("{service}.{name}")).await.unwrap_or_default();
            if records.is_empty() {
                continue;
            }
            if records.iter().all(|r| r.target == "." || r.target.is_empty()) {
                return Err(format!("{service}.{name} says the service is not offered"));
            }
            records.retain(|r| r.target != "." && !r.target.is_empty());
            records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
            records.truncate(MAX_SRV_RECORDS);
            let mut found = Vec::new();
            let mut last_error = String::new();
            for record in &records {
                let target = record.target.trim_end_matches('.');
                match self.addresses(target, record.port).await {
                    Ok(addresses) => found.extend(addresses),
                    Err(e) => last_error = e,
                }
            }
            if found.is_empty() {
                return Err(last_error);
            }
            return Ok(dedup(found.into_iter()));
        }
        self.addresses(name, DEFAULT_PORT).await
    }

    async fn resolve_inner(&self, server_name: &str) -> Result<Resolved, String> {
        let (host, port) = parse_server_name(server_name).ok_or("not a server name")?;
        let hostname = match host {
            // Step 1.
            Host::Ip(ip) => return Ok(ip_literal(ip, port, server_name.to_owned())),
            Host::Name(hostname) => hostname,
        };
        // Step 2.
        if let Some(port) = port {
            return Ok(Resolved {
                addresses: self.addresses(&hostname, port).await?,
                host_header: server_name.to_owned(),
                tls_name: hostname,
                explicit_port: Some(port),
            });
        }
        // Step 3.
        if let Some(delegated) = self.delegation(&hostname).await {
            let Some((host, port)) = parse_server_name(&delegated) else {
                return Err("invalid delegation".to_owned());
            };
            return match (host, port) {
                (Host::Ip(ip), port) => Ok(ip_literal(ip, port, delegated)),
                (Host::Name(name), Some(port)) => Ok(Resolved {
                    addresses: self.addresses(&name, port).await?,
                    host_header: delegated.clone(),
                    tls_name: name,
                    explicit_port: Some(port),
                }),
                (Host::Name(name), None) => Ok(Resolved {
                    addresses: self.srv_or_default(&name).await?,
                    host_header: name.clone(),
                    tls_name: name,
                    explicit_port: None,
                }),
            };
        }
        // Steps 4 to 6.
        Ok(Resolved {
            addresses: self.srv_or_default(&hostname).await?,
            host_header: hostname.clone(),
            tls_name: hostname,
            explicit_port: None,
        })
    }
}

#[async_trait]
impl ServerResolver for Resolver {
    async fn resolve(&self, server_name: &str) -> Result<Resolved, FederationError> {
        self.resolve_inner(server_name).await.map_err(|reason| FederationError::Unreachable {
            destination: server_name.to_owned(),
            reason,
        })
    }
}

fn ip_literal(ip: IpAddr, port: Option<u16>, host_header: String) -> Resolved {
    let port = port.unwrap_or(DEFAULT_PORT);
    Resolved {
        addresses: vec![SocketAddr::new(ip, port)],
        host_header,
        tls_name: ip.to_string(),
        explicit_port: Some(port),
    }
}

fn dedup(addresses: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for address in addresses {
        if out.len() == MAX_ADDRESSES {
            break;
        }
        if !out.contains(&address) {
            out.push(address);
        }
    }
    out
}

#[cfg(test)]
mod tests;
