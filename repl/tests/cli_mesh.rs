//! `lattice-policy mesh` as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn mesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .arg("mesh")
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `mesh --world WORLD -o json`, which must succeed, as one JSON document.
fn mesh_json(world: &str) -> serde_json::Value {
    let o = mesh(&["--world", world, "-o", "json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_example_mesh_shows_its_one_sided_declaration() {
    let doc = mesh_json("examples/world");
    let edges = doc["edges"].as_array().unwrap();
    let one_sided: Vec<_> = edges.iter().filter(|e| e["oneSided"] == true).collect();
    assert_eq!(one_sided.len(), 1);
    assert_eq!(
        one_sided[0]["reason"],
        "payments/ledger does not list shop/api as a caller"
    );
    assert!(edges.iter().any(|e| e["caller"] == "shop/checkout"
        && e["callee"] == "payments/ledger"
        && e["allowed"] == true));
    assert!(doc["snapshot"].as_str().unwrap().starts_with("sha256:"));
    let table = String::from_utf8(mesh(&["payments"]).stdout).unwrap();
    assert!(table.contains("DENY    shop/api"), "{table}");
    assert!(
        !table.contains("shop/web "),
        "filtered to payments: {table}"
    );
}

#[test]
fn a_broken_world_is_reported_not_planned() {
    let dir = std::env::temp_dir().join(format!("lattice-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.yaml"), "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: x\nspec:\n  containerz: {}\n").unwrap();
    let o = mesh(&["--world", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // Nothing is planned; the diagnostics go to stderr.
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown field `containerz`"));
}

#[test]
fn the_mesh_shows_egress_and_each_namespaces_baseline() {
    let o = mesh(&["--world", "examples/world", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let egress = doc["egress"].as_array().unwrap();
    assert!(
        egress.iter().any(|e| e["workload"] == "payments/gateway"
            && e["host"] == "api.stripe.com"
            && e["ports"] == serde_json::json!([443])
            && e["allowed"] == true),
        "{egress:#?}"
    );
    let namespaces = doc["namespaces"].as_array().unwrap();
    let baseline = |ns: &str| {
        namespaces
            .iter()
            .find(|n| n["name"] == ns)
            .unwrap_or_else(|| panic!("{ns} missing"))["defaultDeny"]
            .clone()
    };
    assert_eq!(baseline("payments"), true);
    assert_eq!(baseline("sandbox"), false, "opted out by a permit");
    let table = String::from_utf8(mesh(&[]).stdout).unwrap();
    assert!(table.contains("EGRESS outside the mesh"), "{table}");
    assert!(table.contains("-> api.stripe.com:443/TCP"), "{table}");
    assert!(table.contains("OPTOUT  sandbox"), "{table}");
    assert!(table.contains("APPLIED payments"), "{table}");
}

#[test]
fn egress_no_permit_covers_is_denied_and_the_rest_still_allowed() {
    // The example world permits the gateway api.stripe.com:443 only; on 8443 no permit
    // covers it, and the other endpoints keep their verdicts.
    let dir = std::env::temp_dir().join(format!("lattice-cli-mesh-egress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    lattice_testkit::copy_dir(&workspace().join("examples/world"), &dir);
    let payments = dir.join("payments.yaml");
    let text = std::fs::read_to_string(&payments).unwrap();
    let moved = text.replace(
        "host: api.stripe.com\n        port: 443",
        "host: api.stripe.com\n        port: 8443",
    );
    assert_ne!(
        moved, text,
        "the gateway's stripe endpoint is where this test expects"
    );
    std::fs::write(&payments, moved).unwrap();
    let doc = mesh_json(dir.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    let egress = doc["egress"].as_array().unwrap();
    let verdict = |workload: &str| {
        egress
            .iter()
            .find(|e| e["workload"] == workload)
            .unwrap_or_else(|| panic!("{workload} has no egress: {egress:#?}"))
            .clone()
    };
    let gateway = verdict("payments/gateway");
    assert_eq!(gateway["ports"], serde_json::json!([8443]));
    assert_eq!(gateway["allowed"], false, "{egress:#?}");
    assert_eq!(verdict("ml/recsys-train")["allowed"], true, "{egress:#?}");
}

/// `mesh` keeps what it printed as `plan` does: the same inputs print the same bytes as
/// deciding afresh, per namespace filter and format, and an edited world is decided again.
#[test]
fn a_kept_mesh_is_the_fresh_mesh_for_each_filter_and_format() {
    let tmp = tempfile::tempdir().unwrap();
    let (world, cache) = (tmp.path().join("world"), tmp.path().join("cache"));
    lattice_testkit::copy_dir(
        &lattice_testkit::workspace_root().join("examples/world"),
        &world,
    );
    let run = |kept: bool, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lattice-policy"));
        c.arg("mesh").arg("--world").arg(&world).args(args);
        lattice_testkit::with_caches(&mut c, kept.then_some(cache.as_path()));
        let o = c.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let asks: [&[&str]; 3] = [&["-o", "json"], &[], &["payments"]];
    for args in asks {
        let fresh = run(false, args);
        assert_eq!(run(true, args), fresh, "{args:?}, kept");
        assert_eq!(run(true, args), fresh, "{args:?}, read back");
    }
    let kept = std::fs::read_dir(cache.join("outputs")).unwrap().count();
    assert_eq!(kept, asks.len(), "one entry per question");

    // The one-sided edge made bilateral: payments/ledger now lists shop/api as a caller.
    let before = run(true, &["-o", "json"]);
    assert!(before.contains("does not list shop/api as a caller"));
    let payments = world.join("payments.yaml");
    let text = std::fs::read_to_string(&payments).unwrap();
    let ledger_callers = "    checkout:\n      type: service\n      direction: inbound\n      namespace: shop\n    gateway:";
    assert!(text.contains(ledger_callers));
    let bilateral = ledger_callers.replace(
        "    gateway:",
        "    api:\n      type: service\n      direction: inbound\n      namespace: shop\n    gateway:",
    );
    std::fs::write(&payments, text.replacen(ledger_callers, &bilateral, 1)).unwrap();
    let after = run(true, &["-o", "json"]);
    assert_eq!(after, run(false, &["-o", "json"]));
    assert!(
        !after.contains("does not list shop/api as a caller"),
        "{after}"
    );
}
