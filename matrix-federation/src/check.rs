//! A federation self-check, as Matrix's federation tester does it: how a server name resolves
//! (`/.well-known/matrix/server`, SRV records, the spec's steps in [`crate::resolve`]),
//! whether the server there presents a certificate valid for the name, publishes its keys
//! at `/_matrix/key/v2/server` signed by themselves and not expired, and answers
//! `/_matrix/federation/v1/version`. Each step is a [`Check`] with a reason; nothing here
//! fails as a whole: a [`Report`] says what passed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::resolve::{
    Dns, HickoryDns, Host, Resolved, Resolver, ResolverOptions, ServerResolver, WellKnownSource,
    parse_server_name, parse_well_known,
};
use crate::transport::https::{HttpsOptions, HttpsWellKnown, error_text, read_limited};
use crate::{FederationOptions, now_ms};

/// The largest answer read from the checked server (keys, version).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// As it should be.
    Pass,
    /// Works, but not as it should (a certificate accepted only because it was asked).
    Warn,
    /// Other servers cannot federate with it because of this.
    Fail,
}

/// One step of the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`well-known`, `srv`, `resolution`, `tls`, `version`, `keys`).
    pub name: &'static str,
    /// How it went.
    pub outcome: Outcome,
    /// What was found, or why it failed.
    pub detail: String,
}

/// Every step, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The server name checked.
    pub server_name: String,
    /// Whether no check failed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

/// How to check.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Go on past a certificate that does not verify (self-signed test servers); the TLS
    /// check then warns instead of failing.
    pub insecure: bool,
    /// More trusted roots (PEM), besides the system's: a test network's own CA.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Each request's time limit: 20 s when zero.
    pub timeout: Duration,
    /// Resolution to use instead of the system's DNS and HTTPS well-known (tests).
    pub resolver: Option<Arc<dyn ServerResolver>>,
}

struct Checker {
    checks: Vec<Check>,
}

impl Checker {
    fn push(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check { name, outcome, detail: detail.into() });
    }

    fn report(self, server_name: &str) -> Report {
        let ok = self.checks.iter().all(|c| c.outcome != Outcome::Fail);
        Report { server_name: server_name.to_owned(), ok, checks: self.checks }
    }
}

/// Checks `server_name` as another server would find and trust it.
pub async fn check_federation(server_name: &str, options: &CheckOptions) -> Report {
    let mut checker = Checker { checks: Vec::new() };
    let timeout = if options.timeout.is_zero() { Duration::from_secs(20) } else { options.timeout };
    let Some((host, port)) = parse_server_name(server_name) else {
        checker.push("server name", Outcome::Fail, "not a server name (host[:port])");
        return checker.report(server_name);
    };
    let resolver = match &options.resolver {
        Some(resolver) => resolver.clone(),
        None => match discovery(&mut checker, &host, port, options, timeout).await {
            Some(resolver) => resolver,
            None => return checker.report(server_name),
        },
    };
    let resolved = match resolver.resolve(server_name).await {
        Ok(resolved) => {
            let addresses: Vec<String> =
                resolved.addresses.iter().map(ToString::to_string).collect();
            checker.push(
                "resolution",
                Outcome::Pass,
                format!(
                    "connect to {}, Host {}, certificate for {}",
                    addresses.join(", "),
                    resolved.host_header,
                    resolved.tls_name
                ),
            );
            resolved
        }
        Err(e) => {
            checker.push("resolution", Outcome::Fail, e.to_string());
            return checker.report(server_name);
        }
    };
    let Some(client) = connect(&mut checker, &resolved, options, timeout).await else {
        return checker.report(server_name);
    };
    version(&mut checker, &client).await;
    keys(&mut checker, &client, server_name).await;
    checker.report(server_name)
}

/// The well-known and SRV steps, reported; the resolver that follows them.
async fn discovery(
    checker: &mut Checker,
    host: &Host,
    port: Option<u16>,
    options: &CheckOptions,
    timeout: Duration,
) -> Option<Arc<dyn ServerResolver>> {
    let dns: Arc<dyn Dns> = match HickoryDns::from_system() {
        Ok(dns) => Arc::new(dns),
        Err(e) => {
            checker.push("dns", Outcome::Fail, e.to_string());
            return None;
        }
    };
    let mut federation = FederationOptions::new("federation-check.invalid");
    federation.verify_certificates = !options.insecure;
    let https = HttpsOptions { well_known_timeout: timeout, ..HttpsOptions::default() };
    let well_known = match HttpsWellKnown::new(&federation, &https, dns.clone()) {
        Ok(source) => Arc::new(source),
        Err(e) => {
            checker.push("well-known", Outcome::Fail, e.to_string());
            return None;
        }
    };
    let srv_name = match (host, port) {
        (Host::Ip(_), _) => {
            checker.push("well-known", Outcome::Pass, "not used: the name is an IP address");
            None
        }
        (Host::Name(_), Some(port)) => {
            let detail = format!("not used: the name has a port ({port})");
            checker.push("well-known", Outcome::Pass, detail);
            None
        }
        (Host::Name(name), None) => match well_known.fetch(name).await {
            Ok(answer) if answer.status == 200 => match parse_well_known(&answer.body) {
                Some(delegated) => {
                    let detail = format!("https://{name}/.well-known/matrix/server: {delegated}");
                    checker.push("well-known", Outcome::Pass, detail);
                    match parse_server_name(&delegated) {
                        Some((Host::Name(target), None)) => Some(target),
                        _ => None,
                    }
                }
                None => {
                    let detail = format!(
                        "https://{name}/.well-known/matrix/server answers 200 without a valid \
                         \"m.server\": other servers ignore it"
                    );
                    checker.push("well-known", Outcome::Fail, detail);
                    Some(name.clone())
                }
            },
            Ok(answer) => {
                let detail = format!(
                    "none (HTTP {}): no delegation, the name itself is used",
                    answer.status
                );
                checker.push("well-known", Outcome::Pass, detail);
                Some(name.clone())
            }
            Err(reason) => {
                let detail = format!("none ({reason}): no delegation, the name itself is used");
                checker.push("well-known", Outcome::Pass, detail);
                Some(name.clone())
            }
        },
    };
    if let Some(name) = srv_name {
        srv(checker, dns.as_ref(), &name).await;
    }
    let resolver = Resolver::new(dns, well_known, ResolverOptions::default());
    Some(Arc::new(resolver))
}

/// The SRV records of `name`, reported.
async fn srv(checker: &mut Checker, dns: &dyn Dns, name: &str) {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        let record = format!("{service}.{name}");
        match dns.srv(&record).await {
            Ok(records) if !records.is_empty() => {
                let targets: Vec<String> = records
                    .iter()
                    .map(|r| format!("{}:{} (priority {})", r.target, r.port, r.priority))
                    .collect();
                let (outcome, note) = if service == "_matrix._tcp" {
                    (Outcome::Warn, " (deprecated: name it _matrix-fed._tcp)")
                } else {
                    (Outcome::Pass, "")
                };
                checker.push("srv", outcome, format!("{record}: {}{note}", targets.join(", ")));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                checker.push("srv", Outcome::Warn, format!("{record}: {e}"));
                return;
            }
        }
    }
    checker.push("srv", Outcome::Pass, format!("no SRV record for {name}: port 8448"));
}

/// A client for the resolved server, after checking its certificate: `None` when it cannot
/// be reached (or its certificate is refused and `insecure` is off).
async fn connect(
    checker: &mut Checker,
    resolved: &Resolved,
    options: &CheckOptions,
    timeout: Duration,
) -> Option<Client> {
    let strict = match Client::new(resolved, options, false, timeout) {
        Ok(client) => client,
        Err(reason) => {
            checker.push("tls", Outcome::Fail, reason);
            return None;
        }
    };
    let path = "/_matrix/federation/v1/version";
    let strict_error = match strict.get(path).await {
        Ok(_) => {
            let detail = format!("the certificate is valid for {}", resolved.tls_name);
            checker.push("tls", Outcome::Pass, detail);
            return Some(strict);
        }
        Err(reason) => reason,
    };
    // Again without checking the certificate: a server that answers then has a bad one.
    let lenient = match Client::new(resolved, options, true, timeout) {
        Ok(client) => client,
        Err(reason) => {
            checker.push("tls", Outcome::Fail, reason);
            return None;
        }
    };
    match lenient.get(path).await {
        Ok(_) if options.insecure => {
            let detail = format!(
                "the certificate is not valid for {} (accepted as asked): {strict_error}",
                resolved.tls_name
            );
            checker.push("tls", Outcome::Warn, detail);
            Some(lenient)
        }
        Ok(_) => {
            let detail =
                format!("the certificate is not valid for {}: {strict_error}", resolved.tls_name);
            checker.push("tls", Outcome::Fail, detail);
            None
        }
        Err(_) => {
            checker.push("tls", Outcome::Fail, format!("cannot connect: {strict_error}"));
            None
        }
    }
}

/// `/_matrix/federation/v1/version`, reported.
async fn version(checker: &mut Checker, client: &Client) {
    match client.get_json("/_matrix/federation/v1/version").await {
        Ok(body) => {
            let field = |key: &str| body["server"][key].as_str().unwrap_or("?").to_owned();
            let detail = format!("{} {}", field("name"), field("version"));
            checker.push("version", Outcome::Pass, detail);
        }
        Err(reason) => checker.push("version", Outcome::Fail, reason),
    }
}

/// `/_matrix/key/v2/server`: about `server_name`, signed by each of its keys, not expired.
async fn keys(checker: &mut Checker, client: &Client, server_name: &str) {
    let path = "/_matrix/key/v2/server";
    let body = match client.get(path).await {
        Ok(body) => body,
        Err(reason) => return checker.push("keys", Outcome::Fail, reason),
    };
    let object = match matrix_core::json::parse_lenient(&body) {
        Ok(matrix_core::Value::Object(object)) => object,
        _ => return checker.push("keys", Outcome::Fail, format!("{path} is not a JSON object")),
    };
    let keys = match crate::keys::verify_server_keys(&object, server_name) {
        Ok(keys) => keys,
        Err(e) => return checker.push("keys", Outcome::Fail, e.to_string()),
    };
    let ids: Vec<&str> = keys.verify_keys.keys().map(String::as_str).collect();
    let left_ms = keys.valid_until_ts.saturating_sub(now_ms());
    if left_ms <= 0 {
        let detail = format!(
            "{} signed, but expired {} minutes ago (valid_until_ts {})",
            ids.join(", "),
            -left_ms / 60_000,
            keys.valid_until_ts
        );
        return checker.push("keys", Outcome::Fail, detail);
    }
    let detail = format!(
        "{} signed, valid for {} more hours (valid_until_ts {})",
        ids.join(", "),
        left_ms / 3_600_000,
        keys.valid_until_ts
    );
    checker.push("keys", Outcome::Pass, detail);
}

/// HTTPS to one resolved server, with its `Host` header and TLS name.
struct Client {
    http: reqwest::Client,
    base: String,
    host_header: String,
}

impl Client {
    fn new(
        resolved: &Resolved,
        options: &CheckOptions,
        lenient: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(0)
            .danger_accept_invalid_certs(lenient);
        if let Some(pem) = &options.extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the extra CA file: {}", error_text(&e)))?;
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let base = match resolved.tls_name.parse::<IpAddr>() {
            Ok(ip) => {
                let port = resolved
                    .explicit_port
                    .or(resolved.addresses.first().map(SocketAddr::port))
                    .unwrap_or(crate::resolve::DEFAULT_PORT);
                format!("https://{}", SocketAddr::new(ip, port))
            }
            Err(_) => {
                builder = builder.resolve_to_addrs(&resolved.tls_name, &resolved.addresses);
                match resolved.explicit_port {
                    Some(port) => format!("https://{}:{port}", resolved.tls_name),
                    None => format!("https://{}", resolved.tls_name),
                }
            }
        };
        let http = builder.build().map_err(|e| error_text(&e))?;
        Ok(Client { http, base, host_header: resolved.host_header.clone() })
    }

    /// The body of a 200 answer to `GET path`.
    async fn get(&self, path: &str) -> Result<bytes::Bytes, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(http::header::HOST, &self.host_header)
            .send()
            .await
            .map_err(|e| error_text(&e))?;
        let status = response.status();
        let body = read_limited(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| format!("{path}: {}", e.unwrap_or_else(|too_big| too_big)))?;
        if !status.is_success() {
            return Err(format!("{path} answers HTTP {status}"));
        }
        Ok(body)
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, String> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{path} is not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::FederationError;

    /// Resolves every name to one address (or to nothing).
    #[derive(Debug)]
    struct Fixed(Option<SocketAddr>);

    #[async_trait]
    impl ServerResolver for Fixed {
        async fn resolve(&self, server_name: &str) -> Result<Resolved, FederationError> {
            let Some(address) = self.0 else {
                return Err(FederationError::Unreachable {
                    destination: server_name.to_owned(),
                    reason: "no address".to_owned(),
                });
            };
            Ok(Resolved {
                addresses: vec![address],
                host_header: server_name.to_owned(),
                tls_name: "example.org".to_owned(),
                explicit_port: None,
            })
        }
    }

    fn options(resolver: Fixed) -> CheckOptions {
        CheckOptions {
            resolver: Some(Arc::new(resolver)),
            timeout: Duration::from_secs(2),
            ..CheckOptions::default()
        }
    }

    #[tokio::test]
    async fn a_bad_name_and_a_failed_resolution_fail_with_their_reason() {
        let report = check_federation("bad name", &options(Fixed(None))).await;
        assert!(!report.ok);
        assert_eq!(report.checks[0].name, "server name");
        let report = check_federation("example.org", &options(Fixed(None))).await;
        assert!(!report.ok);
        let last = report.checks.last().expect("a check");
        assert_eq!((last.name, last.outcome), ("resolution", Outcome::Fail));
        assert!(last.detail.contains("no address"), "{}", last.detail);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_failed_connection() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = unused.local_addr().expect("an address");
        drop(unused);
        let mut options = options(Fixed(Some(address)));
        options.insecure = true;
        let report = check_federation("example.org", &options).await;
        assert!(!report.ok);
        let last = report.checks.last().expect("a check");
        assert_eq!((last.name, last.outcome), ("tls", Outcome::Fail));
        assert!(last.detail.starts_with("cannot connect"), "{}", last.detail);
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["checks"][1]["outcome"], "fail");
    }
}
