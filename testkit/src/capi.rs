//! Cluster API's real core manager for tests: the Cluster, Machine, MachineSet and
//! MachineDeployment controllers of `sigs.k8s.io/cluster-api` (`tools/capi`, built from its Go
//! module), run against a test control plane.
//!
//! No infrastructure or control-plane provider runs beside it (none can here: Docker's needs
//! a Docker engine, and the in-memory one's module is not served): [`simulate_providers`]
//! plays Docker's and kubeadm's, and says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The directory holding `cluster-api-core` and `cluster-api-crds/`: `LATTICE_CAPI_BIN`, else
/// built (or found up to date) by `tools/capi/build`, which needs Go.
pub fn bin_dir() -> PathBuf {
    crate::go_tool("LATTICE_CAPI_BIN", "capi")
}

/// The core CRDs of the manager's own module version (every kind it watches).
pub fn core_crds() -> Vec<Value> {
    let dir = bin_dir().join("cluster-api-crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            crate::schemas::yaml_documents(&std::fs::read_to_string(f).expect("CRD file"))
        })
        .filter(Value::is_object)
        .collect()
}

/// Docker's (CAPD) DockerMachine CRD, which the reference material lacks (it holds the
/// templates only): v1.13.7's, from `sigs.k8s.io/cluster-api/test` (see `tools/capi/build`).
pub fn docker_machine_crd() -> Value {
    let file =
        bin_dir().join("cluster-api-crds/capd/infrastructure.cluster.x-k8s.io_dockermachines.yaml");
    crate::schemas::yaml_documents(
        &std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display())),
    )
    .into_iter()
    .find(Value::is_object)
    .expect("a CRD")
}

/// A running core manager. Stopped (killed) on drop; its log is `dir/cluster-api.log`.
pub struct Manager {
    child: Child,
    /// Where it logs.
    pub log: PathBuf,
    webhook_port: u16,
    ca_pem: String,
}

impl Manager {
    /// Starts the manager against the API server `kubeconfig` reaches, its files under `dir`.
    /// The API server must already serve the core CRDs ([`core_crds`]).
    pub fn start(dir: &Path, kubeconfig: &Path) -> Manager {
        // It serves webhooks (no configuration points the API server at them here) and will
        // not start without a serving certificate.
        let ca_pem = crate::tls::serving_certificate(dir, "lattice test Cluster API webhook CA");
        let health = crate::free_port();
        let webhook_port = crate::free_port();
        let log = dir.join("cluster-api.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin_dir().join("cluster-api-core"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!("--webhook-port={webhook_port}"))
            .arg(format!("--webhook-cert-dir={}", dir.display()))
            .args([
                "--webhook-cert-name=server.pem",
                "--webhook-key-name=server.key",
            ])
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .arg("--diagnostics-address=0")
            .arg("--insecure-diagnostics")
            .arg("--sync-period=1m")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start Cluster API's core manager (tools/capi/build)");
        let mut manager = Manager {
            child,
            log,
            webhook_port,
            ca_pem,
        };
        manager.wait_ready(health);
        manager
    }

    /// Waits until the manager's readiness probe passes (its caches synced).
    fn wait_ready(&mut self, health: u16) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Cluster API's core manager exited ({status}):\n{}",
                    self.log_tail()
                );
            }
            if ready(health) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Cluster API's core manager was not ready within 120 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The manager's mutating and validating webhook configurations, as its module ships them
    /// but pointed at this manager (`https://127.0.0.1:PORT/…`, its CA as the bundle) rather
    /// than at an in-cluster Service. Applied, the API server defaults and validates Cluster
    /// API's objects through the manager, as on a cluster `clusterctl init` set up.
    pub fn webhook_configurations(&self) -> Vec<Value> {
        use base64::Engine as _;
        let file = bin_dir().join("cluster-api-crds/webhooks.yaml.in");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let bundle = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        crate::schemas::yaml_documents(&text)
            .into_iter()
            .filter(Value::is_object)
            .map(|mut config| {
                let name = config["metadata"]["name"].as_str().unwrap_or_default();
                config["metadata"]["name"] = format!("cluster-api-{name}").into();
                for webhook in config["webhooks"].as_array_mut().into_iter().flatten() {
                    let path = webhook["clientConfig"]["service"]["path"]
                        .as_str()
                        .unwrap_or("/")
                        .to_owned();
                    webhook["clientConfig"] = json!({
                        "url": format!("https://127.0.0.1:{}{path}", self.webhook_port),
                        "caBundle": bundle,
                    });
                }
                config
            })
            .collect()
    }

    /// The last lines the manager logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // A failing test shows what Cluster API made of it.
        if std::thread::panicking() {
            eprintln!(
                "Cluster API's core manager logged, last:\n{}",
                self.log_tail()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /readyz` on the probe port answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, version, kind),
        plural,
    )
}

/// The v1beta2 Cluster API kind `kind` (of `group`, plural `plural`) in `namespace`.
pub fn api(
    client: &kube::Client,
    namespace: &str,
    group: &str,
    kind: &str,
    plural: &str,
) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &resource(group, "v1beta2", kind, plural),
    )
}

/// The UIDs an object's owner references name, in order.
pub fn owner_uids(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.owner_references
        .iter()
        .flatten()
        .map(|r| r.uid.clone())
        .collect()
}

/// The host and port of the API server a kubeconfig names first.
pub fn endpoint(kubeconfig: &str) -> (String, u16) {
    let server = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .ok()
        .and_then(|k| k.clusters.into_iter().next())
        .and_then(|c| c.cluster)
        .and_then(|c| c.server)
        .expect("the kubeconfig names a server");
    let (host, port) = server
        .trim_start_matches("https://")
        .rsplit_once(':')
        .expect("host:port");
    (host.to_owned(), port.parse().expect("a port"))
}

/// The MachineSets and the Machines in `namespace`: what Cluster API made of the workers.
pub async fn workers(
    client: &kube::Client,
    namespace: &str,
) -> (Vec<kube::api::DynamicObject>, Vec<kube::api::DynamicObject>) {
    let list = |kind: &str, plural: &str| {
        let api = api(client, namespace, "cluster.x-k8s.io", kind, plural);
        async move { api.list(&Default::default()).await.expect("list").items }
    };
    (
        list("MachineSet", "machinesets").await,
        list("Machine", "machines").await,
    )
}

/// A provider's CRD as its release manifests label it, with the contracts it implements
/// (Cluster API reads the label to pick the version of a referenced object).
fn provider_crd(mut crd: Value) -> Value {
    crd["metadata"]["labels"] = json!({
        "cluster.x-k8s.io/v1beta1": "v1beta1",
        "cluster.x-k8s.io/v1beta2": "v1beta2",
    });
    crd
}

/// Cluster API on the control plane `client` reaches (whose kubeconfig is `kubeconfig`), as
/// `clusterctl init --infrastructure docker` leaves it for what Lattice provisions: the core
/// CRDs and the real core manager, with its webhooks pointed at it; the kubeadm and Docker
/// CRDs of the reference material and CAPD's `DockerMachine` ([`docker_machine_crd`]),
/// labelled as their release manifests label them. The manager's files go under `dir`; it
/// stops when the returned guard drops.
pub async fn set_up(client: &kube::Client, dir: &Path, kubeconfig: &Path) -> Manager {
    install_crds(client).await;
    std::fs::create_dir_all(dir).expect("the manager's directory");
    let (dir, kubeconfig) = (dir.to_owned(), kubeconfig.to_owned());
    let manager = tokio::task::spawn_blocking(move || Manager::start(&dir, &kubeconfig))
        .await
        .expect("the manager starts");
    // Its webhooks default and validate what is applied, as on a real management cluster.
    for config in manager.webhook_configurations() {
        let kind = config["kind"].as_str().expect("kind").to_owned();
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
            client.clone(),
            &resource(
                "admissionregistration.k8s.io",
                "v1",
                &kind,
                &format!("{}s", kind.to_lowercase()),
            ),
        );
        let object = serde_json::from_value(config.clone()).expect("a webhook configuration");
        api.create(&Default::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{e}: {config:#}"));
    }
    manager
}

/// The CRDs [`set_up`] installs, established, without the manager: what a cluster serves
/// that will run Cluster API (a pivot's target).
pub async fn install_crds(client: &kube::Client) {
    use kube::api::{Patch, PatchParams};
    let crds: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        client.clone(),
        &resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    let reference = crate::reference_dir()
        .expect("reference material")
        .join("crds/cluster-api");
    let mut all = core_crds();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&reference)
        .expect("the reference's Cluster API CRDs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if file.starts_with("cluster.x-k8s.io_") {
            continue; // the core CRDs come with the manager, at its version
        }
        let text = std::fs::read_to_string(&path).expect("CRD file");
        all.extend(
            crate::schemas::yaml_documents(&text)
                .into_iter()
                .filter(Value::is_object)
                .map(provider_crd),
        );
    }
    all.push(provider_crd(docker_machine_crd()));
    let mut names = Vec::new();
    for crd in all {
        let name = crd["metadata"]["name"].as_str().expect("named").to_owned();
        crds.patch(
            &name,
            &PatchParams::apply("cluster-api-setup").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        names.push(name);
    }
    for name in names {
        for _ in 0..100 {
            let crd = crds.get(&name).await.expect("CRD");
            let established = crd.data["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Docker's infrastructure provider (CAPD), kubeadm's control-plane provider (KCP) and
/// kubeadm's bootstrap provider (CABPK), **simulated**, for the CAPI `Cluster` `cluster` in
/// `namespace`: no machine, Docker engine or cloud runs here. Each does what its real
/// controller does once the machines are up, and nothing more, and Cluster API's own
/// manager reads it through the v1beta2 contract:
///
/// - CAPD: the `DockerCluster`'s `controlPlaneEndpoint` (the server `kubeconfig` names: the
///   booted cluster) and `provisioned`; each worker's `DockerMachine` `provisioned` with its
///   `providerID`, and the machine "booted": its `Node`, with that `providerID`, registered
///   in the booted cluster as a kubelet registers it;
/// - KCP: the `KubeadmControlPlane` initialized at its version, the `<cluster>-kubeconfig`
///   Secret holding `kubeconfig`, owned by the control plane as KCP writes it, and, last,
///   the control plane `Available`;
/// - CABPK: each worker's `KubeadmConfig` with its bootstrap data Secret.
///
/// Cluster API makes the workers' Machines once the control plane is stable, and moves each
/// to `Running` itself once it finds the machine's Node in the booted cluster (through that
/// kubeconfig). In a real install they may or may not be up when a pivot pauses the Cluster
/// (the move takes what there is); here `Available`, which `install` and the cell wait on,
/// is held back until `workers` Machines are `Running`, so every run moves the same objects.
/// Returns then.
pub async fn simulate_providers(
    client: kube::Client,
    namespace: &str,
    cluster: &str,
    kubeconfig: &str,
    workers: usize,
) {
    use kube::api::{Patch, PatchParams};
    let clusters = api(
        &client,
        namespace,
        "cluster.x-k8s.io",
        "Cluster",
        "clusters",
    );
    // The Cluster names its providers' objects.
    let (infra, control_plane) = loop {
        if let Ok(Some(c)) = clusters.get_opt(cluster).await {
            let name = |r: &str| c.data["spec"][r]["name"].as_str().map(str::to_owned);
            if let (Some(i), Some(cp)) = (name("infrastructureRef"), name("controlPlaneRef")) {
                break (i, cp);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let condition = |t: &str| {
        json!({"type": t, "status": "True", "reason": t, "message": "",
               "lastTransitionTime": "2026-12-05T12:00:00Z"})
    };
    let (host, port) = endpoint(kubeconfig);
    let docker = api(
        &client,
        namespace,
        "infrastructure.cluster.x-k8s.io",
        "DockerCluster",
        "dockerclusters",
    );
    let capd = PatchParams::apply("simulated-capd").force();
    docker
        .patch(
            &infra,
            &capd,
            &Patch::Apply(json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerCluster",
                "spec": {"controlPlaneEndpoint": {"host": host, "port": port}},
            })),
        )
        .await
        .expect("the DockerCluster's endpoint");
    docker
        .patch_status(
            &infra,
            &capd,
            &Patch::Apply(json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerCluster",
                "status": {"initialization": {"provisioned": true}, "conditions": [condition("Ready")]},
            })),
        )
        .await
        .expect("the DockerCluster provisioned");
    let kcp = api(
        &client,
        namespace,
        "controlplane.cluster.x-k8s.io",
        "KubeadmControlPlane",
        "kubeadmcontrolplanes",
    );
    let plane = kcp.get(&control_plane).await.expect("the control plane");
    let version = plane.data["spec"]["version"].clone();
    let replicas = plane.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let kcp_params = PatchParams::apply("simulated-kcp").force();
    let kcp_status = |available: bool| {
        let conditions = if available {
            vec![condition("Available")]
        } else {
            vec![]
        };
        Patch::Apply(json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
            "status": {"initialization": {"controlPlaneInitialized": true},
                       "version": version, "replicas": replicas, "readyReplicas": replicas,
                       "availableReplicas": replicas, "upToDateReplicas": replicas,
                       "conditions": conditions},
        }))
    };
    kcp.patch_status(&control_plane, &kcp_params, &kcp_status(false))
        .await
        .expect("the control plane initialized");
    let secrets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("", "v1", "Secret", "secrets"),
    );
    let name = format!("{cluster}-kubeconfig");
    secrets
        .patch(
            &name,
            &kcp_params,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                             "ownerReferences": [{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
                                                  "kind": "KubeadmControlPlane", "name": control_plane,
                                                  "uid": plane.metadata.uid, "controller": true,
                                                  "blockOwnerDeletion": true}]},
                "type": "cluster.x-k8s.io/secret",
                "stringData": {"value": kubeconfig},
            })),
        )
        .await
        .expect("the kubeconfig Secret");
    boot_workers(&client, namespace, cluster, kubeconfig, workers).await;
    kcp.patch_status(&control_plane, &kcp_params, &kcp_status(true))
        .await
        .expect("the control plane available");
}

/// The workers' machines booted, as CABPK, CAPD and a kubelet make them (see
/// [`simulate_providers`]); returns once Cluster API says `workers` Machines are `Running`.
async fn boot_workers(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    kubeconfig: &str,
    workers: usize,
) {
    use kube::api::{Patch, PatchParams};
    let machines = api(client, namespace, "cluster.x-k8s.io", "Machine", "machines");
    let configs = api(
        client,
        namespace,
        "bootstrap.cluster.x-k8s.io",
        "KubeadmConfig",
        "kubeadmconfigs",
    );
    let docker_machines = api(
        client,
        namespace,
        "infrastructure.cluster.x-k8s.io",
        "DockerMachine",
        "dockermachines",
    );
    let secrets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("", "v1", "Secret", "secrets"),
    );
    let booted = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(kubeconfig)
                .expect("the booted cluster's kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("the booted cluster's config"),
    )
    .expect("a client of the booted cluster");
    let nodes: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(booted, &resource("", "v1", "Node", "nodes"));
    let cabpk = PatchParams::apply("simulated-cabpk").force();
    let capd = PatchParams::apply("simulated-capd").force();
    let kubelet = PatchParams::apply("simulated-kubelet").force();
    let mut done = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    loop {
        let listed = machines.list(&Default::default()).await.expect("Machines");
        let running = listed
            .items
            .iter()
            .filter(|m| m.data["status"]["phase"] == "Running")
            .count();
        if running >= workers {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "Cluster API did not report {workers} Machines Running: {:?}",
            listed
                .items
                .iter()
                .map(|m| (&m.metadata.name, &m.data["status"]))
                .collect::<Vec<_>>()
        );
        for machine in &listed.items {
            let Some(name) = machine.metadata.name.clone() else {
                continue;
            };
            let config = machine.data["spec"]["bootstrap"]["configRef"]["name"].as_str();
            let infra = machine.data["spec"]["infrastructureRef"]["name"].as_str();
            let (Some(config), Some(infra)) = (config, infra) else {
                continue;
            };
            if done.contains(&name) {
                continue;
            }
            // Wait for Cluster API to own them (it sets the owner from the Machine).
            let (Ok(Some(config_object)), Ok(Some(_))) = (
                configs.get_opt(config).await,
                docker_machines.get_opt(infra).await,
            ) else {
                continue;
            };
            let data_secret = format!("{config}-bootstrap");
            secrets
                .patch(
                    &data_secret,
                    &cabpk,
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": data_secret, "namespace": namespace,
                                     "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                                     "ownerReferences": [{"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2",
                                                          "kind": "KubeadmConfig", "name": config,
                                                          "uid": config_object.metadata.uid, "controller": true}]},
                        "type": "cluster.x-k8s.io/secret",
                        "stringData": {"format": "cloud-config",
                                       "value": "## simulated: no machine runs this\n"},
                    })),
                )
                .await
                .expect("the bootstrap data Secret");
            configs
                .patch_status(
                    config,
                    &cabpk,
                    &Patch::Apply(json!({
                        "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
                        "status": {"initialization": {"dataSecretCreated": true},
                                   "dataSecretName": data_secret},
                    })),
                )
                .await
                .expect("the KubeadmConfig ready");
            let provider_id = format!("docker:////{name}");
            docker_machines
                .patch(
                    infra,
                    &capd,
                    &Patch::Apply(json!({
                        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
                        "spec": {"providerID": provider_id},
                    })),
                )
                .await
                .expect("the DockerMachine's providerID");
            docker_machines
                .patch_status(
                    infra,
                    &capd,
                    &Patch::Apply(json!({
                        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
                        "status": {"initialization": {"provisioned": true},
                                   "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]},
                    })),
                )
                .await
                .expect("the DockerMachine provisioned");
            nodes
                .patch(
                    &name,
                    &kubelet,
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name},
                        "spec": {"providerID": provider_id},
                    })),
                )
                .await
                .expect("the machine's Node");
            nodes
                .patch_status(
                    &name,
                    &kubelet,
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Node",
                        "status": {"conditions": [{"type": "Ready", "status": "True",
                                                   "reason": "KubeletReady",
                                                   "message": "simulated: no kubelet runs here",
                                                   "lastHeartbeatTime": "2026-12-05T12:00:00Z",
                                                   "lastTransitionTime": "2026-12-05T12:00:00Z"}]},
                    })),
                )
                .await
                .expect("the machine's Node ready");
            done.insert(name);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
