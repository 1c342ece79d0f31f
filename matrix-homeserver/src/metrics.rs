//! Prometheus metrics: what the server counts and times, and `GET /metrics` in the Prometheus
//! text format (0.0.4) on a listener of its own ([`crate::Homeserver::serve_metrics`]).
//!
//! Names are Synapse's where Synapse has the same measure (so that its Grafana dashboards
//! work), `matrix_homeserver_*` otherwise; `docs/metrics.md` lists them. Label sets are
//! bounded: a route is labelled with its pattern (`/_matrix/client/v3/rooms/:room/send/...`),
//! never the path asked for, and a path no route matches with one value, `unmatched`.
//!
//! Two kinds of metrics: the HTTP ones belong to one [`crate::Homeserver`] (its middleware
//! counts them when `[metrics]` is enabled); the services' ones ([`service`]: events persisted,
//! syncs waiting, state resolution, federation transactions, storage writes) are process-wide,
//! as Synapse's are, and cost an atomic add or two whether or not anything scrapes them.

mod collectors;
mod histogram;
mod process;

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::MatchedPath;
use matrix_storage::{Applied, ChangeSet, Durable, Storage};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) use collectors::{CacheStats, Caches, FederationQueue};
pub(crate) use histogram::Histogram;

/// The `Content-Type` of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The label value of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// One homeserver's metrics: its registry (the process-wide metrics registered in it too)
/// and the HTTP families its middleware fills.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    http: HttpMetrics,
}

impl Metrics {
    /// The registry of a homeserver: its HTTP metrics, the services' (process-wide) ones, the
    /// process's, and `collectors` (read at each scrape: caches, the federation queue).
    pub(crate) fn new(collectors: Vec<Box<dyn prometheus_client::collector::Collector>>) -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::default();
        http.register(&mut registry);
        service().register(&mut registry);
        registry.register_collector(Box::new(process::Process));
        for collector in collectors {
            registry.register_collector(collector);
        }
        Metrics { registry, http }
    }

    /// Everything, in the Prometheus text format.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts a request from its start: its in-flight gauge until the returned guard finishes
    /// (or is dropped, for a request whose connection went away).
    pub(crate) fn request(
        &self,
        method: &http::Method,
        path: Option<&MatchedPath>,
    ) -> InFlight<'_> {
        let route = RouteLabels { method: method_label(method), servlet: Servlet(path.cloned()) };
        self.http.requests_received.get_or_create(&route).inc();
        self.http.in_flight.get_or_create(&route).inc();
        InFlight { http: &self.http, route, started: Instant::now() }
    }
}

/// A request being answered (see [`Metrics::request`]).
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    http: &'a HttpMetrics,
    route: RouteLabels,
    started: Instant,
}

impl InFlight<'_> {
    /// The request was answered with `status`.
    pub(crate) fn finish(self, status: u16) {
        let http = self.http;
        let elapsed = self.started.elapsed();
        let method = self.route.method;
        http.responses.get_or_create(&CodeLabels { method, code: status }).inc();
        let tagged = TaggedLabels { method, servlet: self.route.servlet.clone(), tag: "" };
        http.response_count.get_or_create(&tagged).inc();
        let timed =
            TimedLabels { method, servlet: self.route.servlet.clone(), tag: "", code: status };
        http.response_time.get_or_create(&timed).observe(elapsed);
        // The in-flight gauge goes down on drop.
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.http.in_flight.get_or_create(&self.route).dec();
    }
}

/// The method as a label: the standard ones by name, any other as `OTHER` (a client chooses
/// the method, so its values are bounded here).
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// The route a request matched: its pattern, shared with the router (no copy per request).
#[derive(Debug, Clone)]
struct Servlet(Option<MatchedPath>);

impl Servlet {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }
}

impl PartialEq for Servlet {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Servlet {}

impl Hash for Servlet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Servlet {
    /// The pattern with its parameters written `:name` (`/rooms/:room/send/:kind/:txn`): no
    /// braces in label values, which simple readers of the text format take for the end of
    /// the label set. Done at each scrape, not per request.
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let pattern: String = self
            .as_str()
            .chars()
            .filter_map(|c| match c {
                '{' => Some(':'),
                '}' => None,
                other => Some(other),
            })
            .collect();
        EncodeLabelValue::encode(&pattern.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    servlet: Servlet,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabels {
    method: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaggedLabels {
    method: &'static str,
    servlet: Servlet,
    tag: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimedLabels {
    method: &'static str,
    servlet: Servlet,
    tag: &'static str,
    code: u16,
}

/// The HTTP metrics, as Synapse names them (`synapse/http/request_metrics.py`).
#[derive(Debug, Default)]
struct HttpMetrics {
    requests_received: Family<RouteLabels, Counter>,
    in_flight: Family<RouteLabels, Gauge>,
    responses: Family<CodeLabels, Counter>,
    response_count: Family<TaggedLabels, Counter>,
    response_time: Family<TimedLabels, Histogram>,
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "synapse_http_server_requests_received",
            "Requests received, by method and route",
            self.requests_received.clone(),
        );
        registry.register(
            "synapse_http_server_in_flight_requests_count",
            "Requests being answered, by method and route",
            self.in_flight.clone(),
        );
        registry.register(
            "synapse_http_server_responses",
            "Responses sent, by method and status code",
            self.responses.clone(),
        );
        registry.register(
            "synapse_http_server_response_count",
            "Responses sent, by method and route",
            self.response_count.clone(),
        );
        registry.register(
            "synapse_http_server_response_time_seconds",
            "Time to answer a request, by method, route and status code",
            self.response_time.clone(),
        );
    }
}

/// The services' metrics, one set per process (see the module's docs).
#[derive(Debug, Default)]
pub(crate) struct ServiceMetrics {
    /// Timeline events stored (ours and received).
    pub(crate) events_persisted: Counter,
    /// Syncs (`/sync` and sliding sync) being answered or waiting.
    pub(crate) syncs_in_flight: Gauge,
    /// State resolutions of a room's forks.
    pub(crate) state_resolution: Histogram,
    /// Inbound federation transactions (`PUT /send/{txnId}`), from start to answer.
    pub(crate) inbound_transaction: Histogram,
    /// PDUs received in inbound transactions.
    pub(crate) received_pdus: Counter,
    /// EDUs received in inbound transactions.
    pub(crate) received_edus: Counter,
    /// Change sets written to storage, by backend and operation.
    storage: Family<StorageLabels, Histogram>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StorageLabels {
    backend: &'static str,
    op: &'static str,
}

impl ServiceMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "synapse_storage_events_persisted_events",
            "Timeline events stored (ours and received)",
            self.events_persisted.clone(),
        );
        registry.register(
            "matrix_homeserver_sync_in_flight",
            "Syncs being answered or waiting for something to report",
            self.syncs_in_flight.clone(),
        );
        registry.register(
            "matrix_homeserver_state_resolution_seconds",
            "Time to resolve the state of a room's forks",
            self.state_resolution.clone(),
        );
        registry.register(
            "matrix_homeserver_federation_transaction_seconds",
            "Time to process an inbound federation transaction",
            self.inbound_transaction.clone(),
        );
        registry.register(
            "synapse_federation_server_received_pdus",
            "PDUs received in federation transactions",
            self.received_pdus.clone(),
        );
        registry.register(
            "synapse_federation_server_received_edus",
            "EDUs received in federation transactions",
            self.received_edus.clone(),
        );
        registry.register(
            "matrix_homeserver_storage_apply_seconds",
            "Time to write a change set, by storage backend and operation",
            self.storage.clone(),
        );
    }

    /// Counts the PDUs and EDUs of an inbound transaction.
    pub(crate) fn transaction_received(&self, pdus: usize, edus: usize) {
        self.received_pdus.inc_by(u64::try_from(pdus).unwrap_or(u64::MAX));
        self.received_edus.inc_by(u64::try_from(edus).unwrap_or(u64::MAX));
    }

    /// Counts a sync until the returned guard is dropped.
    pub(crate) fn sync_started(&self) -> SyncInFlight {
        self.syncs_in_flight.inc();
        SyncInFlight(self.syncs_in_flight.clone())
    }

    /// [`Storage::apply_ordered`], timed: `op="apply"` until the change set is applied,
    /// `op="commit"` until it is durable (when the caller awaits that), by backend.
    pub(crate) async fn apply_ordered(
        &self,
        storage: &dyn Storage,
        changes: ChangeSet,
    ) -> matrix_storage::Result<(Applied, Durable)> {
        let backend = storage.backend();
        let started = Instant::now();
        let (applied, durable) = storage.apply_ordered(changes).await?;
        let apply = self.storage.get_or_create(&StorageLabels { backend, op: "apply" }).clone();
        apply.observe(started.elapsed());
        let commit = self.storage.get_or_create(&StorageLabels { backend, op: "commit" }).clone();
        let durable: Durable = Box::pin(async move {
            let result = durable.await;
            commit.observe(started.elapsed());
            result
        });
        Ok((applied, durable))
    }
}

/// A sync being answered (see [`ServiceMetrics::sync_started`]).
#[derive(Debug)]
pub(crate) struct SyncInFlight(Gauge);

impl Drop for SyncInFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The process-wide service metrics.
pub(crate) fn service() -> &'static ServiceMetrics {
    static SERVICE: LazyLock<ServiceMetrics> = LazyLock::new(ServiceMetrics::default);
    &SERVICE
}

/// The metrics of a homeserver, when they are enabled.
pub(crate) type Shared = Option<Arc<Metrics>>;
