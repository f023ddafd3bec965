//! Where the API proxy's allowed calls go, on each side of the tunnel.
//!
//! - On a parent, [`CellUpstream`] hands a call for a cluster below to the agent of the
//!   child whose subtree holds it, through the cell. The parent's own API server is not
//!   proxied: callers reach it directly, and the operator holds no impersonation rights.
//! - On a child, [`ChildProxy`] is the agent's handler. A call for the child itself goes to
//!   its API server as the caller (`Impersonate-User`, `Impersonate-Group`), so the child's
//!   own RBAC decides too. The agent's ServiceAccount holds `impersonate` rights beside what
//!   it needs for the tunnel, and the agent never impersonates `system:masters` (RBAC
//!   cannot limit that group).
//! - A call for a cluster further down (grandparent → parent → child) goes from the middle
//!   cluster's agent to the middle cluster's own proxy ([`LocalProxy`]), authenticated as
//!   the agent and naming the caller in `X-Lattice-Forwarded-User` / `-Group`: that proxy
//!   trusts the agent as a forwarder, decides again with the middle cluster's (inherited and
//!   local) policies, and sends the call on through its own cell. Every hop decides.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use lattice_engine::Snapshot;
use lattice_gates::Requester;
use lattice_proxy::server::{ProxyBody, SnapshotSource, Switched, Upstream, status};
use lattice_tunnel::cell::Cell;
use lattice_tunnel::forward::{ForwardError, Forwarded, ProxyHandler, Upgrade};

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
        if let Err(refused) = impersonate(&mut parts.headers, user, groups) {
            return refused.response();
        }
        let request = Request::from_parts(parts, kube::client::Body::from(body));
        match self.client.send(request).await {
            Ok(response) => response.map(boxed),
            Err(e) => status(
                StatusCode::BAD_GATEWAY,
                &format!("the API server could not be reached: {e}"),
            ),
        }
    }

    /// Opens the connection `request` asks to switch to (exec, attach, port-forward) on
    /// the API server, as `user` in `groups`.
    pub async fn upgrade(&self, user: &str, groups: &[String], request: Request<()>) -> Upgrade {
        let (mut parts, ()) = request.into_parts();
        if let Err(refused) = impersonate(&mut parts.headers, user, groups) {
            return Upgrade::Answered(refused.response());
        }
        switch(
            &self.client,
            Request::from_parts(parts, ()),
            "the API server",
        )
        .await
    }
}

/// Sets the caller's impersonation headers, dropping whatever identity headers came this far.
fn impersonate(
    headers: &mut http::HeaderMap,
    user: &str,
    groups: &[String],
) -> Result<(), Refused> {
    let stale: Vec<_> = headers
        .keys()
        .filter(|k| lattice_proxy::authorize::is_impersonation_header(k.as_str()))
        .cloned()
        .collect();
    for k in stale {
        headers.remove(k);
    }
    let value =
        HeaderValue::from_str(user).map_err(|_| Refused::not_a_header("the caller's name"))?;
    headers.insert("impersonate-user", value);
    for g in groups {
        let value = HeaderValue::from_str(g).map_err(|_| Refused::not_a_header("a group name"))?;
        headers.append("impersonate-group", value);
    }
    Ok(())
}

/// A call refused before it is sent: its status and why.
struct Refused(StatusCode, String);

impl Refused {
    fn not_a_header(what: &str) -> Refused {
        Refused(
            StatusCode::BAD_REQUEST,
            format!("{what} is not a header value"),
        )
    }

    fn response(self) -> Response<ProxyBody> {
        status(self.0, &self.1)
    }
}

fn boxed(body: kube::client::Body) -> ProxyBody {
    body.map_err(|e| Box::new(e) as lattice_proxy::server::BoxError)
        .boxed_unsync()
}

/// Sends an upgrade with `client` and, on a 101, takes the switched connection; `far` names
/// the far end in errors.
async fn switch(client: &kube::Client, request: Request<()>, far: &str) -> Upgrade {
    let request = request.map(|()| kube::client::Body::empty());
    let mut response = match client.send(request).await {
        Ok(r) => r,
        Err(e) => {
            return Upgrade::Answered(status(
                StatusCode::BAD_GATEWAY,
                &format!("{far} could not be reached: {e}"),
            ));
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Upgrade::Answered(response.map(boxed));
    }
    let connection = hyper::upgrade::on(&mut response);
    let (head, _) = response.into_parts();
    match connection.await {
        Ok(io) => Upgrade::Switched(
            Response::from_parts(head, ()),
            Box::new(hyper_util::rt::TokioIo::new(io)),
        ),
        Err(e) => Upgrade::Answered(status(
            StatusCode::BAD_GATEWAY,
            &format!("{far} answered 101 but the connection did not switch: {e}"),
        )),
    }
}

/// The parent's upstream: its children and theirs, through the cell.
pub struct CellUpstream {
    cell: Cell,
    own: String,
    snapshots: Arc<dyn SnapshotSource>,
}

impl CellUpstream {
    /// Routes for cluster `own`, checking routes against the hierarchy `snapshots` hold.
    pub fn new(cell: Cell, own: &str, snapshots: Arc<dyn SnapshotSource>) -> CellUpstream {
        CellUpstream {
            cell,
            own: own.to_owned(),
            snapshots,
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

impl CellUpstream {
    /// The connected child a call for `cluster` goes through, and the call's target; a
    /// cluster this one does not place below that child is not sent there.
    fn route(
        &self,
        cluster: &str,
        caller: &Requester,
    ) -> impl Future<Output = Result<(String, Forwarded), Response<ProxyBody>>> + Send + 'static
    {
        let own = cluster == self.own;
        let cell = self.cell.clone();
        let snapshots = self.snapshots.clone();
        let target = Forwarded {
            cluster: cluster.to_owned(),
            user: caller.username.clone(),
            groups: caller.groups.clone(),
        };
        async move {
            if own {
                return Err(status(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "{:?} is this proxy's own cluster: call its API server directly; the proxy serves the clusters below it",
                        target.cluster
                    ),
                ));
            }
            let via = cell
                .agents()
                .route(&target.cluster)
                .map_err(|e| status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))?;
            let below = snapshots.current().is_some_and(|s| {
                lattice_gates::proxy::routes_through((*s).as_ref(), &target.cluster, &via)
            });
            if !below {
                return Err(status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "cluster {:?} is claimed by child {via:?}, but this cluster's hierarchy does not place it below {via:?}; the call is not sent there",
                        target.cluster
                    ),
                ));
            }
            Ok((via, target))
        }
    }
}

impl Upstream for CellUpstream {
    fn forward(
        &self,
        cluster: &str,
        caller: &Requester,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'static>> {
        let route = self.route(cluster, caller);
        let cell = self.cell.clone();
        Box::pin(async move {
            let (via, target) = match route.await {
                Ok(r) => r,
                Err(refused) => return refused,
            };
            match cell.forward(&via, target, request).await {
                Ok(response) => response,
                Err(e) => forward_error(&e),
            }
        })
    }

    fn upgrade(
        &self,
        cluster: &str,
        caller: &Requester,
        request: Request<()>,
    ) -> Pin<Box<dyn Future<Output = Switched> + Send + 'static>> {
        let route = self.route(cluster, caller);
        let cell = self.cell.clone();
        Box::pin(async move {
            let (via, target) = route.await?;
            match cell.upgrade(&via, target, request).await {
                Ok(Upgrade::Switched(head, connection)) => {
                    let connection: Box<dyn lattice_proxy::server::Duplex> = Box::new(connection);
                    Ok((head, connection))
                }
                Ok(Upgrade::Answered(answer)) => Err(answer),
                Err(e) => Err(forward_error(&e)),
            }
        })
    }
}

/// This cluster's own API proxy, as its agent reaches it: HTTPS to the proxy's Service,
/// trusting this cluster's cell CA, authenticated with the agent's own credentials (its
/// ServiceAccount token, as its kube client holds it).
pub struct LocalProxy {
    base: kube::Config,
    url: http::Uri,
    ca: std::path::PathBuf,
    /// The client built for the CA file's current contents.
    client: std::sync::Mutex<Option<(Vec<u8>, kube::Client)>>,
}

impl LocalProxy {
    /// The proxy at `url` (e.g. `https://lattice-cell.lattice-system.svc`), whose
    /// certificate the PEM file `ca` vouches for; `base` is the agent's own client
    /// configuration, whose credentials it presents.
    pub fn new(base: kube::Config, url: http::Uri, ca: std::path::PathBuf) -> LocalProxy {
        LocalProxy {
            base,
            url,
            ca,
            client: std::sync::Mutex::new(None),
        }
    }

    /// The client for the CA as the file holds it now (re-read on every call, so a
    /// rotated CA is picked up; the client is rebuilt only when it changed).
    fn client(&self) -> Result<kube::Client, String> {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(&self.ca).map_err(|e| {
            format!(
                "this cluster's cell CA cannot be read from {}: {e}",
                self.ca.display()
            )
        })?;
        let mut held = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, client)) = held.as_ref()
            && *seen == pem
        {
            return Ok(client.clone());
        }
        let roots = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} is not PEM certificates: {e}", self.ca.display()))?;
        if roots.is_empty() {
            return Err(format!("{} holds no certificate", self.ca.display()));
        }
        let mut config = self.base.clone();
        config.cluster_url = self.url.clone();
        config.root_cert = Some(roots);
        config.accept_invalid_certs = false;
        config.tls_server_name = None;
        config.proxy_url = None;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        *held = Some((pem, client.clone()));
        Ok(client)
    }

    /// Sends a call for `target.cluster` to this cluster's proxy, for `target`'s caller.
    pub async fn send(&self, target: &Forwarded, request: Request<Bytes>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let (client, parts) = match self.prepare(target, &parts) {
            Ok(prepared) => prepared,
            Err(refused) => return refused.response(),
        };
        let request = Request::from_parts(parts, kube::client::Body::from(body));
        match client.send(request).await {
            Ok(response) => response.map(boxed),
            Err(e) => status(
                StatusCode::BAD_GATEWAY,
                &format!("this cluster's API proxy could not be reached: {e}"),
            ),
        }
    }

    /// Opens the connection `request` asks to switch to on `target.cluster`, through this
    /// cluster's proxy, for `target`'s caller.
    pub async fn upgrade(&self, target: &Forwarded, request: Request<()>) -> Upgrade {
        let (parts, ()) = request.into_parts();
        let (client, parts) = match self.prepare(target, &parts) {
            Ok(prepared) => prepared,
            Err(refused) => return Upgrade::Answered(refused.response()),
        };
        switch(
            &client,
            Request::from_parts(parts, ()),
            "this cluster's API proxy",
        )
        .await
    }

    /// The client, and the head of a call for `target` to this cluster's proxy: the path
    /// under the cluster's prefix, the caller named as forwarded, no identity of its own.
    fn prepare(
        &self,
        target: &Forwarded,
        request: &http::request::Parts,
    ) -> Result<(kube::Client, http::request::Parts), Refused> {
        use lattice_proxy::server::{CLUSTERS_PREFIX, FORWARDED_GROUP, FORWARDED_USER};
        let client = self.client().map_err(|e| {
            Refused(
                StatusCode::BAD_GATEWAY,
                format!("the next hop cannot be called: {e}"),
            )
        })?;
        let path = request
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri = http::Uri::try_from(format!("{CLUSTERS_PREFIX}{}{path}", target.cluster))
            .map_err(|e| Refused(StatusCode::BAD_REQUEST, e.to_string()))?;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = request.method.clone();
        parts.uri = uri;
        for (name, value) in &request.headers {
            let identity = lattice_proxy::authorize::is_impersonation_header(name.as_str())
                || name == FORWARDED_USER
                || name == FORWARDED_GROUP
                || name == http::header::AUTHORIZATION;
            if !identity {
                parts.headers.append(name.clone(), value.clone());
            }
        }
        let user = HeaderValue::from_str(&target.user)
            .map_err(|_| Refused::not_a_header("the caller's name"))?;
        parts.headers.insert(FORWARDED_USER, user);
        for g in &target.groups {
            let value =
                HeaderValue::from_str(g).map_err(|_| Refused::not_a_header("a group name"))?;
            parts.headers.append(FORWARDED_GROUP, value);
        }
        Ok((client, parts))
    }
}

/// The agent's handler: calls for this cluster go to its API server as the caller; calls
/// for a cluster below go to this cluster's own proxy, which decides them again.
pub struct ChildProxy {
    cluster: String,
    api: Impersonating,
    below: Option<Arc<LocalProxy>>,
}

impl ChildProxy {
    pub fn new(cluster: &str, api: Impersonating) -> ChildProxy {
        ChildProxy {
            cluster: cluster.to_owned(),
            api,
            below: None,
        }
    }

    /// Sends calls for the clusters below this one to `proxy`.
    pub fn with_local_proxy(mut self, proxy: LocalProxy) -> ChildProxy {
        self.below = Some(Arc::new(proxy));
        self
    }
}

impl ChildProxy {
    /// Where a call for `target` goes: refused, to this cluster's proxy for a cluster below
    /// (`Some`), or to this cluster's API server (`None`).
    fn hop(&self, target: &Forwarded) -> Result<Option<Arc<LocalProxy>>, Refused> {
        if target.groups.iter().any(|g| g == NEVER_IMPERSONATED) {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                "the proxy never acts as a member of system:masters".into(),
            ));
        }
        if target.cluster == self.cluster {
            return Ok(None);
        }
        match &self.below {
            Some(below) => Ok(Some(below.clone())),
            None => Err(Refused(
                StatusCode::NOT_FOUND,
                format!(
                    "cluster {:?} is not reachable from {:?}: this agent runs without --local-proxy, so it sends no call below its own cluster",
                    target.cluster, self.cluster
                ),
            )),
        }
    }
}

impl ProxyHandler for ChildProxy {
    fn handle(
        &self,
        target: Forwarded,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'static>> {
        match self.hop(&target) {
            Err(refused) => Box::pin(async move { refused.response() }),
            Ok(Some(below)) => Box::pin(async move { below.send(&target, request).await }),
            Ok(None) => {
                let api = self.api.clone();
                Box::pin(async move { api.send(&target.user, &target.groups, request).await })
            }
        }
    }

    fn upgrade(
        &self,
        target: Forwarded,
        request: Request<()>,
    ) -> Pin<Box<dyn Future<Output = Upgrade> + Send + 'static>> {
        match self.hop(&target) {
            Err(refused) => Box::pin(async move { Upgrade::Answered(refused.response()) }),
            Ok(Some(below)) => Box::pin(async move { below.upgrade(&target, request).await }),
            Ok(None) => {
                let api = self.api.clone();
                Box::pin(async move { api.upgrade(&target.user, &target.groups, request).await })
            }
        }
    }
}
