//! The REPL at estate scale, driven as a user drives it: the real `lattice-policy` binary on
//! a generated world of 10,000 services in 50 namespaces with 50,000 declared edges (each
//! declared by both sides), a secret each, and the real rule packs.
//!
//! - start: from launch to the banner, which is printed once the snapshot is built
//!   (target ≤ 1 s);
//! - `whatif add` of a forbid that newly denies the 1,000 edges into one namespace,
//!   recomputing every decision the world raises and diffing the touched workloads' objects
//!   (target ≤ 2 s).
//!
//! The baseline, run side by side, is the same binary held to one thread
//! (`RAYON_NUM_THREADS=1`); its answers must be byte-for-byte the same.
//!
//! `cargo bench -p lattice-policy --bench session` runs the full size; under `cargo test`
//! (CI's quick mode) a 500-service world runs once, checking the answers only.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/estate.rs"]
mod estate;

use estate::{FANOUT, NAMESPACES, generate};

const WHATIF: &str = "whatif add forbid(principal, action == Lattice::Action::\"Connect\", resource) when { resource in Lattice::Namespace::\"ns1\" };";

/// One REPL session: time to the banner, time for the what-if, and what both printed.
struct Run {
    start: Duration,
    whatif: Duration,
    banner: String,
    answer: String,
}

fn session(world: &Path, threads: Option<usize>) -> Run {
    let root = lattice_testkit::workspace_root();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
    cmd.args(["repl", "--world"])
        .arg(world)
        .arg("--policies")
        .arg(root.join("policies"))
        .arg("--history")
        .arg(world.join(".history"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = threads {
        cmd.env("RAYON_NUM_THREADS", t.to_string());
    }
    let t = Instant::now();
    let mut child = cmd.spawn().expect("the lattice-policy binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    out.read_line(&mut banner).unwrap();
    let start = t.elapsed();
    assert!(banner.contains("objects"), "no banner: {banner}");
    let mut help = String::new();
    out.read_line(&mut help).unwrap();
    // `entities Mesh` after the what-if marks the end of its answer.
    let t = Instant::now();
    writeln!(stdin, "{WHATIF}\nentities Mesh").unwrap();
    stdin.flush().unwrap();
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 || line.starts_with("Mesh::advertise") {
            break;
        }
        answer.push_str(&line);
    }
    let whatif = t.elapsed();
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    child.wait().unwrap();
    Run {
        start,
        whatif,
        banner,
        answer,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 500 };
    let runs = if full { 5 } else { 1 };
    let dir = std::env::temp_dir().join(format!("lattice-session-bench-{}", std::process::id()));
    generate(&dir, n);

    let parallel: Vec<Run> = (0..runs).map(|_| session(&dir, None)).collect();
    let single: Vec<Run> = (0..runs.min(3)).map(|_| session(&dir, Some(1))).collect();
    let _ = std::fs::remove_dir_all(&dir);

    let first = &parallel[0];
    let denied = format!("{} newly denied", n / NAMESPACES * FANOUT);
    assert!(
        first.answer.contains(&denied),
        "expected `{denied}`: {}",
        first.answer.lines().next().unwrap_or("")
    );
    for r in parallel.iter().chain(&single) {
        assert_eq!(r.banner, first.banner, "every run loads the same snapshot");
        assert_eq!(
            r.answer, first.answer,
            "every run answers the same, on any thread count"
        );
    }
    let start = median(parallel.iter().map(|r| r.start).collect());
    let whatif = median(parallel.iter().map(|r| r.whatif).collect());
    let start1 = median(single.iter().map(|r| r.start).collect());
    let whatif1 = median(single.iter().map(|r| r.whatif).collect());
    println!(
        "REPL on {n} services, {} edges: start {:.0} ms (target ≤ 1000 ms); one thread: {:.0} ms; ratio {:.2}x",
        n * FANOUT,
        start.as_secs_f64() * 1e3,
        start1.as_secs_f64() * 1e3,
        start1.as_secs_f64() / start.as_secs_f64()
    );
    println!(
        "whatif ({}): {:.0} ms (target ≤ 2000 ms); one thread: {:.0} ms; ratio {:.2}x",
        first.answer.lines().next().unwrap_or("").trim(),
        whatif.as_secs_f64() * 1e3,
        whatif1.as_secs_f64() * 1e3,
        whatif1.as_secs_f64() / whatif.as_secs_f64()
    );
}
