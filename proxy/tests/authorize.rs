//! Proxied calls decided on the example world with the bundled packs and real Cedar: the
//! baseline's viewer and admin groups, a forbid with advice, where the call came from, and
//! requests that cannot be read.

use std::net::IpAddr;
use std::path::PathBuf;

use lattice_engine::{Projection, Snapshot};
use lattice_gates::Requester;
use lattice_proxy::authorize::is_impersonation_header;
use lattice_proxy::{Verdict, authorize};

const CLUSTER: &str = "production";

fn snapshot(extra: Option<&str>) -> Snapshot {
    let root = lattice_testkit::workspace_root();
    let mut paths: Vec<PathBuf> = vec![root.join("examples/world")];
    let dir = std::env::temp_dir().join(format!(
        "lattice-proxy-{}-{}",
        std::process::id(),
        extra.map_or(0, str::len)
    ));
    if let Some(yaml) = extra {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("extra.yaml"), yaml).unwrap();
        paths.push(dir.join("extra.yaml"));
    }
    let (world, store) = lattice_engine::load::load(&paths, Some(&root.join("policies")))
        .unwrap_or_else(|e| panic!("the world loads: {e:?}"));
    std::fs::remove_dir_all(&dir).ok();
    let projection = Projection::of(&world);
    Snapshot::build(&world, &projection, &store).expect("a snapshot")
}

fn user(name: &str, groups: &[&str]) -> Requester {
    Requester {
        username: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// A clock reading as the proxy takes it: nanoseconds, which Cedar's `datetime` refuses
/// unless they are cut to milliseconds (a reading like this once denied every call).
fn now() -> jiff::Timestamp {
    "2026-12-01T12:00:00.123456789Z".parse().unwrap()
}

fn local() -> IpAddr {
    "10.1.2.3".parse().unwrap()
}

fn call(s: &Snapshot, who: &Requester, method: &str, url: &str) -> Verdict {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    authorize(s, who, CLUSTER, method, path, query, local(), now())
}

fn allowed(v: &Verdict) -> bool {
    matches!(v, Verdict::Allow(_))
}

fn message(v: &Verdict) -> String {
    match v {
        Verdict::Forbidden(status) => {
            assert_eq!(status["code"], 403);
            assert_eq!(status["reason"], "Forbidden");
            assert_eq!(status["kind"], "Status");
            status["message"].as_str().unwrap().to_owned()
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[test]
fn viewers_read_and_admins_run_commands() {
    let s = snapshot(None);
    let viewer = user("vera", &["lattice:cluster-viewers"]);
    for (method, url) in [
        ("GET", "/api/v1/namespaces/shop/pods"),
        ("GET", "/api/v1/namespaces/shop/pods/web-1"),
        ("GET", "/api/v1/namespaces/shop/pods?watch=true"),
        ("GET", "/api/v1/namespaces/shop/pods/web-1/log"),
        ("GET", "/apis/apps/v1/deployments"),
        ("GET", "/version"),
    ] {
        assert!(allowed(&call(&s, &viewer, method, url)), "{method} {url}");
    }
    for (method, url) in [
        ("POST", "/api/v1/namespaces/shop/pods"),
        ("DELETE", "/api/v1/namespaces/shop/pods"),
        ("POST", "/api/v1/namespaces/shop/pods/web-1/exec"),
        // kubectl opens exec with a GET upgrade: still `exec`, not a read.
        ("GET", "/api/v1/namespaces/shop/pods/web-1/exec?command=sh"),
        ("GET", "/api/v1/namespaces/shop/pods/web-1/portforward"),
        ("GET", "/api/v1/namespaces/shop/services/web/proxy/admin"),
    ] {
        let m = message(&call(&s, &viewer, method, url));
        assert!(m.contains("no policy permits it"), "{method} {url}: {m}");
        assert!(
            m.contains("\"vera\"") && m.contains("\"production\""),
            "{m}"
        );
    }
    let admin = user("ada", &["lattice:cluster-admins"]);
    for (method, url) in [
        ("POST", "/api/v1/namespaces/shop/pods/web-1/exec"),
        ("POST", "/api/v1/namespaces/shop/pods/web-1/attach"),
        ("GET", "/api/v1/namespaces/shop/pods/web-1/portforward"),
        ("DELETE", "/api/v1/namespaces/shop/pods"),
    ] {
        assert!(allowed(&call(&s, &admin, method, url)), "{method} {url}");
    }
    // Nobody in no group.
    let stranger = user("sam", &[]);
    assert!(!allowed(&call(&s, &stranger, "GET", "/api/v1/pods")));
}

#[test]
fn a_forbid_denies_with_its_advice_whatever_the_permits() {
    let s = snapshot(Some(
        r#"apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: break-glass
  namespace: platform
spec:
  policies: |
    @id("no-shell-in-payments")
    @advice("Shells in payments need a break-glass ticket; ask the payments on-call.")
    forbid (
      principal,
      action in [Lattice::Action::"exec", Lattice::Action::"attach"],
      resource
    )
    when { context.namespace == "payments" };

    @id("office-only")
    forbid (principal, action in Lattice::Action::"ClusterAdmin", resource)
    unless { context.sourceIp.isInRange(ip("10.0.0.0/8")) };
"#,
    ));
    let admin = user("ada", &["lattice:cluster-admins"]);
    let m = message(&call(
        &s,
        &admin,
        "POST",
        "/api/v1/namespaces/payments/pods/ledger-0/exec",
    ));
    assert!(
        m.contains("platform/break-glass/no-shell-in-payments") && m.contains("break-glass ticket"),
        "{m}"
    );
    assert!(allowed(&call(
        &s,
        &admin,
        "POST",
        "/api/v1/namespaces/shop/pods/web-1/exec"
    )));
    // The same admin from outside the office network.
    let outside = authorize(
        &s,
        &admin,
        CLUSTER,
        "GET",
        "/api/v1/pods",
        "",
        "203.0.113.9".parse().unwrap(),
        now(),
    );
    assert!(message(&outside).contains("platform/break-glass/office-only"));
}

#[test]
fn unknown_clusters_and_unreadable_requests_are_refused() {
    let s = snapshot(None);
    let admin = user("ada", &["lattice:cluster-admins"]);
    let v = authorize(
        &s,
        &admin,
        "elsewhere",
        "GET",
        "/api/v1/pods",
        "",
        local(),
        now(),
    );
    assert!(message(&v).contains("not a cluster of this hierarchy"));
    for (method, path) in [
        ("GET", "/api/v1/namespaces/shop/pods/%zz"),
        ("GET", "/api/v1/namespaces/shop/../kube-system/secrets"),
        ("TRACE", "/api/v1/pods"),
    ] {
        assert!(
            matches!(
                authorize(&s, &admin, CLUSTER, method, path, "", local(), now()),
                Verdict::BadRequest(_)
            ),
            "{method} {path}"
        );
    }
    let nobody = user("", &["lattice:cluster-admins"]);
    assert!(!allowed(&call(&s, &nobody, "GET", "/api/v1/pods")));
}

#[test]
fn clients_may_not_send_impersonation_headers() {
    for h in [
        "Impersonate-User",
        "impersonate-group",
        "IMPERSONATE-UID",
        "Impersonate-Extra-scopes",
    ] {
        assert!(is_impersonation_header(h), "{h}");
    }
    for h in ["Authorization", "Accept", "X-Impersonate-User"] {
        assert!(!is_impersonation_header(h), "{h}");
    }
}

/// A call for a cluster goes only through a child the hierarchy places above it: reported
/// descendants are below their reporter, and a cluster declared here under another parent
/// is never routed through a child that also claims it.
#[test]
fn calls_go_only_through_a_child_above_the_cluster() {
    let s = snapshot(Some(
        "apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: edge
spec:
  providerRef: aws-prod
  parent: production
  provider:
    kubernetes: {version: \"1.33.0\"}
    config: {aws: {region: eu-west-1}}
  nodes: {controlPlane: 1}
status:
  descendants:
    - {name: leaf, parent: edge, phase: Ready}
    - {name: twig, parent: leaf}
    - {name: sibling, parent: edge}
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: sibling
spec:
  providerRef: aws-prod
  parent: production
  provider:
    kubernetes: {version: \"1.33.0\"}
    config: {aws: {region: eu-west-1}}
  nodes: {controlPlane: 1}
",
    ));
    use lattice_gates::proxy::routes_through;
    assert!(
        routes_through(&s, "edge", "edge"),
        "a child is its own route"
    );
    assert!(routes_through(&s, "leaf", "edge"));
    assert!(routes_through(&s, "twig", "edge"), "two levels below");
    assert!(
        !routes_through(&s, "sibling", "edge"),
        "edge claims a cluster declared beside it"
    );
    assert!(!routes_through(&s, "nowhere", "edge"));
    assert!(!routes_through(&s, "edge", "leaf"), "never upwards");
}
