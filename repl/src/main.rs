//! `lattice-policy`: the command line of Lattice's policy engine.

mod loading;
mod mesh;
mod output;
mod render;
mod validate;

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
}

#[derive(Subcommand)]
enum Command {
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
    /// every denied gate with its policies and advice (exit 1).
    Render {
        /// The workload manifest (other objects in it are ignored).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The world the workload joins: directories or files of manifests (repeatable).
        #[arg(long, default_value = "examples/world")]
        world: Vec<PathBuf>,
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// `human` prints YAML documents; `json` a JSON array.
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
    /// Show the bilateral mesh: allowed edges, denied declared edges with reasons, and
    /// one-sided declarations. Only declared edges are decided.
    Mesh {
        /// The world: directories or files of manifests (repeatable).
        #[arg(long, default_value = "examples/world")]
        world: Vec<PathBuf>,
        /// The rule packs directory (each subdirectory with a pack.yaml).
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// Only edges with an end in this namespace.
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t = output::Format::Human)]
        output: output::Format,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { paths, output } => validate::run(&paths, output),
        Command::Render {
            file,
            world,
            policies,
            output,
        } => render::run(&file, &world, &policies, output),
        Command::Mesh {
            world,
            policies,
            namespace,
            output,
        } => mesh::run(&world, &policies, namespace.as_deref(), output),
    };
    ExitCode::from(code)
}
