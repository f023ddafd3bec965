//! The planner at estate scale: 10,000 LatticeServices in 50 namespaces with 50,000
//! declared edges (each service calls five others and accepts five, bilaterally), a
//! secret each, under the bundled packs and a grants policy. Measured from the event (the
//! watch's object taken into the index) to the plan published (the plan the webhook and
//! the effector take), as the operator's planner task does it:
//!
//! - **one service changed** (its replica count): target ≤ 50 ms p50;
//! - **a policy edit** whose scope reaches the 200 services of one namespace (2% of the
//!   workloads): target ≤ 200 ms p50;
//! - **the baseline, in the same run:** the whole plan of the same index, which every
//!   change cost before the planner kept its last plan.
//!
//! Each measured plan is checked against a whole plan of the same index at the end.
//! `cargo bench -p lattice-controllers --bench planner` runs the full size and criterion's
//! own statistics; under `cargo test` (CI's quick mode) 300 services, a few rounds each.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use lattice_controllers::operator::index::Index;
use lattice_controllers::operator::plan::{Plan, plan};
use lattice_controllers::operator::planner::{Made, Planner};
use lattice_controllers::webhook::stamp::{ANNOTATION, AdmissionKey};
use lattice_engine::PolicyStore;
use serde_json::{Value, json};

const NAMESPACES: usize = 50;
const FANOUT: usize = 5;

fn ns(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

/// Service `i` of `n`, as the API server returns it, with `replicas`.
fn service(i: usize, n: usize, replicas: i64) -> Value {
    let mut resources = serde_json::Map::new();
    for k in 1..=FANOUT {
        let (callee, caller) = ((i + k) % n, (i + n - k) % n);
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
        json!({"type": "secret", "id": format!("{}/s{i}/db", ns(i)),
               "params": {"provider": "vault-prod", "keys": ["username", "password"]}}),
    );
    json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
        "metadata": {"name": format!("s{i}"), "namespace": ns(i), "uid": format!("uid-{i}"),
                     "generation": 1},
        "spec": {
            "replicas": replicas,
            "containers": {"main": {
                "image": format!("ghcr.io/org/app{i}:1.0"),
                "command": ["/app/server"],
                "variables": {"DB_USER": "${resources.db.username}",
                              "DB_PASSWORD": "${resources.db.password}"},
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            }},
            "service": {"ports": {"http": {"port": 8080}}},
            "resources": resources,
        }
    })
}

fn admission() -> std::sync::Arc<AdmissionKey> {
    std::sync::Arc::new(AdmissionKey::from_bytes(&[7; 32]).unwrap())
}

/// The grants policy, admitted by the webhook (stamped), with `extra` policies.
fn grants(extra: &str) -> Value {
    let text = format!(
        "@id(\"first-party-images\")\npermit (principal, action == Lattice::Action::\"DeployImage\", resource) when {{ resource.registry == \"ghcr.io\" }};\n@id(\"own-secrets\")\npermit (principal, action == Lattice::Action::\"AccessSecret\", resource) when {{ resource.provider == \"vault-prod\" }};\n{extra}"
    );
    let spec: lattice_schemas::crd::policy::CedarPolicySpec =
        serde_json::from_value(json!({"policies": text})).unwrap();
    let admin = lattice_gates::admission::Requester {
        username: "sec".into(),
        groups: vec!["lattice:security-admins".into()],
    };
    json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": "grants", "namespace": "platform", "uid": "uid-grants",
                     "generation": 1,
                     "annotations": {ANNOTATION: admission().stamp("platform", "grants", &spec, &admin)}},
        "spec": {"policies": text},
    })
}

/// A forbid whose scope is the services of `ns7`, toggled on and off: what it reaches.
const EDIT: &str = "@id(\"ns7-signed-only\")\nforbid (principal in Lattice::Namespace::\"ns7\", action == Lattice::Action::\"DeployImage\", resource) when { resource.tag == \"nightly\" };";

/// The operator's watches and planner, without a cluster: the index under its lock, and
/// the planner that decides each change.
struct Operator {
    index: Mutex<Index>,
    planner: Planner,
}

impl Operator {
    /// One watch event, then the planner's turn: from the object taken in to the plan
    /// published.
    fn event(&mut self, kind: &str, value: &Value) -> (std::sync::Arc<Plan>, Made) {
        let (copy, changes) = {
            let mut index = self.index.lock().unwrap();
            index.apply(kind, value).unwrap();
            let changes = index.take_changes();
            (index.clone(), changes)
        };
        self.planner.next(&copy, &changes).unwrap()
    }
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 300 };
    let rounds = if full { 21 } else { 3 };

    let packs = PolicyStore::bundled().unwrap();
    let mut index = Index::new(packs, admission());
    index.apply("CedarPolicy", &grants("")).unwrap();
    for i in 0..n {
        index.apply("LatticeService", &service(i, n, 2)).unwrap();
    }
    let mut op = Operator {
        index: Mutex::new(index),
        planner: Planner::new(),
    };
    let (first, made) = {
        let mut index = op.index.lock().unwrap();
        let changes = index.take_changes();
        let copy = index.clone();
        drop(index);
        op.planner.next(&copy, &changes).unwrap()
    };
    assert!(matches!(made, Made::Whole(_)));
    assert_eq!(first.workloads.len(), n);
    assert_eq!(first.edges, n * FANOUT, "every declared edge is planned");
    assert_eq!(
        first.allowed_edges,
        n * FANOUT,
        "every edge is bilateral and allowed"
    );

    // One service changed: a different one each round, scaled up.
    let mut one = Vec::new();
    for r in 0..rounds {
        let i = (r * 37) % n;
        let value = service(i, n, 3 + r as i64);
        let t = Instant::now();
        let (plan, made) = op.event("LatticeService", &value);
        one.push(t.elapsed());
        let Made::Incremental { derived } = made else {
            panic!("one service's change is planned incrementally: {made:?}")
        };
        assert_eq!(
            derived,
            1 + 2 * FANOUT,
            "it and its ten peers are derived again"
        );
        black_box(plan);
    }

    // A policy edit reaching one namespace's services, on and off.
    let mut edit = Vec::new();
    let mut reached = 0;
    for r in 0..rounds {
        let value = grants(if r % 2 == 0 { EDIT } else { "" });
        let t = Instant::now();
        let (plan, made) = op.event("CedarPolicy", &value);
        edit.push(t.elapsed());
        let Made::Incremental { derived } = made else {
            panic!("a policy edit is planned incrementally: {made:?}")
        };
        reached = derived;
        black_box(plan);
    }
    assert_eq!(
        reached,
        n / NAMESPACES,
        "the edit reaches exactly ns7's services"
    );

    // The baseline: the whole plan of the same index, as every change cost before.
    let copy = op.index.lock().unwrap().clone();
    let mut whole = Vec::new();
    let mut last_whole = None;
    for _ in 0..if full { 3 } else { 1 } {
        let t = Instant::now();
        let p = plan(copy.clone()).unwrap();
        whole.push(t.elapsed());
        last_whole = Some(p);
    }
    // What the planner published last is what a whole plan of the same index decides.
    let (last, _) = op.event("CedarPolicy", &grants(""));
    let whole_plan = last_whole.unwrap();
    let whole_again = plan(op.index.lock().unwrap().clone()).unwrap();
    assert_eq!(last.workloads.len(), whole_again.workloads.len());
    for (owner, d) in whole_again.workloads.iter() {
        assert_eq!(last.workloads[owner].digest, d.digest, "{owner}");
    }
    drop(whole_plan);

    let (one, edit, whole) = (p50(one), p50(edit), p50(whole));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "planner at {n} services, {} edges: one service changed p50 {:.1} ms (target <= 50 ms); a policy edit reaching {reached} workloads ({:.0}%) p50 {:.1} ms (target <= 200 ms); whole plan {:.0} ms; ratios {:.0}x and {:.0}x",
        n * FANOUT,
        ms(one),
        100.0 * reached as f64 / n as f64,
        ms(edit),
        ms(whole),
        ms(whole) / ms(one).max(1e-9),
        ms(whole) / ms(edit).max(1e-9),
    );

    // Criterion's own statistics, on the same operator.
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut round = 0i64;
    c.bench_function(&format!("planner/one-service-changed/{n}"), |b| {
        b.iter(|| {
            round += 1;
            let i = (round as usize * 53) % n;
            black_box(op.event("LatticeService", &service(i, n, 10 + round % 5)))
        })
    });
    let mut on = false;
    c.bench_function(&format!("planner/policy-edit/{n}"), |b| {
        b.iter(|| {
            on = !on;
            black_box(op.event("CedarPolicy", &grants(if on { EDIT } else { "" })))
        })
    });
    c.bench_function(&format!("planner/whole-plan/{n}"), |b| {
        b.iter(|| black_box(plan(copy.clone()).unwrap()))
    });
    c.final_summary();
}
