//! Provisioning on a real API server: every provider's derived CAPI objects are created on
//! a testenv control plane with the providers' real CRDs installed, so the API server's own
//! checks (OpenAPI and the CRDs' CEL rules, which no offline schema check runs) accept them,
//! and reading them back gives what was written.

mod cluster;

use cluster::{TestEnv, install_crds};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use lattice_clusters::{BootstrapEndpoint, ProvisionOptions, provision};
use lattice_schemas::manifest::Object;
use serde_json::Value;

fn resource(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    )
}

#[tokio::test]
async fn derived_objects_are_accepted_by_a_real_api_server() {
    let env = TestEnv::start("clusters-provision");
    let client = env.client().await;
    install_crds(&client).await;
    let endpoint: BootstrapEndpoint = "cell.production.example.com:8443".parse().unwrap();
    let root = lattice_testkit::workspace_root().join("clusters/tests/clusters");
    let mut created = 0;
    for case in ["aws", "aws-rke2", "proxmox", "openstack", "docker"] {
        let report =
            lattice_schemas::validate::validate_paths(&[root.join(format!("{case}.yaml"))]);
        let mut cluster = None;
        let mut infra = None;
        for m in report.manifests {
            match m.object {
                Object::Cluster(c) => cluster = Some(c),
                Object::InfraProvider(p) => infra = Some(p.spec),
                _ => {}
            }
        }
        let provisioned = provision(
            &cluster.unwrap(),
            &ProvisionOptions {
                endpoint: endpoint.clone(),
                infra: infra.as_ref(),
            },
        )
        .unwrap();
        for object in &provisioned.objects {
            let ar = resource(object);
            let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let name = object["metadata"]["name"].as_str().unwrap();
            let applied = api
                .patch(
                    name,
                    &PatchParams::apply("lattice-clusters").force(),
                    &Patch::Apply(object),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("{case}: the API server refuses {} {name}: {e}", ar.kind)
                });
            let back = serde_json::to_value(&applied).unwrap();
            // What was written is what is stored (nothing pruned as unknown).
            if object.get("spec").is_some() {
                assert_subset(
                    &object["spec"],
                    &back["spec"],
                    &format!("{case} {} {name}", ar.kind),
                );
            }
            created += 1;
        }
    }
    assert!(created >= 40, "{created}");
}

/// Every field of `want` is in `got` with the same value (the API server may add defaults).
fn assert_subset(want: &Value, got: &Value, at: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let g = g.get(k).unwrap_or_else(|| panic!("{at}: `{k}` was pruned"));
                assert_subset(v, g, &format!("{at}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{at}");
            for (i, (w, g)) in w.iter().zip(g).enumerate() {
                assert_subset(w, g, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{at}"),
    }
}
