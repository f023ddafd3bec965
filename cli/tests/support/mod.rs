//! A testenv control plane with the LatticeCluster CRD and a fleet on it, for the CLI's
//! tests and benchmark.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use lattice_schemas::crd::Kind;
use serde_json::{Value, json};

/// A running control plane; stopped, and its directory removed, on drop.
pub struct Env {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn start() -> Env {
    start_named("env")
}

/// A control plane of its own (several may run in one test process).
pub fn start_named(name: &str) -> Env {
    start_named_with(name, &[])
}

/// [`start_named`] with more kube-apiserver flags.
pub fn start_named_with(name: &str, flags: &[String]) -> Env {
    let dir = std::env::temp_dir().join(format!("lattice-cli-{name}-{}", std::process::id()));
    let (child, stdin, kubeconfig) = lattice_testkit::testenv::spawn_with(&dir, "--wipe", flags);
    Env {
        child,
        stdin,
        dir,
        kubeconfig,
    }
}

pub async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

pub fn cluster(name: &str, parent: Option<&str>, provider: &str, pools: Value) -> Value {
    json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster",
        "metadata": {"name": name},
        "spec": {"providerRef": provider, "parent": parent, "environment": "prod",
                 "provider": {"kubernetes": {"version": "1.32.0"}, "config": {provider: config(provider)}},
                 "nodes": {"controlPlane": 3, "workerPools": pools}},
    })
}

/// A provider block the real schema takes.
fn config(provider: &str) -> Value {
    match provider {
        "proxmox" => json!({"controlPlaneEndpoint": "10.20.0.100",
                            "ipv4Pool": {"range": "10.20.0.101-120/24", "gateway": "10.20.0.1"},
                            "sourceNode": "pve-a", "templateId": 9000, "dnsServers": ["10.20.0.1"]}),
        "aws" => json!({"region": "eu-west-1", "ami": "ami-0123456789abcdef0"}),
        _ => json!({}),
    }
}

/// Puts the LatticeCluster CRD and `clusters` (with their status) on the server.
pub async fn seed(client: &kube::Client, clusters: &[(Value, Value)]) {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = lattice_schemas::generate::crd_json(Kind::LatticeCluster);
    let params = PatchParams::apply("test").force();
    crds.patch(
        crd["metadata"]["name"].as_str().unwrap(),
        &params,
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("lattice.dev", "v1alpha1", "LatticeCluster"),
            "latticeclusters",
        ),
    );
    for (object, status) in clusters {
        let name = object["metadata"]["name"].as_str().unwrap();
        // The CRD is served a moment after it is created.
        let mut tries = 0;
        loop {
            match api.patch(name, &params, &Patch::Apply(object)).await {
                Ok(_) => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let mut body = object.clone();
        body["status"] = status.clone();
        api.patch_status(name, &params, &Patch::Apply(&body))
            .await
            .unwrap();
    }
}
