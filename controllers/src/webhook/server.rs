//! The HTTPS server: TLS (rustls), HTTP/1.1 (hyper), the routes, and the limits that keep a
//! bad or slow client from costing more than its own connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::core::Status;
use kube::core::admission::AdmissionResponse;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use super::admit::{Current, admit};
use super::metrics::Metrics;
use super::review::{self, MAX_BODY, ReviewError};
use super::stamp::AdmissionKey;

/// How long a client may take over each part of a request before it is disconnected.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The TLS handshake.
    pub handshake: Duration,
    /// The request headers.
    pub headers: Duration,
    /// The whole body. The webhook configuration gives the API server 3 s, so a body
    /// slower than this is not from it.
    pub body: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(5),
            headers: Duration::from_secs(5),
            body: Duration::from_secs(10),
        }
    }
}

/// Connections served at once; further clients wait in the kernel's accept queue
/// (back-pressure) until one ends. Each connection's stalls are bounded by [`Limits`].
pub const MAX_CONNECTIONS: usize = 256;
/// Request bodies held in memory at once, in bytes: a body reserves its declared length (or
/// the 3 MiB limit when it declares none) before it is read, and waits, within the body
/// timeout, while others hold the rest. With [`MAX_CONNECTIONS`] this bounds what stalled
/// or slow clients can make the webhook hold to about 64 MiB (see deploy/webhook for the
/// memory limit it fits under).
pub const MAX_INFLIGHT_BODY_BYTES: usize = 64 << 20;

/// What every connection shares: the current snapshot, the metrics and the limits on what
/// clients may hold.
pub struct State {
    current: RwLock<Option<Arc<Current>>>,
    pub metrics: Metrics,
    connections: Arc<tokio::sync::Semaphore>,
    body_bytes: Arc<tokio::sync::Semaphore>,
    /// Stamps the CedarPolicy and LatticeRestore writes `/mutate` admits (see [`super::stamp`]).
    admission: RwLock<Option<Arc<AdmissionKey>>>,
    /// Proves admitted CedarPolicy writes widen nothing (off unless set; see [`super::proof`]).
    proofs: RwLock<Option<super::proof::PolicyProofs>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            current: RwLock::new(None),
            metrics: Metrics::default(),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            body_bytes: Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT_BODY_BYTES)),
            admission: RwLock::new(None),
            proofs: RwLock::new(None),
        }
    }
}

impl State {
    pub fn new() -> Arc<State> {
        Arc::new(State::default())
    }

    /// Publishes a new snapshot; reviews already being answered finish on the old one.
    pub fn set(&self, current: Current) {
        if let Ok(mut c) = self.current.write() {
            *c = Some(Arc::new(current));
        }
    }

    /// Publishes a snapshot shared with its producer (the operator's planner).
    pub fn publish(&self, current: Arc<Current>) {
        if let Ok(mut c) = self.current.write() {
            *c = Some(current);
        }
    }

    /// The key `/mutate` stamps admitted CedarPolicy and LatticeRestore writes with.
    pub fn set_admission_key(&self, key: Arc<AdmissionKey>) {
        if let Ok(mut k) = self.admission.write() {
            *k = Some(key);
        }
    }

    /// Adds a proof warning to every admitted CedarPolicy write ([`super::proof`]).
    pub fn set_policy_proofs(&self, proofs: super::proof::PolicyProofs) {
        *self.proofs.write().unwrap_or_else(|e| e.into_inner()) = Some(proofs);
    }

    pub fn current(&self) -> Option<Arc<Current>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    pub fn ready(&self) -> bool {
        self.current().is_some()
    }
}

/// Serves until `shutdown` completes. Each connection runs on its own task.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<State>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        // A connection slot first (back-pressure), then a client.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = state.connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            // Held for the connection's life.
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    state.metrics.rejected("tls");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    state.metrics.rejected("tls-timeout");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, limits, req).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.headers)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// The proof warning for an admitted CedarPolicy create or update, when proofs are on.
async fn proof_warning(
    state: &State,
    current: Option<&Arc<Current>>,
    review: &review::Review,
    allowed: bool,
) -> Option<String> {
    use kube::core::admission::Operation;
    let proofs = state
        .proofs
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()?;
    let writes = matches!(review.operation, Operation::Create | Operation::Update);
    if !allowed || !writes || review.group != super::review::GROUP || review.kind != "CedarPolicy" {
        return None;
    }
    let object = review.object.as_ref()?;
    let Ok(lattice_schemas::manifest::Object::CedarPolicy(policy)) =
        lattice_schemas::manifest::Object::from_api("CedarPolicy", object)
    else {
        return None;
    };
    Some(super::proof::bounded_warning(&proofs, current?.clone(), policy).await)
}

async fn route(state: &State, limits: Limits, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if state.ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n"),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::POST, "/validate") => validate(state, limits, req, false).await,
        (&Method::POST, "/mutate") => validate(state, limits, req, true).await,
        (_, "/validate" | "/mutate") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview to /validate or /mutate\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Reads and decides one review. With `stamp` (the `/mutate` endpoint) an admitted
/// CedarPolicy write also gets the admission stamp, as a JSON patch.
async fn validate(
    state: &State,
    limits: Limits,
    req: Request<Incoming>,
    stamp: bool,
) -> Response<Full<Bytes>> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return reject(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            &format!("body over the {MAX_BODY}-byte limit"),
        );
    }
    // Reserve the body's bytes before reading it; the wait counts against the body timeout.
    let reserve = declared.unwrap_or(MAX_BODY).clamp(1, MAX_BODY);
    let body = tokio::time::timeout(limits.body, async {
        let permit = state
            .body_bytes
            .acquire_many(u32::try_from(reserve).unwrap_or(u32::MAX))
            .await;
        let read = Limited::new(req.into_body(), MAX_BODY).collect().await;
        drop(permit);
        read
    })
    .await;
    let bytes = match body {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return reject(
                state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                &format!("body over the {MAX_BODY}-byte limit"),
            );
        }
        Ok(Err(e)) => {
            return reject(
                state,
                StatusCode::BAD_REQUEST,
                "body",
                &format!("cannot read the body: {e}"),
            );
        }
        Err(_) => {
            return reject(
                state,
                StatusCode::REQUEST_TIMEOUT,
                "stalled",
                "the body did not arrive in time",
            );
        }
    };
    let started = Instant::now();
    let review = match review::parse(&bytes) {
        Ok(r) => r,
        Err(ReviewError::Inconsistent { uid, message }) => {
            // Readable enough to answer: a denial that echoes the uid.
            tracing::warn!(%uid, "invalid review: {message}");
            state
                .metrics
                .review("unknown", "invalid", started.elapsed());
            let mut response = AdmissionResponse::invalid(&message);
            response.uid = uid;
            response.result = Status::failure(&message, "BadRequest").with_code(400);
            return json(&response.into_review());
        }
        Err(e) => {
            let reason = match e {
                ReviewError::ApiVersion(_) => "api-version",
                ReviewError::Kind(_) => "kind",
                ReviewError::NoRequest => "no-request",
                _ => "malformed",
            };
            return reject(state, StatusCode::BAD_REQUEST, reason, &e.to_string());
        }
    };
    let current = state.current();
    // The last line of defence: a panic while deciding one review answers that review with
    // a 500 (not admitted: the API server's failurePolicy decides) and the server goes on.
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        admit(current.as_deref(), &review)
    }));
    let Ok(verdict) = decided else {
        tracing::error!(uid = %review.uid, object = %review.describe(), "deciding this review panicked; answered 500");
        return reject(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic",
            "the webhook failed while deciding this review; it was not admitted",
        );
    };
    tracing::info!(
        uid = %review.uid,
        user = %review.requester.username,
        operation = ?review.operation,
        object = %review.describe(),
        verdict = verdict.label(),
        "reviewed"
    );
    let mut response = AdmissionResponse::from(&review.request);
    response.allowed = verdict.allowed;
    if !verdict.allowed {
        let reason = match verdict.code {
            403 => "Forbidden",
            422 => "Invalid",
            503 => "ServiceUnavailable",
            _ => "BadRequest",
        };
        response.result = Status::failure(&verdict.message, reason).with_code(verdict.code);
    }
    let mut warnings = verdict.warnings.clone();
    if let Some(w) = proof_warning(state, current.as_ref(), &review, verdict.allowed).await {
        warnings.push(w);
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response.audit_annotations = verdict
        .audit
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if stamp && verdict.allowed {
        response = match stamp_patch(state, &review) {
            Ok(Some(patch)) => match response.clone().with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    return reject(
                        state,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "patch",
                        &e.to_string(),
                    );
                }
            },
            Ok(None) => response,
            Err(why) => {
                let mut denied = AdmissionResponse::from(&review.request);
                denied.allowed = false;
                denied.result = Status::failure(&why, "Forbidden").with_code(403);
                denied
            }
        };
    }
    state
        .metrics
        .review(&review.kind, verdict.label(), started.elapsed());
    json(&response.into_review())
}

/// The patch that stamps an admitted CedarPolicy or LatticeRestore create or update (none
/// for anything else). Without a key nothing can be stamped, and the write is refused: the
/// operator would not act on it.
fn stamp_patch(
    state: &State,
    review: &review::Review,
) -> Result<Option<json_patch::Patch>, String> {
    use kube::core::admission::Operation;
    if !matches!(review.kind.as_str(), "CedarPolicy" | "LatticeRestore")
        || !matches!(review.operation, Operation::Create | Operation::Update)
    {
        return Ok(None);
    }
    let key = state
        .admission
        .read()
        .ok()
        .and_then(|k| k.clone())
        .ok_or("this webhook has no admission key (--admission-key), so it cannot stamp what the operator would act on")?;
    let object = review.object.as_ref().ok_or("no object to stamp")?;
    let spec = object.get("spec").cloned().unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&review.name);
    let place = super::stamp::place(&review.kind, review.namespace.as_deref());
    // Stamped as the operator reads it back: the typed spec, defaults filled in.
    let value = if review.kind == "CedarPolicy" {
        let spec: lattice_schemas::crd::policy::CedarPolicySpec = serde_json::from_value(spec)
            .map_err(|e| format!("the policy's spec cannot be read: {e}"))?;
        key.stamp(place, name, &spec, &review.requester)
    } else {
        let spec: lattice_schemas::crd::backup::LatticeRestoreSpec =
            serde_json::from_value(spec)
                .map_err(|e| format!("the restore's spec cannot be read: {e}"))?;
        key.stamp(place, name, &spec, &review.requester)
    };
    let has_annotations = object
        .pointer("/metadata/annotations")
        .is_some_and(serde_json::Value::is_object);
    let op = if has_annotations {
        serde_json::json!([{"op": "add", "path": "/metadata/annotations/lattice.dev~1admitted", "value": value}])
    } else {
        serde_json::json!([{"op": "add", "path": "/metadata/annotations", "value": {super::stamp::ANNOTATION: value}}])
    };
    serde_json::from_value(op)
        .map(Some)
        .map_err(|e| format!("cannot build the stamp patch: {e}"))
}

fn reject(state: &State, status: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    tracing::warn!(reason, "request refused: {message}");
    state.metrics.rejected(reason);
    text(status, &format!("{message}\n"))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}
