//! Derived objects: complete, deterministic, denied whole when a gate denies, and valid
//! against the real schemas in `../shared/reference/` (Kubernetes 1.31 OpenAPI, the External
//! Secrets CRD), made strict so an unknown field fails too.

mod support;

use lattice_compiler::{CompileContext, CompileError};
use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_gates::evaluate;
use lattice_schemas::crd::CedarPolicy;
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};
use support::{Problems, Validators, reference_dir, root};

/// The example world under policies that allow every derivation question.
fn permissive() -> (World, Snapshot) {
    let w = World::load(&[root().join("examples/world")]).unwrap();
    let mut store = PolicyStore::new();
    let mut all = CedarPolicy::new(
        "allow-derivation",
        lattice_schemas::crd::policy::CedarPolicySpec {
            policies: r#"@id("all") permit(principal, action in [Lattice::Action::"DeployImage", Lattice::Action::"AccessSecret", Lattice::Action::"AccessVolume", Lattice::Action::"AccessExternalEndpoint", Lattice::Action::"OverrideSecurity", Lattice::Action::"AllowWildcard", Lattice::Action::"ExposeHost", Lattice::Action::"UseGpu", Lattice::Action::"ConsumeQuota", Lattice::Action::"Connect"], resource);"#.into(),
            ..Default::default()
        },
    );
    all.metadata.namespace = Some("test".into());
    store.apply_object(&all).unwrap();
    let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    (w, s)
}

fn services(w: &World) -> Vec<&lattice_schemas::crd::LatticeService> {
    w.objects()
        .filter_map(|(_, o)| {
            if let Object::Service(s) = o {
                Some(s)
            } else {
                None
            }
        })
        .collect()
}

fn compile_service(
    svc: &lattice_schemas::crd::LatticeService,
    report: &lattice_gates::GateReport,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    lattice_compiler::compile(&Object::Service(svc.clone()), report, ctx)
}

#[test]
fn every_derived_object_validates_against_the_reference_schemas() {
    let Some(dir) = reference_dir() else { return };
    let validators = Validators::load(&dir);
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let mut checked = 0;
    let mut kinds = std::collections::BTreeSet::new();
    let mut objects: Vec<Value> = lattice_compiler::namespace_baseline(&s, &w);
    assert!(
        !objects.is_empty(),
        "the example world's namespaces have baselines"
    );
    // The whole derivation: each workload's objects, its egress outside the mesh and both
    // sides of its edges.
    let plan = lattice_gates::MeshPlan::plan(&s, &w);
    for (_, o) in w.objects() {
        if o.is_workload() {
            let derived = lattice_compiler::derive_in(&s, &w, &plan, &ctx, o)
                .unwrap_or_else(|e| panic!("{e}"));
            objects.extend(derived.objects);
        }
        // The example job is scheduled (a CronJob); run once it is a plain Job.
        if let Object::Job(j) = o {
            let mut once = j.clone();
            once.spec.schedule = None;
            let once = Object::Job(once);
            objects.extend(lattice_compiler::compile(&once, &evaluate(&s, &once), &ctx).unwrap());
        }
    }
    for o in &objects {
        kinds.insert(o["kind"].as_str().unwrap().to_owned());
        let problems = validators.problems(o);
        assert!(
            problems.is_empty(),
            "{} {}: {problems:#?}",
            o["kind"],
            o["metadata"]["name"]
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} objects checked");
    // The validators are strict: a stray field deep in a derived object is an error.
    let svc = services(&w)[0];
    let mut deployment = compile_service(svc, &evaluate(&s, &Object::Service(svc.clone())), &ctx)
        .unwrap()
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] =
        json!(false);
    assert!(
        !validators.check(&deployment).unwrap().is_empty(),
        "an unknown field must fail validation"
    );
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("runAsRoot");
    deployment["spec"]["replicas"] = json!("two");
    assert!(
        !validators.check(&deployment).unwrap().is_empty(),
        "a wrong type must fail validation"
    );
    for k in [
        "ServiceAccount",
        "Deployment",
        "Service",
        "ExternalSecret",
        "ConfigMap",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "ScaledObject",
        "VMServiceScrape",
        "HTTPRoute",
        "Gateway",
        "Certificate",
        "Canary",
        "Job",
        "CronJob",
        "TracingPolicyNamespaced",
        "CiliumNetworkPolicy",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "HelmRepository",
        "HelmRelease",
    ] {
        assert!(
            kinds.contains(k),
            "no {k} derived from the example world ({kinds:?})"
        );
    }
}

#[test]
fn derivation_is_deterministic_and_follows_the_spec() {
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let gateway = services(&w)
        .into_iter()
        .find(|x| x.metadata.name.as_deref() == Some("gateway"))
        .unwrap();
    let report = evaluate(&s, &Object::Service(gateway.clone()));
    let a = compile_service(gateway, &report, &ctx).unwrap();
    let b = compile_service(gateway, &report, &ctx).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap(),
        "same input, same bytes"
    );
    let deployment = a.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let main = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gateway")
        .unwrap();
    // Restricted by default.
    assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(main["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        main["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    // A variable that is exactly one secret reads the ExternalSecret's target.
    let key = main["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "STRIPE_API_KEY")
        .unwrap();
    assert_eq!(key["valueFrom"]["secretKeyRef"]["key"], "apikey");
    let secret_name = key["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap();
    assert!(
        a.iter()
            .any(|o| o["kind"] == "ExternalSecret" && o["spec"]["target"]["name"] == secret_name)
    );
    // Service placeholders resolve to cluster DNS with the peer's port.
    let ledger = main["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEDGER_URL")
        .unwrap();
    assert!(
        ledger["value"]
            .as_str()
            .unwrap()
            .starts_with("http://ledger.payments.svc.cluster.local:"),
        "{ledger}"
    );
    // The sidecar's allowed capability is added; the sysctl reaches the pod.
    let relay = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "syslog-relay")
        .unwrap();
    assert_eq!(
        relay["securityContext"]["capabilities"]["add"],
        json!(["NET_BIND_SERVICE"])
    );
    assert!(
        pod["securityContext"]["sysctls"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    // Autoscaling becomes a ScaledObject on the same bounds.
    let scaled = a
        .iter()
        .find(|o| o["kind"] == "ScaledObject")
        .expect("gateway autoscales");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "gateway");
    assert_eq!(
        scaled["spec"]["maxReplicaCount"],
        json!(gateway.spec.autoscaling.as_ref().unwrap().max)
    );
    // Rollouts follow the config hash; two replicas or more get a disruption budget.
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"]["lattice.dev/config-hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(a.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
}

#[test]
fn mixed_text_and_secrets_render_through_a_templated_external_secret() {
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let svc: lattice_schemas::crd::LatticeService = serde_json::from_value(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {
            "containers": {"main": {"image": "ghcr.io/lattice-demo/orders:1.0.0",
                "variables": {"DATABASE_URL": "postgres://orders:${resources.db.password}@db:5432/orders"}}},
            "resources": {"db": {"type": "secret", "id": "shop/orders/db", "params": {"provider": "vault-prod", "keys": ["password"]}}}
        }
    }))
    .unwrap();
    let report = evaluate(&s, &Object::Service(svc.clone()));
    let objects = compile_service(&svc, &report, &ctx).unwrap();
    let templated = objects
        .iter()
        .find(|o| {
            o["kind"] == "ExternalSecret" && o["spec"]["target"]["template"]["data"].is_object()
        })
        .unwrap();
    assert_eq!(
        templated["spec"]["target"]["template"]["data"]["DATABASE_URL"],
        "postgres://orders:{{ .db_password }}@db:5432/orders"
    );
    assert_eq!(
        templated["spec"]["data"][0]["remoteRef"],
        json!({"key": "shop/orders/db", "property": "password"})
    );
    if let Some(dir) = reference_dir() {
        assert_eq!(Validators::load(&dir).check(templated), Some(vec![]));
    }
}

#[test]
fn shared_volumes_mount_the_owners_claim() {
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let find = |n: &str| {
        services(&w)
            .into_iter()
            .find(|x| x.metadata.name.as_deref() == Some(n))
            .unwrap()
    };
    let compile = |n: &str| {
        compile_service(
            find(n),
            &evaluate(&s, &Object::Service(find(n).clone())),
            &ctx,
        )
        .unwrap()
    };
    let api = compile("api");
    let claim = api
        .iter()
        .find(|o| o["kind"] == "PersistentVolumeClaim")
        .expect("shop/api owns product-images");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    let web = compile("web");
    assert!(
        !web.iter().any(|o| o["kind"] == "PersistentVolumeClaim"),
        "a consumer does not create the claim"
    );
    let deployment = web.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]),
        "{volumes:#?}"
    );
}

#[test]
fn a_denied_gate_derives_nothing_and_says_why() {
    let mut w = World::load(&[root().join("examples/world")]).unwrap();
    let store = PolicyStore::load_packs(&root().join("policies")).unwrap();
    // web, moved to an image of a registry that requires signatures, unsigned.
    let mut web = services(&w)
        .into_iter()
        .find(|x| x.metadata.name.as_deref() == Some("web"))
        .unwrap()
        .clone();
    web.spec.workload.containers.get_mut("nginx").unwrap().image =
        "ghcr.io/lattice-demo/web:9.9.9".into();
    w.upsert(Object::Service(web.clone()));
    let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    let report = evaluate(&s, &Object::Service(web.clone()));
    match compile_service(&web, &report, &CompileContext::of(&w, &s)) {
        Err(CompileError::Denied { workload, gates }) => {
            assert_eq!(workload, "shop/web");
            assert!(
                gates
                    .iter()
                    .any(|g| g.action == "DeployImage" && g.raised_by == "nginx"),
                "{gates:#?}"
            );
            assert!(gates.iter().all(|g| g.advice.is_some()));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn allowed_edges_get_network_objects_and_one_sided_ones_none() {
    use lattice_compiler::compile_mesh;
    use lattice_gates::MeshPlan;
    let mut w = World::load(&[root().join("examples/world")]).unwrap();
    let mut store = PolicyStore::load_packs(&root().join("policies")).unwrap();
    for (_, o) in w.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).unwrap();
        }
    }
    let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    let plan = MeshPlan::plan(&s, &w);
    let objects = compile_mesh(&plan, &w);
    let policies = |objects: &[Value], kind: &str| {
        objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    // Each allowed edge: the callee's ingress and the caller's egress (L4), the callee's L7.
    let cnps = policies(&objects, "CiliumNetworkPolicy");
    assert_eq!(cnps.len(), 2 * plan.allowed().count());
    let egress: Vec<&Value> = cnps
        .iter()
        .filter(|o| o["metadata"]["labels"]["lattice.dev/direction"] == "egress")
        .collect();
    assert_eq!(egress.len(), plan.allowed().count());
    let checkout_out = egress
        .iter()
        .find(|o| {
            o["metadata"]["labels"]["lattice.dev/caller"] == "shop.checkout"
                && o["metadata"]["labels"]["lattice.dev/callee"] == "payments.ledger"
        })
        .expect("the caller's egress to the callee");
    assert_eq!(checkout_out["metadata"]["namespace"], "shop");
    assert_eq!(
        checkout_out["spec"]["endpointSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "checkout"
    );
    let to = &checkout_out["spec"]["egress"][0];
    assert_eq!(
        to["toEndpoints"][0]["matchLabels"]["k8s:io.kubernetes.pod.namespace"],
        "payments"
    );
    assert_eq!(
        to["toEndpoints"][0]["matchLabels"]["app.kubernetes.io/name"],
        "ledger"
    );
    assert!(!to["toPorts"][0]["ports"].as_array().unwrap().is_empty());
    // A caller with no allowed edge to a callee has no egress path to it.
    assert!(
        !egress.iter().any(|o| {
            o["metadata"]["labels"]["lattice.dev/caller"] == "shop.api"
                && o["metadata"]["labels"]["lattice.dev/callee"] == "payments.ledger"
        }),
        "a one-sided declaration opens no egress"
    );
    assert_eq!(
        policies(&objects, "AuthorizationPolicy").len(),
        plan.allowed().count()
    );
    let for_edge = |objects: &[Value], caller: &str, callee: &str| {
        objects.iter().any(|o| {
            o["metadata"]["labels"]["lattice.dev/caller"] == caller
                && o["metadata"]["labels"]["lattice.dev/callee"] == callee
        })
    };
    assert!(
        !for_edge(&objects, "shop.api", "payments.ledger"),
        "a one-sided declaration opens nothing"
    );
    assert!(for_edge(&objects, "shop.checkout", "payments.ledger"));
    // L7: the caller's SPIFFE identity and the callee's ports.
    let authz = objects
        .iter()
        .find(|o| {
            o["kind"] == "AuthorizationPolicy"
                && o["metadata"]["labels"]["lattice.dev/caller"] == "shop.checkout"
                && o["metadata"]["labels"]["lattice.dev/callee"] == "payments.ledger"
        })
        .unwrap();
    assert_eq!(authz["metadata"]["namespace"], "payments");
    assert_eq!(
        authz["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
        "cluster.local/ns/shop/sa/checkout"
    );
    assert!(
        objects.iter().any(|o| o["kind"] == "PeerAuthentication"),
        "legacy-postgres has a permissive port"
    );
    if let Some(dir) = reference_dir() {
        let v = Validators::load(&dir);
        for o in &objects {
            assert_eq!(
                v.check(o),
                Some(vec![]),
                "{} {}",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }
    // Completing the declaration yields its objects.
    let k = lattice_engine::ObjectKey {
        kind: "LatticeService",
        namespace: Some("payments".into()),
        name: "ledger".into(),
    };
    let Some(Object::Service(mut ledger)) = w.get(&k).cloned() else {
        panic!()
    };
    ledger.spec.workload.resources.insert(
        "api".into(),
        serde_json::from_value(
            json!({"type": "service", "direction": "inbound", "namespace": "shop"}),
        )
        .unwrap(),
    );
    w.upsert(Object::Service(ledger));
    let s2 = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    let mut plan2 = plan.clone();
    plan2.replan(&s2, &w, &k);
    let objects2 = compile_mesh(&plan2, &w);
    assert!(for_edge(&objects2, "shop.api", "payments.ledger"));
    assert_eq!(
        serde_json::to_string(&compile_mesh(&plan2, &w)).unwrap(),
        serde_json::to_string(&objects2).unwrap(),
        "deterministic"
    );
}

/// A plan that only counts its mesh edges' objects counts exactly the objects derivation
/// builds for them, and derives everything else as it is.
#[test]
fn counting_edges_counts_exactly_the_edge_objects_derivation_builds() {
    use lattice_compiler::{derive_counting_edges, derive_in};
    use lattice_gates::MeshPlan;
    use std::collections::BTreeMap;
    let (w, s) = real();
    let plan = MeshPlan::plan(&s, &w);
    let ctx = CompileContext::of(&w, &s);
    let mut counted = 0;
    for (key, o) in w.objects().filter(|(_, o)| o.is_workload()) {
        match (
            derive_in(&s, &w, &plan, &ctx, o),
            derive_counting_edges(&s, &w, &plan, &ctx, o),
        ) {
            (Ok(built), Ok(partial)) => {
                assert!(built.unbuilt.is_empty(), "{key}");
                // What counting leaves out, in order; the rest is built alike.
                let mut kept = partial.objects.iter().peekable();
                let mut left_out: BTreeMap<&str, usize> = BTreeMap::new();
                for object in &built.objects {
                    if kept.peek() == Some(&object) {
                        kept.next();
                    } else {
                        *left_out
                            .entry(object["kind"].as_str().unwrap())
                            .or_default() += 1;
                    }
                }
                assert!(kept.next().is_none(), "{key}: an object only counting made");
                assert_eq!(left_out, partial.unbuilt, "{key}");
                assert_eq!(built.warnings, partial.warnings, "{key}");
                counted += partial.unbuilt.values().sum::<usize>();
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{key}"),
            (a, b) => panic!("{key}: built {:?}, counted {:?}", a.is_ok(), b.is_ok()),
        }
    }
    // Two sides of every allowed edge between workloads: three objects in all.
    assert!(plan.allowed().count() > 0);
    assert_eq!(counted, 3 * plan.allowed().count());
}

#[test]
fn files_are_never_dropped_silently() {
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let with_files = |files: Value| -> lattice_schemas::crd::LatticeService {
        serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
            "metadata": {"name": "files", "namespace": "shop"},
            "spec": {
                "containers": {"main": {"image": "ghcr.io/lattice-demo/files:1.0.0", "files": files}},
                "resources": {"db": {"type": "secret", "id": "shop/files/db", "params": {"provider": "vault-prod", "keys": ["password"]}}}
            }
        }))
        .unwrap()
    };
    let compile = |svc: &lattice_schemas::crd::LatticeService| {
        compile_service(svc, &evaluate(&s, &Object::Service(svc.clone())), &ctx)
    };
    // Text and base64 files both land in the ConfigMap, each mounted.
    let ok = with_files(
        json!({"/etc/app.conf": {"content": "name=${metadata.name}"}, "/etc/logo.png": {"binaryContent": "iVBORw0KGgo="}}),
    );
    let objects = compile(&ok).unwrap();
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(
        cm["data"].as_object().unwrap().values().next().unwrap(),
        "name=files"
    );
    assert_eq!(cm["binaryData"].as_object().unwrap().len(), 1);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap();
    assert!(
        mounts.iter().any(|m| m["mountPath"] == "/etc/app.conf")
            && mounts.iter().any(|m| m["mountPath"] == "/etc/logo.png")
    );
    if let Some(dir) = reference_dir() {
        assert_eq!(Validators::load(&dir).check(cm), Some(vec![]));
    }
    // A file holding a secret is rendered by a templated ExternalSecret, mounted from its Secret.
    let secret =
        with_files(json!({"/etc/db.conf": {"content": "password=${resources.db.password}"}}));
    let objects = compile(&secret).unwrap();
    let es = objects
        .iter()
        .find(|o| {
            o["kind"] == "ExternalSecret" && o["spec"]["target"]["template"]["data"].is_object()
        })
        .expect("a templated ExternalSecret for the file");
    let template = es["spec"]["target"]["template"]["data"]
        .as_object()
        .unwrap();
    assert_eq!(
        template.values().next().unwrap(),
        "password={{ .db_password }}"
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "ConfigMap"),
        "a secret file never goes through a ConfigMap"
    );
    let pod =
        &objects.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    let secret_name = es["spec"]["target"]["name"].clone();
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == secret_name)
    );
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/db.conf" && m["name"] == secret_name)
    );
    if let Some(dir) = reference_dir() {
        let v = Validators::load(&dir);
        for o in &objects {
            assert_eq!(
                v.check(o).unwrap_or_default(),
                Vec::<String>::new(),
                "{}",
                o["kind"]
            );
        }
    }
    // What cannot be derived yet is an error that names it, not a missing mount.
    let source = with_files(json!({"/etc/banner.txt": {"source": "banner.txt"}}));
    assert!(compile(&source).unwrap_err().to_string().contains("source"));
}

/// The example world under its real rule packs and CedarPolicy objects, its images
/// verified against the OCI layout it carries.
fn real() -> (World, Snapshot) {
    real_with(World::load(&[root().join("examples/world")]).unwrap())
}

/// [`real`] for `w`, the example world changed.
fn real_with(w: World) -> (World, Snapshot) {
    let mut store = PolicyStore::load_packs(&root().join("policies")).unwrap();
    for (_, o) in w.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).unwrap();
        }
    }
    let layout =
        lattice_supply::layout::Layout::open(&root().join("examples/world/images")).unwrap();
    let live = lattice_engine::project::LiveFacts {
        images: lattice_supply::facts_of(&w, lattice_supply::Source::Layout(layout)),
        ..Default::default()
    };
    let s = Snapshot::build(&w, &Projection::with_live(&w, live), &store).unwrap();
    (w, s)
}

#[test]
fn every_namespace_gets_default_deny_both_ways_unless_its_opt_out_is_allowed() {
    let (w, s) = real();
    let objects = lattice_compiler::namespace_baseline(&s, &w);
    let namespaces: std::collections::BTreeSet<&str> = objects
        .iter()
        .map(|o| o["metadata"]["namespace"].as_str().unwrap())
        .collect();
    // sandbox asks to opt out and platform/sandbox-opt-out allows it; every other
    // namespace of the world has its baseline.
    assert!(s.opted_out("sandbox"));
    assert!(!namespaces.contains("sandbox"));
    for ns in ["shop", "payments", "platform", "ml"] {
        assert!(namespaces.contains(ns), "{ns} has no baseline");
        let of = |kind: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["namespace"] == ns)
                .unwrap_or_else(|| panic!("{ns}: no {kind}"))
        };
        let l4 = of("CiliumNetworkPolicy");
        assert_eq!(l4["spec"]["endpointSelector"], json!({}), "every pod");
        assert_eq!(l4["spec"]["ingress"], json!([{}]), "ingress: nothing");
        // Egress: DNS to the cluster resolver and nothing else.
        let egress = l4["spec"]["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 1);
        assert_eq!(
            egress[0]["toEndpoints"][0]["matchLabels"]["k8s:k8s-app"],
            "kube-dns"
        );
        let ports: Vec<&str> = egress[0]["toPorts"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_str().unwrap())
            .collect();
        assert_eq!(ports, ["53", "53"]);
        assert_eq!(
            of("AuthorizationPolicy")["spec"],
            json!({}),
            "L7 allow-nothing"
        );
        assert_eq!(of("PeerAuthentication")["spec"]["mtls"]["mode"], "STRICT");
    }
    if let Some(dir) = reference_dir() {
        let v = Validators::load(&dir);
        for o in &objects {
            assert_eq!(
                v.check(o),
                Some(vec![]),
                "{} {}",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }
}

#[test]
fn an_allowed_external_endpoint_opens_exactly_its_host_and_port() {
    let (w, s) = real();
    let plan = lattice_gates::MeshPlan::plan(&s, &w);
    let key = |kind, ns: &str, name: &str| lattice_engine::ObjectKey {
        kind,
        namespace: Some(ns.into()),
        name: name.into(),
    };
    let gateway = w
        .get(&key("LatticeService", "payments", "gateway"))
        .unwrap();
    let derived = lattice_compiler::derive(&s, &w, &plan, gateway).unwrap();
    let egress = derived
        .objects
        .iter()
        .find(|o| o["kind"] == "CiliumNetworkPolicy" && o["metadata"]["name"] == "gateway-egress")
        .expect("the gateway reaches Stripe");
    let rules = egress["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "one endpoint, one rule: {rules:#?}");
    assert_eq!(
        rules[0]["toFQDNs"],
        json!([{"matchName": "api.stripe.com"}])
    );
    assert_eq!(
        rules[0]["toPorts"],
        json!([{"ports": [{"port": "443", "protocol": "TCP"}]}])
    );
    // A mesh member's egress rule is opened for its own pods.
    let pg = w
        .get(&key("LatticeMeshMember", "platform", "legacy-postgres"))
        .unwrap();
    let derived = lattice_compiler::derive(&s, &w, &plan, pg).unwrap();
    let egress = derived
        .objects
        .iter()
        .find(|o| o["metadata"]["name"] == "legacy-postgres-egress")
        .expect("WAL archiving to S3");
    assert_eq!(
        egress["spec"]["egress"][0]["toFQDNs"][0]["matchName"],
        "s3.us-east-1.amazonaws.com"
    );
    // A workload that reaches nothing outside the mesh gets no egress object.
    let api = w.get(&key("LatticeService", "shop", "api")).unwrap();
    let derived = lattice_compiler::derive(&s, &w, &plan, api).unwrap();
    assert!(
        !derived
            .objects
            .iter()
            .any(|o| o["metadata"]["name"] == "api-egress")
    );
}

#[test]
fn each_side_of_a_cross_cluster_route_lets_exactly_its_peer_through_in_valid_objects() {
    use lattice_compiler::peering::{Gateway, PEERING_MANAGER, routes_objects};
    use lattice_gates::peering::{Role, Route, Workload};
    let caller = Workload::new("edge", "shop", "frontend");
    let callee = Workload::new("root", "payments", "api");
    let routes = [
        Route {
            side: caller.clone(),
            role: Role::Caller,
            peer: callee.clone(),
            peer_spiffe_id: "spiffe://root.lattice.test/ns/payments/sa/api".into(),
            peer_address: "10.1.2.3:15443".into(),
            ports: vec![8080, 9090],
        },
        Route {
            side: callee.clone(),
            role: Role::Callee,
            peer: caller.clone(),
            peer_spiffe_id: "spiffe://edge.lattice.test/ns/shop/sa/frontend".into(),
            peer_address: "gateway.edge.example.com:15443".into(),
            ports: vec![8080, 9090],
        },
        // A second caller route for the same peer from a hostname gateway: one
        // ServiceEntry per peer and namespace.
        Route {
            side: Workload::new("edge", "shop", "worker"),
            role: Role::Caller,
            peer: callee.clone(),
            peer_spiffe_id: "spiffe://root.lattice.test/ns/payments/sa/api".into(),
            peer_address: "10.1.2.3:15443".into(),
            ports: vec![8080, 9090],
        },
    ];
    let objects = routes_objects(&routes, &Gateway::default());
    let kinds: Vec<(&str, &str)> = objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("AuthorizationPolicy", "api-from-edge-shop-frontend"),
            ("CiliumNetworkPolicy", "api-from-edge-shop-frontend"),
            ("CiliumNetworkPolicy", "frontend-to-root-payments-api"),
            ("CiliumNetworkPolicy", "worker-to-root-payments-api"),
            ("ServiceEntry", "api-payments-root"),
        ]
    );
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap()
    };
    let entry = find("ServiceEntry", "api-payments-root");
    assert_eq!(entry["metadata"]["namespace"], "shop");
    assert_eq!(
        entry["spec"]["hosts"][0],
        "api.payments.root.lattice.internal"
    );
    assert_eq!(
        entry["spec"]["subjectAltNames"][0],
        "spiffe://root.lattice.test/ns/payments/sa/api"
    );
    assert_eq!(entry["spec"]["endpoints"][0]["address"], "10.1.2.3");
    assert_eq!(entry["spec"]["endpoints"][0]["ports"]["tcp-8080"], 15443);
    assert_eq!(entry["spec"]["resolution"], "STATIC");
    let egress = find("CiliumNetworkPolicy", "frontend-to-root-payments-api");
    assert_eq!(egress["spec"]["egress"][0]["toCIDR"][0], "10.1.2.3/32");
    assert_eq!(
        egress["spec"]["egress"][0]["toPorts"][0]["ports"][0]["port"],
        "15443"
    );
    let authz = find("AuthorizationPolicy", "api-from-edge-shop-frontend");
    assert_eq!(authz["metadata"]["namespace"], "payments");
    assert_eq!(
        authz["spec"]["rules"][0]["from"][0]["source"]["principals"],
        serde_json::json!(["edge.lattice.test/ns/shop/sa/frontend"])
    );
    let ingress = find("CiliumNetworkPolicy", "api-from-edge-shop-frontend");
    assert_eq!(
        ingress["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["istio"],
        "eastwestgateway"
    );
    for o in &objects {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            PEERING_MANAGER
        );
    }
    // A caller whose peer's gateway is a DNS name resolves it and opens egress by name.
    let mut by_name = routes[0].clone();
    by_name.peer_address = "gateway.root.example.com:443".into();
    let named = routes_objects(&[by_name], &Gateway::default());
    assert_eq!(named[1]["spec"]["resolution"], "DNS");
    assert_eq!(
        named[0]["spec"]["egress"][0]["toFQDNs"][0]["matchName"],
        "gateway.root.example.com"
    );
    if let Some(dir) = reference_dir() {
        let v = Validators::load(&dir);
        for o in objects.iter().chain(&named) {
            assert_eq!(
                v.check(o),
                Some(vec![]),
                "{} {}",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }
}

/// A package derives Flux's objects, valid against helm-controller's and
/// source-controller's CRDs, from either kind of chart repository; a denied secret derives
/// none of them.
#[test]
fn a_package_derives_flux_objects_valid_against_fluxs_crds_and_nothing_when_denied() {
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let Some(Object::Package(grafana)) = w
        .objects()
        .map(|(_, o)| o)
        .find(|o| matches!(o, Object::Package(_)))
    else {
        panic!("the example world has a package")
    };
    let mut oci = grafana.clone();
    oci.spec.chart.repository = "oci://ghcr.io/grafana/helm-charts".into();
    oci.spec.depends_on = vec!["monitoring/loki".into()];
    oci.spec.timeout = Some("15m".into());
    let mut kinds = Vec::new();
    for p in [grafana.clone(), oci] {
        let object = Object::Package(p);
        let objects = lattice_compiler::compile(&object, &evaluate(&s, &object), &ctx).unwrap();
        if let Some(dir) = reference_dir() {
            let validators = Validators::load(&dir);
            for o in &objects {
                let problems = validators.problems(o);
                assert!(problems.is_empty(), "{}: {problems:#?}", o["kind"]);
            }
        }
        kinds.push(
            objects
                .iter()
                .map(|o| o["kind"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        kinds,
        [
            ["ExternalSecret", "HelmRepository", "HelmRelease"],
            ["ExternalSecret", "OCIRepository", "HelmRelease"]
        ]
    );
    // Under the example's own policies a namespace reads only its own secret paths: the
    // package moved to another's path derives nothing at all, not a release without its
    // secret.
    let (mut w, _) = real();
    let mut stolen = grafana.clone();
    stolen.spec.resources.get_mut("grafana-admin").unwrap().id = Some("payments/ledger/db".into());
    w.upsert(Object::Package(stolen.clone()));
    let (_, s) = real_with(w.clone());
    let object = Object::Package(stolen);
    let report = evaluate(&s, &object);
    match lattice_compiler::compile(&object, &report, &CompileContext::of(&w, &s)) {
        Err(CompileError::Denied { gates, .. }) => {
            assert!(
                gates.iter().any(|g| g.action == "AccessSecret"),
                "{gates:?}"
            )
        }
        other => panic!("a denied secret must derive nothing: {other:?}"),
    }
}

/// A backup derives Velero's objects, valid against Velero's CRDs: its storage location and
/// credentials, then a Schedule (or one Backup without a schedule); a namespace selector is
/// resolved against the world's namespaces, and one that matches none derives nothing
/// rather than an empty list Velero would read as every namespace. A restore derives
/// nothing through `compile`: only under an allowed Restore decision.
#[test]
fn a_backup_derives_velero_objects_valid_against_veleros_crds() {
    let (w, s) = permissive();
    let ctx = CompileContext::of(&w, &s);
    let backup: lattice_schemas::crd::LatticeClusterBackup = serde_json::from_value(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeClusterBackup",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 2 * * *",
            "storage": {"provider": "s3", "bucket": "backups", "prefix": "prod", "region": "eu-west-1",
                        "endpoint": "https://minio.example:9000", "forcePathStyle": true,
                        "credentials": {"provider": "vault", "id": "platform/velero", "key": "aws"}},
            "scope": {"excludeNamespaces": ["scratch"], "clusterResources": true},
            "retention": {"ttl": "720h"},
            "snapshotVolumes": false
        }
    }))
    .unwrap();
    let compile = |b: &lattice_schemas::crd::LatticeClusterBackup| {
        let object = Object::ClusterBackup(b.clone());
        lattice_compiler::compile(&object, &evaluate(&s, &object), &ctx)
    };
    let objects = compile(&backup).unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["ExternalSecret", "BackupStorageLocation", "Schedule"]
    );
    let (bsl, schedule) = (&objects[1], &objects[2]);
    assert_eq!(bsl["spec"]["provider"], "aws");
    assert_eq!(
        bsl["spec"]["credential"]["name"],
        "nightly-storage-credentials"
    );
    assert_eq!(bsl["spec"]["config"]["s3ForcePathStyle"], "true");
    assert_eq!(schedule["spec"]["template"]["storageLocation"], "nightly");
    assert_eq!(
        schedule["spec"]["template"]["includedNamespaces"],
        json!(["*"])
    );
    assert_eq!(
        schedule["spec"]["template"]["excludedNamespaces"],
        json!(["scratch"])
    );
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["namespace"] == "velero")
    );

    // No schedule: one backup now, at Velero's default location.
    let mut once = backup.clone();
    once.spec.schedule = None;
    once.spec.storage = None;
    let objects_once = compile(&once).unwrap();
    assert_eq!(objects_once.len(), 1);
    assert_eq!(objects_once[0]["kind"], "Backup");
    assert!(objects_once[0]["spec"].get("storageLocation").is_none());

    // A selector picks the world's namespaces by label; one that picks none fails.
    let labelled: Vec<String> = ctx
        .namespace_labels
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(ns, _)| ns.clone())
        .collect();
    let (ns, labels) = ctx
        .namespace_labels
        .iter()
        .find(|(_, l)| !l.is_empty())
        .expect("the example world labels a namespace");
    let (k, v) = labels.iter().next().unwrap();
    let mut selected = backup.clone();
    selected.spec.scope.namespace_selector = Some([(k.clone(), v.clone())].into());
    let objects_selected = compile(&selected).unwrap();
    let picked = objects_selected[2]["spec"]["template"]["includedNamespaces"]
        .as_array()
        .unwrap()
        .clone();
    assert!(picked.contains(&json!(ns)), "{picked:?} of {labelled:?}");
    assert!(!picked.contains(&json!("*")));
    selected.spec.scope.namespace_selector = Some([("no-such".into(), "label".into())].into());
    match compile(&selected) {
        Err(CompileError::Invalid { reason, .. }) => {
            assert!(reason.contains("matches no namespace"), "{reason}")
        }
        other => panic!("a selector matching nothing must derive nothing: {other:?}"),
    }

    let restore: lattice_schemas::crd::LatticeRestore = serde_json::from_value(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeRestore",
        "metadata": {"name": "shop-back"},
        "spec": {"clusterBackupRef": "nightly", "includeNamespaces": ["shop"], "existingResources": "update"}
    }))
    .unwrap();
    let object = Object::Restore(restore.clone());
    assert!(matches!(
        lattice_compiler::compile(&object, &evaluate(&s, &object), &ctx),
        Err(CompileError::RestoreUndecided(_))
    ));
    let velero_restore = lattice_compiler::backup::compile_restore(&restore);
    assert_eq!(velero_restore[0]["spec"]["scheduleName"], "nightly");
    assert_eq!(velero_restore[0]["spec"]["restorePVs"], true);
    assert_eq!(
        velero_restore[0]["spec"]["existingResourcePolicy"],
        "update"
    );

    if let Some(dir) = reference_dir() {
        let validators = Validators::load(&dir);
        for o in objects
            .iter()
            .chain(&objects_once)
            .chain(&objects_selected)
            .chain(&velero_restore)
        {
            let problems = validators.problems(o);
            assert!(problems.is_empty(), "{}: {problems:#?}", o["kind"]);
        }
    }
}

/// A CertIssuer derives a cert-manager ClusterIssuer of its name, valid against
/// cert-manager's CRD, with the secrets it reads synced into cert-manager's namespace: an
/// ACME issuer answering DNS-01 through a DNSProvider's zone with that provider's
/// credentials, a CA issuer, a Vault issuer. A DNSProvider derives an external-dns
/// Deployment (valid apps/v1) for its zone, reading its credentials from the synced secret.
#[test]
fn issuers_and_dns_providers_derive_cert_manager_and_external_dns_objects() {
    let (mut w, _) = permissive();
    let dns: lattice_schemas::crd::DNSProvider = serde_json::from_value(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "DNSProvider",
        "metadata": {"name": "shop-zone"},
        "spec": {"type": "route53", "zone": "shop.example.com",
                 "credentials": {"provider": "vault-prod", "id": "dns/aws/shop", "keys": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]},
                 "route53": {"region": "eu-west-1", "hostedZoneId": "Z0123456789"}}
    }))
    .unwrap();
    w.upsert(Object::DnsProvider(dns.clone()));
    let (_, s) = real_with(w.clone());
    let ctx = CompileContext::of(&w, &s);
    let compile = |o: Object| lattice_compiler::compile(&o, &evaluate(&s, &o), &ctx);
    let issuer = |spec: Value| -> Object {
        Object::CertIssuer(
            serde_json::from_value(json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "CertIssuer",
                "metadata": {"name": "letsencrypt-prod"}, "spec": spec,
            }))
            .unwrap(),
        )
    };
    let acme = compile(issuer(json!({"type": "acme", "acme": {
        "server": "https://acme-v02.api.letsencrypt.org/directory", "email": "ops@example.com",
        "dnsProviderRef": "shop-zone"}})))
    .unwrap();
    let kinds = |objects: &[Value]| -> Vec<String> {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds(&acme), ["ExternalSecret", "ClusterIssuer"]);
    let cluster_issuer = &acme[1];
    assert_eq!(cluster_issuer["metadata"]["name"], "letsencrypt-prod");
    assert!(cluster_issuer["metadata"].get("namespace").is_none());
    let solver = &cluster_issuer["spec"]["acme"]["solvers"][0];
    assert_eq!(solver["selector"]["dnsZones"], json!(["shop.example.com"]));
    assert_eq!(
        solver["dns01"]["route53"]["secretAccessKeySecretRef"],
        json!({"name": "letsencrypt-prod-dns01", "key": "AWS_SECRET_ACCESS_KEY"})
    );
    assert_eq!(acme[0]["metadata"]["namespace"], "cert-manager");
    // HTTP-01 through a named Gateway; neither or both: nothing derived.
    let http = compile(issuer(json!({"type": "acme", "acme": {
        "server": "https://acme-v02.api.letsencrypt.org/directory",
        "http01Gateway": {"name": "public", "namespace": "gateways"}}})))
    .unwrap();
    assert_eq!(
        http[0]["spec"]["acme"]["solvers"][0]["http01"]["gatewayHTTPRoute"]["parentRefs"][0]["name"],
        "public"
    );
    assert!(matches!(
        compile(issuer(json!({"type": "acme", "acme": {"server": "https://x.example.com", "dnsProviderRef": "nowhere"}}))),
        Err(CompileError::Invalid { reason, .. }) if reason.contains("does not exist")
    ));
    let ca = compile(issuer(json!({"type": "ca", "ca": {"credentials": {"provider": "vault-prod", "id": "pki/internal-ca"}}}))).unwrap();
    assert_eq!(
        ca[0]["spec"]["target"]["template"]["type"],
        "kubernetes.io/tls"
    );
    assert_eq!(ca[1]["spec"]["ca"]["secretName"], "letsencrypt-prod-ca");
    let vault = compile(issuer(json!({"type": "vault", "vault": {"server": "https://vault.example.com:8200",
        "path": "pki/sign/web", "authCredentials": {"provider": "vault-prod", "id": "pki/issuer-token"}}})))
    .unwrap();
    assert_eq!(
        vault[1]["spec"]["vault"]["auth"]["tokenSecretRef"],
        json!({"name": "letsencrypt-prod-vault-token", "key": "token"})
    );
    let selfsigned = compile(issuer(json!({"type": "selfSigned"}))).unwrap();
    assert_eq!(selfsigned[0]["spec"], json!({"selfSigned": {}}));

    let external_dns = compile(Object::DnsProvider(dns)).unwrap();
    assert_eq!(kinds(&external_dns), ["ExternalSecret", "Deployment"]);
    let deployment = &external_dns[1];
    assert_eq!(deployment["metadata"]["namespace"], "external-dns");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for expected in [
        "--provider=aws",
        "--domain-filter=shop.example.com",
        "--source=gateway-httproute",
        "--zone-id-filter=Z0123456789",
        "--policy=sync",
    ] {
        assert!(args.contains(&expected), "{args:?}");
    }
    assert!(args.iter().any(|a| a.starts_with("--txt-owner-id=")));
    assert_eq!(
        container["envFrom"],
        json!([{"secretRef": {"name": "shop-zone-credentials"}}])
    );

    if let Some(dir) = reference_dir() {
        let validators = Validators::load(&dir);
        for o in acme
            .iter()
            .chain(&http)
            .chain(&ca)
            .chain(&vault)
            .chain(&selfsigned)
            .chain(&external_dns)
        {
            let problems = validators.problems(o);
            assert!(problems.is_empty(), "{}: {problems:#?}", o["kind"]);
        }
    }
}
