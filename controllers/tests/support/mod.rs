//! A webhook on loopback with a real certificate, and a real HTTPS client (hyper over
//! rustls) that trusts only the test CA.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use lattice_controllers::webhook::{self, Limits, State, tls::ReloadingCert};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

pub fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

/// A CA and a serving certificate for `localhost` and `127.0.0.1`, written as PEM files.
pub struct Pki {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn issue(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let pki = Pki {
            ca_pem: ca.pem(),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

/// A running webhook.
pub struct Webhook {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    pub certs: Arc<ReloadingCert>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a webhook on an ephemeral port, without a snapshot.
pub async fn start(pki: &Pki, limits: Limits) -> Webhook {
    let certs = ReloadingCert::open(&pki.cert, &pki.key).unwrap();
    let config = certs.server_config().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = State::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(webhook::serve(
        listener,
        config,
        state.clone(),
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    Webhook {
        addr,
        state,
        certs,
        stop: Some(stop),
    }
}

/// Loads the example world (plus `extra` paths) and the real rule packs into the webhook.
pub fn load_examples(w: &Webhook, extra: &[PathBuf]) {
    let mut paths = vec![root().join("examples/world")];
    paths.extend_from_slice(extra);
    let current = webhook::load_current(
        &paths,
        Some(&root().join("policies")),
        &webhook::Images::default(),
    )
    .unwrap();
    w.state.set(current);
}

pub fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An HTTPS client of the webhook, reconnecting when the server closed the connection.
pub struct Client {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sender: http1::SendRequest<Full<Bytes>>,
}

async fn open(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

impl Client {
    pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Client> {
        let sender = open(addr, config.clone()).await?;
        Ok(Client {
            addr,
            config,
            sender,
        })
    }

    /// Sends a request; the status and the body.
    pub async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.try_send(method, path, body).await.unwrap()
    }

    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), hyper::Error> {
        if self.sender.ready().await.is_err() {
            self.sender = open(self.addr, self.config.clone()).await.unwrap();
        }
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }
}

/// An AdmissionReview as the API server sends it.
pub fn review(
    uid: &str,
    operation: &str,
    object: Option<Value>,
    old: Option<Value>,
    user: &str,
    groups: &[&str],
) -> Value {
    let o = object
        .as_ref()
        .or(old.as_ref())
        .cloned()
        .unwrap_or(json!({}));
    let api = o["apiVersion"].as_str().unwrap_or("lattice.dev/v1alpha1");
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    let kind = o["kind"].as_str().unwrap_or("LatticeService");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": user, "groups": groups},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

/// The first document of `file` under the example world whose name is `name`, as the API
/// server would hold it (server fields added).
pub fn example(file: &str, name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("examples/world").join(file)).unwrap();
    let (docs, _) = lattice_schemas::manifest::yaml::parse_documents(&text);
    let mut v = docs
        .into_iter()
        .map(|d| d.value)
        .find(|v| v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {file}"));
    v["metadata"]["uid"] = json!("0b7c1e4e-5d7a-4a52-9d9a-2f6f5a1d9c11");
    v["metadata"]["resourceVersion"] = json!("4711");
    v["metadata"]["creationTimestamp"] = json!("2026-11-21T10:00:00Z");
    v["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply"}]);
    v
}

pub fn cedar_policy(namespace: &str, name: &str, policies: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "CedarPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"policies": policies, "mode": mode}
    })
}
