//! The planner's incremental plans against whole plans of the same index, over random
//! sequences of changes: workloads scaled, re-imaged, given capabilities, ports, peers,
//! secrets and shared volumes, created and deleted; policies added, edited and removed;
//! namespaces relabelled; the cluster's own Deployments and RBAC created, changed and
//! deleted. After every change both must decide exactly the same: the same workloads, each
//! with the same verdict and the same derived objects (its digest covers both), the same
//! mesh, the same namespaces, the same entities of the cluster's own objects. And the planner must take its incremental
//! path where it says it does, or this proves nothing.

use std::collections::BTreeMap;

use lattice_controllers::operator::index::Index;
use lattice_controllers::operator::plan::{Plan, plan};
use lattice_controllers::operator::planner::{Made, Planner};
use lattice_controllers::webhook::stamp::{ANNOTATION, AdmissionKey};
use lattice_engine::PolicyStore;
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMESPACES: usize = 3;
const SERVICES: usize = 9;

fn admission() -> std::sync::Arc<AdmissionKey> {
    std::sync::Arc::new(AdmissionKey::from_bytes(&[42; 32]).unwrap())
}

fn stamped(mut policy: Value) -> Value {
    let spec: lattice_schemas::crd::policy::CedarPolicySpec =
        serde_json::from_value(policy["spec"].clone()).unwrap();
    let ns = policy["metadata"]["namespace"].as_str().unwrap().to_owned();
    let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let sec = lattice_gates::admission::Requester {
        username: "sec".into(),
        groups: vec!["lattice:security-admins".into()],
    };
    policy["metadata"]["annotations"][ANNOTATION] =
        json!(admission().stamp(&ns, &name, &spec, &sec));
    policy
}

fn ns(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

/// A service as the API server returns it: `peers` are (name, inbound) of other services.
fn service(i: usize, s: &Shape) -> Value {
    let mut resources = serde_json::Map::new();
    for (j, inbound) in &s.peers {
        let mut r = json!({"type": "service", "namespace": ns(*j)});
        if *inbound {
            r["direction"] = json!("inbound");
        }
        resources.insert(format!("s{j}"), r);
    }
    if s.secret {
        resources.insert(
            "db".into(),
            json!({"type": "secret", "id": format!("{}/s{i}/db", ns(i)),
                   "params": {"provider": "vault", "keys": ["password"]}}),
        );
    }
    if let Some(consumers) = &s.owns_volume {
        resources.insert(
            "data".into(),
            json!({"type": "volume", "id": "shared", "params": {"size": "1Gi",
                   "allowedConsumers": consumers.iter().map(|c| format!("s{c}")).collect::<Vec<_>>()}}),
        );
    }
    if s.mounts_volume {
        resources.insert("data".into(), json!({"type": "volume", "id": "shared"}));
    }
    let mut container = json!({
        "image": s.image,
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    });
    if let Some(cap) = &s.capability {
        container["security"] = json!({"capabilities": [cap]});
    }
    if s.secret {
        container["variables"] = json!({"DB_PASSWORD": "${resources.db.password}"});
    }
    if let Some((j, _)) = s.peers.iter().find(|(_, inbound)| !inbound) {
        container["variables"]["PEER"] = json!(format!("${{resources.s{j}.url}}"));
    }
    if s.mounts_volume || s.owns_volume.is_some() {
        container["volumes"] = json!({"/data": {"source": "${resources.data}"}});
    }
    json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "LatticeService",
        "metadata": {"name": format!("s{i}"), "namespace": ns(i), "uid": format!("uid-s{i}"),
                     "generation": 1},
        "spec": {
            "replicas": s.replicas,
            "containers": {"main": container},
            "service": {"ports": {"http": {"port": s.port}}},
            "resources": resources,
        }
    })
}

/// What a generated service declares.
#[derive(Clone, Debug)]
struct Shape {
    replicas: i64,
    port: i64,
    image: String,
    capability: Option<String>,
    peers: Vec<(usize, bool)>,
    secret: bool,
    owns_volume: Option<Vec<usize>>,
    mounts_volume: bool,
}

fn shape(i: usize) -> Shape {
    let next = (i + 1) % SERVICES;
    let prev = (i + SERVICES - 1) % SERVICES;
    Shape {
        replicas: 2,
        port: 8080,
        image: format!("registry.example.com/shop/app{i}:1.0"),
        capability: None,
        peers: vec![(next, false), (prev, true)],
        secret: i.is_multiple_of(2),
        owns_volume: None,
        mounts_volume: false,
    }
}

fn grants(extra: &str) -> Value {
    stamped(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": "grants", "namespace": "platform", "uid": "uid-grants", "generation": 1},
        "spec": {"policies": format!(
            "@id(\"vault-secrets\")\npermit (principal, action == Lattice::Action::\"AccessSecret\", resource) when {{ resource.provider == \"vault\" }};\n{extra}"
        )}
    }))
}

fn base() -> Vec<Value> {
    let mut out = vec![json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": "registries", "uid": "uid-trust"},
        "spec": {"registries": [{"prefix": "registry.example.com/shop", "requireSignature": false}]}
    })];
    for n in 0..NAMESPACES {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("ns{n}"), "uid": format!("uid-ns{n}")}}));
    }
    out.push(grants(""));
    out
}

/// One change a user could make.
#[derive(Clone, Debug)]
enum Change {
    Scale(usize, i64),
    Port(usize, i64),
    Image(usize, bool),
    Capability(usize, Option<&'static str>),
    Peer(usize, usize, bool),
    DropPeers(usize),
    Secret(usize, bool),
    ShareVolume(usize, usize),
    /// The owner of a shared volume stops sharing it: only its consumers' gates change.
    Unshare(usize),
    Delete(usize),
    Create(usize),
    Policy(Option<&'static str>),
    NamespaceLabel(usize, &'static str),
    /// The cluster's own Deployment `d<i>`, privileged or not, with a trusted image or not.
    KubeDeployment(usize, bool, bool),
    KubeDeploymentDeleted(usize),
    /// A ClusterRoleBinding of cluster-admin, to `system:anonymous` or to a group.
    KubeBinding(bool),
}

fn change() -> impl Strategy<Value = Change> {
    let svc = 0..SERVICES;
    prop_oneof![
        (svc.clone(), 1..5i64).prop_map(|(i, r)| Change::Scale(i, r)),
        (svc.clone(), prop_oneof![Just(8080i64), Just(9090)]).prop_map(|(i, p)| Change::Port(i, p)),
        (svc.clone(), any::<bool>()).prop_map(|(i, t)| Change::Image(i, t)),
        (
            svc.clone(),
            prop_oneof![Just(None), Just(Some("NET_ADMIN")), Just(Some("NET_BIND_SERVICE"))]
        )
            .prop_map(|(i, c)| Change::Capability(i, c)),
        (svc.clone(), svc.clone(), any::<bool>()).prop_map(|(i, j, b)| Change::Peer(i, j, b)),
        svc.clone().prop_map(Change::DropPeers),
        (svc.clone(), any::<bool>()).prop_map(|(i, b)| Change::Secret(i, b)),
        (svc.clone(), svc.clone()).prop_map(|(i, j)| Change::ShareVolume(i, j)),
        svc.clone().prop_map(Change::Unshare),
        svc.clone().prop_map(Change::Delete),
        svc.prop_map(Change::Create),
        prop_oneof![
            Just(None),
            Just(Some(
                "@id(\"no-ns1-calls\")\nforbid (principal, action == Lattice::Action::\"Connect\", resource in Lattice::Namespace::\"ns1\");"
            )),
            Just(Some(
                "@id(\"no-caps-ns0\")\nforbid (principal in Lattice::Namespace::\"ns0\", action == Lattice::Action::\"OverrideSecurity\", resource);"
            )),
            Just(Some(
                "@id(\"caps\")\npermit (principal, action == Lattice::Action::\"OverrideSecurity\", resource == Lattice::SecurityOverride::\"capability:NET_ADMIN\");"
            )),
        ]
        .prop_map(Change::Policy),
        (0..NAMESPACES, prop_oneof![Just("baseline"), Just("restricted"), Just("privileged")])
            .prop_map(|(n, l)| Change::NamespaceLabel(n, l)),
        (0..4usize, any::<bool>(), any::<bool>())
            .prop_map(|(i, p, t)| Change::KubeDeployment(i, p, t)),
        (0..4usize).prop_map(Change::KubeDeploymentDeleted),
        any::<bool>().prop_map(Change::KubeBinding),
    ]
}

/// A Deployment as the API server returns it.
fn kube_deployment(i: usize, privileged: bool, trusted: bool) -> Value {
    let image = if trusted {
        format!("registry.example.com/shop/d{i}:1.0")
    } else {
        format!("docker.io/vendor/d{i}:latest")
    };
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("d{i}"), "namespace": ns(i), "uid": format!("uid-d{i}")},
        "spec": {"selector": {"matchLabels": {"app": format!("d{i}")}},
            "template": {"metadata": {"labels": {"app": format!("d{i}")}},
                "spec": {"containers": [{"name": "main", "image": image,
                    "securityContext": {"privileged": privileged}}]}}}})
}

/// The cluster the changes are made to, and the index its watches would keep.
struct Cluster {
    shapes: BTreeMap<usize, Shape>,
    index: Index,
}

impl Cluster {
    fn new() -> Cluster {
        let packs =
            PolicyStore::load_packs(&lattice_testkit::workspace_root().join("policies")).unwrap();
        let mut index = Index::new(packs, admission());
        for v in base() {
            index.apply(v["kind"].as_str().unwrap(), &v).unwrap();
        }
        let shapes: BTreeMap<usize, Shape> = (0..SERVICES).map(|i| (i, shape(i))).collect();
        for (i, s) in &shapes {
            index.apply("LatticeService", &service(*i, s)).unwrap();
        }
        Cluster { shapes, index }
    }

    /// Makes `change`; says whether it touched only workloads.
    fn make(&mut self, change: &Change) -> bool {
        let mut edit = |i: usize, f: &dyn Fn(&mut Shape)| -> bool {
            let Some(s) = self.shapes.get_mut(&i) else {
                return true;
            };
            f(s);
            let v = service(i, s);
            self.index.apply("LatticeService", &v).unwrap();
            true
        };
        match change.clone() {
            Change::Scale(i, r) => edit(i, &|s| s.replicas = r),
            Change::Port(i, p) => edit(i, &|s| s.port = p),
            Change::Image(i, trusted) => edit(i, &|s| {
                s.image = if trusted {
                    format!("registry.example.com/shop/app{i}:2.0")
                } else {
                    format!("docker.io/someone/app{i}:latest")
                }
            }),
            Change::Capability(i, c) => edit(i, &|s| s.capability = c.map(str::to_owned)),
            Change::Peer(i, j, inbound) => edit(i, &|s| {
                if i != j && !s.peers.iter().any(|(p, _)| *p == j) {
                    s.peers.push((j, inbound));
                }
            }),
            Change::DropPeers(i) => edit(i, &|s| s.peers.clear()),
            Change::Secret(i, on) => edit(i, &|s| s.secret = on),
            Change::ShareVolume(owner, consumer) => {
                if owner == consumer || ns(owner) != ns(consumer) {
                    return true;
                }
                // One owner at a time: the volume moves, its other users let go of it.
                let others: Vec<usize> = self
                    .shapes
                    .iter()
                    .filter(|(k, s)| {
                        **k != owner
                            && **k != consumer
                            && (s.mounts_volume || s.owns_volume.is_some())
                    })
                    .map(|(k, _)| *k)
                    .filter(|k| ns(*k) == ns(owner))
                    .collect();
                let mut edit = |i: usize, f: &dyn Fn(&mut Shape)| -> bool {
                    let Some(s) = self.shapes.get_mut(&i) else {
                        return true;
                    };
                    f(s);
                    self.index.apply("LatticeService", &service(i, s)).unwrap();
                    true
                };
                for k in others {
                    edit(k, &|s| {
                        s.mounts_volume = false;
                        s.owns_volume = None;
                    });
                }
                let mut ok = edit(owner, &|s| {
                    s.mounts_volume = false;
                    s.owns_volume = Some(vec![consumer]);
                });
                ok &= edit(consumer, &|s| {
                    s.owns_volume = None;
                    s.mounts_volume = true;
                });
                ok
            }
            Change::Unshare(i) => edit(i, &|s| {
                if s.owns_volume.is_some() {
                    s.owns_volume = Some(Vec::new());
                }
            }),
            Change::Delete(i) => {
                if self.shapes.remove(&i).is_some() {
                    self.index
                        .delete("LatticeService", Some(&ns(i)), &format!("s{i}"));
                }
                true
            }
            Change::Create(i) => {
                let s = self.shapes.entry(i).or_insert_with(|| shape(i)).clone();
                self.index.apply("LatticeService", &service(i, &s)).unwrap();
                true
            }
            Change::Policy(extra) => {
                let v = grants(extra.unwrap_or_default());
                self.index.apply("CedarPolicy", &v).unwrap();
                false
            }
            Change::KubeDeployment(i, privileged, trusted) => {
                let v = kube_deployment(i, privileged, trusted);
                self.index.apply("Deployment", &v).unwrap();
                true
            }
            Change::KubeDeploymentDeleted(i) => {
                self.index
                    .delete("Deployment", Some(&ns(i)), &format!("d{i}"));
                true
            }
            Change::KubeBinding(anonymous) => {
                let subject = if anonymous {
                    json!({"kind": "User", "name": "system:anonymous", "apiGroup": "rbac.authorization.k8s.io"})
                } else {
                    json!({"kind": "Group", "name": "system:masters", "apiGroup": "rbac.authorization.k8s.io"})
                };
                let v = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": "admins", "uid": "uid-admins"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [subject]});
                self.index.apply("ClusterRoleBinding", &v).unwrap();
                true
            }
            Change::NamespaceLabel(n, level) => {
                let v = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": format!("ns{n}"), "uid": format!("uid-ns{n}"),
                                 "labels": {"pod-security.kubernetes.io/enforce": level}}});
                self.index.apply("Namespace", &v).unwrap();
                false
            }
        }
    }
}

/// What a plan decided, in a form two plans compare by.
#[derive(Debug, PartialEq)]
struct Decided {
    /// Owner → (verdict, digest of the verdict and the derived objects).
    workloads: BTreeMap<String, (String, String)>,
    edges: usize,
    allowed_edges: usize,
    namespaces: Vec<String>,
    snapshot: String,
    /// The entities of the cluster's own objects (and the images they name), as JSON.
    kubernetes: BTreeMap<String, Value>,
}

fn decided(p: &Plan) -> Decided {
    Decided {
        workloads: p
            .workloads
            .iter()
            .map(|(o, d)| {
                (
                    o.to_string(),
                    (format!("{:?}", d.verdict), d.digest.clone()),
                )
            })
            .collect(),
        edges: p.edges,
        allowed_edges: p.allowed_edges,
        namespaces: p
            .namespaces
            .iter()
            .map(|(n, d)| format!("{n}={}", d.digest))
            .collect(),
        snapshot: p.current.snapshot.digest().to_owned(),
        kubernetes: p
            .current
            .snapshot
            .entities()
            .iter()
            .filter(|e| {
                let ty = e.uid().type_name().basename().to_owned();
                matches!(ty.as_str(), "Pod" | "RoleBinding" | "Image")
                    || (ty == "Container" && e.uid().id().unescaped().contains("/Deployment/"))
            })
            .map(|e| {
                let mut v = e.to_json_value().unwrap();
                // Ancestors are a set; JSON lists them in no particular order.
                if let Some(parents) = v["parents"].as_array_mut() {
                    parents.sort_by_key(|p| p.to_string());
                }
                (e.uid().to_string(), v)
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_plan_decides_what_a_whole_plan_decides(
        changes in prop::collection::vec(change(), 1..10)
    ) {
        let mut cluster = Cluster::new();
        let mut planner = Planner::new();
        let first = cluster.index.take_changes();
        let (_, made) = planner.next(&cluster.index.clone(), &first).unwrap();
        prop_assert!(matches!(made, Made::Whole(_)), "the first plan is whole");
        for change in &changes {
            let workloads_only = cluster.make(change);
            let changes = cluster.index.take_changes();
            let copy = cluster.index.clone();
            let (incremental, made) = planner.next(&copy, &changes).unwrap();
            let whole = plan(copy).unwrap();
            prop_assert_eq!(
                decided(&incremental),
                decided(&whole),
                "after {:?} ({:?})",
                change,
                made
            );
            if workloads_only {
                prop_assert!(
                    matches!(made, Made::Incremental { .. }),
                    "{:?} touched workloads only, yet: {:?}",
                    change,
                    made
                );
            }
        }
    }
}

#[test]
fn a_policy_edit_re_derives_only_what_its_scope_reaches() {
    let mut cluster = Cluster::new();
    let mut planner = Planner::new();
    let first = cluster.index.take_changes();
    planner.next(&cluster.index.clone(), &first).unwrap();
    // A forbid on OverrideSecurity for one namespace reaches no workload: none asks for one.
    cluster.make(&Change::Policy(Some(
        "@id(\"no-caps-ns0\")\nforbid (principal in Lattice::Namespace::\"ns0\", action == Lattice::Action::\"OverrideSecurity\", resource);",
    )));
    let changes = cluster.index.take_changes();
    let (_, made) = planner.next(&cluster.index.clone(), &changes).unwrap();
    assert_eq!(made, Made::Incremental { derived: 0 });
    // A forbid on calls into ns1 reaches the services of ns1 and every caller of one.
    cluster.make(&Change::Policy(Some(
        "@id(\"no-ns1-calls\")\nforbid (principal, action == Lattice::Action::\"Connect\", resource in Lattice::Namespace::\"ns1\");",
    )));
    let changes = cluster.index.take_changes();
    let copy = cluster.index.clone();
    let (incremental, made) = planner.next(&copy, &changes).unwrap();
    let Made::Incremental { derived } = made else {
        panic!("a policy edit is incremental: {made:?}")
    };
    assert!(
        derived > 0 && derived < SERVICES,
        "only the ends of calls into ns1 are derived again, not all: {derived}"
    );
    assert_eq!(decided(&incremental), decided(&plan(copy).unwrap()));
}

#[test]
fn a_volume_owner_that_stops_sharing_withdraws_its_consumers_access() {
    let mut cluster = Cluster::new();
    let mut planner = Planner::new();
    cluster.make(&Change::ShareVolume(0, 3));
    let first = cluster.index.take_changes();
    planner.next(&cluster.index.clone(), &first).unwrap();
    // Only the owner changes; the consumer's gate reads the owner's volume entity.
    cluster.make(&Change::Unshare(0));
    let changes = cluster.index.take_changes();
    assert_eq!(changes.objects.len(), 1, "one workload changed");
    let copy = cluster.index.clone();
    let (incremental, made) = planner.next(&copy, &changes).unwrap();
    assert!(matches!(made, Made::Incremental { .. }), "{made:?}");
    let consumer = incremental
        .workloads
        .iter()
        .find(|(o, _)| o.name == "s3")
        .map(|(_, d)| d.verdict.clone())
        .unwrap();
    assert!(
        matches!(
            consumer,
            lattice_controllers::operator::plan::Verdict::Denied(_)
        ),
        "the consumer may no longer mount the volume: {consumer:?}"
    );
    assert_eq!(decided(&incremental), decided(&plan(copy).unwrap()));
}

/// The example world, as an API server would return it (CedarPolicies stamped).
fn example_world() -> Index {
    let dir = lattice_testkit::workspace_root().join("examples/world");
    // Its manifests (beside them, `images/` holds its signed images).
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let packs =
        PolicyStore::load_packs(&lattice_testkit::workspace_root().join("policies")).unwrap();
    let mut index = Index::new(packs, admission());
    for (i, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
        assert!(errors.is_empty(), "{}", file.display());
        for (j, doc) in docs.into_iter().enumerate() {
            let mut v = doc.value;
            if !v.is_object() {
                continue;
            }
            v["metadata"]["uid"] = json!(format!("uid-{i}-{j}"));
            if v["kind"] == "CedarPolicy" {
                v = stamped(v);
            }
            let kind = v["kind"].as_str().unwrap().to_owned();
            index.apply(&kind, &v).unwrap();
        }
    }
    // Its images, verified against its OCI layout as the operator's images task does.
    let layout = lattice_supply::layout::Layout::open(&dir.join("images")).unwrap();
    let facts = lattice_supply::facts_of(index.world(), lattice_supply::Source::Layout(layout));
    index.set_images(facts);
    index
}

#[test]
fn the_example_world_plans_a_service_change_incrementally_and_a_literal_read_whole() {
    let mut index = example_world();
    let mut planner = Planner::new();
    let first = index.take_changes();
    planner.next(&index.clone(), &first).unwrap();
    // Its policies compare service literals (`principal == Service::"platform/legacy-postgres"`)
    // but read no workload's data: one service's change stays local.
    let mut api: Value = index
        .world()
        .objects()
        .find_map(|(k, o)| match o {
            lattice_schemas::manifest::Object::Service(s) if k.name == "api" => {
                Some(serde_json::to_value(s).unwrap())
            }
            _ => None,
        })
        .unwrap();
    api["metadata"]["uid"] = json!("uid-api");
    api["spec"]["replicas"] = json!(5);
    index.apply("LatticeService", &api).unwrap();
    let changes = index.take_changes();
    let copy = index.clone();
    let (incremental, made) = planner.next(&copy, &changes).unwrap();
    assert!(matches!(made, Made::Incremental { .. }), "{made:?}");
    assert_eq!(decided(&incremental), decided(&plan(copy).unwrap()));
    // A policy that reads a service's replicas by name can change any workload's answer.
    let reads = stamped(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": "reads-api", "namespace": "platform", "uid": "uid-reads"},
        "spec": {"policies": "@id(\"api-scaled\")\nforbid (principal, action == Lattice::Action::\"UseGpu\", resource) when { Lattice::Service::\"shop/api\".replicas > 10 };"}
    }));
    index.apply("CedarPolicy", &reads).unwrap();
    let changes = index.take_changes();
    planner.next(&index.clone(), &changes).unwrap();
    api["spec"]["replicas"] = json!(6);
    index.apply("LatticeService", &api).unwrap();
    let changes = index.take_changes();
    let (_, made) = planner.next(&index.clone(), &changes).unwrap();
    assert!(
        matches!(&made, Made::Whole(why) if why.contains("names a workload's entity and reads its data")),
        "{made:?}"
    );
}
