//! The operator reconciling a large cluster from cold, against a real API server
//! (`tools/testenv`): 1,000 LatticeServices in ten namespaces, each calling the next in its
//! namespace over a bilateral edge, created before the operator starts. Measured from the
//! operator's start until every service reports `Ready` for its generation and every
//! Deployment and CiliumNetworkPolicy exists. Target: ≤ 60 s.
//!
//! The baseline, run side by side on a second, fresh control plane: the very same derived
//! objects server-side applied by a plain client at the same concurrency, with no watches,
//! decisions or status. The ratio is what deciding and reporting cost on top of writing.
//!
//! `cargo bench -p lattice-controllers --bench reconcile` runs 1,000 services; under `cargo
//! test` (CI's quick mode) 100.

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::fleet::{NAMESPACES, apply_all, count, count_labelled, ready, seed, world};
use cluster::{Operator, TestEnv, eventually, install_crds};
use lattice_controllers::operator::index::Index;
use lattice_controllers::operator::plan::plan;
use lattice_engine::PolicyStore;
use serde_json::Value;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let services = if full { 1000 } else { 100 };
    let edges = services - NAMESPACES;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let objects = world(services);

        // Lattice: the operator, from cold, on a cluster that already holds the services.
        let env = TestEnv::start("bench-operator");
        let client = env.client().await;
        seed(&client, &objects, "bench").await;
        let started = Instant::now();
        let operator = Operator::start(&env, &[]);
        let limit = Duration::from_secs(if full { 300 } else { 180 });
        eventually("every service Ready", limit, || async {
            (ready(&client).await == services).then_some(())
        })
        .await;
        // Baselines are applied in the same pass, after the workloads: wait for them too,
        // until the network policies are exactly each edge's two (the callee's ingress and
        // the caller's egress) and each namespace's default-deny baseline. Both counts are
        // read together: namespaces beyond the bench's own (default, …) get their baseline
        // in the same pass, so a count taken earlier can be one short.
        let (baselines, policies) = eventually("every namespace's baseline", limit, || async {
            let n = count_labelled(&client, "lattice.dev/baseline=true").await;
            let policies = count(&client, "cilium.io/v2", "CiliumNetworkPolicy").await;
            (n >= NAMESPACES && policies == 2 * edges + n).then_some((n, policies))
        })
        .await;
        let deployments = count(&client, "apps/v1", "Deployment").await;
        let took = started.elapsed();
        assert_eq!(deployments, services, "{}", operator.logs());
        assert_eq!(policies, 2 * edges + baselines);
        drop(operator);
        drop(env);

        // Baseline: the same derived objects, written by a plain client.
        let mut index = Index::new(
            PolicyStore::load_packs(&cluster::root().join("policies")).unwrap(),
            std::sync::Arc::new(
                lattice_controllers::webhook::stamp::AdmissionKey::from_bytes(&cluster::ADMISSION_KEY).unwrap(),
            ),
        );
        for o in &objects {
            index.apply(o["kind"].as_str().unwrap(), o).unwrap();
        }
        let decided = plan(index.clone()).unwrap();
        // What the operator applied: every workload's objects and every namespace's baseline.
        let derived: Vec<Value> = decided
            .workloads
            .values()
            .flat_map(|d| d.objects.clone())
            .chain(decided.namespaces.values().flat_map(|n| n.objects.clone()))
            .collect();
        let total = derived.len();
        let env = TestEnv::start("bench-baseline");
        let client = env.client().await;
        install_crds(&client).await;
        apply_all(&client, objects.iter().filter(|o| o["kind"] == "Namespace").cloned().collect(), "bench").await;
        let started = Instant::now();
        apply_all(&client, derived, "baseline").await;
        let baseline = started.elapsed();

        println!(
            "operator: {services} services ({total} derived objects, {edges} edges) reconciled from cold to steady state in {:.1} s (target ≤ 60 s)",
            took.as_secs_f64()
        );
        println!(
            "baseline, the same {total} objects server-side applied by a plain client: {:.1} s; ratio {:.1}x",
            baseline.as_secs_f64(),
            took.as_secs_f64() / baseline.as_secs_f64().max(0.001)
        );
        if full {
            assert!(took <= Duration::from_secs(60), "over the 60 s target");
        }
    });
}
