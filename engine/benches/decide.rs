//! Decision latency with the index against plain Cedar evaluation of the same requests on
//! the same policies, at 10 to 10,000 policies; snapshot rebuild after one CedarPolicy
//! change; projection of a 10,000-service world.
//!
//! `cargo bench -p lattice-engine --bench decide` prints a table with p50/p99 and the ratio
//! (plus criterion's own statistics). Under `cargo test` (CI's quick mode) every benchmark
//! runs once on small sizes, so the code stays correct without the cost.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Context};
use criterion::{Criterion, criterion_group};
use lattice_engine::{PolicyStore, Projection, Query, Snapshot, World, action, uid};
use lattice_schemas::crd::{CedarPolicy, LatticeService};
use lattice_schemas::manifest::Object;

const NAMESPACES: usize = 50;

/// A world of `n` services over 50 namespaces, each calling its neighbour (bilaterally).
fn world(n: usize) -> World {
    let mut w = World::new();
    for i in 0..n {
        let ns = format!("ns{}", i % NAMESPACES);
        let next = (i + 1) % n;
        let prev = (i + n - 1) % n;
        let svc: LatticeService = serde_json::from_value(serde_json::json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
            "metadata": {"name": format!("s{i}"), "namespace": ns, "labels": {"team": format!("t{}", i % 7)}},
            "spec": {
                "containers": {"main": {
                    "image": format!("ghcr.io/org/app{}:1.{}", i % 100, i % 10),
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "security": if i % 10 == 0 { serde_json::json!({"capabilities": ["NET_ADMIN"]}) } else { serde_json::json!({}) }
                }},
                "service": {"ports": {"http": {"port": 8080}}},
                "resources": {
                    format!("s{next}"): {"type": "service", "namespace": format!("ns{}", next % NAMESPACES)},
                    format!("s{prev}"): {"type": "service", "direction": "inbound", "namespace": format!("ns{}", prev % NAMESPACES)}
                },
                "replicas": 2
            }
        }))
        .unwrap();
        w.upsert(Object::Service(svc));
    }
    w
}

/// `count` policies in the mix a large estate has: per-service permits, per-namespace
/// forbids, namespace-pair isolation and a few unscoped conditional rules.
fn policies(count: usize, services: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let s = (i * 7919) % services;
        let ns = i % NAMESPACES;
        let text = match i % 5 {
            0 => format!(
                r#"@id("p{i}") permit(principal == Lattice::Service::"ns{}/s{s}", action == Lattice::Action::"OverrideSecurity", resource == Lattice::SecurityOverride::"capability:NET_ADMIN");"#,
                s % NAMESPACES
            ),
            1 => format!(
                r#"@id("p{i}") permit(principal == Lattice::Service::"ns{}/s{s}", action == Lattice::Action::"DeployImage", resource) when {{ resource.registry == "ghcr.io" }};"#,
                s % NAMESPACES
            ),
            2 => format!(
                r#"@id("p{i}") forbid(principal in Lattice::Namespace::"ns{ns}", action == Lattice::Action::"Connect", resource in Lattice::Namespace::"ns{}") when {{ principal.replicas > 5 }};"#,
                (ns + 3) % NAMESPACES
            ),
            3 => format!(
                r#"@id("p{i}") forbid(principal == Lattice::Service::"ns{}/s{s}", action == Lattice::Action::"DeployImage", resource) when {{ resource.tag == "latest" }};"#,
                s % NAMESPACES
            ),
            _ => format!(
                r#"@id("p{i}") permit(principal in Lattice::Namespace::"ns{ns}", action == Lattice::Action::"AccessSecret", resource) when {{ resource.provider == "vault" }};"#
            ),
        };
        out.push_str(&text);
        out.push('\n');
    }
    out
}

fn store(count: usize, services: usize) -> PolicyStore {
    let mut store = PolicyStore::new();
    // The bilateral Connect rule, as the baseline pack has it.
    let baseline = r#"@id("bilateral") permit(principal, action == Lattice::Action::"Connect", resource) when { (principal.dependencies.contains(resource) || principal.dependsAll) && (resource.callers.contains(principal) || resource.callersAll) };"#;
    store
        .apply_object(&cedar_policy("lattice-system", "baseline", baseline))
        .unwrap();
    store
        .apply_object(&cedar_policy(
            "lattice-system",
            "estate",
            &policies(count.saturating_sub(1), services),
        ))
        .unwrap();
    store
}

fn cedar_policy(ns: &str, name: &str, text: &str) -> CedarPolicy {
    let mut p = CedarPolicy::new(
        name,
        lattice_schemas::crd::policy::CedarPolicySpec {
            policies: text.to_owned(),
            ..Default::default()
        },
    );
    p.metadata.namespace = Some(ns.to_owned());
    p
}

fn queries(services: usize, n: usize) -> Vec<Query> {
    (0..n)
        .map(|i| {
            let s = (i * 104_729) % services;
            let svc = uid("Service", &format!("ns{}/s{s}", s % NAMESPACES));
            match i % 3 {
                0 => {
                    let next = (s + 1) % services;
                    Query::new(svc, action("Connect"), uid("Service", &format!("ns{}/s{next}", next % NAMESPACES)))
                        .with_context(Context::from_json_value(serde_json::json!({"ports": [8080]}), None).unwrap())
                }
                1 => Query::new(svc, action("DeployImage"), uid("Image", &format!("ghcr.io/org/app{}:1.{}", s % 100, s % 10))).with_context(
                    Context::from_json_value(serde_json::json!({"raisedBy": "main", "workloadKind": "service", "sidecar": false}), None).unwrap(),
                ),
                _ => Query::new(svc, action("OverrideSecurity"), uid("SecurityOverride", "capability:NET_ADMIN")).with_context(
                    Context::from_json_value(serde_json::json!({"raisedBy": "main", "workloadKind": "service"}), None).unwrap(),
                ),
            }
        })
        .collect()
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

fn bench_decide(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let services = if full { 2_000 } else { 200 };
    let sizes: &[usize] = if full {
        &[10, 100, 1_000, 10_000]
    } else {
        &[10, 100]
    };
    let w = world(services);
    let projection = Projection::of(&w);
    let qs = queries(services, if full { 600 } else { 30 });
    let mut group = c.benchmark_group("decide");
    for &n in sizes {
        let snapshot = Snapshot::build(&w, &projection, &store(n, services)).unwrap();
        let requests: Vec<_> = qs.iter().map(|q| snapshot.request(q).unwrap()).collect();
        let all = snapshot.enforce_index().policy_set();
        // Both ways agree before either is timed.
        for (q, r) in qs.iter().zip(&requests) {
            assert_eq!(
                snapshot.evaluate(q).unwrap(),
                snapshot
                    .enforce_index()
                    .evaluate_unindexed(r, snapshot.entities())
            );
        }
        let authorizer = Authorizer::new();
        let mut i = 0;
        group.bench_function(format!("indexed/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                black_box(snapshot.decide(&qs[i]).unwrap())
            })
        });
        group.bench_function(format!("plain-cedar/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                black_box(authorizer.is_authorized(&requests[i], all, snapshot.entities()))
            })
        });
        let indexed: Vec<Duration> = qs
            .iter()
            .map(|q| {
                let t = Instant::now();
                black_box(snapshot.decide(q).unwrap());
                t.elapsed()
            })
            .collect();
        let plain: Vec<Duration> = requests
            .iter()
            .map(|r| {
                let t = Instant::now();
                black_box(authorizer.is_authorized(r, all, snapshot.entities()));
                t.elapsed()
            })
            .collect();
        let (ip50, ip99) = percentiles(indexed);
        let (pp50, pp99) = percentiles(plain);
        println!(
            "policies={n:>6}  indexed p50={:>8.1}µs p99={:>8.1}µs  plain-cedar p50={:>9.1}µs p99={:>9.1}µs  ratio(p50)={:>7.1}x",
            ip50.as_secs_f64() * 1e6,
            ip99.as_secs_f64() * 1e6,
            pp50.as_secs_f64() * 1e6,
            pp99.as_secs_f64() * 1e6,
            pp50.as_secs_f64() / ip50.as_secs_f64().max(1e-9),
        );
    }
    group.finish();
}

fn bench_rebuild(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let (services, policies_n) = if full { (2_000, 10_000) } else { (100, 100) };
    let w = world(services);
    let projection = Projection::of(&w);
    let base = store(policies_n, services);
    let snapshot = Snapshot::build(&w, &projection, &base).unwrap();
    let mut changed = base.clone();
    changed
        .apply_object(&cedar_policy(
            "shop",
            "one-change",
            r#"@id("x") forbid(principal, action == Lattice::Action::"Connect", resource in Lattice::Namespace::"ns1");"#,
        ))
        .unwrap();
    c.bench_function(
        &format!("snapshot-after-one-policy-change/{policies_n}"),
        |b| b.iter(|| black_box(snapshot.with_policies(&w, &projection, &changed).unwrap())),
    );
    let samples: Vec<Duration> = (0..if full { 20 } else { 2 })
        .map(|_| {
            let t = Instant::now();
            black_box(snapshot.with_policies(&w, &projection, &changed).unwrap());
            t.elapsed()
        })
        .collect();
    let (p50, _) = percentiles(samples);
    println!(
        "new snapshot after one CedarPolicy change at {policies_n} policies: p50={:.1}ms",
        p50.as_secs_f64() * 1e3
    );
}

/// A new snapshot after one service changed: its entities taken in
/// ([`Snapshot::with_entity_delta`]) against the whole world projected and built again.
fn bench_service_change(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 100 };
    let mut w = world(n);
    let base = store(100, n);
    let projection = Projection::of(&w);
    let snapshot = Snapshot::build(&w, &projection, &base).unwrap();
    let key = lattice_engine::ObjectKey {
        kind: "LatticeService",
        namespace: Some("ns5".into()),
        name: "s5".into(),
    };
    let Some(Object::Service(mut changed)) = w.get(&key).cloned() else {
        panic!("s5 is a service")
    };
    changed.spec.replicas = Some(5);
    w.upsert(Object::Service(changed));
    let incremental = || {
        let mut p = projection.clone();
        let delta = p.update_workload(&w, &key).unwrap();
        assert!(
            !delta.is_empty(),
            "the replica count is a fact of the Service entity"
        );
        snapshot
            .with_entity_delta(&w, &base, p.live(), delta)
            .unwrap()
    };
    let rebuild = || {
        let p = Projection::of(&w);
        Snapshot::build(&w, &p, &base).unwrap()
    };
    assert_eq!(incremental().digest(), rebuild().digest());
    let runs = if full { 20 } else { 2 };
    let time = |f: &dyn Fn() -> Snapshot| {
        let samples: Vec<Duration> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect();
        percentiles(samples).0
    };
    let (inc, reb) = (time(&incremental), time(&rebuild));
    println!(
        "new snapshot after one service change at {n} services: p50={:.1}ms; rebuilt whole: {:.0}ms ({:.0}x)",
        inc.as_secs_f64() * 1e3,
        reb.as_secs_f64() * 1e3,
        reb.as_secs_f64() / inc.as_secs_f64().max(1e-9)
    );
    let mut group = c.benchmark_group("snapshot-after-one-service-change");
    group.sample_size(10);
    group.bench_function(format!("entity-delta/{n}"), |b| b.iter(incremental));
    group.bench_function(format!("rebuild/{n}"), |b| b.iter(rebuild));
    group.finish();
}

fn bench_projection(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 100 };
    let w = world(n);
    let schema = lattice_schemas::cedar::schema();
    let t = Instant::now();
    let projection = Projection::of(&w);
    let entities = projection
        .entities(&w, schema, &Default::default())
        .unwrap();
    let elapsed = t.elapsed();
    println!(
        "projection of {n} services to {} validated entities: {:.0}ms",
        entities.iter().count(),
        elapsed.as_secs_f64() * 1e3
    );
    let mut group = c.benchmark_group("projection");
    group.sample_size(10);
    group.bench_function(format!("world-to-entities/{n}"), |b| {
        b.iter(|| {
            let p = Projection::of(&w);
            black_box(p.entities(&w, schema, &Default::default()).unwrap())
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_decide,
    bench_rebuild,
    bench_service_change,
    bench_projection
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
