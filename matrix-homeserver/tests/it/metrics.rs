//! Prometheus metrics: `GET /metrics` on the metrics listener, read with a parser of the
//! Prometheus text format; the counters move with the requests made, by route pattern.

use std::collections::HashMap;

use matrix_homeserver::testing::TestHomeserver;
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::json;

use crate::{Backend, Client, errcode};

const V3: &str = "/_matrix/client/v3";
const SEND_ROUTE: &str = "/_matrix/client/v3/rooms/:room/send/:kind/:txn";

/// A server with metrics on, and the base URL of its metrics listener.
async fn start(backend: Backend) -> Option<(crate::Server, String)> {
    let server = crate::start_changed(backend, |c| c.metrics.enabled = true).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let homeserver = server.homeserver().clone();
    tokio::spawn(async move {
        let _ = homeserver.serve_metrics(listener, std::future::pending()).await;
    });
    Some((server, format!("http://{address}")))
}

/// The text of `GET /metrics`, after checking its content type.
async fn scrape_text(metrics: &str) -> String {
    let response = reqwest::get(format!("{metrics}/metrics")).await.expect("the scrape answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ASCII").to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.text().await.expect("a body")
}

async fn scrape(metrics: &str) -> Scrape {
    let text = scrape_text(metrics).await;
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the Prometheus text format")
}

/// The samples of `name` whose labels include `labels`.
fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The value of the one counter or gauge `name` with `labels` (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(scrape, name, labels);
    assert!(found.len() <= 1, "{name} {labels:?}: {} samples", found.len());
    match found.first().map(|s| &s.value) {
        None => 0.0,
        Some(Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v)) => *v,
        Some(other) => panic!("{name} is not a counter or gauge: {other:?}"),
    }
}

/// The observation count of the histogram `name` with `labels` (its `_count`), after
/// checking that the parser read its buckets as a histogram, ending with `+Inf` at that count.
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let count = value(scrape, &format!("{name}_count"), labels);
    if count > 0.0 {
        let buckets: Vec<_> = find(scrape, name, labels)
            .into_iter()
            .flat_map(|s| match &s.value {
                Metric::Histogram(buckets) => buckets.clone(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect();
        let infinite = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf");
        assert_eq!(infinite.count, count, "{name} {labels:?}");
    }
    count
}

async fn requests_are_counted_by_route_and_status(backend: Backend) {
    let Some((server, metrics)) = start(backend).await else { return };
    let client = Client::new(&server);
    let before = scrape(&metrics).await;

    // Register over HTTP (the 401 that lists the flows, then the 200).
    let register = json!({"username": "alice", "password": "a long secret"});
    let (status, body) = client.post(&format!("{V3}/register"), &register).await;
    assert_eq!(status, 401, "{body}");
    let session = body["session"].as_str().expect("a session");
    let mut register = register;
    register["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, body) = client.post(&format!("{V3}/register"), &register).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("a token").to_owned();
    let user_id = body["user_id"].as_str().expect("a user id").to_owned();
    let alice = client.clone().with_token(&token);
    let (status, body) = alice.post(&format!("{V3}/createRoom"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("a room id").to_owned();
    const SENT: usize = 3;
    for i in 0..SENT {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/t{i}");
        let (status, body) = alice.put(&path, &json!({"msgtype": "m.text", "body": "hi"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = alice.get(&format!("{V3}/sync?timeout=0")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client.get("/_matrix/client/v3/no/such/endpoint").await;
    assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"));

    let after = scrape(&metrics).await;
    let send = [("method", "PUT"), ("servlet", SEND_ROUTE)];
    let received = "synapse_http_server_requests_received_total";
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(moved(received, &send), SENT as f64);
    let register_route = [("method", "POST"), ("servlet", "/_matrix/client/v3/register")];
    assert_eq!(moved(received, &register_route), 2.0);
    let unmatched = [("method", "GET"), ("servlet", "unmatched")];
    assert_eq!(moved(received, &unmatched), 1.0);
    // Every response by route and status: the sends' 200s, the registration's 401 and 200.
    let timed = "synapse_http_server_response_time_seconds";
    let send_ok = [("method", "PUT"), ("servlet", SEND_ROUTE), ("code", "200"), ("tag", "")];
    assert_eq!(histogram_count(&after, timed, &send_ok), SENT as f64);
    for code in ["401", "200"] {
        let labels = [register_route[0], register_route[1], ("code", code)];
        assert_eq!(histogram_count(&after, timed, &labels), 1.0, "{code}");
    }
    let not_found = [("servlet", "unmatched"), ("code", "404")];
    assert_eq!(histogram_count(&after, timed, &not_found), 1.0);
    let count = "synapse_http_server_response_count_total";
    assert_eq!(moved(count, &[send[0], send[1], ("tag", "")]), SENT as f64);
    let responses = "synapse_http_server_responses_total";
    assert!(moved(responses, &[("method", "PUT"), ("code", "200")]) >= SENT as f64);
    let sync_route = [("method", "GET"), ("servlet", "/_matrix/client/v3/sync")];
    assert_eq!(moved(received, &sync_route), 1.0);
    // Nothing is in flight but the scrape's own listener (which is not counted).
    assert_eq!(value(&after, "synapse_http_server_in_flight_requests_count", &send), 0.0);

    // The services' metrics (process-wide: other tests add to them, never take away).
    assert!(moved("synapse_storage_events_persisted_events_total", &[]) >= SENT as f64);
    let backend_name = match backend {
        Backend::Memory => "memory",
        Backend::Sled => "sled",
        Backend::Postgres => "postgres",
    };
    for op in ["apply", "commit"] {
        let labels = [("backend", backend_name), ("op", op)];
        let name = "matrix_homeserver_storage_apply_seconds";
        let grew = histogram_count(&after, name, &labels) - histogram_count(&before, name, &labels);
        assert!(grew >= SENT as f64, "{op}: {grew}");
    }
    assert!(!find(&after, "matrix_homeserver_sync_in_flight", &[]).is_empty());
    let events = [("name", "events")];
    assert!(value(&after, "synapse_util_caches_cache", &events) > 0.0);
    assert!(
        value(&after, "synapse_util_caches_cache_hits", &events)
            <= value(&after, "synapse_util_caches_cache", &events)
    );
    #[cfg(target_os = "linux")]
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(value(&after, name, &[]) > 0.0, "{name}");
    }

    // No token, user id, room id or path with ids in any label.
    let text = scrape_text(&metrics).await;
    for secret in [token.as_str(), user_id.as_str(), room.as_str(), "no/such"] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}

/// Sync long-polls waiting are in the in-flight gauges until they answer.
async fn syncs_waiting_are_in_flight(backend: Backend) {
    let Some((server, metrics)) = start(backend).await else { return };
    let alice = server.register_user("alice", "a long secret").await;
    let client = Client::new(&server).with_token(&alice.access_token);
    let (status, body) = client.get(&format!("{V3}/sync")).await;
    assert_eq!(status, 200, "{body}");
    let since = body["next_batch"].as_str().expect("a token").to_owned();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.get(&format!("{V3}/sync?timeout=5000&since={since}")).await }
    });
    let sync = [("method", "GET"), ("servlet", "/_matrix/client/v3/sync")];
    let in_flight = "synapse_http_server_in_flight_requests_count";
    let mut seen = false;
    for _ in 0..100 {
        let now = scrape(&metrics).await;
        if value(&now, in_flight, &sync) == 1.0 {
            assert!(value(&now, "matrix_homeserver_sync_in_flight", &[]) >= 1.0);
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "the waiting sync never showed in flight");
    // Wake it: a room created is something to report.
    server.create_room(&alice, None).await;
    let (status, _) = waiting.await.expect("the sync task");
    assert_eq!(status, 200);
    assert_eq!(value(&scrape(&metrics).await, in_flight, &sync), 0.0);
}

crate::on_every_backend!(requests_are_counted_by_route_and_status, syncs_waiting_are_in_flight);

/// Metrics are off by default: nothing is counted and `serve_metrics` refuses to serve.
#[tokio::test]
async fn metrics_are_off_by_default() {
    let config = TestHomeserver::config();
    assert!(!config.metrics.enabled);
    assert_eq!(config.metrics.listen, "127.0.0.1:9000");
    let server = TestHomeserver::start_with(config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let served = server.homeserver().clone().serve_metrics(listener, std::future::pending());
    let error = tokio::time::timeout(std::time::Duration::from_secs(5), served)
        .await
        .expect("returns at once")
        .expect_err("refused");
    assert!(error.to_string().contains("not enabled"), "{error}");
    // The listener was dropped with the refusal: nothing answers there.
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

/// The metrics listener answers `/metrics` only, and only `GET` of it.
#[tokio::test]
async fn the_metrics_listener_serves_metrics_only() {
    let Some((server, metrics)) = start(Backend::Memory).await else { return };
    let (status, _) = Client::new(&server).get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    let http = reqwest::Client::new();
    let other =
        http.get(format!("{metrics}/_matrix/client/versions")).send().await.expect("answers");
    assert_eq!(other.status(), 404);
    let post = http.post(format!("{metrics}/metrics")).send().await.expect("answers");
    assert_eq!(post.status(), 405);
    // Every family has its HELP and TYPE, and every sample parses as a number.
    let text = scrape_text(&metrics).await;
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line["# TYPE ".len()..].split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { panic!("{line}") };
        types.insert(name, kind);
    }
    assert_eq!(types.get("synapse_http_server_requests_received_total"), Some(&"counter"));
    assert_eq!(types.get("synapse_http_server_response_time_seconds"), Some(&"histogram"));
    assert_eq!(types.get("synapse_http_server_in_flight_requests_count"), Some(&"gauge"));
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let number = line.rsplit(' ').next().unwrap_or_default();
        assert!(number.parse::<f64>().is_ok() || number == "+Inf", "{line}");
    }
}

/// Every metric `docs/grafana-dashboard.json` queries is in a scrape of a server with
/// federation on (and the dashboard is valid JSON).
#[tokio::test]
async fn the_dashboard_queries_only_metrics_that_exist() {
    let net = matrix_homeserver::testing::TestFederation::start_with(&["a.test"], |_| {
        let mut config = TestHomeserver::config();
        config.metrics.enabled = true;
        config
    })
    .await;
    let server = net.server("a.test");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let metrics = format!("http://{}", listener.local_addr().expect("its address"));
    let homeserver = server.homeserver().clone();
    tokio::spawn(async move {
        let _ = homeserver.serve_metrics(listener, std::future::pending()).await;
    });
    let (status, _) = Client::new(server).get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    // A room: events stored (the storage histograms have samples from the first write on).
    let alice = server.register_user("alice", "a long secret").await;
    server.create_room(&alice, None).await;
    let text = scrape_text(&metrics).await;
    let families: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();

    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    )))
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("an expression").to_owned());
        }
    }
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let mut checked = 0;
    for expr in &exprs {
        let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in words.filter(|w| {
            ["synapse_", "matrix_homeserver_", "process_"].iter().any(|p| w.starts_with(p))
        }) {
            let family = word.strip_suffix("_bucket").unwrap_or(word);
            let kind = families.get(family);
            assert!(kind.is_some(), "{word} (in {expr}) is not in the scrape");
            if family != word {
                assert_eq!(kind, Some(&"histogram"), "{word}");
            }
            checked += 1;
        }
    }
    assert!(checked >= exprs.len(), "every query names a metric");
}
