//! The operator's domain core without a cluster: objects fed straight into the index, the
//! plan asserted. (The same paths against a real API server: `tests/operator.rs`.)

use lattice_controllers::operator::index::{Index, PolicyOutcome};
use lattice_controllers::operator::plan::{Owner, Verdict, plan};
use lattice_controllers::operator::resources::{ObjectId, derived_kind};
use lattice_controllers::webhook::stamp::{ANNOTATION, AdmissionKey};
use lattice_engine::{ObjectKey, PolicyStore};
use lattice_schemas::crd::Kind;
use serde_json::{Value, json};

fn packs() -> PolicyStore {
    PolicyStore::load_packs(&lattice_testkit::workspace_root().join("policies")).unwrap()
}

/// The objects of a YAML file, as an API server would return them (with a uid).
fn objects(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    assert!(errors.is_empty());
    docs.into_iter()
        .map(|d| d.value)
        .filter(Value::is_object)
        .enumerate()
        .map(|(i, mut v)| {
            v["metadata"]["uid"] = json!(format!("uid-{i}"));
            v["metadata"]["generation"] = json!(1);
            v
        })
        .collect()
}

/// The key these indexes check admission stamps with.
fn admission() -> std::sync::Arc<AdmissionKey> {
    std::sync::Arc::new(AdmissionKey::from_bytes(&[42; 32]).unwrap())
}

/// A CedarPolicy as the webhook stamps a write it admitted for a security administrator.
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

/// An index of `values`, their CedarPolicies admitted (stamped).
fn index_of(values: &[Value]) -> Index {
    let mut index = Index::new(packs(), admission());
    for v in values {
        let v = if v["kind"] == "CedarPolicy" {
            stamped(v.clone())
        } else {
            v.clone()
        };
        index.apply(v["kind"].as_str().unwrap(), &v).unwrap();
    }
    index
}

/// Verifies the index's images against the example world's OCI layout, as the operator's
/// images task does.
fn verify_images(index: &mut Index) {
    let layout = lattice_supply::layout::Layout::open(
        &lattice_testkit::workspace_root().join("examples/world/images"),
    )
    .unwrap();
    let facts = lattice_supply::facts_of(index.world(), lattice_supply::Source::Layout(layout));
    index.set_images(facts);
}

fn shop() -> Vec<Value> {
    objects(&lattice_testkit::workspace_root().join("controllers/tests/data/shop.yaml"))
}

fn owner(name: &str) -> Owner {
    Owner {
        kind: Kind::LatticeService,
        namespace: "shop".into(),
        name: name.into(),
    }
}

#[test]
fn every_kind_derived_from_the_example_world_has_an_apply_layer() {
    let dir = lattice_testkit::workspace_root().join("examples/world");
    // Its manifests (beside them, `images/` holds its signed images).
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let values: Vec<Value> = files.iter().flat_map(|f| objects(f)).collect();
    let mut index = index_of(&values);
    verify_images(&mut index);
    let decided = plan(index.clone()).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for d in decided.workloads.values() {
        for o in &d.objects {
            let (api_version, kind) = (
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
            );
            assert!(
                derived_kind(api_version, kind).is_some(),
                "no apply layer for {api_version} {kind}"
            );
            kinds.insert(kind.to_owned());
        }
    }
    // The example world exercises most of what the compiler emits.
    assert!(kinds.len() >= 10, "{kinds:?}");
}

#[test]
fn a_status_write_is_not_a_change_but_a_spec_edit_is() {
    let values = shop();
    let mut index = index_of(&values);
    let mut api = values
        .iter()
        .find(|v| v["metadata"]["name"] == "api")
        .unwrap()
        .clone();
    api["status"] = json!({"phase": "Ready"});
    api["metadata"]["resourceVersion"] = json!("42");
    api["metadata"]["managedFields"] = json!([{"manager": "lattice"}]);
    assert!(
        !index.apply("LatticeService", &api).unwrap(),
        "status and bookkeeping decide nothing"
    );
    let key = ObjectKey {
        kind: "LatticeService",
        namespace: Some("shop".into()),
        name: "api".into(),
    };
    assert_eq!(
        index.live(&key).unwrap().status,
        json!({"phase": "Ready"}),
        "but the status is kept"
    );
    api["spec"]["replicas"] = json!(3);
    assert!(index.apply("LatticeService", &api).unwrap());
}

#[test]
fn a_rejected_cedar_policy_leaves_the_accepted_version_in_force() {
    let values = shop();
    let mut index = index_of(&values);
    let policy = json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": "freeze", "namespace": "shop", "uid": "p", "generation": 1},
        "spec": {"policies": "@id(\"freeze-api\")\nforbid (principal == Lattice::Service::\"shop/api\", action, resource);\n"},
    });
    // Written past the webhook (no stamp): refused, never loaded.
    index.apply("CedarPolicy", &policy).unwrap();
    let outcome = |index: &Index| index.policy_outcomes().next().unwrap().1.clone();
    let (_, PolicyOutcome::Rejected { errors }) = outcome(&index) else {
        panic!("an unstamped policy is not loaded")
    };
    assert!(errors[0].starts_with("not admitted"), "{errors:?}");
    assert_eq!(
        plan(index.clone()).unwrap().workloads[&owner("api")].verdict,
        Verdict::Authorized,
        "the unadmitted forbid decides nothing"
    );
    // Admitted: loaded.
    let mut policy = stamped(policy);
    index.apply("CedarPolicy", &policy).unwrap();
    assert_eq!(
        outcome(&index),
        (
            Some(1),
            PolicyOutcome::Accepted {
                permits: 0,
                forbids: 1
            }
        )
    );
    assert!(matches!(
        plan(index.clone()).unwrap().workloads[&owner("api")].verdict,
        Verdict::Denied(_)
    ));

    // A new version edited past the webhook keeps its old stamp, which no longer matches:
    // refused, and the admitted version stays in force.
    let mut widened = policy.clone();
    widened["metadata"]["generation"] = json!(2);
    widened["spec"]["policies"] =
        json!("@id(\"noop\")\npermit (principal, action, resource) when { false };\n");
    index.apply("CedarPolicy", &widened).unwrap();
    let (_, PolicyOutcome::Rejected { errors }) = outcome(&index) else {
        panic!("a stale stamp is not an admission")
    };
    assert!(errors[0].contains("does not match this spec"), "{errors:?}");
    assert!(matches!(
        plan(index.clone()).unwrap().workloads[&owner("api")].verdict,
        Verdict::Denied(_)
    ));

    policy["metadata"]["generation"] = json!(2);
    policy["spec"]["policies"] = json!("forbid (principal action, resource);\n");
    let policy = stamped(policy);
    index.apply("CedarPolicy", &policy).unwrap();
    let (generation, PolicyOutcome::Rejected { errors }) = outcome(&index) else {
        panic!("rejected")
    };
    assert_eq!(generation, Some(2));
    assert!(
        errors.iter().any(|e| e.starts_with("line 1, column ")),
        "{errors:?}"
    );
    // Fail closed: the forbid accepted before still holds.
    assert!(matches!(
        plan(index.clone()).unwrap().workloads[&owner("api")].verdict,
        Verdict::Denied(_)
    ));

    assert!(index.delete("CedarPolicy", Some("shop"), "freeze"));
    assert_eq!(
        plan(index.clone()).unwrap().workloads[&owner("api")].verdict,
        Verdict::Authorized
    );
}

#[test]
fn edge_objects_belong_to_the_callee_and_everything_carries_its_owner() {
    let index = index_of(&shop());
    let decided = plan(index.clone()).unwrap();
    let api = &decided.workloads[&owner("api")];
    let web = &decided.workloads[&owner("web")];
    let ids = |objects: &[Value]| objects.iter().filter_map(ObjectId::of).collect::<Vec<_>>();
    let edge = |kind: &str| ObjectId {
        api_version: if kind == "CiliumNetworkPolicy" {
            "cilium.io/v2"
        } else {
            "security.istio.io/v1"
        }
        .into(),
        kind: kind.into(),
        namespace: "shop".into(),
        name: "api-from-shop-web".into(),
    };
    for kind in ["CiliumNetworkPolicy", "AuthorizationPolicy"] {
        assert!(
            ids(&api.objects).contains(&edge(kind)),
            "the callee owns its {kind}"
        );
        assert!(
            !ids(&web.objects).contains(&edge(kind)),
            "one owner per object"
        );
    }
    for o in &api.objects {
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["uid"],
            json!(api.uid),
            "{o}"
        );
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["controller"],
            json!(true)
        );
    }
}

#[test]
fn the_digest_moves_only_when_what_is_derived_moves() {
    let values = shop();
    let index = index_of(&values);
    let before = plan(index.clone()).unwrap();
    let again = plan(index.clone()).unwrap();
    for (o, d) in &before.workloads {
        assert_eq!(d.digest, again.workloads[o].digest, "deterministic for {o}");
    }
    // A change to web alone leaves api's derivation, and so its digest, alone.
    let mut index = index;
    let mut web = values
        .iter()
        .find(|v| v["metadata"]["name"] == "web")
        .unwrap()
        .clone();
    web["spec"]["replicas"] = json!(4);
    index.apply("LatticeService", &web).unwrap();
    let after = plan(index.clone()).unwrap();
    assert_eq!(
        before.workloads[&owner("api")].digest,
        after.workloads[&owner("api")].digest
    );
    assert_ne!(
        before.workloads[&owner("web")].digest,
        after.workloads[&owner("web")].digest
    );
}

#[test]
fn an_unreadable_object_is_an_error_and_changes_nothing() {
    let mut index = index_of(&shop());
    let before = index.world().digest();
    let bad = json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"containers": "not a map"},
    });
    assert!(index.apply("LatticeService", &bad).is_err());
    assert!(
        index.apply("Deployment", &bad).is_err(),
        "not a Lattice kind"
    );
    assert_eq!(index.world().digest(), before);
}

fn leaves(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Whatever a watch delivers, the index never panics, and what it refuses changes
    /// nothing; whatever it accepts can still be planned.
    #[test]
    fn mangled_objects_never_panic_and_refusals_change_nothing(
        which in 0usize..4,
        pick in proptest::prelude::any::<proptest::sample::Index>(),
        replacement in any_json(),
    ) {
        let values = shop();
        let mut index = index_of(&values);
        let mut object = values[which % values.len()].clone();
        let mut paths = Vec::new();
        leaves(&object, String::new(), &mut paths);
        let path = pick.get(&paths).clone();
        if path.is_empty() {
            object = replacement;
        } else if let Some(slot) = object.pointer_mut(&path) {
            *slot = replacement;
        }
        let kind = object["kind"].as_str().unwrap_or("LatticeService").to_owned();
        let before = index.world().digest();
        match index.apply(&kind, &object) {
            Err(_) => proptest::prop_assert_eq!(index.world().digest(), before),
            Ok(_) => {
                let _ = plan(index.clone());
            }
        }
    }
}
