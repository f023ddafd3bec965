//! rustls configurations for both ends of the tunnel (ring, no OpenSSL).
//!
//! The cell asks for a client certificate but does not require one at the handshake: an
//! agent without a certificate may only call `Bootstrap`, and every other call checks the
//! certificate it came with ([`crate::ClusterCa::check_peer`]: chain, validity, revocation,
//! identity). A certificate that does not chain to the cluster CA or has expired fails the
//! handshake itself.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA certificate is not PEM: {0}")]
    CaPem(String),
    #[error("the certificate is not PEM: {0}")]
    CertPem(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("the client verifier cannot be built: {0}")]
    Verifier(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| TlsError::CaPem(e.to_string()))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::CaPem("no certificate in it".into()));
    }
    Ok(Arc::new(roots))
}

fn chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertPem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::CertPem("no certificate in it".into()));
    }
    Ok(chain)
}

/// The cell's own certificate, replaced in place when it is renewed: connections made
/// after [`CellCert::set`] get the new one, and none is dropped.
#[derive(Debug)]
pub struct CellCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

fn certified(
    cert_pem: &str,
    key_pkcs8_der: Vec<u8>,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
        chain(cert_pem)?,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der)),
        &provider(),
    )?))
}

impl CellCert {
    /// The certificate (PEM chain) and its PKCS#8 key (DER).
    pub fn new(cert_pem: &str, key_pkcs8_der: Vec<u8>) -> Result<Arc<CellCert>, TlsError> {
        Ok(Arc::new(CellCert {
            current: std::sync::RwLock::new(certified(cert_pem, key_pkcs8_der)?),
        }))
    }

    /// Serves `cert_pem` from now on.
    pub fn set(&self, cert_pem: &str, key_pkcs8_der: Vec<u8>) -> Result<(), TlsError> {
        let next = certified(cert_pem, key_pkcs8_der)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for CellCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The cell's server configuration: its own certificate, and client certificates
/// verified against the cluster CA when offered. HTTP/2 only.
pub fn cell_config(ca_pem: &str, cert: Arc<CellCert>) -> Result<rustls::ServerConfig, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// An agent's client configuration: the cell must chain to the cluster CA; the agent
/// presents its certificate when it has one (not yet, while it bootstraps).
pub fn agent_config(
    ca_pem: &str,
    identity: Option<(&str, Vec<u8>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity {
        Some((cert_pem, key)) => builder.with_client_auth_cert(
            chain(cert_pem)?,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The cell's certificate served over HTTPS/1.1 with no client certificate (the API proxy
/// beside the cell, whose callers bring bearer tokens): clients trust the cluster CA.
pub fn https_config(cert: Arc<CellCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
