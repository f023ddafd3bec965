//! A **simulated kubelet**: no kubelet or container runtime runs on this machine, so exec,
//! attach and port-forward, which kube-apiserver hands to the pod's kubelet, end here. It
//! serves the kubelet's own streaming endpoints over TLS (`/exec/<ns>/<pod>/<container>`,
//! `/attach/…`, `/portForward/<ns>/<pod>`) with the WebSocket channel protocols
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`: a channel byte before each message; the
//! remote-command status on channel 3; two channels per forwarded port, each opened with
//! the port number) and no SPDY. The API servers in front of it are real, and run with
//! `TranslateStreamCloseWebsocketRequests` off, so they pass a client's WebSocket upgrade to
//! the kubelet unchanged, as before Kubernetes 1.30, instead of re-speaking it as SPDY.
//!
//! What the "containers" do: `echo ARGS…` prints its arguments; `cat` copies stdin to
//! stdout until stdin closes; `exit N` ends with code N; attaching joins a process that
//! answers each stdin message with `attached: <message>`; a forwarded port answers
//! `<port>: <bytes>` to each message. Every session is recorded, and how many are open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// The subprotocols served, most preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STATUS: u8 = 3;
/// v5: `[CLOSE, channel]` says a channel reached its end.
const CLOSE: u8 = 255;

/// One session as the kubelet saw it: the path and query the API server asked for.
#[derive(Clone, Debug)]
pub struct Session {
    pub path: String,
    pub protocol: String,
}

/// The running simulation.
pub struct Kubelet {
    pub port: u16,
    sessions: Arc<Mutex<Vec<Session>>>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Serves on a loopback port, with a self-signed certificate (kube-apiserver started
    /// without `--kubelet-certificate-authority` does not verify it, as the flag says).
    pub async fn start() -> Kubelet {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.signing_key.serialize_der().into(),
            ),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let sessions = sessions.clone();
            let open = open.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let sessions = sessions.clone();
                    let open = open.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        open.fetch_add(1, Ordering::SeqCst);
                        serve(tls, &sessions).await;
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Kubelet {
            port,
            sessions,
            open,
            task,
        }
    }

    /// Every session so far.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().clone()
    }

    /// Sessions whose connection is still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

async fn serve(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    sessions: &Mutex<Vec<Session>>,
) {
    let seen = Arc::new(Mutex::new(None::<Session>));
    let record = seen.clone();
    // The Err type is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    let handshake = move |request: &Request, mut response: Response| {
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .collect::<Vec<_>>();
        let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
            let mut refused = ErrorResponse::new(Some(format!(
                "the simulated kubelet speaks {PROTOCOLS:?}, not {offered:?}"
            )));
            *refused.status_mut() = http::StatusCode::BAD_REQUEST;
            return Err(refused);
        };
        response
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        *record.lock().unwrap() = Some(Session {
            path: request
                .uri()
                .path_and_query()
                .map_or_else(String::new, |p| p.to_string()),
            protocol: (*protocol).to_owned(),
        });
        Ok(response)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(tls, handshake).await else {
        return;
    };
    let Some(session) = seen.lock().unwrap().take() else {
        return;
    };
    sessions.lock().unwrap().push(session.clone());
    let (path, query) = session
        .path
        .split_once('?')
        .unwrap_or((session.path.as_str(), ""));
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let v5 = session.protocol.starts_with("v5");
    match path.split('/').nth(1) {
        Some("exec") => exec(socket, &query, v5).await,
        Some("attach") => attach(socket, &query, v5).await,
        Some("portForward") => port_forward(socket, &query).await,
        _ => {}
    }
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::binary(bytes)
}

/// The remote-command status a process ending with `code` writes on channel 3.
fn exit_status(code: i32) -> Vec<u8> {
    if code == 0 {
        return br#"{"metadata":{},"status":"Success"}"#.to_vec();
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
    .to_string()
    .into_bytes()
}

/// Says the connection is up, as the kubelet does: one empty message on the lowest
/// channel it writes (stdout, else stderr, else the status channel).
async fn say_ready(socket: &mut Socket, query: &[(String, String)]) -> bool {
    let asked = |name: &str| query.iter().any(|(k, v)| k == name && v == "1");
    let channel = if asked("output") {
        STDOUT
    } else if asked("error") {
        2
    } else {
        STATUS
    };
    socket.send(framed(channel, &[])).await.is_ok()
}

/// Reads stdin messages until stdin closes (v5's close signal, or the socket's end),
/// answering each with `answer(bytes)` on stdout.
async fn copy_stdin(socket: &mut Socket, answer: impl Fn(&[u8]) -> Vec<u8>) {
    while let Some(Ok(message)) = socket.next().await {
        let Message::Binary(bytes) = message else {
            if message.is_close() {
                return;
            }
            continue;
        };
        let reply = match bytes.first() {
            Some(&STDIN) if bytes.len() > 1 => answer(&bytes[1..]),
            Some(&CLOSE) if bytes.get(1) == Some(&STDIN) => return,
            _ => continue,
        };
        if socket.send(framed(STDOUT, &reply)).await.is_err() {
            return;
        }
    }
}

/// Writes the status and closes normally (a close without a code is an error to clients).
async fn finish(mut socket: Socket, code: i32) {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let _ = socket.send(framed(STATUS, &exit_status(code))).await;
    let _ = socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
}

async fn exec(mut socket: Socket, query: &[(String, String)], v5: bool) {
    let command: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.as_str())
        .collect();
    if !say_ready(&mut socket, query).await {
        return;
    }
    let code = match command.first().copied() {
        Some("echo") => {
            let line = format!("{}\n", command[1..].join(" "));
            let _ = socket.send(framed(STDOUT, line.as_bytes())).await;
            0
        }
        Some("cat") => {
            copy_stdin(&mut socket, <[u8]>::to_vec).await;
            if !v5 {
                // v4 cannot say stdin ended except by closing the socket.
                return;
            }
            0
        }
        Some("exit") => command.get(1).and_then(|c| c.parse().ok()).unwrap_or(1),
        _ => 127,
    };
    finish(socket, code).await;
}

async fn attach(mut socket: Socket, query: &[(String, String)], v5: bool) {
    if !say_ready(&mut socket, query).await {
        return;
    }
    copy_stdin(&mut socket, |bytes| {
        format!("attached: {}", String::from_utf8_lossy(bytes)).into_bytes()
    })
    .await;
    if v5 {
        finish(socket, 0).await;
    }
}

async fn port_forward(mut socket: Socket, query: &[(String, String)]) {
    let ports: Vec<u16> = query
        .iter()
        .filter(|(k, _)| k == "port" || k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    // Each port has a data and an error channel; the first message on each is the port.
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i as u8, 2 * i as u8 + 1] {
            if socket
                .send(framed(channel, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    while let Some(Ok(message)) = socket.next().await {
        let Message::Binary(bytes) = message else {
            if message.is_close() {
                return;
            }
            continue;
        };
        let Some((&channel, data)) = bytes.split_first() else {
            continue;
        };
        let Some(port) = ports
            .get(usize::from(channel / 2))
            .filter(|_| channel % 2 == 0)
        else {
            continue;
        };
        let mut answer = format!("{port}: ").into_bytes();
        answer.extend_from_slice(data);
        if socket.send(framed(channel, &answer)).await.is_err() {
            return;
        }
    }
}
