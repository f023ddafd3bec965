//! What-if: the decisions a set of queries gets under the current policies and under a
//! changed set (policies added, removed or disabled), and exactly what changed.

use lattice_schemas::crd::{CedarPolicy, EnforcementMode};
use rayon::prelude::*;

use crate::policies::{PolicyError, PolicyStore};
use crate::project::Projection;
use crate::snapshot::{Decision, Query, Snapshot, SnapshotError};
use crate::world::World;

/// One change to the policy set.
#[derive(Clone, Debug)]
pub enum PolicyChange {
    /// Policies added as a CedarPolicy object `namespace/name` would add them (replacing
    /// that object if it exists).
    Add {
        namespace: String,
        name: String,
        policies: String,
        mode: EnforcementMode,
    },
    /// One policy removed, by stable id.
    Remove { id: String },
    /// A CedarPolicy object disabled.
    Disable { namespace: String, name: String },
}

/// Why a what-if could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("no policy `{0}` to remove")]
    UnknownPolicy(String),
    #[error("no CedarPolicy {0} to disable")]
    UnknownObject(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A query whose answer changed.
#[derive(Clone, Debug)]
pub struct Changed {
    pub query: Query,
    pub before: Decision,
    pub after: Decision,
}

/// What a change does to a set of queries.
#[derive(Clone, Debug, Default)]
pub struct WhatIf {
    /// Denied before, allowed after.
    pub newly_allowed: Vec<Changed>,
    /// Allowed before, denied after.
    pub newly_denied: Vec<Changed>,
    /// Same verdict, different determining policies or audit findings.
    pub reasons_changed: Vec<Changed>,
    pub unchanged: usize,
    /// Queries the schema rejects (counted, not compared).
    pub invalid: usize,
    pub digest_before: String,
    pub digest_after: String,
}

/// Applies `changes` to a copy of `store`.
pub fn apply_changes(
    store: &PolicyStore,
    changes: &[PolicyChange],
) -> Result<PolicyStore, WhatIfError> {
    let mut changed = store.clone();
    for change in changes {
        match change {
            PolicyChange::Add {
                namespace,
                name,
                policies,
                mode,
            } => {
                let object: CedarPolicy = CedarPolicy::new(
                    name,
                    lattice_schemas::crd::policy::CedarPolicySpec {
                        policies: policies.clone(),
                        mode: Some(*mode),
                        ..Default::default()
                    },
                );
                let mut object = object;
                object.metadata.namespace = Some(namespace.clone());
                changed.apply_object(&object)?;
            }
            PolicyChange::Remove { id } => {
                if !changed.remove_policy(id) {
                    return Err(WhatIfError::UnknownPolicy(id.clone()));
                }
            }
            PolicyChange::Disable { namespace, name } => {
                if !changed.set_object_enabled(namespace, name, false) {
                    return Err(WhatIfError::UnknownObject(format!("{namespace}/{name}")));
                }
            }
        }
    }
    Ok(changed)
}

/// Decides every query on `current` and on a snapshot with `changes` applied.
pub fn what_if(
    current: &Snapshot,
    world: &World,
    projection: &Projection,
    store: &PolicyStore,
    changes: &[PolicyChange],
    queries: &[Query],
) -> Result<WhatIf, WhatIfError> {
    let changed_store = apply_changes(store, changes)?;
    let after = current.with_policies(world, projection, &changed_store)?;
    Ok(compare(current, &after, queries))
}

/// Decides every query on two snapshots and sorts out what changed.
pub fn compare(current: &Snapshot, after: &Snapshot, queries: &[Query]) -> WhatIf {
    compare_known(current, after, queries, &[])
}

/// As [`compare`], where some decisions on `current` are already known: `known[i]`, when
/// present, is what `current` decides for `queries[i]` (a mesh plan has them for every
/// edge), so only the changed snapshot is asked.
pub fn compare_known(
    current: &Snapshot,
    after: &Snapshot,
    queries: &[Query],
    known: &[Option<Decision>],
) -> WhatIf {
    let mut out = WhatIf {
        digest_before: current.digest().to_owned(),
        digest_after: after.digest().to_owned(),
        ..WhatIf::default()
    };
    // Decisions are independent: they are taken on every core, then sorted out in order.
    let decided: Vec<_> = queries
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let before = match known.get(i) {
                Some(Some(d)) => Ok(d.clone()),
                _ => current.decide(q),
            };
            (before, after.decide(q))
        })
        .collect();
    for (q, decisions) in queries.iter().zip(decided) {
        let (Ok(b), Ok(a)) = decisions else {
            out.invalid += 1;
            continue;
        };
        let ids = |d: &Decision| {
            let mut v: Vec<String> = d
                .determining
                .iter()
                .chain(d.audit.iter())
                .map(|p| p.id.clone())
                .collect();
            v.sort();
            v
        };
        let entry = Changed {
            query: q.clone(),
            before: b,
            after: a,
        };
        match (entry.before.allowed, entry.after.allowed) {
            (false, true) => out.newly_allowed.push(entry),
            (true, false) => out.newly_denied.push(entry),
            _ if ids(&entry.before) != ids(&entry.after) => out.reasons_changed.push(entry),
            _ => out.unchanged += 1,
        }
    }
    out
}
