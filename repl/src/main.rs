//! `lattice-policy`: the command line of Lattice's policy engine.

mod admit;
mod allocator;
mod cache;
mod cluster;
mod commands;
mod compliance;
mod entity_cache;
mod images;
mod loading;
mod mesh;
mod migrate;
mod oneshot;
mod output;
mod output_cache;
mod phases;
mod plain;
mod plan;
mod policy_test;
mod prove;
mod query;
mod render;
mod repl;
mod session;
mod style;
mod validate;
mod world_cache;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: success (no errors; a decision allowed).
pub const EXIT_OK: u8 = 0;
/// Exit code: findings were reported (or a decision denied).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: usage error or unreadable input.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "lattice-policy", version, about = "Validate, query and prove Lattice policies", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    images: ImageArgs,
}

/// How images are verified before anything is decided (every command that loads a world).
/// Images under a TrustPolicy registry are resolved to digests and their cosign signatures
/// checked under the policy's keys: against `--images`, else the OCI image layout a world
/// directory carries in `images/`, else the registries themselves.
#[derive(clap::Args)]
struct ImageArgs {
    /// Verify no image: every image under a TrustPolicy registry reads as unsigned, and its
    /// `verifyError` says it was not verified.
    #[arg(long, global = true)]
    offline: bool,
    /// Verify against this OCI image layout (an `oci-layout` directory) instead of the
    /// registries, with no network.
    #[arg(
        long = "images",
        global = true,
        value_name = "DIR",
        conflicts_with = "offline"
    )]
    layout: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for registries besides the system's roots.
    #[arg(long = "registry-ca", global = true, value_name = "FILE")]
    registry_ca: Vec<PathBuf>,
    /// A registry (`host:port`) to reach over plain HTTP (development registries only).
    #[arg(long = "plain-http", global = true, value_name = "HOST")]
    plain_http: Vec<String>,
    /// Registry logins, as a Docker `config.json` (`auths`; what `docker login`, `cosign
    /// login` and a `kubernetes.io/dockerconfigjson` Secret hold); anonymous elsewhere.
    #[arg(long = "registry-auth", global = true, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything the platform decides and derives for a world: each workload's gates and
    /// objects, each namespace's default-deny baseline, the mesh, the compliance summary
    /// and the snapshot. Exit 0 when everything is allowed, 1 when anything is denied, 2 on
    /// bad input. A run on inputs unchanged since an earlier one prints the answer that run
    /// kept (`LATTICE_NO_CACHE=outputs` decides afresh).
    Plan {
        /// The world: directories or files of manifests.
        #[arg(default_value = "examples/world")]
        paths: Vec<PathBuf>,
        /// A rule-pack directory (each subdirectory with a pack.yaml) to decide under instead of
        /// the bundled packs, which the binary carries.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// List every derived object and every allowed edge.
        #[arg(long)]
        detail: bool,
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// Check manifests (YAML) and policies (.cedar) for every problem a reviewer would catch.
    ///
    /// Directories are searched recursively for *.yaml, *.yml and *.cedar files. Exit
    /// codes: 0 no errors (warnings allowed), 1 errors found, 2 usage error or unreadable
    /// path.
    Validate {
        /// Files or directories to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// Render the Kubernetes objects a workload (LatticeService, LatticeJob, LatticeModel or
    /// LatticeMeshMember) compiles to, as YAML for `kubectl apply`, or, when any gate denies,
    /// every denied gate with its policies and advice (exit 1). For a LatticeCluster, its
    /// Cluster API objects once `Provision` allows it. With `--namespace`, a namespace's
    /// default-deny baseline instead.
    Render {
        /// The workload or LatticeCluster manifest (other objects in it are ignored, but for
        /// the InfraProvider a cluster names).
        #[arg(
            short = 'f',
            long = "file",
            required_unless_present = "namespace",
            conflicts_with = "namespace"
        )]
        file: Option<PathBuf>,
        /// Render this namespace's default-deny baseline (or say that OptOutDefaultDeny let
        /// it run without one).
        #[arg(long)]
        namespace: Option<String>,
        /// The world the workload joins: directories or files of manifests (repeatable).
        #[arg(long, default_value = "examples/world")]
        world: Vec<PathBuf>,
        /// A rule-pack directory to decide under instead of the bundled packs.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// For a LatticeCluster: the parent's bootstrap endpoint (`HOST:PORT`) its first
        /// control-plane node fetches its agent from.
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap_endpoint: Option<lattice_clusters::BootstrapEndpoint>,
        /// `human` prints YAML documents; `json` a JSON array.
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// Show the bilateral mesh: allowed edges, denied declared edges with reasons, and
    /// one-sided declarations. Only declared edges are decided. A run on inputs unchanged
    /// since an earlier one prints the answer that run kept (`LATTICE_NO_CACHE=outputs`
    /// decides afresh).
    Mesh {
        /// The world: directories or files of manifests (repeatable).
        #[arg(long, default_value = "examples/world")]
        world: Vec<PathBuf>,
        /// A rule-pack directory (each subdirectory with a pack.yaml) to decide under instead of
        /// the bundled packs, which the binary carries.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Only edges with an end in this namespace.
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// What verifying the world's images established: for each image under a TrustPolicy
    /// registry with keys, the digest it resolved to, the keys whose cosign signatures
    /// verified, or why it is not signed. Exit 1 when an image that requires a signature
    /// is not signed.
    Images {
        /// The world: directories or files of manifests.
        #[arg(default_value = "examples/world")]
        paths: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// An interactive session: ask the platform questions, try policy changes, watch edits
    /// to the world and policies apply as they are saved.
    Repl {
        #[arg(long, default_value = "examples/world")]
        world: Vec<PathBuf>,
        /// A rule-pack directory to decide under instead of the bundled packs.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// History file (default `$XDG_STATE_HOME/lattice/history`).
        #[arg(long)]
        history: Option<PathBuf>,
    },
    /// What the admission webhook answers for the Kubernetes objects in a file: each object
    /// that carries a pod under its namespace's Pod Security Standards (labels
    /// `pod-security.kubernetes.io/enforce|warn|audit[-version]`), exemptions as permits;
    /// Roles, ClusterRoles, their bindings and Services by `AdmitKubernetes`. Exit 0 all
    /// admitted, 1 any refused, 2 bad input; warnings and the deciding policies on stderr.
    Admit(admit::AdmitArgs),
    /// May PRINCIPAL do ACTION on RESOURCE? Exit 0 allow, 1 deny, 2 error.
    ///
    /// Uids in full Cedar syntax (`Lattice::Service::"shop/api"`) or short
    /// (`Service::shop/api`); the context defaults from the schema and the world.
    Can(oneshot::QueryArgs),
    /// Like `can`, with the explanation: the policies that decided, or for a default deny the
    /// nearest permits and the condition that was false (and, for Connect, which side's
    /// declaration is missing).
    Why(oneshot::QueryArgs),
    /// Every derivation question a workload raises, answered. Exit 0 if all allow, else 1.
    Gates {
        /// The workload, as namespace/name.
        workload: String,
        #[command(flatten)]
        common: oneshot::Common,
    },
    /// Recompute every decision the world raises under a policy change and show what changes
    /// (newly allowed, newly denied, a diff of derived objects). Exit 1 if anything becomes
    /// denied.
    Whatif {
        #[command(subcommand)]
        change: oneshot::Change,
        #[command(flatten)]
        common: oneshot::Common,
    },
    /// Plain Cedar for any schema: one request against a policy file and an entities file,
    /// with the decision, the reasons (by `@id`, else `policy0`, `policy1`… in source order)
    /// and errors. Exit 0 allow, 1 deny, 2 error.
    Authorize {
        #[arg(long)]
        policies: PathBuf,
        /// Entities in Cedar's JSON format.
        #[arg(long)]
        entities: PathBuf,
        /// A Cedar schema (`.cedarschema`, or `.json`); with one, the request and entities
        /// are validated.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// `{"principal": "User::\"alice\"", "action": …, "resource": …, "context": {…}}`
        #[arg(long = "request-json")]
        request_json: PathBuf,
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// Run policy test files (YAML: a world, packs, inline objects, and cases with the
    /// expected decision and determining policies). Exit 0 all pass, 1 failures, 2 a file
    /// could not run.
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also write the results as JUnit XML.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Compliance scans (NIST 800-53, SOC 2, CIS Kubernetes) on the platform's own decisions,
    /// reported as OSCAL, Markdown, HTML, CSV, JUnit or SARIF, and a tamper-evident log of
    /// runs for an audit period.
    Compliance {
        #[command(subcommand)]
        command: compliance::ComplianceCommand,
    },
    /// Rewrite manifests written for upstream Lattice (evan-hines-js/lattice, v1alpha1) in
    /// this project's shapes. Every field not carried over as it was is reported at its file
    /// and line (on stderr); documents already in this project's shape, or of other API
    /// groups, pass through unchanged. Exit 0 when everything was carried over, 1 when
    /// something was dropped or a migrated document does not validate, 2 on unreadable input.
    Migrate {
        /// Files or directories (searched for *.yaml, *.yml and *.cedar; Cedar files need no
        /// migration and are copied unchanged with -o); `-` for standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write each file's migration here (the inputs' tree below their common directory)
        /// instead of one YAML stream on stdout.
        #[arg(short = 'o', long = "out-dir")]
        out_dir: Option<PathBuf>,
    },
    /// Prove properties of policies for every request the schema admits (Cedar's symbolic
    /// compiler and the cvc5 solver): a refutation comes with a counterexample request and
    /// entities, replayed by Cedar's authorizer. Exit 0 proved, 1 refuted, 2 no answer.
    Prove {
        #[command(subcommand)]
        command: prove::ProveCommand,
    },
    /// Format Cedar files with the official formatter (directories are searched for *.cedar).
    Fmt {
        /// Change nothing; list unformatted files with a diff and exit 1 if any.
        #[arg(long)]
        check: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    allocator::prefer_huge_pages();
    // Decisions run on rayon's threads; Cedar evaluates by recursion, so they get more than
    // the 2 MiB default (policies are bounded in depth when read: lattice_schemas::cedar).
    // Fails only when a pool exists already, which then keeps its own.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(lattice_schemas::cedar::DECIDE_STACK)
        .build_global();
    let cli = Cli::parse();
    loading::set_image_options(loading::ImageOptions {
        offline: cli.images.offline,
        layout: cli.images.layout,
        ca_files: cli.images.registry_ca,
        plain_http: cli.images.plain_http,
        auth_file: cli.images.registry_auth,
    });
    let code = match cli.command {
        Command::Plan {
            paths,
            policies,
            detail,
            output,
        } => plan::run(&paths, policies.as_deref(), detail, output),
        Command::Validate { paths, output } => validate::run(&paths, output),
        Command::Render {
            file,
            namespace,
            world,
            policies,
            bootstrap_endpoint,
            output,
        } => match (file, namespace) {
            (Some(file), _) => render::run(
                &file,
                &world,
                policies.as_deref(),
                bootstrap_endpoint.as_ref(),
                output,
            ),
            (None, Some(ns)) => render::namespace(&ns, &world, policies.as_deref(), output),
            (None, None) => EXIT_USAGE,
        },
        Command::Images { paths, output } => images::run(&paths, output),
        Command::Mesh {
            world,
            policies,
            namespace,
            output,
        } => mesh::run(&world, policies.as_deref(), namespace.as_deref(), output),
        Command::Repl {
            world,
            policies,
            history,
        } => repl::run(world, policies, history),
        Command::Admit(args) => admit::run(args),
        Command::Can(args) => oneshot::can(args, false),
        Command::Why(args) => oneshot::can(args, true),
        Command::Gates { workload, common } => oneshot::gates(&workload, common),
        Command::Whatif { change, common } => oneshot::whatif(change, common),
        Command::Authorize {
            policies,
            entities,
            schema,
            request_json,
            output,
        } => plain::authorize(
            &policies,
            &entities,
            schema.as_deref(),
            &request_json,
            output,
        ),
        Command::Fmt { check, paths } => plain::fmt(&paths, check),
        Command::Migrate { paths, out_dir } => migrate::run(&paths, out_dir.as_deref()),
        Command::Test { paths, junit } => policy_test::run(&paths, junit.as_deref()),
        Command::Compliance { command } => compliance::run(command),
        Command::Prove { command } => prove::run(command),
    };
    ExitCode::from(code)
}
