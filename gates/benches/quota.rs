//! A quota decision at estate scale: one `ConsumeQuota` request for a workload among
//! 10,000 in one namespace under a LatticeQuota, on the bundled packs, with the usage
//! precomputed (the ledger, timed separately), against plain Cedar (`Authorizer`, every
//! enforced policy, no index) on the same requests and entities, side by side.
//!
//! `cargo bench -p lattice-gates --bench quota` prints p50/p99 and the ratio; under
//! `cargo test` (CI's quick mode) it runs once at 200 workloads to stay correct.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cedar_policy::Authorizer;
use lattice_engine::quota::Ledger;
use lattice_engine::snapshot::context_from_json;
use lattice_engine::{PolicyStore, Projection, Query, Snapshot, World, action, uid};
use lattice_gates::quota_questions;
use lattice_schemas::manifest::Object;
use serde_json::json;

fn world(n: usize) -> World {
    let mut objects = vec![
        Object::from_api(
            "LatticeQuota",
            &json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeQuota",
                "metadata": {"name": "big"},
                "spec": {"namespace": "big", "limits": {"cpu": "10000", "memory": "8Ti", "workloads": n}}
            }),
        )
        .unwrap(),
    ];
    for i in 0..n {
        objects.push(
            Object::from_api(
                "LatticeService",
                &json!({
                    "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
                    "metadata": {"name": format!("s{i}"), "namespace": "big"},
                    "spec": {
                        "replicas": 1 + (i % 3) as i64,
                        "containers": {"main": {"image": "ghcr.io/org/app:1.0",
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}},
                    }
                }),
            )
            .unwrap(),
        );
    }
    World::from_objects(objects)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 200 };
    let w = world(n);
    let store = PolicyStore::bundled().unwrap();
    let snapshot = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();

    let started = Instant::now();
    let ledger = black_box(Ledger::of(&w));
    let ledger_took = started.elapsed();
    assert_eq!(ledger.usage("big").unwrap().workloads, n as i64 * 10_000);

    // Every workload's question, as the derivation gate asks it.
    let queries: Vec<Query> = w
        .objects()
        .filter(|(_, o)| o.is_workload())
        .map(|(_, o)| {
            let gate = quota_questions(&snapshot, o).remove(0);
            let principal = uid("Service", &format!("big/{}", o.name()));
            Query::new(principal, action(gate.action), gate.resource)
                .with_context(context_from_json(&gate.context).unwrap())
        })
        .collect();
    let requests: Vec<_> = queries
        .iter()
        .map(|q| snapshot.request(q).unwrap())
        .collect();
    let all = snapshot.enforce_index().policy_set();
    let authorizer = Authorizer::new();
    // Both ways agree, and everything fits, before anything is timed.
    for (q, r) in queries.iter().zip(&requests) {
        let ours = snapshot.decide(q).unwrap();
        assert!(ours.allowed, "{:?}", q.principal);
        let plain = authorizer.is_authorized(r, all, snapshot.entities());
        assert_eq!(plain.decision(), cedar_policy::Decision::Allow);
    }
    let repeats = if full { 3 } else { 1 };
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..repeats {
        for (q, r) in queries.iter().zip(&requests) {
            let t = Instant::now();
            black_box(snapshot.decide(q).unwrap());
            ours.push(t.elapsed());
            let t = Instant::now();
            black_box(authorizer.is_authorized(r, all, snapshot.entities()));
            plain.push(t.elapsed());
        }
    }
    let (o50, o99) = percentiles(ours);
    let (p50, p99) = percentiles(plain);
    println!(
        "quota decision, {n} workloads in one namespace, {} enforced policies: indexed p50 {:.1} µs, p99 {:.1} µs; plain Cedar p50 {:.1} µs, p99 {:.1} µs; ratio (p50) {:.1}x; the ledger (every workload's usage) {:.1} ms",
        all.policies().count(),
        us(o50),
        us(o99),
        us(p50),
        us(p99),
        p50.as_secs_f64() / o50.as_secs_f64().max(1e-9),
        ledger_took.as_secs_f64() * 1e3,
    );
}
