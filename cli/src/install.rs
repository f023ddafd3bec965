//! `lattice install -f cluster.yaml`: a root cluster, made through a temporary bootstrap
//! cluster the way `clusterctl` makes a management cluster, with every step a Lattice one.
//!
//! 1. The file is read and checked: one LatticeCluster with no `spec.parent` (a root; a
//!    child is provisioned by its parent), the InfraProviders and CedarPolicies beside it.
//! 2. `Provision` is asked as the parent of a root is asked, by the installer's bootstrap
//!    cluster (`lattice-bootstrap`), over the bundled packs and the file's policies. Denied,
//!    nothing is written anywhere (exit 1).
//! 3. The bootstrap cluster (`--bootstrap-kubeconfig`, or one `kind` makes) must serve
//!    Cluster API with the cluster's provider. The LatticeCluster, its InfraProvider and the
//!    derived Cluster API objects are applied there. A root's control plane runs no
//!    bootstrap hook: it has no parent to join, and the installer holds its kubeconfig.
//! 4. Once Cluster API reports the control plane available and writes the cluster's
//!    kubeconfig Secret, the installer reaches the new cluster with it, installs the Lattice
//!    CRDs and any Cluster API CRD the move needs that it does not serve yet (copied from the
//!    bootstrap cluster, so the moved objects keep their versions), and moves the objects
//!    in (`lattice_controllers::fleet::pivot::move_cluster` with both ends in this process,
//!    as `clusterctl move` does). The last step hands the cluster its own LatticeCluster,
//!    `pivoted`; its operator manages it from then on.
//! 5. The new cluster's kubeconfig is written to `--kubeconfig-out`, and the Lattice
//!    operator is put on it ([`crate::operator`]), its webhooks registered once it is
//!    available.
//! 6. The bootstrap cluster is deleted (`kind`), or, when it was given, what the installer
//!    wrote there is.
//!
//! Every step can be run again: a failed install started again with the same file and
//! bootstrap cluster goes on from where it stopped (after the move, from the operator). [`uninstall`] is the way back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use lattice_clusters::{ProvisionOptions, provision};
use lattice_controllers::fleet::pivot::{PivotTarget, move_cluster};
use lattice_controllers::lattice_api::lattice_resource;
use lattice_engine::Projection;
use lattice_gates::lifecycle::{self, Lifecycle, LifecycleFacts};
use lattice_schemas::crd::Kind;
use lattice_schemas::crd::cluster::LatticeCluster;
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};

/// The field manager of what the installer writes.
const MANAGER: &str = "lattice-install";

/// The name of the bootstrap cluster `kind` makes.
pub const KIND_CLUSTER: &str = "lattice-bootstrap";

/// How an install ends when it does not succeed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The file, the bootstrap cluster or a flag cannot be used; nothing was written.
    #[error("{0}")]
    Usage(String),
    /// `Provision` is denied; nothing was written.
    #[error("{0}")]
    Denied(String),
    /// A step failed after something was written; running the same command again goes on.
    #[error("{0}")]
    Failed(String),
}

/// What `lattice install` was asked.
pub struct InstallRequest {
    pub file: PathBuf,
    /// A bootstrap cluster the user provides; without it, `kind` makes one.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the new cluster's kubeconfig is written (default `<cluster>.kubeconfig`).
    pub kubeconfig_out: Option<PathBuf>,
    /// How long Cluster API may take to bring the control plane up.
    pub timeout: Duration,
    /// How the Lattice operator is put on the new cluster (`None`: it is not).
    pub operator: Option<crate::operator::OperatorOptions>,
}

/// What the file holds, checked.
struct Plan {
    cluster: LatticeCluster,
    /// The LatticeCluster and InfraProviders as JSON, as applied to the bootstrap cluster.
    platform: Vec<Value>,
    objects: Vec<Value>,
    summary: String,
}

/// Runs the install, saying each step on stderr.
pub async fn install(request: &InstallRequest) -> Result<String, InstallError> {
    let plan = plan(&request.file)?;
    let name = plan.cluster.metadata.name.clone().unwrap_or_default();
    say(&plan.summary);
    let (bootstrap, made_by_kind) = bootstrap_cluster(request).await?;
    let outcome = provision_and_move(&bootstrap, &plan, &name, request).await;
    if outcome.is_ok() {
        tear_down_bootstrap(&bootstrap, &plan, &name, made_by_kind).await?;
    }
    outcome
}

async fn provision_and_move(
    bootstrap: &Client,
    plan: &Plan,
    name: &str,
    request: &InstallRequest,
) -> Result<String, InstallError> {
    require_cluster_api(bootstrap, &plan.cluster).await?;
    say("the bootstrap cluster serves Cluster API");
    apply_all(bootstrap, &lattice_crds()).await?;
    wait_for_crds(bootstrap, &lattice_crd_names(), request.timeout).await?;
    let out = request
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.kubeconfig")));
    if let Some(kubeconfig) = moved_already(bootstrap, name, &out).await? {
        // A run that moved the cluster and stopped after: what is left is the operator.
        say(&format!(
            "{name} was moved into itself by an earlier run; going on from there"
        ));
        let target = client_from(&kubeconfig)
            .await
            .map_err(|e| InstallError::Failed(format!("{}: {e}", out.display())))?;
        let runs_cluster_api =
            cluster_api_on_target(&target, &kubeconfig, &plan.cluster, name).await?;
        return finish(
            &target,
            name,
            &out,
            request,
            runs_cluster_api,
            &plan.cluster,
        )
        .await;
    }
    apply_all(bootstrap, &plan.platform).await?;
    apply_all(bootstrap, &plan.objects).await?;
    say(&format!(
        "applied {} objects (the namespace and Cluster API's) into {} on the bootstrap cluster",
        plan.objects.len(),
        lattice_clusters::capi::namespace(name)
    ));
    let kubeconfig = wait_for_control_plane(bootstrap, name, request.timeout).await?;
    // Written before the move, so a run after a failure from here on finds it.
    write_private(&out, &kubeconfig)
        .map_err(|e| InstallError::Failed(format!("{}: {e}", out.display())))?;
    let target = client_from(&kubeconfig)
        .await
        .map_err(|e| InstallError::Failed(format!("the new cluster's kubeconfig: {e}")))?;
    wait_for_api(&target, request.timeout).await?;
    let runs_cluster_api = cluster_api_on_target(&target, &kubeconfig, &plan.cluster, name).await?;
    apply_all(&target, &lattice_crds()).await?;
    let copied = copy_cluster_api_crds(bootstrap, &target).await?;
    if !copied.is_empty() {
        say(&format!(
            "installed {} Cluster API CRDs on {name} (the versions the bootstrap cluster serves)",
            copied.len()
        ));
    }
    let ours: Vec<String> = lattice_crd_names().into_iter().chain(copied).collect();
    wait_for_crds(&target, &ours, request.timeout).await?;
    let sink = PivotTarget::new(target.clone(), name);
    let moved = move_cluster(bootstrap, &sink, name, None)
        .await
        .map_err(|e| InstallError::Failed(format!("moving {name} into itself: {e}")))?;
    say(&format!(
        "moved {} Cluster API objects into {name} in {} batches in {} ms; it manages itself now",
        moved.objects,
        moved.batches,
        moved.elapsed.as_millis()
    ));
    finish(
        &target,
        name,
        &out,
        request,
        runs_cluster_api,
        &plan.cluster,
    )
    .await
}

/// The `clusterctl init` that installs on a new cluster the Cluster API providers it was
/// provisioned with (clusterctl's own provider names).
fn clusterctl_init_args(cluster: &LatticeCluster) -> Vec<String> {
    let mut args = vec!["init".to_owned()];
    if let Some(provider) = cluster.spec.provider.config.name() {
        args.extend(["--infrastructure".to_owned(), provider.to_owned()]);
        if provider == "proxmox" {
            // CAPMOX takes its machines' addresses from Cluster API's in-cluster IPAM.
            args.extend(["--ipam".to_owned(), "in-cluster".to_owned()]);
        }
    }
    if cluster.spec.provider.kubernetes.bootstrap
        == Some(lattice_schemas::crd::cluster::Bootstrap::Rke2)
    {
        args.extend(["--bootstrap", "rke2", "--control-plane", "rke2"].map(str::to_owned));
    }
    args.push("--wait-providers".to_owned());
    args
}

/// Makes sure Cluster API's own controllers run on the new cluster before its objects move
/// in, as `clusterctl move` requires: there already (clusterctl's
/// `capi-system/capi-controller-manager`), or installed with `clusterctl init` where
/// clusterctl is on PATH. Without either the move still happens (the cluster holds its
/// objects and its operator manages them), but nothing reconciles its machines until
/// Cluster API is installed there; whether it runs.
async fn cluster_api_on_target(
    target: &Client,
    kubeconfig: &str,
    cluster: &LatticeCluster,
    name: &str,
) -> Result<bool, InstallError> {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(target.clone(), "capi-system");
    let running = deployments
        .get_opt("capi-controller-manager")
        .await
        .map_err(|e| InstallError::Failed(format!("cannot read {name}'s Deployments: {e}")))?
        .is_some();
    if running {
        say(&format!("{name} runs Cluster API's controllers"));
        return Ok(true);
    }
    let args = clusterctl_init_args(cluster);
    let file = std::env::temp_dir().join(format!(
        "lattice-install-{name}-{}.kubeconfig",
        std::process::id()
    ));
    write_private(&file, kubeconfig)
        .map_err(|e| InstallError::Failed(format!("{}: {e}", file.display())))?;
    let ran = std::process::Command::new("clusterctl")
        .args(&args)
        .arg("--kubeconfig")
        .arg(&file)
        .status();
    let _ = std::fs::remove_file(&file);
    match ran {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            say(&format!(
                "{name} does not run Cluster API's controllers and clusterctl is not on PATH: nothing reconciles its machines until `clusterctl {}` runs there",
                args.join(" ")
            ));
            Ok(false)
        }
        Err(e) => Err(InstallError::Failed(format!("clusterctl: {e}"))),
        Ok(status) if status.success() => {
            say(&format!("ran clusterctl {} on {name}", args.join(" ")));
            Ok(true)
        }
        Ok(status) => Err(InstallError::Failed(format!(
            "clusterctl {} on {name} failed ({status}); nothing was moved yet",
            args.join(" ")
        ))),
    }
}

/// The bootstrap cluster's copy of `name` says it was moved, and the kubeconfig an earlier
/// run wrote is there: that kubeconfig.
async fn moved_already(
    bootstrap: &Client,
    name: &str,
    out: &Path,
) -> Result<Option<String>, InstallError> {
    let clusters: Api<DynamicObject> =
        Api::all_with(bootstrap.clone(), &lattice_resource(Kind::LatticeCluster));
    let own = clusters
        .get_opt(name)
        .await
        .map_err(|e| InstallError::Failed(format!("cannot read LatticeCluster {name}: {e}")))?;
    if own.is_none_or(|o| o.data["status"]["pivoted"] != true) {
        return Ok(None);
    }
    std::fs::read_to_string(out).map(Some).map_err(|e| {
        InstallError::Failed(format!(
            "{name} was moved into itself, but its kubeconfig {} cannot be read ({e}): give --kubeconfig-out where the earlier run wrote it",
            out.display()
        ))
    })
}

/// After the move: the Lattice operator on the new cluster, unless it is not wanted.
async fn finish(
    target: &Client,
    name: &str,
    out: &Path,
    request: &InstallRequest,
    runs_cluster_api: bool,
    cluster: &LatticeCluster,
) -> Result<String, InstallError> {
    let mut next = Vec::new();
    if !runs_cluster_api {
        next.push(format!(
            "next: clusterctl {} --kubeconfig {}, so that Cluster API on {name} reconciles its machines",
            clusterctl_init_args(cluster).join(" "),
            out.display()
        ));
    }
    let done = match &request.operator {
        None => {
            next.push(format!(
                "next: run the Lattice operator on {name} with --cluster-name {name} (deploy/cell), which manages its Cluster API objects from now on"
            ));
            format!("installed {name}: kubeconfig in {}", out.display())
        }
        Some(options) => {
            crate::operator::install(target, name, options, request.timeout)
                .await
                .map_err(InstallError::Failed)?;
            format!(
                "installed {name}: kubeconfig in {}; its Lattice operator manages it",
                out.display()
            )
        }
    };
    Ok(std::iter::once(done)
        .chain(next)
        .collect::<Vec<_>>()
        .join("\n"))
}

fn say(line: &str) {
    eprintln!("{line}");
}

/// Reads and checks the file, and asks `Provision`.
fn plan(file: &Path) -> Result<Plan, InstallError> {
    let (world, store) = lattice_engine::load::load(&[file.to_path_buf()], None).map_err(|e| {
        InstallError::Usage(match e {
            lattice_engine::load::LoadFailure::World(report)
            | lattice_engine::load::LoadFailure::Packs(report) => {
                let mut out = String::new();
                for f in &report.findings {
                    let (line, col) = f.line_col();
                    out.push_str(&format!("{}:{line}:{col}: {f}\n", f.file.name));
                    if let Some(help) = &f.help {
                        out.push_str(&format!("  help: {help}\n"));
                    }
                }
                for u in &report.unreadable {
                    out.push_str(&format!("cannot read {u}\n"));
                }
                format!("{out}{} did not load", file.display())
            }
            lattice_engine::load::LoadFailure::Policy(e) => e.to_string(),
            lattice_engine::load::LoadFailure::NoPacks(why) => why,
        })
    })?;
    let clusters: Vec<&LatticeCluster> = world
        .objects()
        .filter_map(|(_, o)| match o {
            Object::Cluster(c) => Some(c),
            _ => None,
        })
        .collect();
    let [cluster] = clusters.as_slice() else {
        return Err(InstallError::Usage(format!(
            "{} holds {} LatticeClusters; install takes exactly one",
            file.display(),
            clusters.len()
        )));
    };
    let name = cluster.metadata.name.clone().unwrap_or_default();
    if let Some(parent) = &cluster.spec.parent {
        return Err(InstallError::Usage(format!(
            "LatticeCluster {name} names a parent ({parent}): install makes a root; a child is provisioned by its parent (kubectl apply it there)"
        )));
    }
    let infra = world.objects().find_map(|(_, o)| match o {
        Object::InfraProvider(p)
            if p.metadata.name.as_deref() == Some(&cluster.spec.provider_ref) =>
        {
            Some(p)
        }
        _ => None,
    });
    let provisioned = provision(
        cluster,
        &ProvisionOptions {
            endpoint: None,
            infra: infra.map(|p| &p.spec),
        },
    )
    .map_err(|e| InstallError::Usage(format!("LatticeCluster {name}: {e}")))?;
    let projection = Projection::of(&world);
    let snapshot = lattice_engine::Snapshot::build(&world, &projection, &store)
        .map_err(|e| InstallError::Usage(format!("the policies did not build: {e}")))?;
    let facts = LifecycleFacts::of(cluster, provisioned.objects.len(), jiff::Timestamp::now());
    let decision = lifecycle::decide(
        &snapshot,
        &projection,
        Lifecycle::Provision,
        cluster,
        &facts,
    );
    if !decision.allowed {
        return Err(refused(&decision, "nothing is provisioned"));
    }
    let mut platform: Vec<Value> = Vec::new();
    if let Some(p) = infra {
        platform.push(json!({
            "apiVersion": lattice_schemas::crd::API_VERSION,
            "kind": Kind::InfraProvider.name(),
            "metadata": {"name": p.metadata.name},
            "spec": p.spec,
        }));
    }
    platform.push(json!({
        "apiVersion": lattice_schemas::crd::API_VERSION,
        "kind": Kind::LatticeCluster.name(),
        "metadata": {"name": name, "labels": cluster.metadata.labels.clone().unwrap_or_default()},
        "spec": cluster.spec,
    }));
    Ok(Plan {
        cluster: (*cluster).clone(),
        platform,
        objects: provisioned.objects,
        summary: format!(
            "{}\nthe cluster will run: {}",
            decision.summary(),
            provisioned
                .components
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A denied decision as the user reads it: the decision, what was therefore not done, and
/// the deciding policies' advice and errors.
fn refused(decision: &lifecycle::LifecycleDecision, consequence: &str) -> InstallError {
    let mut out = format!("DENIED {}: {consequence}", decision.summary());
    for a in &decision.advice {
        out.push_str(&format!("\n  advice: {a}"));
    }
    for e in &decision.errors {
        out.push_str(&format!("\n  error: {e}"));
    }
    InstallError::Denied(out)
}

/// The bootstrap cluster's client, and whether `kind` made it (so it is deleted after).
async fn bootstrap_cluster(request: &InstallRequest) -> Result<(Client, bool), InstallError> {
    if let Some(path) = &request.bootstrap_kubeconfig {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InstallError::Usage(format!("{}: {e}", path.display())))?;
        let client = client_from(&text)
            .await
            .map_err(|e| InstallError::Usage(format!("{}: {e}", path.display())))?;
        return Ok((client, false));
    }
    let kubeconfig = std::env::temp_dir().join(format!(
        "lattice-bootstrap-{}.kubeconfig",
        std::process::id()
    ));
    say(&format!(
        "making the bootstrap cluster with kind ({KIND_CLUSTER})"
    ));
    let made = std::process::Command::new("kind")
        .args(["create", "cluster", "--name", KIND_CLUSTER, "--kubeconfig"])
        .arg(&kubeconfig)
        .status()
        .map_err(|e| {
            InstallError::Usage(format!(
                "no bootstrap cluster: --bootstrap-kubeconfig was not given and kind cannot be run ({e})"
            ))
        })?;
    if !made.success() {
        return Err(InstallError::Usage(format!(
            "kind create cluster failed ({made})"
        )));
    }
    let text = std::fs::read_to_string(&kubeconfig)
        .map_err(|e| InstallError::Failed(format!("{}: {e}", kubeconfig.display())))?;
    let client = client_from(&text)
        .await
        .map_err(|e| InstallError::Failed(format!("kind's kubeconfig: {e}")))?;
    Ok((client, true))
}

async fn client_from(kubeconfig: &str) -> Result<Client, String> {
    client_in(kubeconfig, None).await
}

/// A client for `context` of `kubeconfig` (its current context when `None`).
async fn client_in(kubeconfig: &str, context: Option<String>) -> Result<Client, String> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| e.to_string())?;
    let options = kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(parsed, &options)
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Checks, before anything is written, that the bootstrap cluster serves every Cluster API
/// kind `cluster` is provisioned with (Cluster API's and its provider's, at the versions
/// Lattice derives).
async fn require_cluster_api(
    client: &Client,
    cluster: &LatticeCluster,
) -> Result<(), InstallError> {
    let provider = cluster.spec.provider.config.name().unwrap_or("its");
    let refuse = |missing: String| {
        InstallError::Usage(format!(
            "{missing}: the bootstrap cluster must run Cluster API with the {provider} provider (clusterctl init --infrastructure {provider})"
        ))
    };
    let derived = provision(
        cluster,
        &ProvisionOptions {
            endpoint: None,
            infra: None,
        },
    )
    .map_err(|e| InstallError::Usage(e.to_string()))?;
    let mut kinds: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for o in &derived.objects {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        if api_version.contains('/') {
            kinds
                .entry(api_version)
                .or_default()
                .insert(o["kind"].as_str().unwrap_or_default());
        }
    }
    for (api_version, wanted) in kinds {
        let served = client
            .list_api_group_resources(api_version)
            .await
            .map_err(|e| refuse(format!("{api_version} is not served ({e})")))?;
        for kind in wanted {
            if !served.resources.iter().any(|r| r.kind == kind) {
                return Err(refuse(format!("{api_version} {kind} is not served")));
            }
        }
    }
    Ok(())
}

fn lattice_crd_names() -> Vec<String> {
    lattice_crds()
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn lattice_crds() -> Vec<Value> {
    Kind::ALL
        .iter()
        .map(|k| lattice_schemas::generate::crd_json(*k))
        .collect()
}

/// Server-side applies each object as the installer ([`crate::apply::apply_all`]).
async fn apply_all(client: &Client, objects: &[Value]) -> Result<(), InstallError> {
    crate::apply::apply_all(client, objects, MANAGER)
        .await
        .map_err(InstallError::Failed)
}

/// Waits until Cluster API reports the control plane available and has written the
/// cluster's kubeconfig Secret; its kubeconfig.
async fn wait_for_control_plane(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> Result<String, InstallError> {
    let namespace = lattice_clusters::capi::namespace(name);
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(lattice_clusters::capi::CORE, "v1beta2", "Cluster"),
            "clusters",
        ),
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let capi = clusters
            .get_opt(name)
            .await
            .map_err(|e| InstallError::Failed(format!("cannot read Cluster {name}: {e}")))?
            .map(|o| serde_json::to_value(o).unwrap_or_default());
        let (phase, conditions) =
            lattice_clusters::phase::read(&lattice_clusters::phase::Observed {
                capi_cluster: capi.as_ref(),
                deleting: false,
                agent_connected: false,
                pivoted: false,
            });
        let available = conditions
            .iter()
            .any(|c| c.type_ == "ControlPlaneAvailable" && c.status == "True");
        let line = format!(
            "waiting for Cluster API: {} ({})",
            phase.as_str(),
            conditions
                .iter()
                .map(|c| format!("{}={}", c.type_, c.status))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if line != said {
            say(&line);
            said = line;
        }
        if phase == lattice_clusters::phase::Phase::Failed {
            return Err(InstallError::Failed(format!(
                "Cluster API reports {name} Failed; see `kubectl -n {namespace} describe cluster {name}` on the bootstrap cluster"
            )));
        }
        if available {
            let secret = secrets
                .get_opt(&format!("{name}-kubeconfig"))
                .await
                .map_err(|e| {
                    InstallError::Failed(format!("cannot read {name}'s kubeconfig: {e}"))
                })?;
            if let Some(value) = secret
                .and_then(|s| s.data)
                .and_then(|d| d.get("value").cloned())
            {
                return String::from_utf8(value.0).map_err(|_| {
                    InstallError::Failed(format!("{name}'s kubeconfig Secret is not text"))
                });
            }
        }
        if started.elapsed() > timeout {
            return Err(InstallError::Failed(format!(
                "{name}'s control plane was not available within {} s (--timeout); the bootstrap cluster keeps its objects: run the same command again to go on",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until the new cluster's API server answers.
async fn wait_for_api(client: &Client, timeout: Duration) -> Result<(), InstallError> {
    let started = Instant::now();
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                say(&format!(
                    "the new cluster answers (Kubernetes {}.{})",
                    v.major, v.minor
                ));
                return Ok(());
            }
            Err(e) if started.elapsed() > timeout => {
                return Err(InstallError::Failed(format!(
                    "the new cluster's API server did not answer within {} s: {e}",
                    timeout.as_secs()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Copies to `target` every Cluster API CRD `source` serves that `target` does not, so the
/// moved objects can land at the versions they were written in. The names of those copied.
async fn copy_cluster_api_crds(
    source: &Client,
    target: &Client,
) -> Result<Vec<String>, InstallError> {
    let from: Api<DynamicObject> = Api::all_with(source.clone(), &crate::apply::crd_resource());
    let to: Api<DynamicObject> = Api::all_with(target.clone(), &crate::apply::crd_resource());
    let mut copied = Vec::new();
    let listed = from.list(&Default::default()).await.map_err(|e| {
        InstallError::Failed(format!("cannot list the bootstrap cluster's CRDs: {e}"))
    })?;
    for crd in listed.items {
        let group = crd.data["spec"]["group"].as_str().unwrap_or_default();
        let name = crd.metadata.name.clone().unwrap_or_default();
        if !lattice_clusters::pivot::group_moves(group) {
            continue;
        }
        let present = to
            .get_opt(&name)
            .await
            .map_err(|e| InstallError::Failed(format!("cannot read CRD {name}: {e}")))?;
        if present.is_some() {
            continue;
        }
        let mut spec = crd.data["spec"].clone();
        // A conversion webhook names a Service in the bootstrap cluster; the copy converts
        // nothing (it serves the versions as stored).
        if let Some(s) = spec.as_object_mut() {
            s.remove("conversion");
        }
        let body = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "labels": crd.metadata.labels.clone().unwrap_or_default()},
            "spec": spec,
        });
        apply_all(target, &[body]).await?;
        copied.push(name);
    }
    Ok(copied)
}

/// Waits until the CRDs named (the ones the installer wrote) are established; another
/// CRD of the server's, broken or not, is none of the installer's business.
async fn wait_for_crds(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> Result<(), InstallError> {
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crate::apply::crd_resource());
    let started = Instant::now();
    loop {
        let listed = crds
            .list(&Default::default())
            .await
            .map_err(|e| InstallError::Failed(format!("cannot list CRDs: {e}")))?;
        let waiting: Vec<String> = listed
            .items
            .iter()
            .filter(|c| c.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            .filter(|c| {
                !c.data["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
            })
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(InstallError::Failed(format!(
                "CRDs not established: {}",
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes the bootstrap cluster `kind` made, or what the installer wrote to the one given.
async fn tear_down_bootstrap(
    bootstrap: &Client,
    plan: &Plan,
    name: &str,
    made_by_kind: bool,
) -> Result<(), InstallError> {
    if made_by_kind {
        let deleted = std::process::Command::new("kind")
            .args(["delete", "cluster", "--name", KIND_CLUSTER])
            .status()
            .map_err(|e| InstallError::Failed(format!("kind delete cluster: {e}")))?;
        if !deleted.success() {
            return Err(InstallError::Failed(format!(
                "kind delete cluster --name {KIND_CLUSTER} failed ({deleted}); delete it by hand"
            )));
        }
        say(&format!("deleted the bootstrap cluster {KIND_CLUSTER}"));
        return Ok(());
    }
    fn gone<T>(r: Result<T, kube::Error>) -> Result<(), InstallError> {
        match r {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(InstallError::Failed(format!(
                "cleaning the bootstrap cluster: {e}"
            ))),
        }
    }
    for object in plan.platform.iter().rev() {
        let ar = crate::apply::resource_of(object);
        let api: Api<DynamicObject> = Api::all_with(bootstrap.clone(), &ar);
        let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
        gone(api.delete(object_name, &DeleteParams::default()).await)?;
    }
    let namespaces: Api<Namespace> = Api::all(bootstrap.clone());
    gone(
        namespaces
            .delete(
                &lattice_clusters::capi::namespace(name),
                &DeleteParams::default(),
            )
            .await,
    )?;
    say(&format!(
        "removed {name}'s objects from the bootstrap cluster (the Lattice CRDs stay; it is yours to delete)"
    ));
    Ok(())
}

/// Writes `text` readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// What `lattice uninstall` was asked.
pub struct UninstallRequest {
    /// The cluster to take down (its admin kubeconfig, as `install` wrote it).
    pub kubeconfig: PathBuf,
    /// The context of `kubeconfig` to use (its current one when `None`).
    pub context: Option<String>,
    /// A bootstrap cluster running Cluster API with the cluster's provider; without it,
    /// `kind` makes one (and deletes it after).
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// How long Cluster API may take to delete the cluster.
    pub timeout: Duration,
}

/// `lattice uninstall`: the reverse of [`install`]. The cluster's Cluster API objects move
/// back to a bootstrap cluster, whose Cluster API then deletes the cluster's machines, once
/// Cedar allows `Unpivot` and `Decommission` (asked by `lattice-bootstrap`, over the bundled
/// packs and the cluster's own CedarPolicies; the baseline's `decommission-only-empty`
/// holds a cluster that still runs workloads or manages clusters).
pub async fn uninstall(request: &UninstallRequest) -> Result<String, InstallError> {
    let text = std::fs::read_to_string(&request.kubeconfig)
        .map_err(|e| InstallError::Usage(format!("{}: {e}", request.kubeconfig.display())))?;
    let cluster_client = client_in(&text, request.context.clone())
        .await
        .map_err(|e| InstallError::Usage(format!("{}: {e}", request.kubeconfig.display())))?;
    let (cluster, platform) = own_cluster(&cluster_client).await?;
    let name = cluster.metadata.name.clone().unwrap_or_default();
    decide_uninstall(&cluster_client, &cluster).await?;
    let (bootstrap, made_by_kind) = bootstrap_cluster(&InstallRequest {
        file: PathBuf::new(),
        bootstrap_kubeconfig: request.bootstrap_kubeconfig.clone(),
        kubeconfig_out: None,
        timeout: request.timeout,
        operator: None,
    })
    .await?;
    require_cluster_api(&bootstrap, &cluster).await?;
    apply_all(&bootstrap, &lattice_crds()).await?;
    wait_for_crds(&bootstrap, &lattice_crd_names(), request.timeout).await?;
    apply_all(&bootstrap, &platform).await?;
    crate::operator::stop(&cluster_client, &name, request.timeout)
        .await
        .map_err(InstallError::Failed)?;
    let source = PivotTarget::new(cluster_client.clone(), &name);
    let moved = lattice_controllers::fleet::pivot::unpivot_cluster(&bootstrap, &source, &name)
        .await
        .map_err(|e| InstallError::Failed(format!("moving {name}'s objects back: {e}")))?;
    say(&format!(
        "moved {} Cluster API objects back from {name} to the bootstrap cluster",
        moved.objects
    ));
    delete_cluster(&bootstrap, &name, request.timeout).await?;
    let plan = Plan {
        cluster: cluster.clone(),
        platform,
        objects: Vec::new(),
        summary: String::new(),
    };
    tear_down_bootstrap(&bootstrap, &plan, &name, made_by_kind).await?;
    Ok(format!(
        "uninstalled {name}: Cluster API deleted its machines"
    ))
}

/// The cluster's own LatticeCluster (a pivoted root), and it and its InfraProvider as the
/// bootstrap cluster is given them.
async fn own_cluster(client: &Client) -> Result<(LatticeCluster, Vec<Value>), InstallError> {
    let clusters: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
    let listed = clusters.list(&Default::default()).await.map_err(|e| {
        InstallError::Usage(format!("cannot list the cluster's LatticeClusters: {e}"))
    })?;
    let roots: Vec<LatticeCluster> = listed
        .items
        .iter()
        .filter_map(|o| serde_json::from_value(serde_json::to_value(o).ok()?).ok())
        .filter(|c: &LatticeCluster| {
            c.spec.parent.is_none() && c.status.as_ref().and_then(|s| s.pivoted).unwrap_or(false)
        })
        .collect();
    let [cluster] = roots.as_slice() else {
        return Err(InstallError::Usage(format!(
            "the cluster holds {} pivoted root LatticeClusters: uninstall takes down a root `lattice install` made (a child is decommissioned by deleting its LatticeCluster on its parent)",
            roots.len()
        )));
    };
    let mut platform = Vec::new();
    let providers: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::InfraProvider));
    if let Some(p) = providers
        .get_opt(&cluster.spec.provider_ref)
        .await
        .map_err(|e| InstallError::Usage(format!("cannot read the InfraProvider: {e}")))?
    {
        platform.push(json!({
            "apiVersion": lattice_schemas::crd::API_VERSION,
            "kind": Kind::InfraProvider.name(),
            "metadata": {"name": p.metadata.name},
            "spec": p.data["spec"],
        }));
    }
    platform.push(json!({
        "apiVersion": lattice_schemas::crd::API_VERSION,
        "kind": Kind::LatticeCluster.name(),
        "metadata": {"name": cluster.metadata.name},
        "spec": cluster.spec,
    }));
    Ok((cluster.clone(), platform))
}

/// Asks `Unpivot` and `Decommission` of `lattice-bootstrap` about the cluster: the context's
/// object count is what the cluster still runs (workloads) and manages (LatticeClusters
/// below it); the "agent" is the installer, healthy when the cluster's API server is ready.
async fn decide_uninstall(client: &Client, cluster: &LatticeCluster) -> Result<(), InstallError> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let mut store = lattice_engine::PolicyStore::bundled()
        .map_err(|e| InstallError::Usage(format!("the bundled packs did not load: {e}")))?;
    let objects = vec![Object::Cluster(cluster.clone())];
    let mut count = 0usize;
    for kind in Kind::ALL {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &lattice_resource(kind));
        let listed = match api.list(&Default::default()).await {
            Ok(l) => l.items,
            // A kind whose CRD the cluster does not serve holds nothing.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                return Err(InstallError::Usage(format!(
                    "cannot list {}: {e}",
                    kind.plural()
                )));
            }
        };
        for o in listed {
            let value = serde_json::to_value(&o).unwrap_or_default();
            match kind {
                Kind::CedarPolicy => {
                    let policy: lattice_schemas::crd::CedarPolicy = serde_json::from_value(value)
                        .map_err(|e| {
                        InstallError::Usage(format!("a CedarPolicy cannot be read: {e}"))
                    })?;
                    // A policy that does not load could be a forbid: the decision cannot
                    // be taken without it, so nothing is taken down.
                    store.apply_object(&policy).map_err(|e| {
                        InstallError::Denied(format!(
                            "DENIED: the cluster's CedarPolicy {}/{} does not load, so Unpivot and Decommission cannot be decided: {e}",
                            o.metadata.namespace.as_deref().unwrap_or_default(),
                            o.metadata.name.as_deref().unwrap_or_default()
                        ))
                    })?;
                }
                Kind::LatticeCluster if o.data["spec"]["parent"] == name.as_str() => count += 1,
                k if k.is_workload() => count += 1,
                _ => {}
            }
        }
    }
    let ready = client
        .request_text(
            http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| InstallError::Usage(e.to_string()))?,
        )
        .await
        .is_ok_and(|t| t.trim() == "ok");
    let world = lattice_engine::World::from_objects(objects);
    let projection = Projection::of(&world);
    let snapshot = lattice_engine::Snapshot::build(&world, &projection, &store)
        .map_err(|e| InstallError::Usage(format!("the policies did not build: {e}")))?;
    for step in [Lifecycle::Unpivot, Lifecycle::Decommission] {
        let mut facts = LifecycleFacts::of(cluster, count, jiff::Timestamp::now());
        facts.agent_healthy = ready;
        let decision = lifecycle::decide(&snapshot, &projection, step, cluster, &facts);
        if !decision.allowed {
            return Err(refused(&decision, "nothing is moved or deleted"));
        }
        say(&decision.summary());
    }
    Ok(())
}

/// Deletes the cluster's CAPI `Cluster` on the bootstrap cluster and waits until Cluster
/// API has deleted it (its finalizer holds it while the machines and infrastructure go).
async fn delete_cluster(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> Result<(), InstallError> {
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &lattice_clusters::capi::namespace(name),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(lattice_clusters::capi::CORE, "v1beta2", "Cluster"),
            "clusters",
        ),
    );
    match clusters.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(InstallError::Failed(format!(
                "cannot delete Cluster {name}: {e}"
            )));
        }
    }
    say(&format!(
        "deleting Cluster {name}: Cluster API deletes its machines"
    ));
    let started = Instant::now();
    loop {
        match clusters.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if started.elapsed() > timeout => {
                return Err(InstallError::Failed(format!(
                    "Cluster {name} was not deleted within {} s; Cluster API on the bootstrap cluster goes on (run the same command again to wait)",
                    timeout.as_secs()
                )));
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_secs(2)).await,
            Err(e) => {
                return Err(InstallError::Failed(format!(
                    "cannot read Cluster {name}: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(provider: &str, bootstrap: Option<&str>) -> LatticeCluster {
        use lattice_schemas::crd::cluster::ProviderConfig;
        let mut c: LatticeCluster = serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster",
            "metadata": {"name": "root"},
            "spec": {"providerRef": provider,
                     "provider": {"kubernetes": {"version": "1.32.0", "bootstrap": bootstrap},
                                  "config": {"docker": {}}},
                     "nodes": {"controlPlane": 1, "workerPools": {}}},
        }))
        .unwrap();
        c.spec.provider.config = match provider {
            "aws" => ProviderConfig {
                aws: Some(Default::default()),
                ..Default::default()
            },
            "proxmox" => ProviderConfig {
                proxmox: Some(Default::default()),
                ..Default::default()
            },
            _ => c.spec.provider.config,
        };
        c
    }

    #[test]
    fn clusterctl_installs_the_providers_the_cluster_was_made_with() {
        assert_eq!(
            clusterctl_init_args(&cluster("docker", None)).join(" "),
            "init --infrastructure docker --wait-providers"
        );
        assert_eq!(
            clusterctl_init_args(&cluster("aws", Some("rke2"))).join(" "),
            "init --infrastructure aws --bootstrap rke2 --control-plane rke2 --wait-providers"
        );
        assert_eq!(
            clusterctl_init_args(&cluster("proxmox", Some("kubeadm"))).join(" "),
            "init --infrastructure proxmox --ipam in-cluster --wait-providers"
        );
    }
}
