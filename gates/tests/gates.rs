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

mod peering {
    use super::*;
    use lattice_gates::peering::{Declaration, EdgeState, Facts, Role, Topology, Workload, plan};
    use serde_json::json;

    fn declaration(
        at: (&str, &str, &str),
        outbound: &[(&str, &str, &str)],
        inbound: &[(&str, &str, &str)],
    ) -> Declaration {
        let w = |(c, n, s): &(&str, &str, &str)| Workload::new(c, n, s);
        Declaration {
            workload: w(&at),
            spiffe_id: format!("spiffe://{}.lattice.test/ns/{}/sa/{}", at.0, at.1, at.2),
            ports: vec![8080],
            address: format!("gateway.{}.example.com:15443", at.0),
            outbound: outbound.iter().map(w).collect(),
            inbound: inbound.iter().map(w).collect(),
            facts: Facts {
                kind: "service".into(),
                replicas: 2,
                pod_security: "restricted".into(),
                strict_mtls: true,
                namespace_default_deny: true,
                ..Facts::default()
            },
        }
    }

    fn topology() -> Topology {
        // `production` (the example world's cluster) decides; `edge` and `lab` are its
        // children, `deep` is below `edge`.
        Topology {
            own: "production".into(),
            below: [("edge", "edge"), ("lab", "lab"), ("deep", "edge")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
        }
    }

    const FRONTEND: (&str, &str, &str) = ("edge", "shop", "frontend");
    const API: (&str, &str, &str) = ("production", "payments", "api");

    #[test]
    fn a_bilateral_cross_cluster_edge_is_allowed_and_routed_to_both_sides() {
        let (_, _, s) = setup();
        let ds = vec![
            declaration(FRONTEND, &[API], &[]),
            declaration(API, &[], &[FRONTEND]),
        ];
        let p = plan(&s, &topology(), &ds);
        let edge = p.edges.values().next().unwrap();
        assert!(edge.allowed(), "{:?}", edge.reason());
        let routes = p.routes(&ds);
        let caller = &routes["edge"][0];
        assert_eq!(
            (caller.role, caller.peer.to_string().as_str()),
            (Role::Caller, "production/payments/api")
        );
        assert_eq!(
            caller.peer_spiffe_id,
            "spiffe://production.lattice.test/ns/payments/sa/api"
        );
        assert_eq!(caller.peer_address, "gateway.production.example.com:15443");
        let callee = &routes["production"][0];
        assert_eq!(
            (callee.role, callee.peer_spiffe_id.as_str()),
            (
                Role::Callee,
                "spiffe://edge.lattice.test/ns/shop/sa/frontend"
            )
        );
        assert_eq!(callee.ports, vec![8080]);
    }

    #[test]
    fn a_one_sided_declaration_is_refused_with_the_missing_side_and_routes_nothing() {
        let (_, _, s) = setup();
        let ds = vec![
            declaration(FRONTEND, &[API], &[]),
            declaration(API, &[], &[("lab", "shop", "other")]),
        ];
        let p = plan(&s, &topology(), &ds);
        let edge = &p.edges[&(
            Workload::new("edge", "shop", "frontend"),
            Workload::new("production", "payments", "api"),
        )];
        assert!(!edge.allowed());
        assert_eq!(
            edge.reason().unwrap(),
            "production/payments/api does not list edge/shop/frontend as an inbound caller"
        );
        assert!(p.routes(&ds).is_empty());
        // Cedar, not the planner, refused it: a policy that admits the one-sided edge opens it.
        let (w, mut store, _) = setup();
        let open: lattice_schemas::crd::CedarPolicy = serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
            "metadata": {"name": "frontend-may-call-api", "namespace": "lattice-system"},
            "spec": {"policies": "@id(\"frontend-may-call-api\")\npermit (principal == Lattice::Service::\"edge/shop/frontend\", action == Lattice::Action::\"Connect\", resource == Lattice::Service::\"production/payments/api\");\n"}
        }))
        .unwrap();
        store.apply_object(&open).unwrap();
        let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
        let p = plan(&s, &topology(), &ds);
        assert!(p.edges.values().next().unwrap().allowed());
        assert_eq!(p.routes(&ds).values().map(Vec::len).sum::<usize>(), 2);
        // A side that declares nothing across clusters has no identity to route to.
        let alone = vec![declaration(FRONTEND, &[API], &[])];
        let p = plan(&s, &topology(), &alone);
        assert!(matches!(
            p.edges.values().next().unwrap().state,
            EdgeState::OneSided(_)
        ));
    }

    #[test]
    fn both_clusters_facts_reach_policy_and_a_forbid_on_them_denies_the_edge() {
        let (w, mut store, _) = setup();
        let forbid: lattice_schemas::crd::CedarPolicy = serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
            "metadata": {"name": "no-prod-from-outside", "namespace": "lattice-system"},
            "spec": {"policies": "@id(\"no-prod-from-outside\")\n@advice(\"Production takes no calls from other clusters.\")\nforbid (principal, action == Lattice::Action::\"Connect\", resource)\nwhen { context has calleeCluster && context has callerCluster && context.calleeCluster.environment == \"prod\" && context.callerCluster != context.calleeCluster };\n"}
        }))
        .unwrap();
        store.apply_object(&forbid).unwrap();
        let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
        let ds = vec![
            declaration(FRONTEND, &[API], &[]),
            declaration(API, &[], &[FRONTEND]),
        ];
        let p = plan(&s, &topology(), &ds);
        let edge = p.edges.values().next().unwrap();
        assert!(!edge.allowed());
        assert_eq!(
            edge.reason().unwrap(),
            "forbidden by lattice-system/no-prod-from-outside/no-prod-from-outside: Production takes no calls from other clusters."
        );
        assert!(p.routes(&ds).is_empty());
    }

    #[test]
    fn the_nearest_common_ancestor_decides_and_no_other_cell_does() {
        let (_, _, s) = setup();
        // Both below `edge`: edge's own cell decides.
        let below = vec![
            declaration(FRONTEND, &[("deep", "payments", "api")], &[]),
            declaration(("deep", "payments", "api"), &[], &[FRONTEND]),
        ];
        let p = plan(&s, &topology(), &below);
        assert!(
            matches!(&p.edges.values().next().unwrap().state, EdgeState::Below(c) if c == "edge")
        );
        assert!(p.routes(&below).is_empty());
        // Siblings: decided here.
        let siblings = vec![
            declaration(FRONTEND, &[("lab", "payments", "api")], &[]),
            declaration(("lab", "payments", "api"), &[], &[FRONTEND]),
        ];
        assert!(
            plan(&s, &topology(), &siblings)
                .edges
                .values()
                .next()
                .unwrap()
                .allowed()
        );
        // A side outside the subtree: an ancestor decides.
        let outside = vec![declaration(
            FRONTEND,
            &[("elsewhere", "payments", "api")],
            &[],
        )];
        let p = plan(&s, &topology(), &outside);
        assert!(matches!(
            p.edges.values().next().unwrap().state,
            EdgeState::Above
        ));
    }

    #[test]
    fn a_cluster_reports_the_workloads_that_declare_peers_elsewhere_with_their_facts() {
        let (mut w, _, _) = setup();
        let api: Object = Object::from_api(
            "LatticeService",
            &json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
                "metadata": {"name": "api", "namespace": "payments", "labels": {"team": "payments"}},
                "spec": {
                    "containers": {"main": {"image": "ghcr.io/lattice-demo/api:1.0"}},
                    "service": {"ports": {"http": {"port": 8080}}},
                    "resources": {
                        "frontend": {"type": "service", "direction": "inbound", "namespace": "shop", "cluster": "edge"},
                        "ledger": {"type": "service"}
                    }
                }
            }),
        )
        .unwrap();
        w.upsert(api);
        let ds = lattice_gates::peering::declarations(
            &w,
            &Projection::of(&w),
            "production",
            "production.lattice.test",
            "10.0.0.9:15443",
        );
        assert_eq!(
            ds.len(),
            1,
            "only the workload with a cross-cluster peer: {ds:#?}"
        );
        let d = &ds[0];
        assert_eq!(d.workload.to_string(), "production/payments/api");
        assert_eq!(
            d.spiffe_id,
            "spiffe://production.lattice.test/ns/payments/sa/api"
        );
        assert_eq!(d.ports, vec![8080]);
        assert_eq!(
            d.inbound
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["edge/shop/frontend"]
        );
        assert!(
            d.outbound.is_empty(),
            "a local peer is no cross-cluster one"
        );
        assert_eq!((d.facts.kind.as_str(), d.facts.replicas), ("service", 1));
        assert_eq!(d.facts.labels["team"], "payments");
        // The local plan does not see the remote peer as an edge.
        let s = Snapshot::build(
            &w,
            &Projection::of(&w),
            &PolicyStore::load_packs(&root().join("policies")).unwrap(),
        )
        .unwrap();
        let mesh = MeshPlan::plan(&s, &w);
        assert!(
            mesh.edges()
                .all(|e| !e.caller.contains("frontend") || e.callee != "payments/api")
        );
    }
}

mod lifecycle {
    use super::*;
    use lattice_gates::lifecycle::{
        BOOTSTRAP_CLUSTER, Lifecycle, LifecycleFacts, decide, decide_own, manager, nodes_max,
    };
    use lattice_schemas::crd::cluster::LatticeCluster;
    use serde_json::json;

    fn cluster(name: &str, parent: Option<&str>, pool_max: i32) -> LatticeCluster {
        serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster",
            "metadata": {"name": name},
            "spec": {
                "providerRef": "docker", "parent": parent,
                "provider": {"kubernetes": {"version": "1.32.0"}, "config": {"docker": {}}},
                "nodes": {"controlPlane": 1, "workerPools": {"default": {"replicas": 1, "min": 1, "max": pool_max}}},
            },
        }))
        .unwrap()
    }

    fn facts(agent_healthy: bool) -> LifecycleFacts {
        LifecycleFacts {
            phase: "Provisioning".into(),
            agent_healthy,
            object_count: 8,
            now: "2026-12-03T12:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_parent_provisions_its_child_and_the_bootstrap_cluster_a_root() {
        let (w, _, s) = setup();
        let p = Projection::of(&w);
        let child = cluster("lab", Some("production"), 3);
        let d = decide(&s, &p, Lifecycle::Provision, &child, &facts(false));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.principal, "production");
        assert_eq!(d.policies, ["baseline/parent-manages-children"]);
        // A root has no parent: the installer's bootstrap cluster manages it until pivot.
        let root = cluster("fresh-root", None, 3);
        assert_eq!(manager(&root), BOOTSTRAP_CLUSTER);
        let d = decide(&s, &p, Lifecycle::Provision, &root, &facts(false));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.principal, BOOTSTRAP_CLUSTER);
        assert_eq!(
            d.summary(),
            "Provision Cluster::\"fresh-root\" by Cluster::\"lattice-bootstrap\": allowed (by baseline/parent-manages-children)"
        );
    }

    #[test]
    fn a_cluster_provisions_itself_only_once_pivoted() {
        let (w, _, s) = setup();
        let p = Projection::of(&w);
        let mut lab = cluster("lab", Some("production"), 3);
        // Before the pivot its parent manages it: asking about itself is denied.
        let d = decide_own(&s, &p, Lifecycle::Provision, &lab, &facts(true));
        assert!(!d.allowed, "{d:?}");
        assert_eq!(d.principal, "lab");
        lab.status = Some(serde_json::from_value(json!({"pivoted": true})).unwrap());
        let d = decide_own(&s, &p, Lifecycle::Provision, &lab, &facts(true));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.policies, ["baseline/pivoted-cluster-manages-itself"]);
        // Pivoting, moving back and tearing down stay its manager's.
        for step in [
            Lifecycle::Pivot,
            Lifecycle::Unpivot,
            Lifecycle::Decommission,
        ] {
            assert!(
                !decide_own(&s, &p, step, &lab, &facts(true)).allowed,
                "{step:?}"
            );
        }
        // A pivoted cluster's parent still asks as its manager, and is still allowed.
        assert!(decide(&s, &p, Lifecycle::Provision, &lab, &facts(true)).allowed);
    }

    #[test]
    fn pivot_waits_for_a_healthy_agent() {
        let (w, _, s) = setup();
        let p = Projection::of(&w);
        let child = cluster("lab", Some("production"), 3);
        let d = decide(&s, &p, Lifecycle::Pivot, &child, &facts(false));
        assert!(!d.allowed);
        assert_eq!(d.policies, ["baseline/pivot-needs-healthy-agent"]);
        assert_eq!(
            d.advice,
            ["Wait until the cluster's agent reports healthy, then pivot."]
        );
        assert!(decide(&s, &p, Lifecycle::Pivot, &child, &facts(true)).allowed);
    }

    #[test]
    fn a_forbid_on_the_spec_facts_denies_provisioning_and_says_which() {
        let (w, mut store, _) = setup();
        let forbid: lattice_schemas::crd::CedarPolicy = serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
            "metadata": {"name": "cluster-size", "namespace": "lattice-system"},
            "spec": {"policies": "@id(\"at-most-ten-nodes\")\n@advice(\"Ask the platform team for a larger cluster.\")\nforbid (principal, action == Lattice::Action::\"Provision\", resource)\nwhen { context has nodesMax && context.nodesMax > 10 && resource.provider == \"docker\" };\n"}
        }))
        .unwrap();
        store.apply_object(&forbid).unwrap();
        let s = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
        let p = Projection::of(&w);
        let small = cluster("lab", Some("production"), 9);
        assert_eq!(nodes_max(&small.spec), 10);
        assert!(decide(&s, &p, Lifecycle::Provision, &small, &facts(false)).allowed);
        let big = cluster("lab", Some("production"), 12);
        let d = decide(&s, &p, Lifecycle::Provision, &big, &facts(false));
        assert!(!d.allowed);
        assert_eq!(
            d.policies,
            ["lattice-system/cluster-size/at-most-ten-nodes"]
        );
        assert_eq!(d.advice, ["Ask the platform team for a larger cluster."]);
    }
}

/// Writing a backup is ManageBackup (inside ManagePlatform); a restore is Restore, which
/// ManagePlatform does not grant: the baseline permits it to platform administrators and
/// forbids any restore that would write into lattice-system. `decide_restore` (what the
/// operator asks before deriving) answers as admission does.
#[test]
fn a_restore_is_its_own_decision_and_spares_the_platform() {
    use lattice_gates::admission::{Requester, decide_write, write_query};
    let (w, _, s) = setup();
    let p = Projection::of(&w);
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let admin = Requester {
        username: "pat".into(),
        groups: vec!["lattice:platform-admins".into()],
    };
    let dev = Requester {
        username: "dev".into(),
        groups: vec!["shop-developers".into()],
    };
    let backup = w
        .objects()
        .map(|(_, o)| o)
        .find(|o| matches!(o, Object::ClusterBackup(_)))
        .expect("the example world has a backup")
        .clone();
    let ask = |who: &Requester, op: &str, o: &Object| {
        let q = write_query(who, op, o, None, &w, now).unwrap().unwrap();
        let e = decide_write(&s, &p, who, &q).unwrap();
        (q.action.id().unescaped().to_owned(), e.decision.allowed)
    };
    assert_eq!(
        ask(&admin, "CREATE", &backup),
        ("ManageBackup".into(), true)
    );
    assert_eq!(ask(&dev, "CREATE", &backup), ("ManageBackup".into(), false));

    let restore = |namespaces: &[&str], excluded: &[&str]| -> Object {
        Object::Restore(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeRestore",
                "metadata": {"name": "r"},
                "spec": {"clusterBackupRef": "nightly", "includeNamespaces": namespaces, "excludeNamespaces": excluded}
            }))
            .unwrap(),
        )
    };
    let shop = restore(&["shop"], &[]);
    assert_eq!(ask(&admin, "CREATE", &shop), ("Restore".into(), true));
    assert_eq!(ask(&dev, "CREATE", &shop), ("Restore".into(), false));
    // Everything, lattice-system with it: forbidden; everything but lattice-system: allowed.
    assert!(!ask(&admin, "CREATE", &restore(&[], &[])).1);
    assert!(!ask(&admin, "CREATE", &restore(&["lattice-system"], &[])).1);
    assert!(ask(&admin, "CREATE", &restore(&[], &["lattice-system"])).1);
    // Deleting a restore's record rewrites nothing: ManageBackup.
    assert_eq!(ask(&admin, "DELETE", &shop).0, "ManageBackup");

    // The operator's question: the same answers, and a denial names its policy and advice.
    assert!(lattice_gates::decide_restore(&s, &w, &admin, &shop, now).is_ok());
    let gate = lattice_gates::decide_restore(&s, &w, &admin, &restore(&[], &[]), now).unwrap_err();
    assert_eq!(gate.action, "Restore");
    assert!(
        gate.policies
            .iter()
            .any(|p| p.ends_with("restore-spares-the-platform")),
        "{gate:?}"
    );
    assert!(
        gate.advice
            .as_deref()
            .unwrap_or("")
            .contains("excludeNamespaces")
    );
    let gate = lattice_gates::decide_restore(&s, &w, &dev, &shop, now).unwrap_err();
    assert!(gate.policies.is_empty(), "a default deny: {gate:?}");
    assert!(
        gate.advice
            .as_deref()
            .unwrap_or("")
            .contains("lattice:platform-admins"),
        "{gate:?}"
    );
}

/// ExposeHost sees where a host lives and who certifies it: the Host entity carries the
/// DNSProvider whose zone holds it (the longest zone), and the gate's context the
/// ClusterIssuer its certificate is requested from. A policy can then refuse a host in no
/// managed zone, or one certified by an issuer it does not name.
#[test]
fn a_host_knows_its_zone_and_its_gate_knows_its_issuer() {
    use lattice_engine::{Query, action, uid};
    let (w, store, s) = setup();
    let web = w.get(&key("LatticeService", "shop", "web")).unwrap();
    let expose: Vec<_> = questions(web)
        .into_iter()
        .filter(|g| g.action == "ExposeHost")
        .collect();
    assert!(!expose.is_empty());
    for g in &expose {
        assert_eq!(g.context["issuer"], "letsencrypt-prod", "{g:?}");
        assert_eq!(g.context["tls"], true);
    }
    let host = s
        .entities()
        .get(&uid("Host", "www.shop.example.com"))
        .expect("the host's entity");
    let attr = |k: &str| host.attr(k).unwrap().unwrap().to_string();
    assert_eq!(attr("zone"), "\"example.com\"");
    assert_eq!(attr("dnsProvider"), "\"example-com\"");

    // A narrower zone wins; a host in none has none.
    let mut w2 = w.clone();
    let mut narrow: lattice_schemas::crd::DNSProvider = serde_json::from_value(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "DNSProvider",
        "metadata": {"name": "shop-zone"},
        "spec": {"type": "cloudflare", "zone": "shop.example.com"}
    }))
    .unwrap();
    narrow.metadata.name = Some("shop-zone".into());
    w2.upsert(Object::DnsProvider(narrow));
    let s2 = Snapshot::build(&w2, &Projection::of(&w2), &store).unwrap();
    let host = s2
        .entities()
        .get(&uid("Host", "www.shop.example.com"))
        .unwrap();
    assert_eq!(
        host.attr("dnsProvider").unwrap().unwrap().to_string(),
        "\"shop-zone\""
    );

    // A policy on those facts decides: a host outside every managed zone is refused.
    let mut store3 = store.clone();
    let mut p = lattice_schemas::crd::CedarPolicy::new(
        "managed-zones",
        lattice_schemas::crd::policy::CedarPolicySpec {
            policies: r#"@id("managed-zones-only") forbid (principal, action == Lattice::Action::"ExposeHost", resource) when { resource.dnsProvider == "" };"#.into(),
            ..Default::default()
        },
    );
    p.metadata.namespace = Some("platform".into());
    store3.apply_object(&p).unwrap();
    let s3 = Snapshot::build(&w, &Projection::of(&w), &store3).unwrap();
    let ask = |host: &str| {
        let q = Query::new(uid("Service", "shop/web"), action("ExposeHost"), uid("Host", host))
            .with_context(
                cedar_policy::Context::from_json_value(
                    serde_json::json!({"raisedBy": "host", "workloadKind": "service", "tls": true, "issuer": "letsencrypt-prod"}),
                    None,
                )
                .unwrap(),
            );
        s3.decide(&q).unwrap()
    };
    let managed = ask("www.shop.example.com");
    assert!(
        !managed
            .determining
            .iter()
            .any(|d| d.id.ends_with("managed-zones-only")),
        "{managed:?}"
    );
    // The same host once no DNSProvider's zone holds it: refused by that policy.
    let mut w4 = w.clone();
    let mut elsewhere: lattice_schemas::crd::DNSProvider = match w
        .objects()
        .map(|(_, o)| o)
        .find(|o| matches!(o, Object::DnsProvider(_)))
    {
        Some(Object::DnsProvider(d)) => d.clone(),
        _ => panic!("the example world has a DNSProvider"),
    };
    elsewhere.spec.zone = "elsewhere.org".into();
    w4.upsert(Object::DnsProvider(elsewhere));
    let s4 = Snapshot::build(&w4, &Projection::of(&w4), &store3).unwrap();
    let q = Query::new(
        uid("Service", "shop/web"),
        action("ExposeHost"),
        uid("Host", "www.shop.example.com"),
    )
    .with_context(
        cedar_policy::Context::from_json_value(
            serde_json::json!({"raisedBy": "host", "workloadKind": "service", "tls": true, "issuer": "letsencrypt-prod"}),
            None,
        )
        .unwrap(),
    );
    let unmanaged = s4.decide(&q).unwrap();
    assert!(!unmanaged.allowed);
    assert!(
        unmanaged
            .determining
            .iter()
            .any(|d| d.id.ends_with("managed-zones-only")),
        "{unmanaged:?}"
    );
}
