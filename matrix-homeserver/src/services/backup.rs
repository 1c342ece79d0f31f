//! Online backups of the store, asked for by the `homeserver backup` command of the same
//! machine (`POST /_homeserver/admin/v1/backup`).
//!
//! **Why the server makes them:** sled and fjall lock their directory, so while the server
//! runs, only it can read its store; and only it can make the copy consistent while writes
//! go on (see `matrix_storage::sled`'s backup: record the writes made during the copy,
//! replay them on it). The server writes the store's copy to a directory of its own machine;
//! the command adds the files it reads itself (signing key, media, config).
//!
//! **Why the registration shared secret authenticates it:** the command reads the server's
//! config file, as `register-user` does, so an operator (or a cron job) needs no user account
//! or access token to keep around. The request carries a nonce from
//! `GET /_homeserver/admin/v1/backup` (good once, for a minute; the pool of shared-secret
//! registration) and `HMAC-SHA1(secret, nonce NUL "backup" NUL directory)` in hex. That
//! message has three parts, a registration's at least four, so one MAC never passes for the
//! other. Without a shared secret configured, the endpoint refuses every request.

use std::path::Path;

use matrix_storage::{ErrorKind, StoreSummary};

use crate::error::ApiError;

/// The MAC a backup request carries: HMAC-SHA1 under the shared secret of
/// `nonce NUL "backup" NUL directory`, in lowercase hex (in Python:
/// `hmac.new(secret, nonce + b"\x00backup\x00" + directory, hashlib.sha1).hexdigest()`).
///
/// ```
/// let mac = matrix_homeserver::backup_mac("secret", "abc", "/var/backups/hs");
/// assert_eq!(mac, "f041d8ee8443fc7a8262eec58a79a1bef10f2201");
/// ```
pub fn backup_mac(secret: &str, nonce: &str, directory: &str) -> String {
    let message = [nonce, "backup", directory].join("\0");
    crate::services::voip::hmac_sha1(secret.as_bytes(), message.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The longest directory name a request may carry, in bytes.
const MAX_DIRECTORY_BYTES: usize = 4096;

/// Makes a backup of the store into `directory` (absolute; new, or empty), answering the
/// copy's summary.
pub(crate) async fn backup_store(
    storage: &dyn matrix_storage::Storage,
    directory: &str,
) -> Result<StoreSummary, ApiError> {
    if directory.len() > MAX_DIRECTORY_BYTES || directory.contains('\0') {
        return Err(ApiError::invalid_param("the directory name is too long or holds a NUL"));
    }
    let path = Path::new(directory);
    if !path.is_absolute() {
        return Err(ApiError::invalid_param("the directory must be an absolute path"));
    }
    if !path.parent().is_some_and(Path::is_dir) {
        return Err(ApiError::invalid_param(
            "the directory's parent does not exist on the server's machine",
        ));
    }
    let started = std::time::Instant::now();
    match storage.backup(path).await {
        Ok(summary) => {
            tracing::info!(
                "backup of the store into {directory}: {} events at stream position {}, in {:?}",
                summary.events,
                summary.stream_position,
                started.elapsed()
            );
            Ok(summary)
        }
        // What the operator can change: another directory, or another way (the in-memory
        // store); the operator is the one asking, so the message is theirs.
        Err(e) if e.kind() == ErrorKind::Conflict => Err(ApiError::invalid_param(e.to_string())),
        Err(e) if e.kind() == ErrorKind::Unsupported => Err(ApiError::bad_request(e.to_string())),
        Err(e) => {
            tracing::error!("backup into {directory} failed: {e}");
            Err(ApiError::unknown(format!("the backup failed: {e}")))
        }
    }
}
