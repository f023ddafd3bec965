//! The cell: the parent's end of the tunnel, a tonic gRPC server over rustls.
//!
//! - `Bootstrap` redeems a one-time token and signs the agent's CSR for the cluster the
//!   token names. The CSR is checked before the token is spent, so a bad CSR does not burn
//!   the token, and a refused token gets one answer whatever the reason.
//! - `Renew` and `Connect` need the agent's certificate; [`ClusterCa::check_peer`] reads the
//!   identity from it (and refuses a revoked one) before anything else happens.
//! - `Connect` runs one [`CellSession`] per stream: a newer stream for the same cluster
//!   replaces the older one (so a reconnect never leaves two), a protocol violation ends
//!   the stream with the session's status, and an agent silent for three heartbeat
//!   intervals is dropped. What the cell distributes goes down each stream as a full set,
//!   then deltas.
//! - [`Agents`] is who is connected and the health they last reported, for the operator
//!   to write into LatticeCluster status and the Cedar `Cluster` entity.
//! - [`Cell::forward`] sends a proxied request to a connected agent and streams its answer
//!   back ([`crate::forward`]); only the agent the request was sent to may answer it.
//!   [`Cell::upgrade`] opens an exec, attach or port-forward connection the same way.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lattice_proto::tunnel::v1 as pb;
use pb::cell_server::{Cell as CellRpc, CellServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::bootstrap::{BootstrapToken, TokenStore};
use crate::ca::{AgentKey, CaError, ClusterCa, DEFAULT_LIFETIME, IssuedCert};
use crate::command::{CommandError, MAX_PAYLOAD_BYTES, Queued};
use crate::distribution::{DistributedSet, ObjectKey};
use crate::forward::{
    BoxError, CHUNK, ForwardError, Forwarded, MAX_REQUEST_BODY, ProxyBody, Upgrade, request_head,
    response_from_head, upgrade_of,
};
use crate::identity::ClusterIdentity;
use crate::session::{CellSession, Event, Health};

/// What an upgraded connection buffers between the proxy and the tunnel.
const UPGRADE_BUFFER: usize = 64 << 10;

/// The largest message the cell accepts from an agent.
pub const MAX_AGENT_MESSAGE_BYTES: usize = 4 << 20;

/// Streams one connection may hold open: the tunnel, renewals and proxied requests.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How the cell runs.
#[derive(Clone, Debug)]
pub struct CellConfig {
    /// How often agents send heartbeats; three missed intervals drop the agent.
    pub heartbeat: Duration,
    /// How long certificates the cell signs live.
    pub certificate_lifetime: jiff::SignedDuration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How many TLS handshakes may be in progress at once; further connections wait in
    /// the listen backlog, so a flood of clients costs the cell a bounded amount.
    pub max_handshakes: usize,
}

impl Default for CellConfig {
    fn default() -> CellConfig {
        CellConfig {
            heartbeat: Duration::from_secs(10),
            certificate_lifetime: DEFAULT_LIFETIME,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
        }
    }
}

/// A connected agent, as the cell last heard from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStatus {
    pub session_id: String,
    pub remote: Option<SocketAddr>,
    pub connected_since: jiff::Timestamp,
    pub last_heartbeat: jiff::Timestamp,
    pub health: Health,
    /// The distributed revision the agent confirmed it holds.
    pub synced_revision: Option<u64>,
    /// Whether the agent reported a set other than the one it was sent.
    pub diverged: bool,
    /// Heartbeats received on this stream.
    pub heartbeats: u64,
}

struct Connected {
    session: u64,
    status: AgentStatus,
    close: Closer,
    /// The session's outbound stream, for proxied requests' heads.
    sender: mpsc::Sender<Result<pb::CellMessage, Status>>,
    /// The session task's queue of lifecycle commands.
    commands: mpsc::Sender<Queued>,
}

/// A proxied request sent to an agent, waiting for its Proxy stream.
struct Pending {
    /// Only this cluster's agent may answer it.
    cluster: String,
    accept: tokio::sync::oneshot::Sender<Accepted>,
}

/// The agent's Proxy stream for a request: its messages up, and the cell's down.
struct Accepted {
    up: Streaming<pb::ProxyUp>,
    down: mpsc::Sender<Result<pb::ProxyDown, Status>>,
}

/// Forgets a pending request however `forward` ends.
struct PendingGuard<'a> {
    pending: &'a Mutex<HashMap<String, Pending>>,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

/// Ends one session from outside it, saying why.
#[derive(Clone, Default)]
struct Closer {
    token: CancellationToken,
    reason: Arc<std::sync::OnceLock<Status>>,
}

impl Closer {
    fn close(&self, reason: Status) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    fn reason(&self) -> Status {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| Status::aborted("the stream was closed"))
    }
}

/// Why a call for a cluster has nowhere to go.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "cluster {0:?} is not connected here: no child's agent is connected that is it or reports it below itself (it is offline, or not in this cluster's subtree)"
    )]
    Unknown(String),
    #[error("cluster {0:?} is reported below both {1:?} and {2:?}; calls for it are refused")]
    Ambiguous(String, String, String),
}

/// Who is connected to the cell.
#[derive(Clone)]
pub struct Agents {
    connected: Arc<Mutex<HashMap<String, Connected>>>,
    reports: Arc<Mutex<BTreeMap<String, Arc<pb::MeshReport>>>>,
    /// Bumped when an agent connects or goes; heartbeats do not bump it.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Agents {
    fn default() -> Agents {
        Agents {
            connected: Arc::default(),
            reports: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connected>> {
        // A panic elsewhere while holding the lock leaves plain data; keep serving.
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connected agents by cluster name.
    pub fn snapshot(&self) -> BTreeMap<String, AgentStatus> {
        self.lock()
            .iter()
            .map(|(cluster, c)| (cluster.clone(), c.status.clone()))
            .collect()
    }

    /// The cross-cluster declarations each agent last reported, by cluster. A report
    /// outlives its stream: traffic between clusters does not cross the tunnel, so a
    /// tunnel that drops for a while withdraws no route. Only [`Cell::revoke_cluster`]
    /// forgets it.
    pub fn mesh_reports(&self) -> BTreeMap<String, Arc<pb::MeshReport>> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One cluster's agent, if connected.
    pub fn get(&self, cluster: &str) -> Option<AgentStatus> {
        self.lock().get(cluster).map(|c| c.status.clone())
    }

    /// Which connected child's agent a call for `cluster` goes through: the cluster's own
    /// agent when it is a child, else the one child whose agent reports it below itself.
    pub fn route(&self, cluster: &str) -> Result<String, RouteError> {
        let connected = self.lock();
        if connected.contains_key(cluster) {
            return Ok(cluster.to_owned());
        }
        let mut via = connected
            .iter()
            .filter(|(_, c)| {
                c.status
                    .health
                    .descendants
                    .iter()
                    .any(|d| d.name == cluster)
            })
            .map(|(name, _)| name.clone());
        match (via.next(), via.next()) {
            (None, _) => Err(RouteError::Unknown(cluster.to_owned())),
            (Some(one), None) => Ok(one),
            // Two subtrees claim one name: neither is trusted with it.
            (Some(a), Some(b)) => {
                let (a, b) = if a < b { (a, b) } else { (b, a) };
                Err(RouteError::Ambiguous(cluster.to_owned(), a, b))
            }
        }
    }

    /// How many agents are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes whenever an agent connects or goes, or reports other declarations.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn open(
        &self,
        cluster: &str,
        session: u64,
        status: AgentStatus,
        close: Closer,
        sender: mpsc::Sender<Result<pb::CellMessage, Status>>,
        commands: mpsc::Sender<Queued>,
    ) {
        let replaced = self.lock().insert(
            cluster.to_owned(),
            Connected {
                session,
                status,
                close,
                sender,
                commands,
            },
        );
        if let Some(old) = replaced {
            old.close.close(Status::aborted(
                "a newer stream from this cluster replaced this one",
            ));
        }
        self.bump();
    }

    fn sender(&self, cluster: &str) -> Option<mpsc::Sender<Result<pb::CellMessage, Status>>> {
        self.lock().get(cluster).map(|c| c.sender.clone())
    }

    fn commands(&self, cluster: &str) -> Option<mpsc::Sender<Queued>> {
        self.lock().get(cluster).map(|c| c.commands.clone())
    }

    fn update(&self, cluster: &str, session: u64, f: impl FnOnce(&mut AgentStatus)) {
        if let Some(c) = self
            .lock()
            .get_mut(cluster)
            .filter(|c| c.session == session)
        {
            f(&mut c.status);
        }
    }

    /// Keeps a session's report; a changed one bumps [`Agents::subscribe`].
    fn report(&self, cluster: &str, session: u64, report: pb::MeshReport) {
        // Only the stream that holds the cluster now may change its report.
        if self
            .lock()
            .get(cluster)
            .is_none_or(|c| c.session != session)
        {
            return;
        }
        let changed = {
            let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            if reports.get(cluster).is_some_and(|r| **r == report) {
                false
            } else {
                reports.insert(cluster.to_owned(), Arc::new(report));
                true
            }
        };
        if changed {
            self.bump();
        }
    }

    fn forget_report(&self, cluster: &str) {
        let removed = self
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cluster);
        if removed.is_some() {
            self.bump();
        }
    }

    fn close(&self, cluster: &str, session: u64) {
        let removed = {
            let mut connected = self.lock();
            match connected.get(cluster) {
                Some(c) if c.session == session => connected.remove(cluster),
                _ => None,
            }
        };
        if removed.is_some() {
            self.bump();
        }
    }

    fn disconnect(&self, cluster: &str, reason: Status) {
        if let Some(c) = self.lock().remove(cluster) {
            c.close.close(reason);
            self.bump();
        }
    }
}

struct Inner {
    ca: RwLock<ClusterCa>,
    tokens: Mutex<TokenStore>,
    agents: Agents,
    distribution: watch::Sender<Arc<DistributedSet>>,
    /// Each child's cross-cluster routes, by cluster: its side of every allowed edge.
    /// `None` until first set: a restarted cell that has not decided yet sends nothing,
    /// so no agent withdraws routes it still holds.
    routes: watch::Sender<Option<Arc<BTreeMap<String, pb::MeshRoutes>>>>,
    config: CellConfig,
    sessions: AtomicU64,
    handshake_failures: AtomicU64,
    /// Proxied requests sent down a session, by request id, until their agent accepts them.
    pending: Mutex<HashMap<String, Pending>>,
    /// Cancelled when the cell shuts down: every session ends, so the server can.
    closing: CancellationToken,
}

/// The parent's cell.
#[derive(Clone)]
pub struct Cell {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn refused(e: CaError) -> Status {
    Status::unauthenticated(format!("the client certificate is refused: {e}"))
}

impl Cell {
    /// A cell that signs with `ca`.
    pub fn new(ca: ClusterCa, config: CellConfig) -> Cell {
        Cell {
            inner: Arc::new(Inner {
                ca: RwLock::new(ca),
                tokens: Mutex::default(),
                agents: Agents::default(),
                // Revision 1, empty: an agent holding revision 0 has received nothing yet.
                distribution: watch::channel(Arc::new(DistributedSet::new(1, BTreeMap::new()))).0,
                routes: watch::channel(None).0,
                config,
                sessions: AtomicU64::new(0),
                handshake_failures: AtomicU64::new(0),
                pending: Mutex::default(),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Who is connected.
    pub fn agents(&self) -> &Agents {
        &self.inner.agents
    }

    /// TLS handshakes that failed (a certificate from another CA, an expired one, a
    /// client that is not TLS).
    pub fn handshake_failures(&self) -> u64 {
        self.inner.handshake_failures.load(Ordering::Relaxed)
    }

    /// Mints `cluster`'s one-time bootstrap token, valid for `ttl`; one minted before is
    /// no longer accepted.
    pub fn mint_token(
        &self,
        cluster: &str,
        ttl: jiff::SignedDuration,
    ) -> Result<BootstrapToken, crate::BootstrapError> {
        lock(&self.inner.tokens).mint(cluster, jiff::Timestamp::now(), ttl)
    }

    /// Takes back `cluster`'s unused token after a restart (see [`TokenStore::restore`]).
    pub fn restore_token(&self, cluster: &str, secret: &str, expires: jiff::Timestamp) {
        lock(&self.inner.tokens).restore(cluster, secret, expires);
    }

    /// Whether `presented` is `cluster`'s pending token (unused, unexpired), without using
    /// it.
    pub fn check_token(&self, cluster: &str, presented: &str) -> Result<(), crate::BootstrapError> {
        lock(&self.inner.tokens).check(cluster, presented, jiff::Timestamp::now())
    }

    /// Whether `cluster`'s token was redeemed, and whether one is pending at all.
    pub fn token_state(&self, cluster: &str) -> (bool, bool) {
        let tokens = lock(&self.inner.tokens);
        (tokens.is_used(cluster), tokens.contains(cluster))
    }

    /// What the CA revoked (to store beside it).
    pub fn revocations(&self) -> crate::ca::Revocations {
        self.inner
            .ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revocations()
            .clone()
    }

    /// A fresh key and a certificate for the cell itself (`identity`, dialled at
    /// `addresses`), valid for `lifetime`: what [`crate::tls::CellCert`] serves.
    pub fn own_certificate(
        &self,
        identity: &ClusterIdentity,
        addresses: &[String],
        lifetime: jiff::SignedDuration,
    ) -> Result<(IssuedCert, AgentKey), CaError> {
        let key = AgentKey::generate()?;
        let ca = self.inner.ca.read().unwrap_or_else(|e| e.into_inner());
        let cert = ca.sign_csr_at(
            &key.csr_pem(identity)?,
            identity,
            addresses,
            jiff::Timestamp::now(),
            lifetime,
        )?;
        Ok((cert, key))
    }

    /// The cluster CA's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.inner
            .ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert_pem()
    }

    /// Forgets a deleted cluster: its token, every certificate issued to it until now
    /// (revoked), its stream (closed) and its cross-cluster declarations.
    pub fn revoke_cluster(&self, cluster: &str) {
        lock(&self.inner.tokens).revoke(cluster);
        self.inner
            .ca
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .revoke_cluster(cluster, jiff::Timestamp::now());
        self.inner.agents.forget_report(cluster);
        self.inner.agents.disconnect(
            cluster,
            Status::unauthenticated("the cluster was deleted and its certificates revoked"),
        );
    }

    /// Sets what the cell distributes; a set with the same contents as the current one
    /// changes nothing. Returns the revision now distributed.
    pub fn distribute(&self, objects: BTreeMap<ObjectKey, Vec<u8>>) -> u64 {
        let mut revision = 0;
        self.inner.distribution.send_if_modified(|current| {
            let next = DistributedSet::new(current.revision() + 1, objects);
            if next.digest() == current.digest() {
                revision = current.revision();
                return false;
            }
            revision = next.revision();
            *current = Arc::new(next);
            true
        });
        revision
    }

    /// The set distributed now.
    pub fn distributed(&self) -> Arc<DistributedSet> {
        self.inner.distribution.borrow().clone()
    }

    /// Sets each child's cross-cluster routes (a child not named has none); each connected
    /// agent is sent its own when they change, and on every new stream. Until this is first
    /// called no routes are sent at all.
    pub fn set_routes(&self, routes: BTreeMap<String, pb::MeshRoutes>) {
        self.inner.routes.send_if_modified(|current| {
            if current.as_deref() == Some(&routes) {
                return false;
            }
            *current = Some(Arc::new(routes));
            true
        });
    }

    /// Serves the tunnel on `listener` with `tls` (see [`crate::tls::cell_config`]) until
    /// `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: rustls::ServerConfig,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(
            self.inner.config.max_handshakes.max(1),
        ));
        let accept = tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a tunnel connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let inner = inner.clone();
                // Handshakes run beside the accept loop, so a slow client holds up no one.
                tokio::spawn(async move {
                    let _permit = permit;
                    let timeout = inner.config.handshake_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                        }
                        Ok(Err(e)) => {
                            inner.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(%remote, error = %e, "tunnel handshake refused");
                        }
                        Err(_) => {
                            inner.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(%remote, "tunnel handshake timed out");
                        }
                    }
                });
            }
        });
        let heartbeat = self.inner.config.heartbeat;
        let closing = self.inner.closing.clone();
        let service = CellServer::new(self).max_decoding_message_size(MAX_AGENT_MESSAGE_BYTES);
        let shutdown = async move {
            shutdown.await;
            closing.cancel();
        };
        let served = tonic::transport::Server::builder()
            // An agent holds one stream, now and then renews, and answers each proxied
            // request on a stream of its own (watches stay open).
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
            .http2_keepalive_interval(Some(heartbeat))
            .http2_keepalive_timeout(Some(heartbeat * 2))
            .serve_with_incoming_shutdown(service, ReceiverStream::new(rx), shutdown)
            .await;
        accept.abort();
        // Aborting only asks; the listener is closed once the task is gone, and the port
        // must be free again when this returns (a new leader, or a restart, binds it).
        let _ = accept.await;
        served
    }

    /// Sends `request` for `target` to the agent of `via` (the connected child whose subtree
    /// holds `target.cluster`) and returns its response, the body streaming as it comes.
    /// Dropping the body cancels the request at the agent.
    pub async fn forward(
        &self,
        via: &str,
        target: Forwarded,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<ProxyBody>, ForwardError> {
        let broken = |why: &str| ForwardError::Broken(via.to_owned(), why.to_owned());
        let (parts, body) = request.into_parts();
        if body.len() > MAX_REQUEST_BODY {
            return Err(ForwardError::Request(format!(
                "the body is {} bytes; at most {MAX_REQUEST_BODY} cross the tunnel",
                body.len()
            )));
        }
        if upgrade_of(&parts.headers).is_some() {
            return Err(ForwardError::Request(
                "an upgrade is opened with Cell::upgrade, not forwarded".into(),
            ));
        }
        let Accepted { mut up, down } = self.open(via, &target, &parts).await?;
        let send = |body: pb::proxy_down::Body| {
            let down = down.clone();
            async move {
                down.send(Ok(pb::ProxyDown { body: Some(body) }))
                    .await
                    .is_ok()
            }
        };
        for chunk in body.chunks(CHUNK) {
            if !send(pb::proxy_down::Body::Data(chunk.to_vec())).await {
                return Err(broken("the stream closed while the body was sent"));
            }
        }
        if !send(pb::proxy_down::Body::EndOfBody(true)).await {
            return Err(broken("the stream closed while the body was sent"));
        }
        let head = response_head_of(via, &mut up).await?;
        answer(head, up, down).map_err(|e| broken(&e))
    }

    /// Opens the connection `request` asks to switch to (exec, attach, port-forward) on
    /// `target.cluster`, through the agent of `via`. A 101 comes back with the connection,
    /// whose bytes then cross on the same stream; any other answer streams as in
    /// [`Cell::forward`]. Dropping the connection closes it at the far end.
    pub async fn upgrade(
        &self,
        via: &str,
        target: Forwarded,
        request: http::Request<()>,
    ) -> Result<Upgrade, ForwardError> {
        let broken = |why: &str| ForwardError::Broken(via.to_owned(), why.to_owned());
        let (parts, ()) = request.into_parts();
        if upgrade_of(&parts.headers).is_none() {
            return Err(ForwardError::Request(
                "the request asks to switch to no protocol".into(),
            ));
        }
        let Accepted { mut up, down } = self.open(via, &target, &parts).await?;
        let head = response_head_of(via, &mut up).await?;
        if head.status != u32::from(http::StatusCode::SWITCHING_PROTOCOLS.as_u16()) {
            return Ok(Upgrade::Answered(
                answer(head, up, down).map_err(|e| broken(&e))?,
            ));
        }
        let (switched, ()) = response_from_head(head, ())
            .map_err(|e| broken(&e))?
            .into_parts();
        let (ours, theirs) = tokio::io::duplex(UPGRADE_BUFFER);
        tokio::spawn(crate::upgrade::at_cell(theirs, up, down));
        Ok(Upgrade::Switched(
            http::Response::from_parts(switched, ()),
            Box::new(ours),
        ))
    }

    /// Sends the head of `request` down `via`'s `Connect` stream and waits for its agent to
    /// open the `Proxy` stream that answers it.
    async fn open(
        &self,
        via: &str,
        target: &Forwarded,
        request: &http::request::Parts,
    ) -> Result<Accepted, ForwardError> {
        let sender = self
            .inner
            .agents
            .sender(via)
            .ok_or_else(|| ForwardError::NotConnected(via.to_owned()))?;
        let id = request_id().map_err(|e| ForwardError::Request(e.to_owned()))?;
        let (accept, accepted) = tokio::sync::oneshot::channel();
        lock(&self.inner.pending).insert(
            id.clone(),
            Pending {
                cluster: via.to_owned(),
                accept,
            },
        );
        let _guard = PendingGuard {
            pending: &self.inner.pending,
            id: id.clone(),
        };
        let head = pb::CellMessage {
            body: Some(pb::cell_message::Body::ProxyRequest(request_head(
                &id, target, request,
            ))),
        };
        sender
            .send(Ok(head))
            .await
            .map_err(|_| ForwardError::NotConnected(via.to_owned()))?;
        let wait = self.inner.config.handshake_timeout;
        match tokio::time::timeout(wait, accepted).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(_)) => Err(ForwardError::Broken(
                via.to_owned(),
                "the request was dropped".into(),
            )),
            Err(_) => Err(ForwardError::NoAnswer(via.to_owned(), wait)),
        }
    }

    /// Sends a lifecycle command to `cluster`'s agent and waits up to `wait` for its answer.
    /// The answer comes on the stream the command went down: if that stream closes first,
    /// the command failed, and the caller may send it again (commands are idempotent
    /// steps).
    pub async fn command(
        &self,
        cluster: &str,
        operation: pb::lifecycle_command::Operation,
        payload: Vec<u8>,
        wait: Duration,
    ) -> Result<String, CommandError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(CommandError::Command(format!(
                "the payload is {} bytes; at most {MAX_PAYLOAD_BYTES} cross the tunnel",
                payload.len()
            )));
        }
        let queue = self
            .inner
            .agents
            .commands(cluster)
            .ok_or_else(|| CommandError::NotConnected(cluster.to_owned()))?;
        let operation_id = request_id().map_err(|e| CommandError::Command(e.to_owned()))?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let command = pb::LifecycleCommand {
            operation_id,
            operation: operation as i32,
            payload,
        };
        queue
            .send(Queued { command, answer })
            .await
            .map_err(|_| CommandError::Closed(cluster.to_owned()))?;
        match tokio::time::timeout(wait, answered).await {
            Err(_) => Err(CommandError::NoAnswer(cluster.to_owned(), wait)),
            Ok(Err(_)) => Err(CommandError::Closed(cluster.to_owned())),
            Ok(Ok(result)) if result.ok => Ok(result.message),
            Ok(Ok(result)) => Err(CommandError::Refused(cluster.to_owned(), result.message)),
        }
    }

    fn peer<T>(&self, request: &Request<T>) -> Result<ClusterIdentity, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let ca = self.inner.ca.read().unwrap_or_else(|e| e.into_inner());
        ca.check_peer(leaf, jiff::Timestamp::now()).map_err(refused)
    }

    fn issue(&self, csr_pem: &str, identity: &ClusterIdentity) -> Result<IssuedCert, Status> {
        let ca = self.inner.ca.read().unwrap_or_else(|e| e.into_inner());
        ca.sign_csr(
            csr_pem,
            identity,
            jiff::Timestamp::now(),
            self.inner.config.certificate_lifetime,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    fn answer(&self, cert: IssuedCert) -> pb::IssuedCertificate {
        pb::IssuedCertificate {
            certificate_pem: cert.pem.clone(),
            ca_pem: self.ca_pem(),
            not_after_unix: cert.not_after.as_second(),
            renew_at_unix: cert.renew_at().as_second(),
        }
    }
}

type CellStream = ReceiverStream<Result<pb::CellMessage, Status>>;
type ProxyDownStream = ReceiverStream<Result<pb::ProxyDown, Status>>;
type Frame = Result<http_body::Frame<Bytes>, BoxError>;

/// A random request id: 128 bits, hex.
fn request_id() -> Result<String, &'static str> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no randomness for a request id")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The response head an agent sends first on its `Proxy` stream.
async fn response_head_of(
    via: &str,
    up: &mut Streaming<pb::ProxyUp>,
) -> Result<pb::ProxyResponseHead, ForwardError> {
    let broken = |why: &str| ForwardError::Broken(via.to_owned(), why.to_owned());
    match up.message().await {
        Ok(Some(pb::ProxyUp {
            body: Some(pb::proxy_up::Body::Head(head)),
        })) => Ok(head),
        Ok(Some(pb::ProxyUp {
            body: Some(pb::proxy_up::Body::Abort(why)),
        })) => Err(broken(&why)),
        Ok(Some(_)) => Err(broken("the first answer was not a response head")),
        Ok(None) => Err(broken("the stream ended without an answer")),
        Err(status) => Err(broken(status.message())),
    }
}

/// The response `head` begins, its body streaming from `up` as it comes.
fn answer(
    head: pb::ProxyResponseHead,
    up: Streaming<pb::ProxyUp>,
    down: mpsc::Sender<Result<pb::ProxyDown, Status>>,
) -> Result<http::Response<ProxyBody>, String> {
    let (frames, body) = mpsc::channel(4);
    tokio::spawn(pump(up, down, frames));
    let body = http_body_util::StreamBody::new(ReceiverStream::new(body)).boxed_unsync();
    response_from_head(head, body)
}

/// Carries an agent's response body to the client. Ends when the agent ends it, or when
/// the client hangs up; either way dropping `down` and `up` cancels it at the agent.
async fn pump(
    mut up: Streaming<pb::ProxyUp>,
    down: mpsc::Sender<Result<pb::ProxyDown, Status>>,
    frames: mpsc::Sender<Frame>,
) {
    loop {
        let message = tokio::select! {
            () = frames.closed() => break,
            message = up.message() => message,
        };
        let frame: Frame = match message {
            Ok(Some(pb::ProxyUp {
                body: Some(pb::proxy_up::Body::Data(data)),
            })) => Ok(http_body::Frame::data(Bytes::from(data))),
            Ok(None) => break,
            Ok(Some(pb::ProxyUp {
                body: Some(pb::proxy_up::Body::Abort(why)),
            })) => Err(format!("the answer broke off: {why}").into()),
            Ok(Some(_)) => Err("the agent broke the protocol mid-answer".into()),
            Err(status) => Err(format!("the tunnel broke off: {}", status.message()).into()),
        };
        let failed = frame.is_err();
        if frames.send(frame).await.is_err() || failed {
            break;
        }
    }
    drop(down);
}

#[tonic::async_trait]
impl CellRpc for Cell {
    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::IssuedCertificate>, Status> {
        let remote = request.remote_addr();
        let request = request.into_inner();
        let trust_domain = self
            .inner
            .ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .trust_domain()
            .to_owned();
        let identity = ClusterIdentity::new(&trust_domain, &request.cluster)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cert = self.issue(&request.csr_pem, &identity)?;
        if let Err(e) = lock(&self.inner.tokens).redeem(
            &request.cluster,
            &request.token,
            jiff::Timestamp::now(),
        ) {
            tracing::warn!(cluster = %request.cluster, ?remote, reason = %e, "bootstrap refused");
            return Err(Status::unauthenticated("the bootstrap token was refused"));
        }
        tracing::info!(cluster = %request.cluster, ?remote, "bootstrapped");
        Ok(Response::new(self.answer(cert)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssuedCertificate>, Status> {
        let identity = self.peer(&request)?;
        let cert = self.issue(&request.get_ref().csr_pem, &identity)?;
        Ok(Response::new(self.answer(cert)))
    }

    type ConnectStream = CellStream;
    type ProxyStream = ProxyDownStream;

    async fn proxy(
        &self,
        request: Request<Streaming<pb::ProxyUp>>,
    ) -> Result<Response<ProxyDownStream>, Status> {
        let identity = self.peer(&request)?;
        let mut up = request.into_inner();
        let first = tokio::time::timeout(self.inner.config.handshake_timeout, up.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no ProxyAccept in time"))??;
        let Some(pb::proxy_up::Body::Accept(accept)) = first.and_then(|m| m.body) else {
            return Err(Status::failed_precondition(
                "the first message must be a ProxyAccept",
            ));
        };
        let pending = {
            let mut pending = lock(&self.inner.pending);
            match pending.get(&accept.request_id) {
                None => {
                    return Err(Status::not_found(format!(
                        "no request {:?} is waiting",
                        accept.request_id
                    )));
                }
                // Left waiting: another cluster's agent cannot take or cancel it.
                Some(p) if p.cluster != identity.cluster => {
                    return Err(Status::permission_denied(format!(
                        "request {:?} was not sent to cluster {:?}",
                        accept.request_id, identity.cluster
                    )));
                }
                Some(_) => pending.remove(&accept.request_id),
            }
        };
        let Some(pending) = pending else {
            return Err(Status::not_found("the request is gone"));
        };
        let (down, rx) = mpsc::channel(8);
        pending
            .accept
            .send(Accepted { up, down })
            .map_err(|_| Status::cancelled("the request was withdrawn"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<CellStream>, Status> {
        let identity = self.peer(&request)?;
        let remote = request.remote_addr();
        let (tx, rx) = mpsc::channel(16);
        let cell = self.clone();
        tokio::spawn(async move {
            cell.run_session(identity, remote, request.into_inner(), tx)
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Cell {
    async fn run_session(
        &self,
        identity: ClusterIdentity,
        remote: Option<SocketAddr>,
        mut inbound: Streaming<pb::AgentMessage>,
        tx: mpsc::Sender<Result<pb::CellMessage, Status>>,
    ) {
        let agents = &self.inner.agents;
        let cluster = identity.cluster.clone();
        let id = self.inner.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let close = Closer::default();
        let mut session = CellSession::new(identity);
        let (commands, mut queued) = mpsc::channel::<Queued>(8);
        // Commands sent on this stream, by id, and where each one's answer goes.
        let mut awaiting: HashMap<String, tokio::sync::oneshot::Sender<pb::CommandResult>> =
            HashMap::new();
        let mut distribution = self.inner.distribution.subscribe();
        let mut routes = self.inner.routes.subscribe();
        // The routes this stream was last sent (none yet: once the cell has decided, an open
        // stream is sent its own, even an empty set, so a reconnecting agent drops routes
        // withdrawn meanwhile).
        let mut sent_routes: Option<pb::MeshRoutes> = None;
        let mut routes_due = true;
        let silence = self.inner.config.heartbeat * 3;
        let mut deadline = tokio::time::Instant::now() + silence;
        let send = |body: pb::cell_message::Body| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(pb::CellMessage { body: Some(body) }))
                    .await
                    .is_ok()
            }
        };
        let end = loop {
            let sync = tokio::select! {
                () = close.token.cancelled() => break Some(close.reason()),
                () = self.inner.closing.cancelled() => break Some(Status::unavailable("the cell is shutting down")),
                () = tokio::time::sleep_until(deadline) => {
                    break Some(Status::deadline_exceeded("no heartbeat for three intervals"))
                }
                changed = distribution.changed() => {
                    if changed.is_err() {
                        break Some(Status::unavailable("the cell is shutting down"));
                    }
                    true
                }
                changed = routes.changed() => {
                    if changed.is_err() {
                        break Some(Status::unavailable("the cell is shutting down"));
                    }
                    // Seen now, sent below once the stream is open.
                    routes.borrow_and_update();
                    routes_due = true;
                    false
                }
                Some(Queued { command, answer }) = queued.recv() => {
                    session.command_sent(&command.operation_id);
                    awaiting.insert(command.operation_id.clone(), answer);
                    if !send(pb::cell_message::Body::Command(command)).await {
                        break None;
                    }
                    false
                }
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => break None,
                        // Undecodable or oversized: tonic's status says which.
                        Err(status) => break Some(status),
                    };
                    match session.receive(message) {
                        Err(violation) => {
                            tracing::warn!(%cluster, error = %violation, "tunnel protocol violation");
                            break Some(violation.into());
                        }
                        Ok(Event::Opened(health)) => {
                            deadline = tokio::time::Instant::now() + silence;
                            let now = jiff::Timestamp::now();
                            agents.open(&cluster, id, AgentStatus {
                                session_id: id.to_string(),
                                remote,
                                connected_since: now,
                                last_heartbeat: now,
                                health,
                                synced_revision: None,
                                diverged: false,
                                heartbeats: 0,
                            }, close.clone(), tx.clone(), commands.clone());
                            tracing::info!(%cluster, session = id, "agent connected");
                            let welcome = pb::Welcome {
                                session_id: id.to_string(),
                                heartbeat_seconds: u32::try_from(self.inner.config.heartbeat.as_secs().max(1)).unwrap_or(u32::MAX),
                            };
                            if !send(pb::cell_message::Body::Welcome(welcome)).await {
                                break None;
                            }
                            true
                        }
                        Ok(Event::Heartbeat(health)) => {
                            deadline = tokio::time::Instant::now() + silence;
                            agents.update(&cluster, id, |s| {
                                s.health = health;
                                s.last_heartbeat = jiff::Timestamp::now();
                                s.heartbeats += 1;
                            });
                            false
                        }
                        Ok(Event::Synced { revision }) => {
                            agents.update(&cluster, id, |s| {
                                s.synced_revision = Some(revision);
                                s.diverged = false;
                            });
                            false
                        }
                        Ok(Event::Diverged { revision }) => {
                            tracing::warn!(%cluster, revision, "agent's distributed set diverged; resending it whole");
                            agents.update(&cluster, id, |s| s.diverged = true);
                            true
                        }
                        Ok(Event::Superseded) => false,
                        Ok(Event::Mesh(report)) => {
                            agents.report(&cluster, id, report);
                            false
                        }
                        Ok(Event::Answered(result)) => {
                            // The caller may have stopped waiting; the answer is then moot.
                            if let Some(answer) = awaiting.remove(&result.operation_id) {
                                let _ = answer.send(result);
                            }
                            false
                        }
                    }
                }
            };
            if sync {
                let current = distribution.borrow_and_update().clone();
                if let Some(sync) = session.sync(&current)
                    && !send(pb::cell_message::Body::Sync(sync)).await
                {
                    break None;
                }
            }
            if routes_due && session.is_open() {
                routes_due = false;
                let own = routes
                    .borrow()
                    .as_ref()
                    .map(|all| all.get(&cluster).cloned().unwrap_or_default());
                if let Some(own) = own
                    && sent_routes.as_ref() != Some(&own)
                {
                    if !send(pb::cell_message::Body::MeshRoutes(own.clone())).await {
                        break None;
                    }
                    sent_routes = Some(own);
                }
            }
        };
        if let Some(status) = end {
            let _ = tx.send(Err(status)).await;
        }
        agents.close(&cluster, id);
        tracing::info!(%cluster, session = id, "agent stream closed");
    }
}
