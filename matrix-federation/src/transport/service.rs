//! Transports and tower services, both ways, so that tower's layers (timeouts, concurrency
//! limits, load shedding, tracing) can wrap the requests we send to other servers.
//!
//! [`TransportService`] makes any [`Transport`] a tower [`Service`]; [`ServiceTransport`] makes
//! a tower service (usually layers around a `TransportService`) a [`Transport`] again, which is
//! what [`FederationClient`](crate::client::FederationClient) and the sender take. The
//! destination travels in the request's extensions as a [`Destination`].
//!
//! Requests are signed before they reach a transport (the X-Matrix signature covers the
//! destination's name, which the client knows), so a layer sees them signed and must not
//! change their method, path, query or body.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use matrix_federation::transport::service::{ServiceTransport, TransportService};
//! use matrix_federation::transport::Transport;
//! use tower::ServiceBuilder;
//!
//! fn limited(inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
//!     let stack = ServiceBuilder::new()
//!         .concurrency_limit(64)
//!         .timeout(Duration::from_secs(30))
//!         .service(TransportService::new(inner));
//!     Arc::new(ServiceTransport::new(stack))
//! }
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use tower_service::Service;

use super::Transport;
use crate::FederationError;

/// The error type of tower's layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server a request goes to, in the request's extensions: how a tower service carries what
/// [`Transport::send`] takes as an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(pub String);

/// A [`Transport`] as a tower service. A request must carry its [`Destination`] (which
/// [`ServiceTransport`] puts there); one without it is refused as unreachable.
#[derive(Debug)]
pub struct TransportService<T: ?Sized>(Arc<T>);

impl<T: ?Sized> TransportService<T> {
    /// Wraps `transport`.
    pub fn new(transport: Arc<T>) -> Self {
        Self(transport)
    }
}

impl<T: ?Sized> Clone for TransportService<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

type Answer = Result<http::Response<Bytes>, FederationError>;

impl<T: Transport + ?Sized + 'static> Service<http::Request<Bytes>> for TransportService<T> {
    type Response = http::Response<Bytes>;
    type Error = FederationError;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), FederationError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let transport = Arc::clone(&self.0);
        Box::pin(async move {
            let Some(Destination(destination)) = request.extensions().get().cloned() else {
                return Err(FederationError::Unreachable {
                    destination: String::new(),
                    reason: "the request names no Destination in its extensions".to_owned(),
                });
            };
            transport.send(&destination, request).await
        })
    }
}

/// A tower service as a [`Transport`]. Each request goes to a clone of the service (tower's
/// way of sharing one: the clones of a concurrency limit share its permits). The errors of
/// layers (a timeout's, a load shedder's) become [`FederationError::Unreachable`]; a
/// `FederationError` from inside comes out unchanged.
pub struct ServiceTransport<S> {
    service: S,
}

impl<S> ServiceTransport<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S> fmt::Debug for ServiceTransport<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTransport").field("service", &std::any::type_name::<S>()).finish()
    }
}

#[async_trait]
impl<S> Transport for ServiceTransport<S>
where
    S: Service<http::Request<Bytes>, Response = http::Response<Bytes>> + Clone + Send + Sync,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    async fn send(
        &self,
        destination: &str,
        mut request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        request.extensions_mut().insert(Destination(destination.to_owned()));
        let mut service = self.service.clone();
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(|e| federation_error(destination, e.into()))?;
        service.call(request).await.map_err(|e| federation_error(destination, e.into()))
    }
}

fn federation_error(destination: &str, error: BoxError) -> FederationError {
    match error.downcast::<FederationError>() {
        Ok(error) => *error,
        Err(other) => FederationError::Unreachable {
            destination: destination.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
