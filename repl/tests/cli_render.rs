//! `lattice-policy render` as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

/// One document of the example world, written to its own file.
fn extract(file: &str, kind: &str, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(workspace().join(file)).unwrap();
    let doc = text
        .split("\n---\n")
        .find(|d| d.contains(&format!("kind: {kind}")) && d.contains(&format!("  name: {name}\n")))
        .unwrap_or_else(|| panic!("{kind} {name} not in {file}"));
    let dir = std::env::temp_dir().join(format!("lattice-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, doc).unwrap();
    path
}

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .arg("render")
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap()
}

#[test]
fn an_allowed_service_renders_to_applyable_yaml() {
    let gateway = extract("examples/world/payments.yaml", "LatticeService", "gateway");
    let o = render(&["-f", gateway.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d.value["kind"].as_str().unwrap())
        .collect();
    for k in [
        "ServiceAccount",
        "Deployment",
        "Service",
        "ExternalSecret",
        "HTTPRoute",
        "CiliumNetworkPolicy",
        "AuthorizationPolicy",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert!(
        docs.iter()
            .all(|d| d.value["metadata"]["namespace"] == "payments"),
        "every object lands in the workload's namespace"
    );
    // Same input, same bytes.
    assert_eq!(
        render(&["-f", gateway.to_str().unwrap()]).stdout,
        text.into_bytes()
    );
}

#[test]
fn a_denied_service_prints_every_denial_and_exits_1() {
    let o = render(&[
        "-f",
        "conformance/render/denied-untrusted-image/workload.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["allowed"], false);
    let denied = doc["denied"].as_array().unwrap();
    let image = denied
        .iter()
        .find(|d| d["action"] == "DeployImage")
        .expect("shop-api:1.5.0 is not signed");
    assert!(image["advice"].as_str().unwrap().contains("Sign the image"));
}

#[test]
fn a_namespace_renders_its_baseline_or_the_decision_that_it_runs_without_one() {
    let o = render(&["--namespace", "payments", "--world", "examples/world"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d.value["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "CiliumNetworkPolicy",
            "AuthorizationPolicy",
            "PeerAuthentication"
        ]
    );
    assert!(
        docs.iter()
            .all(|d| d.value["metadata"]["namespace"] == "payments")
    );
    assert!(
        docs[0].value["spec"]["egress"].is_array(),
        "egress is default deny too"
    );

    // sandbox asked to opt out, and platform/sandbox-opt-out allowed it.
    let o = render(&["--namespace", "sandbox", "--world", "examples/world"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        o.stdout.is_empty(),
        "no baseline: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let said = String::from_utf8(o.stderr).unwrap();
    assert!(
        said.contains("OptOutDefaultDeny allowed by platform/sandbox-opt-out/sandbox-runs-open"),
        "{said}"
    );

    let o = render(&["--namespace", "nowhere", "--world", "examples/world"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere"));
}

#[test]
fn a_cluster_renders_its_cluster_api_objects_once_provision_allows() {
    let o = render(&[
        "-f",
        "clusters/tests/clusters/openstack.yaml",
        "--bootstrap-endpoint",
        "cell.production.example.com:8443",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "Provision Cluster::\"ovh-payments\" by Cluster::\"production\": allowed (by baseline/parent-manages-children)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("the cluster will run: cilium, lattice-agent, istio, lattice-operator"),
        "{stderr}"
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d.value["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "OpenStackCluster",
            "OpenStackMachineTemplate",
            "KubeadmControlPlane",
            "Cluster",
            "OpenStackMachineTemplate",
            "KubeadmConfigTemplate",
            "MachineDeployment"
        ]
    );
    // The same objects the golden file holds, under the header that names the packs.
    let golden =
        std::fs::read_to_string(workspace().join("clusters/tests/golden/openstack.yaml")).unwrap();
    assert!(text.ends_with(&golden));
    assert!(text.starts_with("# rendered by lattice-policy under packs (bundled)"));
}

#[test]
fn a_forbidden_cluster_prints_the_decision_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("lattice-render-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let forbid = dir.join("no-openstack.yaml");
    std::fs::write(
        &forbid,
        r#"apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: providers
  namespace: lattice-system
spec:
  policies: |
    @id("no-new-openstack")
    @advice("OpenStack is being retired: provision on Proxmox.")
    forbid (principal, action == Lattice::Action::"Provision", resource)
    when { resource.provider == "openstack" };
"#,
    )
    .unwrap();
    let o = render(&[
        "-f",
        "clusters/tests/clusters/openstack.yaml",
        "--world",
        "examples/world",
        "--world",
        forbid.to_str().unwrap(),
        "--bootstrap-endpoint",
        "cell.production.example.com:8443",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.starts_with(
            "DENIED Provision Cluster::\"ovh-payments\" by Cluster::\"production\": denied (by lattice-system/providers/no-new-openstack): nothing is provisioned\n  advice: OpenStack is being retired: provision on Proxmox.\n"
        ),
        "{text}"
    );
    // Nothing to apply reached stdout.
    assert!(!text.contains("kind:"));
    // The Proxmox cluster is not touched by that forbid.
    let o = render(&[
        "-f",
        "clusters/tests/clusters/proxmox.yaml",
        "--world",
        "examples/world",
        "--world",
        forbid.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let objects: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(objects.as_array().unwrap().len() > 5);
}

fn admit(dir: &std::path::Path, manifest: &str, args: &[&str]) -> std::process::Output {
    let path = dir.join("objects.yaml");
    std::fs::write(&path, manifest).unwrap();
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .current_dir(workspace())
        .args(["admit", "-f"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap()
}

/// `lattice-policy admit` answers as the webhook would: refused (exit 1) with the check and
/// its advice, warned and admitted (exit 0), the AdmissionReview with `-o json`, exempt by
/// the kube-system permit, and bad input is exit 2 with a diagnostic.
#[test]
fn admit_answers_what_the_webhook_would_for_plain_manifests() {
    let dir = std::env::temp_dir().join(format!("lattice-admit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let privileged = "apiVersion: v1\nkind: Pod\nmetadata: {name: root}\nspec:\n  containers:\n  - {name: app, image: nginx, securityContext: {privileged: true}}\n";

    let out = admit(
        &dir,
        privileged,
        &[
            "--namespace-labels",
            "pod-security.kubernetes.io/enforce=baseline",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("refused Pod default/root"), "{stdout}");
    assert!(
        stdout.contains("violates PodSecurity \"baseline:latest\": privileged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Remove `securityContext.privileged: true`"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("enforce baseline:latest: pod-security/privileged"),
        "{stderr}"
    );

    // Warn only: admitted, the warning on stderr; the AdmissionReview with -o json.
    let labels =
        "pod-security.kubernetes.io/enforce=privileged,pod-security.kubernetes.io/warn=restricted";
    let out = admit(&dir, privileged, &["--namespace-labels", labels]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: would violate PodSecurity \"restricted:latest\"")
    );
    let out = admit(
        &dir,
        privileged,
        &["--namespace-labels", labels, "-o", "json"],
    );
    let review: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["allowed"], true);
    assert!(
        review["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("privileged")
    );

    // kube-system is exempt by a permit, which stderr names.
    let out = admit(&dir, privileged, &["-n", "kube-system"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("exempted by pod-security/exempt-kube-system")
    );

    // An unlabelled namespace is enforced at the cluster default (restricted), and a
    // Deployment is judged by its template: warned, not refused, as PSA does.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      hostNetwork: true\n      containers: [{name: web, image: nginx}]\n";
    let out = admit(
        &dir,
        deployment,
        &[
            "--namespace-labels",
            "pod-security.kubernetes.io/enforce=baseline",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hostNamespaces"));
    let out = admit(
        &dir,
        deployment,
        &[
            "--namespace-labels",
            "pod-security.kubernetes.io/enforce=baseline,lattice.dev/pod-security-templates=enforce",
        ],
    );
    assert_eq!(out.status.code(), Some(1));

    // Bad input: a YAML error with its line, a document that is no object, bad labels.
    let out = admit(&dir, "kind: Pod\n  bad: [\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = admit(&dir, "just: text\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs `apiVersion` and `kind`"));
    let out = admit(&dir, privileged, &["--namespace-labels", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    // A pod whose spec cannot be read is refused, not guessed at.
    let out = admit(
        &dir,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 7}\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot be decided"));
}

/// RBAC and Services are asked `AdmitKubernetes`: cluster-admin for `system:anonymous` and a
/// Service with external IPs are refused with the forbid and its advice, a narrow binding
/// and a plain Service are admitted, and a binding without its `roleRef` (which the API
/// server could not decode either) is refused as undecidable.
#[test]
fn admit_refuses_rbac_and_services_that_must_never_exist() {
    let dir = std::env::temp_dir().join(format!("lattice-admit-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let anonymous = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: anonymous-admin}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects:\n- {kind: User, name: system:anonymous, apiGroup: rbac.authorization.k8s.io}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  externalIPs: [203.0.113.9]\n  ports: [{port: 80}]\n";
    let out = admit(&dir, anonymous, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("refused ClusterRoleBinding anonymous-admin")
            && stdout.contains("baseline/no-anonymous-access — Remove `system:anonymous`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused Service web")
            && stdout.contains("baseline/no-service-external-ips")
            && stdout.contains("CVE-2020-8554"),
        "{stdout}"
    );

    let fine = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: readers, namespace: shop}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects:\n- {kind: Group, name: shop-team, apiGroup: rbac.authorization.k8s.io}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{port: 80}]\n";
    let out = admit(&dir, fine, &["-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let reviews: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reviews.as_array().unwrap().len(), 2);
    assert!(
        reviews
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["response"]["allowed"] == true)
    );

    // Another project's `Service` is not Kubernetes': admitted untouched.
    let knative = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello, namespace: shop}\nspec:\n  externalIPs: [203.0.113.9]\n";
    let out = admit(&dir, knative, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("admitted Service hello") && stdout.contains("not a kind Lattice decides"),
        "{stdout}"
    );

    let broken = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: broken, namespace: shop}\nsubjects: []\n";
    let out = admit(&dir, broken, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("cannot be decided") && stdout.contains("roleRef"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
