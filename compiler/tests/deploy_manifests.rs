//! The manifests under `deploy/` are Kubernetes objects like the derived ones: checked here
//! against the real schemas of `../shared/reference/` where there are some (core/v1,
//! apps/v1), read strictly as typed objects otherwise, and checked for the properties
//! admission depends on (fail closed, 3 s, no lock-out, certificates wired through).

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{Validators, reference_dir, root};

fn objects() -> BTreeMap<(String, String), Value> {
    let dir = root().join("deploy/webhook");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&kustomization);
    assert!(errors.is_empty());
    let listed: Vec<String> = docs[0].value["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
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
    let o = objects();

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
    let _: ClusterRole = strict(get(&o, "ClusterRole", "lattice-webhook"));
    let _: ClusterRoleBinding = strict(get(&o, "ClusterRoleBinding", "lattice-webhook"));
    let pdb: PodDisruptionBudget = strict(get(&o, "PodDisruptionBudget", "lattice-webhook"));
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
    // The cluster cannot lock itself out.
    let selector = hook.namespace_selector.as_ref().unwrap();
    let exempt = selector.match_expressions.as_ref().unwrap();
    assert!(exempt.iter().any(|e| {
        e.key == "kubernetes.io/metadata.name"
            && e.operator == "NotIn"
            && ["kube-system", "lattice-system"]
                .iter()
                .all(|ns| e.values.as_ref().unwrap().iter().any(|v| v == ns))
    }));

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
