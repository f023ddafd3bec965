//! Whatever arrives at `/validate`, reading it never panics: arbitrary bytes, and valid
//! reviews with fields cut, retyped or replaced, are either read or refused with an error.
//! A review that is read still says what its request said.

use lattice_controllers::webhook::admit;
use lattice_controllers::webhook::review::{ReviewError, parse};
use proptest::prelude::*;
use serde_json::{Value, json};

fn valid() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "lattice.dev", "version": "v1alpha1", "kind": "LatticeService"},
            "resource": {"group": "lattice.dev", "version": "v1alpha1", "resource": "latticeservices"},
            "name": "api",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["dev"]},
            "object": {
                "apiVersion": "lattice.dev/v1alpha1",
                "kind": "LatticeService",
                "metadata": {"name": "api", "namespace": "shop"},
                "spec": {"containers": {"main": {"image": "ghcr.io/a/b:1"}}}
            },
            "dryRun": false
        }
    })
}

/// Every JSON pointer into `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,20}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"apiVersion": "v1", "kind": "Secret"})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn arbitrary_bytes_are_refused_or_read(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn mangled_reviews_are_refused_or_read_consistently(
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(replacement())), 1..4)
    ) {
        let mut v = valid();
        for (index, with) in edits {
            let mut all = Vec::new();
            pointers(&v, String::new(), &mut all);
            if all.is_empty() {
                break;
            }
            let p = index.get(&all).clone();
            let (parent, key) = p.rsplit_once('/').unwrap();
            let target = if parent.is_empty() { Some(&mut v) } else { v.pointer_mut(parent) };
            match (target, with) {
                (Some(Value::Object(m)), Some(x)) => { m.insert(key.to_owned(), x); }
                (Some(Value::Object(m)), None) => { m.remove(key); }
                (Some(Value::Array(a)), Some(x)) => {
                    if let Ok(i) = key.parse::<usize>() && i < a.len() { a[i] = x; }
                }
                _ => {}
            }
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        match parse(&bytes) {
            Ok(review) => {
                // What was read is what was sent, and deciding it never panics either.
                prop_assert_eq!(Some(review.uid.as_str()), v.pointer("/request/uid").and_then(Value::as_str));
                prop_assert!(!review.uid.is_empty());
                let verdict = admit::admit(None, &review);
                prop_assert!(verdict.allowed || !verdict.message.is_empty());
            }
            Err(ReviewError::Inconsistent { uid, message }) => {
                prop_assert!(!uid.is_empty());
                prop_assert!(!message.is_empty());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
