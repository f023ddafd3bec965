//! Cross-cluster decisions against local ones, side by side on one snapshot: `peering::plan`
//! deciding N edges between two clusters (request-scoped entities built for each) against
//! `MeshPlan::plan` deciding N local edges of the same shape; and the cost of reading a
//! cluster's declarations (`peering::declarations`, one projection of its world).
//!
//! `cargo bench -p lattice-gates --bench peering` prints the figures at 1,000 and 10,000
//! edges; under `cargo test` (CI's quick mode) it runs once at 20 to stay correct.

use std::time::{Duration, Instant};

use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_gates::MeshPlan;
use lattice_gates::peering::{self, Topology};
use lattice_schemas::manifest::Object;
use serde_json::json;

fn service(name: &str, ns: &str, resources: serde_json::Value) -> Object {
    Object::from_api(
        "LatticeService",
        &json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
            "metadata": {"name": name, "namespace": ns, "labels": {"team": "t"}},
            "spec": {
                "containers": {"main": {"image": "ghcr.io/org/app:1.0", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}},
                "service": {"ports": {"http": {"port": 8080}}},
                "resources": resources,
            }
        }),
    )
    .unwrap()
}

fn cluster(name: &str, parent: Option<&str>) -> Object {
    let mut spec = json!({
        "providerRef": "aws",
        "provider": {"kubernetes": {"version": "1.33.0"}, "config": {"aws": {"region": "eu-west-1"}}},
        "nodes": {"controlPlane": 1},
    });
    if let Some(p) = parent {
        spec["parent"] = json!(p);
    }
    Object::from_api(
        "LatticeCluster",
        &json!({"apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

/// Root's world: `n` callees each taking `edge/shop/web<i>`, or (local) `n` callers and
/// callees declaring each other within root.
fn world(n: usize, local: bool) -> World {
    let mut objects = vec![cluster("root", None), cluster("edge", Some("root"))];
    for i in 0..n {
        let caller = format!("web{i}");
        let callee = format!("api{i}");
        if local {
            objects.push(service(
                &caller,
                "shop",
                json!({callee.clone(): {"type": "service", "namespace": "payments"}}),
            ));
            objects.push(service(
                &callee,
                "payments",
                json!({caller: {"type": "service", "direction": "inbound", "namespace": "shop"}}),
            ));
        } else {
            objects.push(service(&callee, "payments", json!({caller: {"type": "service", "direction": "inbound", "namespace": "shop", "cluster": "edge"}})));
        }
    }
    World::from_objects(objects)
}

/// Edge's world: `n` callers each calling `root/payments/api<i>`.
fn edge_world(n: usize) -> World {
    World::from_objects(
        (0..n)
            .map(|i| {
                service(
                    &format!("web{i}"),
                    "shop",
                    json!({format!("api{i}"): {"type": "service", "namespace": "payments", "cluster": "root"}}),
                )
            })
            .collect(),
    )
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..repeats)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[20] };
    let repeats = if full { 5 } else { 1 };
    let store =
        PolicyStore::load_packs(&lattice_testkit::workspace_root().join("policies")).unwrap();
    let topology = Topology {
        own: "root".into(),
        below: [("edge".to_owned(), "edge".to_owned())].into(),
    };
    println!(
        "{:>7}  {:>14}  {:>14}  {:>7}  {:>16}",
        "edges", "local Connect", "cross-cluster", "ratio", "declarations"
    );
    for &n in sizes {
        let local = world(n, true);
        let local_snapshot = Snapshot::build(&local, &Projection::of(&local), &store).unwrap();
        let root = world(n, false);
        let snapshot = Snapshot::build(&root, &Projection::of(&root), &store).unwrap();
        let edge = edge_world(n);
        let mut declarations = peering::declarations(
            &root,
            &Projection::of(&root),
            "root",
            "root.lattice.test",
            "10.0.0.1:15443",
        );
        let read = time(repeats, || {
            peering::declarations(
                &edge,
                &Projection::of(&edge),
                "edge",
                "edge.lattice.test",
                "10.0.0.2:15443",
            )
        });
        declarations.extend(peering::declarations(
            &edge,
            &Projection::of(&edge),
            "edge",
            "edge.lattice.test",
            "10.0.0.2:15443",
        ));
        assert_eq!(declarations.len(), 2 * n);

        let baseline = time(repeats, || MeshPlan::plan(&local_snapshot, &local));
        let plan = peering::plan(&snapshot, &topology, &declarations);
        assert_eq!(plan.edges.len(), n);
        assert!(
            plan.edges.values().all(|e| e.allowed()),
            "every edge is bilateral and allowed"
        );
        assert_eq!(
            plan.routes(&declarations)
                .values()
                .map(Vec::len)
                .sum::<usize>(),
            2 * n
        );
        let cross = time(repeats, || {
            peering::plan(&snapshot, &topology, &declarations)
        });
        println!(
            "{n:>7}  {:>11.1} ms  {:>11.1} ms  {:>6.2}×  {:>13.1} ms",
            baseline.as_secs_f64() * 1e3,
            cross.as_secs_f64() * 1e3,
            cross.as_secs_f64() / baseline.as_secs_f64(),
            read.as_secs_f64() * 1e3,
        );
        println!(
            "         per edge: local {:.1} µs, cross-cluster {:.1} µs",
            baseline.as_secs_f64() * 1e6 / n as f64,
            cross.as_secs_f64() * 1e6 / n as f64
        );
    }
}
