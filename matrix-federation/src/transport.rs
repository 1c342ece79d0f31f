//! How requests reach other servers.

pub mod https;
pub mod service;

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::FederationError;

/// Carries a request to a destination server and brings back its answer.
///
/// The request's URI is a path with its query (`/_matrix/federation/v1/version`); the transport
/// finds where `destination` lives (or, in tests, which in-process server it is). Requests
/// arrive signed: a transport only carries them.
#[async_trait]
pub trait Transport: Send + Sync + Debug {
    /// Sends `request` to `destination`.
    async fn send(
        &self,
        destination: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError>;
}

/// The largest answer body a request accepts, when it differs from the transport's default:
/// put it in the request's extensions (`send_join` and `state` answers can be large, key
/// answers are small). Transports that read bodies honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimit(pub usize);
