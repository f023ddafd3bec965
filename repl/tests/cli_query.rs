//! The one-shot query commands as scripts use them: JSON and exit codes 0 allow, 1 deny,
//! 2 error.

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn can_answers_with_the_determining_policies_and_exit_codes() {
    let allow = run(&[
        "can",
        "Service::shop/checkout",
        "Connect",
        "Service::payments/ledger",
        "-o",
        "json",
    ]);
    assert_eq!(allow.status.code(), Some(0));
    let d = json(&allow);
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["determining"][0], "baseline/bilateral-connect");
    // The full Cedar syntax names the same entities.
    let full = run(&[
        "can",
        r#"Lattice::Service::"shop/checkout""#,
        r#"Lattice::Action::"Connect""#,
        r#"Lattice::Service::"payments/ledger""#,
        "-o",
        "json",
    ]);
    assert_eq!(json(&full)["decision"], "allow");
    let deny = run(&[
        "can",
        "Service::shop/api",
        "Connect",
        "Service::payments/ledger",
    ]);
    assert_eq!(deny.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&deny.stdout).starts_with("DENY"));
    // A forbid names itself; a user-given context is used.
    let forbid = run(&[
        "can",
        "Service::sandbox/scratch",
        "Connect",
        "Service::shop/api",
        "{\"ports\": [8080]}",
        "-o",
        "json",
    ]);
    assert_eq!(forbid.status.code(), Some(1));
    assert_eq!(
        json(&forbid)["determining"][0],
        "platform/environment-isolation/no-dev-to-shop"
    );
}

#[test]
fn bad_queries_are_errors_with_exit_2() {
    for args in [
        &["can", "shop/api", "Connect", "Service::payments/ledger"][..],
        &[
            "can",
            "Service::shop/api",
            "Fly",
            "Service::payments/ledger",
        ],
        &[
            "can",
            "Service::shop/api",
            "Connect",
            "Service::payments/ledger",
            "{not json",
        ],
        &["gates", "nowhere/nothing"],
        &["whatif", "remove", "no/such/policy"],
    ] {
        let o = run(args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("error:"),
            "{args:?}"
        );
    }
}

#[test]
fn why_says_which_side_of_a_one_sided_edge_is_missing() {
    let o = run(&[
        "why",
        "Service::shop/api",
        "Connect",
        "Service::payments/ledger",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let d = json(&o);
    assert_eq!(
        d["why"]["mesh"],
        "payments/ledger does not list shop/api as a caller"
    );
    assert_eq!(
        d["why"]["nearMisses"][0]["id"],
        "baseline/bilateral-connect"
    );
}

#[test]
fn gates_and_whatif_report_what_a_workload_and_a_change_do() {
    let g = run(&["gates", "payments/gateway", "-o", "json"]);
    assert_eq!(g.status.code(), Some(0));
    let d = json(&g);
    assert_eq!(d["allowed"], true);
    assert!(
        d["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["action"] == "OverrideSecurity")
    );
    let w = run(&[
        "whatif",
        "disable",
        "platform/derivation-grants",
        "-o",
        "json",
    ]);
    assert_eq!(
        w.status.code(),
        Some(1),
        "grants disabled: things become denied"
    );
    let d = json(&w);
    assert!(
        d["newlyDenied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains("AccessSecret"))
    );
    assert!(d["diff"].as_str().unwrap().contains("# DENIED"));
    let harmless = run(&[
        "whatif",
        "add",
        "forbid(principal, action == Lattice::Action::\"Connect\", resource in Lattice::Namespace::\"nowhere\");",
    ]);
    assert_eq!(harmless.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&harmless.stdout).contains("0 newly denied"));
}

/// Every command that decides names the packs in force and their digest, for people and for
/// machines, and the name follows `--policies`: an answer is never mistaken for one taken
/// under other rules.
#[test]
fn every_deciding_command_names_the_packs_in_force() {
    let edge = [
        "Service::shop/checkout",
        "Connect",
        "Service::payments/ledger",
    ];
    let commands: Vec<Vec<&str>> = vec![
        [&["can"][..], &edge].concat(),
        [&["why"][..], &edge].concat(),
        vec!["gates", "shop/checkout"],
        vec!["whatif", "remove", "baseline/bilateral-connect"],
        vec!["mesh"],
        vec!["plan"],
    ];
    let packs_dir = workspace().join("policies");
    let packs_arg = packs_dir.to_str().unwrap();
    let mut digests = std::collections::BTreeSet::new();
    for args in &commands {
        for policies in [None, Some(packs_arg)] {
            let mut human: Vec<&str> = args.clone();
            if let Some(p) = policies {
                human.extend(["--policies", p]);
            }
            let o = run(&human);
            let text = String::from_utf8_lossy(&o.stdout);
            let source = policies.unwrap_or("bundled");
            assert!(
                text.contains(&format!("packs ({source}): baseline@"))
                    && text.contains("pod-security@"),
                "{human:?} does not name its packs:\n{text}"
            );
            let mut machine = human.clone();
            machine.extend(["-o", "json"]);
            let d = json(&run(&machine));
            assert_eq!(d["packs"]["source"], source, "{machine:?}");
            assert!(
                d["packs"]["names"].as_array().is_some_and(|n| n.iter().any(
                    |n| *n == format!("baseline@{}", lattice_testkit::pack_version("baseline"))
                )),
                "{machine:?}: {}",
                d["packs"]
            );
            let digest = d["packs"]["digest"].as_str().unwrap().to_owned();
            assert!(text.contains(&digest), "{human:?}: {digest} not in\n{text}");
            digests.insert(digest);
        }
    }
    // The bundled packs are the repository's: one digest, whichever way they were named.
    assert_eq!(digests.len(), 1, "{digests:?}");

    // render names them in a YAML comment `kubectl apply` ignores, and on stderr with JSON.
    let o = run(&["render", "-f", "conformance/render/canary/workload.yaml"]);
    let yaml = String::from_utf8_lossy(&o.stdout);
    assert!(
        yaml.starts_with("# rendered by lattice-policy under packs (bundled): baseline@"),
        "{yaml}"
    );
    let o = run(&[
        "render",
        "-f",
        "conformance/render/canary/workload.yaml",
        "-o",
        "json",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("packs (bundled): baseline@"));
    assert!(json(&o).is_array());
}

/// Kubernetes' own objects are asked like Lattice's: `can` a pod run where it is, and which
/// running pods a policy change would refuse (`whatif`).
#[test]
fn pods_of_plain_manifests_are_asked_and_a_whatif_names_the_ones_it_would_refuse() {
    let dir = std::env::temp_dir().join(format!("lattice-core-query-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("shop.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    pod-security.kubernetes.io/enforce: baseline\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  containers:\n    - name: app\n      image: nginx:1.27\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: quiet\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: quiet}\n  template:\n    metadata:\n      labels: {app: quiet}\n    spec:\n      automountServiceAccountToken: false\n      containers:\n        - name: app\n          image: nginx:1.27\n",
    )
    .unwrap();
    let world = dir.to_str().unwrap();
    let baseline = r#"{"level": "baseline", "version": 33, "mode": "enforce"}"#;
    let can = run(&[
        "can",
        "Pod::shop/Pod/web",
        "RunPod",
        "Namespace::shop",
        baseline,
        "--world",
        world,
    ]);
    assert_eq!(
        can.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&can.stdout)
    );
    let restricted = r#"{"level": "restricted", "version": 33, "mode": "enforce"}"#;
    let cannot = run(&[
        "can",
        "Container::shop/Pod/web/app",
        "RunPod",
        "Namespace::shop",
        restricted,
        "--world",
        world,
        "-o",
        "json",
    ]);
    assert_eq!(
        cannot.status.code(),
        Some(1),
        "restricted asks for runAsNonRoot and more"
    );
    let d = json(&cannot);
    assert!(
        d.to_string().contains("pod-security/run-as-non-root"),
        "{d}"
    );

    // Pods that mount a token are refused from now on: the running one that does is named,
    // the Deployment whose pods do not is not.
    let w = run(&[
        "whatif",
        "add",
        "@id(\"no-tokens\") forbid (principal is Lattice::Pod, action == Lattice::Action::\"RunPod\", resource) when { principal.automountServiceAccountToken };",
        "--world",
        world,
        "-o",
        "json",
    ]);
    assert_eq!(
        w.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let d = json(&w);
    let denied: Vec<String> = d["newlyDenied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0].contains("shop/Pod/web") && denied[0].contains("RunPod"),
        "{denied:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A quota decision as `why` explains it: the context is the principal's standing under
/// the quota, from the world, so the question needs no hand-written sums; a user's value
/// still wins.
#[test]
fn why_explains_a_quota_refusal_with_the_workloads_own_standing() {
    let quota = [
        "--world",
        "examples/world",
        "--world",
        "conformance/render/denied-quota",
    ];
    let mut args = vec![
        "why",
        "Service::shop/batch-report",
        "ConsumeQuota",
        "Quota::batch-report",
        "-o",
        "json",
    ];
    args.extend(quota);
    let over = run(&args);
    assert_eq!(
        over.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&over.stderr)
    );
    let d = json(&over);
    assert_eq!(d["decision"], "deny");
    let determining: Vec<&str> = d["determining"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(determining, ["baseline/quota-cpu", "baseline/quota-memory"]);
    // With a total the user says fits, the same question is allowed.
    let fits = r#"{"total": {"cpu": {"__extn": {"fn": "decimal", "arg": "0.5"}}, "memoryMiB": {"__extn": {"fn": "decimal", "arg": "512.0"}}, "gpu": {"__extn": {"fn": "decimal", "arg": "0.0"}}, "workloads": {"__extn": {"fn": "decimal", "arg": "1.0"}}}}"#;
    let mut args = vec![
        "why",
        "Service::shop/batch-report",
        "ConsumeQuota",
        "Quota::batch-report",
        fits,
        "-o",
        "json",
    ];
    args.extend(quota);
    let under = run(&args);
    assert_eq!(json(&under)["decision"], "allow");
}
