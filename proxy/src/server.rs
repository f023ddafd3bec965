//! The proxy's HTTPS endpoint. `kubectl` uses `https://<proxy>/clusters/<name>` as a
//! cluster's server; every call is then, in order:
//!
//! 1. routed: the path names a cluster (`/clusters/<name>/…`), or it is a 404;
//! 2. refused if it carries impersonation headers (the proxy impersonates the caller itself;
//!    a client asking to be someone else is a 403);
//! 3. authenticated ([`crate::authn`], [`crate::oidc`]): a bearer token (an ID token of a
//!    configured OIDC issuer, or one the API server reviews), or a 401. A trusted forwarder (the
//!    agent of the hop above, authenticated the same way) may name the caller it forwards
//!    for in `X-Lattice-Forwarded-User` / `-Group`; anyone else sending those is refused;
//! 4. decided: one Cedar request with this hop's snapshot ([`crate::authorize`]): a 403 with
//!    the deciding policies and their advice, or a 400 for a request that cannot be read;
//! 5. forwarded ([`Upstream`]): the body read (bounded), the response streamed back as it
//!    comes, so a watch stays open and a client hanging up cancels it upstream. An upgrade
//!    (exec, attach, port-forward: `Connection: Upgrade` to `websocket` or `SPDY/3.1`) is
//!    opened instead ([`Upstream::upgrade`]): the far end's 101 goes back to the client,
//!    and then the proxy copies bytes both ways without reading them, until either end
//!    closes.
//!
//! Hand-written on hyper rather than a framework: five steps on one route, and the response
//! body must stream through untouched.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lattice_engine::Snapshot;
use lattice_gates::Requester;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authn::{Authenticator, AuthnError, bearer};
use crate::authorize::{Verdict, authorize, is_impersonation_header};

/// An error inside a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body, streamed.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Where a cluster's API begins: `/clusters/<name>/api/v1/…`.
pub const CLUSTERS_PREFIX: &str = "/clusters/";

/// The caller a trusted forwarder forwards for.
pub const FORWARDED_USER: &str = "x-lattice-forwarded-user";
/// One of that caller's groups (repeated).
pub const FORWARDED_GROUP: &str = "x-lattice-forwarded-group";

/// The largest request body read (kube-apiserver's own limit is 3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 1024;

/// A connection that switched protocols: bytes both ways until either side closes.
pub trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// The far end of an upgrade once it switched: its 101 head, and the connection. A far end
/// that answers otherwise gives that answer instead.
pub type Switched = Result<(Response<()>, Box<dyn Duplex>), Response<ProxyBody>>;

/// Sends an authorized request on: to the cluster's agent through the tunnel, or to the
/// API server when the cluster is this one.
pub trait Upstream: Send + Sync + 'static {
    /// The response of `cluster` to `request` (path and query relative to its API
    /// server), made as `caller`. Failures are responses too (a `Status`).
    fn forward(
        &self,
        cluster: &str,
        caller: &Requester,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'static>>;

    /// Opens the connection `request` asks to switch to on `cluster`, as `caller`.
    fn upgrade(
        &self,
        cluster: &str,
        caller: &Requester,
        request: Request<()>,
    ) -> Pin<Box<dyn Future<Output = Switched> + Send + 'static>>;
}

/// The snapshot decisions are made on now; `None` until one is loaded (every call is then
/// refused with a 503: no decision, no access).
pub trait SnapshotSource: Send + Sync + 'static {
    fn current(&self) -> Option<Arc<dyn AsRef<Snapshot> + Send + Sync>>;
}

/// Counts of what the proxy answered.
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    /// Exec, attach and port-forward connections the far end switched.
    pub upgraded: AtomicU64,
    pub forbidden: AtomicU64,
    pub unauthenticated: AtomicU64,
    pub bad_requests: AtomicU64,
}

/// How the proxy treats callers.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Users (as the authenticator names them) who may forward for another caller: the
    /// agents of the hops above, e.g. `system:serviceaccount:lattice-system:lattice-agent`.
    pub trusted_forwarders: Vec<String>,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a client may take to send its headers.
    pub header_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            trusted_forwarders: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The proxy: who is asking, what Cedar says, and where the call goes.
pub struct Proxy {
    authn: Arc<dyn Authenticator>,
    snapshots: Arc<dyn SnapshotSource>,
    upstream: Arc<dyn Upstream>,
    config: ProxyConfig,
    pub counters: Counters,
}

impl Proxy {
    pub fn new(
        authn: Arc<dyn Authenticator>,
        snapshots: Arc<dyn SnapshotSource>,
        upstream: Arc<dyn Upstream>,
        config: ProxyConfig,
    ) -> Proxy {
        Proxy {
            authn,
            snapshots,
            upstream,
            config,
            counters: Counters::default(),
        }
    }

    /// Answers one call from `source`.
    pub async fn handle<B>(&self, source: IpAddr, request: Request<B>) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let Some((cluster, rest)) = route(parts.uri.path()) else {
            return status(
                StatusCode::NOT_FOUND,
                &format!(
                    "the proxy serves {CLUSTERS_PREFIX}<cluster>/…; there is nothing else here"
                ),
            );
        };
        if let Some(name) = parts
            .headers
            .keys()
            .find(|name| is_impersonation_header(name.as_str()))
        {
            self.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            return status(
                StatusCode::FORBIDDEN,
                &format!(
                    "{name} is refused: the proxy impersonates the authenticated caller itself, and no one may ask it to be someone else"
                ),
            );
        }
        let caller = match self.caller(&parts.headers).await {
            Ok(c) => c,
            Err(Refusal::Unauthenticated(e)) => {
                self.counters
                    .unauthenticated
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(%source, %cluster, reason = %e, "proxy: unauthenticated");
                let mut r = status(StatusCode::UNAUTHORIZED, &format!("Unauthorized: {e}"));
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            Err(Refusal::Forbidden(why)) => {
                self.counters.forbidden.fetch_add(1, Ordering::Relaxed);
                return status(StatusCode::FORBIDDEN, &why);
            }
        };
        let Some(current) = self.snapshots.current() else {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the proxy has no policy snapshot yet, so it decides nothing",
            );
        };
        let query = parts.uri.query().unwrap_or("");
        let verdict = authorize(
            (*current).as_ref(),
            &caller,
            cluster,
            parts.method.as_str(),
            rest,
            query,
            source,
            jiff::Timestamp::now(),
        );
        drop(current);
        match verdict {
            Verdict::Allow(_) => {}
            Verdict::Forbidden(body) => {
                self.counters.forbidden.fetch_add(1, Ordering::Relaxed);
                tracing::info!(user = %caller.username, %cluster, method = %parts.method, path = %rest, "proxy: denied");
                return json(StatusCode::FORBIDDEN, &body);
            }
            Verdict::BadRequest(why) => {
                self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                return status(StatusCode::BAD_REQUEST, &why);
            }
        }
        let target = if query.is_empty() {
            rest.to_owned()
        } else {
            format!("{rest}?{query}")
        };
        let uri = match http::Uri::try_from(target) {
            Ok(u) => u,
            Err(e) => return status(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        if let Some(protocol) = upgrade_of(&parts.headers) {
            let cluster = cluster.to_owned();
            return self.upgrade(&cluster, &caller, parts, uri, protocol).await;
        }
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body could not be read within {MAX_BODY} bytes: {e}"),
                );
            }
        };
        let mut forwarded = Request::new(body);
        *forwarded.method_mut() = parts.method.clone();
        *forwarded.uri_mut() = uri;
        for (name, value) in &parts.headers {
            if forwards(name.as_str()) {
                forwarded.headers_mut().append(name.clone(), value.clone());
            }
        }
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(user = %caller.username, %cluster, method = %parts.method, path = %rest, "proxy: forwarding");
        self.upstream.forward(cluster, &caller, forwarded).await
    }

    /// Opens an authorized upgrade on `cluster` and, once the far end switched, joins the
    /// client's connection to it.
    async fn upgrade(
        &self,
        cluster: &str,
        caller: &Requester,
        mut parts: http::request::Parts,
        uri: http::Uri,
        protocol: String,
    ) -> Response<ProxyBody> {
        let Some(client) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return status(
                StatusCode::BAD_REQUEST,
                "this connection cannot switch protocols",
            );
        };
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = uri;
        for (name, value) in &parts.headers {
            if forwards(name.as_str()) || forwards_on_upgrade(name.as_str()) {
                head.headers_mut().append(name.clone(), value.clone());
            }
        }
        let Ok(protocol) = HeaderValue::from_str(&protocol) else {
            return status(StatusCode::BAD_REQUEST, "the Upgrade header is not a value");
        };
        head.headers_mut().insert(http::header::UPGRADE, protocol);
        head.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        tracing::debug!(user = %caller.username, %cluster, method = %parts.method, path = %head.uri(), "proxy: opening");
        let (switched, mut far) = match self.upstream.upgrade(cluster, caller, head).await {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        self.counters.upgraded.fetch_add(1, Ordering::Relaxed);
        let user = caller.username.clone();
        let cluster = cluster.to_owned();
        tokio::spawn(async move {
            match client.await {
                Ok(client) => {
                    let mut client = TokioIo::new(client);
                    let copied = tokio::io::copy_bidirectional(&mut client, &mut far).await;
                    tracing::debug!(%user, %cluster, ?copied, "proxy: connection closed");
                }
                Err(e) => tracing::debug!(%user, %cluster, "proxy: the client did not switch: {e}"),
            }
        });
        let (head, ()) = switched.into_parts();
        Response::from_parts(head, empty())
    }

    async fn caller(&self, headers: &HeaderMap) -> Result<Requester, Refusal> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(Refusal::Unauthenticated(AuthnError::Missing))?;
        let who = self
            .authn
            .authenticate(token)
            .await
            .map_err(Refusal::Unauthenticated)?;
        let forwarded_user = headers
            .get(FORWARDED_USER)
            .map(|v| v.to_str().map(str::to_owned));
        let Some(user) = forwarded_user else {
            if headers.contains_key(FORWARDED_GROUP) {
                return Err(Refusal::Forbidden(format!(
                    "{FORWARDED_GROUP} without {FORWARDED_USER} is refused"
                )));
            }
            return Ok(who);
        };
        if !self.config.trusted_forwarders.contains(&who.username) {
            return Err(Refusal::Forbidden(format!(
                "{:?} may not forward for another caller; only the agents of the hops above may",
                who.username
            )));
        }
        let user = user
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Refusal::Forbidden(format!("{FORWARDED_USER} is not a user name")))?;
        let groups = headers
            .get_all(FORWARDED_GROUP)
            .iter()
            .map(|v| v.to_str().map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Refusal::Forbidden(format!("{FORWARDED_GROUP} is not a group name")))?;
        Ok(Requester {
            username: user,
            groups,
        })
    }

    /// Serves HTTPS on `listener` with `tls` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: rustls::ServerConfig,
        shutdown: impl Future<Output = ()>,
    ) {
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
                        tracing::warn!("proxy: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let proxy = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(
                    proxy.config.handshake_timeout,
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "proxy: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                let source = peer.ip();
                let header_timeout = proxy.config.header_timeout;
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(source, request).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, "proxy: connection ended: {e}");
                }
            });
        }
    }
}

enum Refusal {
    Unauthenticated(AuthnError),
    Forbidden(String),
}

/// The cluster a path names and the rest of it (`/` when nothing follows).
pub fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(CLUSTERS_PREFIX)?;
    let (cluster, rest) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let valid = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !cluster.starts_with('-')
        && !cluster.ends_with('-');
    valid.then_some((cluster, rest))
}

/// Request headers the API server needs; credentials and hop-by-hop headers stay here.
fn forwards(name: &str) -> bool {
    matches!(
        name,
        "accept" | "accept-encoding" | "content-type" | "user-agent" | "x-request-id"
    )
}

/// Request headers an upgrade's far end needs to switch: the WebSocket handshake (the key
/// whose answer the client checks) and the protocols offered (WebSocket subprotocols, or
/// SPDY's `X-Stream-Protocol-Version`).
fn forwards_on_upgrade(name: &str) -> bool {
    matches!(
        name,
        "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-protocol"
            | "x-stream-protocol-version"
    )
}

/// The protocol a request asks to switch to: `Connection` names `upgrade` and `Upgrade`
/// is a non-empty value.
pub fn upgrade_of(headers: &HeaderMap) -> Option<String> {
    let connection = headers.get_all(http::header::CONNECTION);
    let asks = connection.iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let protocol = headers.get(http::header::UPGRADE)?.to_str().ok()?.trim();
    (asks && !protocol.is_empty()).then(|| protocol.to_owned())
}

fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A Kubernetes `Status` response.
pub fn status(code: StatusCode, message: &str) -> Response<ProxyBody> {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        413 => "RequestEntityTooLarge",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    json(
        code,
        &serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn json(code: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_one_cluster() {
        assert_eq!(
            route("/clusters/edge/api/v1/pods"),
            Some(("edge", "/api/v1/pods"))
        );
        assert_eq!(route("/clusters/edge"), Some(("edge", "/")));
        assert_eq!(route("/clusters/edge/"), Some(("edge", "/")));
        for bad in [
            "/api/v1/pods",
            "/clusters/",
            "/clusters//api",
            "/clusters/Edge/api",
            "/clusters/-edge/api",
            "/clusters/ed.ge/api",
            "/clusters/%65dge/api",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }
}
