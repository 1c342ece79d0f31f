use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[derive(Debug, Default)]
struct FakeDns {
    srv: HashMap<String, Vec<SrvRecord>>,
    ips: HashMap<String, Vec<IpAddr>>,
    failing_srv: bool,
    lookups: Mutex<Vec<String>>,
}

impl FakeDns {
    fn ip(mut self, host: &str, ip: &str) -> Self {
        self.ips.entry(host.to_owned()).or_default().push(ip.parse().expect("ip"));
        self
    }
    fn srv(mut self, name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Self {
        let record = SrvRecord { priority, weight, port, target: target.to_owned() };
        self.srv.entry(name.to_owned()).or_default().push(record);
        self
    }
    fn lookups(&self) -> Vec<String> {
        self.lookups.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Dns for FakeDns {
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        self.lookups.lock().expect("lock").push(format!("SRV {name}"));
        if self.failing_srv {
            return Err(DnsError("SERVFAIL".to_owned()));
        }
        Ok(self.srv.get(name).cloned().unwrap_or_default())
    }
    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.lookups.lock().expect("lock").push(format!("IP {host}"));
        Ok(self.ips.get(host).cloned().unwrap_or_default())
    }
}

#[derive(Debug, Default)]
struct FakeWellKnown {
    answers: Mutex<HashMap<String, Result<WellKnownResponse, String>>>,
    fetches: AtomicUsize,
}

impl FakeWellKnown {
    fn answer(self, host: &str, status: u16, body: &str, max_age: Option<u64>) -> Self {
        self.set(host, status, body, max_age);
        self
    }
    fn set(&self, host: &str, status: u16, body: &str, max_age: Option<u64>) {
        let response = WellKnownResponse {
            status,
            body: body.as_bytes().to_vec(),
            max_age: max_age.map(Duration::from_secs),
        };
        self.answers.lock().expect("lock").insert(host.to_owned(), Ok(response));
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl WellKnownSource for FakeWellKnown {
    async fn fetch(&self, hostname: &str) -> Result<WellKnownResponse, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        // Let concurrent callers run, as a real fetch would.
        tokio::task::yield_now().await;
        let answer = self.answers.lock().expect("lock").get(hostname).cloned();
        answer.unwrap_or_else(|| Err("connection refused".to_owned()))
    }
}

fn resolver(
    dns: FakeDns,
    well_known: FakeWellKnown,
) -> (Resolver, Arc<FakeDns>, Arc<FakeWellKnown>) {
    let dns = Arc::new(dns);
    let well_known = Arc::new(well_known);
    let resolver = Resolver::new(dns.clone(), well_known.clone(), ResolverOptions::default());
    (resolver, dns, well_known)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

async fn resolve(resolver: &Resolver, name: &str) -> Resolved {
    resolver.resolve(name).await.expect("resolves")
}

#[test]
fn server_names_parse_per_the_grammar() {
    let name = |n: &str| Host::Name(n.to_owned());
    let ip = |i: &str| Host::Ip(i.parse().expect("ip"));
    assert_eq!(parse_server_name("example.org"), Some((name("example.org"), None)));
    assert_eq!(parse_server_name("Example.ORG:8448"), Some((name("example.org"), Some(8448))));
    assert_eq!(parse_server_name("1.2.3.4"), Some((ip("1.2.3.4"), None)));
    assert_eq!(parse_server_name("1.2.3.4:80"), Some((ip("1.2.3.4"), Some(80))));
    assert_eq!(parse_server_name("[::1]"), Some((ip("::1"), None)));
    assert_eq!(parse_server_name("[2001:db8::1]:8448"), Some((ip("2001:db8::1"), Some(8448))));
    for bad in [
        "",
        ":8448",
        "a b",
        "example.org:",
        "example.org:99999",
        "example.org:+1",
        "example.org:1:2",
        "[::1",
        "[::1]8448",
        "[zz]:1",
        "::1",
        "exa_mple.org",
        "example.org/path",
    ] {
        assert_eq!(parse_server_name(bad), None, "{bad:?}");
    }
    assert_eq!(parse_server_name(&"a".repeat(256)), None);
}

#[tokio::test]
async fn ip_literals_are_used_as_they_are() {
    let (resolver, dns, well_known) = resolver(FakeDns::default(), FakeWellKnown::default());
    let v4 = resolve(&resolver, "1.2.3.4").await;
    assert_eq!(v4.addresses, vec![addr("1.2.3.4:8448")]);
    assert_eq!((v4.host_header.as_str(), v4.tls_name.as_str()), ("1.2.3.4", "1.2.3.4"));
    let v6 = resolve(&resolver, "[::1]:9000").await;
    assert_eq!(v6.addresses, vec![addr("[::1]:9000")]);
    assert_eq!((v6.host_header.as_str(), v6.tls_name.as_str()), ("[::1]:9000", "::1"));
    assert_eq!(v6.explicit_port, Some(9000));
    assert!(dns.lookups().is_empty());
    assert_eq!(well_known.fetches(), 0);
}

#[tokio::test]
async fn a_hostname_with_a_port_skips_well_known_and_srv() {
    let dns = FakeDns::default().ip("example.org", "10.0.0.1").ip("example.org", "::2");
    let (resolver, dns, well_known) = resolver(dns, FakeWellKnown::default());
    let resolved = resolve(&resolver, "example.org:1234").await;
    assert_eq!(resolved.addresses, vec![addr("10.0.0.1:1234"), addr("[::2]:1234")]);
    assert_eq!(resolved.host_header, "example.org:1234");
    assert_eq!(resolved.tls_name, "example.org");
    assert_eq!(dns.lookups(), vec!["IP example.org"]);
    assert_eq!(well_known.fetches(), 0);
    // No address: unreachable.
    assert!(matches!(
        resolver.resolve("nowhere.org:1").await,
        Err(FederationError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn delegation_to_an_ip_or_a_name_with_a_port() {
    let well_known = FakeWellKnown::default()
        .answer("a.org", 200, r#"{"m.server":"10.0.0.5"}"#, None)
        .answer("b.org", 200, r#"{"m.server":"[::5]:443"}"#, None)
        .answer("c.org", 200, r#"{"m.server":"matrix.c.org:443"}"#, None);
    let dns = FakeDns::default().ip("matrix.c.org", "10.0.0.6").srv(
        "_matrix-fed._tcp.matrix.c.org",
        0,
        0,
        9999,
        "elsewhere.org",
    );
    let (resolver, dns, _) = resolver(dns, well_known);
    let a = resolve(&resolver, "a.org").await;
    assert_eq!(a.addresses, vec![addr("10.0.0.5:8448")]);
    assert_eq!((a.host_header.as_str(), a.tls_name.as_str()), ("10.0.0.5", "10.0.0.5"));
    let b = resolve(&resolver, "b.org").await;
    assert_eq!(b.addresses, vec![addr("[::5]:443")]);
    assert_eq!((b.host_header.as_str(), b.tls_name.as_str()), ("[::5]:443", "::5"));
    let c = resolve(&resolver, "c.org").await;
    assert_eq!(c.addresses, vec![addr("10.0.0.6:443")]);
    assert_eq!(c.host_header, "matrix.c.org:443");
    assert_eq!(c.tls_name, "matrix.c.org");
    // A delegated port means no SRV look-up.
    assert!(!dns.lookups().iter().any(|l| l.starts_with("SRV")));
}

#[tokio::test]
async fn delegation_without_a_port_goes_through_srv_then_the_default_port() {
    let well_known = FakeWellKnown::default()
        .answer("fed.org", 200, r#"{"m.server":"d1.org"}"#, None)
        .answer("old.org", 200, r#"{"m.server":"d2.org"}"#, None)
        .answer("plain.org", 200, r#"{"m.server":"d3.org"}"#, None);
    let dns = FakeDns::default()
        .srv("_matrix-fed._tcp.d1.org", 10, 0, 7001, "t1.net.")
        .srv("_matrix._tcp.d1.org", 0, 0, 7999, "wrong.net")
        .ip("t1.net", "10.1.0.1")
        .srv("_matrix._tcp.d2.org", 0, 0, 7002, "t2.net")
        .ip("t2.net", "10.2.0.1")
        .ip("d3.org", "10.3.0.1");
    let (resolver, _, _) = resolver(dns, well_known);
    let fed = resolve(&resolver, "fed.org").await;
    assert_eq!(fed.addresses, vec![addr("10.1.0.1:7001")]);
    assert_eq!((fed.host_header.as_str(), fed.tls_name.as_str()), ("d1.org", "d1.org"));
    assert_eq!(fed.explicit_port, None);
    let old = resolve(&resolver, "old.org").await;
    assert_eq!(old.addresses, vec![addr("10.2.0.1:7002")]);
    assert_eq!(old.tls_name, "d2.org");
    let plain = resolve(&resolver, "plain.org").await;
    assert_eq!(plain.addresses, vec![addr("10.3.0.1:8448")]);
    assert_eq!(plain.host_header, "d3.org");
}

#[tokio::test]
async fn without_delegation_the_hostname_goes_through_srv_then_the_default_port() {
    let dns = FakeDns::default()
        .srv("_matrix-fed._tcp.a.org", 0, 0, 8443, "fed.a.org")
        .ip("fed.a.org", "10.0.0.1")
        .srv("_matrix._tcp.b.org", 0, 0, 8444, "old.b.org")
        .ip("old.b.org", "10.0.0.2")
        .ip("c.org", "10.0.0.3");
    let (resolver, dns, _) = resolver(dns, FakeWellKnown::default());
    let a = resolve(&resolver, "a.org").await;
    assert_eq!(a.addresses, vec![addr("10.0.0.1:8443")]);
    // The certificate and Host are the server name's, not the SRV target's.
    assert_eq!((a.host_header.as_str(), a.tls_name.as_str()), ("a.org", "a.org"));
    let b = resolve(&resolver, "b.org").await;
    assert_eq!(b.addresses, vec![addr("10.0.0.2:8444")]);
    let c = resolve(&resolver, "c.org").await;
    assert_eq!(c.addresses, vec![addr("10.0.0.3:8448")]);
    assert_eq!(
        dns.lookups(),
        vec![
            "SRV _matrix-fed._tcp.a.org",
            "IP fed.a.org",
            "SRV _matrix-fed._tcp.b.org",
            "SRV _matrix._tcp.b.org",
            "IP old.b.org",
            "SRV _matrix-fed._tcp.c.org",
            "SRV _matrix._tcp.c.org",
            "IP c.org",
        ]
    );
    // A failing SRV look-up falls back to the address records.
    let failing = FakeDns { failing_srv: true, ..FakeDns::default() }.ip("d.org", "10.0.0.4");
    let (resolver, _, _) = self::resolver(failing, FakeWellKnown::default());
    assert_eq!(resolve(&resolver, "d.org").await.addresses, vec![addr("10.0.0.4:8448")]);
}

#[tokio::test]
async fn srv_records_are_ordered_and_a_dot_target_means_no_service() {
    let dns = FakeDns::default()
        .srv("_matrix-fed._tcp.a.org", 20, 0, 3, "c.net")
        .srv("_matrix-fed._tcp.a.org", 10, 1, 2, "b.net")
        .srv("_matrix-fed._tcp.a.org", 10, 5, 1, "a.net")
        .srv("_matrix-fed._tcp.a.org", 5, 0, 9, "unresolvable.net")
        .ip("a.net", "10.0.0.1")
        .ip("b.net", "10.0.0.2")
        .ip("c.net", "10.0.0.3")
        .srv("_matrix-fed._tcp.none.org", 0, 0, 0, ".")
        .ip("none.org", "10.0.0.9");
    let (resolver, _, _) = resolver(dns, FakeWellKnown::default());
    let a = resolve(&resolver, "a.org").await;
    assert_eq!(a.addresses, vec![addr("10.0.0.1:1"), addr("10.0.0.2:2"), addr("10.0.0.3:3")]);
    assert!(resolver.resolve("none.org").await.is_err());
}

#[tokio::test]
async fn invalid_well_known_answers_fall_through_to_srv() {
    let well_known = FakeWellKnown::default()
        .answer("a.org", 200, "not json", None)
        .answer("b.org", 200, r#"{"m.server":42}"#, None)
        .answer("c.org", 200, r#"{"m.server":"bad name!"}"#, None)
        .answer("d.org", 404, r#"{"m.server":"x.org"}"#, None)
        .answer("e.org", 200, r#"["m.server"]"#, None);
    let mut dns = FakeDns::default();
    for host in ["a.org", "b.org", "c.org", "d.org", "e.org"] {
        dns = dns.ip(host, "10.0.0.1");
    }
    let (resolver, _, _) = resolver(dns, well_known);
    for host in ["a.org", "b.org", "c.org", "d.org", "e.org", "unreachable-wk.org"] {
        let result = resolver.resolve(host).await;
        if host == "unreachable-wk.org" {
            assert!(result.is_err());
            continue;
        }
        let resolved = result.expect("falls through");
        assert_eq!(resolved.addresses, vec![addr("10.0.0.1:8448")], "{host}");
        assert_eq!(resolved.tls_name, host);
    }
}

#[tokio::test(start_paused = true)]
async fn well_known_answers_are_cached_per_their_headers_within_bounds() {
    let well_known = FakeWellKnown::default()
        .answer("default.org", 200, r#"{"m.server":"1.1.1.1"}"#, None)
        .answer("short.org", 200, r#"{"m.server":"1.1.1.2"}"#, Some(0))
        .answer("long.org", 200, r#"{"m.server":"1.1.1.3"}"#, Some(365 * 24 * 3600));
    let (resolver, _, well_known) = resolver(FakeDns::default(), well_known);
    let hour = Duration::from_secs(3600);
    for host in ["default.org", "short.org", "long.org"] {
        resolve(&resolver, host).await;
        resolve(&resolver, host).await;
    }
    assert_eq!(well_known.fetches(), 3);
    // The floor: 5 minutes, even for max-age 0.
    tokio::time::advance(Duration::from_secs(299)).await;
    resolve(&resolver, "short.org").await;
    assert_eq!(well_known.fetches(), 3);
    tokio::time::advance(Duration::from_secs(2)).await;
    resolve(&resolver, "short.org").await;
    assert_eq!(well_known.fetches(), 4);
    // The default: 24 hours.
    tokio::time::advance(23 * hour).await;
    resolve(&resolver, "default.org").await;
    assert_eq!(well_known.fetches(), 4);
    tokio::time::advance(hour).await;
    resolve(&resolver, "default.org").await;
    assert_eq!(well_known.fetches(), 5);
    // The cap: 48 hours, whatever the server says.
    tokio::time::advance(24 * hour).await;
    resolve(&resolver, "long.org").await;
    assert_eq!(well_known.fetches(), 6);
}

#[tokio::test(start_paused = true)]
async fn failures_are_cached_with_exponential_backoff_up_to_an_hour() {
    let dns = FakeDns::default().ip("a.org", "10.0.0.1");
    let (resolver, _, well_known) = resolver(dns, FakeWellKnown::default());
    let minutes = |m: u64| Duration::from_secs(m * 60);
    resolve(&resolver, "a.org").await;
    assert_eq!(well_known.fetches(), 1);
    // Failure 1: 5 minutes; 2: 10; 3: 20; 4: 40; then an hour.
    for (ttl, fetches) in [(5, 2), (10, 3), (20, 4), (40, 5), (60, 6), (60, 7)] {
        tokio::time::advance(minutes(ttl) - Duration::from_secs(1)).await;
        resolve(&resolver, "a.org").await;
        assert_eq!(well_known.fetches(), fetches - 1, "before {ttl} minutes");
        tokio::time::advance(Duration::from_secs(2)).await;
        resolve(&resolver, "a.org").await;
        assert_eq!(well_known.fetches(), fetches, "after {ttl} minutes");
    }
    // A success resets the backoff and delegates.
    tokio::time::advance(minutes(61)).await;
    well_known.set("a.org", 200, r#"{"m.server":"10.9.9.9:1"}"#, None);
    assert_eq!(resolve(&resolver, "a.org").await.addresses, vec![addr("10.9.9.9:1")]);
}

#[tokio::test]
async fn a_burst_for_one_server_fetches_its_well_known_once() {
    let well_known =
        FakeWellKnown::default().answer("a.org", 200, r#"{"m.server":"1.2.3.4"}"#, None);
    let (resolver, _, well_known) = resolver(FakeDns::default(), well_known);
    let resolver = Arc::new(resolver);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let resolver = resolver.clone();
            tokio::spawn(async move { resolver.resolve("a.org").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("resolves").tls_name, "1.2.3.4");
    }
    assert_eq!(well_known.fetches(), 1);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let dns = Arc::new(FakeDns::default());
    let well_known = Arc::new(FakeWellKnown::default());
    let options = ResolverOptions { max_entries: 8, ..ResolverOptions::default() };
    let resolver = Resolver::new(dns, well_known.clone(), options);
    for i in 0..100 {
        let host = format!("h{i}.org");
        well_known.set(&host, 200, r#"{"m.server":"1.2.3.4"}"#, None);
        resolve(&resolver, &host).await;
    }
    assert!(resolver.cache.lock().expect("lock").len() <= 8);
    // The most recent is still cached.
    resolve(&resolver, "h99.org").await;
    assert_eq!(well_known.fetches(), 100);
}

#[test]
fn cache_lifetimes_come_from_cache_control_or_expires() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    };
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(cache_lifetime(&headers(&[])), None);
    assert_eq!(cache_lifetime(&headers(&[("cache-control", "max-age=600")])), secs(600));
    assert_eq!(cache_lifetime(&headers(&[("cache-control", "public, Max-Age=60")])), secs(60));
    assert_eq!(cache_lifetime(&headers(&[("cache-control", "no-store")])), secs(0));
    assert_eq!(cache_lifetime(&headers(&[("cache-control", "max-age=x")])), None);
    let expires =
        [("date", "Sun, 06 Dec 2026 10:00:00 GMT"), ("expires", "Sun, 06 Dec 2026 11:00:00 GMT")];
    assert_eq!(cache_lifetime(&headers(&expires)), secs(3600));
    assert_eq!(cache_lifetime(&headers(&[("expires", "0")])), secs(0));
    let past =
        [("date", "Sun, 06 Dec 2026 10:00:00 GMT"), ("expires", "Sun, 06 Dec 2026 09:00:00 GMT")];
    assert_eq!(cache_lifetime(&headers(&past)), secs(0));
    // Cache-Control wins over Expires.
    let both = [("cache-control", "max-age=5"), expires[0], expires[1]];
    assert_eq!(cache_lifetime(&headers(&both)), secs(5));
}

#[test]
fn well_known_bodies_parse_strictly() {
    assert_eq!(parse_well_known(br#"{"m.server":"a.org:443"}"#), Some("a.org:443".to_owned()));
    assert_eq!(
        parse_well_known(br#"{"m.server":"a.org:443","other":1}"#).as_deref(),
        Some("a.org:443")
    );
    assert_eq!(parse_well_known(br#"{"m.server":"a.org:0x1"}"#), None);
    assert_eq!(parse_well_known(br#"{"m.server":""}"#), None);
    assert_eq!(parse_well_known(br#"{}"#), None);
    assert_eq!(parse_well_known(b"\xff"), None);
}
