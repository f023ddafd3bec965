//! Cell scale: how much memory the cell holds per idle connected agent, and what one
//! heartbeat costs it.
//!
//! The cell runs in a process of its own (this binary, re-run in cell mode), so its
//! resident memory and CPU time are its own; the agents are the real agent code
//! (`lattice_tunnel::agent::Agent`, its TLS and gRPC stream), in this process, over
//! loopback. The baseline is the same cell with no agent, measured in the same run.
//!
//! `cargo bench -p lattice-tunnel --bench cell_scale` (1,000 agents; `LATTICE_BENCH_AGENTS`
//! sets another count). Targets: ≤ 256 KiB of cell memory per idle agent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_tunnel::agent::{Agent, AgentConfig, Credentials};
use lattice_tunnel::cell::{Cell, CellConfig};
use lattice_tunnel::session::Health;
use lattice_tunnel::tls::{CellCert, cell_config};
use lattice_tunnel::{AgentKey, ClusterCa, ClusterIdentity};
use tokio_util::sync::CancellationToken;

const DOMAIN: &str = "lattice.bench";
const CELL_MODE: &str = "LATTICE_BENCH_CELL_DIR";

fn main() {
    if let Some(dir) = std::env::var_os(CELL_MODE) {
        cell_process(std::path::PathBuf::from(dir));
        return;
    }
    // `cargo bench` passes `--bench` and measures at full size; `cargo test --benches`
    // (CI's quick mode) runs 20 agents for a short window, checking that they all connect
    // and heartbeat.
    let full = std::env::args().any(|a| a == "--bench");
    let agents: usize = std::env::var("LATTICE_BENCH_AGENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 1000 } else { 20 });
    let (settle, window) = if full {
        (Duration::from_secs(5), Duration::from_secs(10))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(measure(agents, settle, window));
}

/// Cell mode: serve on a loopback port with the CA in `dir`, write the port to
/// `dir/port`, and print the number of connected agents and heartbeats whenever asked
/// (a line on stdin).
fn cell_process(dir: std::path::PathBuf) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let ca = ClusterCa::from_pem(
                DOMAIN,
                &std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
                &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
                Default::default(),
            )
            .unwrap();
            let cell = Cell::new(
                ca,
                CellConfig {
                    heartbeat: Duration::from_secs(1),
                    ..CellConfig::default()
                },
            );
            // One small distributed policy, as a real parent would hold.
            cell.distribute(BTreeMap::from([(
                lattice_tunnel::distribution::ObjectKey {
                    kind: "CedarPolicy".into(),
                    namespace: "lattice-system".into(),
                    name: "fleet".into(),
                },
                br#"{"spec":{"policies":"forbid (principal, action, resource) when { false };"}}"#
                    .to_vec(),
            )]));
            let me = ClusterIdentity::new(DOMAIN, "parent").unwrap();
            let (own, key) = cell
                .own_certificate(
                    &me,
                    &["127.0.0.1".into()],
                    jiff::SignedDuration::from_hours(1),
                )
                .unwrap();
            let tls = cell_config(
                &cell.ca_pem(),
                CellCert::new(&own.pem, key.private_key_der()).unwrap(),
            )
            .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            std::fs::write(
                dir.join("port"),
                listener.local_addr().unwrap().port().to_string(),
            )
            .unwrap();
            let report = cell.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    let agents = report.agents().snapshot();
                    let beats: u64 = agents.values().map(|a| a.heartbeats).sum();
                    println!("{} {beats}", agents.len());
                    line.clear();
                }
                std::process::exit(0);
            });
            cell.serve(listener, tls, std::future::pending())
                .await
                .unwrap();
        });
}

/// Resident memory (KiB) and CPU time (clock ticks) of `pid`, from /proc.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces): utime is the 14th, stime the 15th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

struct CellProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl CellProcess {
    /// (connected agents, heartbeats received in total)
    fn counts(&mut self) -> (usize, u64) {
        use std::io::{BufRead, Write};
        writeln!(self.stdin).unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        )
    }
}

impl Drop for CellProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn measure(n: usize, settle: Duration, window: Duration) {
    let dir = std::env::temp_dir().join(format!("lattice-cell-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = ClusterCa::generate(DOMAIN, jiff::Timestamp::now()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("ca.key"), ca.key_pem()).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CELL_MODE, &dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut cell = CellProcess {
        stdin: child.stdin.take().unwrap(),
        stdout: std::io::BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(dir.join("port")) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pid = cell.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (base_rss, _) = usage(pid);

    // Certificates signed here with the same CA (bootstrap is measured elsewhere).
    let started = Instant::now();
    let stop = CancellationToken::new();
    let mut held = Vec::new();
    for i in 0..n {
        let name = format!("child-{i}");
        let identity = ClusterIdentity::new(DOMAIN, &name).unwrap();
        let key = AgentKey::generate().unwrap();
        let cert = ca
            .sign_csr(
                &key.csr_pem(&identity).unwrap(),
                &identity,
                jiff::Timestamp::now(),
                jiff::SignedDuration::from_hours(1),
            )
            .unwrap();
        let creds = Credentials {
            key_der: key.private_key_der(),
            cert_pem: cert.pem.clone(),
            ca_pem: ca.cert_pem(),
            not_after: cert.not_after,
            renew_at: cert.renew_at(),
        };
        let mut config = AgentConfig::new(&name, DOMAIN, &format!("127.0.0.1:{port}"), "127.0.0.1");
        config.timeout = Duration::from_secs(30);
        let agent = Arc::new(Agent::new(
            config,
            creds,
            Arc::new(Health {
                nodes_ready: 3,
                nodes_total: 3,
                control_plane_ready: true,
                agent_version: "0.1.0".into(),
                kubernetes_version: "v1.33.0".into(),
                descendants: Vec::new(),
            }),
        ));
        tokio::spawn({
            let agent = agent.clone();
            let stop = stop.clone();
            async move { agent.run(stop).await }
        });
        held.push(agent);
    }
    loop {
        let (connected, _) = cell.counts();
        if connected == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {connected} of {n} agents connected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let connect_time = started.elapsed();
    // Idle: every agent synced and heartbeating; let allocations settle.
    tokio::time::sleep(settle).await;
    let (rss_before, ticks_before) = usage(pid);
    let (_, beats_before) = cell.counts();
    tokio::time::sleep(window).await;
    let (rss, ticks_after) = usage(pid);
    let (connected, beats_after) = cell.counts();
    let beats = beats_after - beats_before;
    assert_eq!(connected, n, "every agent stayed connected");
    assert!(
        beats as f64 >= n as f64 * window.as_secs_f64() * 0.5,
        "{beats} heartbeats from {n} agents in {window:?}"
    );
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu = (ticks_after - ticks_before) as f64 / ticks_per_second;
    let per_agent_kib = (rss.max(rss_before) - base_rss) as f64 / n as f64;
    let per_beat_us = cpu * 1e6 / beats.max(1) as f64;
    println!(
        "cell scale: {n} agents (real agent code, TLS 1.3 + gRPC over loopback), heartbeat 1 s"
    );
    println!(
        "  connected:             {connected} of {n} in {:.1} s",
        connect_time.as_secs_f64()
    );
    println!("  cell memory baseline:  {base_rss} KiB with no agent");
    println!("  cell memory, idle:     {rss} KiB with {n} agents");
    println!(
        "  per idle agent:        {per_agent_kib:.0} KiB (target ≤ 256 KiB: {})",
        if per_agent_kib <= 256.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  heartbeats processed:  {beats} in {:.0} s = {:.0}/s, cell CPU {cpu:.2} s = {per_beat_us:.0} µs each (≈ {:.0}/s per core)",
        window.as_secs_f64(),
        beats as f64 / window.as_secs_f64(),
        1e6 / per_beat_us.max(1e-9)
    );
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
