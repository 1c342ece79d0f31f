//! The crate's error: something went wrong that is not a protocol outcome (a rejected event or
//! request is a value, not an error).

/// Why a federation operation could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The destination could not be reached, or did not answer in time.
    #[error("{destination} is unreachable: {reason}")]
    Unreachable {
        /// The server.
        destination: String,
        /// What happened.
        reason: String,
    },
    /// The destination answered with an error status.
    #[error("{destination} answered {status}: {body}")]
    Status {
        /// The server.
        destination: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (at most 1 KiB).
        body: String,
    },
    /// The destination answered something that is not what the spec says it sends.
    #[error("{destination} sent a malformed answer: {reason}")]
    Malformed {
        /// The server.
        destination: String,
        /// What is wrong.
        reason: String,
    },
    /// The destination's answer is larger than the request allows.
    #[error("{destination} sent an answer over {limit} bytes")]
    TooLarge {
        /// The server.
        destination: String,
        /// The most bytes allowed.
        limit: usize,
    },
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] matrix_storage::StorageError),
}
