//! `lattice get clusters` on a fleet of 1,000 clusters (target ≤ 300 ms, the whole process:
//! kubeconfig, TLS, the list, the table), side by side with `kubectl get latticeclusters`
//! (the same list, printed by kubectl's own table) on the same real API server
//! (`tools/testenv`), alternating, the median of each.
//!
//! `cargo bench -p lattice-cli --bench get`; under `cargo test` (CI's quick mode) 100
//! clusters and three runs each.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;

fn time(program: &std::path::Path, args: &[&str], kubeconfig: &std::path::Path) -> Duration {
    let started = Instant::now();
    let out = std::process::Command::new(program)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (clusters, runs) = if quick { (100, 3) } else { (1000, 9) };
    let env = support::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = support::client(&env.kubeconfig).await;
        let mut fleet = vec![(
            support::cluster("root", None, "docker", json!({"default": {"replicas": 3}})),
            json!({"phase": "Ready", "ready": true, "pivoted": true}),
        )];
        for i in 1..clusters {
            fleet.push((
                support::cluster(
                    &format!("c{i:04}"),
                    Some("root"),
                    "docker",
                    json!({"default": {"replicas": 2, "min": 1, "max": 5}}),
                ),
                json!({"phase": "Ready", "ready": true, "agentConnected": true,
                       "health": {"nodesReady": 3, "nodesTotal": 3, "controlPlaneReady": true}}),
            ));
        }
        support::seed(&client, &fleet).await;
    });
    let lattice = std::path::PathBuf::from(env!("CARGO_BIN_EXE_lattice"));
    let kubectl = lattice_testkit::testenv::binary().with_file_name("kubectl");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..runs {
        ours.push(time(&lattice, &["get", "clusters"], &env.kubeconfig));
        theirs.push(time(&kubectl, &["get", "latticeclusters"], &env.kubeconfig));
    }
    ours.sort();
    theirs.sort();
    let (ours, theirs) = (ours[runs / 2], theirs[runs / 2]);
    println!(
        "get clusters on {clusters} clusters (median of {runs}): lattice {:.0} ms, kubectl get latticeclusters {:.0} ms, lattice/kubectl {:.2}× (target ≤ 300 ms)",
        ours.as_secs_f64() * 1000.0,
        theirs.as_secs_f64() * 1000.0,
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    if !quick {
        assert!(
            ours <= Duration::from_millis(300),
            "lattice get clusters took {ours:?} (target ≤ 300 ms)"
        );
    }
}
