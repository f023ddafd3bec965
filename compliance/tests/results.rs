//! Checks that read results, not requests: recorded scan runs (CA-7), who may write policy
//! (decided by Cedar), remote commands by group, and what derivation produced. Each test
//! scans a small world twice, once where the result holds and once where only the request
//! does, and the check must tell them apart.

mod support;

use std::path::PathBuf;

use lattice_compliance::{ScanOptions, ScanReport};
use support::scan_world_with;

const AT: &str = "2026-11-21T12:00:00Z";

/// Writes `yaml` to a fresh file and scans it (with the repository's packs) at [`AT`].
fn scan_yaml(yaml: &str, options: ScanOptions) -> ScanReport {
    let dir = std::env::temp_dir().join(format!(
        "lattice-results-{}-{:x}",
        std::process::id(),
        rand_suffix(yaml)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("world.yaml");
    std::fs::write(&file, yaml).unwrap();
    let report = scan_world_with(&[file], AT, options);
    std::fs::remove_dir_all(&dir).ok();
    report
}

fn rand_suffix(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    std::thread::current().id().hash(&mut h);
    h.finish()
}

/// The subjects `check` (framework/id) fails for.
fn failing(report: &ScanReport, check: &str) -> Vec<String> {
    let (fw, _) = check.split_once('/').unwrap();
    let framework = report
        .frameworks
        .iter()
        .find(|f| f.id == fw)
        .unwrap_or_else(|| panic!("{fw} was not scanned"));
    let c = framework
        .checks
        .iter()
        .find(|c| c.id == check)
        .unwrap_or_else(|| panic!("no check {check}"));
    c.failures
        .iter()
        .map(|f| format!("{}::{}", f.subject.kind.type_name(), f.subject.id))
        .collect()
}

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    pod-security.kubernetes.io/enforce: restricted
"#;

fn profile(status: &str) -> String {
    format!(
        r#"{NAMESPACE}
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeComplianceProfile
metadata:
  name: daily
spec:
  frameworks: [nist-800-53]
  scanInterval: 24h
  evidenceSink:
    configMap:
      name: evidence
      namespace: lattice-system
{status}
"#
    )
}

#[test]
fn ca7_passes_only_on_a_run_recorded_within_the_interval() {
    let recorded = |status: &str| {
        failing(
            &scan_yaml(&profile(status), ScanOptions::default()),
            "nist-800-53/scans-recorded",
        )
    };
    // Recorded four hours ago, on a daily schedule.
    assert_eq!(
        recorded(
            "status:\n  lastScanTime: \"2026-11-21T08:00:00Z\"\n  lastRecordedTime: \"2026-11-21T08:00:00Z\""
        ),
        Vec::<String>::new()
    );
    // A day and a bit (within the 10% grace) still counts; two days do not.
    assert!(recorded("status:\n  lastRecordedTime: \"2026-11-20T10:00:00Z\"").is_empty());
    assert_eq!(
        recorded("status:\n  lastRecordedTime: \"2026-11-19T12:00:00Z\""),
        ["Namespace::shop"]
    );
    // The last scan failed: it ran, but wrote no evidence, and the last written run is old.
    assert_eq!(
        recorded(
            "status:\n  lastScanTime: \"2026-11-21T11:00:00Z\"\n  lastRecordedTime: \"2026-11-18T11:00:00Z\""
        ),
        ["Namespace::shop"]
    );
    // Scheduled, never run: a manifest with no status.
    assert_eq!(recorded(""), ["Namespace::shop"]);
    // An interval too long to add to a time records nothing, and panics nowhere.
    let hostile = profile("status:\n  lastRecordedTime: \"2026-11-21T08:00:00Z\"")
        .replace("scanInterval: 24h", "scanInterval: 99999999999999999999h");
    assert_eq!(
        failing(
            &scan_yaml(&hostile, ScanOptions::default()),
            "nist-800-53/scans-recorded"
        ),
        ["Namespace::shop"]
    );
    // A run "recorded" in the future is no run.
    assert_eq!(
        recorded("status:\n  lastRecordedTime: \"2026-11-22T08:00:00Z\""),
        ["Namespace::shop"]
    );
}

fn policy(body: &str) -> String {
    let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        r#"{NAMESPACE}
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: prod
spec:
  providerRef: aws
  provider:
    kubernetes:
      version: "1.32.0"
    config:
      aws:
        region: eu-west-1
  nodes:
    controlPlane: 1
    workerPools:
      general:
        replicas: 1
---
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: grants
  namespace: shop
spec:
  policies: |
{indented}"#
    )
}

#[test]
fn who_may_write_policy_is_decided_by_cedar_not_read_from_a_scope() {
    let writes = |body: &str| {
        failing(
            &scan_yaml(&policy(body), ScanOptions::default()),
            "nist-800-53/policy-management-by-group",
        )
    };
    // The baseline alone: security admins (a group, in the condition) and the operator's
    // own identity.
    assert!(
        writes("@id(\"nothing\")\nforbid (principal, action, resource) when { false };").is_empty()
    );
    // Anyone authenticated may write policy in shop.
    assert_eq!(
        writes(
            "@id(\"open\")\npermit (principal, action == Lattice::Action::\"ManagePolicy\", resource == Lattice::Namespace::\"shop\");"
        ),
        ["Cluster::prod"]
    );
    // A group in the condition is as good as one in the scope.
    assert!(
        writes("@id(\"team\")\npermit (principal, action == Lattice::Action::\"ManagePolicy\", resource == Lattice::Namespace::\"shop\")\nwhen { principal in Lattice::Group::\"shop-leads\" };")
            .is_empty()
    );
}

#[test]
fn remote_commands_for_one_person_fail_ac17_but_reads_do_not() {
    let exec = |body: &str| {
        failing(
            &scan_yaml(&policy(body), ScanOptions::default()),
            "nist-800-53/proxy-exec-by-group",
        )
    };
    assert_eq!(
        exec(
            "@id(\"bob\")\npermit (principal == Lattice::User::\"bob\", action == Lattice::Action::\"exec\", resource);"
        ),
        ["Cluster::prod"]
    );
    assert_eq!(
        exec(
            "@id(\"bob\")\npermit (principal == Lattice::User::\"bob\", action in Lattice::Action::\"ClusterAdmin\", resource);"
        ),
        ["Cluster::prod"],
        "ClusterAdmin holds exec"
    );
    assert!(
        exec("@id(\"bob\")\npermit (principal == Lattice::User::\"bob\", action == Lattice::Action::\"get\", resource);")
            .is_empty()
    );
    assert!(
        exec("@id(\"sre\")\npermit (principal in Lattice::Group::\"sre\", action == Lattice::Action::\"exec\", resource);")
            .is_empty()
    );
}

fn service(extra: &str) -> String {
    format!(
        r#"{NAMESPACE}
---
apiVersion: lattice.dev/v1alpha1
kind: TrustPolicy
metadata:
  name: trust
spec:
  registries:
    - prefix: docker.io/library
      requireSignature: false
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata:
  name: api
  namespace: shop
spec:
  replicas: 2
  containers:
    main:
      image: docker.io/library/nginx:1.27@sha256:6965a10c15290ad0b29ca7fd1866de1850408b3cb15fb11a3bbbbc2fddb158bd
{extra}      resources:
        limits:
          cpu: 100m
          memory: 64Mi
  service:
    ports:
      http:
        port: 8080
      metrics:
        port: 9090
"#
    )
}

#[test]
fn derived_objects_decide_allowlists_budgets_and_scrapes() {
    let all = ScanOptions {
        frameworks: vec!["nist-800-53".into(), "soc2".into(), "cis-kubernetes".into()],
        ..ScanOptions::default()
    };
    // An absolute command: an allowlist is derived, and so are the budget and the scrape.
    let listed = scan_yaml(&service("      command: [/app/api]\n"), all.clone());
    assert!(
        failing(&listed, "nist-800-53/images-authorized").is_empty(),
        "the workload is allowed, so it derives its objects"
    );
    assert!(failing(&listed, "nist-800-53/binary-allowlists").is_empty());
    assert!(failing(&listed, "soc2/service-availability").is_empty());
    assert!(failing(&listed, "nist-800-53/services-scraped").is_empty());
    assert!(failing(&listed, "cis-kubernetes/default-service-account-unused").is_empty());
    assert!(failing(&listed, "cis-kubernetes/service-account-tokens-unmounted").is_empty());
    // The image's own entrypoint: nothing to allowlist, so any binary may run.
    let unlisted = scan_yaml(&service(""), all.clone());
    assert_eq!(
        failing(&unlisted, "nist-800-53/binary-allowlists"),
        ["Service::shop/api"]
    );

    // Handed no derived objects, the scan assumes the worst: every check that reads them
    // fails, none passes on nothing.
    let blind = scan_yaml(
        &service("      command: [/app/api]\n"),
        ScanOptions {
            derived: Some(Default::default()),
            ..all
        },
    );
    assert_eq!(
        failing(&blind, "soc2/service-availability"),
        ["Service::shop/api"],
        "a workload that derived nothing has no budget"
    );
    assert_eq!(
        failing(&blind, "nist-800-53/services-scraped"),
        ["Service::shop/api"]
    );
}

#[test]
fn a_scan_that_read_no_derived_objects_fails_closed() {
    let world = service("      command: [/app/api]\n");
    let dir = std::env::temp_dir().join(format!("lattice-results-blind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("world.yaml");
    std::fs::write(&file, world).unwrap();
    let (world, store) = lattice_engine::load::load(
        std::slice::from_ref(&file),
        Some(&support::root().join("policies")),
    )
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let projection = lattice_engine::Projection::of(&world);
    let snapshot = lattice_engine::Snapshot::build(&world, &projection, &store).unwrap();
    let report = lattice_compliance::scan(
        &world,
        &store,
        &snapshot,
        &ScanOptions {
            now: Some(AT.parse().unwrap()),
            derived: None,
            ..ScanOptions::default()
        },
        &|_| {},
    )
    .unwrap();
    for check in [
        "nist-800-53/binary-allowlists",
        "soc2/service-availability",
        "cis-kubernetes/default-service-account-unused",
        "cis-kubernetes/service-account-tokens-unmounted",
    ] {
        assert_eq!(failing(&report, check), ["Service::shop/api"], "{check}");
    }
}

/// The scan decides `Comply` without validating each request again
/// (`Snapshot::decide_prechecked`): this is the check that every context it builds, for
/// every subject kind of the example and conformance worlds and every framework, fits the
/// schema, and that sharing a context across frameworks asks the same questions.
#[test]
fn comply_contexts_fit_the_schema() {
    use lattice_engine::{Projection, Snapshot};
    use lattice_gates::compliance::{ComplyFacts, comply_queries, comply_query, subjects};
    let root = support::root();
    for world in [
        vec![root.join("examples/world")],
        vec![root.join("conformance/compliance/violations/world.yaml")],
        vec![root.join("conformance/compliance/compliant/world.yaml")],
    ] {
        let (world, store) = lattice_engine::load::load(&world, Some(&root.join("policies")))
            .unwrap_or_else(|e| panic!("the world did not load: {e:?}"));
        let projection = Projection::of(&world);
        let snapshot = Snapshot::build(&world, &projection, &store).unwrap();
        let all = subjects(&world, None);
        let derived = support::derive_all(&world, &snapshot);
        let facts = ComplyFacts::derive(
            &snapshot,
            &world,
            &store,
            &all,
            AT.parse().unwrap(),
            lattice_gates::compliance::Known {
                derived: Some(&derived),
                ..Default::default()
            },
        );
        let frameworks = ["nist-800-53", "soc2", "cis-kubernetes"];
        let mut kinds = std::collections::BTreeSet::new();
        for s in &all {
            let f = facts.of(s);
            let shared = comply_queries(s, &frameworks, &f);
            for (q, fw) in shared.iter().zip(frameworks) {
                snapshot
                    .request(q)
                    .unwrap_or_else(|e| panic!("{} for {fw}: {e}", s.id));
                let alone = comply_query(s, fw, &f);
                assert_eq!(
                    snapshot.decide(&alone).unwrap().allowed,
                    snapshot.decide_prechecked(q).unwrap().allowed,
                    "{} for {fw}",
                    s.id
                );
            }
            kinds.insert(s.kind);
        }
        assert!(kinds.len() >= 3, "subjects of several kinds: {kinds:?}");
    }
}
