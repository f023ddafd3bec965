//! `lattice`: the fleet CLI. It reads the LatticeClusters of the API server its kubeconfig
//! names (a parent's own, or a parent's Lattice API proxy) and shows the fleet below it:
//! `get clusters`, `get cluster NAME`, `get hierarchy`, `get health`.
//!
//! `login`, `use`, `logout` and `token` reach the clusters through a parent's Lattice API
//! proxy with kubectl ([`login`]); `login --oidc-issuer` gets an ID token with the OpenID
//! Connect device flow ([`device_flow`]).
//!
//! Exit codes: 0 done; 1 the named cluster is not in the fleet, or there is no usable login
//! (none, or its token expired, or the device-flow login was refused or not approved in
//! time); 2 the API server or proxy cannot be reached or read, or
//! refused the credential (the kubeconfig, the connection, RBAC), with the reason on stderr.

mod apply;
mod fleet;
mod install;
mod login;
mod operator;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets};
use fleet::Fleet;
use kube::api::{Api, ListParams};
use lattice_cli::device_flow;
use lattice_schemas::crd::cluster::LatticeCluster;
use owo_colors::OwoColorize;

#[derive(Parser)]
#[command(name = "lattice", version, about = "The clusters of a Lattice fleet")]
struct Cli {
    /// The kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(short = 'k', long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a root cluster from a LatticeCluster file through a temporary bootstrap
    /// cluster: provision it with Cluster API once Cedar's Provision allows it, move its
    /// Cluster API objects into it, put the Lattice operator on it, and delete the bootstrap
    /// cluster.
    ///
    /// Exit codes: 0 installed; 1 Provision denied (nothing written); 2 the file, the
    /// bootstrap cluster or a flag cannot be used (nothing written); 3 a step failed after
    /// writing (run the same command again to go on).
    Install {
        /// The file: one LatticeCluster with no parent, and the InfraProvider and
        /// CedarPolicies that go with it.
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: PathBuf,
        /// A bootstrap cluster running Cluster API with the cluster's provider; without it,
        /// `kind` makes one (and deletes it after).
        #[arg(long, value_name = "PATH")]
        bootstrap_kubeconfig: Option<PathBuf>,
        /// Where the new cluster's kubeconfig is written (mode 0600).
        #[arg(long, value_name = "PATH")]
        kubeconfig_out: Option<PathBuf>,
        /// Seconds Cluster API may take to bring the control plane up (and the operator
        /// then to become available).
        #[arg(long, default_value_t = 1800)]
        timeout_seconds: u64,
        /// The Lattice operator's image (default: the one deploy/operator names).
        #[arg(long, value_name = "IMAGE")]
        operator_image: Option<String>,
        /// A name (DNS or IP) the cluster's future children dial its cell at, on its
        /// certificate; repeat for more (default: the cell Service's in-cluster name).
        #[arg(long, value_name = "ADDRESS")]
        cell_address: Vec<String>,
        /// Do not put the Lattice operator on the new cluster (run it yourself from deploy/).
        #[arg(long)]
        no_operator: bool,
    },
    /// Take down a root `install` made: once Cedar allows Unpivot and Decommission, move
    /// its Cluster API objects back to a bootstrap cluster, whose Cluster API deletes its
    /// machines, then delete the bootstrap cluster. Needs -k, the cluster's kubeconfig.
    ///
    /// Exit codes: 0 uninstalled; 1 Unpivot or Decommission denied (nothing moved); 2 the
    /// cluster, the bootstrap cluster or a flag cannot be used (nothing moved); 3 a step
    /// failed after moving (run the same command again to go on).
    Uninstall {
        /// A bootstrap cluster running Cluster API with the cluster's provider; without it,
        /// `kind` makes one (and deletes it after).
        #[arg(long, value_name = "PATH")]
        bootstrap_kubeconfig: Option<PathBuf>,
        /// Seconds Cluster API may take to delete the cluster.
        #[arg(long, default_value_t = 1800)]
        timeout_seconds: u64,
    },
    /// Show the fleet.
    Get {
        #[command(subcommand)]
        what: Get,
    },
    /// Log in to a parent's Lattice API proxy and add a kubeconfig context per cluster.
    ///
    /// The token (a ServiceAccount token of the parent's, or an OpenID Connect ID token of
    /// an issuer the proxy accepts, from a file or got here with the device flow) is
    /// checked against the proxy, kept under
    /// $LATTICE_HOME/logins (default ~/.lattice), and read by kubectl through `lattice
    /// token`; the kubeconfig never holds it.
    Login {
        /// The proxy's address, https://HOST[:PORT].
        server: String,
        /// A file holding the token; `-` reads it from stdin.
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "oidc_issuer",
            conflicts_with = "oidc_issuer"
        )]
        token_file: Option<PathBuf>,
        /// Log in at this OpenID Connect issuer instead, with the device flow: open the
        /// page printed, enter the code, approve; the ID token is kept.
        #[arg(long, value_name = "URL", requires = "oidc_client_id")]
        oidc_issuer: Option<String>,
        /// The client the issuer knows `lattice` as (the proxy's OIDCProvider clientId).
        #[arg(long, value_name = "ID")]
        oidc_client_id: Option<String>,
        /// A file holding the client's secret, for an issuer that requires one.
        #[arg(long, value_name = "PATH", requires = "oidc_issuer")]
        oidc_client_secret_file: Option<PathBuf>,
        /// The CA (PEM) the issuer's certificate chains to, if not the system's roots.
        #[arg(long, value_name = "PATH", requires = "oidc_issuer")]
        oidc_certificate_authority: Option<PathBuf>,
        /// A scope to ask for besides `openid` (repeatable), such as `groups`.
        #[arg(long = "oidc-scope", value_name = "SCOPE", requires = "oidc_issuer")]
        oidc_scopes: Vec<String>,
        /// The CA (PEM) the proxy's certificate chains to (the parent's cluster CA).
        #[arg(long, value_name = "PATH")]
        certificate_authority: Option<PathBuf>,
        /// A cluster to add a context for; the first is made current. At least one: the
        /// token is checked by a call to it.
        #[arg(long = "cluster", value_name = "NAME", required = true)]
        clusters: Vec<String>,
        /// The contexts' default namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        /// The login's name, its kubeconfig user and its contexts' prefix.
        #[arg(long, default_value = "lattice")]
        name: String,
    },
    /// Add (if needed) and switch to the context of CLUSTER through a login's proxy.
    Use {
        cluster: String,
        /// The login to go through (needed only when there are several).
        #[arg(long)]
        login: Option<String>,
        /// The context's default namespace.
        #[arg(long, short)]
        namespace: Option<String>,
    },
    /// Forget a login: its token, its kubeconfig user, contexts and clusters.
    Logout {
        /// The login to forget (needed only when there are several).
        #[arg(long)]
        login: Option<String>,
    },
    /// Print a login's credential as a client.authentication.k8s.io/v1 ExecCredential
    /// (what the kubeconfig's exec plugin runs), with the token's own expiry; an ID token
    /// about to expire is first renewed with the login's refresh token, if it has one.
    Token {
        /// The login (needed only when there are several).
        #[arg(long)]
        login: Option<String>,
    },
}

#[derive(Subcommand)]
enum Get {
    /// Every cluster: NAME PHASE PROVIDER K8S CP WORKERS ROLE AGE.
    Clusters {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// One cluster, with its decisions and conditions.
    Cluster {
        name: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The clusters as a tree, each under the one that manages it.
    Hierarchy {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Each cluster's agent, nodes, control plane, versions and last heartbeat.
    Health {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

/// Whether to color: only on a terminal, and never with `NO_COLOR`.
fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn phase(p: &str) -> String {
    if !color() {
        return p.to_owned();
    }
    match p {
        "Ready" => p.green().to_string(),
        "Failed" => p.red().to_string(),
        "Deleting" | "Unknown" => p.yellow().to_string(),
        _ => p.cyan().to_string(),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    // comfy-table pads each line to the widest column; kubectl does not.
    t.to_string()
        .lines()
        .map(|l| l.trim_end().trim_start_matches(' ').to_owned() + "\n")
        .collect()
}

async fn client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<String>,
) -> Result<kube::Client, String> {
    let options = kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None if options.context.is_some() => kube::Config::from_kubeconfig(&options).await,
        None => kube::Config::infer().await.map_err(|e| {
            kube::config::KubeconfigError::ReadConfig(
                std::io::Error::other(e.to_string()),
                "".into(),
            )
        }),
    }
    .map_err(|e| format!("no usable kubeconfig: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("cannot make a client: {e}"))
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let what = match cli.command {
        Command::Get { what } => what,
        Command::Install {
            file,
            bootstrap_kubeconfig,
            kubeconfig_out,
            timeout_seconds,
            operator_image,
            cell_address,
            no_operator,
        } => {
            let request = install::InstallRequest {
                file,
                bootstrap_kubeconfig,
                kubeconfig_out,
                timeout: std::time::Duration::from_secs(timeout_seconds),
                operator: (!no_operator).then_some(operator::OperatorOptions {
                    image: operator_image,
                    cell_addresses: cell_address,
                }),
            };
            return Ok(installed(install::install(&request).await));
        }
        Command::Uninstall {
            bootstrap_kubeconfig,
            timeout_seconds,
        } => {
            let Some(kubeconfig) = cli.kubeconfig else {
                return Err(
                    "uninstall needs -k KUBECONFIG: the cluster to take down, named explicitly"
                        .into(),
                );
            };
            let request = install::UninstallRequest {
                kubeconfig,
                context: cli.context,
                bootstrap_kubeconfig,
                timeout: std::time::Duration::from_secs(timeout_seconds),
            };
            return Ok(installed(install::uninstall(&request).await));
        }
        Command::Login {
            server,
            token_file,
            oidc_issuer,
            oidc_client_id,
            oidc_client_secret_file,
            oidc_certificate_authority,
            oidc_scopes,
            certificate_authority,
            clusters,
            namespace,
            name,
        } => {
            let credential = match (token_file, oidc_issuer, oidc_client_id) {
                (Some(path), _, _) => Credential::File(path),
                (None, Some(issuer), Some(client_id)) => Credential::DeviceFlow {
                    issuer,
                    client_id,
                    client_secret_file: oidc_client_secret_file,
                    certificate_authority: oidc_certificate_authority,
                    scopes: oidc_scopes,
                },
                _ => return Err("give --token-file, or --oidc-issuer with --oidc-client-id".into()),
            };
            let request = LoginRequest {
                server,
                credential,
                certificate_authority,
                clusters,
                namespace,
                name,
            };
            return log_in(cli.kubeconfig.as_deref(), request).await;
        }
        Command::Use {
            cluster,
            login,
            namespace,
        } => {
            return switch(
                cli.kubeconfig.as_deref(),
                &cluster,
                login.as_deref(),
                namespace.as_deref(),
            );
        }
        Command::Logout { login } => return log_out(cli.kubeconfig.as_deref(), login.as_deref()),
        Command::Token { login } => return token(login.as_deref()).await,
    };
    let client = client(cli.kubeconfig.as_deref(), cli.context.clone()).await?;
    let clusters: Api<LatticeCluster> = Api::all(client);
    let list = clusters
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list LatticeClusters: {e}"))?;
    let fleet = Fleet::of(&list.items);
    let now = jiff::Timestamp::now();
    let out;
    let structured = |output: Output, value: serde_json::Value| match output {
        Output::Yaml => lattice_schemas::generate::to_yaml(&value),
        _ => format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
    };
    match what {
        Get::Clusters { output } | Get::Health { output } | Get::Hierarchy { output }
            if output != Output::Table =>
        {
            let all: Vec<serde_json::Value> = fleet
                .members
                .values()
                .map(|m| fleet.member_json(m))
                .collect();
            out = structured(output, serde_json::Value::Array(all));
        }
        Get::Clusters { .. } => {
            let rows = fleet
                .cluster_rows(now)
                .into_iter()
                .map(|mut r| {
                    r[1] = phase(&r[1]);
                    r.to_vec()
                })
                .collect();
            out = table(
                &[
                    "NAME", "PHASE", "PROVIDER", "K8S", "CP", "WORKERS", "ROLE", "AGE",
                ],
                rows,
            );
        }
        Get::Health { .. } => {
            let rows = fleet
                .health_rows(now)
                .into_iter()
                .map(|r| r.to_vec())
                .collect();
            out = table(
                &[
                    "NAME",
                    "AGENT",
                    "NODES",
                    "CONTROL-PLANE",
                    "K8S",
                    "AGENT-VERSION",
                    "HEARTBEAT",
                ],
                rows,
            );
        }
        Get::Hierarchy { .. } => out = fleet.tree(),
        Get::Cluster { name, output } => {
            let object = list
                .items
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name.as_str()));
            let Some(member) = fleet.members.get(&name) else {
                eprintln!("lattice: no cluster {name:?} in this fleet");
                return Ok(ExitCode::from(1));
            };
            match (output, object) {
                (Output::Table, _) => out = describe(&fleet, member, object, now),
                (_, Some(o)) => {
                    out = structured(output, serde_json::to_value(o).unwrap_or_default())
                }
                (_, None) => out = structured(output, fleet.member_json(member)),
            }
        }
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| format!("cannot write: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `get cluster NAME` for people: its row, its decisions and its conditions.
fn describe(
    fleet: &Fleet,
    m: &fleet::Member,
    object: Option<&LatticeCluster>,
    now: jiff::Timestamp,
) -> String {
    let mut out = String::new();
    let row = fleet
        .cluster_rows(now)
        .into_iter()
        .find(|r| r[0] == m.name)
        .unwrap_or_default();
    let fields = [
        "Name",
        "Phase",
        "Provider",
        "Kubernetes",
        "Control plane",
        "Workers",
        "Role",
        "Age",
    ];
    for (f, v) in fields.iter().zip(row.iter()) {
        let v = if *f == "Phase" { phase(v) } else { v.clone() };
        out.push_str(&format!("{:<16}{v}\n", format!("{f}:")));
    }
    out.push_str(&format!(
        "{:<16}{}\n",
        "Parent:",
        m.parent.as_deref().unwrap_or("-")
    ));
    if m.reported {
        out.push_str("(known from its parent's report: no LatticeCluster on this server)\n");
    }
    let Some(status) = object.and_then(|o| o.status.as_ref()) else {
        return out;
    };
    if !status.decisions.is_empty() {
        out.push_str("Decisions:\n");
        for d in &status.decisions {
            let verdict = if d.allowed { "allowed" } else { "denied" };
            let by = if d.policies.is_empty() {
                String::new()
            } else {
                format!(" by {}", d.policies.join(", "))
            };
            out.push_str(&format!(
                "  {} ({}): {verdict}{by}\n",
                d.action, d.principal
            ));
            for a in &d.advice {
                out.push_str(&format!("    advice: {a}\n"));
            }
        }
    }
    if !status.conditions.is_empty() {
        out.push_str("Conditions:\n");
        for c in &status.conditions {
            out.push_str(&format!(
                "  {:<22}{:<8}{}\n",
                c.type_,
                serde_json::to_value(c.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    out
}

/// Where `lattice login` gets its token.
enum Credential {
    /// A file holding it (`-`: stdin).
    File(PathBuf),
    /// An OpenID Connect issuer's device flow.
    DeviceFlow {
        issuer: String,
        client_id: String,
        client_secret_file: Option<PathBuf>,
        certificate_authority: Option<PathBuf>,
        scopes: Vec<String>,
    },
}

/// What `lattice login` was asked.
struct LoginRequest {
    server: String,
    credential: Credential,
    certificate_authority: Option<PathBuf>,
    clusters: Vec<String>,
    namespace: Option<String>,
    name: String,
}

/// A login error as an exit: 1 when there is no usable login, 2 otherwise.
fn login_failed(e: login::LoginError) -> Result<ExitCode, String> {
    match e {
        login::LoginError::NoLogin(_)
        | login::LoginError::Ambiguous(_)
        | login::LoginError::Expired { .. } => {
            eprintln!("lattice: {e}");
            Ok(ExitCode::from(1))
        }
        other => Err(other.to_string()),
    }
}

/// The most a token file may hold.
const MAX_TOKEN: u64 = 64 * 1024;

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let mut text = String::new();
    let read = if path == std::path::Path::new("-") {
        std::io::stdin().take(MAX_TOKEN).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_TOKEN).read_to_string(&mut text))
    };
    read.map_err(|e| format!("cannot read the token from {}: {e}", path.display()))?;
    login::check_token(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The device flow at `client`'s issuer, its page and code shown on stderr (stdout stays
/// for what `login` did): the ID token once the person approves, and how to renew it when
/// the issuer gave a refresh token.
async fn device_flow_token(
    client: device_flow::Client,
) -> Result<(String, Option<login::Refresh>), device_flow::DeviceFlowError> {
    let flow = device_flow::DeviceFlow::new(client.clone())?;
    let (endpoints, code) = flow.begin().await?;
    let minutes = code
        .expires_in
        .min(device_flow::MAX_CODE_LIFETIME)
        .div_ceil(60);
    match &code.verification_uri_complete {
        Some(complete) => eprintln!(
            "To log in, open {complete}\n(or open {} and enter the code {}); it expires in {minutes} min.",
            code.verification_uri, code.user_code
        ),
        None => eprintln!(
            "To log in, open {} and enter the code {}; it expires in {minutes} min.",
            code.verification_uri, code.user_code
        ),
    }
    eprintln!("Waiting for you to approve it there...");
    let tokens = flow.finish(&endpoints, &code).await?;
    let refresh = tokens.refresh_token.map(|refresh_token| login::Refresh {
        issuer: client.issuer,
        token_endpoint: endpoints.token,
        client_id: client.client_id,
        client_secret: client.client_secret,
        certificate_authority: client.certificate_authority,
        refresh_token,
    });
    Ok((tokens.id_token, refresh))
}

/// Checks `login`'s token with one call through its proxy to `cluster` (`GET /version`):
/// a 401 means the proxy named no one, and nothing is written. A 403 names the caller
/// (Cedar or the cluster's RBAC refused this one call), so the login stands.
async fn check_login(login: &login::Login, cluster: &str) -> Result<Option<String>, String> {
    use base64::Engine;
    let mut cluster_entry = serde_json::json!({
        "server": format!("{}/clusters/{cluster}", login.server),
    });
    if let Some(pem) = &login.certificate_authority {
        cluster_entry["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(pem).into();
    }
    let kubeconfig = serde_json::json!({
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": "login", "user": {"token": login.token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "login"}}],
        "current-context": cluster,
    });
    let kubeconfig: kube::config::Kubeconfig =
        serde_json::from_value(kubeconfig).map_err(|e| e.to_string())?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("cannot reach {}: {e}", login.server))?;
    config.connect_timeout = Some(std::time::Duration::from_secs(15));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    let client =
        kube::Client::try_from(config).map_err(|e| format!("cannot make a client: {e}"))?;
    match client.apiserver_version().await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 401 => Err(format!(
            "the proxy at {} refused the token: {}",
            login.server, status.message
        )),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Some(status.message.clone())),
        Err(e) => Err(format!("cannot check the token with {}: {e}", login.server)),
    }
}

async fn log_in(
    kubeconfig: Option<&std::path::Path>,
    request: LoginRequest,
) -> Result<ExitCode, String> {
    let invalid = |e: login::LoginError| e.to_string();
    login::check_name(&request.name).map_err(invalid)?;
    for c in &request.clusters {
        login::check_name(c).map_err(invalid)?;
    }
    let server = login::check_server(&request.server).map_err(invalid)?;
    let certificate_authority = match &request.certificate_authority {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut refresh = None;
    let token = match request.credential {
        Credential::File(path) => read_token(&path)?,
        Credential::DeviceFlow {
            issuer,
            client_id,
            client_secret_file,
            certificate_authority,
            scopes,
        } => {
            let client = device_flow::Client {
                issuer: device_flow::check_issuer(&issuer).map_err(|e| e.to_string())?,
                client_id,
                client_secret: client_secret_file.as_deref().map(read_token).transpose()?,
                certificate_authority: certificate_authority
                    .as_deref()
                    .map(|p| {
                        std::fs::read_to_string(p)
                            .map_err(|e| format!("cannot read {}: {e}", p.display()))
                    })
                    .transpose()?,
                scopes,
            };
            match device_flow_token(client).await {
                Ok((token, renewal)) => {
                    refresh = renewal;
                    token
                }
                Err(
                    e @ (device_flow::DeviceFlowError::Refused { .. }
                    | device_flow::DeviceFlowError::Expired { .. }),
                ) => {
                    eprintln!("lattice: {e}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let login = login::Login {
        name: request.name,
        server,
        certificate_authority,
        token,
        refresh,
    };
    let first = &request.clusters[0];
    let refused = check_login(&login, first).await?;
    let path = login::kubeconfig_path(kubeconfig).map_err(invalid)?;
    let mut config = login::read_kubeconfig(&path).map_err(invalid)?;
    let exe = std::env::current_exe()
        .and_then(|e| e.canonicalize())
        .map_err(|e| format!("cannot tell where lattice is installed: {e}"))?;
    login::Store::at(&login::home().map_err(invalid)?)
        .save(&login)
        .map_err(invalid)?;
    login::set_user(&mut config, &login, &exe, login::home_override().as_deref());
    for c in request.clusters.iter().rev() {
        login::use_cluster(&mut config, &login, c, request.namespace.as_deref());
    }
    login::write_kubeconfig(&path, &config).map_err(invalid)?;
    let contexts: Vec<String> = request
        .clusters
        .iter()
        .map(|c| login::context_name(&login.name, c))
        .collect();
    println!(
        "Logged in to {} as {:?}; contexts in {}: {} (current: {})",
        login.server,
        login.name,
        path.display(),
        contexts.join(", "),
        contexts[0]
    );
    if let Some(why) = refused {
        eprintln!(
            "note: the token names a caller, but reading {first}'s version was refused: {why}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn switch(
    kubeconfig: Option<&std::path::Path>,
    cluster: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<ExitCode, String> {
    let invalid = |e: login::LoginError| e.to_string();
    login::check_name(cluster).map_err(invalid)?;
    let login = match login::home().and_then(|h| login::Store::at(&h).load(name)) {
        Ok(l) => l,
        Err(e) => return login_failed(e),
    };
    let path = login::kubeconfig_path(kubeconfig).map_err(invalid)?;
    let mut config = login::read_kubeconfig(&path).map_err(invalid)?;
    if !config.auth_infos.iter().any(|u| u.name == login.name) {
        let exe = std::env::current_exe()
            .and_then(|e| e.canonicalize())
            .map_err(|e| format!("cannot tell where lattice is installed: {e}"))?;
        login::set_user(&mut config, &login, &exe, login::home_override().as_deref());
    }
    login::use_cluster(&mut config, &login, cluster, namespace);
    login::write_kubeconfig(&path, &config).map_err(invalid)?;
    println!(
        "Switched to context {:?}: {cluster} through {}",
        login::context_name(&login.name, cluster),
        login.server
    );
    Ok(ExitCode::SUCCESS)
}

fn log_out(kubeconfig: Option<&std::path::Path>, name: Option<&str>) -> Result<ExitCode, String> {
    let invalid = |e: login::LoginError| e.to_string();
    let store = login::Store::at(&login::home().map_err(invalid)?);
    let login = match store.load(name) {
        Ok(l) => l,
        Err(e) => return login_failed(e),
    };
    let path = login::kubeconfig_path(kubeconfig).map_err(invalid)?;
    let mut config = login::read_kubeconfig(&path).map_err(invalid)?;
    let removed = login::remove_login(&mut config, &login.name);
    login::write_kubeconfig(&path, &config).map_err(invalid)?;
    store.remove(&login.name).map_err(invalid)?;
    println!(
        "Logged out of {} ({:?}); removed contexts: {}",
        login.server,
        login.name,
        if removed.is_empty() {
            "none".to_owned()
        } else {
            removed.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn token(name: Option<&str>) -> Result<ExitCode, String> {
    let store = match login::home() {
        Ok(h) => login::Store::at(&h),
        Err(e) => return login_failed(e),
    };
    let mut login = match store.load(name) {
        Ok(l) => l,
        Err(e) => return login_failed(e),
    };
    if login::needs_refresh(&login, jiff::Timestamp::now()) {
        // One refresh at a time, and none if another run renewed it meanwhile.
        let _held = store.lock(&login.name).map_err(|e| e.to_string())?;
        login = match store.load(Some(&login.name)) {
            Ok(l) => l,
            Err(e) => return login_failed(e),
        };
        if let Some(refresh) = login
            .refresh
            .clone()
            .filter(|_| login::needs_refresh(&login, jiff::Timestamp::now()))
        {
            let flow = device_flow::DeviceFlow::new(refresh.client()).map_err(|e| e.to_string())?;
            match flow
                .refresh(&refresh.token_endpoint, &refresh.refresh_token)
                .await
            {
                Ok(tokens) => {
                    login.token = tokens.id_token;
                    // `refresh` gives back the token to use next (rotated, or the same).
                    login.refresh = tokens.refresh_token.map(|refresh_token| login::Refresh {
                        refresh_token,
                        ..refresh
                    });
                    store.save(&login).map_err(|e| e.to_string())?;
                }
                Err(e @ device_flow::DeviceFlowError::Expired { .. }) => {
                    // The issuer ended the login: forget the refresh token, keep the name.
                    login.refresh = None;
                    store.save(&login).map_err(|e| e.to_string())?;
                    eprintln!("lattice: {e}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    match login::exec_credential(&login, jiff::Timestamp::now()) {
        Ok(c) => {
            println!("{c}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => login_failed(e),
    }
}

/// The exit of `install` or `uninstall`: what was done on stdout, or why not on stderr.
fn installed(outcome: Result<String, install::InstallError>) -> ExitCode {
    match outcome {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(match e {
                install::InstallError::Denied(_) => 1,
                install::InstallError::Usage(_) => 2,
                install::InstallError::Failed(_) => 3,
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lattice: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lattice: {e}");
            ExitCode::from(2)
        }
    }
}
