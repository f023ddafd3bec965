//! `lattice-operator`: runs Lattice inside a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lattice_controllers::webhook::{self, State, tls::ReloadingCert};
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
        /// decision (until the controllers feed it the world from the API server).
        #[arg(long)]
        world: Vec<PathBuf>,
        /// The rule packs directory.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
        } => run_webhook(&tls_cert, &tls_key, addr, world, policies),
    }
}

fn run_webhook(
    cert: &std::path::Path,
    key: &std::path::Path,
    addr: SocketAddr,
    world: Vec<PathBuf>,
    policies: PathBuf,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
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
            tokio::task::spawn_blocking(move || match webhook::load_current(&world, &policies) {
                Ok(current) => {
                    tracing::info!(
                        snapshot = current.snapshot.digest(),
                        objects = current.world.len(),
                        "snapshot loaded"
                    );
                    state.set(current);
                }
                Err(e) => tracing::error!("no snapshot: {e}"),
            });
        }
        // Kubernetes stops a pod with SIGTERM; a terminal with Ctrl-C.
        let shutdown = async {
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
        };
        webhook::serve(
            listener,
            config,
            state,
            webhook::Limits::default(),
            shutdown,
        )
        .await;
        ExitCode::SUCCESS
    })
}
