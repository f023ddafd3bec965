//! `lattice`: the fleet CLI. It reads the LatticeClusters of the API server its kubeconfig
//! names (a parent's own, or a parent's Lattice API proxy) and shows the fleet below it:
//! `get clusters`, `get cluster NAME`, `get hierarchy`, `get health`.
//!
//! Exit codes: 0 shown; 1 the named cluster is not in the fleet; 2 the API server cannot be
//! reached or read (the kubeconfig, the connection, RBAC), with the reason on stderr.

mod fleet;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets};
use fleet::Fleet;
use kube::api::{Api, ListParams};
use lattice_schemas::crd::cluster::LatticeCluster;
use owo_colors::OwoColorize;

#[derive(Parser)]
#[command(name = "lattice", version, about = "The clusters of a Lattice fleet")]
struct Cli {
    /// The kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the fleet.
    Get {
        #[command(subcommand)]
        what: Get,
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

async fn client(cli: &Cli) -> Result<kube::Client, String> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await,
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
    let client = client(&cli).await?;
    let clusters: Api<LatticeCluster> = Api::all(client);
    let list = clusters
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list LatticeClusters: {e}"))?;
    let fleet = Fleet::of(&list.items);
    let now = jiff::Timestamp::now();
    let Command::Get { what } = cli.command;
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
