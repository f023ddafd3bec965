//! Conformance with Kubernetes' own Pod Security Admission: every fixture PSA publishes
//! (Go module `k8s.io/pod-security-admission`, `test/testdata/<level>/v1.<n>/{pass,fail}`,
//! at the version `tools/testenv`'s Kubernetes pins in its go.sum) is decided by the Cedar
//! pack at that level and version. A pass fixture must be admitted and a fail fixture
//! refused, every one of them.
//!
//! The module comes from Go's module proxy through `go mod download` in `tools/testenv`
//! (checked against the committed go.sum), or from `LATTICE_PSA_FIXTURES` when set. Without
//! Go the test fails: it is never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lattice_engine::pod;
use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_gates::Requester;
use lattice_gates::pod_security::{
    Level, LevelVersion, Mode, NamespacePolicy, evaluate, parse_version, scope,
};

fn fixtures() -> PathBuf {
    if let Ok(dir) = std::env::var("LATTICE_PSA_FIXTURES") {
        return PathBuf::from(dir);
    }
    let testenv = lattice_testkit::workspace_root().join("tools/testenv");
    let out = Command::new("go")
        .args(["mod", "download", "-json", "k8s.io/pod-security-admission"])
        .current_dir(&testenv)
        .env("GOTOOLCHAIN", "auto")
        .output()
        .expect("`go` runs (Go fetches the PSA fixtures; set LATTICE_PSA_FIXTURES to use a copy)");
    assert!(
        out.status.success(),
        "go mod download k8s.io/pod-security-admission failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("go's JSON");
    let dir = info["Dir"].as_str().expect("a module directory");
    Path::new(dir).join("test/testdata")
}

fn snapshot() -> Snapshot {
    let world = World::new();
    let store = PolicyStore::bundled().expect("bundled packs");
    Snapshot::build(&world, &Projection::of(&world), &store).expect("snapshot")
}

fn read_pod(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs[0].value.clone()
}

#[test]
fn every_psa_fixture_agrees() {
    let root = fixtures();
    let snapshot = snapshot();
    let requester = Requester {
        username: "fixture".into(),
        groups: Vec::new(),
    };
    let mut count = 0usize;
    let mut per_level: BTreeMap<String, usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for level in ["baseline", "restricted"] {
        let mut versions: Vec<PathBuf> = std::fs::read_dir(root.join(level))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(level).display()))
            .map(|e| e.unwrap().path())
            .collect();
        versions.sort();
        for vdir in versions {
            let vname = vdir.file_name().unwrap().to_string_lossy().into_owned();
            let version = parse_version(&vname).unwrap_or_else(|| panic!("version {vname}"));
            let policy = NamespacePolicy {
                enforce: LevelVersion {
                    level: Level::parse(level).unwrap(),
                    version,
                },
                warn: LevelVersion {
                    level: Level::Privileged,
                    version,
                },
                audit: LevelVersion {
                    level: Level::Privileged,
                    version,
                },
                errors: Vec::new(),
            };
            for expect_pass in [true, false] {
                let dir = vdir.join(if expect_pass { "pass" } else { "fail" });
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
                files.sort();
                for file in files {
                    let object = read_pod(&file);
                    let pod = pod::project("Pod", &object, "fixtures")
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                        .expect("a Pod carries a pod");
                    let scoped = scope(&snapshot, &pod, &requester, None).unwrap();
                    let verdict =
                        evaluate(&scoped, &pod, &policy, &Mode::ALL, &requester, "CREATE")
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    count += 1;
                    *per_level.entry(level.to_owned()).or_default() += 1;
                    if verdict.allowed() != expect_pass {
                        let why: Vec<String> = verdict
                            .outcome(Mode::Enforce)
                            .map(|o| o.violations.iter().map(|v| v.describe()).collect())
                            .unwrap_or_default();
                        disagreements.push(format!(
                            "{}: PSA {}, Lattice {} {why:?}",
                            file.strip_prefix(&root).unwrap().display(),
                            if expect_pass { "admits" } else { "refuses" },
                            if verdict.allowed() {
                                "admits"
                            } else {
                                "refuses"
                            },
                        ));
                    }
                }
            }
        }
    }
    println!(
        "PSA fixtures: {count} decided ({per_level:?}), {} agree, {} disagree",
        count - disagreements.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {count} fixtures disagree with Pod Security Admission:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // The published set (v0.33: 3,821 fixtures); fewer means the fixtures were not all read.
    assert!(
        count >= 3800,
        "only {count} fixtures found under {}",
        root.display()
    );
}
