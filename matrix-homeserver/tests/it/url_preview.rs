//! URL previews: off by default (404 `M_UNRECOGNIZED`, as Synapse); on, a page's OpenGraph
//! metadata with its image re-hosted as our media; and the refusals: addresses on the
//! blocklist named directly, reached through a host name or through a redirect (nothing is
//! ever connected to), answers too large, of the wrong type, too slow, or malformed, more
//! fetches at once than allowed, more requests than the rate limit.
//!
//! Nothing leaves the machine: pages come from a small HTTP server on 127.0.0.1 (which the
//! tests' allowlist lets through), host names from a fixed resolver, and the "forbidden"
//! addresses are a listener on 127.0.0.2 that counts whoever connects to it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use matrix_homeserver::testing::TestHomeserver;
use matrix_homeserver::{Config, HostResolver, RateLimit, ResolveError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Client, errcode};

/// Host names with fixed addresses.
#[derive(Debug, Default)]
struct FixedResolver(HashMap<String, Vec<IpAddr>>);

impl FixedResolver {
    fn with(mut self, name: &str, ips: &[&str]) -> Self {
        let ips = ips.iter().map(|ip| ip.parse().expect("an address")).collect();
        self.0.insert(name.to_owned(), ips);
        self
    }
}

#[async_trait::async_trait]
impl HostResolver for FixedResolver {
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        match self.0.get(host) {
            Some(ips) => Ok(ips.clone()),
            None => Err(ResolveError(format!("{host} is not a test name"))),
        }
    }
}

/// One answer of the test origin: its head, then (after `delay`) its body.
struct Reply {
    head: String,
    body: Vec<u8>,
    delay: Duration,
}

fn reply(status: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
    let body = body.into();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    Reply { head, body, delay: Duration::ZERO }
}

fn html(body: &str) -> Reply {
    reply("200 OK", "text/html; charset=utf-8", body)
}

fn redirect(location: &str) -> Reply {
    let head = format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    Reply { head, body: Vec::new(), delay: Duration::ZERO }
}

type Routes = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// An HTTP server on `bind` answering each request's path with `routes`; answers its
/// address and the paths asked, in order.
async fn origin(bind: &str, routes: Routes) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind(bind).await.expect("a port");
    let address = listener.local_addr().expect("its address");
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = routes.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                log.lock().expect("the log").push(path.clone());
                let answer = routes(&path);
                let _ = stream.write_all(answer.head.as_bytes()).await;
                tokio::time::sleep(answer.delay).await;
                let _ = stream.write_all(&answer.body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, asked)
}

/// A listener on `bind` that counts connections and answers nothing: what must never be
/// reached.
async fn trap(bind: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(bind).await.expect("a port");
    let address = listener.local_addr().expect("its address");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (address, count)
}

/// The test settings with previews on; 127.0.0.1 (the test origin) allowlisted if
/// `allow_loopback`.
fn enabled(allow_loopback: bool) -> Config {
    let mut config = TestHomeserver::config();
    config.url_preview.enabled = true;
    if allow_loopback {
        config.url_preview.ip_allowlist = vec!["127.0.0.1".parse().expect("an address")];
    }
    config
}

/// A server with `config` and `resolver`, and a logged-in client of it.
async fn server(config: Config, resolver: FixedResolver) -> (TestHomeserver, Client) {
    let server = TestHomeserver::start_with_preview_resolver(config, Arc::new(resolver)).await;
    let alice = server.register_user("alice", "secret").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    (server, client)
}

/// `GET preview_url?url=<url>` on the authenticated path.
async fn preview(client: &Client, url: &str) -> (u16, Value) {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", url)
        .append_pair("ts", "1700000000000")
        .finish();
    client.get(&format!("/_matrix/client/v1/media/preview_url?{query}")).await
}

/// A 3 × 2 PNG.
fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 80, y as u8 * 120, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encodes");
    out.into_inner()
}

const PAGE: &str = r#"<!doctype html><html><head>
    <title>Not the title</title>
    <meta property="og:title" content="Tea &amp; cake">
    <meta property="og:description" content="All about
        tea.">
    <meta property="og:image" content="/tea.png">
    <meta property="og:image:width" content="9999">
    <meta property="og:site_name" content="Tea Times">
    <meta property="og:type" content="article">
    <meta property="og:url" content="https://tea.example/article">
    </head><body><p>Hello</p></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_are_off_by_default_and_not_claimed() {
    let server = TestHomeserver::start().await;
    assert!(!server.homeserver().config().url_preview.enabled);
    let alice = server.register_user("alice", "secret").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    for path in [
        "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.org",
        "/_matrix/media/v3/preview_url?url=https%3A%2F%2Fexample.org",
    ] {
        let (status, body) = client.get(path).await;
        assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"), "{path}: {body}");
        // As Synapse: the route is not there, for anybody.
        let (status, body) = Client::new(&server).get(path).await;
        assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"), "{path}: {body}");
    }
    let (status, body) = client.get("/_matrix/client/v1/media/config").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only m.upload.size: {body}");
    let (status, body) = client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(status, 200);
    assert!(!body.to_string().contains("preview"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_previewed_from_its_opengraph_tags_with_its_image_rehosted() {
    let image = png();
    let served = image.clone();
    let (address, asked) = origin(
        "127.0.0.1:0",
        Arc::new(move |path| match path {
            "/article" => html(PAGE),
            "/tea.png" => reply("200 OK", "image/png", served.clone()),
            "/fallbacks" => html(
                "<html><head><title> Plain\n page </title>\
                 <meta name='description' content='Described'></head>\
                 <body><img src='tea.png'></body></html>",
            ),
            _ => reply("404 Not Found", "text/plain", "no"),
        }),
    )
    .await;
    let resolver = FixedResolver::default().with("tea.test", &["127.0.0.1"]);
    let (server, client) = server(enabled(true), resolver).await;

    let url = format!("http://{address}/article#section");
    let (status, body) = preview(&client, &url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["og:title"], "Tea & cake");
    assert_eq!(body["og:description"], "All about tea.");
    assert_eq!(body["og:site_name"], "Tea Times");
    assert_eq!(body["og:type"], "article");
    assert_eq!(body["og:url"], "https://tea.example/article");
    crate::spec::check("authed-content-repo.yaml", "/media/preview_url", "get", 200, &body);
    // The image's size is the image's, not what the page claimed.
    assert_eq!(body["og:image:width"], 3);
    assert_eq!(body["og:image:height"], 2);
    assert_eq!(body["og:image:type"], "image/png");
    assert_eq!(body["matrix:image:size"], image.len());
    let mxc = body["og:image"].as_str().expect("an image");
    let path = mxc.strip_prefix("mxc://").expect("an mxc URI");
    assert!(path.starts_with("localhost/"), "{mxc}");
    let download = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/download/{path}", server.base_url()))
        .bearer_auth(client.token.as_deref().expect("a token"))
        .send()
        .await
        .expect("answers");
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(download.bytes().await.expect("a body").to_vec(), image);
    assert_eq!(*asked.lock().expect("the log"), ["/article", "/tea.png"], "no fragment sent");

    // Asked again (on the legacy path too): from the cache, nothing fetched.
    let (status, again) = preview(&client, &url).await;
    assert_eq!((status, &again), (200, &body));
    let legacy = format!(
        "/_matrix/media/v3/preview_url?url={}",
        form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let (status, again) = client.get(&legacy).await;
    assert_eq!((status, &again), (200, &body));
    assert_eq!(asked.lock().expect("the log").len(), 2);

    // Without OpenGraph tags: the title, the description and the first image; through a
    // host name whose (allowlisted) address is the one connected to.
    let port = address.port();
    let (status, body) = preview(&client, &format!("http://tea.test:{port}/fallbacks")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["og:title"], "Plain page");
    assert_eq!(body["og:description"], "Described");
    assert!(body["og:image"].as_str().is_some_and(|i| i.starts_with("mxc://localhost/")));

    // An image URL is previewed as the image.
    let (status, body) = preview(&client, &format!("http://{address}/tea.png")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["og:image:width"], &body["og:image:height"]), (&3.into(), &2.into()));
    assert_eq!(body["og:image:type"], "image/png");

    // Who may ask, and how.
    let (status, body) = Client::new(&server).get(&legacy).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    let (status, body) = client.get("/_matrix/client/v1/media/preview_url").await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    for bad in ["ftp://example.org/", "file:///etc/passwd", "not a url", "data:text/html,hi"] {
        let (status, body) = preview(&client, bad).await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_addresses_are_refused_whether_named_or_resolved() {
    let (trap_address, reached) = trap("127.0.0.2:0").await;
    let port = trap_address.port();
    let resolver = FixedResolver::default()
        .with("localhost", &["127.0.0.1", "::1"])
        .with("private.test", &["10.0.0.1"])
        .with("loopback.test", &["127.0.0.2"])
        .with("mapped.test", &["::ffff:127.0.0.2"])
        .with("mixed.test", &["93.184.215.14", "127.0.0.2"])
        .with("metadata.test", &["169.254.169.254"]);
    // The defaults: nothing allowlisted.
    let (_server, client) = server(enabled(false), resolver).await;
    for literal in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.0.0.2:{port}/"),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://0x7f.0.0.2:{port}/"),
        format!("http://2130706434:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.2]:{port}/"),
        "https://[fd00::1]/".to_owned(),
    ] {
        let (status, body) = preview(&client, &literal).await;
        assert_eq!((status, errcode(&body)), (403, "M_UNKNOWN"), "{literal}: {body}");
        assert_eq!(body["error"], "IP address blocked", "{literal}");
    }
    for name in
        ["localhost", "private.test", "loopback.test", "mapped.test", "mixed.test", "metadata.test"]
    {
        let url = format!("http://{name}:{port}/");
        let (status, body) = preview(&client, &url).await;
        // As Synapse: a name with a blocked address is a resolution failure.
        assert_eq!((status, errcode(&body)), (502, "M_UNKNOWN"), "{url}: {body}");
        let error = "DNS resolution failure during URL preview generation";
        assert_eq!(body["error"], error, "{url}");
    }
    let (status, body) = preview(&client, "http://unknown.test/").await;
    assert_eq!((status, errcode(&body)), (502, "M_UNKNOWN"), "{body}");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "a blocked address was connected to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_checked_each_time() {
    let (trap_address, reached) = trap("127.0.0.2:0").await;
    let port = trap_address.port();
    let (address, asked) = origin(
        "127.0.0.1:0",
        Arc::new(move |path| match path {
            "/page" => html("<title>Arrived</title>"),
            "/to-page" => redirect("/page"),
            "/to-literal" => redirect(&format!("http://127.0.0.2:{port}/")),
            "/to-name" => redirect(&format!("http://private.test:{port}/")),
            "/to-mapped" => redirect(&format!("http://[::ffff:127.0.0.2]:{port}/")),
            "/to-ftp" => redirect("ftp://example.org/"),
            "/loop" => redirect("/loop"),
            _ => reply("404 Not Found", "text/plain", "no"),
        }),
    )
    .await;
    let resolver = FixedResolver::default().with("private.test", &["127.0.0.2"]);
    let (_server, client) = server(enabled(true), resolver).await;

    let (status, body) = preview(&client, &format!("http://{address}/to-page")).await;
    assert_eq!((status, &body["og:title"]), (200, &"Arrived".into()), "{body}");
    for (path, want) in
        [("/to-literal", 403), ("/to-mapped", 403), ("/to-name", 502), ("/to-ftp", 502)]
    {
        let (status, body) = preview(&client, &format!("http://{address}{path}")).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    let (status, body) = preview(&client, &format!("http://{address}/loop")).await;
    assert_eq!((status, errcode(&body)), (502, "M_UNKNOWN"), "{body}");
    let loops = asked.lock().expect("the log").iter().filter(|p| *p == "/loop").count();
    assert_eq!(loops, 6, "the first request and max_redirects (5) more");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "a redirect reached a blocked address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_wrong_slow_and_malformed_answers() {
    let big = format!("<title>big</title>{}", "x".repeat(100 * 1024));
    let (address, _) = origin(
        "127.0.0.1:0",
        Arc::new(move |path| match path {
            "/big" => html(&big),
            "/big-unsized" => Reply {
                head: "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
                    .to_owned(),
                body: big.clone().into_bytes(),
                delay: Duration::ZERO,
            },
            "/plain" => reply("200 OK", "text/plain", "<title>not html</title>"),
            "/video" => reply("200 OK", "video/mp4", "....".as_bytes()),
            "/untyped" => Reply {
                head: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
                    .to_owned(),
                body: b"hi".to_vec(),
                delay: Duration::ZERO,
            },
            "/malformed" => reply(
                "200 OK",
                "text/html",
                &b"\xff\xfe<html\0><meta property='og:title' content='Still \xff found'<<title></x>"[..],
            ),
            "/lying-image" => reply("200 OK", "image/png", "<html>not an image</html>"),
            "/broken-image-page" => html("<meta property='og:image' content='/lying-image'>"),
            "/slow" => Reply { delay: Duration::from_secs(5), ..html("<title>slow</title>") },
            "/gone" => reply("410 Gone", "text/html", "<title>gone</title>"),
            _ => reply("404 Not Found", "text/plain", "no"),
        }),
    )
    .await;
    let mut config = enabled(true);
    config.url_preview.max_response_bytes = 64 * 1024;
    config.url_preview.timeout_secs = 1;
    config.url_preview.max_concurrent_fetches = 1;
    let (_server, client) = server(config, FixedResolver::default()).await;
    let url = |path: &str| format!("http://{address}{path}");

    for path in ["/big", "/big-unsized"] {
        let (status, body) = preview(&client, &url(path)).await;
        assert_eq!((status, errcode(&body)), (502, "M_TOO_LARGE"), "{path}: {body}");
    }
    for (path, media_type) in [
        ("/plain", "text/plain"),
        ("/video", "video/mp4"),
        ("/untyped", "application/octet-stream"),
    ] {
        let (status, body) = preview(&client, &url(path)).await;
        assert_eq!((status, errcode(&body)), (502, "M_UNKNOWN"), "{path}: {body}");
        let want =
            format!("Requested file's content type not allowed for this operation: {media_type}");
        assert_eq!(body["error"], want.as_str());
    }
    let (status, body) = preview(&client, &url("/malformed")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["og:title"].as_str().is_some_and(|t| t.starts_with("Still")), "{body}");
    // An image that is not one: no preview of it, and no image in a page's preview.
    let (status, body) = preview(&client, &url("/lying-image")).await;
    assert_eq!((status, body), (200, serde_json::json!({})));
    let (status, body) = preview(&client, &url("/broken-image-page")).await;
    assert_eq!((status, body), (200, serde_json::json!({})));
    let (status, body) = preview(&client, &url("/gone")).await;
    assert_eq!((status, errcode(&body)), (502, "M_UNKNOWN"), "{body}");
    assert_eq!(body["error"], "Got error 410");

    let started = std::time::Instant::now();
    let slow = {
        let (client, url) = (client.clone(), url("/slow"));
        tokio::spawn(async move { preview(&client, &url).await })
    };
    // While the slow one holds the only fetch, another is turned away (not queued).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = preview(&client, &url("/other")).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    let (status, body) = slow.await.expect("the slow preview");
    assert_eq!((status, errcode(&body)), (502, "M_UNKNOWN"), "{body}");
    assert_eq!(body["error"], "Requested file took too long to download");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_are_rate_limited_per_user() {
    let mut config = enabled(false);
    config.rate_limits = matrix_homeserver::RateLimitsConfig::default();
    config.rate_limits.url_preview = RateLimit::new(0.001, 2.0);
    let (_server, client) = server(config, FixedResolver::default()).await;
    for _ in 0..2 {
        let (status, _) = preview(&client, "http://10.0.0.1/").await;
        assert_eq!(status, 403);
    }
    let (status, body) = preview(&client, "http://10.0.0.1/").await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"), "{body}");
    crate::spec::check("authed-content-repo.yaml", "/media/preview_url", "get", 429, &body);
}
