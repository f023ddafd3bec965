//! The operator's Prometheus metrics, served on `/metrics` (`--metrics-addr`): reconciles
//! by kind and result with their duration, plans (snapshot builds) with theirs, what the
//! last plan decided, the reconciles waiting on a retry, watch errors, drift corrections and
//! whether this replica leads. Every label comes from a closed set (the Lattice kinds and
//! fixed words), so nothing a user writes can grow them.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    /// `applied`, `denied` (revoked: nothing derived) or `error`.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    /// `allowed` or `denied`.
    state: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Histogram,
    plans: Counter,
    incremental_plans: Counter,
    plan_errors: Counter,
    plan_seconds: Histogram,
    workloads: Family<StateLabels, Gauge>,
    edges: Family<StateLabels, Gauge>,
    retrying: Gauge,
    watch_errors: Family<KindLabels, Counter>,
    not_served: Family<KindLabels, Gauge>,
    drift_corrections: Family<KindLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lattice_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Workload reconciles, by kind and result (applied, denied: revoked, error)",
            reconciles.clone(),
        );
        // 1 ms to about 16 s.
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time one pass of reconciles took",
            reconcile_seconds.clone(),
        );
        let plans = Counter::default();
        registry.register("plans", "Snapshots built and decided", plans.clone());
        let incremental_plans = Counter::default();
        registry.register(
            "incremental_plans",
            "Plans that decided again only what a change reached",
            incremental_plans.clone(),
        );
        let plan_errors = Counter::default();
        registry.register(
            "plan_errors",
            "Worlds that could not be decided (the last good plan stays)",
            plan_errors.clone(),
        );
        let plan_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "plan_duration_seconds",
            "Time from a change to a published plan: snapshot, gates, mesh",
            plan_seconds.clone(),
        );
        let workloads = Family::<StateLabels, Gauge>::default();
        registry.register(
            "workloads",
            "Workloads of the last plan, allowed (derived) or denied",
            workloads.clone(),
        );
        let edges = Family::<StateLabels, Gauge>::default();
        registry.register(
            "mesh_edges",
            "Declared mesh edges of the last plan, allowed or denied",
            edges.clone(),
        );
        let retrying = Gauge::default();
        registry.register(
            "reconciles_retrying",
            "Workloads whose last reconcile failed and wait for a retry (the queue's depth)",
            retrying.clone(),
        );
        let not_served = Family::<KindLabels, Gauge>::default();
        registry.register(
            "kind_not_served",
            "1 for a Lattice kind whose CRD the API server does not serve: nothing of it exists, and what needs it is idle",
            not_served.clone(),
        );
        let watch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Watch errors (each followed by a restart with backoff), by kind",
            watch_errors.clone(),
        );
        let drift_corrections = Family::<KindLabels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Derived objects edited or deleted by hand and put back, by kind",
            drift_corrections.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and writes",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            plans,
            incremental_plans,
            plan_errors,
            plan_seconds,
            workloads,
            edges,
            retrying,
            watch_errors,
            not_served,
            drift_corrections,
            leader,
        }
    }

    /// One workload reconciled.
    pub fn reconciled(&self, kind: &str, result: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// One pass of reconciles took `took`; `retrying` workloads now wait for a retry.
    pub fn pass(&self, took: Duration, retrying: usize) {
        self.reconcile_seconds.observe(took.as_secs_f64());
        self.retrying
            .set(i64::try_from(retrying).unwrap_or(i64::MAX));
    }

    /// A plan was published.
    pub fn planned(
        &self,
        took: Duration,
        workloads: (usize, usize),
        edges: (usize, usize),
        incremental: bool,
    ) {
        self.plans.inc();
        if incremental {
            self.incremental_plans.inc();
        }
        self.plan_seconds.observe(took.as_secs_f64());
        let set = |family: &Family<StateLabels, Gauge>, (allowed, denied): (usize, usize)| {
            for (state, n) in [("allowed", allowed), ("denied", denied)] {
                family
                    .get_or_create(&StateLabels {
                        state: state.to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        };
        set(&self.workloads, workloads);
        set(&self.edges, edges);
    }

    /// A world could not be decided.
    pub fn plan_failed(&self) {
        self.plan_errors.inc();
    }

    /// Whether the API server serves `kind` (its CRD is installed).
    pub fn served(&self, kind: &str, served: bool) {
        self.not_served
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .set(i64::from(!served));
    }

    /// A watch of `kind` failed and restarts.
    pub fn watch_error(&self, kind: &str) {
        self.watch_errors
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A derived object of `kind` was put back.
    pub fn drift_corrected(&self, kind: &str) {
        self.drift_corrections
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Whether this replica leads.
    pub fn leading(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` (and `/healthz`) over plain HTTP on `addr` until the runtime stops:
/// what Prometheus scrapes inside the cluster. Metrics carry no secrets; any other request
/// is a 404. Connections are served one task each, with a read timeout.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Method, Response, StatusCode};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on /metrics");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => {
                            let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                ),
                            );
                            r
                        }
                        (&Method::GET, "/healthz") => Response::new(Full::new(Bytes::from("ok"))),
                        _ => {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
