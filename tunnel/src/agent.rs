//! The agent: a child's end of the tunnel. It dials out to the cell (the child exposes no
//! port), bootstraps once with its token and a CSR for a key it generated, then holds one
//! mutually authenticated stream: a `Hello`, heartbeats with its cluster's health, and the
//! distributed set it applies and acknowledges. When the stream ends it reconnects with
//! exponential backoff and full jitter; the cell then sends the full set again. While it is
//! offline it keeps the last set it held. It renews its certificate at two-thirds of its life.
//! A proxied request the cell sends down gets a `Proxy` stream of its own, answered by the
//! agent's [`ProxyHandler`]; the cell hanging up cancels it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use lattice_proto::tunnel::v1 as pb;
use pb::cell_client::CellClient;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::ca::{AgentKey, CaError};
use crate::command::CommandHandler;
use crate::distribution::DistributedSet;
use crate::forward::{
    CHUNK, MAX_REQUEST_BODY, ProxyBody, ProxyHandler, Upgrade, request_from_head, response_head,
    status_response,
};
use crate::identity::{ClusterIdentity, IdentityError};
use crate::session::Health;
use crate::tls::{TlsError, agent_config};

/// The largest message the agent accepts from the cell (a full distributed set).
pub const MAX_CELL_MESSAGE_BYTES: usize = 64 << 20;

/// Where and who the agent is.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The LatticeCluster this agent runs in.
    pub cluster: String,
    /// The hierarchy's trust domain.
    pub trust_domain: String,
    /// The cell's address, `host:port`.
    pub cell: String,
    /// The name the cell's certificate carries for that address (a DNS name or an IP).
    pub server_name: String,
    /// How long to wait for a connection or an answer.
    pub timeout: Duration,
    /// The first reconnect delay; it doubles (with jitter) up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl AgentConfig {
    /// A configuration with the default timings.
    pub fn new(cluster: &str, trust_domain: &str, cell: &str, server_name: &str) -> AgentConfig {
        AgentConfig {
            cluster: cluster.to_owned(),
            trust_domain: trust_domain.to_owned(),
            cell: cell.to_owned(),
            server_name: server_name.to_owned(),
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the agent authenticates with. Its key was generated here and is never sent.
#[derive(Clone)]
pub struct Credentials {
    /// The agent's PKCS#8 private key, DER.
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    /// The cluster CA the cell chains to.
    pub ca_pem: String,
    pub not_after: jiff::Timestamp,
    pub renew_at: jiff::Timestamp,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("not_after", &self.not_after)
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

/// Why the agent could not do what it tried.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the cell address {0:?} is not usable: {1}")]
    Address(String, String),
    #[error("cannot reach the cell: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the cell refused: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the cell broke the protocol: {0}")]
    Protocol(String),
    #[error("the cell's answer is not usable: {0}")]
    Answer(String),
}

/// Reads the child's health for heartbeats.
pub trait HealthProbe: Send + Sync + 'static {
    /// The cluster's health now.
    fn probe(&self) -> Pin<Box<dyn Future<Output = Health> + Send + '_>>;
}

/// A probe that always reports the same health (a cluster whose health is read elsewhere,
/// and tests).
impl HealthProbe for Health {
    fn probe(&self) -> Pin<Box<dyn Future<Output = Health> + Send + '_>> {
        Box::pin(std::future::ready(self.clone()))
    }
}

/// Where the agent's stream is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not connected; `attempt` reconnects have failed in a row.
    Disconnected { attempt: u32, reason: String },
    /// Welcomed by the cell.
    Connected { session_id: String },
}

/// A gRPC channel to the cell over `tls` (TLS 1.3, HTTP/2), kept alive with pings.
pub async fn dial(config: &AgentConfig, tls: rustls::ClientConfig) -> Result<Channel, AgentError> {
    let name = ServerName::try_from(config.server_name.clone())
        .map_err(|e| AgentError::Address(config.server_name.clone(), e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let cell = config.cell.clone();
    let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        let name = name.clone();
        let cell = cell.clone();
        async move {
            let tcp = TcpStream::connect(&cell).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    // TLS is the connector's; the URI only names the authority in requests.
    let endpoint = Endpoint::from_shared(format!("http://{}", config.server_name))
        .map_err(|e| AgentError::Address(config.server_name.clone(), e.to_string()))?
        .connect_timeout(config.timeout)
        .http2_keep_alive_interval(config.timeout)
        .keep_alive_timeout(config.timeout)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_with_connector(connect).await?)
}

fn client(channel: Channel) -> CellClient<Channel> {
    CellClient::new(channel).max_decoding_message_size(MAX_CELL_MESSAGE_BYTES)
}

fn credentials(key: &AgentKey, answer: pb::IssuedCertificate) -> Result<Credentials, AgentError> {
    let at = |s: i64| {
        jiff::Timestamp::from_second(s).map_err(|e| AgentError::Answer(format!("time {s}: {e}")))
    };
    Ok(Credentials {
        key_der: key.private_key_der(),
        cert_pem: answer.certificate_pem,
        ca_pem: answer.ca_pem,
        not_after: at(answer.not_after_unix)?,
        renew_at: at(answer.renew_at_unix)?,
    })
}

/// Redeems `token`: generates the agent's key, sends a CSR for `config`'s identity, and
/// returns the credentials the cell signed. `ca_pem` is the cluster CA the cell's
/// certificate must chain to (handed to the child with the token).
pub async fn bootstrap(
    config: &AgentConfig,
    ca_pem: &str,
    token: &str,
) -> Result<Credentials, AgentError> {
    let identity = ClusterIdentity::new(&config.trust_domain, &config.cluster)?;
    let key = AgentKey::generate()?;
    let csr_pem = key.csr_pem(&identity)?;
    let mut cell = client(dial(config, agent_config(ca_pem, None)?).await?);
    let answer = cell
        .bootstrap(pb::BootstrapRequest {
            cluster: config.cluster.clone(),
            token: token.to_owned(),
            csr_pem,
        })
        .await?
        .into_inner();
    credentials(&key, answer)
}

/// Full jitter: a delay drawn uniformly from [0, min(max, min_backoff · 2^attempt)].
pub fn backoff(config: &AgentConfig, attempt: u32) -> Duration {
    let cap = config
        .min_backoff
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(config.max_backoff);
    let mut bytes = [0u8; 8];
    // Without randomness, wait the whole cap: slower, never synchronized retries by design.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        return cap;
    }
    let fraction = u64::from_le_bytes(bytes) as f64 / u64::MAX as f64;
    cap.mul_f64(fraction)
}

/// A child's agent.
pub struct Agent {
    config: AgentConfig,
    credentials: Mutex<Credentials>,
    probe: Arc<dyn HealthProbe>,
    handler: Option<Arc<dyn ProxyHandler>>,
    commands: Option<Arc<dyn CommandHandler>>,
    held: watch::Sender<Arc<DistributedSet>>,
    link: watch::Sender<Link>,
    /// This cluster's cross-cluster declarations, sent up on every stream and on change.
    mesh: watch::Sender<Arc<pb::MeshReport>>,
    /// The routes the cell last sent (kept while it is unreachable); none before the first.
    routes: watch::Sender<Option<Arc<pb::MeshRoutes>>>,
}

impl Agent {
    /// An agent with bootstrapped `credentials`, reporting what `probe` reads.
    pub fn new(
        config: AgentConfig,
        credentials: Credentials,
        probe: Arc<dyn HealthProbe>,
    ) -> Agent {
        Agent {
            config,
            credentials: Mutex::new(credentials),
            probe,
            handler: None,
            commands: None,
            held: watch::channel(Arc::new(DistributedSet::default())).0,
            mesh: watch::channel(Arc::default()).0,
            routes: watch::channel(None).0,
            link: watch::channel(Link::Disconnected {
                attempt: 0,
                reason: "not started".into(),
            })
            .0,
        }
    }

    /// Answers proxied requests with `handler`; without one, the agent refuses them (501).
    pub fn with_proxy(mut self, handler: Arc<dyn ProxyHandler>) -> Agent {
        self.handler = Some(handler);
        self
    }

    /// Does the cell's lifecycle commands with `handler`; without one, the agent refuses
    /// them.
    pub fn with_commands(mut self, handler: Arc<dyn CommandHandler>) -> Agent {
        self.commands = Some(handler);
        self
    }

    /// The distributed set the agent holds (kept while the cell is unreachable).
    pub fn distributed(&self) -> watch::Receiver<Arc<DistributedSet>> {
        self.held.subscribe()
    }

    /// Reports this cluster's cross-cluster declarations (all of them) to the cell; an
    /// unchanged report is not sent again.
    pub fn report_mesh(&self, report: pb::MeshReport) {
        self.mesh.send_if_modified(|current| {
            if **current == report {
                return false;
            }
            *current = Arc::new(report);
            true
        });
    }

    /// Reads this cluster's health and sends it up as a heartbeat; returns the clusters
    /// below it, as sent.
    async fn beat(
        &self,
        tx: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<std::collections::HashSet<String>, AgentError> {
        let health = self.probe.probe().await;
        let beat = pb::Heartbeat {
            unix_millis: jiff::Timestamp::now().as_millisecond(),
            health: Some((&health).into()),
        };
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Heartbeat(beat)),
        })
        .await
        .map_err(|_| AgentError::Protocol("the stream closed".into()))?;
        Ok(below_of(&health))
    }

    /// The declarations of `report` for this cluster and the clusters `below` it: what the
    /// cell will take (a relayed declaration of a cluster no longer below is dropped).
    fn within(
        &self,
        report: &pb::MeshReport,
        below: &std::collections::HashSet<String>,
    ) -> pb::MeshReport {
        pb::MeshReport {
            declarations: report
                .declarations
                .iter()
                .filter(|d| d.cluster == self.config.cluster || below.contains(&d.cluster))
                .cloned()
                .collect(),
        }
    }

    /// The cross-cluster routes the cell last sent for this cluster and the clusters below
    /// it: its side of every allowed edge, and those it relays down. Kept while the cell is unreachable; `None` until the cell first sends
    /// them (so a restarted agent withdraws nothing before it knows).
    pub fn routes(&self) -> watch::Receiver<Option<Arc<pb::MeshRoutes>>> {
        self.routes.subscribe()
    }

    /// Where the stream is.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    /// The credentials now (renewed ones replace bootstrapped ones; persist them).
    pub fn credentials(&self) -> Credentials {
        self.credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps the tunnel up until `shutdown`: connects, and after a stream ends, waits a
    /// jittered, growing delay and connects again.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            let welcomed = std::sync::atomic::AtomicBool::new(false);
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.session(&welcomed) => result,
            };
            if welcomed.load(std::sync::atomic::Ordering::Relaxed) {
                attempt = 0;
            }
            let reason = match result {
                Ok(()) => "the cell closed the stream".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::info!(cluster = %self.config.cluster, %reason, attempt, "tunnel down; reconnecting");
            self.link
                .send_replace(Link::Disconnected { attempt, reason });
            let delay = backoff(&self.config, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn renew(&self, cell: &mut CellClient<Channel>) -> Result<(), AgentError> {
        let identity = ClusterIdentity::new(&self.config.trust_domain, &self.config.cluster)?;
        let key = AgentKey::generate()?;
        let answer = cell
            .renew(pb::RenewRequest {
                csr_pem: key.csr_pem(&identity)?,
            })
            .await?
            .into_inner();
        let renewed = credentials(&key, answer)?;
        tracing::info!(cluster = %self.config.cluster, not_after = %renewed.not_after, "certificate renewed");
        *self.credentials.lock().unwrap_or_else(|e| e.into_inner()) = renewed;
        Ok(())
    }

    /// One stream, until it ends.
    async fn session(&self, welcomed: &std::sync::atomic::AtomicBool) -> Result<(), AgentError> {
        let creds = self.credentials();
        let tls = agent_config(
            &creds.ca_pem,
            Some((&creds.cert_pem, creds.key_der.clone())),
        )?;
        let mut cell = client(dial(&self.config, tls).await?);
        let (tx, rx) = mpsc::channel(16);
        let send = |body: pb::agent_message::Body| {
            let tx = tx.clone();
            async move {
                tx.send(pb::AgentMessage { body: Some(body) })
                    .await
                    .map_err(|_| AgentError::Protocol("the stream closed".into()))
            }
        };
        let health = self.probe.probe().await;
        send(pb::agent_message::Body::Hello(pb::Hello {
            cluster: self.config.cluster.clone(),
            health: Some((&health).into()),
        }))
        .await?;
        let mut inbound = cell.connect(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match tokio::time::timeout(self.config.timeout, inbound.message()).await {
            Err(_) => return Err(AgentError::Protocol("no Welcome in time".into())),
            Ok(message) => match message?.and_then(|m| m.body) {
                Some(pb::cell_message::Body::Welcome(w)) => w,
                other => {
                    return Err(AgentError::Protocol(format!(
                        "the first message was {other:?}, not a Welcome"
                    )));
                }
            },
        };
        welcomed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.link.send_replace(Link::Connected {
            session_id: welcome.session_id.clone(),
        });
        tracing::info!(cluster = %self.config.cluster, session = %welcome.session_id, "tunnel up");
        let every = Duration::from_secs(u64::from(welcome.heartbeat_seconds.clamp(1, 3600)));
        let mut heartbeat = tokio::time::interval(every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        // The clusters below this one as last sent up: the cell takes declarations and the
        // agent takes routes only for them (and this cluster).
        let mut below = below_of(&health);
        let mut mesh = self.mesh.subscribe();
        let report = mesh.borrow_and_update().clone();
        send(pb::agent_message::Body::MeshReport(
            self.within(&report, &below),
        ))
        .await?;
        loop {
            let renew_in = creds_renew_in(&self.credentials());
            tokio::select! {
                changed = mesh.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    // Health first: a report may relay declarations of a cluster that has
                    // only just appeared below this one, and the cell must know it is.
                    below = self.beat(&tx).await?;
                    let report = mesh.borrow_and_update().clone();
                    send(pb::agent_message::Body::MeshReport(self.within(&report, &below))).await?;
                }
                _ = heartbeat.tick() => below = self.beat(&tx).await?,
                () = tokio::time::sleep(renew_in) => self.renew(&mut cell).await?,
                message = inbound.message() => {
                    let Some(message) = message? else { return Ok(()) };
                    match message.body {
                        Some(pb::cell_message::Body::Sync(sync)) => {
                            let revision = sync.revision;
                            let held = self.held.borrow().clone();
                            let hash = match held.apply(sync) {
                                Ok(next) => {
                                    let hash = next.digest();
                                    self.held.send_replace(Arc::new(next));
                                    hash
                                }
                                Err(e) => {
                                    tracing::warn!(cluster = %self.config.cluster, error = %e, "a distributed sync was refused; keeping the set held");
                                    held.digest()
                                }
                            };
                            send(pb::agent_message::Body::SyncAck(pb::SyncAck {
                                revision,
                                hash: hash.to_vec(),
                            })).await?;
                        }
                        Some(pb::cell_message::Body::MeshRoutes(routes)) => {
                            // Routes that break the rules change nothing: the ones held stay.
                            match crate::peering::check_routes(&self.config.cluster, &below, &routes) {
                                Ok(()) => {
                                    self.routes.send_if_modified(|held| {
                                        if held.as_deref() == Some(&routes) {
                                            return false;
                                        }
                                        *held = Some(Arc::new(routes));
                                        true
                                    });
                                }
                                Err(e) => {
                                    tracing::warn!(cluster = %self.config.cluster, error = %e, "cross-cluster routes refused; keeping the routes held");
                                }
                            }
                        }
                        Some(pb::cell_message::Body::ProxyRequest(head)) => {
                            tokio::spawn(answer(cell.clone(), self.handler.clone(), head));
                        }
                        Some(pb::cell_message::Body::Command(command)) => {
                            tokio::spawn(run_command(self.commands.clone(), command, tx.clone()));
                        }
                        other => {
                            return Err(AgentError::Protocol(format!(
                                "this agent does not take {other:?}"
                            )));
                        }
                    }
                }
            }
        }
    }
}

/// Does one lifecycle command and sends its result up the stream it came down.
async fn run_command(
    handler: Option<Arc<dyn CommandHandler>>,
    command: pb::LifecycleCommand,
    tx: mpsc::Sender<pb::AgentMessage>,
) {
    use pb::lifecycle_command::Operation;
    let outcome = match (Operation::try_from(command.operation), handler) {
        (Ok(Operation::Unspecified) | Err(_), _) => {
            Err(format!("unknown operation {}", command.operation))
        }
        (Ok(_), None) => Err("this agent does no lifecycle commands".to_owned()),
        (Ok(operation), Some(handler)) => handler.handle(operation, command.payload).await,
    };
    let (ok, message) = match outcome {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    let _ = tx
        .send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::CommandResult(pb::CommandResult {
                operation_id: command.operation_id,
                ok,
                message: crate::command::bounded(message),
            })),
        })
        .await;
}

/// The names of the clusters `health` reports below this one.
fn below_of(health: &Health) -> std::collections::HashSet<String> {
    health.descendants.iter().map(|d| d.name.clone()).collect()
}

fn creds_renew_in(creds: &Credentials) -> Duration {
    let now = jiff::Timestamp::now();
    Duration::try_from(creds.renew_at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// How long the agent waits, after its answer is sent, for the cell to end the stream.
const PROXY_LINGER: Duration = Duration::from_secs(30);

type Up = mpsc::Sender<pb::ProxyUp>;

fn up(body: pb::proxy_up::Body) -> pb::ProxyUp {
    pb::ProxyUp { body: Some(body) }
}

/// Answers one proxied request on a `Proxy` stream of its own. The cell ending that stream
/// (its client hung up) drops the handler's work and its response body.
async fn answer(
    mut cell: CellClient<Channel>,
    handler: Option<Arc<dyn ProxyHandler>>,
    head: pb::ProxyRequest,
) {
    let (tx, rx) = mpsc::channel(4);
    let id = head.request_id.clone();
    let accept = up(pb::proxy_up::Body::Accept(pb::ProxyAccept {
        request_id: id.clone(),
    }));
    if tx.send(accept).await.is_err() {
        return;
    }
    let mut down = match cell.proxy(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            tracing::warn!(request = %id, %status, "the cell refused a proxied request's stream");
            return;
        }
    };
    respond(&tx, &mut down, handler, head).await;
    // End the answer, then keep the stream until the cell ends it: dropping it first would
    // reset the HTTP/2 stream and lose what is still queued.
    drop(tx);
    let _ = tokio::time::timeout(PROXY_LINGER, async {
        while let Ok(Some(_)) = down.message().await {}
    })
    .await;
}

/// Reads the request body from `down`, asks `handler`, and sends the response up `tx`;
/// returns early when the cell hangs up.
async fn respond(
    tx: &Up,
    down: &mut tonic::Streaming<pb::ProxyDown>,
    handler: Option<Arc<dyn ProxyHandler>>,
    head: pb::ProxyRequest,
) {
    if !head.upgrade.is_empty() {
        return switch(tx, down, handler, head).await;
    }
    let mut body = Vec::new();
    let mut too_large = false;
    loop {
        match down.message().await {
            Ok(Some(pb::ProxyDown {
                body: Some(pb::proxy_down::Body::Data(data)),
            })) => {
                too_large |= body.len() + data.len() > MAX_REQUEST_BODY;
                if !too_large {
                    body.extend_from_slice(&data);
                }
            }
            Ok(Some(pb::ProxyDown {
                body: Some(pb::proxy_down::Body::EndOfBody(_)),
            })) => break,
            // The cell hung up, or sent nothing readable: nothing to answer.
            Ok(Some(_)) | Ok(None) | Err(_) => return,
        }
    }
    let response = if too_large {
        status_response(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the tunnel carries",
        )
    } else {
        match (request_from_head(head, body.into()), &handler) {
            (Err(why), _) => status_response(http::StatusCode::BAD_REQUEST, &why),
            (Ok(_), None) => no_handler(),
            (Ok((target, request)), Some(handler)) => tokio::select! {
                response = handler.handle(target, request) => response,
                _ = down.message() => return,
            },
        }
    };
    send_response(tx, down, response).await;
}

fn no_handler() -> http::Response<ProxyBody> {
    status_response(
        http::StatusCode::NOT_IMPLEMENTED,
        "this cluster's agent serves no proxied requests",
    )
}

/// Opens the connection an upgrade asks for and carries it until either end closes; an
/// answer other than a switch goes up as any response.
async fn switch(
    tx: &Up,
    down: &mut tonic::Streaming<pb::ProxyDown>,
    handler: Option<Arc<dyn ProxyHandler>>,
    head: pb::ProxyRequest,
) {
    let upgrade = match (request_from_head(head, bytes::Bytes::new()), &handler) {
        (Err(why), _) => Upgrade::Answered(status_response(http::StatusCode::BAD_REQUEST, &why)),
        (Ok(_), None) => Upgrade::Answered(no_handler()),
        (Ok((target, request)), Some(handler)) => {
            let (parts, _) = request.into_parts();
            tokio::select! {
                upgrade = handler.upgrade(target, http::Request::from_parts(parts, ())) => upgrade,
                _ = down.message() => return,
            }
        }
    };
    match upgrade {
        Upgrade::Answered(response) => send_response(tx, down, response).await,
        Upgrade::Switched(response, far) => {
            let (parts, ()) = response.into_parts();
            if tx
                .send(up(pb::proxy_up::Body::Head(response_head(&parts))))
                .await
                .is_ok()
            {
                crate::upgrade::at_agent(far, down, tx).await;
            }
        }
    }
}

/// Sends `response` up `tx`, its body as it comes; returns early when the cell hangs up.
async fn send_response(
    tx: &Up,
    down: &mut tonic::Streaming<pb::ProxyDown>,
    response: http::Response<ProxyBody>,
) {
    use http_body_util::BodyExt;
    let (parts, mut body) = response.into_parts();
    if tx
        .send(up(pb::proxy_up::Body::Head(response_head(&parts))))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // Anything more from the cell, or its end, means the client is gone.
            _ = down.message() => return,
        };
        match frame {
            None => return,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                for chunk in data.chunks(CHUNK) {
                    if tx
                        .send(up(pb::proxy_up::Body::Data(chunk.to_vec())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(up(pb::proxy_up::Body::Abort(e.to_string()))).await;
                return;
            }
        }
    }
}
