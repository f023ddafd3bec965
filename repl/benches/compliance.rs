//! Compliance scans at estate scale, driven as an auditor drives them: the real
//! `lattice-policy compliance scan --framework all` with the real rule packs, on two
//! generated worlds:
//! - 10,000 Lattice services in 50 namespaces (20,050 subjects: services, containers and
//!   namespaces), reported as OSCAL;
//! - plain Kubernetes manifests as `helm template` writes them: 10,000 Deployments and 2,000
//!   RBAC objects (22,050 subjects: pods, containers, roles, bindings, namespaces), reported
//!   as JSON with file:line.
//!
//! Measured: wall time from launch to exit, and the process's peak resident memory (targets
//! ≤ 5 s and ≤ 500 MB each). The baseline, run side by side, is the same binary held to one
//! thread (`RAYON_NUM_THREADS=1`); its report must be byte-for-byte the same.
//!
//! `cargo bench -p lattice-policy --bench compliance` runs the full size; under
//! `cargo test` (CI's quick mode) 500-object worlds run once, checking the answers only.

#[path = "support/estate.rs"]
mod estate;
#[path = "support/kubernetes.rs"]
mod kubernetes;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Run {
    wall: Duration,
    /// Peak resident set of the scan, in MiB.
    peak_mib: f64,
    oscal: String,
    exit: Option<i32>,
}

/// Peak RSS of the largest child waited for so far (getrusage reports a maximum, not a
/// sum, so each run is measured in its own helper process).
fn children_peak_kib() -> i64 {
    // SAFETY: getrusage only writes the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

fn scan(world: &Path, out: &Path, threads: Option<usize>, format: &str) -> Run {
    let root = lattice_testkit::workspace_root();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
    cmd.args(["compliance", "scan", "--framework", "all", "-o", format])
        .args(["--at", "2026-11-21T12:00:00Z", "--world"])
        .arg(world)
        .arg("--policies")
        .arg(root.join("policies"))
        .arg("--out")
        .arg(out);
    if let Some(t) = threads {
        cmd.env("RAYON_NUM_THREADS", t.to_string());
    }
    let t = Instant::now();
    let status = cmd.status().expect("the lattice-policy binary runs");
    let wall = t.elapsed();
    Run {
        wall,
        peak_mib: children_peak_kib() as f64 / 1024.0,
        oscal: std::fs::read_to_string(out).expect("the scan wrote its report"),
        exit: status.code(),
    }
}

/// Runs one scan in a fresh copy of this bench (so the child's peak RSS is its own) and
/// reads its measurements back.
fn isolated(world: &Path, out: &Path, threads: Option<usize>, format: &str) -> Run {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.env("LATTICE_BENCH_CHILD", world)
        .env("LATTICE_BENCH_OUT", out)
        .env("LATTICE_BENCH_FORMAT", format)
        .env(
            "LATTICE_BENCH_THREADS",
            threads.map(|t| t.to_string()).unwrap_or_default(),
        );
    let o = cmd.output().expect("the bench re-runs itself");
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap_or_else(|| panic!("no measurement: {text}"));
    let parts: Vec<&str> = line.split_whitespace().collect();
    Run {
        wall: Duration::from_secs_f64(parts[0].parse().unwrap()),
        peak_mib: parts[1].parse().unwrap(),
        exit: parts[2].parse().ok(),
        oscal: std::fs::read_to_string(out).unwrap(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `runs` scans of `world` on every core and up to three on one thread; every report
/// must be the same. Returns the first report and the median wall times and peak RSS.
fn measure(world: &Path, out: &Path, format: &str, runs: usize) -> (Run, f64, f64, f64) {
    let parallel: Vec<Run> = (0..runs)
        .map(|_| isolated(world, out, None, format))
        .collect();
    let single: Vec<Run> = (0..runs.min(3))
        .map(|_| isolated(world, out, Some(1), format))
        .collect();
    for r in parallel.iter().chain(&single) {
        assert_eq!(
            r.oscal, parallel[0].oscal,
            "every run reports the same, on any thread count"
        );
    }
    let wall = median(parallel.iter().map(|r| r.wall.as_secs_f64()).collect());
    let peak = median(parallel.iter().map(|r| r.peak_mib).collect());
    let wall1 = median(single.iter().map(|r| r.wall.as_secs_f64()).collect());
    let first = parallel.into_iter().next().unwrap();
    (first, wall, peak, wall1)
}

fn main() {
    if let Some(world) = std::env::var_os("LATTICE_BENCH_CHILD") {
        let out = std::env::var_os("LATTICE_BENCH_OUT").unwrap();
        let threads = std::env::var("LATTICE_BENCH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok());
        let format = std::env::var("LATTICE_BENCH_FORMAT").unwrap_or_else(|_| "oscal".into());
        let r = scan(Path::new(&world), Path::new(&out), threads, &format);
        println!(
            "child {} {} {}",
            r.wall.as_secs_f64(),
            r.peak_mib,
            r.exit.unwrap_or(-1)
        );
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 500 };
    let rbac = if full { 2_000 } else { 100 };
    let runs = if full { 5 } else { 1 };
    let dir = std::env::temp_dir().join(format!("lattice-compliance-bench-{}", std::process::id()));

    let world = dir.join("world");
    estate::generate(&world, n);
    let out = dir.join("report.oscal.json");
    let (first, wall, peak, wall1) = measure(&world, &out, "oscal", runs);
    // No TrustPolicy trusts the generated images: every container fails trusted-registries.
    assert_eq!(first.exit, Some(1), "the scan reports its failures");
    let doc: serde_json::Value = serde_json::from_str(&first.oscal).expect("OSCAL JSON");
    let items = doc["assessment-results"]["results"][0]["local-definitions"]["inventory-items"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(items >= n, "every container is a failing subject: {items}");
    println!(
        "compliance scan of {n} services, all frameworks, OSCAL ({:.1} MB): {:.0} ms (target ≤ 5000 ms), peak RSS {:.0} MiB (target ≤ 500 MB); one thread: {:.0} ms; ratio {:.2}x",
        first.oscal.len() as f64 / 1e6,
        wall * 1e3,
        peak,
        wall1 * 1e3,
        wall1 / wall
    );

    let manifests = dir.join("manifests");
    kubernetes::generate(&manifests, n, rbac);
    let out = dir.join("report.json");
    let (first, wall, peak, wall1) = measure(&manifests, &out, "json", runs);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(first.exit, Some(1), "the scan reports its failures");
    let report: serde_json::Value = serde_json::from_str(&first.oscal).expect("report JSON");
    let subjects: u64 = report["subjects"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    assert!(
        subjects as usize >= 2 * n + rbac,
        "every pod, container and RBAC object is a subject: {subjects}"
    );
    let check = |framework: &str, id: &str| -> Vec<serde_json::Value> {
        report["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["id"] == framework)
            .flat_map(|f| f["checks"].as_array().cloned().unwrap_or_default())
            .find(|c| c["id"] == id)
            .and_then(|c| c["failures"].as_array().cloned())
            .unwrap_or_default()
    };
    let admin = check("cis-kubernetes", "cis-kubernetes/cluster-admin-bindings");
    assert_eq!(
        admin.len(),
        1,
        "only the anonymous binding grants cluster-admin"
    );
    assert_eq!(
        admin[0]["subject"]["id"], "ClusterRoleBinding/anonymous-admin",
        "{admin:?}"
    );
    assert!(
        admin[0]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("rbac.yaml") || s.contains("rbac.yaml:")),
        "the failure names its file and line: {admin:?}"
    );
    let host = check("cis-kubernetes", "cis-kubernetes/pod-host-network");
    assert_eq!(
        host.len(),
        n / 5,
        "every fifth Deployment runs on the host network"
    );
    println!(
        "compliance scan of {n} Deployments + {rbac} RBAC objects ({subjects} subjects), all frameworks, JSON ({:.1} MB): {:.0} ms (target ≤ 5000 ms), peak RSS {:.0} MiB (target ≤ 500 MB); one thread: {:.0} ms; ratio {:.2}x",
        first.oscal.len() as f64 / 1e6,
        wall * 1e3,
        peak,
        wall1 * 1e3,
        wall1 / wall
    );
}
