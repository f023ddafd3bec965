//! `lattice install` on two real testenv control planes: one is the bootstrap cluster, the
//! other the cluster Cluster API brings up.
//!
//! Cluster API's real core manager runs on each bootstrap cluster (`tools/capi`, from its Go
//! module): it owns and labels the providers' objects, and computes the `Cluster`'s phase,
//! initialization and conditions, which `install` waits on, and deletes the Cluster at
//! `uninstall`. No machine, Docker engine or cloud runs here, so the infrastructure (CAPD) and
//! control-plane (KCP) providers are simulated by `lattice_testkit::capi::simulate_providers`: once their objects
//! exist, they report what those controllers report through the v1beta2 contract when the
//! machines are up (the endpoint, provisioned, initialized, available) and write the
//! `<cluster>-kubeconfig` Secret as KCP does, whose kubeconfig reaches the second control
//! plane: "the booted cluster".

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use lattice_testkit::capi::Manager;
use serde_json::json;

fn capi(client: &kube::Client, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    lattice_testkit::capi::api(client, "capi-root", group, kind, plural)
}

fn lattice(kind: &str, plural: &str, client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("lattice.dev", "v1alpha1", kind),
            plural,
        ),
    )
}

/// `lattice install …` as a user runs it: exit code, stdout, stderr.
async fn install(args: Vec<String>) -> (i32, String, String) {
    run(std::iter::once("install".to_owned()).chain(args).collect()).await
}

/// `lattice …`: exit code, stdout, stderr.
async fn run(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

fn root_yaml(extra: &str) -> String {
    format!(
        "apiVersion: lattice.dev/v1alpha1
kind: InfraProvider
metadata:
  name: docker
spec:
  type: docker
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: root
spec:
  providerRef: docker
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
{extra}"
    )
}

/// A test's working directory, removed when the test ends.
struct WorkDir(PathBuf);

impl std::ops::Deref for WorkDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workdir(name: &str) -> WorkDir {
    let dir = std::env::temp_dir().join(format!("lattice-install-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    WorkDir(dir)
}

/// Cluster API on a bootstrap cluster (see [`lattice_testkit::capi::set_up`]).
async fn install_cluster_api(client: &kube::Client, env: &support::Env) -> Manager {
    let dir = env.kubeconfig.parent().unwrap().join("cluster-api");
    lattice_testkit::capi::set_up(client, &dir, &env.kubeconfig).await
}

fn args(file: &Path, bootstrap: &Path, out: &Path) -> Vec<String> {
    vec![
        "-f".into(),
        file.display().to_string(),
        "--bootstrap-kubeconfig".into(),
        bootstrap.display().to_string(),
        "--kubeconfig-out".into(),
        out.display().to_string(),
        "--timeout-seconds".into(),
        "120".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_provisions_a_root_moves_it_into_itself_and_uninstall_takes_it_back() {
    let bootstrap_env = support::start_named("install-bootstrap");
    let target_env = support::start_named("install-target");
    let bootstrap = support::client(&bootstrap_env.kubeconfig).await;
    let target = support::client(&target_env.kubeconfig).await;
    let dir = workdir("ok");
    let file = dir.join("root.yaml");
    std::fs::write(&file, root_yaml("")).unwrap();
    let out = dir.join("root.kubeconfig");

    // A bootstrap cluster without Cluster API is refused before anything is written.
    let (code, _, stderr) = install(args(&file, &bootstrap_env.kubeconfig, &out)).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("must run Cluster API with the docker provider (clusterctl init --infrastructure docker)"),
        "{stderr}"
    );
    assert!(
        lattice("LatticeCluster", "latticeclusters", &bootstrap)
            .list(&Default::default())
            .await
            .is_err(),
        "nothing written: not even the Lattice CRDs"
    );

    let _cluster_api = install_cluster_api(&bootstrap, &bootstrap_env).await;
    let kubeconfig = std::fs::read_to_string(&target_env.kubeconfig).unwrap();
    let (_, server_port) = lattice_testkit::capi::endpoint(&kubeconfig);
    let provider = tokio::spawn({
        let (bootstrap, kubeconfig) = (bootstrap.clone(), kubeconfig.clone());
        async move {
            lattice_testkit::capi::simulate_providers(
                bootstrap,
                "capi-root",
                "root",
                &kubeconfig,
                2,
            )
            .await;
        }
    });
    let (code, stdout, stderr) = install(args(&file, &bootstrap_env.kubeconfig, &out)).await;
    assert_eq!(code, 0, "{stderr}");
    // What the user sees (shown with --nocapture; the README quotes it).
    println!("{stderr}{stdout}");
    provider.await.unwrap();
    assert!(
        stderr.contains(
            "Provision Cluster::\"root\" by Cluster::\"lattice-bootstrap\": allowed (by baseline/parent-manages-children)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("the bootstrap cluster serves Cluster API"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with("installed root: kubeconfig in "),
        "{stdout}"
    );
    let moved: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("moved ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));

    // The new cluster holds its own objects (the kubeconfig Secret too) and its own
    // LatticeCluster, pivoted; a root's control plane runs no bootstrap hook.
    let own = lattice("LatticeCluster", "latticeclusters", &target)
        .get("root")
        .await
        .unwrap();
    assert_eq!(own.data["status"]["pivoted"], true);
    assert!(own.metadata.annotations.unwrap_or_default().is_empty());
    assert!(
        lattice("InfraProvider", "infraproviders", &target)
            .get_opt("docker")
            .await
            .unwrap()
            .is_some()
    );
    let deployment = capi(
        &target,
        "cluster.x-k8s.io",
        "MachineDeployment",
        "machinedeployments",
    )
    .get("root-default")
    .await
    .unwrap();
    assert_eq!(deployment.data["spec"]["replicas"], 2);
    let control_plane = capi(
        &target,
        "controlplane.cluster.x-k8s.io",
        "KubeadmControlPlane",
        "kubeadmcontrolplanes",
    )
    .get("root-control-plane")
    .await
    .unwrap();
    assert!(control_plane.data["spec"]["kubeadmConfigSpec"]["postKubeadmCommands"].is_null());
    let moved_cluster = capi(&target, "cluster.x-k8s.io", "Cluster", "clusters")
        .get("root")
        .await
        .unwrap();
    assert_eq!(moved_cluster.data["spec"]["paused"], false);
    // What Cluster API's manager computed on the bootstrap cluster moved with it: the phase,
    // the initialization, the control plane's Available condition mirrored, and the
    // endpoint it took from the infrastructure.
    let status = &moved_cluster.data["status"];
    assert_eq!(status["phase"], "Provisioned", "{status}");
    assert_eq!(status["initialization"]["infrastructureProvisioned"], true);
    assert_eq!(status["initialization"]["controlPlaneInitialized"], true);
    let available = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ControlPlaneAvailable")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(available["status"], "True", "{available}");
    assert_eq!(
        moved_cluster.data["spec"]["controlPlaneEndpoint"]["port"],
        json!(server_port)
    );
    let cluster_uid = moved_cluster.metadata.uid.clone().unwrap();
    // The providers' objects are owned by the moved Cluster (Cluster API set the owner; the
    // move remapped it), and the kubeconfig Secret by the moved control plane.
    let owners = |o: &DynamicObject| lattice_testkit::capi::owner_uids(&o.metadata);
    assert_eq!(owners(&control_plane), vec![cluster_uid.clone()]);
    let docker_cluster = capi(
        &target,
        "infrastructure.cluster.x-k8s.io",
        "DockerCluster",
        "dockerclusters",
    )
    .get(
        moved_cluster.data["spec"]["infrastructureRef"]["name"]
            .as_str()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(owners(&docker_cluster), vec![cluster_uid]);
    // Cluster API's MachineDeployment controller made a MachineSet and it the workers'
    // Machines (no machine boots here: they wait for their infrastructure); they moved with
    // the owner chain remapped to the new cluster's UIDs.
    let (sets, machines) = lattice_testkit::capi::workers(&target, "capi-root").await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        owners(&sets[0]),
        vec![deployment.metadata.uid.clone().unwrap()]
    );
    assert_eq!(machines.len(), 2, "{machines:?}");
    for machine in &machines {
        assert_eq!(owners(machine), vec![sets[0].metadata.uid.clone().unwrap()]);
    }
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(target.clone(), "capi-root");
    let copied = secrets.get("root-kubeconfig").await.unwrap();
    assert_eq!(
        copied.metadata.owner_references.unwrap()[0].uid,
        control_plane.metadata.uid.clone().unwrap()
    );
    // The new cluster holds exactly what moved, and the bootstrap cluster none of it.
    let held = |client: kube::Client| async move {
        let found = lattice_controllers::fleet::pivot::discover(&client, "capi-root")
            .await
            .unwrap();
        lattice_clusters::pivot::plan("root", &found).len()
    };
    assert_eq!(held(target.clone()).await, moved);
    assert_eq!(held(bootstrap.clone()).await, 0);
    // The bootstrap cluster keeps nothing of root.
    assert!(
        lattice("LatticeCluster", "latticeclusters", &bootstrap)
            .get_opt("root")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        capi(&bootstrap, "cluster.x-k8s.io", "Cluster", "clusters")
            .get_opt("root")
            .await
            .unwrap()
            .is_none()
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(bootstrap.clone());
    // No namespace controller runs beside testenv's API server: deleted means terminating.
    if let Some(ns) = namespaces.get_opt("capi-root").await.unwrap() {
        assert!(ns.metadata.deletion_timestamp.is_some());
    }
    // The kubeconfig is the new cluster's, for its owner only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), kubeconfig);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Uninstall. While root manages a cluster, the baseline's decommission-only-empty
    // holds it, and nothing moves.
    let clusters = lattice("LatticeCluster", "latticeclusters", &target);
    let mut leaf = own.data.clone();
    leaf["spec"]["parent"] = json!("root");
    let leaf = json!({"apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster",
                      "metadata": {"name": "leaf"}, "spec": leaf["spec"]});
    clusters
        .patch("leaf", &PatchParams::apply("test"), &Patch::Apply(&leaf))
        .await
        .unwrap();
    let uninstall = |bootstrap: PathBuf| {
        let cluster = out.clone();
        async move {
            run(vec![
                "uninstall".into(),
                "-k".into(),
                cluster.display().to_string(),
                "--bootstrap-kubeconfig".into(),
                bootstrap.display().to_string(),
                "--timeout-seconds".into(),
                "60".into(),
            ])
            .await
        }
    };
    let (code, _, stderr) = uninstall(bootstrap_env.kubeconfig.clone()).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("DENIED Decommission Cluster::\"root\" by Cluster::\"lattice-bootstrap\": denied (by baseline/decommission-only-empty): nothing is moved or deleted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("advice: Move or delete the cluster's workloads first."),
        "{stderr}"
    );
    assert_eq!(held(target.clone()).await, moved, "nothing moved");

    // Empty, it is moved back: the bootstrap cluster holds the objects until Cluster API
    // has deleted the Cluster (here at once: no controller holds it), and root's own copies
    // are released.
    // A new bootstrap cluster (the first one's `capi-root` stays terminating: no namespace
    // controller runs beside testenv's API server).
    clusters.delete("leaf", &Default::default()).await.unwrap();
    let second_env = support::start_named("install-bootstrap-2");
    let bootstrap = support::client(&second_env.kubeconfig).await;
    let _second_cluster_api = install_cluster_api(&bootstrap, &second_env).await;
    let (code, stdout, stderr) = uninstall(second_env.kubeconfig.clone()).await;
    assert_eq!(code, 0, "{stderr}");
    println!("{stderr}{stdout}");
    assert!(
        stderr.contains("Unpivot Cluster::\"root\" by Cluster::\"lattice-bootstrap\": allowed (by baseline/parent-manages-children)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("moved {moved} Cluster API objects back from root")),
        "{stderr}"
    );
    assert_eq!(
        stdout.trim(),
        "uninstalled root: Cluster API deleted its machines"
    );
    assert_eq!(held(target.clone()).await, 0, "root released its copies");
    assert!(
        capi(&bootstrap, "cluster.x-k8s.io", "Cluster", "clusters")
            .get_opt("root")
            .await
            .unwrap()
            .is_none(),
        "the Cluster was deleted on the bootstrap cluster"
    );
    assert!(
        lattice_testkit::capi::workers(&bootstrap, "capi-root")
            .await
            .1
            .is_empty(),
        "Cluster API deleted the machines with it"
    );
    assert_eq!(
        clusters.get("root").await.unwrap().data["status"]["pivoted"],
        false
    );
}

#[tokio::test]
async fn a_denied_or_unusable_install_writes_nothing() {
    let dir = workdir("refused");
    // The bootstrap kubeconfig does not even exist: the decision comes first.
    let nowhere = dir.join("no-such-kubeconfig");
    let out = dir.join("out.kubeconfig");
    let file = dir.join("frozen.yaml");
    std::fs::write(
        &file,
        root_yaml(
            "---
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: freeze
  namespace: lattice-system
spec:
  policies: |
    @id(\"no-new-roots\")
    @advice(\"New roots wait for the capacity review.\")
    forbid (principal, action == Lattice::Action::\"Provision\", resource)
    when { resource.name == \"root\" };
",
        ),
    )
    .unwrap();
    let (code, _, stderr) = install(args(&file, &nowhere, &out)).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("DENIED Provision Cluster::\"root\" by Cluster::\"lattice-bootstrap\": denied (by lattice-system/freeze/no-new-roots): nothing is provisioned"),
        "{stderr}"
    );
    assert!(
        stderr.contains("advice: New roots wait for the capacity review."),
        "{stderr}"
    );

    let child = dir.join("child.yaml");
    std::fs::write(
        &child,
        root_yaml("").replace(
            "  providerRef: docker\n",
            "  providerRef: docker\n  parent: edge\n",
        ),
    )
    .unwrap();
    let (code, _, stderr) = install(args(&child, &nowhere, &out)).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("install makes a root"), "{stderr}");

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, root_yaml("").replace("replicas: 2", "replicas: two")).unwrap();
    let (code, _, stderr) = install(args(&bad, &nowhere, &out)).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.yaml:"), "{stderr}");

    let (code, _, stderr) = install(
        args(&file, &nowhere, &out)
            .into_iter()
            .skip(2)
            .chain(["-f".into(), dir.join("missing.yaml").display().to_string()])
            .collect(),
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(!out.exists(), "no kubeconfig written");
}
