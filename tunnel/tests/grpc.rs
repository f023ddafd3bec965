//! The tunnel end to end on loopback: a real cell (tonic gRPC over rustls) and real agents.
//! An agent bootstraps with its token and connects; heartbeats carry health into the
//! cell's table; a distributed set reaches it whole, then as deltas; the cell restarts and
//! the agent resyncs with no duplicate; the cell stops and the agent keeps its set. Forged
//! identities, wrong tokens, expired, foreign and revoked certificates, and malformed,
//! oversized or out-of-order messages are refused and change nothing. Proxied requests
//! cross to the agent and stream back; a client leaving cancels them at the agent; only
//! the agent a request was sent to may answer it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut};
use lattice_proto::tunnel::v1 as pb;
use lattice_tunnel::agent::{self, Agent, AgentConfig, Credentials, Link};
use lattice_tunnel::cell::{Cell, CellConfig, RouteError};
use lattice_tunnel::distribution::ObjectKey;
use lattice_tunnel::forward::{
    ForwardError, Forwarded, ProxyBody, ProxyHandler, Upgrade, full, status_response,
};
use lattice_tunnel::session::{Descendant, Health};
use lattice_tunnel::tls::{CellCert, agent_config, cell_config};
use lattice_tunnel::{AgentKey, ClusterCa, ClusterIdentity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const DOMAIN: &str = "lattice.test";
const WAIT: Duration = Duration::from_secs(20);

fn health(ready: u32) -> Health {
    Health {
        nodes_ready: ready,
        nodes_total: 3,
        control_plane_ready: true,
        agent_version: "0.1.0".into(),
        kubernetes_version: "v1.32.0".into(),
        descendants: Vec::new(),
    }
}

/// A running cell on a loopback port.
struct Running {
    cell: Cell,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(cell: Cell, addr: Option<std::net::SocketAddr>) -> Running {
        // Below the ephemeral range, so the port is there again for a restart.
        let addr = addr.unwrap_or_else(|| ([127, 0, 0, 1], lattice_testkit::free_port()).into());
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = ClusterIdentity::new(DOMAIN, "parent").unwrap();
        let (own, key) = cell
            .own_certificate(
                &me,
                &["127.0.0.1".into()],
                jiff::SignedDuration::from_hours(1),
            )
            .unwrap();
        let tls = cell_config(
            &cell.ca_pem(),
            CellCert::new(&own.pem, key.private_key_der()).unwrap(),
        )
        .unwrap();
        let stop = CancellationToken::new();
        let served = tokio::spawn({
            let cell = cell.clone();
            let stop = stop.clone();
            async move {
                cell.serve(listener, tls, stop.cancelled_owned())
                    .await
                    .unwrap();
            }
        });
        Running {
            cell,
            addr,
            stop,
            served,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.served)
            .await
            .expect("the cell stops")
            .unwrap();
    }

    fn config(&self, cluster: &str) -> AgentConfig {
        let mut config = AgentConfig::new(cluster, DOMAIN, &self.addr.to_string(), "127.0.0.1");
        config.timeout = Duration::from_secs(5);
        config.min_backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_millis(500);
        config
    }

    async fn bootstrap(&self, cluster: &str) -> Credentials {
        let token = self
            .cell
            .mint_token(cluster, jiff::SignedDuration::from_mins(10))
            .unwrap();
        agent::bootstrap(&self.config(cluster), &self.cell.ca_pem(), token.secret())
            .await
            .unwrap()
    }
}

fn quick() -> CellConfig {
    CellConfig {
        heartbeat: Duration::from_secs(1),
        ..CellConfig::default()
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn policy(name: &str, body: &str) -> (ObjectKey, Vec<u8>) {
    (
        ObjectKey {
            kind: "CedarPolicy".into(),
            namespace: "lattice-system".into(),
            name: name.into(),
        },
        body.as_bytes().to_vec(),
    )
}

fn start_agent(
    running: &Running,
    cluster: &str,
    creds: Credentials,
) -> (Arc<Agent>, CancellationToken) {
    let agent = Arc::new(Agent::new(
        running.config(cluster),
        creds,
        Arc::new(health(2)),
    ));
    let stop = CancellationToken::new();
    tokio::spawn({
        let agent = agent.clone();
        let stop = stop.clone();
        async move { agent.run(stop).await }
    });
    (agent, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connects_reports_health_receives_the_set_and_resyncs_after_a_restart() {
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let (ca_cert, ca_key) = (ca.cert_pem(), ca.key_pem().to_owned());
    let running = Running::start(Cell::new(ca, quick()), None).await;
    running
        .cell
        .distribute(BTreeMap::from([policy("a", "{\"v\":1}")]));

    let creds = running.bootstrap("edge").await;
    let (agent, stop_agent) = start_agent(&running, "edge", creds);
    let mut held = agent.distributed();

    // Connected, with the health it reported, and the full set arrived.
    let status = eventually("the agent connects", || running.cell.agents().get("edge")).await;
    assert_eq!(status.health, health(2));
    held.wait_for(|s| s.revision() == 2).await.unwrap();
    assert_eq!(held.borrow().objects().len(), 1);

    // Heartbeats keep coming; the ack reached the cell.
    eventually("heartbeats arrive", || {
        running
            .cell
            .agents()
            .get("edge")
            .filter(|s| s.heartbeats >= 2 && s.synced_revision == Some(2))
    })
    .await;

    // A change goes down as a delta and lands whole.
    let revision = running.cell.distribute(BTreeMap::from([
        policy("a", "{\"v\":2}"),
        policy("b", "{}"),
    ]));
    assert_eq!(revision, 3);
    held.wait_for(|s| s.revision() == 3).await.unwrap();
    assert_eq!(held.borrow().digest(), running.cell.distributed().digest());
    assert_eq!(
        running
            .cell
            .distribute(running.cell.distributed().objects().clone()),
        3,
        "the same contents are not a new revision"
    );

    // The parent restarts on the same address with the same CA: the agent comes back,
    // once, and is sent the set again whole.
    let addr = running.addr;
    let objects = running.cell.distributed().objects().clone();
    running.stop().await;
    eventually("the agent notices", || {
        matches!(*agent.link().borrow(), Link::Disconnected { .. }).then_some(())
    })
    .await;
    assert_eq!(
        held.borrow().revision(),
        3,
        "offline, the agent keeps its set"
    );

    let ca = ClusterCa::from_pem(DOMAIN, &ca_cert, &ca_key, Default::default()).unwrap();
    let restarted = Running::start(Cell::new(ca, quick()), Some(addr)).await;
    restarted.cell.distribute(objects);
    let status = eventually("the agent reconnects", || {
        restarted
            .cell
            .agents()
            .get("edge")
            .filter(|s| s.synced_revision == Some(2))
    })
    .await;
    assert_eq!(
        restarted.cell.agents().len(),
        1,
        "one session, no duplicate"
    );
    assert!(!status.diverged);
    assert_eq!(
        held.borrow().digest(),
        restarted.cell.distributed().digest()
    );

    stop_agent.cancel();
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_foreign_expired_and_revoked_certificates_are_refused() {
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    // The same CA, to sign what the cell never would (an expired certificate).
    let same_ca =
        ClusterCa::from_pem(DOMAIN, &ca.cert_pem(), ca.key_pem(), Default::default()).unwrap();
    let running = Running::start(Cell::new(ca, quick()), None).await;
    let config = running.config("edge");
    let ca_pem = running.cell.ca_pem();
    let token = running
        .cell
        .mint_token("edge", jiff::SignedDuration::from_mins(10))
        .unwrap();

    // A wrong token, or the right one for another cluster, gets nothing and spends nothing.
    let wrong = agent::bootstrap(&config, &ca_pem, "guessed")
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, agent::AgentError::Refused(ref s) if s.code() == Code::Unauthenticated),
        "{wrong}"
    );
    let other = agent::bootstrap(&running.config("other"), &ca_pem, token.secret())
        .await
        .unwrap_err();
    assert!(
        matches!(other, agent::AgentError::Refused(ref s) if s.code() == Code::Unauthenticated),
        "{other}"
    );
    let creds = agent::bootstrap(&config, &ca_pem, token.secret())
        .await
        .unwrap();
    let again = agent::bootstrap(&config, &ca_pem, token.secret())
        .await
        .unwrap_err();
    assert!(
        matches!(again, agent::AgentError::Refused(_)),
        "a token works once"
    );

    // An agent trusting another CA will not talk to this cell, nor this cell to it.
    let foreign = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    assert!(
        agent::bootstrap(&config, &foreign.cert_pem(), "x")
            .await
            .is_err()
    );
    let failures = running.cell.handshake_failures();
    let key = AgentKey::generate().unwrap();
    let edge = ClusterIdentity::new(DOMAIN, "edge").unwrap();
    let foreign_cert = foreign
        .sign_csr(
            &key.csr_pem(&edge).unwrap(),
            &edge,
            jiff::Timestamp::now(),
            jiff::SignedDuration::from_hours(1),
        )
        .unwrap();
    let tls = agent_config(&ca_pem, Some((&foreign_cert.pem, key.private_key_der()))).unwrap();
    assert!(
        connect_raw(&config, tls, vec![hello("edge")])
            .await
            .is_err()
    );
    eventually("the foreign certificate fails the handshake", || {
        (running.cell.handshake_failures() > failures).then_some(())
    })
    .await;

    // So does an expired certificate from the right CA.
    let expired = same_ca
        .sign_csr(
            &key.csr_pem(&edge).unwrap(),
            &edge,
            jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48),
            jiff::SignedDuration::from_hours(1),
        )
        .unwrap();
    let failures = running.cell.handshake_failures();
    let tls = agent_config(&ca_pem, Some((&expired.pem, key.private_key_der()))).unwrap();
    assert!(
        connect_raw(&config, tls, vec![hello("edge")])
            .await
            .is_err()
    );
    eventually("the expired certificate fails the handshake", || {
        (running.cell.handshake_failures() > failures).then_some(())
    })
    .await;
    assert!(running.cell.agents().is_empty(), "nothing connected");

    // A connected cluster that is deleted: its stream is closed and its certificate is
    // refused from then on.
    let (agent, stop_agent) = start_agent(&running, "edge", creds.clone());
    eventually("the agent connects", || running.cell.agents().get("edge")).await;
    running.cell.revoke_cluster("edge");
    eventually("the stream is closed", || {
        matches!(*agent.link().borrow(), Link::Disconnected { .. }).then_some(())
    })
    .await;
    let tls = agent_config(&ca_pem, Some((&creds.cert_pem, creds.key_der.clone()))).unwrap();
    let refused = connect_raw(&config, tls, vec![hello("edge")])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    assert!(refused.message().contains("revoked"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        running.cell.agents().is_empty(),
        "the revoked agent stays out"
    );
    stop_agent.cancel();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_renews_its_certificate_at_two_thirds_of_its_life() {
    let config = CellConfig {
        certificate_lifetime: jiff::SignedDuration::from_secs(6),
        ..quick()
    };
    let running = Running::start(
        Cell::new(
            ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap(),
            config,
        ),
        None,
    )
    .await;
    let first = running.bootstrap("edge").await;
    assert_eq!(
        first.renew_at.duration_since(first.not_after),
        -jiff::SignedDuration::from_secs(2),
        "renewed a third of the way before the end"
    );
    let (agent, stop) = start_agent(&running, "edge", first.clone());
    let renewed = eventually("the certificate is renewed", || {
        let now = agent.credentials();
        (now.cert_pem != first.cert_pem).then_some(now)
    })
    .await;
    assert!(renewed.not_after > first.not_after);
    assert_ne!(renewed.key_der, first.key_der, "a new key each time");
    // Past the first certificate's end, it is refused, and the agent's current one works.
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + Duration::try_from(first.not_after.duration_since(jiff::Timestamp::now()))
                .unwrap_or_default()
            + Duration::from_secs(1),
    )
    .await;
    let with =
        |c: &Credentials| agent_config(&c.ca_pem, Some((&c.cert_pem, c.key_der.clone()))).unwrap();
    let current = agent.credentials();
    stop.cancel();
    let cfg = running.config("edge");
    assert!(
        connect_raw(&cfg, with(&first), vec![hello("edge")])
            .await
            .is_err()
    );
    let welcomed = connect_raw(&cfg, with(&current), vec![hello("edge")])
        .await
        .unwrap();
    assert!(matches!(
        welcomed[0].body,
        Some(pb::cell_message::Body::Welcome(_))
    ));
    running.stop().await;
}

fn hello(cluster: &str) -> Vec<u8> {
    use prost::Message;
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            cluster: cluster.into(),
            health: Some((&health(1)).into()),
        })),
    }
    .encode_to_vec()
}

/// Passes bytes through as gRPC messages, so a test can send what no agent would.
#[derive(Clone, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// Opens `Connect` with `tls`, sends `messages` (raw bytes), and reads until the cell
/// ends the stream: its status, or the messages it sent if it did not end it.
async fn connect_raw(
    config: &AgentConfig,
    tls: rustls::ClientConfig,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<pb::CellMessage>, tonic::Status> {
    use prost::Message;
    let channel = agent::dial(config, tls)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    // Keep the request stream open, so the cell, not the end of input, ends the stream.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            "/lattice.tunnel.v1.Cell/Connect".parse().unwrap(),
            Raw,
        )
        .await?
        .into_inner();
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), inbound.message()).await {
            Err(_) => {
                drop(tx);
                return Ok(received);
            }
            Ok(m) => match m? {
                Some(bytes) => received.push(pb::CellMessage::decode(bytes.as_slice()).unwrap()),
                None => return Ok(received),
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_oversized_and_out_of_order_messages_close_the_stream() {
    use prost::Message;
    let running = Running::start(
        Cell::new(
            ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap(),
            quick(),
        ),
        None,
    )
    .await;
    running.cell.distribute(BTreeMap::from([policy("a", "{}")]));
    let config = running.config("edge");
    let creds = running.bootstrap("edge").await;
    let tls = || {
        agent_config(
            &creds.ca_pem,
            Some((&creds.cert_pem, creds.key_der.clone())),
        )
        .unwrap()
    };

    // The right hello is welcomed and sent the set: the harness itself works.
    let welcomed = connect_raw(&config, tls(), vec![hello("edge")])
        .await
        .unwrap();
    assert!(matches!(
        welcomed[0].body,
        Some(pb::cell_message::Body::Welcome(_))
    ));
    assert!(matches!(welcomed[1].body, Some(pb::cell_message::Body::Sync(ref s)) if s.full));

    let heartbeat = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat::default())),
    }
    .encode_to_vec();
    let cases: Vec<(&str, Vec<Vec<u8>>, Code)> = vec![
        (
            "edge's certificate speaking for prod",
            vec![hello("prod")],
            Code::PermissionDenied,
        ),
        (
            "a heartbeat before hello",
            vec![heartbeat],
            Code::FailedPrecondition,
        ),
        (
            "two hellos",
            vec![hello("edge"), hello("edge")],
            Code::FailedPrecondition,
        ),
        (
            "bytes that are not a message",
            vec![vec![0xff, 0xff, 0xff, 0x0f]],
            Code::Internal,
        ),
        ("an empty message", vec![Vec::new()], Code::InvalidArgument),
        (
            "a message over the size limit",
            vec![vec![0u8; lattice_tunnel::cell::MAX_AGENT_MESSAGE_BYTES + 1]],
            Code::OutOfRange,
        ),
        (
            "an answer to no request",
            vec![
                hello("edge"),
                pb::AgentMessage {
                    body: Some(pb::agent_message::Body::CommandResult(pb::CommandResult {
                        operation_id: "op1".into(),
                        ..Default::default()
                    })),
                }
                .encode_to_vec(),
            ],
            Code::InvalidArgument,
        ),
        (
            "an ack for a revision never sent",
            vec![
                hello("edge"),
                pb::AgentMessage {
                    body: Some(pb::agent_message::Body::SyncAck(pb::SyncAck {
                        revision: 99,
                        hash: vec![],
                    })),
                }
                .encode_to_vec(),
            ],
            Code::InvalidArgument,
        ),
    ];
    let mesh = |cluster: &str, spiffe: &str| {
        pb::AgentMessage {
            body: Some(pb::agent_message::Body::MeshReport(pb::MeshReport {
                declarations: vec![mesh_declaration(cluster, spiffe)],
            })),
        }
        .encode_to_vec()
    };
    let mut cases = cases;
    cases.extend([
        (
            "edge's certificate declaring a workload of prod",
            vec![
                hello("edge"),
                mesh("prod", "spiffe://prod.lattice.test/ns/shop/sa/web"),
            ],
            Code::PermissionDenied,
        ),
        (
            "a declaration whose identity is in another namespace",
            vec![
                hello("edge"),
                mesh("edge", "spiffe://edge.lattice.test/ns/kube-system/sa/web"),
            ],
            Code::InvalidArgument,
        ),
    ]);
    for (what, messages, code) in cases {
        let status = connect_raw(&config, tls(), messages).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status}");
        assert!(
            running.cell.agents().get("prod").is_none(),
            "{what}: nothing was registered for another cluster"
        );
    }
    // None of it left a session behind, or a declaration.
    eventually("no session is left", || {
        running.cell.agents().is_empty().then_some(())
    })
    .await;
    assert!(running.cell.agents().mesh_reports().is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_bounded_and_timed_out() {
    let config = CellConfig {
        max_handshakes: 2,
        handshake_timeout: Duration::from_millis(500),
        ..quick()
    };
    let running = Running::start(
        Cell::new(
            ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap(),
            config,
        ),
        None,
    )
    .await;
    // Five clients that connect and never say a word.
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(tokio::net::TcpStream::connect(running.addr).await.unwrap());
    }
    // A real agent still gets through, once the stalled ones time out.
    let started = std::time::Instant::now();
    let creds = running.bootstrap("edge").await;
    assert!(!creds.cert_pem.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it waited for a handshake slot"
    );
    eventually("the stalled handshakes are counted as failed", || {
        (running.cell.handshake_failures() >= 5).then_some(())
    })
    .await;
    drop(stalled);
    running.stop().await;
}

/// Answers proxied requests the way a test can check: `/echo` sends back what arrived and
/// for whom; `/stream` streams what the test feeds it and says when it was dropped.
struct Echo {
    feed: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>>,
    dropped: Arc<tokio::sync::Notify>,
}

struct OnDrop(Arc<tokio::sync::Notify>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl ProxyHandler for Echo {
    fn handle(
        &self,
        target: Forwarded,
        request: http::Request<bytes::Bytes>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<ProxyBody>> + Send>>
    {
        use http_body_util::BodyExt;
        use tokio_stream::StreamExt;
        let response = match request.uri().path() {
            "/echo" => {
                let seen = format!(
                    "{} {} for {} in [{}] on {}; authorization {}; content-type {:?}; {} bytes",
                    request.method(),
                    request.uri(),
                    target.user,
                    target.groups.join(","),
                    target.cluster,
                    if request.headers().contains_key("authorization") {
                        "arrived"
                    } else {
                        "stayed behind"
                    },
                    request.headers().get("content-type"),
                    request.body().len(),
                );
                let mut r = http::Response::new(full(bytes::Bytes::from(seen)));
                r.headers_mut()
                    .insert("x-echo-length", request.body().len().into());
                r
            }
            "/stream" => {
                let feed = self.feed.lock().unwrap().take().expect("one stream");
                let guard = OnDrop(self.dropped.clone());
                let frames = tokio_stream::wrappers::ReceiverStream::new(feed).map(move |b| {
                    let _held = &guard;
                    Ok::<_, lattice_tunnel::forward::BoxError>(http_body::Frame::data(b))
                });
                http::Response::new(http_body_util::StreamBody::new(frames).boxed_unsync())
            }
            _ => status_response(http::StatusCode::NOT_FOUND, "no such path"),
        };
        Box::pin(std::future::ready(response))
    }

    /// A simulated far end (no kubelet runs here): `/refuse` answers 403; anything else
    /// switches to the protocol asked for and answers every byte uppercased, then "bye"
    /// when the client closes its side. `x-seen` says what arrived.
    fn upgrade(
        &self,
        target: Forwarded,
        request: http::Request<()>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Upgrade> + Send>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if request.uri().path() == "/refuse" {
            return Box::pin(std::future::ready(Upgrade::Answered(status_response(
                http::StatusCode::FORBIDDEN,
                "the far end refuses",
            ))));
        }
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let seen = format!(
            "{} {} for {} on {}; upgrade {}; connection {}; key {}; authorization {}",
            request.method(),
            request.uri(),
            target.user,
            target.cluster,
            header("upgrade"),
            header("connection"),
            header("sec-websocket-key"),
            header("authorization"),
        );
        let protocol = header("upgrade");
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let guard = OnDrop(self.dropped.clone());
        tokio::spawn(async move {
            let _held = guard;
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                match far.read(&mut buffer).await {
                    Ok(0) => {
                        let _ = far.write_all(b"bye\n").await;
                        let _ = far.shutdown().await;
                        return;
                    }
                    Ok(n) => {
                        buffer[..n].make_ascii_uppercase();
                        if far.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert("upgrade", protocol.parse().unwrap());
        response
            .headers_mut()
            .insert("x-seen", seen.parse().unwrap());
        Box::pin(std::future::ready(Upgrade::Switched(
            response,
            Box::new(near),
        )))
    }
}

fn for_alice(cluster: &str) -> Forwarded {
    Forwarded {
        cluster: cluster.into(),
        user: "alice".into(),
        groups: vec!["devs".into(), "oncall".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_requests_cross_the_tunnel_stream_back_and_cancel_when_the_client_leaves() {
    use http_body_util::BodyExt;
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let running = Running::start(Cell::new(ca, quick()), None).await;
    let creds = running.bootstrap("edge").await;
    let (feed, fed) = tokio::sync::mpsc::channel(4);
    let dropped = Arc::new(tokio::sync::Notify::new());
    let agent = Arc::new(
        Agent::new(running.config("edge"), creds, Arc::new(health(2))).with_proxy(Arc::new(Echo {
            feed: std::sync::Mutex::new(Some(fed)),
            dropped: dropped.clone(),
        })),
    );
    let stop = CancellationToken::new();
    tokio::spawn({
        let agent = agent.clone();
        let stop = stop.clone();
        async move { agent.run(stop).await }
    });
    eventually("edge connects", || running.cell.agents().get("edge")).await;

    // A request and its body arrive whole, for the caller; its credentials stay behind.
    let request = http::Request::post("/echo?dryRun=All")
        .header("content-type", "application/json")
        .header("authorization", "Bearer the-callers-own")
        .body(bytes::Bytes::from_static(b"{\"kind\":\"Pod\"}"))
        .unwrap();
    let response = running
        .cell
        .forward("edge", for_alice("edge"), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "POST /echo?dryRun=All for alice in [devs,oncall] on edge; authorization stayed behind; content-type Some(\"application/json\"); 14 bytes"
    );

    // A body larger than one message crosses in chunks and comes back whole.
    let big = bytes::Bytes::from(vec![7u8; 3 << 20]);
    let response = running
        .cell
        .forward(
            "edge",
            for_alice("edge"),
            http::Request::put("/echo").body(big.clone()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-echo-length"],
        (3usize << 20).to_string()
    );
    let too_big = bytes::Bytes::from(vec![0u8; lattice_tunnel::forward::MAX_REQUEST_BODY + 1]);
    assert!(matches!(
        running
            .cell
            .forward(
                "edge",
                for_alice("edge"),
                http::Request::put("/echo").body(too_big).unwrap()
            )
            .await,
        Err(ForwardError::Request(_))
    ));

    // A streamed answer arrives chunk by chunk, as the agent sends it.
    let response = running
        .cell
        .forward(
            "edge",
            for_alice("edge"),
            http::Request::get("/stream?watch=true")
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    for chunk in ["first event\n", "second event\n"] {
        feed.send(bytes::Bytes::from(chunk)).await.unwrap();
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("a chunk in time")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk.as_bytes());
    }
    // The client hangs up: the agent's end of the watch is dropped.
    drop(body);
    tokio::time::timeout(WAIT, dropped.notified())
        .await
        .expect("the agent dropped the stream when the client left");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), feed.closed())
            .await
            .is_ok(),
        "nothing reads the feed any more"
    );

    // No agent, no forwarding.
    assert!(matches!(
        running
            .cell
            .forward(
                "nowhere",
                for_alice("nowhere"),
                http::Request::get("/echo")
                    .body(bytes::Bytes::new())
                    .unwrap()
            )
            .await,
        Err(ForwardError::NotConnected(_))
    ));
    stop.cancel();
    running.stop().await;
}

fn upgrade_request(path: &str, protocol: &str) -> http::Request<()> {
    http::Request::get(path)
        .header("connection", "Upgrade")
        .header("upgrade", protocol)
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("authorization", "Bearer the-callers-own")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_cross_the_tunnel_both_ways_and_close_with_either_end() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let running = Running::start(Cell::new(ca, quick()), None).await;
    let creds = running.bootstrap("edge").await;
    let (_feed, fed) = tokio::sync::mpsc::channel(4);
    let dropped = Arc::new(tokio::sync::Notify::new());
    let agent = Arc::new(
        Agent::new(running.config("edge"), creds, Arc::new(health(2))).with_proxy(Arc::new(Echo {
            feed: std::sync::Mutex::new(Some(fed)),
            dropped: dropped.clone(),
        })),
    );
    let stop = CancellationToken::new();
    tokio::spawn({
        let agent = agent.clone();
        let stop = stop.clone();
        async move { agent.run(stop).await }
    });
    eventually("edge connects", || running.cell.agents().get("edge")).await;
    let open = |path: &str, protocol: &str| {
        running
            .cell
            .upgrade("edge", for_alice("edge"), upgrade_request(path, protocol))
    };

    // The switch: the protocol asked for, the handshake's key, the caller; not the
    // caller's credentials.
    let Upgrade::Switched(response, mut connection) = open(
        "/api/v1/namespaces/shop/pods/web/exec?command=sh",
        "websocket",
    )
    .await
    .unwrap() else {
        panic!("the far end switches")
    };
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(response.headers()["connection"], "Upgrade");
    assert_eq!(
        response.headers()["x-seen"],
        "GET /api/v1/namespaces/shop/pods/web/exec?command=sh for alice on edge; upgrade websocket; connection Upgrade; key dGhlIHNhbXBsZSBub25jZQ==; authorization -"
    );
    // Bytes both ways, small and larger than one message.
    connection.write_all(b"hello").await.unwrap();
    let mut answer = [0u8; 5];
    tokio::time::timeout(WAIT, connection.read_exact(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    assert_eq!(&answer, b"HELLO");
    let big = vec![b'x'; 3 << 20];
    let (mut read, mut write) = tokio::io::split(connection);
    let writer = tokio::spawn(async move {
        write.write_all(&big).await.unwrap();
        // The client closes its side: the far end still answers, then closes.
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, read.read_to_end(&mut back))
        .await
        .expect("the far end closes after the client's side ends")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), (3 << 20) + 4);
    assert!(back[..3 << 20].iter().all(|b| *b == b'X'));
    assert_eq!(&back[3 << 20..], b"bye\n");
    tokio::time::timeout(WAIT, dropped.notified())
        .await
        .expect("the far end's connection is gone");

    // SPDY, as older clients and kubelets speak it, switches the same way.
    let Upgrade::Switched(response, connection) =
        open("/api/v1/namespaces/shop/pods/web/portforward", "SPDY/3.1")
            .await
            .unwrap()
    else {
        panic!("the far end switches")
    };
    assert_eq!(response.headers()["upgrade"], "SPDY/3.1");
    // The client hangs up without a word: the far end's connection is closed.
    drop(connection);
    tokio::time::timeout(WAIT, dropped.notified())
        .await
        .expect("the client leaving closes the far end");

    // A refusal comes back as an answer, body and all.
    let Upgrade::Answered(refused) = open("/refuse", "websocket").await.unwrap() else {
        panic!("the far end refuses")
    };
    assert_eq!(refused.status(), 403);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains("the far end refuses"),
        "{body:?}"
    );

    // An upgrade is never forwarded as a plain request, nor a plain request opened.
    let (parts, ()) = upgrade_request("/echo", "websocket").into_parts();
    assert!(matches!(
        running
            .cell
            .forward(
                "edge",
                for_alice("edge"),
                http::Request::from_parts(parts, bytes::Bytes::new())
            )
            .await,
        Err(ForwardError::Request(_))
    ));
    assert!(matches!(
        running
            .cell
            .upgrade(
                "edge",
                for_alice("edge"),
                http::Request::get("/echo").body(()).unwrap()
            )
            .await,
        Err(ForwardError::Request(_))
    ));
    stop.cancel();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agent_a_request_was_sent_to_may_answer_it() {
    use prost::Message;
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let running = Running::start(
        Cell::new(
            ca,
            CellConfig {
                handshake_timeout: Duration::from_secs(5),
                ..quick()
            },
        ),
        None,
    )
    .await;
    let edge = running.bootstrap("edge").await;
    let prod = running.bootstrap("prod").await;
    let tls_for =
        |c: &Credentials| agent_config(&c.ca_pem, Some((&c.cert_pem, c.key_der.clone()))).unwrap();
    // Edge connects by hand, so the test sees the request's id.
    let pending = tokio::spawn({
        let cell = running.cell.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cell.forward(
                "edge",
                for_alice("edge"),
                http::Request::get("/echo")
                    .body(bytes::Bytes::new())
                    .unwrap(),
            )
            .await
        }
    });
    let received = connect_raw(&running.config("edge"), tls_for(&edge), vec![hello("edge")])
        .await
        .unwrap();
    let id = received
        .iter()
        .find_map(|m| match &m.body {
            Some(pb::cell_message::Body::ProxyRequest(r)) => Some(r.request_id.clone()),
            _ => None,
        })
        .expect("the request's head came down edge's stream");
    assert_eq!(id.len(), 32, "a 128-bit random id");

    let accept = |cluster: &str, creds: Option<&Credentials>, id: &str| {
        let config = running.config(cluster);
        let tls = match creds {
            Some(c) => tls_for(c),
            None => agent_config(&running.cell.ca_pem(), None).unwrap(),
        };
        let message = pb::ProxyUp {
            body: Some(pb::proxy_up::Body::Accept(pb::ProxyAccept {
                request_id: id.to_owned(),
            })),
        }
        .encode_to_vec();
        async move {
            let channel = agent::dial(&config, tls).await.unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(message).await.unwrap();
            let result = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    "/lattice.tunnel.v1.Cell/Proxy".parse().unwrap(),
                    Raw,
                )
                .await;
            drop(tx);
            result.map(|_| ())
        }
    };
    // Another cluster's agent cannot take it, and an unknown id is nobody's.
    let stolen = accept("prod", Some(&prod), &id).await.unwrap_err();
    assert_eq!(stolen.code(), Code::PermissionDenied, "{stolen}");
    let unknown = accept("prod", Some(&prod), "0123").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    let anonymous = accept("edge", None, &id).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous}");
    // Refused attempts left it waiting; with no answer from edge it times out.
    let outcome = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(
        matches!(outcome, Err(ForwardError::NoAnswer(ref c, _)) if c == "edge"),
        "{outcome:?}"
    );
    running.stop().await;
}

fn reporting(below: &[(&str, &str)]) -> Health {
    Health {
        descendants: below
            .iter()
            .map(|(name, parent)| Descendant {
                name: (*name).into(),
                parent: (*parent).into(),
                phase: "Ready".into(),
                agent_connected: true,
                ..Default::default()
            })
            .collect(),
        ..health(2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_for_a_descendant_go_through_the_child_that_reports_it_and_nowhere_if_two_do() {
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let running = Running::start(Cell::new(ca, quick()), None).await;
    let mut stops = Vec::new();
    for (cluster, below) in [
        ("mid", vec![("leaf", "mid"), ("twig", "leaf")]),
        ("other", vec![("apart", "other")]),
    ] {
        let creds = running.bootstrap(cluster).await;
        let agent = Arc::new(
            Agent::new(running.config(cluster), creds, Arc::new(reporting(&below))).with_proxy(
                Arc::new(Echo {
                    feed: std::sync::Mutex::new(None),
                    dropped: Arc::default(),
                }),
            ),
        );
        let stop = CancellationToken::new();
        tokio::spawn({
            let agent = agent.clone();
            let stop = stop.clone();
            async move { agent.run(stop).await }
        });
        stops.push(stop);
    }
    let agents = running.cell.agents().clone();
    eventually("both agents report what is below them", || {
        (agents.route("twig").is_ok() && agents.route("apart").is_ok()).then_some(())
    })
    .await;
    assert_eq!(
        agents.route("mid").unwrap(),
        "mid",
        "a child is its own route"
    );
    assert_eq!(agents.route("leaf").unwrap(), "mid");
    assert_eq!(agents.route("twig").unwrap(), "mid", "two levels down");
    assert_eq!(agents.route("apart").unwrap(), "other");
    assert!(matches!(
        agents.route("nowhere"),
        Err(RouteError::Unknown(_))
    ));
    assert_eq!(
        agents.get("mid").unwrap().health.descendants[1].parent,
        "leaf",
        "what the agent reported is what the cell holds"
    );

    // The call for a grandchild reaches mid's agent, naming the grandchild.
    let response = running
        .cell
        .forward(
            "mid",
            for_alice("twig"),
            http::Request::get("/echo")
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("twig"),
        "the agent saw the target cluster: {}",
        String::from_utf8_lossy(&body)
    );

    // A third child claiming a name already claimed: neither route is trusted.
    let creds = running.bootstrap("rogue").await;
    let (_, rogue) = {
        let agent = Arc::new(Agent::new(
            running.config("rogue"),
            creds,
            Arc::new(reporting(&[("twig", "rogue")])),
        ));
        let stop = CancellationToken::new();
        tokio::spawn({
            let agent = agent.clone();
            let stop = stop.clone();
            async move { agent.run(stop).await }
        });
        (agent, stop)
    };
    eventually("the rogue's claim is seen", || {
        matches!(agents.route("twig"), Err(RouteError::Ambiguous(..))).then_some(())
    })
    .await;
    assert_eq!(
        agents.route("leaf").unwrap(),
        "mid",
        "unclaimed names still route"
    );
    rogue.cancel();
    for s in stops {
        s.cancel();
    }
    running.stop().await;
}

/// A declaration by `cluster` of `shop/web`, which calls `payments/api` in `root`.
fn mesh_declaration(cluster: &str, spiffe: &str) -> pb::PeerDeclaration {
    pb::PeerDeclaration {
        cluster: cluster.into(),
        namespace: "shop".into(),
        name: "web".into(),
        spiffe_id: spiffe.into(),
        ports: vec![8080],
        address: "10.0.0.2:15443".into(),
        outbound: vec![pb::PeerRef {
            cluster: "root".into(),
            namespace: "payments".into(),
            name: "api".into(),
        }],
        inbound: vec![],
        facts: Some(pb::ServiceFacts {
            kind: "service".into(),
            replicas: 1,
            pod_security: "restricted".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_declarations_go_up_routes_come_down_and_both_outlive_a_dropped_stream() {
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let (ca_cert, ca_key) = (ca.cert_pem(), ca.key_pem().to_owned());
    let running = Running::start(Cell::new(ca, quick()), None).await;
    let creds = running.bootstrap("edge").await;
    let (agent, stop_agent) = start_agent(&running, "edge", creds);
    let report = pb::MeshReport {
        declarations: vec![mesh_declaration(
            "edge",
            "spiffe://edge.lattice.test/ns/shop/sa/web",
        )],
    };
    eventually("the agent connects", || running.cell.agents().get("edge")).await;
    let mut changes = running.cell.agents().subscribe();
    changes.borrow_and_update();
    agent.report_mesh(report.clone());
    eventually("the report reaches the cell", || {
        running
            .cell
            .agents()
            .mesh_reports()
            .get("edge")
            .filter(|r| ***r == report)
            .map(|_| ())
    })
    .await;
    assert!(
        changes.has_changed().unwrap(),
        "a new report wakes the cell's planner"
    );

    let mut routes = agent.routes();
    // Until the cell has decided it sends no routes: the agent keeps what it holds.
    assert!(routes.borrow().is_none());
    running.cell.set_routes(BTreeMap::new());
    routes.wait_for(|r| r.is_some()).await.unwrap();
    assert!(routes.borrow().as_ref().unwrap().routes.is_empty());
    let route = pb::MeshRoute {
        cluster: "edge".into(),
        namespace: "shop".into(),
        name: "web".into(),
        role: pb::mesh_route::Role::Caller as i32,
        peer: Some(pb::PeerRef {
            cluster: "root".into(),
            namespace: "payments".into(),
            name: "api".into(),
        }),
        peer_spiffe_id: "spiffe://root.lattice.test/ns/payments/sa/api".into(),
        peer_address: "10.0.0.1:15443".into(),
        ports: vec![8080],
    };
    let mine = pb::MeshRoutes {
        routes: vec![route.clone()],
    };
    // Routes for another cluster are never sent to this one.
    let mut other = route.clone();
    other.cluster = "leaf".into();
    running.cell.set_routes(BTreeMap::from([
        ("edge".to_owned(), mine.clone()),
        (
            "leaf".to_owned(),
            pb::MeshRoutes {
                routes: vec![other],
            },
        ),
    ]));
    routes
        .wait_for(|r| r.as_deref() == Some(&mine))
        .await
        .unwrap();

    // The stream drops and comes back to a restarted cell: the agent keeps its routes
    // meanwhile, and reports again on the new stream.
    let addr = running.addr;
    running.stop().await;
    eventually("the agent notices", || {
        matches!(*agent.link().borrow(), Link::Disconnected { .. }).then_some(())
    })
    .await;
    assert_eq!(
        routes.borrow().as_deref(),
        Some(&mine),
        "offline, the agent keeps its routes"
    );
    let ca = ClusterCa::from_pem(DOMAIN, &ca_cert, &ca_key, Default::default()).unwrap();
    let restarted = Running::start(Cell::new(ca, quick()), Some(addr)).await;
    eventually("the report reaches the restarted cell", || {
        restarted
            .cell
            .agents()
            .mesh_reports()
            .get("edge")
            .filter(|r| ***r == report)
            .map(|_| ())
    })
    .await;
    assert_eq!(
        routes.borrow().as_deref(),
        Some(&mine),
        "a restarted cell that has not decided withdraws nothing"
    );
    // The cell forgets a revoked cluster's declarations.
    restarted.cell.revoke_cluster("edge");
    assert!(restarted.cell.agents().mesh_reports().is_empty());
    stop_agent.cancel();
    restarted.stop().await;
}

/// Counts the steps it is asked to do; refuses a payload that says "no".
struct Steps(std::sync::Mutex<Vec<Vec<u8>>>);

impl lattice_tunnel::command::CommandHandler for Steps {
    fn handle(
        &self,
        operation: pb::lifecycle_command::Operation,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        Box::pin(async move {
            assert_eq!(operation, pb::lifecycle_command::Operation::Pivot);
            if payload == b"no" {
                return Err("refused: no".to_owned());
            }
            self.0.lock().unwrap().push(payload.clone());
            Ok(format!("did {} bytes", payload.len()))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_commands_are_answered_once_on_the_stream_they_went_down() {
    use lattice_tunnel::command::CommandError;
    use pb::lifecycle_command::Operation;
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    let running = Running::start(Cell::new(ca, quick()), None).await;
    let creds = running.bootstrap("edge").await;
    let steps = Arc::new(Steps(std::sync::Mutex::new(Vec::new())));
    let agent = Arc::new(
        Agent::new(running.config("edge"), creds, Arc::new(health(2))).with_commands(steps.clone()),
    );
    let stop = CancellationToken::new();
    tokio::spawn({
        let agent = agent.clone();
        let stop = stop.clone();
        async move { agent.run(stop).await }
    });
    // No agent, no command.
    let absent = running
        .cell
        .command("prod", Operation::Pivot, b"x".to_vec(), WAIT)
        .await
        .unwrap_err();
    assert_eq!(absent, CommandError::NotConnected("prod".into()));
    let session = eventually("edge connects", || running.cell.agents().get("edge"))
        .await
        .session_id;

    let done = running
        .cell
        .command("edge", Operation::Pivot, b"step one".to_vec(), WAIT)
        .await
        .unwrap();
    assert_eq!(done, "did 8 bytes");
    let refused = running
        .cell
        .command("edge", Operation::Pivot, b"no".to_vec(), WAIT)
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        CommandError::Refused("edge".into(), "refused: no".into())
    );
    let unknown = running
        .cell
        .command("edge", Operation::Unspecified, Vec::new(), WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, CommandError::Refused(_, ref m) if m.contains("unknown operation")),
        "{unknown:?}"
    );
    let huge = running
        .cell
        .command(
            "edge",
            Operation::Pivot,
            vec![0; lattice_tunnel::command::MAX_PAYLOAD_BYTES + 1],
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(huge, CommandError::Command(_)), "{huge:?}");
    assert_eq!(*steps.0.lock().unwrap(), vec![b"step one".to_vec()]);
    // The refusals were answers, not violations: the stream that carried them is still up.
    assert_eq!(
        running.cell.agents().get("edge").unwrap().session_id,
        session
    );
    stop.cancel();
    running.stop().await;
}
