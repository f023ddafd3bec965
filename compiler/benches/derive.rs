//! Derivation at estate scale, each figure printed beside a baseline measured in the same run:
//!
//! - gates + compile for 1,000 services of a 10,000-service world (target ≤ 1 s), against the
//!   same gates decided by plain Cedar over every policy (no index);
//! - the full mesh plan of 10,000 services with 50,000 declared edges (target ≤ 1 s), against
//!   plain Cedar deciding the same edges;
//! - re-planning after one service changes (target ≤ 10 ms), against planning from scratch.
//!
//! `cargo bench -p lattice-compiler --bench derive` runs the full sizes; under `cargo test`
//! (CI's quick mode) everything runs once on a small world so the code stays correct.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Context};
use criterion::{Criterion, criterion_group};
use lattice_compiler::{CompileContext, compile};
use lattice_engine::{ObjectKey, PolicyStore, Projection, Query, Snapshot, World, action, uid};
use lattice_gates::{MeshPlan, evaluate, questions};
use lattice_schemas::crd::{CedarPolicy, LatticeService};
use lattice_schemas::manifest::Object;
use serde_json::json;

const NAMESPACES: usize = 50;
/// Each service calls the next `FANOUT` services, and each callee lists its callers: with
/// 10,000 services, 50,000 declared edges (each declared by both sides).
const FANOUT: usize = 5;

fn ns(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

fn service(i: usize, n: usize) -> LatticeService {
    let mut resources = serde_json::Map::new();
    for k in 1..=FANOUT {
        let callee = (i + k) % n;
        let caller = (i + n - k) % n;
        resources.insert(
            format!("s{callee}"),
            json!({"type": "service", "namespace": ns(callee)}),
        );
        resources.insert(
            format!("s{caller}"),
            json!({"type": "service", "direction": "inbound", "namespace": ns(caller)}),
        );
    }
    resources.insert(
        "db".into(),
        json!({"type": "secret", "id": format!("{}/s{i}/db", ns(i)), "params": {"provider": "vault-prod", "keys": ["username", "password"]}}),
    );
    serde_json::from_value(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
        "metadata": {"name": format!("s{i}"), "namespace": ns(i)},
        "spec": {
            "replicas": 2,
            "containers": {"main": {
                "image": format!("ghcr.io/org/app{}:1.{}", i % 100, i % 10),
                "command": ["/app/server"],
                "variables": {
                    "DB_USER": "${resources.db.username}",
                    "DB_URL": "postgres://${resources.db.username}:${resources.db.password}@db:5432/app",
                    "NEXT": format!("${{resources.s{}.url}}", (i + 1) % n)
                },
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}
            }},
            "service": {"ports": {"http": {"port": 8080}}},
            "resources": resources
        }
    }))
    .unwrap()
}

fn world(n: usize) -> World {
    let mut w = World::new();
    for i in 0..n {
        w.upsert(Object::Service(service(i, n)));
    }
    w
}

/// The real rule packs, plus what a platform team grants every namespace.
fn store() -> PolicyStore {
    let root = lattice_testkit::workspace_root();
    let mut store = PolicyStore::load_packs(&root.join("policies")).unwrap();
    let mut grants = CedarPolicy::new(
        "grants",
        lattice_schemas::crd::policy::CedarPolicySpec {
            policies: r#"
                @id("first-party-images") permit(principal, action == Lattice::Action::"DeployImage", resource) when { resource.registry == "ghcr.io" };
                @id("own-secrets") permit(principal, action == Lattice::Action::"AccessSecret", resource) when { resource.provider == "vault-prod" };
            "#
            .into(),
            ..Default::default()
        },
    );
    grants.metadata.namespace = Some("platform".into());
    store.apply_object(&grants).unwrap();
    store
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Estate {
    world: World,
    snapshot: Snapshot,
    store: PolicyStore,
    projection: Projection,
}

fn estate(n: usize) -> Estate {
    let world = world(n);
    let store = store();
    let projection = Projection::of(&world);
    let snapshot = Snapshot::build(&world, &projection, &store).unwrap();
    Estate {
        world,
        snapshot,
        store,
        projection,
    }
}

fn bench_gates_and_compile(c: &mut Criterion, e: &Estate, derive: usize) {
    let ctx = CompileContext::of(&e.world, &e.snapshot);
    let workloads: Vec<&Object> = e.world.objects().map(|(_, o)| o).take(derive).collect();
    let run = || {
        let mut objects = 0;
        for o in &workloads {
            let report = evaluate(&e.snapshot, o);
            assert!(report.allowed(), "{:?}", report.denied_gates());
            objects += compile(o, &report, &ctx).unwrap().len();
        }
        objects
    };
    let t = Instant::now();
    let objects = black_box(run());
    let ours = t.elapsed();
    // Baseline: the same questions, each decided by plain Cedar over every policy.
    let all = e.snapshot.enforce_index().policy_set();
    let authorizer = Authorizer::new();
    let t = Instant::now();
    let mut asked = 0;
    for o in &workloads {
        let principal = uid(
            "Service",
            &format!("{}/{}", o.namespace().unwrap_or("default"), o.name()),
        );
        for gate in questions(o) {
            let q = Query::new(
                principal.clone(),
                action(gate.action),
                gate.resource.clone(),
            )
            .with_context(Context::from_json_value(gate.context.clone(), None).unwrap());
            let r = e.snapshot.request(&q).unwrap();
            black_box(authorizer.is_authorized(&r, all, e.snapshot.entities()));
            asked += 1;
        }
    }
    let plain = t.elapsed();
    println!(
        "gates+compile: {} services of {} ({asked} gates, {objects} objects): {:.0}ms (target ≤ 1000ms); plain-Cedar gates alone: {:.0}ms; ratio {:.1}x",
        workloads.len(),
        e.world.len(),
        ms(ours),
        ms(plain),
        plain.as_secs_f64() / ours.as_secs_f64().max(1e-9)
    );
    let mut group = c.benchmark_group("derive");
    group.sample_size(10);
    group.bench_function(format!("gates+compile/{}", workloads.len()), |b| {
        b.iter(run)
    });
    group.finish();
}

fn bench_mesh(c: &mut Criterion, e: &Estate, full: bool) {
    let t = Instant::now();
    let plan = MeshPlan::plan(&e.snapshot, &e.world);
    let planned = t.elapsed();
    let edges = plan.len();
    assert_eq!(
        plan.allowed().count(),
        edges,
        "every bilateral edge is allowed"
    );
    // Baseline: the same edges decided by plain Cedar.
    let all = e.snapshot.enforce_index().policy_set();
    let authorizer = Authorizer::new();
    let t = Instant::now();
    for (caller, callee) in plan.edges().map(|e| (&e.caller, &e.callee)) {
        let q = Query::new(
            uid("Service", caller),
            action("Connect"),
            uid("Service", callee),
        )
        .with_context(Context::from_json_value(json!({"ports": [8080]}), None).unwrap());
        let r = e.snapshot.request(&q).unwrap();
        black_box(authorizer.is_authorized(&r, all, e.snapshot.entities()));
    }
    let plain = t.elapsed();
    println!(
        "mesh plan: {} services, {edges} declared edges: {:.0}ms (target ≤ 1000ms); plain-Cedar decisions alone: {:.0}ms; ratio {:.1}x",
        e.world.len(),
        ms(planned),
        ms(plain),
        plain.as_secs_f64() / planned.as_secs_f64().max(1e-9)
    );

    // One service changes: it drops a callee and adds another.
    let n = e.world.len();
    let mut world = e.world.clone();
    let mut projection = e.projection.clone();
    let mut changed = service(7, n);
    let dropped = (7 + 1) % n;
    let added = (7 + n / 2) % n;
    changed
        .spec
        .workload
        .resources
        .remove(&format!("s{dropped}"));
    changed.spec.workload.resources.insert(
        format!("s{added}"),
        serde_json::from_value(json!({"type": "service", "namespace": ns(added)})).unwrap(),
    );
    let object = Object::Service(changed);
    let key = ObjectKey::of(&object);
    world.upsert(object);
    let t = Instant::now();
    projection.update(&world, &key);
    let snapshot = Snapshot::build(&world, &projection, &e.store).unwrap();
    let snapshot_time = t.elapsed();
    let samples: Vec<Duration> = (0..if full { 50 } else { 3 })
        .map(|_| {
            let mut p = plan.clone();
            let t = Instant::now();
            black_box(p.replan(&snapshot, &world, &key));
            t.elapsed()
        })
        .collect();
    let (p50, p99) = percentiles(samples);
    let mut replanned = plan.clone();
    let decided = replanned.replan(&snapshot, &world, &key);
    let fresh = MeshPlan::plan(&snapshot, &world);
    assert!(
        replanned.len() == fresh.len()
            && replanned.edges().zip(fresh.edges()).all(|(e1, e2)| {
                (&e1.caller, &e1.callee) == (&e2.caller, &e2.callee) && e1.allowed() == e2.allowed()
            }),
        "a replan equals a fresh plan"
    );
    println!(
        "replan after one service changed: {decided} edges re-decided in p50={:.2}ms p99={:.2}ms (target ≤ 10ms); a full plan: {:.0}ms; ratio {:.0}x (new snapshot for the change: {:.0}ms)",
        ms(p50),
        ms(p99),
        ms(planned),
        planned.as_secs_f64() / p50.as_secs_f64().max(1e-9),
        ms(snapshot_time)
    );
    let mut group = c.benchmark_group("mesh");
    group.sample_size(10);
    group.bench_function(format!("plan/{edges}"), |b| {
        b.iter(|| black_box(MeshPlan::plan(&e.snapshot, &e.world)))
    });
    group.bench_function("replan-one-service", |b| {
        b.iter_batched(
            || plan.clone(),
            // The plan is returned so dropping 50,000 edges is not timed.
            |mut p| {
                black_box(p.replan(&snapshot, &world, &key));
                p
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_all(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, derive) = if full { (10_000, 1_000) } else { (60, 20) };
    let t = Instant::now();
    let e = estate(n);
    println!("estate of {n} services built in {:.0}ms", ms(t.elapsed()));
    bench_gates_and_compile(c, &e, derive);
    bench_mesh(c, &e, full);
}

criterion_group!(benches, bench_all);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
