//! `lattice-policy prove` timed as a reviewer runs it, the real binary and cvc5 (`$CVC5`,
//! installed by `tools/cvc5/install`):
//!
//! - `no-new-permits` of a 100-policy CedarPolicy change over the bundled packs (the new
//!   version lets one team `exec`), refuted with a counterexample, and the same change
//!   without the widening, proved;
//! - `never-errors` and `shadowed` on every bundled pack.
//!
//! Side by side, the baseline: `whatif add` of the same change on the example world, which
//! recomputes the decisions that world raises today (what a review had before proofs). The
//! ratio says what answering for every request costs beside answering for today's.
//!
//! `cargo bench -p lattice-policy --bench prove` runs each 5 times; under `cargo test` (CI's
//! quick mode) once, checking the answers only.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A CedarPolicy of `teams` permits: each team reads its own namespace on `edge`; with
/// `exec_for`, that team may also exec there.
fn change(teams: usize, exec_for: Option<usize>) -> String {
    let mut policies = String::new();
    for i in 0..teams {
        let actions = if exec_for == Some(i) {
            r#"[Lattice::Action::"ClusterRead", Lattice::Action::"exec"]"#.to_owned()
        } else {
            r#"[Lattice::Action::"ClusterRead"]"#.to_owned()
        };
        policies.push_str(&format!(
            "    @id(\"team-{i}-reads\")\n    permit (\n      principal in Lattice::Group::\"team-{i}\",\n      action in {actions},\n      resource == Lattice::Cluster::\"edge\"\n    )\n    when {{ context.namespace == \"team-{i}\" }};\n"
        ));
    }
    format!(
        "apiVersion: lattice.dev/v1alpha1\nkind: CedarPolicy\nmetadata:\n  name: team-access\n  namespace: platform\nspec:\n  description: What each team may do on edge.\n  policies: |\n{policies}"
    )
}

fn run(args: &[&str], expect: i32) -> Duration {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
    if args[0] == "whatif" {
        // The baseline is the recomputation alone, without the proof line whatif adds.
        command.env("CVC5", "/nonexistent/cvc5");
    }
    let started = Instant::now();
    let out = command
        .current_dir(root)
        .args(args)
        .output()
        .expect("the lattice-policy binary runs");
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(expect),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 5 } else { 1 };
    let dir = std::env::temp_dir().join(format!("lattice-prove-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new, same) = (
        dir.join("old.yaml"),
        dir.join("new.yaml"),
        dir.join("same.yaml"),
    );
    std::fs::write(&old, change(100, None)).unwrap();
    std::fs::write(&new, change(100, Some(7))).unwrap();
    std::fs::write(&same, change(100, None)).unwrap();
    let (old, new, same) = (
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        same.to_str().unwrap(),
    );
    let time = |args: &[&str], expect: i32| median((0..runs).map(|_| run(args, expect)).collect());

    let refuted = time(
        &["prove", "no-new-permits", old, new, "--base", "bundled"],
        1,
    );
    let proved = time(
        &["prove", "no-new-permits", old, same, "--base", "bundled"],
        0,
    );
    let errors = time(&["prove", "never-errors", "bundled"], 0);
    let shadowed = time(
        &[
            "prove",
            "shadowed",
            "bundled",
            "--accepted",
            "policies/shadowed.txt",
        ],
        0,
    );
    let whatif = time(&["whatif", "add", new], 0);
    let _ = std::fs::remove_dir_all(&dir);

    println!("lattice-policy prove (median of {runs}; the bundled packs, 153 policies)");
    println!("| question | time |");
    println!("|---|---|");
    println!(
        "| no-new-permits, 100-policy change that widens (refuted) | {} |",
        ms(refuted)
    );
    println!(
        "| no-new-permits, 100-policy change that does not (proved) | {} |",
        ms(proved)
    );
    println!("| never-errors, every bundled pack | {} |", ms(errors));
    println!("| shadowed, every bundled pack | {} |", ms(shadowed));
    println!(
        "| baseline: whatif add of the change on the example world | {} |",
        ms(whatif)
    );
    println!(
        "ratio prove/whatif (the proof over every request beside today's decisions): {:.2} refuted, {:.2} proved",
        refuted.as_secs_f64() / whatif.as_secs_f64(),
        proved.as_secs_f64() / whatif.as_secs_f64()
    );
}
