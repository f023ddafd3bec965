//! Known-true and known-false cases for each question, on a small schema, with cvc5 (CI
//! installs it with `tools/cvc5/install`; a missing solver fails these tests, it does not
//! skip them). Every refutation is replayed through Cedar's concrete authorizer and must
//! reproduce.

use std::str::FromStr;

use cedar_policy::{Decision, EntityUid, PolicySet, Schema};
use lattice_prove::{Outcome, Prover, solver};

const SCHEMA: &str = r#"
entity User { level: Long };
entity Team;
entity Document { owner: User, public: Bool };
action view, edit appliesTo { principal: [User], resource: [Document] };
action manage appliesTo { principal: [User], resource: [Team] };
"#;

fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA).unwrap().0
}

fn prover() -> Prover {
    let path =
        solver::find(None).expect("cvc5: install it with tools/cvc5/install DIR and set CVC5");
    Prover::start(&schema(), &path).unwrap()
}

/// The policies of `text`, each named by its `@id` (as Lattice's store names them).
fn policies(text: &str) -> PolicySet {
    let parsed = PolicySet::from_str(text).unwrap();
    let mut out = PolicySet::new();
    for p in parsed.policies() {
        let id = p
            .annotation("id")
            .map_or_else(|| p.id().to_string(), ToOwned::to_owned);
        out.add(p.new_id(cedar_policy::PolicyId::new(id))).unwrap();
    }
    out
}

fn action(name: &str) -> EntityUid {
    EntityUid::from_str(&format!("Action::\"{name}\"")).unwrap()
}

#[test]
fn no_new_permits_is_proved_for_a_narrowing_and_refuted_with_a_request_for_a_widening() {
    let mut prover = prover();
    let old = policies(
        r#"permit (principal, action == Action::"view", resource) when { resource.public };"#,
    );
    let narrower = policies(
        r#"permit (principal, action == Action::"view", resource) when { resource.public && resource.owner == principal };"#,
    );
    assert!(matches!(
        prover.no_new_permits(&old, &narrower, None).unwrap(),
        Outcome::Proved { environments: 3 }
    ));
    let wider = policies(r#"permit (principal, action == Action::"view", resource);"#);
    let Outcome::Refuted {
        counterexample,
        environment,
    } = prover.no_new_permits(&old, &wider, None).unwrap()
    else {
        panic!("a wider permit is refuted")
    };
    assert!(environment.contains("view"), "{environment}");
    assert_eq!(counterexample.decide(&wider), Decision::Allow);
    assert_eq!(counterexample.decide(&old), Decision::Deny);
    assert_eq!(counterexample.request_json()["action"], "Action::\"view\"");
    // Only the action asked about: `edit` gains nothing, so it is proved there.
    let edit_too = policies(r#"permit (principal, action == Action::"view", resource);"#);
    assert!(matches!(
        prover
            .no_new_permits(&old, &edit_too, Some(&action("edit")))
            .unwrap(),
        Outcome::Proved { environments: 1 }
    ));
}

#[test]
fn equivalent_is_proved_for_a_rewriting_and_refuted_for_a_change() {
    let mut prover = prover();
    let a = policies(
        r#"permit (principal, action in [Action::"view", Action::"edit"], resource) when { resource.owner == principal };"#,
    );
    let b = policies(
        r#"permit (principal, action == Action::"view", resource) when { principal == resource.owner };
permit (principal, action == Action::"edit", resource) when { resource.owner == principal };"#,
    );
    assert!(matches!(
        prover.equivalent(&a, &b).unwrap(),
        Outcome::Proved { .. }
    ));
    let c = policies(
        r#"permit (principal, action == Action::"view", resource) when { resource.owner == principal };"#,
    );
    let Outcome::Refuted { counterexample, .. } = prover.equivalent(&a, &c).unwrap() else {
        panic!("dropping edit is refuted")
    };
    assert_ne!(counterexample.decide(&a), counterexample.decide(&c));
}

#[test]
fn never_errors_finds_the_overflow_and_passes_the_safe_policy() {
    let mut prover = prover();
    let set = policies(
        r#"@id("overflows")
permit (principal, action == Action::"view", resource) when { principal.level + 1 > 5 };
@id("safe")
permit (principal, action == Action::"view", resource) when { principal.level > 4 };"#,
    );
    let (erroring, asked) = prover.never_errors(&set).unwrap();
    assert_eq!(asked, 2);
    let [found] = erroring.as_slice() else {
        panic!("one policy errors: {erroring:?}")
    };
    assert_eq!(found.policy.to_string(), "overflows");
    let errors = found.counterexample.errors(&set);
    assert!(
        errors.iter().any(|e| e.contains("overflows")),
        "the replay errors in that policy: {errors:?}"
    );
}

#[test]
fn shadowed_names_the_permit_another_covers_and_the_forbid_another_covers() {
    let mut prover = prover();
    let set = policies(
        r#"@id("anyone-views")
permit (principal, action == Action::"view", resource);
@id("owners-view")
permit (principal, action == Action::"view", resource) when { resource.owner == principal };
@id("owners-edit")
permit (principal, action == Action::"edit", resource) when { resource.owner == principal };
@id("no-public-edits")
forbid (principal, action == Action::"edit", resource) when { resource.public };
@id("no-public-edits-by-owners")
forbid (principal, action == Action::"edit", resource) when { resource.public && resource.owner == principal };"#,
    );
    let mut shadowed: Vec<String> = prover
        .shadowed(&set)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    shadowed.sort();
    // Each forbid alone is removable (the other still denies every request it does), so
    // both are listed: the list is of policies removable one at a time.
    assert_eq!(
        shadowed,
        [
            "no-public-edits",
            "no-public-edits-by-owners",
            "owners-view"
        ]
    );
}

#[test]
fn always_denied_is_proved_under_a_forbid_and_refuted_with_the_allowed_request() {
    let mut prover = prover();
    let locked = policies(
        r#"permit (principal, action, resource);
forbid (principal, action == Action::"manage", resource);"#,
    );
    assert!(matches!(
        prover.always_denied(&locked, &action("manage")).unwrap(),
        Outcome::Proved { environments: 1 }
    ));
    let Outcome::Refuted { counterexample, .. } =
        prover.always_denied(&locked, &action("edit")).unwrap()
    else {
        panic!("edit is allowed")
    };
    assert_eq!(counterexample.decide(&locked), Decision::Allow);
    assert!(prover.always_denied(&locked, &action("delete")).is_err());
}
