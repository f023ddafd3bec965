//! Where the API proxy's allowed calls go, on each side of the tunnel.
//!
//! - On a parent, [`CellUpstream`] hands a call for a child to the child's agent through
//!   the cell. The parent's own API server is not proxied: callers reach it directly, and
//!   the operator holds no impersonation rights.
//! - On a child, [`ChildProxy`] is the agent's handler: it calls the child's API server as
//!   the caller (`Impersonate-User`, `Impersonate-Group`), so the child's own RBAC decides
//!   too. The agent's ServiceAccount holds `impersonate` rights beside what it needs for the
//!   tunnel, and the agent never impersonates `system:masters` (RBAC cannot limit that group).
//!
//! A call for a cluster below a child (grandparent → parent → child) is not routed yet:
//! it is refused with a 404 that says so.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use lattice_engine::Snapshot;
use lattice_gates::Requester;
use lattice_proxy::server::{ProxyBody, SnapshotSource, Upstream, status};
use lattice_tunnel::cell::Cell;
use lattice_tunnel::forward::{ForwardError, Forwarded, ProxyHandler};

use crate::webhook::State;
use crate::webhook::admit::Current;

impl AsRef<Snapshot> for Current {
    fn as_ref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// The operator's live snapshot, as the proxy reads it.
pub struct LiveSnapshots(pub Arc<State>);

impl SnapshotSource for LiveSnapshots {
    fn current(&self) -> Option<Arc<dyn AsRef<Snapshot> + Send + Sync>> {
        self.0
            .current()
            .map(|c| c as Arc<dyn AsRef<Snapshot> + Send + Sync>)
    }
}

/// Calls this cluster's API server as someone else.
#[derive(Clone)]
pub struct Impersonating {
    client: kube::Client,
}

impl Impersonating {
    pub fn new(client: kube::Client) -> Impersonating {
        Impersonating { client }
    }

    /// The API server's answer to `request`, made as `user` in `groups`; its body streams.
    pub async fn send(
        &self,
        user: &str,
        groups: &[String],
        request: Request<Bytes>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        // Whatever identity headers came this far are dropped; only the caller's are set.
        let stale: Vec<_> = parts
            .headers
            .keys()
            .filter(|k| lattice_proxy::authorize::is_impersonation_header(k.as_str()))
            .cloned()
            .collect();
        for k in stale {
            parts.headers.remove(k);
        }
        let Ok(value) = HeaderValue::from_str(user) else {
            return status(
                StatusCode::BAD_REQUEST,
                "the caller's name is not a header value",
            );
        };
        parts.headers.insert("impersonate-user", value);
        for g in groups {
            let Ok(value) = HeaderValue::from_str(g) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "a group name is not a header value",
                );
            };
            parts.headers.append("impersonate-group", value);
        }
        let request = Request::from_parts(parts, kube::client::Body::from(body));
        match self.client.send(request).await {
            Ok(response) => response.map(|b| {
                b.map_err(|e| Box::new(e) as lattice_proxy::server::BoxError)
                    .boxed_unsync()
            }),
            Err(e) => status(
                StatusCode::BAD_GATEWAY,
                &format!("the API server could not be reached: {e}"),
            ),
        }
    }
}

/// The parent's upstream: its children, through the cell.
pub struct CellUpstream {
    cell: Cell,
    own: String,
}

impl CellUpstream {
    pub fn new(cell: Cell, own: &str) -> CellUpstream {
        CellUpstream {
            cell,
            own: own.to_owned(),
        }
    }
}

/// The group the agent never impersonates: RBAC cannot grant impersonation of every group
/// but this one, and this one bypasses RBAC on the child.
pub const NEVER_IMPERSONATED: &str = "system:masters";

fn forward_error(e: &ForwardError) -> Response<ProxyBody> {
    let code = match e {
        ForwardError::NotConnected(_) => StatusCode::SERVICE_UNAVAILABLE,
        ForwardError::NoAnswer(..) => StatusCode::GATEWAY_TIMEOUT,
        ForwardError::Broken(..) => StatusCode::BAD_GATEWAY,
        ForwardError::Request(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    status(code, &e.to_string())
}

impl Upstream for CellUpstream {
    fn forward(
        &self,
        cluster: &str,
        caller: &Requester,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'static>> {
        if cluster == self.own {
            let message = format!(
                "{cluster:?} is this proxy's own cluster: call its API server directly; the proxy serves the clusters below it"
            );
            return Box::pin(async move { status(StatusCode::NOT_FOUND, &message) });
        }
        let cell = self.cell.clone();
        let target = Forwarded {
            cluster: cluster.to_owned(),
            user: caller.username.clone(),
            groups: caller.groups.clone(),
        };
        Box::pin(async move {
            if cell.agents().get(&target.cluster).is_none() {
                return status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "cluster {:?} has no agent connected to this cell (it is offline, or not a child of this cluster)",
                        target.cluster
                    ),
                );
            }
            let via = target.cluster.clone();
            match cell.forward(&via, target, request).await {
                Ok(response) => response,
                Err(e) => forward_error(&e),
            }
        })
    }
}

/// The agent's handler: calls for this cluster go to its API server as the caller.
pub struct ChildProxy {
    cluster: String,
    api: Impersonating,
}

impl ChildProxy {
    pub fn new(cluster: &str, api: Impersonating) -> ChildProxy {
        ChildProxy {
            cluster: cluster.to_owned(),
            api,
        }
    }
}

impl ProxyHandler for ChildProxy {
    fn handle(
        &self,
        target: Forwarded,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'static>> {
        if target.cluster != self.cluster {
            let message = format!(
                "cluster {:?} is not reachable from {:?}: calls for clusters below a child are not routed yet",
                target.cluster, self.cluster
            );
            return Box::pin(async move { status(StatusCode::NOT_FOUND, &message) });
        }
        if target.groups.iter().any(|g| g == NEVER_IMPERSONATED) {
            return Box::pin(async move {
                status(
                    StatusCode::FORBIDDEN,
                    "the proxy never acts as a member of system:masters",
                )
            });
        }
        let api = self.api.clone();
        Box::pin(async move { api.send(&target.user, &target.groups, request).await })
    }
}
