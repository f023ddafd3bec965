//! `context_from_json` builds exactly the context Cedar's own JSON reader builds, and fails
//! exactly when it fails: what-if and the mesh plan build their contexts the fast way, and
//! a decision must never depend on which way was taken.

use cedar_policy::Context;
use lattice_engine::context_from_json;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Beyond i64, and floats: Cedar refuses both.
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        "[a-z:/ ]{0,12}".prop_map(Value::String),
        Just(Value::Null),
        Just(json!({"__entity": {"type": "Lattice::Service", "id": "shop/api"}})),
        Just(json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}})),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("(__entity|[a-zA-Z_]{1,8})", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn same(fast: &Result<Context, String>, cedar: &Result<Context, String>, keys: &[String]) -> bool {
    match (fast, cedar) {
        (Ok(a), Ok(b)) => keys.iter().all(|k| a.get(k) == b.get(k)),
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_fast_path_agrees_with_cedar(
        fields in prop::collection::btree_map("(__entity|__extn|[a-zA-Z_]{1,10})", value(), 0..6)
    ) {
        let keys: Vec<String> = fields.keys().cloned().collect();
        let v = Value::Object(fields.into_iter().collect());
        let fast = context_from_json(&v);
        let cedar = Context::from_json_value(v.clone(), None).map_err(|e| e.to_string());
        prop_assert!(same(&fast, &cedar, &keys), "{v}: {fast:?} vs {cedar:?}");
    }
}

#[test]
fn lattice_contexts_take_the_fast_path_and_read_the_same() {
    let v = json!({"raisedBy": "main", "workloadKind": "service", "sidecar": false,
                   "ports": [8080, 9090], "limits": {"cpu": 2, "gpu": {"count": 1}}});
    let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    let fast = context_from_json(&v);
    let cedar = Context::from_json_value(v.clone(), None).map_err(|e| e.to_string());
    assert!(fast.is_ok());
    assert!(same(&fast, &cedar, &keys));
}

#[test]
fn what_cedar_refuses_is_refused() {
    for v in [
        json!([1, 2]),
        json!("text"),
        json!({"n": 1.5}),
        json!({"n": u64::MAX}),
    ] {
        assert!(context_from_json(&v).is_err(), "{v}");
    }
}
