//! `lattice-policy plan`, the main job, as a user runs it on the example world.

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .arg("plan")
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn the_example_world_is_shown_whole_and_its_denial_exits_one() {
    let o = plan(&[]);
    // One edge of the example world is one-sided, so something is denied.
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    for section in [
        "WORKLOADS (11 of 11 derive)",
        "NAMESPACES",
        "MESH",
        "COMPLIANCE",
        "packs (bundled): baseline@",
        "snapshot sha256:",
    ] {
        assert!(text.contains(section), "no {section:?} in\n{text}");
    }
    assert!(
        text.contains("ALLOW payments/gateway (LatticeService):"),
        "{text}"
    );
    // A package is derived as any workload: its Flux release and chart source.
    assert!(
        text.contains("ALLOW platform/grafana (LatticePackage): 1 ExternalSecret, 1 HelmRelease, 1 HelmRepository"),
        "{text}"
    );
    assert!(text.contains("OPTOUT  sandbox"), "{text}");
    assert!(
        text.contains(
            "DENY  shop/api -> payments/ledger: payments/ledger does not list shop/api as a caller"
        ),
        "{text}"
    );

    let o = plan(&["-o", "json", "--detail"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let workloads = doc["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 11);
    let gateway = workloads
        .iter()
        .find(|w| w["workload"] == "payments/gateway")
        .unwrap();
    assert_eq!(gateway["objects"]["Deployment"], 1);
    assert!(
        gateway["derived"].as_array().is_some_and(|d| !d.is_empty()),
        "--detail"
    );
    assert_eq!(doc["compliance"].as_array().unwrap().len(), 4);
    assert_eq!(doc["packs"]["source"], "bundled");
    assert!(
        doc["packs"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        doc["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "sandbox" && n["defaultDeny"] == false)
    );
}

#[test]
fn a_denied_workload_is_shown_with_its_policy_and_advice() {
    let dir = std::env::temp_dir().join(format!("lattice-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rogue.yaml"),
        "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: rogue\n  namespace: team\nspec:\n  containers:\n    main:\n      image: evil.example.com/miner:latest\n",
    )
    .unwrap();
    let o = plan(&[dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("DENY  team/rogue (LatticeService): nothing derived"),
        "{text}"
    );
    assert!(text.contains("DeployImage"), "{text}");
    // What the facts say first (no registry vouches for it), then the policy's advice.
    assert!(
        text.contains("advice: no TrustPolicy registry covers this image. Sign the image"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `plan` hands the gates it decided to its compliance scan instead of deciding them again;
/// the summary must be exactly what `compliance scan` (which decides them itself) reports,
/// on a world where workloads are denied.
#[test]
fn the_compliance_summary_is_the_scan_s_own() {
    let world = "conformance/compliance/violations/world.yaml";
    let o = plan(&[world, "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let denied = doc["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["allowed"] == false)
        .count();
    assert!(denied > 0, "the world denies some workloads");
    let scan = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(["compliance", "scan", "--world", world, "-o", "json"])
        .current_dir(workspace())
        .output()
        .unwrap();
    let scan: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    let frameworks = scan["frameworks"].as_array().unwrap();
    let summary = doc["compliance"].as_array().unwrap();
    assert_eq!(summary.len(), frameworks.len());
    for (p, s) in summary.iter().zip(frameworks) {
        assert_eq!(p["framework"], s["id"]);
        assert_eq!(p["checks"], s["check_tally"], "{}", s["id"]);
        assert_eq!(p["controls"], s["control_tally"], "{}", s["id"]);
    }
}

/// A plan is kept under a key of everything it read: a run on the same inputs prints the
/// bytes and exits with the status of deciding afresh, a damaged entry is not trusted, and
/// a change to the world or to any file of the rule packs is decided again.
#[test]
fn a_kept_plan_is_the_fresh_plan_and_any_change_to_its_inputs_is_decided_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (world, packs, cache) = (
        tmp.path().join("world"),
        tmp.path().join("policies"),
        tmp.path().join("cache"),
    );
    lattice_testkit::copy_dir(&workspace().join("examples/world"), &world);
    lattice_testkit::copy_dir(&workspace().join("policies"), &packs);
    let run = |kept: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
        c.arg("plan")
            .arg(&world)
            .arg("--policies")
            .arg(&packs)
            .args(["-o", "json"])
            .env("NO_COLOR", "1");
        lattice_testkit::with_caches(&mut c, kept.then_some(cache.as_path()));
        let o = c.output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), String::from_utf8(o.stdout).unwrap())
    };
    let entries = || -> Vec<PathBuf> {
        std::fs::read_dir(cache.join("outputs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let fresh = run(false);
    assert_eq!(fresh.0, Some(1), "the example world's one-sided edge");
    assert!(entries().is_empty(), "nothing kept without the cache");
    assert_eq!(run(true), fresh, "decided and kept");
    let [entry] = entries().try_into().expect("one entry");
    let kept = std::fs::read(&entry).unwrap();
    assert_eq!(run(true), fresh, "read back");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        kept,
        "read, not written again"
    );

    // One bit of the kept document changed: the entry fails its digest, is dropped, and the
    // plan is decided again and kept whole.
    let mut damaged = kept.clone();
    let last = damaged.len() - 10;
    damaged[last] ^= 1;
    std::fs::write(&entry, &damaged).unwrap();
    assert_eq!(run(true), fresh, "a damaged entry is not trusted");
    assert_eq!(std::fs::read(&entry).unwrap(), kept, "and is replaced");

    // A pack's metadata alone, not its policies, is another key: its version is printed.
    let pack = packs.join("baseline/pack.yaml");
    let text = std::fs::read_to_string(&pack).unwrap();
    let version = lattice_testkit::pack_version("baseline");
    std::fs::write(
        &pack,
        text.replace(&format!("version: {version}"), "version: 9.9.9"),
    )
    .unwrap();
    let bumped = run(true);
    assert!(bumped.1.contains("baseline@9.9.9"), "{}", bumped.1);
    assert_eq!(bumped, run(false));

    // A policy forbidding every connection is decided: no edge is allowed any more.
    std::fs::write(
        packs.join("baseline/no-traffic.cedar"),
        "@id(\"no-traffic\")\nforbid (principal, action == Lattice::Action::\"Connect\", resource);\n",
    )
    .unwrap();
    let allowed = |doc: &str| {
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        doc["mesh"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["allowed"] == true)
            .count()
    };
    assert!(allowed(&bumped.1) > 0);
    let forbidden = run(true);
    assert_eq!(allowed(&forbidden.1), 0, "{}", forbidden.1);
    assert_eq!(forbidden, run(false));

    // And a change to the world: a workload's manifest removed.
    assert!(forbidden.1.contains("\"sandbox/scratch\""));
    std::fs::remove_file(world.join("sandbox.yaml")).unwrap();
    let smaller = run(true);
    assert!(!smaller.1.contains("\"sandbox/scratch\""), "{}", smaller.1);
    assert_eq!(smaller, run(false));
    assert_eq!(entries().len(), 4, "one entry per distinct set of inputs");
}
