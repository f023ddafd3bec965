//! Golden derivation cases under `conformance/render/`: each case directory holds one workload
//! (`workload.yaml`), optionally objects that join the example world for that case only
//! (`world.yaml`), and what `lattice-policy render` prints for it: `expected.yaml` (the
//! objects, exit 0) or `expected.denied` (the denial report, exit 1). Every rendered object
//! is also validated against the real schemas in `../shared/reference/`.
//!
//! Regenerate after an intended change with
//! `LATTICE_UPDATE_GENERATED=1 cargo test -p lattice-policy --test render_conformance`, and
//! review the diff.

#[path = "../../compiler/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use support::{Problems, Validators, reference_dir, root};

/// The snapshot digest changes with any policy or world edit; the goldens do not pin it.
/// The output with what changes whenever any policy does (the snapshot and the packs'
/// digests) masked: a golden case is about the objects and the decisions.
fn mask_digest(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("snapshot ") {
                "snapshot <digest>".to_owned()
            } else if l.starts_with("# snapshot ") {
                "# snapshot <digest>".to_owned()
            } else if let Some((head, _)) = l.split_once(" — sha256:")
                && (l.starts_with("packs (") || l.starts_with("# rendered by"))
            {
                format!("{head} — <digest>")
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

fn render(case: &Path, format: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
    cmd.current_dir(root())
        .args(["render", "-o", format, "-f"])
        .arg(case.join("workload.yaml"))
        .args(["--world", "examples/world"]);
    if case.join("world.yaml").exists() {
        cmd.arg("--world").arg(case.join("world.yaml"));
    }
    cmd.output().unwrap()
}

#[test]
fn every_render_case_matches_its_golden_output() {
    let update = std::env::var_os("LATTICE_UPDATE_GENERATED").is_some();
    let validators = reference_dir().map(|d| Validators::load(&d));
    let dir = root().join("conformance/render");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} render cases", cases.len());
    let mut failures = Vec::new();
    let (mut rendered, mut denied) = (0, 0);
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = render(case, "human");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (golden, other) = match out.status.code() {
            Some(0) => ("expected.yaml", "expected.denied"),
            Some(1) => ("expected.denied", "expected.yaml"),
            code => {
                failures.push(format!("{name}: exit {code:?}: {stderr}"));
                continue;
            }
        };
        let mut actual = mask_digest(&stdout);
        // Warnings (audit findings) are part of what the user sees: kept as YAML comments.
        for line in stderr.lines() {
            actual.push_str(&format!("# stderr: {line}\n"));
        }
        if update {
            std::fs::write(case.join(golden), &actual).unwrap();
            let _ = std::fs::remove_file(case.join(other));
        }
        match std::fs::read_to_string(case.join(golden)) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: output differs from {golden}:\n{}",
                first_difference(&expected, &actual)
            )),
            Err(_) => failures.push(format!(
                "{name}: printed what belongs in {golden}, which does not exist{}",
                if case.join(other).exists() {
                    format!(" (the case expects {other})")
                } else {
                    String::new()
                }
            )),
        }
        if golden == "expected.denied" {
            denied += 1;
            continue;
        }
        rendered += 1;
        // The JSON form carries the same objects; each validates against the real schemas.
        let json = render(case, "json");
        let objects: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
        assert!(!objects.is_empty(), "{name}: no objects");
        if let Some(v) = &validators {
            for o in &objects {
                let problems = v.problems(o);
                if !problems.is_empty() {
                    failures.push(format!(
                        "{name}: {} {} is invalid: {problems:#?}",
                        o["kind"], o["metadata"]["name"]
                    ));
                }
            }
        }
    }
    assert!(
        rendered >= 10 && denied >= 10,
        "{rendered} rendered, {denied} denied"
    );
    assert!(
        failures.is_empty(),
        "{} of {} render cases failed (regenerate with LATTICE_UPDATE_GENERATED=1 if intended):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The first differing line, with a little context.
fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let i = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = i.saturating_sub(3);
    let show = |v: &[&str]| v[from.min(v.len())..(i + 3).min(v.len())].join("\n    ");
    format!(
        "  at line {}\n  expected:\n    {}\n  actual:\n    {}",
        i + 1,
        show(&e),
        show(&a)
    )
}
