//! The serving certificate, read from PEM files and read again whenever they change
//! (cert-manager renews by rewriting the mounted Secret), without a restart. Each new TLS
//! connection gets the certificate current at its handshake; a bad new pair is logged and
//! the last good one stays.
//!
//! Only events about the certificate and key files, or the `..data` symlink a Secret
//! volume swaps, mark the pair stale; anything else in the directory (a log file written
//! a thousand times a second) is ignored. A stale pair is read again once, at the next
//! handshake, so a burst of writes is one reload (debounced by construction).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use notify::{RecursiveMode, Watcher};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read the private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot watch the certificate files: {0}")]
    Watch(#[from] notify::Error),
}

/// Reads a certificate chain and its key, and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            message: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let certified = CertifiedKey::from_der(chain, key_der, &default_provider())?;
    Ok(Arc::new(certified))
}

/// The current certificate, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Set by the watcher when the files changed; the next handshake reloads.
    stale: AtomicBool,
    /// Reloads attempted, for metrics and tests.
    reloads: std::sync::atomic::AtomicU64,
}

impl ReloadingCert {
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let current = load_pair(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
            stale: AtomicBool::new(false),
            reloads: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// How many reloads were attempted since the pair was opened.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }

    /// Reads the files again; on failure the current pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reloads.fetch_add(1, Ordering::AcqRel);
        let fresh = load_pair(&self.cert, &self.key)?;
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
        Ok(())
    }

    /// Marks the pair stale when the certificate or key file changes, or the `..data`
    /// symlink of a Secret volume is swapped (a watch on the file alone would miss that);
    /// the directories holding them are watched, other files in them are ignored. The
    /// watcher lives as long as the returned value.
    pub fn watch(self: &Arc<Self>) -> Result<notify::RecommendedWatcher, TlsError> {
        let me = Arc::downgrade(self);
        let names: Vec<std::ffi::OsString> = [&self.cert, &self.key]
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_owned()))
            .chain(std::iter::once("..data".into()))
            .collect();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Some(me) = me.upgrade() else { return };
                let Ok(event) = event else { return };
                let ours = !event.kind.is_access()
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
                if ours {
                    me.stale.store(true, Ordering::Release);
                }
            })?;
        let mut dirs: Vec<PathBuf> = [&self.cert, &self.key]
            .iter()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            })
            .collect();
        dirs.dedup();
        for d in dirs {
            watcher.watch(&d, RecursiveMode::NonRecursive)?;
        }
        Ok(watcher)
    }

    /// A server configuration that asks this for its certificate at every handshake.
    /// HTTP/1.1 only: AdmissionReviews are single request/response exchanges.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.stale.swap(false, Ordering::AcqRel) {
            match self.reload() {
                Ok(()) => tracing::info!("serving certificate reloaded"),
                Err(e) => {
                    tracing::warn!(
                        "serving certificate not reloaded, keeping the last good one: {e}"
                    )
                }
            }
        }
        self.current.read().ok().map(|c| c.clone())
    }
}
