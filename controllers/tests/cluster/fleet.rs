//! A generated cluster of many services for the operator's load and fault runs: ten
//! namespaces, each a chain of LatticeServices where every service calls the next over a
//! bilateral edge; written with plain server-side apply; and what the operator should derive
//! from it, decided locally on the same rule packs, to compare a cluster against.

use std::collections::BTreeSet;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use lattice_controllers::operator::index::Index;
use lattice_controllers::operator::plan::plan;
use lattice_controllers::operator::resources::{DERIVED, ObjectId, derived_kind};
use lattice_engine::PolicyStore;
use serde_json::{Value, json};

pub const NAMESPACES: usize = 10;

pub fn world(services: usize) -> Vec<Value> {
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

pub async fn apply_all(client: &Client, objects: Vec<Value>, manager: &str) {
    let failures = futures::stream::iter(objects.into_iter().map(|o| {
        let client = client.clone();
        let manager = manager.to_owned();
        async move {
            let kind = o["kind"].as_str().unwrap_or_default();
            let resource = match derived_kind(o["apiVersion"].as_str().unwrap_or_default(), kind) {
                Some(d) => d.api_resource(),
                None => super::resource_of(&o),
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

pub async fn count(client: &Client, api_version: &str, kind: &str) -> usize {
    let d = derived_kind(api_version, kind).expect("a derived kind");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &d.api_resource());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// CiliumNetworkPolicies with `selector`.
pub async fn count_labelled(client: &Client, selector: &str) -> usize {
    let d = derived_kind("cilium.io/v2", "CiliumNetworkPolicy").expect("a derived kind");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &d.api_resource());
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

pub async fn ready(client: &Client) -> usize {
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

/// The CRDs installed and `objects` applied as `manager`: cluster-scoped ones first, so
/// every namespace exists before what lives in it.
pub async fn seed(client: &Client, objects: &[Value], manager: &str) {
    super::install_crds(client).await;
    let (first, rest): (Vec<Value>, Vec<Value>) = objects
        .iter()
        .cloned()
        .partition(|o| o["metadata"]["namespace"].is_null());
    apply_all(client, first, manager).await;
    apply_all(client, rest, manager).await;
}

/// Every object the operator should have derived from `objects` on a cluster that also
/// holds the namespaces `client` lists (workloads' objects and every namespace's
/// baseline), decided locally on the workspace's rule packs.
pub async fn expected(client: &Client, objects: &[Value]) -> BTreeSet<ObjectId> {
    let mut index = Index::new(
        PolicyStore::load_packs(&super::root().join("policies")).unwrap(),
        std::sync::Arc::new(
            lattice_controllers::webhook::stamp::AdmissionKey::from_bytes(&super::ADMISSION_KEY)
                .unwrap(),
        ),
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in namespaces.list(&ListParams::default()).await.unwrap().items {
        let mut value = serde_json::to_value(ns).unwrap();
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Namespace");
        index.apply("Namespace", &value).unwrap();
    }
    for o in objects {
        index.apply(o["kind"].as_str().unwrap(), o).unwrap();
    }
    let decided = plan(index).unwrap();
    decided
        .workloads
        .values()
        .flat_map(|d| d.objects.iter())
        .chain(decided.namespaces.values().flat_map(|n| n.objects.iter()))
        .filter_map(ObjectId::of)
        .collect()
}

/// Every object of a derived kind on the cluster that carries Lattice's managed-by label.
pub async fn derived_on_cluster(client: &Client) -> BTreeSet<ObjectId> {
    let mut out = BTreeSet::new();
    for kind in DERIVED {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        let Ok(list) = api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=lattice"))
            .await
        else {
            continue;
        };
        for o in list.items {
            out.insert(ObjectId {
                api_version: kind.api_version.to_owned(),
                kind: kind.kind.to_owned(),
                namespace: o.metadata.namespace.unwrap_or_default(),
                name: o.metadata.name.unwrap_or_default(),
            });
        }
    }
    out
}
