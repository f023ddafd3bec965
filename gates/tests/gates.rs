//! Gates and the mesh on the example world.

use std::path::PathBuf;

use lattice_engine::{ObjectKey, PolicyStore, Projection, Snapshot, World};
use lattice_gates::{MeshPlan, evaluate, questions};
use lattice_schemas::manifest::Object;

fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn setup() -> (World, PolicyStore, Snapshot) {
    let w = World::load(&[root().join("examples/world")]).unwrap();
    let mut store = PolicyStore::load_packs(&root().join("policies")).unwrap();
    for (_, o) in w.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).unwrap();
        }
    }
    let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    (w, store, s)
}

fn key(kind: &'static str, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: Some(ns.into()),
        name: name.into(),
    }
}

#[test]
fn a_workload_raises_every_question_labelled_with_its_source() {
    let (w, _, _) = setup();
    let gateway = w
        .get(&key("LatticeService", "payments", "gateway"))
        .unwrap();
    let qs = questions(gateway);
    let has = |action: &str, resource: &str, by: &str| {
        qs.iter().any(|g| {
            g.action == action
                && g.resource.to_string().contains(resource)
                && g.raised_by.contains(by)
        })
    };
    assert!(
        has(
            "DeployImage",
            "ghcr.io/lattice-demo/payment-gateway:1.9.1",
            "gateway"
        ),
        "{qs:#?}"
    );
    assert!(
        qs.iter()
            .any(|g| g.action == "DeployImage" && g.raised_by.starts_with("sidecar ")),
        "sidecar images are gated too"
    );
    assert!(
        has("OverrideSecurity", "capability:NET_BIND_SERVICE", "sidecar"),
        "{qs:#?}"
    );
    assert!(
        has(
            "OverrideSecurity",
            "sysctl:net.ipv4.ip_local_port_range",
            "pod"
        ),
        "{qs:#?}"
    );
    assert!(
        has("AccessExternalEndpoint", "api.stripe.com:443", "resource"),
        "{qs:#?}"
    );
    assert!(has("AccessSecret", "vault-prod:", "resource"), "{qs:#?}");
    assert!(qs.iter().any(|g| g.action == "ExposeHost"), "{qs:#?}");
    // A volume owned elsewhere asks its owner's consent; an owned one does not.
    let web = questions(w.get(&key("LatticeService", "shop", "web")).unwrap());
    assert!(
        web.iter().any(|g| g.action == "AccessVolume"
            && g.resource.to_string().contains("shop/product-images"))
    );
    let api = questions(w.get(&key("LatticeService", "shop", "api")).unwrap());
    assert!(!api.iter().any(|g| g.action == "AccessVolume"));
    // Jobs name their containers task.container; GPU requests are gated.
    let job = questions(w.get(&key("LatticeJob", "ml", "recsys-train")).unwrap());
    assert!(job.iter().any(|g| g.action == "UseGpu"), "{job:#?}");
    assert!(
        job.iter()
            .any(|g| g.action == "DeployImage" && g.raised_by.contains('.'))
    );
    // Mesh members gate their egress, entity-style egress included (no bypass).
    let pg = questions(
        w.get(&key("LatticeMeshMember", "platform", "legacy-postgres"))
            .unwrap(),
    );
    assert!(
        pg.iter().any(|g| g.action == "AccessExternalEndpoint"),
        "{pg:#?}"
    );
}

#[test]
fn a_report_lists_every_denied_gate_with_advice() {
    let (mut w, store, _) = setup();
    // web, moved to an unsigned image of a registry that requires signatures: its
    // signed-image miss cites the baseline advice.
    let Some(Object::Service(mut svc)) = w.get(&key("LatticeService", "shop", "web")).cloned()
    else {
        panic!("shop/web is a service")
    };
    svc.spec.workload.containers.get_mut("nginx").unwrap().image =
        "ghcr.io/lattice-demo/web:9.9.9".into();
    w.upsert(Object::Service(svc));
    let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    let web = evaluate(&s, w.get(&key("LatticeService", "shop", "web")).unwrap());
    assert!(!web.allowed());
    let denied = web.denied_gates();
    let image = denied
        .iter()
        .find(|d| d.action == "DeployImage")
        .expect("nginx is unsigned");
    assert!(
        image.advice.as_deref().unwrap().contains("Sign the image"),
        "{image:?}"
    );
    assert_eq!(image.raised_by, "nginx");
    // The shared volume is allowed by its owner's consent.
    assert!(
        web.outcomes
            .iter()
            .any(|o| o.gate.action == "AccessVolume" && o.allowed())
    );
    // Every outcome was taken on the same snapshot.
    assert!(
        web.outcomes
            .iter()
            .all(|o| o.decision.as_ref().unwrap().digest == s.digest())
    );
}

#[test]
fn the_mesh_plan_decides_declared_edges_only_and_explains_one_sided_ones() {
    let (w, _, s) = setup();
    let plan = MeshPlan::plan(&s, &w);
    let edge = |a: &str, b: &str| plan.edge_between(a, b);
    let both = edge("shop/checkout", "payments/ledger").unwrap();
    assert!(both.allowed() && both.declared_by_caller && both.declared_by_callee);
    assert!(!both.ports.is_empty());
    let one = edge("shop/api", "payments/ledger").unwrap();
    assert!(!one.allowed() && one.one_sided());
    assert_eq!(
        one.reason().unwrap(),
        "payments/ledger does not list shop/api as a caller"
    );
    // Undeclared pairs are never evaluated.
    assert!(edge("shop/web", "payments/gateway").is_none());
    assert_eq!(
        plan.denied().filter(|e| e.one_sided()).count(),
        1,
        "exactly one one-sided declaration in the example world"
    );
    assert!(plan.allowed().count() >= 8);
}

#[test]
fn replanning_one_service_re_decides_only_its_edges_and_matches_a_fresh_plan() {
    let (mut w, store, s) = setup();
    let mut plan = MeshPlan::plan(&s, &w);
    // The ledger team accepts shop/api as a caller.
    let k = key("LatticeService", "payments", "ledger");
    let Some(Object::Service(mut ledger)) = w.get(&k).cloned() else {
        panic!()
    };
    ledger.spec.workload.resources.insert(
        "api".into(),
        serde_json::from_value(
            serde_json::json!({"type": "service", "direction": "inbound", "namespace": "shop"}),
        )
        .unwrap(),
    );
    w.upsert(Object::Service(ledger));
    let s2 = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    let decided = plan.replan(&s2, &w, &k);
    let fresh = MeshPlan::plan(&s2, &w);
    assert!(
        decided < fresh.len(),
        "only the ledger's edges are re-decided ({decided} of {})",
        fresh.len()
    );
    let summary = |p: &MeshPlan| {
        p.edges()
            .map(|e| {
                (
                    e.caller.clone(),
                    e.callee.clone(),
                    e.allowed(),
                    e.one_sided(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&plan), summary(&fresh));
    assert!(
        plan.edge_between("shop/api", "payments/ledger")
            .unwrap()
            .allowed()
    );
    // The index of a workload's edges follows the replan.
    let touching = |p: &MeshPlan, id: &str| {
        p.touching(id)
            .into_iter()
            .map(|e| (e.caller.clone(), e.callee.clone()))
            .collect::<Vec<_>>()
    };
    for id in ["payments/ledger", "shop/api", "shop/checkout"] {
        let scanned: Vec<(String, String)> = fresh
            .edges()
            .filter(|e| e.caller == id || e.callee == id)
            .map(|e| (e.caller.clone(), e.callee.clone()))
            .collect();
        assert!(!scanned.is_empty());
        assert_eq!(touching(&plan, id), scanned, "{id}");
        assert_eq!(touching(&fresh, id), scanned, "{id}");
    }
}

#[test]
fn a_malformed_resource_denies_instead_of_escaping_its_gate() {
    let (_, _, s) = setup();
    // World::upsert does not validate (controllers feed it directly), so the gates must hold.
    let svc: lattice_schemas::crd::LatticeService = serde_json::from_value(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
        "metadata": {"name": "sloppy", "namespace": "payments"},
        "spec": {
            "containers": {"main": {"image": "ghcr.io/lattice-demo/shop-api:1.4.2"}},
            "resources": {
                "creds": {"type": "secret", "id": "payments/x"},
                "api": {"type": "external-service", "params": {"port": 443}}
            }
        }
    }))
    .unwrap();
    let report = evaluate(&s, &Object::Service(svc));
    assert!(!report.allowed());
    let denied = report.denied_gates();
    let secret = denied
        .iter()
        .find(|d| d.action == "AccessSecret")
        .expect("the secret still raises its gate");
    assert!(
        secret.advice.as_deref().unwrap().contains("no provider"),
        "{secret:?}"
    );
    assert!(
        denied
            .iter()
            .any(|d| d.action == "AccessExternalEndpoint" && d.raised_by == "resource api")
    );
}
