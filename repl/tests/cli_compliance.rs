//! `lattice-policy compliance scan` and `compliance verify` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(lattice_testkit::workspace_root)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "lattice-compliance-cli-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_scan_of_a_compliant_world_exits_zero_and_a_failing_one_exits_one() {
    let o = run(&[
        "compliance",
        "scan",
        "--world",
        "conformance/compliance/compliant",
        // Its images are signed in the example world's OCI layout.
        "--images",
        "examples/world/images",
        "--at",
        "2026-11-21T12:00:00Z",
        "-o",
        "junit",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let junit = String::from_utf8_lossy(&o.stdout);
    assert!(junit.contains("failures=\"0\""));
    // The report names the packs that decided it.
    assert!(
        junit.contains(&format!(
            "<property name=\"packs\" value=\"baseline@{}, cis-kubernetes@",
            lattice_testkit::pack_version("baseline")
        )),
        "{junit}"
    );

    let o = run(&[
        "compliance",
        "scan",
        "--world",
        "conformance/compliance/violations/world.yaml",
        "--framework",
        "cis-kubernetes",
        "-o",
        "csv",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let csv = String::from_utf8_lossy(&o.stdout);
    assert!(csv.starts_with("framework,check,"));
    // Only the framework asked for.
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.starts_with("cis-kubernetes,"))
    );
    assert!(csv.contains("cis-kubernetes/privileged-approved"));
}

#[test]
fn a_profile_sets_the_scope_and_runs_land_in_a_verifiable_evidence_log() {
    let d = dir("evidence");
    let evidence = d.join("evidence");
    let out = d.join("report.oscal.json");
    let key = d.join("evidence.key");
    let k = run(&["compliance", "keygen", key.to_str().unwrap()]);
    assert_eq!(k.status.code(), Some(0), "{}", text(&k));
    let public = d.join("evidence.key.pub");
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is readable by others");
    }
    // Evidence is dated by the clock: a scan at another time does not go into the log.
    let o = run(&[
        "compliance",
        "scan",
        "--evidence-dir",
        evidence.to_str().unwrap(),
        "--at",
        "2026-11-21T12:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!evidence.join("chain.jsonl").exists());
    let scan = |signing: bool| {
        let mut args = vec![
            "compliance",
            "scan",
            "--profile",
            "examples/world/infrastructure.yaml",
            "-o",
            "oscal",
            "--out",
            out.to_str().unwrap(),
            "--evidence-dir",
            evidence.to_str().unwrap(),
        ];
        if signing {
            args.extend(["--signing-key", key.to_str().unwrap()]);
        }
        run(&args)
    };
    let o = scan(true);
    // The example world has findings (a permissive mesh port, an unbounded audit trial…).
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("evidence: record 1"), "{stderr}");
    let oscal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let props = oscal["assessment-results"]["metadata"]["props"]
        .as_array()
        .unwrap();
    assert!(props.iter().any(|p| p["value"] == "production-baseline"));
    // The profile's namespaces: `sandbox` is not in it, so no subject from it.
    assert!(
        !std::fs::read_to_string(&out)
            .unwrap()
            .contains("Namespace::\\\"sandbox\\\"")
    );
    // The profile's formats are kept with the run (oscal and its plan, markdown, sarif, and
    // the JSON).
    for f in [
        "report.json",
        "report.oscal.json",
        "report.oscal-ap.json",
        "report.md",
        "report.sarif",
    ] {
        assert!(evidence.join("runs/000001").join(f).is_file(), "{f}");
    }
    assert!(stderr.contains("signed by key"), "{stderr}");
    assert_eq!(scan(true).status.code(), Some(1));

    let v = run(&["compliance", "verify", evidence.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(said.starts_with("intact: 2 record(s); head "), "{said}");
    assert!(said.contains("not checked: pass --trusted-key"), "{said}");
    let head = said.split_whitespace().nth(4).unwrap().to_owned();
    let verify_signed = || {
        run(&[
            "compliance",
            "verify",
            evidence.to_str().unwrap(),
            "--trusted-key",
            public.to_str().unwrap(),
            "--head",
            &head,
        ])
    };
    let v = verify_signed();
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(
        said.contains("every record signed by a trusted key"),
        "{said}"
    );
    assert!(said.contains("head as expected"), "{said}");

    // A third run without the key: the log still links, but a verifier who trusts the key
    // names the unsigned record, and the head it was given no longer matches.
    assert_eq!(scan(false).status.code(), Some(1));
    let v = verify_signed();
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(said.contains("record 3 is not signed"), "{said}");
    assert!(
        said.contains("records were deleted from the end or replaced"),
        "{said}"
    );

    let md = evidence.join("runs/000001/report.md");
    std::fs::write(&md, "nothing failed\n").unwrap();
    let v = run(&["compliance", "verify", evidence.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(
        said.contains("record 1: `report.md` (runs/000001/report.md) was changed"),
        "{said}"
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_exit_two() {
    let o = run(&["compliance", "scan", "--framework", "iso-27001"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("iso-27001"));

    let o = run(&["compliance", "scan", "--at", "yesterday"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an RFC 3339 time"));

    let d = dir("bad-profile");
    let profile = d.join("profile.yaml");
    std::fs::write(
        &profile,
        "apiVersion: lattice.dev/v1alpha1\nkind: LatticeComplianceProfile\nmetadata:\n  name: p\nspec:\n  frameworks: [soc2]\n  scanInterval: 24h\n  formats: [pdf]\n  evidenceSink: {}\n",
    )
    .unwrap();
    let o = run(&["compliance", "scan", "--profile", profile.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pdf"),
        "{}",
        text(&o)
    );

    let o = run(&[
        "compliance",
        "verify",
        d.join("no-such-dir").to_str().unwrap(),
    ]);
    // An absent log verifies nothing: an error, never "intact" (deleting the log must not
    // pass).
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no evidence log"), "{}", text(&o));
}

fn oscal_validator() -> Option<jsonschema::Validator> {
    let dir = lattice_testkit::reference_dir()?;
    let text = std::fs::read_to_string(dir.join("oscal/oscal_complete_schema-1-1-3.json"))
        .expect("the OSCAL 1.1.3 schema");
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some(jsonschema::validator_for(&schema).expect("a valid JSON Schema"))
}

/// `-o oscal-ap` writes the plan the results import: written beside them under the name
/// `import-ap` gives, its SHA-256 is the one the results carry; `--assessor` names the
/// assessor in both.
#[test]
fn the_plan_and_results_link_up_on_disk_and_name_the_assessor() {
    let d = dir("oscal-ap");
    let scan = |format: &str, file: &str| {
        let out = d.join(file);
        let o = run(&[
            "compliance",
            "scan",
            "--world",
            "examples/world",
            "-o",
            format,
            "--out",
            out.to_str().unwrap(),
            "--at",
            "2026-11-21T12:00:00Z",
            "--assessor",
            "Example Audit LLP",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        std::fs::read_to_string(out).unwrap()
    };
    let ar: serde_json::Value = serde_json::from_str(&scan("oscal", "report.oscal.json")).unwrap();
    let ap_text = scan("oscal-ap", "report.oscal-ap.json");
    let ap: serde_json::Value = serde_json::from_str(&ap_text).unwrap();
    let href = ar["assessment-results"]["import-ap"]["href"]
        .as_str()
        .unwrap();
    let beside = std::fs::read_to_string(d.join(href)).expect("the plan is where import-ap says");
    assert_eq!(beside, ap_text);
    let hash = ar["assessment-results"]["back-matter"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rlinks"][0]["href"] == href)
        .unwrap()["rlinks"][0]["hashes"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    // coreutils' sha256sum as the independent check.
    let Ok(sum) = Command::new("sha256sum").arg(d.join(href)).output() else {
        return;
    };
    let digest = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(hash, digest);
    for doc in [&ar["assessment-results"], &ap["assessment-plan"]] {
        assert!(
            doc["metadata"]["parties"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "Example Audit LLP")
        );
    }
    if let Some(validator) = oscal_validator() {
        assert!(validator.is_valid(&ar));
        assert!(validator.is_valid(&ap));
    }
}

/// `compliance catalog` prints the OSCAL catalog of SOC 2 or CIS Kubernetes; NIST's is
/// NIST's own, so it is not a choice.
#[test]
fn catalogs_print_for_the_frameworks_nist_does_not_publish() {
    for (framework, control) in [("soc2", "cc6.1"), ("cis-kubernetes", "cis-5.2.9")] {
        let o = run(&[
            "compliance",
            "catalog",
            "--framework",
            framework,
            "--at",
            "2026-11-21T12:00:00Z",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let catalog: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("\"id\": \"{control}\"")),
            "{framework}"
        );
        assert_eq!(
            catalog["catalog"]["metadata"]["last-modified"],
            "2026-11-21T12:00:00Z"
        );
        if let Some(validator) = oscal_validator() {
            assert!(validator.is_valid(&catalog), "{framework}");
        }
    }
    let o = run(&["compliance", "catalog", "--framework", "nist-800-53"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NIST publishes SP 800-53 Rev. 5 in OSCAL"),
        "{}",
        text(&o)
    );
    assert!(o.stdout.is_empty());
    let o = run(&[
        "compliance",
        "catalog",
        "--framework",
        "soc2",
        "--at",
        "yesterday",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an RFC 3339 time"));
}

#[test]
fn a_baseline_scan_lists_the_whole_baseline_and_only_with_nist() {
    let o = run(&[
        "compliance",
        "scan",
        "--world",
        "conformance/compliance/compliant",
        // Its images are signed in the example world's OCI layout.
        "--images",
        "examples/world/images",
        "--framework",
        "nist-800-53",
        "--baseline",
        "moderate",
        "--at",
        "2026-11-21T12:00:00Z",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nist = &report["frameworks"][0];
    assert_eq!(nist["baseline"]["baseline"], "Moderate");
    assert_eq!(nist["baseline"]["controls"], 287);
    // Every Moderate control once, plus the pack's one control outside it (SI-7(15)).
    assert_eq!(nist["controls"].as_array().unwrap().len(), 288);

    // A profile's `baseline` does the same.
    let d = dir("baseline-profile");
    let profile = d.join("profile.yaml");
    std::fs::write(
        &profile,
        "apiVersion: lattice.dev/v1alpha1\nkind: LatticeComplianceProfile\nmetadata:\n  name: p\nspec:\n  frameworks: [nist-800-53]\n  scanInterval: 24h\n  baseline: high\n  evidenceSink:\n    configMap:\n      name: evidence\n",
    )
    .unwrap();
    let o = run(&[
        "compliance",
        "scan",
        "--world",
        "conformance/compliance/compliant",
        // Its images are signed in the example world's OCI layout.
        "--images",
        "examples/world/images",
        "--profile",
        profile.to_str().unwrap(),
        "--at",
        "2026-11-21T12:00:00Z",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["frameworks"][0]["baseline"]["baseline"], "High");
    assert_eq!(report["frameworks"][0]["baseline"]["controls"], 370);

    // A baseline is NIST's: asked for without NIST in scope, it is bad input.
    let o = run(&[
        "compliance",
        "scan",
        "--framework",
        "soc2",
        "--baseline",
        "low",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nist-800-53"), "{}", text(&o));
}

/// Plain Kubernetes manifests, as `helm template` writes them, are scanned too: the CIS 5.1
/// check fails on cluster-admin granted to `system:anonymous`, at the binding's file and line,
/// in every report format that has a place for it, and a document the API server could not
/// decode is refused at its line.
#[test]
fn plain_manifests_are_scanned_and_failures_point_at_their_file_and_line() {
    let d = dir("plain");
    let rbac = d.join("rbac.yaml");
    std::fs::write(
        &rbac,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: left-alone\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: anonymous-admin\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: User\n    name: system:anonymous\n    apiGroup: rbac.authorization.k8s.io\n",
    )
    .unwrap();
    let world = d.to_str().unwrap();
    let o = run(&[
        "compliance",
        "scan",
        "--world",
        world,
        "--framework",
        "cis-kubernetes",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let check = report["frameworks"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "cis-kubernetes/cluster-admin-bindings")
        .expect("the check")
        .clone();
    assert_eq!(check["status"], "fail");
    assert_eq!(check["controls"], serde_json::json!(["5.1.1"]));
    let failure = &check["failures"][0];
    assert_eq!(failure["subject"]["kind"], "RoleBinding");
    assert_eq!(
        failure["subject"]["id"],
        "ClusterRoleBinding/anonymous-admin"
    );
    assert_eq!(failure["source"], format!("{}:6", rbac.display()));

    let md = run(&[
        "compliance",
        "scan",
        "--world",
        world,
        "--framework",
        "cis-kubernetes",
    ]);
    assert!(
        text(&md).contains(&format!(
            "(declared by ClusterRoleBinding anonymous-admin at {}:6)",
            rbac.display()
        )),
        "{}",
        text(&md)
    );
    let sarif = run(&[
        "compliance",
        "scan",
        "--world",
        world,
        "--framework",
        "cis-kubernetes",
        "-o",
        "sarif",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    let located = s["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ruleId"] == "cis-kubernetes/cluster-admin-bindings")
        .map(|r| r["locations"][0]["physicalLocation"]["region"]["startLine"].clone())
        .collect::<Vec<_>>();
    assert_eq!(located, [serde_json::json!(6)]);

    std::fs::write(
        d.join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostNetwork: \"yes\"\n  containers: []\n",
    )
    .unwrap();
    let bad = run(&["compliance", "scan", "--world", world]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("cannot be read as Kubernetes reads it"),
        "{}",
        text(&bad)
    );
    let _ = std::fs::remove_dir_all(&d);
}
