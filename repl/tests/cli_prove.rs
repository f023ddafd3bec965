//! `lattice-policy prove` on the Lattice schema with cvc5 (installed by `.ci/run` with
//! `tools/cvc5/install`; without it these tests fail rather than skip): a known-true and a
//! known-false case for each question, never-errors for each bundled pack, the bundled
//! packs' shadowed policies exactly as `policies/shadowed.txt` accepts them, and every
//! refutation replayed through `lattice-policy authorize`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-prove-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DEVS_EXEC_ON_EDGE: &str = r#"@id("devs-exec-on-edge")
permit (
  principal in Lattice::Group::"devs",
  action == Lattice::Action::"exec",
  resource == Lattice::Cluster::"edge"
);
"#;

const DEVS_EXEC_IN_SHOP: &str = r#"@id("devs-exec-on-edge")
permit (
  principal in Lattice::Group::"devs",
  action == Lattice::Action::"exec",
  resource == Lattice::Cluster::"edge"
)
when { context.namespace == "shop" };
"#;

#[test]
fn no_new_permits_proves_a_narrowing_and_refutes_a_widening_with_a_request_authorize_confirms() {
    let d = dir("permits");
    let (wide, narrow) = (d.join("wide.cedar"), d.join("narrow.cedar"));
    std::fs::write(&wide, DEVS_EXEC_ON_EDGE).unwrap();
    std::fs::write(&narrow, DEVS_EXEC_IN_SHOP).unwrap();
    let (wide, narrow) = (wide.to_str().unwrap(), narrow.to_str().unwrap());

    let out = run(&["prove", "no-new-permits", wide, narrow, "--base", "bundled"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).starts_with("PROVED  no-new-permits"),
        "{}",
        text(&out)
    );

    let cex = d.join("cex");
    let out = run(&[
        "prove",
        "no-new-permits",
        narrow,
        wide,
        "--base",
        "bundled",
        "--action",
        "exec",
        "--counterexample",
        cex.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.starts_with("REFUTED  no-new-permits")
            && shown.contains("old: DENY   new: ALLOW")
            && shown.contains("Lattice::Action::\\\"exec\\\""),
        "{shown}"
    );
    // The request is one the old side refuses for its namespace and the new one allows.
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cex.join("request.json")).unwrap()).unwrap();
    assert_ne!(request["context"]["namespace"], "shop", "{request}");
    // `authorize` confirms it, on the files written.
    for (side, expected) in [("new", 0), ("old", 1)] {
        let replay = run(&[
            "authorize",
            "--policies",
            cex.join(format!("{side}.cedar")).to_str().unwrap(),
            "--entities",
            cex.join("entities.json").to_str().unwrap(),
            "--schema",
            cex.join("lattice.cedarschema").to_str().unwrap(),
            "--request-json",
            cex.join("request.json").to_str().unwrap(),
        ]);
        assert_eq!(
            replay.status.code(),
            Some(expected),
            "{side}: {}",
            text(&replay)
        );
    }
}

#[test]
fn equivalent_proves_the_packs_equal_to_themselves_and_refutes_an_added_permit() {
    let d = dir("equivalent");
    let extra = d.join("extra.cedar");
    std::fs::write(&extra, DEVS_EXEC_ON_EDGE).unwrap();
    let out = run(&["prove", "equivalent", "bundled", "policies"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&[
        "prove",
        "equivalent",
        "policies",
        extra.to_str().unwrap(),
        "--base",
        "bundled",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["result"], "refuted");
    assert_ne!(answer["decisions"]["a"], answer["decisions"]["b"]);
}

#[test]
fn never_errors_holds_for_every_bundled_pack_and_finds_an_overflow() {
    for pack in [
        "baseline",
        "cis-kubernetes",
        "nist-800-53",
        "pod-security",
        "soc2",
    ] {
        let out = run(&["prove", "never-errors", &format!("policies/{pack}")]);
        assert_eq!(out.status.code(), Some(0), "{pack}: {}", text(&out));
        assert!(
            text(&out).starts_with("PROVED  never-errors"),
            "{}",
            text(&out)
        );
    }
    let d = dir("errors");
    let overflow = d.join("overflow.cedar");
    std::fs::write(
        &overflow,
        r#"@id("double-the-replicas")
permit (principal, action == Lattice::Action::"Connect", resource)
when { principal.replicas * 2 > 4 };
"#,
    )
    .unwrap();
    let out = run(&["prove", "never-errors", overflow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("overflow/double-the-replicas errors")
            && text(&out).contains("overflow"),
        "{}",
        text(&out)
    );
}

#[test]
fn shadowed_in_the_bundled_packs_is_exactly_the_accepted_list_and_a_duplicate_is_found() {
    let out = run(&[
        "prove",
        "shadowed",
        "bundled",
        "--accepted",
        "policies/shadowed.txt",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = dir("shadowed");
    let twice = d.join("twice.cedar");
    std::fs::write(
        &twice,
        format!(
            "{DEVS_EXEC_ON_EDGE}\n{}",
            DEVS_EXEC_IN_SHOP.replace("devs-exec-on-edge", "devs-exec-in-shop")
        ),
    )
    .unwrap();
    let out = run(&[
        "prove",
        "shadowed",
        twice.to_str().unwrap(),
        "--base",
        "bundled",
        "--accepted",
        "policies/shadowed.txt",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["notAccepted"],
        serde_json::json!(["twice/devs-exec-in-shop"])
    );
}

#[test]
fn always_denied_proves_no_override_in_the_packs_and_refutes_it_with_the_example_permits() {
    let out = run(&["prove", "always-denied", "--action", "OverrideSecurity"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&[
        "prove",
        "always-denied",
        "--action",
        "OverrideSecurity",
        "bundled",
        "examples/world/policies.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("policies: ALLOW"), "{}", text(&out));
}

#[test]
fn a_missing_solver_and_bad_input_are_clear_errors() {
    let out = run(&[
        "prove",
        "never-errors",
        "bundled",
        "--solver",
        "/nonexistent/cvc5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("tools/cvc5/install"), "{}", text(&out));
    let d = dir("bad");
    let bad = d.join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action == Lattice::Action::\"nope\", resource);",
    )
    .unwrap();
    let out = run(&["prove", "never-errors", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nope"), "{}", text(&out));
    let out = run(&["prove", "always-denied", "--action", "Fly"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not in the schema"), "{}", text(&out));
}

#[test]
fn whatif_adds_a_proof_for_every_request_beside_the_recomputed_decisions() {
    let out = run(&[
        "whatif",
        "add",
        r#"permit (principal in Lattice::Group::"oncall", action == Lattice::Action::"exec", resource);"#,
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The example world raises no exec decision, so nothing it decides changes; the proof
    // still finds the request the change newly allows.
    assert_eq!(answer["newlyAllowed"], serde_json::json!([]));
    assert_eq!(answer["proof"]["result"], "refuted", "{answer}");
    assert_eq!(
        answer["proof"]["request"]["action"],
        "Lattice::Action::\"exec\""
    );
    let out = run(&[
        "whatif",
        "add",
        r#"forbid (principal, action == Lattice::Action::"exec", resource);"#,
    ]);
    assert!(
        text(&out).contains("proved: no new permits for any request"),
        "{}",
        text(&out)
    );
}
