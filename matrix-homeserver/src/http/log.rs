//! A log line per request (target `matrix_homeserver::request`): method, path (with its ids;
//! the query, where access tokens may travel, is left out), status, milliseconds, and the
//! user who asked. Bodies are never logged. The same middleware counts the request in the
//! Prometheus metrics when they are enabled (by route pattern, never by path or user).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Who made a request, filled in by authentication for the log line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requester(Arc<Mutex<Option<String>>>);

impl Requester {
    pub(crate) fn set(&self, user: &str) {
        let mut slot = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(user.to_owned());
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

pub(crate) async fn log_request(
    State(state): State<Arc<crate::State>>,
    mut request: Request,
    next: Next,
) -> Response {
    let in_flight = state
        .metrics
        .as_ref()
        .map(|m| m.request(request.method(), request.extensions().get::<MatchedPath>()));
    let requester = Requester::default();
    request.extensions_mut().insert(requester.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if let Some(in_flight) = in_flight {
        in_flight.finish(status);
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let user = requester.get();
    let user = user.as_deref().unwrap_or("-");
    if status >= 500 {
        tracing::warn!(target: "matrix_homeserver::request", %method, path, status, ms, user, "request failed");
    } else {
        tracing::info!(target: "matrix_homeserver::request", %method, path, status, ms, user, "request");
    }
    response
}
