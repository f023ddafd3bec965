//! A snapshot remembers the shapes of requests Cedar's schema check passed
//! (`lattice_engine::requests`). Whatever it remembers, every request must get exactly the
//! answer Cedar's own check gives it: accepted, or refused with Cedar's message. Requests
//! come in random order, so a shape may be remembered before its near misses (a wrong
//! type, a missing or an extra attribute, an entity of another type) arrive.

use cedar_policy::{Context, EntityUid, Request};
use lattice_engine::{PolicyStore, Projection, Query, Snapshot, World, action, uid};
use proptest::prelude::*;
use serde_json::{Value, json};

fn snapshot() -> Snapshot {
    let w = World::new();
    Snapshot::build(&w, &Projection::of(&w), &PolicyStore::new()).expect("a snapshot")
}

/// Mostly an entity of the type the action takes (`right`), sometimes of another.
fn entity(right: &'static str) -> impl Strategy<Value = EntityUid> {
    let right = (0..3usize).prop_map(move |i| match right {
        "Image" => uid("Image", &format!("ghcr.io/org/app{i}:1.0")),
        _ => uid("Service", &format!("shop/s{i}")),
    });
    prop_oneof![
        6 => right,
        1 => Just(uid("Namespace", "shop")),
        1 => Just(uid("Cluster", "c0")),
        1 => Just(uid("Image", "ghcr.io/org/app:1.0")),
    ]
}

/// A context value near what the action asks: right, of the wrong type, or absent.
fn near(right: Value) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        12 => Just(Some(right)),
        1 => Just(Some(json!("text"))),
        1 => Just(Some(json!(7))),
        1 => Just(Some(json!([true]))),
        1 => Just(None),
    ]
}

fn record(fields: Vec<(&str, Option<Value>)>, extra: bool) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    }
    if extra {
        m.insert("unexpected".into(), json!(1));
    }
    Value::Object(m)
}

/// A `DeployImage` or `Connect` question (the gates' and the mesh's), with a context near
/// what the schema declares.
fn query() -> impl Strategy<Value = (EntityUid, &'static str, EntityUid, Value)> {
    let extra = || proptest::bool::weighted(0.1);
    let deploy = (
        entity("Service"),
        near(json!("main")),
        near(json!("service")),
        near(json!(false)),
        extra(),
        entity("Image"),
    )
        .prop_map(|(p, raised, kind, sidecar, extra, r)| {
            let context = record(
                vec![
                    ("raisedBy", raised),
                    ("workloadKind", kind),
                    ("sidecar", sidecar),
                ],
                extra,
            );
            (p, "DeployImage", r, context)
        });
    let connect = (
        entity("Service"),
        near(json!([8080, 9090])),
        prop_oneof![
            4 => Just(None),
            1 => Just(Some(json!({"__entity": {"type": "Lattice::Cluster", "id": "c0"}}))),
            1 => Just(Some(json!({"__entity": {"type": "Lattice::Namespace", "id": "shop"}}))),
        ],
        extra(),
        entity("Service"),
    )
        .prop_map(|(p, ports, cluster, extra, r)| {
            let context = record(vec![("ports", ports), ("callerCluster", cluster)], extra);
            (p, "Connect", r, context)
        });
    prop_oneof![deploy, connect]
}

/// Cedar's own answer: the request, or its message.
fn cedar(snapshot: &Snapshot, q: &Query) -> Result<Request, String> {
    Request::new(
        q.principal.clone(),
        q.action.clone(),
        q.resource.clone(),
        q.context.clone(),
        Some(snapshot.schema()),
    )
    .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_remembered_shape_never_changes_an_answer(
        queries in proptest::collection::vec(query(), 1..40)
    ) {
        let snapshot = snapshot();
        let mut accepted = 0;
        // Twice over: the second pass meets every shape the first remembered.
        for _ in 0..2 {
            for (p, a, r, c) in &queries {
                let Ok(context) = Context::from_json_value(c.clone(), None) else {
                    continue;
                };
                let q = Query::new(p.clone(), action(a), r.clone()).with_context(context);
                let ours = snapshot.request(&q).map_err(|e| e.0);
                let theirs = cedar(&snapshot, &q);
                match (&ours, &theirs) {
                    (Ok(o), Ok(t)) => {
                        accepted += 1;
                        prop_assert_eq!(format!("{o:?}"), format!("{t:?}"));
                    }
                    (Err(o), Err(t)) => prop_assert_eq!(o, t),
                    _ => prop_assert!(false, "{q:?}: ours {ours:?}, Cedar's {theirs:?}"),
                }
            }
        }
        // Whatever passed was remembered, and no refusal was.
        prop_assert_eq!(accepted > 0, snapshot.remembered_requests() > 0);
    }
}

/// `Connect` from `caller` to `callee` with `ports` as its context.
fn connect(caller: EntityUid, callee: EntityUid, ports: Value) -> Query {
    Query::new(caller, action("Connect"), callee)
        .with_context(Context::from_json_value(json!({ "ports": ports }), None).unwrap())
}

#[test]
fn a_shape_is_remembered_only_after_it_passes() {
    let snapshot = snapshot();
    let (a, b) = (uid("Service", "shop/a"), uid("Service", "shop/b"));
    let ok = connect(a.clone(), b.clone(), json!([8080]));
    let wrong = connect(a, b.clone(), json!(["8080"]));
    assert!(snapshot.request(&wrong).is_err());
    assert!(
        snapshot.request(&wrong).is_err(),
        "a refusal is never remembered"
    );
    assert_eq!(snapshot.remembered_requests(), 0);
    snapshot.request(&ok).unwrap();
    assert_eq!(snapshot.remembered_requests(), 1);
    // Another caller and callee of the same types, the same ports: the same shape.
    let other = connect(
        uid("Service", "pay/x"),
        uid("Service", "pay/y"),
        json!([8080]),
    );
    snapshot.request(&other).unwrap();
    assert_eq!(snapshot.remembered_requests(), 1);
    // The same context for an action whose principal type differs: still checked, refused.
    let mistyped = connect(uid("Namespace", "shop"), b, json!([8080]));
    let err = snapshot.request(&mistyped).unwrap_err().0;
    assert_eq!(err, cedar(&snapshot, &mistyped).unwrap_err());
}
