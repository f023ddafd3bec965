//! `lattice-policy plan`, the main job, at estate scale: the real binary on the generated
//! world of 10,000 services in 50 namespaces with 50,000 declared edges (the REPL bench's
//! world), the bundled packs, from launch to the last line of its JSON document: loading,
//! every gate of every workload, every derived object, the mesh, the baselines and the
//! compliance summary. Target: under 3 s.
//!
//! The baseline, run side by side, is the same binary held to one thread
//! (`RAYON_NUM_THREADS=1`); its document must be the same.
//!
//! `cargo bench -p lattice-policy --bench plan` runs the full size; under `cargo test` (CI's
//! quick mode) a 500-service world runs once, checking the answer only. With
//! `LATTICE_PLAN_WORLD=DIR` the generated world is written there and kept (to profile
//! `lattice-policy plan DIR` by hand).
//!
//! The measured runs load cold (`LATTICE_NO_CACHE=1`). Then the same plan runs through an
//! empty cache: once to store the validated world, its entities and the answer; once with
//! the answer's cache off (`LATTICE_NO_CACHE=outputs`), which reads the world and its
//! entities back and decides everything afresh, reported as the warm time; and once more,
//! which reads the kept answer back. Every document must be the same.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/estate.rs"]
mod estate;

use estate::{FANOUT, generate};

/// Which caches a run reads and writes.
#[derive(Clone, Copy)]
enum Caches<'a> {
    /// None: every manifest parsed, validated and projected, everything decided.
    Off,
    /// The world and its entities at this directory; every decision taken afresh.
    Inputs(&'a Path),
    /// Every cache at this directory, the answer's included.
    All(&'a Path),
}

/// One `plan` run, with `caches`.
fn plan(world: &Path, threads: Option<usize>, caches: Caches) -> (Duration, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
    cmd.arg("plan").arg(world).args(["-o", "json"]);
    match caches {
        Caches::Off => cmd.env("LATTICE_NO_CACHE", "1"),
        Caches::Inputs(dir) => cmd
            .env("LATTICE_CACHE_DIR", dir)
            .env("LATTICE_NO_CACHE", "outputs"),
        Caches::All(dir) => cmd
            .env("LATTICE_CACHE_DIR", dir)
            .env_remove("LATTICE_NO_CACHE"),
    };
    if let Some(t) = threads {
        cmd.env("RAYON_NUM_THREADS", t.to_string());
    }
    let t = Instant::now();
    let out = cmd.output().expect("the lattice-policy binary runs");
    let took = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "everything in the estate is allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    (took, doc)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 500 };
    let runs = if full { 3 } else { 1 };
    let keep = std::env::var_os("LATTICE_PLAN_WORLD").map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lattice-plan-bench-{}", std::process::id()))
    });
    generate(&dir, n);

    let parallel: Vec<_> = (0..runs).map(|_| plan(&dir, None, Caches::Off)).collect();
    let single: Vec<_> = (0..runs.min(2))
        .map(|_| plan(&dir, Some(1), Caches::Off))
        .collect();
    let cache = std::env::temp_dir().join(format!("lattice-plan-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let stored = plan(&dir, None, Caches::All(&cache));
    let warm = plan(&dir, None, Caches::Inputs(&cache));
    let kept = plan(&dir, None, Caches::All(&cache));
    let _ = std::fs::remove_dir_all(&cache);
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let first = &parallel[0].1;
    let workloads = first["workloads"].as_array().map_or(0, Vec::len);
    assert_eq!(workloads, n, "every service is planned");
    let edges = first["mesh"].as_array().map_or(0, Vec::len);
    assert_eq!(edges, n * FANOUT, "every declared edge is decided");
    for (_, doc) in parallel
        .iter()
        .chain(&single)
        .chain([&stored, &warm, &kept])
    {
        assert_eq!(doc, first, "every run plans the same, on any thread count");
    }
    let t = median(parallel.iter().map(|(d, _)| *d).collect());
    let t1 = median(single.iter().map(|(d, _)| *d).collect());
    println!(
        "plan on {n} services, {} edges: {:.0} ms (target < 3000 ms); one thread: {:.0} ms; ratio {:.2}x",
        n * FANOUT,
        t.as_secs_f64() * 1e3,
        t1.as_secs_f64() * 1e3,
        t1.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "plan with the validated world and its entities cached, decided afresh (warm): {:.0} ms; ratio to cold {:.2}x",
        warm.0.as_secs_f64() * 1e3,
        warm.0.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "plan read back from the kept answer (same inputs): {:.0} ms; ratio to cold {:.2}x",
        kept.0.as_secs_f64() * 1e3,
        kept.0.as_secs_f64() / t.as_secs_f64()
    );
}
