//! The index must give exactly what `Authorizer::is_authorized` gives on the whole policy
//! set — decision, reasons and errors — for any entities, policies and request.

use std::collections::HashSet;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityUid, Policy, PolicyId, Request, RestrictedExpression as Rx,
};
use lattice_engine::index::PolicyIndex;
use proptest::prelude::*;

const NAMESPACES: [&str; 3] = ["shop", "pay", "dev"];

fn euid(s: &str) -> EntityUid {
    EntityUid::from_str(s).unwrap()
}

fn svc(i: usize) -> String {
    format!(r#"Lattice::Service::"{}/s{i}""#, NAMESPACES[i % 3])
}

/// A small world: 2 clusters, 3 namespaces, 6 services, 2 containers, users in groups.
fn entities(replicas: &[i64]) -> Entities {
    let mut out = Vec::new();
    let parents = |p: &[String]| p.iter().map(|s| euid(s)).collect::<HashSet<_>>();
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::Cluster::"c0""#),
        HashSet::new(),
    ));
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::Cluster::"c1""#),
        parents(&[r#"Lattice::Cluster::"c0""#.into()]),
    ));
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let cluster = if i == 2 { "c1" } else { "c0" };
        out.push(Entity::new_no_attrs(
            euid(&format!(r#"Lattice::Namespace::"{ns}""#)),
            parents(&[format!(r#"Lattice::Cluster::"{cluster}""#)]),
        ));
    }
    for i in 0..6 {
        let attrs: std::collections::HashMap<String, Rx> = [
            (
                "replicas".to_owned(),
                Rx::new_long(replicas[i % replicas.len()]),
            ),
            (
                "kind".to_owned(),
                Rx::new_string(if i % 2 == 0 { "service" } else { "job" }.into()),
            ),
            (
                "dependencies".to_owned(),
                Rx::new_set([Rx::new_entity_uid(euid(&svc((i + 1) % 6)))]),
            ),
        ]
        .into_iter()
        .collect();
        let tags: std::collections::HashMap<String, Rx> = if i % 3 == 0 {
            [("env".to_owned(), Rx::new_string("prod".into()))]
                .into_iter()
                .collect()
        } else {
            Default::default()
        };
        out.push(
            Entity::new_with_tags(
                euid(&svc(i)),
                attrs,
                parents(&[format!(r#"Lattice::Namespace::"{}""#, NAMESPACES[i % 3])]),
                tags,
            )
            .unwrap(),
        );
    }
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::Container::"shop/s0/main""#),
        parents(&[svc(0)]),
    ));
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::Container::"pay/s1/main""#),
        parents(&[svc(1)]),
    ));
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::Group::"admins""#),
        HashSet::new(),
    ));
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::User::"alice""#),
        parents(&[r#"Lattice::Group::"admins""#.into()]),
    ));
    out.push(Entity::new_no_attrs(
        euid(r#"Lattice::User::"bob""#),
        HashSet::new(),
    ));
    Entities::from_entities(out, None).unwrap()
}

fn principals() -> Vec<String> {
    let mut v: Vec<String> = (0..6).map(svc).collect();
    v.extend([
        r#"Lattice::User::"alice""#.into(),
        r#"Lattice::User::"bob""#.into(),
        r#"Lattice::Cluster::"c1""#.into(),
    ]);
    v.push(r#"Lattice::Service::"ghost/none""#.into()); // not in the store
    v
}

fn resources() -> Vec<String> {
    let mut v = principals();
    v.extend([
        r#"Lattice::Namespace::"shop""#.into(),
        r#"Lattice::Cluster::"c0""#.into(),
        r#"Lattice::Container::"shop/s0/main""#.into(),
        r#"Lattice::Framework::"soc2""#.into(),
    ]);
    v
}

const ACTIONS: [&str; 7] = [
    "Connect",
    "DeployImage",
    "get",
    "delete",
    "exec",
    "Comply",
    "ManagePolicy",
];

fn scope(which: &'static str) -> impl Strategy<Value = String> {
    let targets = if which == "principal" {
        principals()
    } else {
        resources()
    };
    let targets2 = targets.clone();
    prop_oneof![
        Just(which.to_owned()),
        prop::sample::select(targets).prop_map(move |t| format!("{which} == {t}")),
        prop::sample::select(vec![
            r#"Lattice::Namespace::"shop""#,
            r#"Lattice::Namespace::"pay""#,
            r#"Lattice::Cluster::"c0""#,
            r#"Lattice::Cluster::"c1""#,
            r#"Lattice::Group::"admins""#,
        ])
        .prop_map(move |t| format!("{which} in {t}")),
        prop::sample::select(vec![
            "Lattice::Service",
            "Lattice::User",
            "Lattice::Namespace"
        ])
        .prop_map(move |t| format!("{which} is {t}")),
        prop::sample::select(vec![
            ("Lattice::Service", r#"Lattice::Namespace::"pay""#),
            ("Lattice::Service", r#"Lattice::Cluster::"c0""#)
        ])
        .prop_map(move |(t, e)| format!("{which} is {t} in {e}")),
        prop::sample::select(targets2).prop_map(move |t| format!("{which} in {t}")),
    ]
}

fn action_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_owned()),
        prop::sample::select(ACTIONS.to_vec())
            .prop_map(|a| format!(r#"action == Lattice::Action::"{a}""#)),
        prop::sample::subsequence(ACTIONS.to_vec(), 1..3).prop_map(|a| format!(
            "action in [{}]",
            a.iter()
                .map(|a| format!(r#"Lattice::Action::"{a}""#))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        prop::sample::select(vec!["ClusterRead", "ClusterWrite", "ClusterAdmin"])
            .prop_map(|g| format!(r#"action in Lattice::Action::"{g}""#)),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "when { true }",
        "when { false }",
        "when { principal.replicas > 1 }", // errors for non-services
        "when { principal.replicas * 4611686018427387904 > 0 }", // overflows when replicas >= 2
        r#"when { resource has kind && resource.kind == "job" }"#,
        r#"when { principal.hasTag("env") && principal.getTag("env") == "prod" }"#,
        r#"unless { principal.getTag("env") == "prod" }"#, // errors without the tag
        "when { principal.dependencies.contains(resource) }",
        "when { context.ports.contains(80) }", // errors: the context is empty
        r#"when { principal in Lattice::Namespace::"dev" }"#,
    ])
    .prop_map(str::to_owned)
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        scope("principal"),
        action_scope(),
        scope("resource"),
        condition(),
    )
        .prop_map(|(permit, p, a, r, c)| {
            format!(
                "{}({p}, {a}, {r}) {c};",
                if permit { "permit" } else { "forbid" }
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn indexed_evaluation_equals_plain_cedar(
        texts in prop::collection::vec(policy_text(), 0..14),
        replicas in prop::collection::vec(0i64..4, 1..4),
        p in prop::sample::select(principals()),
        a in prop::sample::select(ACTIONS.to_vec()),
        r in prop::sample::select(resources()),
    ) {
        let policies: Vec<Policy> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Policy::parse(Some(PolicyId::new(format!("p{i}"))), t).unwrap_or_else(|e| panic!("{t}: {e}")))
            .collect();
        let index = PolicyIndex::new(&policies, lattice_schemas::cedar::schema());
        let entities = entities(&replicas);
        let (p, a, r) = (euid(&p), euid(&format!(r#"Lattice::Action::"{a}""#)), euid(&r));
        // No schema: any combination is asked, so scopes, types and errors all vary.
        let request = Request::new(p.clone(), a.clone(), r.clone(), Context::empty(), None).unwrap();
        let plain = index.evaluate_unindexed(&request, &entities);
        let indexed = index.evaluate(&request, &p, &a, &r, &entities);
        prop_assert_eq!(&indexed, &plain, "policies: {:#?}", texts);
        prop_assert!(index.candidate_count(&p, &a, &r, &entities) <= policies.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// A policy change shares the tables it does not touch with the index it came from
    /// (copied on write): the new index decides as plain Cedar on the changed set, and the
    /// old one still decides as before the change.
    #[test]
    fn a_changed_index_decides_as_cedar_and_leaves_the_old_one_as_it_was(
        texts in prop::collection::vec(policy_text(), 1..10),
        added in prop::collection::vec(policy_text(), 0..5),
        removed in prop::collection::vec(any::<bool>(), 10),
        replicas in prop::collection::vec(0i64..4, 1..4),
        p in prop::sample::select(principals()),
        a in prop::sample::select(ACTIONS.to_vec()),
        r in prop::sample::select(resources()),
    ) {
        let parse = |i: usize, t: &String| {
            Policy::parse(Some(PolicyId::new(format!("p{i}"))), t).unwrap_or_else(|e| panic!("{t}: {e}"))
        };
        let before: Vec<Policy> = texts.iter().enumerate().map(|(i, t)| parse(i, t)).collect();
        let new: Vec<Policy> = added.iter().enumerate().map(|(i, t)| parse(100 + i, t)).collect();
        let gone: Vec<&Policy> = before.iter().zip(&removed).filter(|(_, r)| **r).map(|(p, _)| p).collect();
        let schema = lattice_schemas::cedar::schema();
        let old = PolicyIndex::new(&before, schema);
        let changed = old.with_changes(gone.iter().copied(), &new, schema);
        let after: Vec<Policy> = before
            .iter()
            .zip(&removed)
            .filter(|(_, r)| !**r)
            .map(|(p, _)| p.clone())
            .chain(new.iter().cloned())
            .collect();
        let fresh = PolicyIndex::new(&after, schema);
        let entities = entities(&replicas);
        let (p, a, r) = (euid(&p), euid(&format!(r#"Lattice::Action::"{a}""#)), euid(&r));
        let request = Request::new(p.clone(), a.clone(), r.clone(), Context::empty(), None).unwrap();
        prop_assert_eq!(
            changed.evaluate(&request, &p, &a, &r, &entities),
            fresh.evaluate_unindexed(&request, &entities),
            "before: {:#?} removed: {:?} added: {:#?}", texts, removed, added
        );
        let old_again = PolicyIndex::new(&before, schema);
        prop_assert_eq!(
            old.evaluate(&request, &p, &a, &r, &entities),
            old_again.evaluate_unindexed(&request, &entities),
            "the old index changed; before: {:#?}", texts
        );
        prop_assert_eq!(changed.len(), after.len());
    }
}
