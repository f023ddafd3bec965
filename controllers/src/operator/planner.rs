//! The planner: every change to the [`Index`] becomes a new [`Plan`], deciding again only
//! what the change reaches.
//!
//! - **A workload changed** (came, went, or was edited): its entities are projected again
//!   and taken into the last snapshot ([`Projection::update_workload`],
//!   [`Snapshot::with_entity_delta`]); its mesh edges in both directions are decided again
//!   ([`MeshPlan::replan`]); and what reads it is derived again: itself, the other end of
//!   every edge it is on (before and after), and the consumers of the volumes it owns.
//! - **A CedarPolicy changed**: the snapshot takes the new policy set and keeps its
//!   entities ([`Snapshot::with_policies`]); only the workloads and edges whose questions a
//!   changed policy's scope can match are decided again. That test is the policy index's
//!   own, applied to an index of just the changed policies: a policy whose scope does not
//!   match a question cannot change its answer.
//! - **Kubernetes objects changed** (a Deployment, a Role, … that Lattice did not derive):
//!   their entities are taken into the last snapshot as a workload's are. Nothing is derived
//!   from them and no gate or edge asks about them, so every decision stands; compliance
//!   scans and the webhook read the new snapshot.
//! - **Anything else** decides the whole world again: a namespace, a cluster, a provider, a
//!   trust policy, a compliance profile, a baseline object on the cluster, an approval that
//!   changes, a workload that declares a wildcard, a policy that reads the data of a
//!   workload's entity named by a literal (`Service::"shop/api".replicas`: it can read any
//!   workload), a burst of many changes, the first plan, and the plan after one that failed.
//!
//! Either way the plan is the one a whole plan of the same index decides: a differential
//! test holds the two together over random sequences of changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use lattice_compiler::CompileContext;
use lattice_engine::index::PolicyIndex;
use lattice_engine::project::{declared_wildcards, served_ports, workload_bodies};
use lattice_engine::{EntityDelta, ObjectKey, Projection, Snapshot, World, action, uid};
use lattice_gates::{MeshPlan, questions, quota_questions};
use lattice_schemas::crd::Kind;
use lattice_schemas::manifest::Object;
use lattice_schemas::manifest::core::CoreKind;
use rayon::prelude::*;

use super::index::{Changes, Index};
use super::plan::{Desired, Owner, Plan, decide, owner_of, plan_whole, policies_of, profiles_of};
use crate::webhook::Current;

/// Bursts larger than this are planned whole: past it, deciding piece by piece costs
/// more than deciding everything at once on every core.
const MOST_CHANGES: usize = 64;

/// Entity types that workloads project (or, for images, name): a policy whose condition
/// names one can read any workload's facts, so no change to a workload is local.
const PROJECTED_BY_WORKLOADS: [&str; 13] = [
    "Service",
    "Container",
    "Pod",
    "Role",
    "RoleBinding",
    "KubeService",
    "Image",
    "SecretPath",
    "Volume",
    "ExternalEndpoint",
    "SecurityOverride",
    "Host",
    "Gpu",
];

/// How a plan was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Made {
    /// Everything decided again, and why no less would do.
    Whole(String),
    /// Only what the change reached: the workloads derived again.
    Incremental { derived: usize },
}

/// Turns each change of the index into a plan, keeping what the last plan decided.
#[derive(Default)]
pub struct Planner {
    kept: Option<Kept>,
}

/// What the last plan decided with, besides the plan.
struct Kept {
    plan: Arc<Plan>,
    mesh: MeshPlan,
    ctx: CompileContext,
    /// Some active policy reads the data of an entity that workloads project, by name.
    reads_any_workload: bool,
}

impl Planner {
    pub fn new() -> Planner {
        Planner::default()
    }

    /// The plan after `changes`, on `index` (the copy taken with them). After an error,
    /// the next plan is whole.
    pub fn next(&mut self, index: &Index, changes: &Changes) -> Result<(Arc<Plan>, Made), String> {
        let why = match self.kept.take() {
            None => "the first plan".to_owned(),
            Some(kept) => match incremental(kept, index, changes) {
                Ok((kept, made)) => {
                    let plan = kept.plan.clone();
                    self.kept = Some(kept);
                    return Ok((plan, made));
                }
                Err(why) => why,
            },
        };
        let (plan, mesh, ctx) = plan_whole(index)?;
        let plan = Arc::new(plan);
        self.kept = Some(Kept {
            reads_any_workload: reads_any_workload(&plan.current.snapshot),
            plan: plan.clone(),
            mesh,
            ctx,
        });
        Ok((plan, Made::Whole(why)))
    }
}

/// The next plan from the last, or why it must be whole.
fn incremental(kept: Kept, index: &Index, changes: &Changes) -> Result<(Kept, Made), String> {
    if changes.baselines {
        return Err("a baseline object changed on the cluster".into());
    }
    if changes.images {
        return Err("an image's verification changed".into());
    }
    if changes.objects.len() > MOST_CHANGES {
        return Err(format!("{} objects changed at once", changes.objects.len()));
    }
    let is_workload = |k: &ObjectKey| Kind::from_name(k.kind).is_some_and(Kind::is_workload);
    let is_policy = |k: &ObjectKey| k.kind == Kind::CedarPolicy.name();
    let is_kubernetes = |k: &ObjectKey| CoreKind::from_name(k.kind).is_some();
    if changes.objects.iter().all(is_workload) {
        workloads_changed(kept, index, &changes.objects)
    } else if changes.objects.iter().all(is_policy) {
        policies_changed(kept, index)
    } else if changes.objects.iter().all(is_kubernetes) {
        kubernetes_objects_changed(kept, index, &changes.objects)
    } else {
        let other = changes
            .objects
            .iter()
            .find(|k| !is_workload(k) && !is_policy(k) && !is_kubernetes(k))
            .map_or_else(|| "workloads and policies".to_owned(), ToString::to_string);
        Err(format!("{other} changed"))
    }
}

fn workload_id(key: &ObjectKey) -> String {
    format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name
    )
}

fn workloads_changed(
    mut kept: Kept,
    index: &Index,
    keys: &BTreeSet<ObjectKey>,
) -> Result<(Kept, Made), String> {
    if kept.reads_any_workload {
        return Err("a policy names a workload's entity and reads its data".into());
    }
    let last = kept.plan.clone();
    let world = index.world();
    let before = &last.current.world;
    for key in keys {
        let id = workload_id(key);
        let ns = key.namespace.as_deref().unwrap_or("default");
        if last.current.snapshot.approval_concerns(ns, &id) {
            return Err(format!("an approval concerns {key}"));
        }
        for object in [before.get(key), world.get(key)].into_iter().flatten() {
            let (outbound, inbound) = declared_wildcards(object);
            if outbound || inbound {
                return Err(format!("{key} declares a wildcard"));
            }
        }
        // Two workload kinds of one name project one Service: not one workload's change.
        let namesake = |w: &World| {
            w.workload(&id)
                .is_some_and(|o| o.kind().map(Kind::name) != Some(key.kind))
        };
        if namesake(world) || namesake(before) {
            return Err(format!("another workload is named {id}"));
        }
    }
    let mut projection: Projection = last.current.projection.clone();
    let mut delta = EntityDelta::default();
    // One workload's entity may clash with another's until that one is taken in too (a
    // volume changing owners): what is refused is tried again after the rest.
    let mut pending: Vec<&ObjectKey> = keys.iter().collect();
    while !pending.is_empty() {
        let mut refused = Vec::new();
        let mut why = String::new();
        for key in &pending {
            match projection.update_workload(world, key) {
                Ok(d) => delta = delta.then(d),
                Err(e) => {
                    refused.push(*key);
                    why = e;
                }
            }
        }
        if refused.len() == pending.len() {
            return Err(why);
        }
        pending = refused;
    }
    let snapshot = last
        .current
        .snapshot
        .with_entity_delta(world, index.store(), projection.live(), delta)
        .map_err(|e| e.to_string())?;

    let mut reached: BTreeSet<String> = BTreeSet::new();
    for key in keys {
        let id = workload_id(key);
        // A workload under a quota moves the usage every later one is measured against.
        for ledger in [last.current.snapshot.quotas(), snapshot.quotas()] {
            reached.extend(ledger.sharing(&id).map(str::to_owned));
        }
        reached.insert(id.clone());
        reached.extend(ends(&kept.mesh, &id));
        kept.mesh.replan(&snapshot, world, key);
        reached.extend(ends(&kept.mesh, &id));
        kept.ctx.peer_ports.remove(&id);
        if let (Some(object), Some(_)) = (world.get(key), &key.namespace) {
            let ports = served_ports(object);
            if !ports.is_empty() {
                kept.ctx.peer_ports.insert(id, ports.into_iter().collect());
            }
        }
        if let Some(object) = world.get(key) {
            kept.ctx.pin_images(&snapshot, object);
        }
        for object in [before.get(key), world.get(key)].into_iter().flatten() {
            reached.extend(volume_consumers(world, object));
        }
    }
    let mut workloads = last.workloads.clone();
    for key in keys {
        if world.get(key).is_none()
            && let Some(kind) = Kind::from_name(key.kind)
        {
            workloads.remove(&Owner {
                kind,
                namespace: key.namespace.clone().unwrap_or_default(),
                name: key.name.clone(),
            });
        }
    }
    let derived = derive_again(&snapshot, world, &kept, index, &reached);
    let count = derived.len();
    workloads.extend(derived);
    let plan = Plan {
        current: Arc::new(Current {
            world: world.clone(),
            projection,
            snapshot,
        }),
        workloads,
        namespaces: last.namespaces.clone(),
        edges: kept.mesh.len(),
        allowed_edges: kept.mesh.allowed().count(),
        policies: policies_of(index),
        store: last.store.clone(),
        profiles: profiles_of(index),
    };
    kept.plan = Arc::new(plan);
    Ok((kept, Made::Incremental { derived: count }))
}

/// Kubernetes objects came, went or changed: their entities enter the snapshot, and every
/// decision and derived object stands (none asks about them, unless a policy reads their
/// entities by name, which the whole plan handles).
fn kubernetes_objects_changed(
    mut kept: Kept,
    index: &Index,
    keys: &BTreeSet<ObjectKey>,
) -> Result<(Kept, Made), String> {
    if kept.reads_any_workload {
        return Err("a policy names a projected entity and reads its data".into());
    }
    let last = kept.plan.clone();
    let world = index.world();
    let mut projection: Projection = last.current.projection.clone();
    let mut delta = EntityDelta::default();
    for key in keys {
        delta = delta.then(projection.update_workload(world, key)?);
    }
    let snapshot = last
        .current
        .snapshot
        .with_entity_delta(world, index.store(), projection.live(), delta)
        .map_err(|e| e.to_string())?;
    let plan = Plan {
        current: Arc::new(Current {
            world: world.clone(),
            projection,
            snapshot,
        }),
        workloads: last.workloads.clone(),
        namespaces: last.namespaces.clone(),
        edges: last.edges,
        allowed_edges: last.allowed_edges,
        policies: policies_of(index),
        store: last.store.clone(),
        profiles: profiles_of(index),
    };
    kept.plan = Arc::new(plan);
    Ok((kept, Made::Incremental { derived: 0 }))
}

fn policies_changed(mut kept: Kept, index: &Index) -> Result<(Kept, Made), String> {
    let last = kept.plan.clone();
    let world = index.world();
    let projection = last.current.projection.clone();
    let snapshot = last
        .current
        .snapshot
        .with_policies(world, &projection, index.store())
        .map_err(|e| e.to_string())?;
    if snapshot.approved() != last.current.snapshot.approved() {
        return Err("the policy change changes an approval".into());
    }
    let changed = snapshot.policies_changed_since(&last.current.snapshot);
    let mut reached: BTreeSet<String> = BTreeSet::new();
    if !changed.is_empty() {
        let scope = PolicyIndex::new(changed.iter(), snapshot.schema());
        let entities = snapshot.entities();
        let workloads: Vec<(&ObjectKey, &Object)> =
            world.objects().filter(|(_, o)| o.is_workload()).collect();
        let asked: Vec<String> = workloads
            .par_iter()
            .filter(|(key, object)| {
                let principal = uid("Service", &workload_id(key));
                questions(object)
                    .iter()
                    .chain(quota_questions(&snapshot, object).iter())
                    .any(|g| {
                        scope.candidate_count(&principal, &action(g.action), &g.resource, entities)
                            > 0
                    })
            })
            .map(|(key, _)| workload_id(key))
            .collect();
        reached.extend(asked);
        let connect = action("Connect");
        let edges: Vec<(String, String)> = kept
            .mesh
            .edges()
            .collect::<Vec<_>>()
            .par_iter()
            .filter(|e| {
                let (caller, callee) = (uid("Service", &e.caller), uid("Service", &e.callee));
                scope.candidate_count(&caller, &connect, &callee, entities) > 0
            })
            .map(|e| (e.caller.clone(), e.callee.clone()))
            .collect();
        kept.mesh.redecide(&snapshot, &edges);
        for (caller, callee) in edges {
            reached.insert(caller);
            reached.insert(callee);
        }
    }
    kept.reads_any_workload = reads_any_workload(&snapshot);
    let mut derived = derive_again(&snapshot, world, &kept, index, &reached);
    // Backups and restores are few, and a restore is a Cedar decision: all are decided
    // again on any policy change.
    derived.extend(world.objects().filter_map(|(key, object)| {
        let kind = object.kind()?;
        if !kind.derives() || kind.is_workload() {
            return None;
        }
        let owner = owner_of(key, object)?;
        let desired = decide(
            &snapshot, world, &kept.mesh, &kept.ctx, &owner, object, index,
        );
        Some((owner, Arc::new(desired)))
    }));
    let count = derived.len();
    let mut workloads = last.workloads.clone();
    workloads.extend(derived);
    let plan = Plan {
        current: Arc::new(Current {
            world: world.clone(),
            projection,
            snapshot,
        }),
        workloads,
        namespaces: last.namespaces.clone(),
        edges: kept.mesh.len(),
        allowed_edges: kept.mesh.allowed().count(),
        policies: policies_of(index),
        store: Arc::new(index.store().clone()),
        profiles: profiles_of(index),
    };
    kept.plan = Arc::new(plan);
    Ok((kept, Made::Incremental { derived: count }))
}

/// Derives the workloads `ids` (`namespace/name`) on `snapshot`; ids no workload has are
/// skipped (a peer that is only named).
fn derive_again(
    snapshot: &Snapshot,
    world: &World,
    kept: &Kept,
    index: &Index,
    ids: &BTreeSet<String>,
) -> Vec<(Owner, Arc<Desired>)> {
    let targets: Vec<(ObjectKey, &Object)> = ids
        .iter()
        .filter_map(|id| world.workload(id))
        .map(|o| (ObjectKey::of(o), o))
        .collect();
    targets
        .par_iter()
        .filter_map(|(key, object)| {
            let owner = owner_of(key, object)?;
            let desired = decide(
                snapshot, world, &kept.mesh, &kept.ctx, &owner, object, index,
            );
            Some((owner, Arc::new(desired)))
        })
        .collect()
}

/// The other ends of the edges `id` is on.
fn ends(mesh: &MeshPlan, id: &str) -> Vec<String> {
    mesh.touching(id)
        .into_iter()
        .map(|e| {
            if e.caller == id {
                e.callee.clone()
            } else {
                e.caller.clone()
            }
        })
        .collect()
}

/// Workloads that mount a volume `owner` owns (a volume resource with a size): their
/// gates read the volume's entity, which the owner projects.
fn volume_consumers(world: &World, owner: &Object) -> Vec<String> {
    let ns = owner.namespace().unwrap_or("default");
    let owned: BTreeSet<&str> = workload_bodies(owner)
        .into_iter()
        .flat_map(|(_, body, _)| body.resources.values())
        .filter(|r| {
            r.type_ == "volume" && r.params.as_ref().is_some_and(|p| p.contains_key("size"))
        })
        .filter_map(|r| r.id.as_deref())
        .collect();
    if owned.is_empty() {
        return Vec::new();
    }
    world
        .objects()
        .filter(|(k, o)| k.namespace.as_deref() == Some(ns) && o.is_workload())
        .filter(|(_, o)| {
            workload_bodies(o)
                .into_iter()
                .flat_map(|(_, body, _)| body.resources.values())
                .any(|r| {
                    r.type_ == "volume" && r.id.as_deref().is_some_and(|id| owned.contains(id))
                })
        })
        .map(|(k, _)| workload_id(k))
        .collect()
}

/// Whether some active policy reads the data of an entity that workloads project, named
/// by a literal: its answer for one workload can then change with another's facts. A
/// literal that is only compared (`principal == Service::"a"`, `resource in …`,
/// `.contains(…)`) reads no data; one whose attributes, tags or ancestors are read (the
/// left of `.`, `has`, `getTag`, `hasTag` or `in`) does. Read from the policy's JSON form
/// (Cedar's EST); a policy that cannot be written as JSON counts as reading.
fn reads_any_workload(snapshot: &Snapshot) -> bool {
    snapshot
        .active_policies()
        .any(|policy| match policy.to_json() {
            Ok(est) => reads_workload_data(&est, false),
            Err(_) => true,
        })
}

/// Whether `est` (a policy or expression in Cedar's JSON form) reads a workload entity's
/// data through a literal; `reading` says the expression's value has its data read.
fn reads_workload_data(est: &serde_json::Value, reading: bool) -> bool {
    use serde_json::Value;
    match est {
        Value::Object(map) => {
            if reading
                && let Some(entity) = map
                    .get("Value")
                    .and_then(|v| v.get("__entity"))
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
            {
                let basename = entity.rsplit("::").next().unwrap_or(entity);
                return PROJECTED_BY_WORKLOADS.contains(&basename);
            }
            map.iter().any(|(op, inner)| {
                let reads_left = matches!(op.as_str(), "." | "has" | "getTag" | "hasTag" | "in");
                match inner {
                    Value::Object(args) if reads_left => args
                        .iter()
                        .any(|(k, v)| reads_workload_data(v, reading || k == "left")),
                    other => reads_workload_data(other, reading),
                }
            })
        }
        Value::Array(items) => items.iter().any(|v| reads_workload_data(v, reading)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::reads_workload_data;

    fn reads(text: &str) -> bool {
        let policy: cedar_policy::Policy = text.parse().unwrap();
        reads_workload_data(&policy.to_json().unwrap(), false)
    }

    #[test]
    fn a_literal_reads_data_only_where_its_attributes_tags_or_ancestors_are_read() {
        // Compared, contained, or on the right of `in`: no data read.
        assert!(!reads(
            r#"permit (principal == Lattice::Service::"a/b", action, resource);"#
        ));
        assert!(!reads(
            r#"permit (principal, action, resource) when { principal == Lattice::Service::"p/x" || resource in Lattice::Service::"p/y" };"#
        ));
        assert!(!reads(
            r#"permit (principal, action, resource) when { principal.dependencies.contains(Lattice::Service::"p/x") };"#
        ));
        // A namespace's data is not a workload's.
        assert!(!reads(
            r#"permit (principal, action, resource) when { Lattice::Namespace::"p".podSecurity == "restricted" };"#
        ));
        // Read: an attribute, `has`, a tag, ancestors.
        assert!(reads(
            r#"permit (principal, action, resource) when { Lattice::Service::"p/x".replicas > 1 };"#
        ));
        assert!(reads(
            r#"permit (principal, action, resource) when { Lattice::Service::"p/x" has ports };"#
        ));
        assert!(reads(
            r#"permit (principal, action, resource) when { Lattice::Service::"p/x".hasTag("team") };"#
        ));
        assert!(reads(
            r#"permit (principal, action, resource) when { Lattice::Container::"p/x/c" in principal };"#
        ));
        assert!(reads(
            r#"permit (principal, action, resource) when { (if context.tls then Lattice::Service::"p/x" else principal).replicas > 1 };"#
        ));
    }
}
