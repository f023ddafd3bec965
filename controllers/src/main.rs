//! `lattice-operator`: runs Lattice inside a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;

use lattice_controllers::operator;
use lattice_controllers::webhook::{self, State, stamp::AdmissionKey, tls::ReloadingCert};
use lattice_schemas::generate::all_crds_yaml;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "lattice-operator", version, about = "The Lattice operator")]
struct Cli {
    /// How logs are written on stderr: `text` for people, `json` (one object per line, with
    /// the span fields) for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where images are verified: the flags `run` and `webhook` share.
#[derive(clap::Args, Clone, Debug, Default)]
struct ImageFlags {
    /// Verify images against this OCI image layout (an `oci-layout` directory: a mirror for
    /// an air-gapped cluster) instead of their registries.
    #[arg(long = "images", value_name = "DIR")]
    image_layout: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for registries besides the system's roots.
    #[arg(long = "registry-ca", value_name = "FILE")]
    registry_ca: Vec<PathBuf>,
    /// A registry (`host:port`) to reach over plain HTTP (development registries only).
    #[arg(long = "plain-http", value_name = "HOST")]
    plain_http: Vec<String>,
    /// Registry logins for verification, as a Docker `config.json` (mount the
    /// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret); read at start.
    #[arg(long = "registry-auth", value_name = "FILE")]
    registry_auth: Option<PathBuf>,
}

impl ImageFlags {
    /// How registries are reached: the CAs and logins read now, so that a file that cannot
    /// be read stops the start instead of leaving every image unsigned.
    fn registries(&self) -> Result<lattice_supply::RegistryOptions, String> {
        let mut ca_pem = Vec::new();
        for f in &self.registry_ca {
            ca_pem.push(
                std::fs::read(f)
                    .map_err(|e| format!("cannot read the registry CA {}: {e}", f.display()))?,
            );
        }
        let credentials = match &self.registry_auth {
            None => Default::default(),
            Some(f) => lattice_supply::docker_config::read(f)?,
        };
        Ok(lattice_supply::RegistryOptions {
            ca_pem,
            plain_http: self.plain_http.clone(),
            credentials,
            ..lattice_supply::RegistryOptions::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers: watch every Lattice object, decide on one snapshot, and (while
    /// holding the lease) apply what was authorized, revoke what was not, write status and
    /// run scheduled compliance scans. With --tls-cert and --tls-key it also serves the
    /// admission webhook on the same live snapshot. Reads the cluster from KUBECONFIG or the
    /// in-cluster service account.
    Run(Box<RunArgs>),
    /// Run a child cluster's agent: bootstrap with the parent's token, hold the tunnel to
    /// its cell (outbound only), report health, and write the policies it distributes.
    Agent(AgentArgs),
    /// Print every Lattice CustomResourceDefinition as YAML (`lattice-operator crds | kubectl apply -f -`).
    Crds,
    /// Serve the admission webhook: HTTPS, `POST /validate` (AdmissionReview v1), `/healthz`,
    /// `/readyz` (ready once a snapshot is loaded) and `/metrics`.
    Webhook {
        /// PEM certificate chain; re-read whenever it changes.
        #[arg(long)]
        tls_cert: PathBuf,
        /// PEM private key; re-read whenever it changes.
        #[arg(long)]
        tls_key: PathBuf,
        #[arg(long, default_value = "0.0.0.0:8443")]
        addr: SocketAddr,
        /// The world to decide on: directories or files of manifests (repeatable), read once
        /// at start. Without it the webhook never becomes ready and refuses every policy
        /// decision. (`lattice-operator run` serves this webhook on the live cluster instead.)
        #[arg(long)]
        world: Vec<PathBuf>,
        /// A rule-pack directory (each subdirectory with a pack.yaml) to decide under instead of
        /// the bundled packs, which the binary carries.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// The key (a file of at least 32 bytes, a mounted Secret) `/mutate` stamps admitted
        /// CedarPolicy writes with; the operator loads only policies whose stamp verifies
        /// under the same key. Without it, `/mutate` refuses CedarPolicy writes.
        #[arg(long)]
        admission_key: Option<PathBuf>,
        /// Add a proof to every admitted CedarPolicy write, as an admission warning: whether the
        /// policies after it permit anything they did not before (`lattice-policy prove
        /// no-new-permits`). Needs cvc5 1.3.1 (--solver, $CVC5, or on PATH); at most 1.5 s a write.
        #[arg(long)]
        prove_policy_changes: bool,
        /// The cvc5 to prove with (default: $CVC5, else cvc5 on PATH).
        #[arg(long, requires = "prove_policy_changes")]
        solver: Option<PathBuf>,
        /// Where the world's images are verified (default: the OCI layout the world carries
        /// in `images/`, else their registries).
        #[command(flatten)]
        images: ImageFlags,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A rule-pack directory (each subdirectory with a pack.yaml) to decide under instead of
    /// the bundled packs, which the binary carries.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "lattice-system")]
    lease_namespace: String,
    #[arg(long, default_value = "lattice-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Seconds between searches for derived objects no workload derives any more.
    #[arg(long, default_value_t = 300)]
    sweep_seconds: u64,
    /// Where volume-claim evidence sinks are mounted (one directory per claim name).
    #[arg(long)]
    evidence_root: Option<PathBuf>,
    /// An Ed25519 private key (PKCS#8 PEM; a mounted Secret) that signs every evidence
    /// record and run (`lattice-policy compliance keygen` makes one). Verifiers check the
    /// signatures with `compliance verify --trusted-key`.
    #[arg(long)]
    evidence_signing_key: Option<PathBuf>,
    /// Serve the admission webhook here (with --tls-cert and --tls-key).
    #[arg(long, default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) here; `none` to not serve them.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_addr: MetricsAddr,
    /// PEM certificate chain of the webhook; re-read whenever it changes.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The key (a file of at least 32 bytes, a mounted Secret shared with every replica and
    /// webhook) admission stamps are made and checked with: a CedarPolicy is loaded only
    /// when the webhook admitted exactly its spec for a user ManagePolicy allows. Without
    /// it, a key is made for this process, and only this process's webhook can stamp.
    #[arg(long)]
    admission_key: Option<PathBuf>,
    /// Add a proof to every admitted CedarPolicy write, as an admission warning: whether the
    /// policies after it permit anything they did not before (`lattice-policy prove
    /// no-new-permits`). Needs cvc5 1.3.1 (--solver, $CVC5, or on PATH); at most 1.5 s a write.
    #[arg(long)]
    prove_policy_changes: bool,
    /// The cvc5 to prove with (default: $CVC5, else cvc5 on PATH).
    #[arg(long, requires = "prove_policy_changes")]
    solver: Option<PathBuf>,
    #[command(flatten)]
    images: ImageFlags,
    /// Seconds a verification holds: then every image is resolved and verified again (a tag
    /// moved to an unsigned digest is revoked).
    #[arg(long, default_value_t = 300)]
    image_verify_seconds: u64,
    /// Verify each workload's images with its own pull secrets (the
    /// `kubernetes.io/dockerconfigjson` Secrets its pods name) before --registry-auth. Reads
    /// those Secrets, which the shipped RBAC does not allow: grant `get` on secrets (README).
    #[arg(long)]
    pull_secret_logins: bool,
    /// Serve the cell, the end of the tunnel this cluster's children dial, here (this
    /// cluster is a parent). With --cluster-name and --cell-address.
    #[arg(long, requires_all = ["cluster_name", "cell_address"])]
    cell_listen: Option<SocketAddr>,
    /// This cluster's LatticeCluster name (children name it in `spec.parent`). Once the
    /// cluster is pivoted, the operator manages its own Cluster API objects through it.
    #[arg(long, env = "LATTICE_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// A name (DNS or IP) children dial the cell at; repeat for more. The first one goes
    /// into children's bootstrap Secrets; every one is on the cell's certificate.
    #[arg(long)]
    cell_address: Vec<String>,
    /// The port children dial, when a Service maps it to another (default: the listening one).
    #[arg(long)]
    cell_advertised_port: Option<u16>,
    /// The hierarchy's trust domain (the SPIFFE identities `spiffe://<it>/cluster/<name>`).
    #[arg(long, default_value = "lattice.local")]
    trust_domain: String,
    /// The cell's Service (one without a selector): the leader writes its EndpointSlice
    /// with --pod-ip, so children reach the leader and never a standby.
    #[arg(long, requires = "pod_ip")]
    cell_service: Option<String>,
    /// This pod's IP (the downward API's status.podIP).
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<std::net::IpAddr>,
    /// Hours a child's bootstrap token is valid.
    #[arg(long, default_value_t = 24)]
    bootstrap_token_hours: u32,
    /// Seconds between an agent's heartbeats (three missed: disconnected).
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Serve the Kubernetes API proxy here, beside the cell (HTTPS with the cell's
    /// certificate): `https://<address>/clusters/<name>` is a kubectl server for this
    /// cluster and each child. Callers bring ServiceAccount bearer tokens of this cluster.
    #[arg(long, requires = "cell_listen")]
    proxy_listen: Option<SocketAddr>,
    /// Serve the bootstrap endpoint here, beside the cell (HTTPS with the cell's
    /// certificate): a new child's control plane fetches its agent's manifests from
    /// `/v1/bootstrap/<child>` with its one-time token (the provisioned hook's address is
    /// the first `--cell-address` on the cluster's `parentConfig.bootstrapPort`).
    #[arg(long, requires = "cell_listen")]
    bootstrap_listen: Option<SocketAddr>,
    /// A user who may name the caller it forwards for through the proxy (repeatable).
    #[arg(long)]
    proxy_trusted_forwarder: Vec<String>,
    /// This cluster's east-west gateway, `host:port`: where workloads in other clusters
    /// reach its own. With it, its workloads' cross-cluster declarations are matched by
    /// this cell with its children's.
    #[arg(long, requires = "cell_listen", value_parser = mesh_address)]
    mesh_gateway: Option<String>,
    /// This cluster's workload trust domain (Istio's `trustDomain`; default
    /// `<cluster name>.<trust domain>`).
    #[arg(long)]
    mesh_trust_domain: Option<String>,
}

/// A `host:port` for `--mesh-gateway`.
fn mesh_address(s: &str) -> Result<String, String> {
    if lattice_tunnel::peering::is_address(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not host:port (a DNS name or an IP address, and a port)"
        ))
    }
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Where the bootstrap bundle (`lattice-bootstrap`) and the agent's credentials live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "lattice-system")]
    namespace: String,
    /// The key the child's webhook and operator share: the agent stamps the inherited
    /// CedarPolicy objects it writes with it, so the operator loads them.
    #[arg(long)]
    admission_key: Option<PathBuf>,
    /// Who the stamp names as the writer.
    #[arg(
        long,
        default_value = "system:serviceaccount:lattice-system:lattice-agent"
    )]
    writer: String,
    /// This cluster's own API proxy (on a cluster that is also a parent), e.g.
    /// `https://lattice-cell.lattice-system.svc`: calls the parent sends for the clusters
    /// below this one go there, authenticated as this agent, to be decided again here.
    #[arg(long, requires = "local_proxy_ca")]
    local_proxy: Option<http::Uri>,
    /// The PEM file of this cluster's cell CA (the ConfigMap `lattice-cell-ca`, mounted),
    /// which the local proxy's certificate is signed by. Read on every call, so a
    /// rotation is picked up.
    #[arg(long, requires = "local_proxy")]
    local_proxy_ca: Option<PathBuf>,
    /// This cluster's east-west gateway, `host:port`: where workloads in other clusters
    /// reach its own. With it, the agent reports its workloads' cross-cluster declarations
    /// to the parent, and writes the routes the parent sends.
    #[arg(long, value_parser = mesh_address)]
    mesh_gateway: Option<String>,
    /// This cluster's workload trust domain (Istio's `trustDomain`; default
    /// `<cluster name>.<hierarchy trust domain>`).
    #[arg(long)]
    mesh_trust_domain: Option<String>,
    /// Seconds between readings of this cluster's cross-cluster declarations.
    #[arg(long, default_value_t = 10)]
    mesh_interval_seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    LOG_FORMAT.get_or_init(|| cli.log_format);
    match cli.command {
        Command::Run(args) => run_operator(*args),
        Command::Agent(args) => run_agent(args),
        Command::Crds => {
            print!("{}", all_crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Webhook {
            tls_cert,
            tls_key,
            addr,
            world,
            policies,
            admission_key,
            prove_policy_changes,
            solver,
            images,
        } => {
            let proofs = match policy_proofs(prove_policy_changes, solver) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let images = match images.registries() {
                Ok(registries) => webhook::Images {
                    layout: images.image_layout,
                    registries,
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            run_webhook(
                &tls_cert,
                &tls_key,
                addr,
                DecidedOn {
                    world,
                    policies,
                    images,
                },
                admission_key,
                proofs,
            )
        }
    }
}

/// What the standalone webhook decides on: the world, the rule packs, and where its images
/// are verified.
struct DecidedOn {
    world: Vec<PathBuf>,
    policies: Option<PathBuf>,
    images: webhook::Images,
}

fn run_webhook(
    cert: &std::path::Path,
    key: &std::path::Path,
    addr: SocketAddr,
    decided_on: DecidedOn,
    admission_key: Option<PathBuf>,
    proofs: Option<lattice_controllers::webhook::proof::PolicyProofs>,
) -> ExitCode {
    let DecidedOn {
        world,
        policies,
        images,
    } = decided_on;
    init_logs();
    let admission = match optional_admission_key(admission_key.as_deref()) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let certs = match ReloadingCert::open(cert, key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (config, _watcher) = match (certs.server_config(), certs.watch()) {
        (Ok(c), Ok(w)) => (c, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        };
        let state = State::new();
        match admission {
            Some(k) => state.set_admission_key(k),
            None => tracing::warn!("no --admission-key: /mutate refuses CedarPolicy writes"),
        }
        if let Some(p) = proofs {
            state.set_policy_proofs(p);
        }
        tracing::info!(
            "listening on https://{}",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        // Ready only once the snapshot is built; until then policy decisions are refused.
        if world.is_empty() {
            tracing::warn!("no --world: not ready, and every policy decision is refused");
        } else {
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                match webhook::load_current(&world, policies.as_deref(), &images) {
                    Ok(current) => {
                        tracing::info!(
                            snapshot = current.snapshot.digest(),
                            objects = current.world.len(),
                            "snapshot loaded"
                        );
                        state.set(current);
                    }
                    Err(e) => tracing::error!("no snapshot: {e}"),
                }
            });
        }
        webhook::serve(
            listener,
            config,
            state,
            webhook::Limits::default(),
            shutdown_signal(),
        )
        .await;
        ExitCode::SUCCESS
    })
}

/// `--log-format`, read once by [`init_logs`].
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Logs on stderr: as text, colored only on a terminal (never in a file, a pipe or a pod's
/// log) and never with `NO_COLOR` set; or as JSON lines.
fn init_logs() {
    use std::io::IsTerminal;
    match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_current_span(true)
            .init(),
        LogFormat::Text => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(color)
                .init();
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    // Decisions run on these threads; Cedar evaluates by recursion, so they get more than
    // the 2 MiB default (policies are bounded in depth when admitted: lattice_schemas::cedar).
    install_rayon_stacks();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(lattice_schemas::cedar::DECIDE_STACK)
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(2)
        })
}

/// Rayon's threads (projection, plans) decide too: the same stack as the runtime's.
fn install_rayon_stacks() {
    // Fails only when a pool exists already, which then keeps its own.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(lattice_schemas::cedar::DECIDE_STACK)
        .build_global();
}

/// Kubernetes stops a pod with SIGTERM; a terminal with Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// The solver for `--prove-policy-changes`, found at start: a missing one stops the process
/// rather than leaving every write without the proof it was asked for.
fn policy_proofs(
    on: bool,
    solver: Option<PathBuf>,
) -> Result<Option<lattice_controllers::webhook::proof::PolicyProofs>, ExitCode> {
    if !on {
        return Ok(None);
    }
    match lattice_prove::solver::find(solver.as_deref()) {
        Ok(solver) => Ok(Some(
            lattice_controllers::webhook::proof::PolicyProofs::new(solver),
        )),
        Err(e) => {
            eprintln!("error: --prove-policy-changes: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn run_operator(args: RunArgs) -> ExitCode {
    init_logs();
    let proofs = match policy_proofs(args.prove_policy_changes, args.solver.clone()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let admission = match args.admission_key.as_deref().map(AdmissionKey::from_file) {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        None => match AdmissionKey::random() {
            Ok(k) => {
                tracing::warn!(
                    "no --admission-key: only this process's webhook can admit CedarPolicy objects it loads"
                );
                k
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let admission = Arc::new(admission);
    let evidence_signer = match args
        .evidence_signing_key
        .as_deref()
        .map(lattice_compliance::evidence::Signer::from_file)
    {
        None => None,
        Some(Ok(s)) => {
            tracing::info!(key = s.id(), "evidence records are signed");
            Some(Arc::new(s))
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            match ReloadingCert::open(cert, key).and_then(|c| Ok((c.server_config()?, c.watch()?)))
            {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let images = match (&args.images.image_layout, args.images.registries()) {
        (Some(dir), _) => operator::ImageSource::Layout(dir.clone()),
        (None, Ok(options)) => operator::ImageSource::Registries(options),
        (None, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = operator::Options {
        policies: args.policies.clone(),
        lease_namespace: args.lease_namespace.clone(),
        lease_name: args.lease_name.clone(),
        identity,
        lease_duration: Duration::from_secs(args.lease_seconds.max(2)),
        sweep_every: Duration::from_secs(args.sweep_seconds.max(1)),
        evidence_root: args.evidence_root.clone(),
        evidence_signer,
        admission: admission.clone(),
        metrics_addr: args.metrics_addr.0,
        own_cluster: args.cluster_name.clone(),
        images,
        image_ttl: Duration::from_secs(args.image_verify_seconds.max(1)),
        pull_secret_logins: args.pull_secret_logins,
        parent: args
            .cell_listen
            .map(|listen| lattice_controllers::fleet::parent::ParentOptions {
                cluster: args.cluster_name.clone().unwrap_or_default(),
                namespace: args.lease_namespace.clone(),
                listen,
                addresses: args.cell_address.clone(),
                advertised_port: args.cell_advertised_port,
                trust_domain: args.trust_domain.clone(),
                token_ttl: jiff::SignedDuration::from_hours(i64::from(
                    args.bootstrap_token_hours.max(1),
                )),
                heartbeat: Duration::from_secs(args.heartbeat_seconds.max(1)),
                service: args.cell_service.clone().zip(args.pod_ip),
                proxy_listen: args.proxy_listen,
                bootstrap_listen: args.bootstrap_listen,
                trusted_forwarders: args.proxy_trusted_forwarder.clone(),
                mesh: lattice_controllers::fleet::peering::MeshOptions {
                    gateway_address: args.mesh_gateway.clone(),
                    trust_domain: args.mesh_trust_domain.clone().unwrap_or_else(|| {
                        format!(
                            "{}.{}",
                            args.cluster_name.as_deref().unwrap_or_default(),
                            args.trust_domain
                        )
                    }),
                    gateway: Default::default(),
                },
            }),
    };
    runtime.block_on(async move {
        let client = match cluster_client().await {
            Ok(c) => c,
            Err(code) => return code,
        };
        let state = State::new();
        state.set_admission_key(admission);
        if let Some(p) = proofs {
            state.set_policy_proofs(p);
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut webhook_task = None;
        if let Some((config, watcher)) = tls {
            let listener = match tokio::net::TcpListener::bind(args.webhook_addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {}: {e}", args.webhook_addr);
                    return ExitCode::from(2);
                }
            };
            tracing::info!(
                "webhook listening on https://{}",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            let state = state.clone();
            let mut stopped = stopped.clone();
            webhook_task = Some(tokio::spawn(async move {
                let _watcher = watcher;
                webhook::serve(
                    listener,
                    config,
                    state,
                    webhook::Limits::default(),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                )
                .await;
            }));
        }
        let result = operator::run(client, options, state, shutdown_signal()).await;
        let _ = stop.send(true);
        if let Some(task) = webhook_task {
            let _ = task.await;
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The admission key at `path`, if one is given; an unreadable one is a usage error.
fn optional_admission_key(
    path: Option<&std::path::Path>,
) -> Result<Option<Arc<AdmissionKey>>, ExitCode> {
    match path.map(AdmissionKey::from_file) {
        None => Ok(None),
        Some(Ok(k)) => Ok(Some(Arc::new(k))),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// A client for the cluster of KUBECONFIG, or the one this pod runs in.
async fn cluster_client() -> Result<kube::Client, ExitCode> {
    kube::Client::try_default().await.map_err(|e| {
        eprintln!("error: no cluster to talk to (KUBECONFIG or in-cluster): {e}");
        ExitCode::from(2)
    })
}

fn run_agent(args: AgentArgs) -> ExitCode {
    init_logs();
    let admission = match optional_admission_key(args.admission_key.as_deref()) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let config = match kube::Config::infer().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: no cluster to talk to (KUBECONFIG or in-cluster): {e}");
                return ExitCode::from(2);
            }
        };
        let client = match kube::Client::try_from(config.clone()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot make a client for this cluster: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown_signal().await;
                shutdown.cancel();
            }
        });
        let local_proxy = match (args.local_proxy, args.local_proxy_ca) {
            (Some(url), Some(ca)) => Some(lattice_controllers::fleet::proxy::LocalProxy::new(
                config, url, ca,
            )),
            _ => None,
        };
        let options = lattice_controllers::fleet::child::ChildOptions {
            namespace: args.namespace,
            admission,
            writer: args.writer,
            local_proxy,
            mesh_gateway: args.mesh_gateway,
            mesh_trust_domain: args.mesh_trust_domain,
            mesh_every: Duration::from_secs(args.mesh_interval_seconds.max(1)),
        };
        match lattice_controllers::fleet::child::run(client, options, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Where metrics are served: `HOST:PORT`, or `none`.
#[derive(Clone, Copy, Debug)]
struct MetricsAddr(Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<MetricsAddr, String> {
        if text == "none" {
            return Ok(MetricsAddr(None));
        }
        text.parse()
            .map(|a| MetricsAddr(Some(a)))
            .map_err(|e| format!("`{text}` is neither HOST:PORT nor `none`: {e}"))
    }
}
