//! The listeners' certificates: read from the files the config names, and read again on
//! SIGHUP (a renewed certificate is presented to new connections without a restart; a pair
//! that does not work is logged and the one in use kept).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use matrix_homeserver::ServerTls;

/// A listener's certificate, with the files it came from.
#[derive(Debug, Clone)]
pub(crate) struct ListenerTls {
    /// The config section naming the files (`server`, `federation`).
    section: &'static str,
    cert: PathBuf,
    key: PathBuf,
    /// What the listener presents.
    pub(crate) tls: ServerTls,
}

/// The pair `[section] tls_cert` and `tls_key` name, if they do (both or neither).
pub(crate) fn load(
    section: &'static str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Option<ListenerTls>> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => bail!("[{section}] needs both tls_cert and tls_key, or neither (plain HTTP)"),
    };
    let (cert_pem, key_pem) = read_pair(cert, key)?;
    // One line: which files, and why they cannot serve.
    let tls = ServerTls::from_pem(&cert_pem, &key_pem).map_err(|e| {
        anyhow::anyhow!(
            "[{section}] tls_cert {} and tls_key {}: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Some(ListenerTls { section, cert: cert.to_owned(), key: key.to_owned(), tls }))
}

fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    Ok((read(cert)?, read(key)?))
}

impl ListenerTls {
    /// Reads the files again and presents the new pair to new connections; on failure the
    /// old pair stays, and the error says why.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let (cert, key) = read_pair(&self.cert, &self.key)?;
        self.tls.reload_pem(&cert, &key).with_context(|| {
            format!(
                "[{}] tls_cert {} and tls_key {}",
                self.section,
                self.cert.display(),
                self.key.display()
            )
        })
    }
}

/// Reloads `listeners` on each SIGHUP, for as long as the process runs.
pub(crate) fn reload_on_hangup(listeners: Vec<ListenerTls>) {
    if listeners.is_empty() {
        return;
    }
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                tracing::warn!("certificates will not be reloaded on SIGHUP: {e}");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            for listener in &listeners {
                match listener.reload() {
                    Ok(()) => tracing::info!(
                        "SIGHUP: [{}] certificate {} reloaded",
                        listener.section,
                        listener.cert.display()
                    ),
                    Err(e) => tracing::error!(
                        "SIGHUP: keeping the [{}] certificate in use: {e:#}",
                        listener.section
                    ),
                }
            }
        }
    });
}
