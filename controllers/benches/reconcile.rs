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

use cluster::{Operator, TestEnv, eventually, install_crds};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use lattice_controllers::operator::index::Index;
use lattice_controllers::operator::plan::plan;
use lattice_controllers::operator::resources::derived_kind;
use lattice_engine::PolicyStore;
use serde_json::{Value, json};

const NAMESPACES: usize = 10;

fn world(services: usize) -> Vec<Value> {
    let per_ns = services / NAMESPACES;
    let mut out = vec![json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": "registries"},
        "spec": {"registries": [{"prefix": "registry.example.com", "requireSignature": false}]},
    })];
    for n in 0..NAMESPACES {
        let ns = format!("team{n}");
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"lattice.dev/environment": "prod"}}}));
        for i in 0..per_ns {
            let mut resources = serde_json::Map::new();
            if i + 1 < per_ns {
                resources.insert(
                    format!("svc{}", i + 1),
                    json!({"type": "service", "direction": "outbound"}),
                );
            }
            if i > 0 {
                resources.insert(
                    format!("svc{}", i - 1),
                    json!({"type": "service", "direction": "inbound"}),
                );
            }
            out.push(json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
                "metadata": {"name": format!("svc{i}"), "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "containers": {"app": {
                        "image": format!("registry.example.com/{ns}/svc{i}:1.0.{i}"),
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                    }},
                    "service": {"ports": {"http": {"port": 8080}}},
                    "resources": resources,
                },
            }));
        }
    }
    out
}

async fn apply_all(client: &Client, objects: Vec<Value>, manager: &str) {
    let failures = futures::stream::iter(objects.into_iter().map(|o| {
        let client = client.clone();
        let manager = manager.to_owned();
        async move {
            let kind = o["kind"].as_str().unwrap_or_default();
            let resource = match derived_kind(o["apiVersion"].as_str().unwrap_or_default(), kind) {
                Some(d) => d.api_resource(),
                None => cluster::resource_of(&o),
            };
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let api: Api<DynamicObject> = match o["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(client, ns, &resource),
                None => Api::all_with(client, &resource),
            };
            api.patch(
                name,
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(&o),
            )
            .await
            .err()
            .map(|e| format!("{kind} {name}: {e}"))
        }
    }))
    .buffer_unordered(32)
    .filter_map(|e| async move { e })
    .collect::<Vec<_>>()
    .await;
    assert!(
        failures.is_empty(),
        "{} apply failures, first: {}",
        failures.len(),
        failures[0]
    );
}

async fn count(client: &Client, api_version: &str, kind: &str) -> usize {
    let d = derived_kind(api_version, kind).expect("a derived kind");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &d.api_resource());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// CiliumNetworkPolicies with `selector`.
async fn count_labelled(client: &Client, selector: &str) -> usize {
    let d = derived_kind("cilium.io/v2", "CiliumNetworkPolicy").expect("a derived kind");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &d.api_resource());
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

async fn ready(client: &Client) -> usize {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::LatticeService,
        ),
    );
    let list = api
        .list(&ListParams::default())
        .await
        .expect("list services");
    list.items
        .iter()
        .filter(|s| {
            let status = s.data.get("status");
            status.and_then(|st| st.get("phase")) == Some(&json!("Ready"))
                && status
                    .and_then(|st| st.get("observedGeneration"))
                    .and_then(Value::as_i64)
                    == s.metadata.generation
        })
        .count()
}

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
        install_crds(&client).await;
        let (first, rest): (Vec<Value>, Vec<Value>) = objects
            .iter()
            .cloned()
            .partition(|o| o["metadata"]["namespace"].is_null());
        apply_all(&client, first, "bench").await;
        apply_all(&client, rest, "bench").await;
        let started = Instant::now();
        let operator = Operator::start(&env, &[]);
        let limit = Duration::from_secs(if full { 300 } else { 180 });
        eventually("every service Ready", limit, || async {
            (ready(&client).await == services).then_some(())
        })
        .await;
        // Baselines are applied in the same pass, after the workloads: wait for them too.
        let baselines = eventually("every namespace's baseline", limit, || async {
            let n = count_labelled(&client, "lattice.dev/baseline=true").await;
            (n >= NAMESPACES).then_some(n)
        })
        .await;
        let deployments = count(&client, "apps/v1", "Deployment").await;
        let policies = count(&client, "cilium.io/v2", "CiliumNetworkPolicy").await;
        let took = started.elapsed();
        assert_eq!(deployments, services, "{}", operator.logs());
        // Each edge: the callee's ingress and the caller's egress; each namespace: its
        // default-deny baseline.
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
