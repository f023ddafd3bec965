//! `lattice-operator`: runs Lattice inside a cluster.

use clap::{Parser, Subcommand};
use lattice_schemas::generate::all_crds_yaml;

#[derive(Parser)]
#[command(name = "lattice-operator", version, about = "The Lattice operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every Lattice CustomResourceDefinition as YAML (`lattice-operator crds | kubectl apply -f -`).
    Crds,
}

fn main() {
    match Cli::parse().command {
        Command::Crds => print!("{}", all_crds_yaml()),
    }
}
