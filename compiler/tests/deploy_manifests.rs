//! The manifests under `deploy/` are Kubernetes objects like the derived ones: checked here
//! against the real schemas of `../shared/reference/` where there are some (core/v1,
//! apps/v1), read strictly as typed objects otherwise, and checked for the properties
//! admission depends on (fail closed, 3 s, no lock-out, certificates wired through) and
//! the operator's RBAC depends on (every derived kind it applies, nothing more).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{Validators, reference_dir, root};

/// The objects of one `deploy/` directory, by kind and name; its kustomization lists every
/// manifest in it.
fn objects(dir: &str) -> BTreeMap<(String, String), Value> {
    let dir = root().join(dir);
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&kustomization);
    assert!(errors.is_empty());
    // Another directory (`../operator`) is that directory's to check.
    let listed: Vec<String> = docs[0].value["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .filter(|r| r.ends_with(".yaml"))
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "kustomization.yaml lists every manifest");
    let mut out = BTreeMap::new();
    for file in listed {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
        assert!(errors.is_empty(), "{file}: {errors:?}");
        for d in docs.into_iter().filter(|d| !d.value.is_null()) {
            let key = (
                d.value["kind"].as_str().unwrap().to_owned(),
                d.value["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            assert!(out.insert(key.clone(), d.value).is_none(), "{key:?} twice");
        }
    }
    out
}

/// Reads `v` as `T` and back: a field `T` does not know (a typo) is lost on the way and
/// the two differ.
fn strict<T: DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let typed: T = serde_json::from_value(v.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, v, "fields lost reading {}", v["kind"]);
    typed
}

fn get<'a>(o: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    o.get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn deploy_manifests_validate_and_wire_admission_safely() {
    let o = objects("deploy/webhook");

    validate_all(&o);
    let _: ClusterRole = strict(get(&o, "ClusterRole", "lattice-webhook"));
    let _: ClusterRoleBinding = strict(get(&o, "ClusterRoleBinding", "lattice-webhook"));
    let pdb: PodDisruptionBudget = strict(get(&o, "PodDisruptionBudget", "lattice-webhook"));
    // The admission stamp: CedarPolicy creates and updates, fail closed, at /mutate of the
    // same Service, whose pods get the key.
    let stamp: k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration =
        strict(get(
            &o,
            "MutatingWebhookConfiguration",
            "lattice-admission-stamp",
        ));
    let stamp_hook = &stamp.webhooks.as_ref().unwrap()[0];
    assert_eq!(stamp_hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(stamp_hook.side_effects, "None");
    // Exactly the two kinds the operator reads stamps of, each at its scope.
    let stamp_rules = stamp_hook.rules.as_ref().unwrap();
    let stamped: Vec<(Vec<String>, Option<String>)> = stamp_rules
        .iter()
        .map(|r| (r.resources.clone().unwrap_or_default(), r.scope.clone()))
        .collect();
    assert_eq!(
        stamped,
        [
            (
                vec!["cedarpolicies".to_owned()],
                Some("Namespaced".to_owned())
            ),
            (
                vec!["latticerestores".to_owned()],
                Some("Cluster".to_owned())
            ),
        ]
    );
    let stamp_ref = stamp_hook.client_config.service.as_ref().unwrap();
    assert_eq!(stamp_ref.path.as_deref(), Some("/mutate"));
    assert_eq!(stamp_ref.name, "lattice-webhook");
    let args = get(&o, "Deployment", "lattice-webhook")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(
        args.contains("--admission-key=/etc/lattice/admission/key"),
        "{args}"
    );
    let config: ValidatingWebhookConfiguration =
        strict(get(&o, "ValidatingWebhookConfiguration", "lattice-webhook"));

    // Fail closed, within 3 s, no side effects, v1 reviews, every Lattice kind.
    let hooks = config.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.timeout_seconds, Some(3));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.admission_review_versions, vec!["v1"]);
    let rules = hook.rules.as_ref().unwrap();
    assert!(rules.iter().any(|r| {
        r.api_groups.as_deref() == Some(&["lattice.dev".to_owned()][..])
            && r.operations
                .as_ref()
                .unwrap()
                .iter()
                .any(|op| op == "DELETE")
    }));
    // No namespace is exempt: a Lattice write in lattice-system is a Cedar question too.
    // The cluster cannot lock itself out because only lattice.dev objects are sent.
    assert!(
        hook.namespace_selector
            .as_ref()
            .is_none_or(|s| s.match_expressions.is_none() && s.match_labels.is_none()),
        "Lattice kinds are never exempt by namespace"
    );
    assert!(
        rules
            .iter()
            .all(|r| { r.api_groups.as_deref() == Some(&["lattice.dev".to_owned()][..]) })
    );

    // The webhook calls the Service, which selects the Deployment's pods on its port.
    let svc_ref = hook.client_config.service.as_ref().unwrap();
    assert_eq!(svc_ref.path.as_deref(), Some("/validate"));
    let service = get(&o, "Service", &svc_ref.name);
    assert_eq!(service["metadata"]["namespace"], svc_ref.namespace.as_str());
    assert_eq!(
        service["spec"]["ports"][0]["port"],
        svc_ref.port.unwrap_or(443)
    );
    let deployment = get(&o, "Deployment", "lattice-webhook");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the Service selects the webhook pods");
    }
    // Three replicas, spread over nodes, two kept through disruptions.
    assert_eq!(deployment["spec"]["replicas"], 3);
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(anti.is_object(), "anti-affinity");
    assert_eq!(
        pdb.spec.unwrap().min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))
    );

    // cert-manager: the serving certificate names the Service, lands in the Secret the pods
    // mount, and its CA is injected into the webhook configuration.
    let inject = config.metadata.annotations.unwrap()["cert-manager.io/inject-ca-from"].clone();
    let (ns, name) = inject.split_once('/').unwrap();
    let cert = get(&o, "Certificate", name);
    assert_eq!(cert["metadata"]["namespace"], ns);
    let dns: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(dns.contains(&format!("{}.{}.svc", svc_ref.name, svc_ref.namespace).as_str()));
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == cert["spec"]["secretName"])
    );
    let issuer = cert["spec"]["issuerRef"]["name"].as_str().unwrap();
    let ca = get(&o, "Issuer", issuer);
    let ca_cert = get(
        &o,
        "Certificate",
        ca["spec"]["ca"]["secretName"].as_str().unwrap(),
    );
    assert_eq!(ca_cert["spec"]["isCA"], true);
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "webhook");
    assert!(args.contains(&"--tls-cert=/etc/lattice/tls/tls.crt"));
}

/// `(apiVersion, kind, plural)` of every entry of the operator's `DERIVED` table, read from
/// its source: the compiler cannot depend on the controllers, and the RBAC must follow the
/// table, not a copy of it.
fn derived_kinds() -> Vec<(String, String, String)> {
    let path = root().join("controllers/src/operator/resources.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("pub const DERIVED")
        .expect("resources.rs declares DERIVED");
    let table = &text[start..];
    let table = &table[..table.find("\n];").expect("DERIVED ends")];
    let mut out = Vec::new();
    for (at, _) in table.match_indices("k(") {
        if !table[..at].ends_with(char::is_whitespace) {
            continue;
        }
        let call = &table[at + 2..];
        let call = &call[..call.find(')').unwrap()];
        let strings: Vec<&str> = call.split('"').skip(1).step_by(2).collect();
        assert_eq!(
            strings.len(),
            3,
            "k(apiVersion, kind, plural, layer): {call}"
        );
        out.push((
            strings[0].to_owned(),
            strings[1].to_owned(),
            strings[2].to_owned(),
        ));
    }
    out
}

/// `(apiGroup, resource, verb)` of every grant of `rules`: wildcards stay literal, and
/// grants limited to some names are told apart by `names`.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.non_resource_urls.is_none(), "no non-resource URLs");
        let names = rule.resource_names.clone().unwrap_or_default();
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone(), names.clone()));
                }
            }
        }
    }
    out
}

fn bound_to(subjects: &Option<Vec<Subject>>, account: &str, namespace: &str) -> bool {
    subjects.iter().flatten().any(|s| {
        s.kind == "ServiceAccount" && s.name == account && s.namespace.as_deref() == Some(namespace)
    })
}

#[test]
fn operator_manifests_validate_and_grant_exactly_what_the_operator_does() {
    let o = objects("deploy/operator");
    let deployment = get(&o, "Deployment", "lattice-operator");

    validate_all(&o);
    if let Some(dir) = reference_dir() {
        assert!(
            Validators::load(&dir).check(deployment).is_some(),
            "the Deployment is checked against apps/v1"
        );
    }

    // The pods run as the ServiceAccount the roles are bound to, in the namespace of the
    // Lease.
    let pod = &deployment["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap();
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(namespace, "lattice-system");
    let sa = get(&o, "ServiceAccount", account);
    assert_eq!(sa["metadata"]["namespace"], namespace);
    let cluster_role: ClusterRole = strict(get(&o, "ClusterRole", "lattice-operator"));
    let cluster_binding: ClusterRoleBinding =
        strict(get(&o, "ClusterRoleBinding", "lattice-operator"));
    assert_eq!(cluster_binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&cluster_binding.role_ref.name),
        cluster_role.metadata.name.as_ref()
    );
    assert!(bound_to(&cluster_binding.subjects, account, namespace));
    let (roles, bindings): (Vec<_>, Vec<_>) = (
        o.values().filter(|v| v["kind"] == "Role").collect(),
        o.values().filter(|v| v["kind"] == "RoleBinding").collect(),
    );
    assert_eq!(
        (roles.len(), bindings.len()),
        (1, 1),
        "one Role, bound once"
    );
    let role: Role = strict(roles[0]);
    let binding: RoleBinding = strict(bindings[0]);
    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace));
    assert_eq!(binding.metadata.namespace.as_deref(), Some(namespace));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    assert!(bound_to(&binding.subjects, account, namespace));

    // Cluster-wide: watch Lattice objects and Namespaces, write Lattice status, and apply
    // (patch, and create: an apply that creates is authorized as a create), delete and
    // sweep (list) every derived kind, and watch it for drift (get, and update: a drifted
    // object is compared by a dry-run update and replaced whole); evidence ConfigMaps are
    // listed and applied.
    let derived = derived_kinds();
    assert!(derived.len() >= 10, "DERIVED read: {derived:?}");
    let mut wanted = BTreeSet::new();
    let mut want = |group: &str, resource: &str, verbs: &[&str]| {
        for verb in verbs {
            wanted.insert((group.into(), resource.into(), (*verb).into(), Vec::new()));
        }
    };
    want("lattice.dev", "*", &["get", "list", "watch"]);
    want("lattice.dev", "*/status", &["patch"]);
    // The Pod Security label it enforces is written on each namespace.
    want("", "namespaces", &["get", "list", "watch", "patch"]);
    want("", "configmaps", &["list", "create", "patch"]);
    // Events on what it acts for (a repeat patches the event's series).
    want("events.k8s.io", "events", &["create", "patch"]);
    // The Kubernetes kinds it decides and scans are watched (read only).
    for kind in lattice_schemas::manifest::core::CoreKind::ALL {
        let group = kind.api_version().split_once('/').map_or("", |(g, _)| g);
        want(group, kind.plural(), &["get", "list", "watch"]);
    }
    for (api_version, kind, plural) in &derived {
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        assert!(!kind.is_empty());
        want(
            group,
            plural,
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        );
    }
    let granted = grants(&cluster_role.rules.unwrap_or_default());
    let missing: Vec<_> = wanted.difference(&granted).collect();
    assert!(missing.is_empty(), "the ClusterRole lacks {missing:?}");
    let extra: Vec<_> = granted.difference(&wanted).collect();
    assert!(extra.is_empty(), "the ClusterRole grants more: {extra:?}");

    // In its own namespace: the one Lease, created, read and renewed.
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let lease = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .unwrap_or("lattice-operator");
    let leases = |verb: &str, names: &[&str]| {
        (
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            verb.to_owned(),
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
    };
    let wanted = BTreeSet::from([
        leases("create", &[]),
        leases("get", &[lease]),
        leases("update", &[lease]),
    ]);
    assert_eq!(grants(&role.rules.unwrap_or_default()), wanted);

    // `run`, serving the webhook with the certificate deploy/webhook issues; the Lease named
    // after the pod, in the pod's namespace.
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(args[0], "run");
    // The rule packs are compiled in: no pack directory is mounted or named.
    assert!(
        !args.iter().any(|a| a.starts_with("--policies")),
        "{args:?}"
    );
    for arg in [
        "--admission-key=/etc/lattice/admission/key",
        "--tls-cert=/etc/lattice/tls/tls.crt",
        "--tls-key=/etc/lattice/tls/tls.key",
        "--webhook-addr=0.0.0.0:8443",
    ] {
        assert!(args.contains(&arg), "{arg}");
    }
    let container = &pod["containers"][0];
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = container["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{name} from {field}"
        );
    }
    assert_eq!(container["ports"][0]["containerPort"], 8443);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path);
        assert_eq!(get["scheme"], "HTTPS");
        assert_eq!(get["port"], container["ports"][0]["name"]);
    }
    assert!(container["resources"]["requests"].is_object());
    assert!(container["resources"]["limits"].is_object());
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "the Deployment selects its pods");
    }
    assert_eq!(pod_labels["app.kubernetes.io/name"], "lattice-operator");

    // Hardened and mounted like the webhook's pods.
    let webhook = objects("deploy/webhook");
    let webhook_pod = &get(&webhook, "Deployment", "lattice-webhook")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"], webhook_pod["securityContext"]);
    assert_eq!(
        container["securityContext"],
        webhook_pod["containers"][0]["securityContext"]
    );
    let cert = get(&webhook, "Certificate", "lattice-webhook");
    let tls = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == cert["spec"]["secretName"])
        .expect("the webhook's serving certificate is mounted");
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| {
                m["name"] == tls["name"]
                    && m["mountPath"] == "/etc/lattice/tls"
                    && m["readOnly"] == true
            })
    );
}

/// Checks every object of `o` against the reference schemas (when present).
fn validate_all(o: &BTreeMap<(String, String), Value>) {
    if let Some(dir) = reference_dir() {
        let validators = Validators::load(&dir);
        for v in o.values() {
            if let Some(errors) = validators.check(v) {
                assert!(
                    errors.is_empty(),
                    "{} {}: {errors:?}",
                    v["kind"],
                    v["metadata"]["name"]
                );
            }
        }
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn the_agent_is_granted_exactly_what_it_does_and_impersonation_for_the_proxy() {
    let o = objects("deploy/agent");
    validate_all(&o);
    let deployment = get(&o, "Deployment", "lattice-agent");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "lattice-agent");
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "one stream per cluster: one agent"
    );
    assert_eq!(pod["containers"][0]["args"][0], "agent");
    // Calls below go to this cluster's own proxy, trusting the CA the cell publishes; the
    // ConfigMap is optional, for a leaf cluster has no cell.
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains("--local-proxy=https://lattice-cell.lattice-system.svc")
            && args.contains("--local-proxy-ca=/etc/lattice/cell-ca/ca.crt"),
        "{args}"
    );
    let ca = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "cell-ca")
        .expect("the cell CA volume");
    assert_eq!(ca["configMap"]["name"], "lattice-cell-ca");
    assert_eq!(ca["configMap"]["optional"], true);
    assert!(
        pod["containers"][0].get("ports").is_none(),
        "it dials out; nothing listens"
    );

    let cluster_role: ClusterRole = strict(get(&o, "ClusterRole", "lattice-agent"));
    let binding: ClusterRoleBinding = strict(get(&o, "ClusterRoleBinding", "lattice-agent"));
    assert!(bound_to(
        &binding.subjects,
        "lattice-agent",
        "lattice-system"
    ));
    let verb = |g: &str, r: &str, v: &str, n: &[&str]| (g.into(), r.into(), v.into(), names(n));
    let mut wanted = BTreeSet::from([verb("", "nodes", "list", &[])]);
    for v in ["get", "list", "create", "patch", "delete"] {
        for r in [
            "cedarpolicies",
            "trustpolicies",
            "secretproviders",
            "oidcproviders",
        ] {
            wanted.insert(verb("lattice.dev", r, v, &[]));
        }
    }
    // Proxied calls run as their caller: users, their groups, ServiceAccount names.
    for r in ["users", "groups", "serviceaccounts"] {
        wanted.insert(verb("", r, "impersonate", &[]));
    }
    // The clusters below this one, reported to the parent; the workloads and namespaces
    // whose cross-cluster declarations it reports.
    for r in [
        "latticeclusters",
        "latticeservices",
        "latticejobs",
        "latticemodels",
    ] {
        wanted.insert(verb("lattice.dev", r, "list", &[]));
    }
    // Its own LatticeCluster and InfraProvider, handed over at the end of a pivot: create
    // only here; get and patch by name come with its bootstrap manifests.
    for r in ["latticeclusters", "infraproviders"] {
        wanted.insert(verb("lattice.dev", r, "create", &[]));
    }
    wanted.insert(verb("", "namespaces", "list", &[]));
    // The objects of the cross-cluster routes its parent decided, and no other kind.
    for (g, r) in [
        ("networking.istio.io", "serviceentries"),
        ("security.istio.io", "authorizationpolicies"),
        ("cilium.io", "ciliumnetworkpolicies"),
    ] {
        for v in ["list", "create", "patch", "delete"] {
            wanted.insert(verb(g, r, v, &[]));
        }
    }
    // A pivot's objects: the Cluster API resources a move carries, with their status, and
    // their namespace's Secrets and ConfigMaps, write-only.
    for (group, resources) in lattice_clusters::pivot::MOVED {
        for r in *resources {
            for v in ["get", "create", "patch"] {
                wanted.insert(verb(group, r, v, &[]));
            }
            wanted.insert(verb(group, &format!("{r}/status"), "patch", &[]));
        }
    }
    for r in ["namespaces", "secrets", "configmaps"] {
        for v in ["create", "patch"] {
            wanted.insert(verb("", r, v, &[]));
        }
    }
    let granted = grants(&cluster_role.rules.unwrap_or_default());
    assert_eq!(granted, wanted);
    assert!(
        !granted
            .iter()
            .any(|(g, r, v, _)| v == "*" || r == "*" || g == "*"),
        "no wildcards"
    );

    let role: Role = strict(get(&o, "Role", "lattice-agent"));
    let role_binding: RoleBinding = strict(get(&o, "RoleBinding", "lattice-agent"));
    assert_eq!(role.metadata.namespace.as_deref(), Some("lattice-system"));
    assert!(bound_to(
        &role_binding.subjects,
        "lattice-agent",
        "lattice-system"
    ));
    let secrets = ["lattice-bootstrap", "lattice-agent-credentials"];
    assert_eq!(
        grants(&role.rules.unwrap_or_default()),
        BTreeSet::from([
            verb("", "secrets", "get", &secrets),
            verb("", "secrets", "patch", &secrets),
            verb("", "secrets", "create", &[]),
            // The mesh relay it shares with this cluster's cell.
            verb("", "configmaps", "get", &["lattice-mesh-relay"]),
            verb("", "configmaps", "patch", &["lattice-mesh-relay"]),
            verb("", "configmaps", "create", &[]),
        ])
    );
}

#[test]
fn the_cell_adds_only_its_secrets_its_ca_and_a_service_to_the_operator() {
    let o = objects("deploy/cell");
    validate_all(&o);
    let role: Role = strict(get(&o, "Role", "lattice-operator-cell"));
    let binding: RoleBinding = strict(get(&o, "RoleBinding", "lattice-operator-cell"));
    assert_eq!(role.metadata.namespace.as_deref(), Some("lattice-system"));
    assert!(bound_to(
        &binding.subjects,
        "lattice-operator",
        "lattice-system"
    ));
    let granted = grants(&role.rules.unwrap_or_default());
    let verb = |g: &str, r: &str, v: &str, n: &[&str]| (g.into(), r.into(), v.into(), names(n));
    let mut wanted = BTreeSet::new();
    for v in ["get", "list", "create", "patch", "delete"] {
        wanted.insert(verb("", "secrets", v, &[]));
    }
    wanted.insert(verb(
        "discovery.k8s.io",
        "endpointslices",
        "patch",
        &["lattice-cell-leader"],
    ));
    wanted.insert(verb("discovery.k8s.io", "endpointslices", "create", &[]));
    // The CA's certificate, published for this cluster's own agent.
    wanted.insert(verb("", "configmaps", "patch", &["lattice-cell-ca"]));
    wanted.insert(verb("", "configmaps", "create", &[]));
    // The mesh relay it shares with this cluster's agent.
    wanted.insert(verb("", "configmaps", "get", &["lattice-mesh-relay"]));
    wanted.insert(verb("", "configmaps", "patch", &["lattice-mesh-relay"]));
    assert_eq!(granted, wanted);
    // The cell writes its own side of cross-cluster routes: ServiceEntries, nothing else
    // beyond the operator's grants.
    let peering: ClusterRole = strict(get(&o, "ClusterRole", "lattice-operator-peering"));
    assert!(bound_to(
        &strict::<ClusterRoleBinding>(get(&o, "ClusterRoleBinding", "lattice-operator-peering"))
            .subjects,
        "lattice-operator",
        "lattice-system"
    ));
    assert_eq!(
        grants(&peering.rules.unwrap_or_default()),
        ["list", "create", "patch", "delete"]
            .into_iter()
            .map(|v| verb("networking.istio.io", "serviceentries", v, &[]))
            .collect::<BTreeSet<_>>()
    );
    // Provisioning writes children's CAPI objects and bootstrap Secrets, and reads only
    // the CAPI Cluster back.
    let provisioning: ClusterRole = strict(get(&o, "ClusterRole", "lattice-operator-provisioning"));
    assert!(bound_to(
        &strict::<ClusterRoleBinding>(get(
            &o,
            "ClusterRoleBinding",
            "lattice-operator-provisioning"
        ))
        .subjects,
        "lattice-operator",
        "lattice-system"
    ));
    let mut wanted = BTreeSet::new();
    for (group, resources) in [
        ("", &["namespaces", "secrets"][..]),
        ("cluster.x-k8s.io", &["clusters", "machinedeployments"][..]),
        (
            "controlplane.cluster.x-k8s.io",
            &["kubeadmcontrolplanes", "rke2controlplanes"][..],
        ),
        (
            "bootstrap.cluster.x-k8s.io",
            &["kubeadmconfigtemplates", "rke2configtemplates"][..],
        ),
        (
            "infrastructure.cluster.x-k8s.io",
            &[
                "awsclusters",
                "awsmachinetemplates",
                "proxmoxclusters",
                "proxmoxmachinetemplates",
                "openstackclusters",
                "openstackmachinetemplates",
                "dockerclusters",
                "dockermachinetemplates",
            ][..],
        ),
    ] {
        for r in resources {
            for v in ["create", "patch"] {
                wanted.insert(verb(group, r, v, &[]));
            }
        }
    }
    wanted.insert(verb("cluster.x-k8s.io", "clusters", "get", &[]));
    assert_eq!(grants(&provisioning.rules.unwrap_or_default()), wanted);
    // The pivot lists, pauses, releases and deletes exactly what a move carries, and
    // records `pivoted`.
    let pivot: ClusterRole = strict(get(&o, "ClusterRole", "lattice-operator-pivot"));
    assert!(bound_to(
        &strict::<ClusterRoleBinding>(get(&o, "ClusterRoleBinding", "lattice-operator-pivot"))
            .subjects,
        "lattice-operator",
        "lattice-system"
    ));
    let mut wanted = BTreeSet::new();
    for (group, resources) in lattice_clusters::pivot::MOVED {
        for r in *resources {
            for v in ["list", "patch", "delete"] {
                wanted.insert(verb(group, r, v, &[]));
            }
        }
    }
    for r in ["secrets", "configmaps"] {
        for v in ["list", "patch", "delete"] {
            wanted.insert(verb("", r, v, &[]));
        }
    }
    wanted.insert(verb("lattice.dev", "latticeclusters/status", "patch", &[]));
    let granted = grants(&pivot.rules.unwrap_or_default());
    assert_eq!(granted, wanted);
    assert!(
        !granted
            .iter()
            .any(|(g, r, v, _)| v == "*" || r == "*" || g == "*"),
        "no wildcards"
    );
    // Decommission holds children with its finalizer, takes a pivoted child's objects
    // back (what a move carries, with status), and deletes the child's namespace.
    let decommission: ClusterRole = strict(get(&o, "ClusterRole", "lattice-operator-decommission"));
    assert!(bound_to(
        &strict::<ClusterRoleBinding>(get(
            &o,
            "ClusterRoleBinding",
            "lattice-operator-decommission"
        ))
        .subjects,
        "lattice-operator",
        "lattice-system"
    ));
    let mut wanted = BTreeSet::new();
    for (group, resources) in lattice_clusters::pivot::MOVED {
        for r in *resources {
            for v in ["get", "create"] {
                wanted.insert(verb(group, r, v, &[]));
            }
            wanted.insert(verb(group, &format!("{r}/status"), "patch", &[]));
        }
    }
    wanted.insert(verb("", "configmaps", "create", &[]));
    wanted.insert(verb("", "namespaces", "delete", &[]));
    for v in ["get", "patch"] {
        wanted.insert(verb("lattice.dev", "latticeclusters", v, &[]));
    }
    assert_eq!(grants(&decommission.rules.unwrap_or_default()), wanted);
    // The proxy reviews tokens, cluster-wide, and does nothing else.
    let proxy_role: ClusterRole = strict(get(&o, "ClusterRole", "lattice-operator-proxy"));
    let proxy_binding: ClusterRoleBinding =
        strict(get(&o, "ClusterRoleBinding", "lattice-operator-proxy"));
    assert!(bound_to(
        &proxy_binding.subjects,
        "lattice-operator",
        "lattice-system"
    ));
    assert_eq!(
        grants(&proxy_role.rules.unwrap_or_default()),
        BTreeSet::from([verb("authentication.k8s.io", "tokenreviews", "create", &[])])
    );
    // No selector: the leader's EndpointSlice routes it, matched by the ports' names.
    let service = get(&o, "Service", "lattice-cell");
    assert!(service["spec"].get("selector").is_none(), "{service}");
    assert_eq!(service["spec"]["ports"][0]["name"], "grpc");
    assert_eq!(service["spec"]["ports"][1]["name"], "proxy");
    assert_eq!(service["spec"]["ports"][2]["name"], "bootstrap");
    assert_eq!(service["spec"]["ports"][2]["port"], 8443);
    // In the pod it listens on 8444: the operator's webhook has 8443 (`lattice install`'s
    // unit tests apply the patch and check that no two listeners share a port).
    assert_eq!(service["spec"]["ports"][2]["targetPort"], 8444);
    // The patch turns the cell on, names the Service, and gives the pod its IP.
    let kustomization =
        std::fs::read_to_string(root().join("deploy/cell/kustomization.yaml")).unwrap();
    for needed in [
        "--cell-listen=0.0.0.0:50051",
        "--cell-address=",
        "--cell-service=lattice-cell",
        "--proxy-listen=0.0.0.0:6443",
        "--bootstrap-listen=0.0.0.0:8444",
        "name: bootstrap",
        "--proxy-trusted-forwarder=system:serviceaccount:lattice-system:lattice-agent",
        "name: cell",
        "name: proxy",
        "LATTICE_CLUSTER_NAME",
        "POD_IP",
        "status.podIP",
    ] {
        assert!(kustomization.contains(needed), "{needed}");
    }
}

/// The identity every derived external-dns instance runs as: the account and namespace the
/// compiler names, bound to a role that only reads routes and namespaces.
#[test]
fn external_dns_runs_as_a_read_only_account_the_compiler_names() {
    use lattice_schemas::crd::issuer::EXTERNAL_DNS_NAMESPACE;
    let o = objects("deploy/external-dns");
    validate_all(&o);
    let account = lattice_compiler::issuer::EXTERNAL_DNS_ACCOUNT;
    let sa = get(&o, "ServiceAccount", account);
    assert_eq!(sa["metadata"]["namespace"], EXTERNAL_DNS_NAMESPACE);
    get(&o, "Namespace", EXTERNAL_DNS_NAMESPACE);
    let role: ClusterRole = strict(get(&o, "ClusterRole", "lattice-external-dns"));
    let binding: ClusterRoleBinding = strict(get(&o, "ClusterRoleBinding", "lattice-external-dns"));
    assert!(bound_to(&binding.subjects, account, EXTERNAL_DNS_NAMESPACE));
    for rule in role.rules.unwrap_or_default() {
        assert_eq!(rule.verbs, ["get", "list", "watch"], "{rule:?}");
    }
}
