#![doc = include_str!("../README.md")]

pub mod auth_index;
pub mod check;
pub mod client;
pub mod error;
mod flight;
pub mod inbound;
pub mod keys;
pub mod media;
pub mod request;
pub mod resolve;
pub mod sender;
pub mod transport;

pub use error::FederationError;

/// What the federation side of a server is told. Plain data: the homeserver builds it from its
/// configuration; this crate never reads files or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederationOptions {
    /// This server's name, as other servers address it (`example.org`, `127.0.0.1:8448`).
    pub server_name: String,
    /// Check the TLS certificates of other servers (only test networks turn this off).
    pub verify_certificates: bool,
    /// Notary servers asked for keys a server cannot give itself (`matrix.org`).
    pub trusted_key_servers: Vec<String>,
}

impl FederationOptions {
    /// The defaults for `server_name`: certificates checked, no notaries.
    pub fn new(server_name: impl Into<String>) -> Self {
        FederationOptions {
            server_name: server_name.into(),
            verify_certificates: true,
            trusted_key_servers: Vec::new(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
