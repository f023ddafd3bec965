//! `lattice-policy validate` as a user runs it: exit codes, located diagnostics, JSON.

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .arg("validate")
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lattice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn the_examples_are_clean() {
    let o = validate(&["examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 errors"), "{}", stdout(&o));
}

#[test]
fn a_misspelled_field_points_at_its_line_with_a_suggestion() {
    let f = temp_file(
        "typo.yaml",
        b"apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: web\nspec:\n  containers:\n    main:\n      image: nginx\n  replicass: 2\n",
    );
    let o = validate(&[f.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("unknown field `replicass`"), "{out}");
    assert!(out.contains("typo.yaml:9:3"), "{out}");
    assert!(out.contains("did you mean `replicas`?"), "{out}");
}

#[test]
fn a_wrong_type_and_an_undeclared_placeholder_are_located() {
    let f = temp_file(
        "kinds.yaml",
        b"apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: web\nspec:\n  containers:\n    main:\n      image: nginx\n      variables:\n        URL: http://${resources.backend.host}/\n---\napiVersion: lattice.dev/v1alpha1\nkind: LatticeJob\nmetadata:\n  name: batch\nspec:\n  minAvailable: lots\n  tasks: {}\n",
    );
    let o = validate(&[f.to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings = json["findings"].as_array().unwrap();
    let at = |code: &str| {
        findings
            .iter()
            .find(|f| f["code"] == code)
            .map(|f| (f["line"].as_u64().unwrap(), f["column"].as_u64().unwrap()))
    };
    assert_eq!(
        at("lattice::placeholder::unresolved"),
        Some((10, 21)),
        "{json:#}"
    );
    assert_eq!(at("lattice::schema::type"), Some((17, 17)), "{json:#}");
    assert_eq!(json["errors"], 2);
}

#[test]
fn random_bytes_give_a_clean_error_not_a_crash() {
    let mut bytes: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    bytes[0] = 0xff;
    let f = temp_file("random.bin", &bytes);
    let o = validate(&[f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("not UTF-8"), "{}", stdout(&o));
    assert!(o.stderr.is_empty() || !String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

#[test]
fn a_missing_path_is_a_usage_error() {
    let o = validate(&["does/not/exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read does/not/exist.yaml"));
    let o = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "no paths is a usage error");
}

#[test]
fn cedar_files_are_checked_against_the_schema() {
    let f = temp_file("bad.cedar", b"@id(\"x\")\npermit(principal, action == Lattice::Action::\"DeployImage\", resource)\nwhen { resource.regsitry == \"ghcr.io\" };\n");
    let o = validate(&[f.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("regsitry"), "{out}");
    assert!(out.contains("bad.cedar:3:8"), "{out}");
    let o = validate(&["policies/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(["validate", "-o", "json", "examples/"])
        .current_dir(workspace())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, as with `| head -c0`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
