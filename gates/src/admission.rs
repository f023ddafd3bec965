//! Admission of policy objects: who may write a `CedarPolicy` into a namespace is itself a
//! Cedar decision, `User` → `ManagePolicy` → `Namespace`, so security teams decide it with
//! policies like every other decision.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use cedar_policy::EntityUid;
use cedar_policy::{ActionConstraint, Context, Effect, Entity, PolicySet, RestrictedExpression};
use lattice_engine::{Decision, Projection, Query, Snapshot, action, uid};
use lattice_schemas::manifest::Object;

use crate::derivation::{GateReport, evaluate, questions};
use lattice_schemas::crd::policy::CedarPolicySpec;

/// Who asks, as the API server authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    pub groups: Vec<String>,
}

impl Requester {
    /// The requester as Cedar entities: `User::"<username>"` in a `Group` per group.
    pub fn entities(&self) -> Vec<Entity> {
        // A group listed twice is one group (two entities with one uid would be refused).
        let names: BTreeSet<&String> = self.groups.iter().collect();
        let groups: Vec<_> = names.into_iter().map(|g| uid("Group", g)).collect();
        let mut out: Vec<Entity> = groups
            .iter()
            .map(|g| Entity::new_no_attrs(g.clone(), HashSet::new()))
            .collect();
        out.push(Entity::new_no_attrs(
            uid("User", &self.username),
            groups.into_iter().collect(),
        ));
        out
    }
}

/// The `ManagePolicy` question for `requester` writing `spec` into `namespace` with
/// `operation` (`CREATE`, `UPDATE` or `DELETE`). The context says what the policies do:
/// their effects, the actions they constrain, their mode and how many there are.
pub fn manage_policy_query(
    requester: &Requester,
    namespace: &str,
    operation: &str,
    spec: &CedarPolicySpec,
) -> Query {
    let set = PolicySet::from_str(&spec.policies).unwrap_or_default();
    let mut effects = BTreeSet::new();
    let mut actions = BTreeSet::new();
    for p in set.policies() {
        effects.insert(match p.effect() {
            Effect::Permit => "permit",
            Effect::Forbid => "forbid",
        });
        match p.action_constraint() {
            ActionConstraint::Any => {}
            ActionConstraint::Eq(a) => {
                actions.insert(a.id().unescaped().to_owned());
            }
            ActionConstraint::In(list) => {
                actions.extend(list.iter().map(|a| a.id().unescaped().to_owned()));
            }
        }
    }
    let strings = |v: BTreeSet<String>| {
        RestrictedExpression::new_set(v.into_iter().map(RestrictedExpression::new_string))
    };
    let mode = match spec.mode.unwrap_or_default() {
        lattice_schemas::crd::EnforcementMode::Enforce => "enforce",
        lattice_schemas::crd::EnforcementMode::Audit => "audit",
    };
    let context = Context::from_pairs([
        (
            "operation".to_owned(),
            RestrictedExpression::new_string(operation.to_owned()),
        ),
        (
            "effects".to_owned(),
            strings(effects.into_iter().map(str::to_owned).collect()),
        ),
        ("actions".to_owned(), strings(actions)),
        (
            "mode".to_owned(),
            RestrictedExpression::new_string(mode.to_owned()),
        ),
        (
            "policyCount".to_owned(),
            RestrictedExpression::new_long(
                i64::try_from(set.policies().count()).unwrap_or(i64::MAX),
            ),
        ),
    ])
    .expect("strings, sets of strings and a long make a valid context");
    Query::new(
        uid("User", &requester.username),
        action("ManagePolicy"),
        uid("Namespace", namespace),
    )
    .with_context(context)
}

/// Whether `requester` may write `spec` into `namespace`, decided on `snapshot`.
pub fn manage_policy(
    snapshot: &Snapshot,
    requester: &Requester,
    namespace: &str,
    operation: &str,
    spec: &CedarPolicySpec,
) -> Result<Decision, String> {
    let q = manage_policy_query(requester, namespace, operation, spec);
    let scoped = snapshot
        .scoped(requester.entities(), std::slice::from_ref(&q.resource))
        .map_err(|e| e.to_string())?;
    scoped.decide(&q).map_err(|e| e.to_string())
}

/// The gates of a workload that may not be in the world yet (an object under admission):
/// asked on `snapshot`'s policies over the object's own projection (with `projection`'s
/// facts), its namespace and the cluster, and the snapshot's entities for what its gates
/// name.
pub fn evaluate_object(
    snapshot: &Snapshot,
    projection: &Projection,
    object: &Object,
) -> Result<GateReport, String> {
    let named: Vec<EntityUid> = questions(object).into_iter().map(|g| g.resource).collect();
    let scoped = snapshot
        .scoped(projection.entities_of(object), &named)
        .map_err(|e| e.to_string())?;
    Ok(evaluate(&scoped, object))
}
