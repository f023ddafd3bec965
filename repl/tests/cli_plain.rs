//! Plain Cedar through `lattice-policy authorize` and `fmt`, outside the Lattice model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-plain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(args)
        .output()
        .unwrap()
}

const SCHEMA: &str = r#"
entity User in [Group] = { "level": Long };
entity Group;
entity Doc = { "owner": User };
action read appliesTo { principal: [User], resource: [Doc], context: { "mfa": Bool } };
"#;

const POLICIES: &str = r#"
@id("owners-read")
permit (principal, action == Action::"read", resource) when { resource.owner == principal };

permit (principal in Group::"auditors", action == Action::"read", resource);

forbid (principal, action == Action::"read", resource) unless { context.mfa };

// Errors on users without the optional attribute chain: 1 / 0 style overflow.
forbid (principal, action, resource) when { principal.level * 9223372036854775807 > 0 };
"#;

fn world(d: &Path) {
    std::fs::write(d.join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(d.join("policies.cedar"), POLICIES).unwrap();
    std::fs::write(
        d.join("entities.json"),
        r#"[
          {"uid": {"type": "User", "id": "alice"}, "attrs": {"level": 0}, "parents": []},
          {"uid": {"type": "User", "id": "bob"}, "attrs": {"level": 2}, "parents": [{"type": "Group", "id": "auditors"}]},
          {"uid": {"type": "Group", "id": "auditors"}, "attrs": {}, "parents": []},
          {"uid": {"type": "Doc", "id": "plan"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "alice"}}}, "parents": []}
        ]"#,
    )
    .unwrap();
}

fn ask(d: &Path, principal: &str, mfa: bool) -> Output {
    let req = d.join(format!("req-{principal}-{mfa}.json"));
    std::fs::write(
        &req,
        serde_json::json!({"principal": format!("User::\"{principal}\""), "action": "Action::\"read\"", "resource": "Doc::\"plan\"", "context": {"mfa": mfa}}).to_string(),
    )
    .unwrap();
    run(&[
        "authorize",
        "--policies",
        d.join("policies.cedar").to_str().unwrap(),
        "--entities",
        d.join("entities.json").to_str().unwrap(),
        "--schema",
        d.join("schema.cedarschema").to_str().unwrap(),
        "--request-json",
        req.to_str().unwrap(),
        "-o",
        "json",
    ])
}

#[test]
fn authorize_gives_cedars_decision_reasons_and_errors() {
    let d = dir("authz");
    world(&d);
    // The owner, with MFA: permitted by the named policy.
    let o = ask(&d, "alice", true);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["reason"], serde_json::json!(["owners-read"]));
    assert_eq!(v["errors"], serde_json::json!([]));
    // Without MFA: the unnamed forbid, third in source order, is policy2.
    let o = ask(&d, "alice", false);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reason"], serde_json::json!(["policy2"]));
    // bob's level overflows in policy3: an error, and the auditors' permit still applies.
    let o = ask(&d, "bob", true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["reason"], serde_json::json!(["policy1"]));
    assert_eq!(v["errors"], serde_json::json!(["policy3"]));
}

#[test]
fn authorize_rejects_bad_input_with_exit_2() {
    let d = dir("bad");
    world(&d);
    std::fs::write(d.join("broken.cedar"), "permit(principal, action, resource").unwrap();
    std::fs::write(d.join("req.json"), r#"{"principal": "User::\"alice\"", "action": "Action::\"read\"", "resource": "Doc::\"plan\"", "context": {"mfa": "yes"}}"#).unwrap();
    let base = |policies: &str, request: &str| {
        run(&[
            "authorize",
            "--policies",
            d.join(policies).to_str().unwrap(),
            "--entities",
            d.join("entities.json").to_str().unwrap(),
            "--schema",
            d.join("schema.cedarschema").to_str().unwrap(),
            "--request-json",
            d.join(request).to_str().unwrap(),
        ])
    };
    let o = base("broken.cedar", "req.json");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("policies:"));
    // A context that violates the schema.
    let o = base("policies.cedar", "req.json");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("context"));
}

#[test]
fn fmt_formats_and_check_reports_without_writing() {
    let d = dir("fmt");
    let messy = "permit(principal,action==Action::\"read\",resource)when{context.mfa};\n";
    std::fs::write(d.join("a.cedar"), messy).unwrap();
    let o = run(&["fmt", "--check", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("a.cedar is not formatted"));
    assert_eq!(std::fs::read_to_string(d.join("a.cedar")).unwrap(), messy);
    assert_eq!(run(&["fmt", d.to_str().unwrap()]).status.code(), Some(0));
    let formatted = std::fs::read_to_string(d.join("a.cedar")).unwrap();
    assert_ne!(formatted, messy);
    assert_eq!(
        run(&["fmt", "--check", d.to_str().unwrap()]).status.code(),
        Some(0)
    );
    // Unparseable input is an error and is left alone.
    std::fs::write(d.join("b.cedar"), "permit(").unwrap();
    assert_eq!(run(&["fmt", d.to_str().unwrap()]).status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(d.join("b.cedar")).unwrap(),
        "permit("
    );
}

#[test]
fn policy_test_files_pass_fail_readably_and_write_junit() {
    let root = lattice_testkit::workspace_root();
    let d = dir("test");
    let junit = d.join("junit.xml");
    let o = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args([
            "test",
            "conformance/decisions",
            "--junit",
            junit.to_str().unwrap(),
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 29);
    assert!(!xml.contains("<failure"));
    // A wrong expectation fails with what differed; paths resolve from the file's directory.
    std::fs::write(
        d.join("wrong.yaml"),
        format!(
            "world: [{}]\npolicies: {}\ncases:\n  - name: the one-sided edge\n    principal: Service::shop/api\n    action: Connect\n    resource: Service::payments/ledger\n    expect: allow\n  - name: checkout & ledger\n    principal: Service::shop/checkout\n    action: Connect\n    resource: Service::payments/ledger\n    expect: allow\n    determining: [baseline/something-else]\n",
            root.join("examples/world").display(),
            root.join("policies").display()
        ),
    )
    .unwrap();
    let o = run(&[
        "test",
        d.join("wrong.yaml").to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("decision:    expected allow, got deny"),
        "{out}"
    );
    assert!(
        out.contains(
            "determining: expected [baseline/something-else], got [baseline/bilateral-connect]"
        ),
        "{out}"
    );
    assert!(out.contains("0 passed, 2 failed"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<failure").count(), 2);
    assert!(xml.contains("checkout &amp; ledger"));
    // A file that cannot run is an error, not a pass.
    std::fs::write(d.join("broken.yaml"), "cases: 3\n").unwrap();
    let o = run(&["test", d.join("broken.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ERROR"));
}
