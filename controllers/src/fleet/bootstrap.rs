//! The bootstrap endpoint beside the cell (`--bootstrap-listen`): what a new cluster's first
//! control-plane node fetches to join (the hook `lattice_clusters::bootstrap` writes).
//!
//! `GET /v1/bootstrap/<cluster>` with `Authorization: Bearer <one-time token>`, over HTTPS
//! with the cell's certificate (the node pins the cluster CA). The token is checked in
//! constant time against the cell's pending token for that cluster and is not used up here:
//! the answer carries it, for the agent to redeem with its CSR. The answer is YAML for
//! `kubectl apply`: the namespace, the agent's bootstrap Secret `lattice-bootstrap` (the
//! cell's endpoint, the CA and the token), the agent's RBAC and Deployment
//! (`deploy/agent/`), and the rights limited to this cluster that an unpivot and its
//! management of itself after the pivot need (`lattice_clusters::pivot`). Any refusal is a bare `401` whatever its cause (unknown cluster,
//! wrong, used or expired token); the cause goes to the log, without the token.
//!
//! Hand-written on hyper rather than a web framework: one route, no body, and the same
//! connection bounds as the proxy (a semaphore, handshake and header timeouts).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use lattice_tunnel::cell::Cell;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::NAMESPACE;
use super::stored::{Bundle, CHILD_BOOTSTRAP_SECRET, bootstrap_secret_name};

/// The agent's manifests, as `deploy/agent/` ships them.
const AGENT_RBAC: &str = include_str!("../../../deploy/agent/rbac.yaml");
const AGENT_DEPLOYMENT: &str = include_str!("../../../deploy/agent/deployment.yaml");
/// The agent's ServiceAccount (in [`NAMESPACE`]), as `deploy/agent/` names it.
const AGENT_ACCOUNT: &str = "lattice-agent";
/// The operator's ServiceAccount (in [`NAMESPACE`]), as `deploy/operator/` names it.
const OPERATOR_ACCOUNT: &str = "lattice-operator";

const MAX_CONNECTIONS: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reads: the cell's tokens, and the bootstrap bundles in `namespace`.
#[derive(Clone)]
pub struct Bootstrap {
    pub cell: Cell,
    pub secrets: Api<Secret>,
    /// The LatticeClusters, for the InfraProvider a child names.
    pub clusters: Api<kube::api::DynamicObject>,
}

impl Bootstrap {
    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: tokio_rustls::rustls::ServerConfig,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("bootstrap endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let this = this.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = service_fn(move |request| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.answer(request).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, "bootstrap endpoint: connection ended: {e}");
                }
            });
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(cluster) = request.uri().path().strip_prefix("/v1/bootstrap/") else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        if request.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        match self.manifests(cluster, token).await {
            Ok(body) => Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/yaml")
                .header(http::header::CACHE_CONTROL, "no-store")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n")),
            Err(cause) => {
                tracing::warn!(cluster = %cluster.escape_debug(), "bootstrap refused: {cause}");
                plain(StatusCode::UNAUTHORIZED, "bootstrap refused\n")
            }
        }
    }

    /// The manifests `cluster` applies to join, if `token` is its pending one.
    async fn manifests(&self, cluster: &str, token: &str) -> Result<String, String> {
        self.cell
            .check_token(cluster, token)
            .map_err(|e| e.to_string())?;
        let secret = self
            .secrets
            .get_opt(&bootstrap_secret_name(cluster))
            .await
            .map_err(|e| format!("cannot read the bootstrap bundle: {e}"))?
            .ok_or("no bootstrap bundle")?;
        let bundle = Bundle::from_secret(&secret)?;
        // The bundle holds the token the cell minted; the one checked above is that one.
        let child = bundle.to_secret(CHILD_BOOTSTRAP_SECRET, NAMESPACE);
        let child = serde_json::to_value(&child).map_err(|e| e.to_string())?;
        let namespace = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE},
        });
        let mut secret = child;
        secret["apiVersion"] = "v1".into();
        secret["kind"] = "Secret".into();
        let provider_ref = self
            .clusters
            .get_opt(cluster)
            .await
            .map_err(|e| format!("cannot read LatticeCluster {cluster}: {e}"))?
            .ok_or("no such LatticeCluster")?
            .data["spec"]["providerRef"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let unpivot: String =
            lattice_clusters::pivot::agent_unpivot_rbac(cluster, NAMESPACE, AGENT_ACCOUNT)
                .iter()
                .chain(&lattice_clusters::pivot::self_management_rbac(
                    cluster,
                    &provider_ref,
                    NAMESPACE,
                    OPERATOR_ACCOUNT,
                    AGENT_ACCOUNT,
                ))
                .map(lattice_schemas::generate::to_yaml)
                .collect();
        Ok(format!(
            "{}{}---\n{}\n{unpivot}---\n{}",
            lattice_schemas::generate::to_yaml(&namespace),
            lattice_schemas::generate::to_yaml(&secret),
            AGENT_RBAC.trim_end(),
            AGENT_DEPLOYMENT
        ))
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}
