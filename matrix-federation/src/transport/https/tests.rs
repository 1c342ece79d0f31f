//! Against a local TLS server with a self-signed certificate.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::resolve::{DnsError, Resolved, SrvRecord};

/// What the server saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    sni: Option<String>,
    host: Option<String>,
    method: String,
    uri: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Server {
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn answer(request_host: Option<&str>, uri: &str) -> http::Response<Full<Bytes>> {
    let response = |status: u16, body: Vec<u8>| {
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        response
    };
    let redirect = |to: &str| {
        let mut r = response(302, Vec::new());
        r.headers_mut().insert(http::header::LOCATION, to.parse().expect("location"));
        r
    };
    let host = request_host.unwrap_or_default();
    match uri {
        "/.well-known/matrix/server" if host.starts_with("loop.test") => {
            redirect("/.well-known/matrix/server")
        }
        "/.well-known/matrix/server" if host.starts_with("far.test") => redirect("/next/0"),
        "/.well-known/matrix/server" => redirect("/delegation"),
        "/delegation" => {
            let mut r = response(200, br#"{"m.server":"delegated.test:443"}"#.to_vec());
            r.headers_mut().insert(http::header::CACHE_CONTROL, "max-age=600".parse().expect("cc"));
            r
        }
        "/big" => response(200, vec![b' '; 2 << 20]),
        "/forbidden" => response(403, br#"{"errcode":"M_FORBIDDEN","error":"no"}"#.to_vec()),
        _ if uri.starts_with("/next/") => {
            let n: u32 = uri["/next/".len()..].parse().expect("n");
            redirect(&format!("/next/{}", n + 1))
        }
        _ => response(200, br#"{"ok":true}"#.to_vec()),
    }
}

/// Starts a TLS server on 127.0.0.1 whose certificate names `localhost`, `127.0.0.1` and
/// the `.test` names the tests use.
async fn start() -> (u16, Arc<Server>) {
    let names = ["localhost", "127.0.0.1", "srv.test", "named.test", "loop.test", "far.test"];
    let certified = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    // The provider reqwest's client uses (ring); rustls now prefers aws-lc-rs for its
    // post-quantum key exchange, which a loopback test does not need.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = Arc::new(Server::default());
    let state = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let state = state.clone();
            tokio::spawn(async move {
                // A refused handshake (the client distrusts us) just ends the connection.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    let sni = sni.clone();
                    async move {
                        let host = request
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned);
                        let authorization = request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned);
                        let method = request.method().to_string();
                        let uri = request.uri().to_string();
                        let body = http_body_util::BodyExt::collect(request.into_body())
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let response = answer(host.as_deref(), &uri);
                        let seen = Seen { sni, host, method, uri, authorization, body };
                        state.seen.lock().expect("lock").push(seen);
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, server)
}

/// Every name is 127.0.0.1.
#[derive(Debug)]
struct Loopback;

#[async_trait]
impl Dns for Loopback {
    async fn srv(&self, _name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        Ok(Vec::new())
    }
    async fn ips(&self, _host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Ok(vec![IpAddr::from([127, 0, 0, 1])])
    }
}

/// Fixed answers.
#[derive(Debug, Default)]
struct Fixed(HashMap<String, Resolved>);

#[async_trait]
impl ServerResolver for Fixed {
    async fn resolve(&self, server_name: &str) -> Result<Resolved, FederationError> {
        self.0.get(server_name).cloned().ok_or_else(|| FederationError::Unreachable {
            destination: server_name.to_owned(),
            reason: "unknown".to_owned(),
        })
    }
}

fn options(verify: bool) -> FederationOptions {
    let mut options = FederationOptions::new("us.test");
    options.verify_certificates = verify;
    options
}

fn transport(port: u16, verify: bool, https: HttpsOptions) -> HttpsTransport {
    let local = |tls_name: &str, host_header: String, explicit_port| Resolved {
        addresses: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        host_header,
        tls_name: tls_name.to_owned(),
        explicit_port,
    };
    let mut fixed = Fixed::default();
    // An IP literal with a port.
    fixed.0.insert("ip".to_owned(), local("127.0.0.1", format!("127.0.0.1:{port}"), Some(port)));
    // An IP literal without a port: the Host header has none either (the URL has one).
    fixed.0.insert("bare-ip".to_owned(), local("127.0.0.1", "127.0.0.1".to_owned(), Some(port)));
    // As SRV would: no port in the URL, the pinned address carries it.
    fixed.0.insert("srv".to_owned(), local("srv.test", "srv.test".to_owned(), None));
    // A name with an explicit port.
    fixed
        .0
        .insert("named".to_owned(), local("named.test", format!("named.test:{port}"), Some(port)));
    HttpsTransport::with_resolver(&options(verify), https, Arc::new(fixed), Arc::new(Loopback))
        .expect("transport")
}

fn get(path: &str) -> http::Request<Bytes> {
    let mut request = http::Request::new(Bytes::new());
    *request.uri_mut() = path.parse().expect("uri");
    request
}

#[tokio::test]
async fn requests_reach_the_resolved_address_with_the_spec_host_and_sni() {
    let (port, server) = start().await;
    let transport = transport(port, false, HttpsOptions::default());
    let answer = transport.send("ip", get("/_matrix/federation/v1/version")).await.expect("ip");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.body().as_ref(), br#"{"ok":true}"#);
    let answer = transport.send("srv", get("/a?b=c")).await.expect("srv");
    assert_eq!(answer.status(), 200);
    let mut put = http::Request::new(Bytes::from_static(b"{}"));
    *put.method_mut() = http::Method::PUT;
    *put.uri_mut() = "/put".parse().expect("uri");
    put.headers_mut().insert(http::header::AUTHORIZATION, "X-Matrix x".parse().expect("value"));
    transport.send("named", put).await.expect("named");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    // No SNI for an IP address; the server name with its port as Host.
    assert_eq!(seen[0].sni, None);
    assert_eq!(seen[0].host.as_deref(), Some(format!("127.0.0.1:{port}").as_str()));
    assert_eq!(seen[0].uri, "/_matrix/federation/v1/version");
    // Through SRV: SNI and Host are the name, without the port.
    assert_eq!(seen[1].sni.as_deref(), Some("srv.test"));
    assert_eq!(seen[1].host.as_deref(), Some("srv.test"));
    assert_eq!(seen[1].uri, "/a?b=c");
    // Explicit port: Host has it, SNI does not.
    assert_eq!(seen[2].sni.as_deref(), Some("named.test"));
    assert_eq!(seen[2].host.as_deref(), Some(format!("named.test:{port}").as_str()));
    assert_eq!((seen[2].method.as_str(), seen[2].body.as_slice()), ("PUT", b"{}".as_slice()));
    transport.send("bare-ip", get("/b")).await.expect("bare ip");
    assert_eq!(server.seen()[3].host.as_deref(), Some("127.0.0.1"));
    // Unknown destinations are unreachable.
    assert!(matches!(
        transport.send("nowhere", get("/")).await,
        Err(FederationError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn connections_are_reused() {
    let (port, server) = start().await;
    let transport = transport(port, false, HttpsOptions::default());
    for _ in 0..5 {
        transport.send("srv", get("/x")).await.expect("answer");
    }
    assert_eq!(server.seen().len(), 5);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_self_signed_certificate_is_refused_when_verifying() {
    let (port, server) = start().await;
    let transport = transport(port, true, HttpsOptions::default());
    for destination in ["ip", "srv", "named"] {
        let error = transport.send(destination, get("/")).await.expect_err("refused");
        assert!(matches!(error, FederationError::Unreachable { .. }), "{error}");
    }
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn error_statuses_are_answers_and_oversized_bodies_are_refused() {
    let (port, _server) = start().await;
    let https = HttpsOptions { max_response_bytes: 1 << 20, ..HttpsOptions::default() };
    let transport = transport(port, false, https);
    let forbidden = transport.send("srv", get("/forbidden")).await.expect("an answer");
    assert_eq!(forbidden.status(), 403);
    assert!(matches!(
        transport.send("srv", get("/big")).await,
        Err(FederationError::Malformed { .. })
    ));
    // A request may allow more.
    let mut big = get("/big");
    big.extensions_mut().insert(ResponseLimit(4 << 20));
    assert_eq!(transport.send("srv", big).await.expect("allowed").body().len(), 2 << 20);
}

#[tokio::test]
async fn well_known_follows_redirects_but_not_loops() {
    let (port, server) = start().await;
    let https = HttpsOptions::default();
    let well_known = HttpsWellKnown::new(&options(false), &https, Arc::new(Loopback))
        .expect("client")
        .with_port(port);
    let answer = well_known.fetch("localhost").await.expect("answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"m.server":"delegated.test:443"}"#);
    assert_eq!(answer.max_age, Some(Duration::from_secs(600)));
    assert!(well_known.fetch("loop.test").await.is_err());
    assert!(well_known.fetch("far.test").await.is_err());
    let far = server.seen().iter().filter(|s| s.uri.starts_with("/next/")).count();
    assert_eq!(far, 5, "the first request and five redirects at most");
    // Checked certificates: refused.
    let verifying = HttpsWellKnown::new(&options(true), &https, Arc::new(Loopback))
        .expect("client")
        .with_port(port);
    assert!(verifying.fetch("localhost").await.is_err());
}

#[tokio::test]
async fn signed_requests_over_https_authenticate_on_arrival() {
    use crate::client::{ClientOptions, FederationClient};
    use crate::keys::StaticKeys;
    use crate::request::{Received, authenticate};

    let (port, server) = start().await;
    let key = Arc::new(matrix_core::SigningKey::from_seed("1", &[4; 32]));
    let transport = Arc::new(transport(port, false, HttpsOptions::default()));
    let client =
        FederationClient::new(&options(false), key.clone(), transport, ClientOptions::default());
    let mut body = matrix_core::Object::new();
    body.insert("limit", 3);
    client.public_rooms_filtered("named", &body).await.expect("answer");
    let seen = server.seen().pop().expect("a request");
    let mut keys = StaticKeys::default();
    keys.insert("us.test", key.key_id(), key.public_key());
    let received = Received {
        method: &seen.method,
        uri: &seen.uri,
        authorization: seen.authorization.as_deref(),
        body: Some(&seen.body),
    };
    let origin = authenticate(&received, "named", &keys, 0).await.expect("decided");
    assert_eq!(origin.expect("authentic").as_str(), "us.test");
    // The signature is for the destination's server name, not the host it was sent to.
    assert!(authenticate(&received, "named.test", &keys, 0).await.expect("decided").is_err());
}

#[tokio::test]
async fn the_real_resolution_reaches_an_ip_literal() {
    let (port, server) = start().await;
    let transport =
        HttpsTransport::new(&options(false), HttpsOptions::default()).expect("transport");
    let destination = format!("127.0.0.1:{port}");
    let answer = transport.send(&destination, get("/v")).await.expect("answer");
    assert_eq!(answer.status(), 200);
    let seen = server.seen().pop().expect("a request");
    assert_eq!((seen.sni, seen.host), (None, Some(destination)));
}
