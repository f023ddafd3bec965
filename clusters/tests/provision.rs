//! Provisioning, per provider: a LatticeCluster (`tests/clusters/*.yaml`, validated as a
//! user's manifest would be) becomes CAPI objects that match their golden file
//! (`tests/golden/*.yaml`; `LATTICE_UPDATE_GENERATED=1` rewrites them) and that the
//! providers' real CRD schemas accept, strictly.

use std::collections::BTreeSet;
use std::path::PathBuf;

use lattice_clusters::bootstrap::secret_name;
use lattice_clusters::{BootstrapEndpoint, ProvisionError, ProvisionOptions, provision};
use lattice_schemas::crd::cluster::LatticeCluster;
use lattice_schemas::crd::infra_provider::InfraProviderSpec;
use lattice_schemas::manifest::Object;
use lattice_testkit::schemas::Validators;
use serde_json::Value;

fn crate_dir() -> PathBuf {
    lattice_testkit::workspace_root().join("clusters")
}

fn load(name: &str) -> (LatticeCluster, Option<InfraProviderSpec>) {
    let path = crate_dir().join(format!("tests/clusters/{name}.yaml"));
    let report = lattice_schemas::validate::validate_paths(std::slice::from_ref(&path));
    assert_eq!(
        report.errors(),
        0,
        "{name}: {:#?}",
        report
            .findings
            .iter()
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
    );
    let mut cluster = None;
    let mut infra = None;
    for m in report.manifests {
        match m.object {
            Object::Cluster(c) => cluster = Some(c),
            Object::InfraProvider(p) => infra = Some(p.spec),
            _ => {}
        }
    }
    (cluster.expect("a LatticeCluster"), infra)
}

fn endpoint() -> BootstrapEndpoint {
    "cell.production.example.com:8443".parse().unwrap()
}

fn objects(name: &str) -> Vec<Value> {
    let (cluster, infra) = load(name);
    provision(
        &cluster,
        &ProvisionOptions {
            endpoint: Some(endpoint()),
            infra: infra.as_ref(),
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
    .objects
}

const CASES: [&str; 5] = ["aws", "aws-rke2", "proxmox", "openstack", "docker"];

#[test]
fn every_provider_matches_its_golden_file() {
    let update = std::env::var_os("LATTICE_UPDATE_GENERATED").is_some();
    for name in CASES {
        let rendered: String = objects(name)
            .iter()
            .map(lattice_schemas::generate::to_yaml)
            .collect();
        let golden = crate_dir().join(format!("tests/golden/{name}.yaml"));
        if update {
            std::fs::write(&golden, &rendered).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert!(
            want == rendered,
            "{name}: the derived objects differ from {} (LATTICE_UPDATE_GENERATED=1 rewrites it):\n{rendered}",
            golden.display()
        );
    }
}

#[test]
fn every_object_validates_against_its_providers_crd() {
    let Some(dir) = lattice_testkit::reference_dir() else {
        return;
    };
    let validators = Validators::load(&dir);
    let mut kinds = BTreeSet::new();
    for name in CASES {
        for o in objects(name) {
            let kind = format!("{} {}", o["apiVersion"], o["kind"]);
            let errors = validators
                .check(&o)
                .unwrap_or_else(|| panic!("{name}: no reference schema for {kind}"));
            assert!(errors.is_empty(), "{name}: {kind}: {errors:#?}");
            kinds.insert(o["kind"].as_str().unwrap().to_owned());
        }
    }
    // Every kind the issue names is derived by at least one case.
    for kind in [
        "Cluster",
        "KubeadmControlPlane",
        "RKE2ControlPlane",
        "MachineDeployment",
        "KubeadmConfigTemplate",
        "RKE2ConfigTemplate",
        "AWSCluster",
        "AWSMachineTemplate",
        "ProxmoxCluster",
        "ProxmoxMachineTemplate",
        "OpenStackCluster",
        "OpenStackMachineTemplate",
        "DockerCluster",
        "DockerMachineTemplate",
    ] {
        assert!(kinds.contains(kind), "no case derives a {kind}");
    }
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn references_resolve_within_the_derived_objects() {
    for name in CASES {
        let objects = objects(name);
        let named: BTreeSet<(String, String)> = objects
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap().to_owned(),
                    o["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut refs = Vec::new();
        for o in &objects {
            let spec = &o["spec"];
            refs.extend([
                &spec["controlPlaneRef"],
                &spec["infrastructureRef"],
                &spec["machineTemplate"]["spec"]["infrastructureRef"],
                &spec["template"]["spec"]["infrastructureRef"],
                &spec["template"]["spec"]["bootstrap"]["configRef"],
            ]);
        }
        let refs: Vec<&Value> = refs.into_iter().filter(|r| !r.is_null()).collect();
        assert!(refs.len() >= 4, "{name}: {refs:?}");
        for r in refs {
            let key = (
                r["kind"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            );
            assert!(named.contains(&key), "{name}: {r} names nothing derived");
        }
        // Everything but the namespace lives in it, labelled with the cluster.
        let cluster = &find(&objects, "Cluster")[0]["metadata"]["name"];
        for o in objects.iter().filter(|o| o["kind"] != "Namespace") {
            assert_eq!(
                o["metadata"]["namespace"],
                format!("capi-{}", cluster.as_str().unwrap())
            );
            assert_eq!(
                o["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
                *cluster
            );
        }
    }
}

#[test]
fn pools_scale_as_declared() {
    let objects = objects("aws");
    let md = |pool: &str| {
        find(&objects, "MachineDeployment")
            .into_iter()
            .find(|m| m["metadata"]["name"] == format!("production-{pool}"))
            .unwrap()
            .clone()
    };
    // Autoscaled: the autoscaler's bounds, and no replica count to fight over.
    let general = md("general");
    let annotations = &general["metadata"]["annotations"];
    assert_eq!(
        annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"],
        "3"
    );
    assert_eq!(
        annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"],
        "12"
    );
    assert!(general["spec"]["replicas"].is_null());
    // Fixed: its replicas.
    let gpu = md("gpu");
    assert_eq!(gpu["spec"]["replicas"], 2);
    assert!(gpu["metadata"]["annotations"].is_null());
    let (mut cluster, _) = load("aws");
    let before = find(&objects, "AWSMachineTemplate")
        .iter()
        .map(|t| t["metadata"]["name"].clone())
        .collect::<Vec<_>>();
    // A changed machine is a new template (CAPI's templates are immutable); the others keep
    // their names.
    cluster
        .spec
        .nodes
        .worker_pools
        .get_mut("gpu")
        .unwrap()
        .instance_type = Some("p4d.24xlarge".into());
    let after = provision(
        &cluster,
        &ProvisionOptions {
            endpoint: Some(endpoint()),
            infra: None,
        },
    )
    .unwrap()
    .objects;
    let after_names: Vec<Value> = find(&after, "AWSMachineTemplate")
        .iter()
        .map(|t| t["metadata"]["name"].clone())
        .collect();
    assert_eq!(before.len(), after_names.len());
    let changed: Vec<_> = before.iter().filter(|n| !after_names.contains(n)).collect();
    assert_eq!(changed.len(), 1, "{before:?} → {after_names:?}");
    assert!(changed[0].as_str().unwrap().starts_with("production-gpu-"));
}

#[test]
fn the_bootstrap_hook_reads_its_token_from_a_secret_never_the_spec() {
    for name in CASES {
        let objects = objects(name);
        let cp = find(&objects, "KubeadmControlPlane")
            .into_iter()
            .chain(find(&objects, "RKE2ControlPlane"))
            .next()
            .unwrap();
        let files = cp["spec"]["kubeadmConfigSpec"]["files"]
            .as_array()
            .or(cp["spec"]["files"].as_array())
            .unwrap();
        let cluster = cp["metadata"]["labels"]["lattice.dev/cluster"]
            .as_str()
            .unwrap();
        let token = files
            .iter()
            .find(|f| f["path"] == "/etc/lattice/bootstrap-token")
            .unwrap();
        assert_eq!(token["contentFrom"]["secret"]["name"], secret_name(cluster));
        assert_eq!(token["permissions"], "0600");
        assert!(token["content"].is_null());
        let script = files
            .iter()
            .find(|f| f["path"] == "/etc/lattice/bootstrap.sh")
            .unwrap()["content"]
            .as_str()
            .unwrap();
        assert!(
            script.contains(&format!(
                "https://cell.production.example.com:8443/v1/bootstrap/{cluster}"
            )),
            "{script}"
        );
        assert!(script.contains("--cacert /etc/lattice/parent-ca.crt"));
    }
}

#[test]
fn what_cannot_be_provisioned_says_why() {
    let (mut cluster, _) = load("docker");
    cluster.spec.provider.config.docker = None;
    let options = ProvisionOptions {
        endpoint: Some(endpoint()),
        infra: None,
    };
    let ProvisionError::Invalid { field, message } = provision(&cluster, &options).unwrap_err();
    assert_eq!(field, "/spec/provider/config");
    assert!(message.contains("no provider block"), "{message}");
    let (mut cluster, _) = load("docker");
    let pool = cluster.spec.nodes.worker_pools.get_mut("default").unwrap();
    pool.min = Some(3);
    pool.max = Some(1);
    let ProvisionError::Invalid { field, .. } = provision(&cluster, &options).unwrap_err();
    assert_eq!(field, "/spec/nodes/workerPools/default/min");
    let (mut cluster, _) = load("docker");
    let pool = cluster.spec.nodes.worker_pools.remove("default").unwrap();
    cluster.spec.nodes.worker_pools.insert(
        "a-pool-name-that-is-far-too-long-for-a-label-of-63".into(),
        pool,
    );
    let ProvisionError::Invalid { message, .. } = provision(&cluster, &options).unwrap_err();
    assert!(message.contains("DNS label"), "{message}");
}
