//! `lattice install` on two real testenv control planes: one is the bootstrap cluster, the
//! other the cluster Cluster API brings up.
//!
//! Cluster API's real core manager runs on each bootstrap cluster (`tools/capi`, from its Go
//! module): it owns and labels the providers' objects, and computes the `Cluster`'s phase,
//! initialization and conditions, which `install` waits on, and deletes the Cluster at
//! `uninstall`. No machine, Docker engine or cloud runs here, so the infrastructure (CAPD),
//! control-plane (KCP) and bootstrap (CABPK) providers are simulated by
//! `lattice_testkit::capi::simulate_providers`: once their objects exist, they report what
//! those controllers report through the v1beta2 contract when the machines are up (the
//! endpoint, provisioned, initialized, bootstrap data, available), write the
//! `<cluster>-kubeconfig` Secret as KCP does, whose kubeconfig reaches the second control
//! plane ("the booted cluster"), and register each worker's Node there, which Cluster API
//! finds and moves the Machine to `Running` for.

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

/// Waits (up to 60 s) until `probe` gives a value.
async fn eventually<T, F, Fut>(what: &str, kubelet: &Kubelet, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "timed out: {what}\n{}",
            kubelet.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
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
    // The API server reaches webhooks through a Service's endpoints, as the operator's
    // admission webhooks are reached once `install` registers them (see [`Kubelet`]).
    let target_env = support::start_named_with(
        "install-target",
        &["--enable-aggregator-routing=true".to_owned()],
    );
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
    // No pod runs the operator at first: the install stops there (exit 3), its webhooks
    // not registered, and the same command goes on once the operator is available.
    let mut first = args(&file, &bootstrap_env.kubeconfig, &out);
    *first.last_mut().unwrap() = "30".into();
    let (code, _, first_stderr) = install(first).await;
    let stderr = first_stderr.clone();
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(
            "Deployment lattice-system/lattice-operator is not available after 30 s (0/2 replicas;"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let kubelet = Kubelet::start(target.clone(), &target_env.kubeconfig, &dir);
    let (code, stdout, stderr) = install(args(&file, &bootstrap_env.kubeconfig, &out)).await;
    assert_eq!(code, 0, "{stderr}\n{}", kubelet.logs());
    assert!(
        stderr.contains("root was moved into itself by an earlier run; going on from there"),
        "{stderr}"
    );
    // What the user sees (shown with --nocapture; the README quotes it).
    println!("{first_stderr}\n{stderr}{stdout}");
    let stderr = format!("{first_stderr}{stderr}");
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
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("; its Lattice operator manages it"),
        "{stdout}"
    );
    // Cluster API's controllers do not run on the new cluster (clusterctl's layout), and
    // clusterctl, which would install them, is not on this machine: install says so, and
    // what to run.
    assert!(
        stderr
            .contains("root does not run Cluster API's controllers and clusterctl is not on PATH"),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "next: clusterctl init --infrastructure docker --wait-providers --kubeconfig {}, so that Cluster API on root reconciles its machines",
            out.display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("registered the operator's 4 admission webhooks on root"),
        "{stderr}"
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
        // Cluster API found each machine's Node in the booted cluster (the simulated
        // kubelet registered it with the machine's providerID) and said so before the move.
        assert_eq!(machine.data["status"]["phase"], "Running", "{machine:?}");
        assert_eq!(
            machine.data["status"]["nodeRef"]["name"],
            json!(machine.metadata.name),
            "{machine:?}"
        );
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

    // The Lattice operator runs on root as deploy/ ships it: the webhook's certificate is
    // signed by the CA every webhook configuration names, which the API server checks when
    // it calls the operator (with the Service's name).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(target.clone(), "lattice-system");
    let tls = secrets.get("lattice-webhook-tls").await.unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = tls.data.unwrap()["ca.crt"].0.clone();
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca);
    for (plural, name) in [
        ("validatingwebhookconfigurations", "lattice-webhook"),
        ("validatingwebhookconfigurations", "lattice-pod-security"),
        (
            "validatingwebhookconfigurations",
            "lattice-kubernetes-objects",
        ),
        ("mutatingwebhookconfigurations", "lattice-admission-stamp"),
    ] {
        let kind = if plural.starts_with("validating") {
            "ValidatingWebhookConfiguration"
        } else {
            "MutatingWebhookConfiguration"
        };
        let api: Api<DynamicObject> = Api::all_with(
            target.clone(),
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
                plural,
            ),
        );
        let configuration = api.get(name).await.unwrap();
        for webhook in configuration.data["webhooks"].as_array().unwrap() {
            assert_eq!(webhook["clientConfig"]["caBundle"], json!(bundle), "{name}");
        }
    }
    let admission = secrets.get("lattice-admission-key").await.unwrap();
    assert_eq!(admission.data.unwrap()["key"].0.len(), 64);
    assert!(
        secrets
            .get("lattice-evidence-signing-key")
            .await
            .unwrap()
            .data
            .unwrap()
            .contains_key("ed25519.pem")
    );
    // It manages root: it asks Provision of root about itself, and a change to root's own
    // LatticeCluster (admitted by its webhook: a platform admin's, as the baseline wants)
    // reaches root's own MachineDeployment.
    let admin_kubeconfig = dir.join("platform-admin.kubeconfig");
    acting_as(
        &target_env.kubeconfig,
        &admin_kubeconfig,
        "pat",
        &[
            "lattice:platform-admins",
            "system:masters",
            "system:authenticated",
        ],
    );
    let admin = support::client(&admin_kubeconfig).await;
    let clusters = lattice("LatticeCluster", "latticeclusters", &admin);
    let provision = |s: &serde_json::Value| {
        s["decisions"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["action"] == "Provision").cloned())
            .unwrap_or_default()
    };
    let status = eventually("root's operator decides about root", &kubelet, || async {
        let s = clusters.get("root").await.unwrap().data["status"].clone();
        (provision(&s)["principal"] == "root").then_some(s)
    })
    .await;
    assert_eq!(provision(&status)["allowed"], true, "{status}");
    assert_eq!(
        provision(&status)["policies"],
        json!(["baseline/pivoted-cluster-manages-itself"])
    );
    clusters
        .patch(
            "root",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"nodes": {"workerPools": {"default": {"replicas": 3}}}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", kubelet.logs()));
    let deployments = capi(
        &target,
        "cluster.x-k8s.io",
        "MachineDeployment",
        "machinedeployments",
    );
    eventually("root scales its own pool", &kubelet, || async {
        let d = deployments.get("root-default").await.unwrap();
        (d.data["spec"]["replicas"] == 3).then_some(())
    })
    .await;

    // Uninstall. While root manages a cluster, the baseline's decommission-only-empty
    // holds it, and nothing moves.
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
    // root's operator decommissions leaf before it is gone (its finalizer).
    eventually("leaf decommissioned by root", &kubelet, || async {
        clusters
            .get_opt("leaf")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let second_env = support::start_named("install-bootstrap-2");
    let bootstrap = support::client(&second_env.kubeconfig).await;
    let _second_cluster_api = install_cluster_api(&bootstrap, &second_env).await;
    let (code, stdout, stderr) = uninstall(second_env.kubeconfig.clone()).await;
    assert_eq!(code, 0, "{stderr}\n{}", kubelet.logs());
    println!("{stderr}{stdout}");
    // The operator stopped first: nothing on root derives again what moves out.
    assert!(
        stderr.contains("stopped the Lattice operator on root and removed its admission webhooks"),
        "{stderr}"
    );
    let operator: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(target.clone(), "lattice-system");
    assert_eq!(
        operator
            .get("lattice-operator")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(0)
    );
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

/// **Simulated** kubelet and Deployment controller for the Lattice operator `install`
/// puts on the new cluster: testenv runs an API server and nothing else, so no pod would
/// ever start. This does for the operator's Deployment what those would, and nothing
/// more: for each replica it runs the real `lattice-operator` binary with the container's
/// own args and env, the Secrets the Deployment mounts written to files where it mounts
/// them, as the Deployment's ServiceAccount (impersonated), listening on this machine's
/// address instead of a pod's. It publishes them as the `lattice-webhook` Service's
/// endpoints (the API server reaches webhooks through endpoints with
/// `--enable-aggregator-routing`, still verifying the Service's name on the certificate
/// against the configuration's `caBundle`), reports the replicas available as the
/// Deployment controller would once their webhook port answers, and stops them when the
/// Deployment is scaled to zero.
struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    logs: PathBuf,
}

impl Kubelet {
    fn start(client: kube::Client, kubeconfig: &Path, dir: &Path) -> Kubelet {
        let logs = dir.join("operator-pods");
        std::fs::create_dir_all(&logs).unwrap();
        let account = service_account_kubeconfig(kubeconfig, &logs);
        let task = tokio::spawn(run_pods(client, account, logs.clone()));
        Kubelet { task, logs }
    }

    /// The operators' logs, for a failing assertion.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.logs).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!(
                    "--- {}\n{}\n",
                    entry.path().display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                ));
            }
        }
        out
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kubeconfig acting as `lattice-system/lattice-operator`, as the pods run.
fn service_account_kubeconfig(kubeconfig: &Path, dir: &Path) -> PathBuf {
    let path = dir.join("lattice-operator.kubeconfig");
    acting_as(
        kubeconfig,
        &path,
        "system:serviceaccount:lattice-system:lattice-operator",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:lattice-system",
            "system:authenticated",
        ],
    );
    path
}

/// Writes to `path` the kubeconfig `kubeconfig` impersonating `user` in `groups`.
fn acting_as(kubeconfig: &Path, path: &Path, user: &str, groups: &[&str]) {
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    for auth in config
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        auth.impersonate = Some(user.to_owned());
        auth.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

/// This machine's first address that is not loopback: the API server refuses loopback
/// endpoints, as it would a pod's.
fn host_address() -> std::net::IpAddr {
    for probe in ["192.0.2.1:9", "10.255.255.255:9", "198.51.100.1:9"] {
        if let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0")
            && socket.connect(probe).is_ok()
            && let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return local.ip();
        }
    }
    panic!("this machine has no address other than loopback to run the operator's pods on");
}

struct Pod {
    process: std::process::Child,
    webhook: std::net::SocketAddr,
}

async fn run_pods(client: kube::Client, account: PathBuf, dir: PathBuf) {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "lattice-system");
    let host = host_address();
    let mut pods: Vec<Pod> = Vec::new();
    let mut reported = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let Ok(Some(deployment)) = deployments.get_opt("lattice-operator").await else {
            continue;
        };
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        while pods.len() > wanted {
            let mut pod = pods.pop().unwrap();
            let _ = pod.process.kill();
            let _ = pod.process.wait();
        }
        while pods.len() < wanted {
            let index = pods.len();
            pods.push(start_pod(&client, &deployment, &account, &dir, host, index).await);
        }
        let answering = pods
            .iter()
            .filter(|p| std::net::TcpStream::connect(p.webhook).is_ok())
            .count();
        publish_endpoints(&client, host, &pods).await;
        let generation = deployment.metadata.generation.unwrap_or(0);
        if reported == Some((generation, answering)) {
            continue;
        }
        let available = answering == wanted;
        let status = json!({"status": {
            "observedGeneration": generation,
            "replicas": pods.len(),
            "updatedReplicas": pods.len(),
            "readyReplicas": answering,
            "availableReplicas": answering,
            "conditions": [{
                "type": "Available",
                "status": if available { "True" } else { "False" },
                "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": format!("{answering} of {wanted} replicas available (simulated kubelet)"),
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
                "lastUpdateTime": jiff::Timestamp::now().to_string(),
            }],
        }});
        if deployments
            .patch_status(
                "lattice-operator",
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .is_ok()
        {
            reported = Some((generation, answering));
        }
    }
}

/// Runs one replica of the Deployment's container as the kubelet would.
async fn start_pod(
    client: &kube::Client,
    deployment: &k8s_openapi::api::apps::v1::Deployment,
    account: &Path,
    dir: &Path,
    host: std::net::IpAddr,
    index: usize,
) -> Pod {
    use k8s_openapi::api::core::v1::Secret;
    let name = format!("lattice-operator-simulated-{index}");
    let root = dir.join(&name);
    let spec = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let container = &spec.containers[0];
    // The Secret volumes, written where they are mounted.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "lattice-system");
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        let secret_name = volume.secret.as_ref().unwrap().secret_name.clone().unwrap();
        let secret = secrets.get(&secret_name).await.unwrap();
        let local = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&local).unwrap();
        for (key, value) in secret.data.unwrap_or_default() {
            std::fs::write(local.join(key), value.0).unwrap();
        }
        mounts.push((mount.mount_path.clone(), local));
    }
    // Listeners on this machine's address, each on a free port (a pod has its own IP).
    let mut webhook = None;
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|arg| {
            let mut arg = arg.clone();
            for (path, local) in &mounts {
                arg = arg.replace(path.as_str(), &local.display().to_string());
            }
            if let Some((flag, _)) = arg.split_once("=0.0.0.0:") {
                let port = lattice_testkit::free_port();
                if flag == "--webhook-addr" {
                    webhook = Some(std::net::SocketAddr::new(host, port));
                }
                arg = format!("{flag}={host}:{port}");
            }
            arg
        })
        .collect();
    let mut command = std::process::Command::new(operator_binary());
    command.args(&args).env("KUBECONFIG", account);
    for env in container.env.iter().flatten() {
        let value = match (&env.value, &env.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => name.clone(),
                Some("metadata.namespace") => "lattice-system".into(),
                Some("status.podIP") => host.to_string(),
                other => panic!("the simulated kubelet cannot give {other:?}"),
            },
            (None, None) => String::new(),
        };
        command.env(&env.name, value);
    }
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let process = command
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start lattice-operator");
    Pod {
        process,
        webhook: webhook.expect("the container serves its webhook (--webhook-addr)"),
    }
}

/// `lattice-operator`, built beside `lattice` by `cargo test --workspace`.
fn operator_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_lattice"))
        .with_file_name(format!("lattice-operator{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build --bin lattice-operator` first)",
        path.display()
    );
    path
}

/// The webhook Service's endpoints: the pods' addresses with their webhook ports.
async fn publish_endpoints(client: &kube::Client, host: std::net::IpAddr, pods: &[Pod]) {
    use k8s_openapi::api::core::v1::Endpoints;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "lattice-system");
    let subsets: Vec<serde_json::Value> = pods
        .iter()
        .map(|p| {
            json!({"addresses": [{"ip": host.to_string()}],
                   "ports": [{"name": "https", "port": p.webhook.port(), "protocol": "TCP"}]})
        })
        .collect();
    let object = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "lattice-webhook", "namespace": "lattice-system"},
        "subsets": subsets});
    let _ = endpoints
        .patch(
            "lattice-webhook",
            &PatchParams::apply("simulated-kubelet").force(),
            &Patch::Apply(&object),
        )
        .await;
}
