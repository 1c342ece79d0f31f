//! The certificate and key a listener presents over TLS, replaceable while it runs: each new
//! connection is answered with the pair current when its handshake starts, so a renewed
//! certificate (the binary re-reads its files on SIGHUP) is used without a restart, and the
//! connections already open keep theirs.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The TLS certificate and key a listener (client or federation) presents; clones share the
/// pair, so [`ServerTls::reload_pem`] on one changes what every listener given a clone
/// presents to its next connections.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// The pair in use, behind a lock taken for a pointer copy per handshake.
#[derive(Debug)]
struct Current {
    pair: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// ring rather than aws-lc-rs: no C toolchain beyond a compiler, and what the listeners need
/// (TLS 1.2 and 1.3 with the usual suites) it has.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The pair of PEM texts, checked: a chain (leaf first) and the private key of its leaf
/// (PKCS#8, PKCS#1 or SEC1).
fn certified_key(
    certificates: &[u8],
    private_key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(certificates)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the certificate is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError("the certificate file holds no certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key)
        .map_err(|e| TlsError(format!("the private key is not PEM: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError(format!("the private key cannot be used: {e}")))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError(
                "the private key is not the key of the certificate (they do not match)".into(),
            ))
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(e) => Err(TlsError(format!("the certificate cannot be used: {e}"))),
    }
}

impl ServerTls {
    /// From PEM text: the certificate chain (leaf first) and its private key (PKCS#8, PKCS#1
    /// or SEC1). A key that is not the certificate's is refused.
    pub fn from_pem(certificates: &[u8], private_key: &[u8]) -> Result<Self, TlsError> {
        let provider = provider();
        let pair = certified_key(certificates, private_key, &provider)?;
        let current = Arc::new(Current { pair: RwLock::new(Arc::new(pair)) });
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        Ok(ServerTls { current, config: Arc::new(config) })
    }

    /// Replaces the certificate and key for the connections made from now on. A pair that
    /// cannot be used (not PEM, a key of another certificate) is refused and the one in use
    /// kept.
    pub fn reload_pem(&self, certificates: &[u8], private_key: &[u8]) -> Result<(), TlsError> {
        let pair = certified_key(certificates, private_key, &provider())?;
        *self.current.pair.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// The certificate chain in use, leaf first (DER).
    pub fn certificates(&self) -> Vec<Vec<u8>> {
        let pair = self.current.pair.read().unwrap_or_else(PoisonError::into_inner).clone();
        pair.cert.iter().map(|c| c.as_ref().to_vec()).collect()
    }

    /// What a listener accepts connections with.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let made =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("a certificate");
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_start_and_on_reload() {
        let (cert, key) = pair("a.test");
        let (other_cert, other_key) = pair("b.test");
        let err = ServerTls::from_pem(cert.as_bytes(), other_key.as_bytes()).expect_err("mismatch");
        assert!(err.to_string().contains("do not match"), "{err}");
        let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).expect("a pair");
        let before = tls.certificates();
        let err = tls.reload_pem(other_cert.as_bytes(), key.as_bytes()).expect_err("mismatch");
        assert!(err.to_string().contains("do not match"), "{err}");
        assert_eq!(tls.certificates(), before, "the pair in use is kept");
        let err = tls.reload_pem(b"not pem", key.as_bytes()).expect_err("not PEM");
        assert!(err.to_string().contains("no certificate"), "{err}");
        tls.reload_pem(other_cert.as_bytes(), other_key.as_bytes()).expect("a good pair");
        assert_ne!(tls.certificates(), before);
        assert_eq!(tls.clone().certificates(), tls.certificates(), "clones share the pair");
    }
}
