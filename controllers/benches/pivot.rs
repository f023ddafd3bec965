//! The pivot of a cluster holding 500 Cluster API objects, through the tunnel, against the
//! same move with no tunnel, side by side in one run (target: ≤ 5 s from `Pivot` allowed to
//! `pivoted`; upstream Lattice reports about 13 s for a real cluster).
//!
//! Two real control planes (`tools/testenv`) with the Cluster API CRDs: the parent holds the
//! cluster's objects in `capi-<cluster>` (what provisioning derives, then per machine a
//! MachineSet-owned `Machine`, the `KubeadmConfig` it owns and the bootstrap-data `Secret`
//! that config owns, with status, as CAPI's controllers leave them). A real cell serves on
//! loopback and the child's agent is connected to it (TLS 1.3, gRPC).
//!
//! - **tunnel**: `move_cluster` as the operator runs it: discover, pause, batches as
//!   lifecycle commands the agent applies into the child, unpause, `pivoted` recorded, the
//!   parent's copies deleted;
//! - **direct**: the same `move_cluster`, with the agent's applier called in process: what
//!   a tool with both clusters' credentials (as `clusterctl move`) pays for the same work.
//!
//! The ratio is what the tunnel adds. `cargo bench -p lattice-controllers --bench pivot`;
//! under `cargo test` (CI's quick mode) 100 objects, one round.

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{TestEnv, apply_yaml, install_crds};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use lattice_controllers::fleet::pivot::{self, PivotTarget, ThroughTunnel};
use lattice_tunnel::agent::{self, Agent, AgentConfig};
use lattice_tunnel::cell::{Cell, CellConfig};
use lattice_tunnel::session::Health;
use lattice_tunnel::tls::{CellCert, cell_config};
use lattice_tunnel::{ClusterCa, ClusterIdentity};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DOMAIN: &str = "lattice.bench";

fn resource(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    )
}

/// Applies `object` (and its status) on `client`; returns its UID.
async fn put(client: &kube::Client, object: &Value) -> String {
    let ar = resource(object);
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        object["metadata"]["namespace"].as_str().unwrap(),
        &ar,
    );
    let name = object["metadata"]["name"].as_str().unwrap();
    let params = PatchParams::apply("capi-controller-stand-in").force();
    let applied = api
        .patch(name, &params, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", ar.kind));
    if !object["status"].is_null() {
        api.patch_status(name, &params, &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("status of {} {name}: {e}", ar.kind));
    }
    applied.metadata.uid.unwrap()
}

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true}])
}

/// The LatticeCluster `name` and its CAPI objects on the parent: what provisioning derives,
/// then machines until there are about `objects`. Returns how many will move.
async fn seed(parent: &kube::Client, name: &str, objects: usize) -> usize {
    let manifest = format!(
        "apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: {name}
spec:
  providerRef: docker
  parent: root
  provider:
    kubernetes:
      version: \"1.32.0\"
    config:
      docker: {{}}
  nodes:
    controlPlane: 1
    workerPools:
      default:
        replicas: 2
"
    );
    apply_yaml(parent, &manifest).await;
    let cluster = cluster::documents(&manifest).remove(0);
    let cluster: lattice_schemas::crd::cluster::LatticeCluster =
        serde_json::from_value(cluster).unwrap();
    let derived = lattice_clusters::provision(
        &cluster,
        &lattice_clusters::ProvisionOptions {
            endpoint: Some(lattice_clusters::BootstrapEndpoint {
                host: "127.0.0.1".into(),
                port: 8443,
            }),
            infra: None,
        },
    )
    .unwrap();
    let namespace = lattice_clusters::capi::namespace(name);
    let mut uids = std::collections::HashMap::new();
    for o in &derived.objects {
        if o["kind"] == "Namespace" {
            cluster::hierarchy::namespace(parent, &namespace).await;
            continue;
        }
        let uid = put(parent, o).await;
        uids.insert(o["kind"].as_str().unwrap().to_owned(), uid);
    }
    let mut count = derived.objects.len() - 1;
    let labels = json!({"cluster.x-k8s.io/cluster-name": name});
    let machine_set = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet",
        "metadata": {"name": format!("{name}-default-abc"), "namespace": namespace, "labels": labels,
                     "ownerReferences": owner("cluster.x-k8s.io/v1beta2", "MachineDeployment", &format!("{name}-default"), &uids["MachineDeployment"])},
        "spec": {"clusterName": name, "selector": {"matchLabels": {"pool": "default"}},
                 "template": {"metadata": {"labels": {"pool": "default"}},
                              "spec": {"clusterName": name, "bootstrap": {"dataSecretName": "x"},
                                       "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachine", "name": "x"}}}},
    });
    let set_uid = put(parent, &machine_set).await;
    count += 1;
    let mut i = 0;
    while count + 3 <= objects {
        let machine = format!("{name}-default-abc-{i:04}");
        let machine_uid = put(parent, &json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": machine, "namespace": namespace, "labels": labels,
                         "ownerReferences": owner("cluster.x-k8s.io/v1beta2", "MachineSet", &format!("{name}-default-abc"), &set_uid)},
            "spec": {"clusterName": name, "bootstrap": {"dataSecretName": machine},
                     "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachine", "name": machine}},
            "status": {"phase": "Running"},
        }))
        .await;
        let config_uid = put(parent, &json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
            "metadata": {"name": machine, "namespace": namespace, "labels": labels,
                         "ownerReferences": owner("cluster.x-k8s.io/v1beta2", "Machine", &machine, &machine_uid)},
            "spec": {"format": "cloud-config"},
            "status": {"dataSecretName": machine},
        }))
        .await;
        put(parent, &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": machine, "namespace": namespace, "labels": labels,
                         "ownerReferences": owner("bootstrap.cluster.x-k8s.io/v1beta2", "KubeadmConfig", &machine, &config_uid)},
            "stringData": {"value": "#cloud-config\n", "format": "cloud-config"},
        }))
        .await;
        count += 3;
        i += 1;
    }
    count
}

/// A cell on loopback with the agent of `cluster` (applying into `child`) connected.
async fn tunnel(child: kube::Client, cluster: &str) -> (Cell, CancellationToken) {
    let cell = Cell::new(
        ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap(),
        CellConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (own, key) = cell
        .own_certificate(
            &ClusterIdentity::new(DOMAIN, "root").unwrap(),
            &["127.0.0.1".into()],
            jiff::SignedDuration::from_hours(1),
        )
        .unwrap();
    let tls = cell_config(
        &cell.ca_pem(),
        CellCert::new(&own.pem, key.private_key_der()).unwrap(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn({
        let cell = cell.clone();
        let stop = stop.clone();
        async move { cell.serve(listener, tls, stop.cancelled_owned()).await }
    });
    let config = AgentConfig::new(cluster, DOMAIN, &addr.to_string(), "127.0.0.1");
    let token = cell
        .mint_token(cluster, jiff::SignedDuration::from_mins(5))
        .unwrap();
    let creds = agent::bootstrap(&config, &cell.ca_pem(), token.secret())
        .await
        .unwrap();
    let agent = Arc::new(
        Agent::new(
            config,
            creds,
            Arc::new(Health {
                nodes_ready: 1,
                nodes_total: 1,
                control_plane_ready: true,
                ..Health::default()
            }),
        )
        .with_commands(Arc::new(PivotTarget::new(child, cluster))),
    );
    tokio::spawn({
        let stop = stop.clone();
        async move { agent.run(stop).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while cell.agents().get(cluster).is_none() {
        assert!(Instant::now() < deadline, "the agent did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (cell, stop)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (objects, rounds) = if quick { (100, 1) } else { (500, 3) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let parent_env = TestEnv::start("bench-pivot-parent");
        let child_env = TestEnv::start("bench-pivot-child");
        let parent = parent_env.client().await;
        let child = child_env.client().await;
        install_crds(&parent).await;
        install_crds(&child).await;
        apply_yaml(
            &parent,
            "apiVersion: lattice.dev/v1alpha1\nkind: InfraProvider\nmetadata:\n  name: docker\nspec:\n  type: docker\n",
        )
        .await;
        let mut timings: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        let mut moved = 0;
        // Both API servers' discovery warmed up, so neither side pays the first call's.
        pivot::discover(&parent, "default").await.unwrap();
        pivot::discover(&child, "default").await.unwrap();
        for round in 0..rounds {
            let mut sides = [0, 1];
            // Alternated, so neither always goes first.
            if round % 2 == 1 {
                sides.reverse();
            }
            for which in sides {
                // A cluster of its own each time (an agent acts only in its own cluster's
                // namespace), its tunnel connected before the clock starts.
                let name = format!("edge-{}-{round}", ["t", "d"][which]);
                let seeded = seed(&parent, &name, objects).await;
                let (sink, stop): (Box<dyn pivot::StepSink>, Option<CancellationToken>) =
                    if which == 0 {
                        let (cell, stop) = tunnel(child.clone(), &name).await;
                        let through = ThroughTunnel {
                            cell,
                            cluster: name.clone(),
                        };
                        (Box::new(through), Some(stop))
                    } else {
                        (Box::new(PivotTarget::new(child.clone(), &name)), None)
                    };
                let endpoint: lattice_clusters::BootstrapEndpoint =
                    "127.0.0.1:8443".parse().unwrap();
                let started = Instant::now();
                let outcome = pivot::move_cluster(&parent, sink.as_ref(), &name, Some(&endpoint))
                    .await
                    .unwrap();
                timings[which].push(started.elapsed());
                if let Some(stop) = stop {
                    stop.cancel();
                }
                assert_eq!(outcome.objects, seeded, "every object moved");
                let namespace = lattice_clusters::capi::namespace(&name);
                let held = |client: kube::Client| {
                    let (name, namespace) = (name.clone(), namespace.clone());
                    async move {
                        lattice_clusters::pivot::plan(
                            &name,
                            &pivot::discover(&client, &namespace).await.unwrap(),
                        )
                        .len()
                    }
                };
                assert_eq!(held(child.clone()).await, seeded, "the child holds them all");
                assert_eq!(held(parent.clone()).await, 0, "the parent holds none");
                moved = seeded;
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let tunnel = median(&mut timings[0]);
        let direct = median(&mut timings[1]);
        println!(
            "pivot of {moved} Cluster API objects ({rounds} rounds, median): tunnel {}, direct {}, tunnel/direct {:.2}× (target ≤ 5 s)",
            secs(tunnel),
            secs(direct),
            tunnel.as_secs_f64() / direct.as_secs_f64()
        );
        if !quick {
            assert!(
                tunnel <= Duration::from_secs(5),
                "the pivot took {} (target ≤ 5 s)",
                secs(tunnel)
            );
        }
    });
}
