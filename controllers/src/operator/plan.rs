//! From one snapshot to what should exist: for every workload, the objects its allowed
//! decisions derive (or none, and why), with owner references. Pure: the effector in
//! [`super::apply`] makes the cluster match, and only for workloads whose [`Desired`]
//! changed.
//!
//! Network objects of a mesh edge belong to the workload in whose namespace they live (the
//! callee's ingress side, the caller's egress side): one owner per object, so a one-sided
//! or denied edge removes exactly its own objects.
//!
//! Every namespace gets its default-deny baseline unless `OptOutDefaultDeny` allowed it to
//! run without one, owned by the Namespace; its Pod Security level is written on it, so
//! Kubernetes' own admission enforces what the projection decided on.

use std::collections::BTreeMap;
use std::sync::Arc;

use lattice_compiler::{CompileContext, CompileError, derive_in};
use lattice_engine::project::LiveFacts;
use lattice_engine::{ObjectKey, PolicyStore, Projection, Snapshot};
use lattice_gates::MeshPlan;
use lattice_schemas::crd::service::DeniedGate;
use lattice_schemas::crd::{API_VERSION, Kind, LatticeComplianceProfile};
use lattice_schemas::manifest::Object;
use rayon::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::index::{Index, PolicyOutcome};
use crate::webhook::Current;

/// A workload that owns derived objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Owner {
    /// `namespace/name`, the workload's id in decisions and the mesh.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What the decisions say of one workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every gate allowed: the objects are derived.
    Authorized,
    /// Some gate denied: nothing is derived, and these are why.
    Denied(Vec<DeniedGate>),
    /// Allowed, but the workload cannot be derived as written.
    Failed(String),
}

/// What should exist for one workload.
#[derive(Clone, Debug)]
pub struct Desired {
    pub uid: String,
    pub generation: Option<i64>,
    pub verdict: Verdict,
    /// The objects, in derivation order, each with its owner reference.
    pub objects: Vec<Value>,
    /// Covers the verdict and the objects: equal digests need no reconcile.
    pub digest: String,
    /// The status as last seen (conditions keep their transition times).
    pub previous_status: Value,
}

/// What should exist for one namespace.
#[derive(Clone, Debug)]
pub struct NamespaceDesired {
    /// The Namespace's uid (the baseline objects' owner).
    pub uid: String,
    /// `OptOutDefaultDeny` let it run without the baseline: its baseline objects go.
    pub opted_out: bool,
    /// The baseline objects, each owned by the Namespace (none when opted out).
    pub objects: Vec<Value>,
    /// The Pod Security level to write on it (`None` when opted out: left as it is).
    pub pod_security: Option<String>,
    /// Baseline objects (kind and name) the cluster holds now, with the baseline label.
    pub present: Vec<(&'static str, &'static str)>,
    /// Covers the above and what the cluster showed of the baseline, so a hand edit or
    /// delete of a baseline object is a new digest and is put right.
    pub digest: String,
}

/// Everything one snapshot decides.
pub struct Plan {
    /// The world and snapshot the decisions were taken on (also what the webhook decides on).
    pub current: Arc<Current>,
    /// Persistent: the next plan shares every workload a change did not reach.
    pub workloads: imbl::OrdMap<Owner, Arc<Desired>>,
    /// Every namespace of the cluster: its baseline and Pod Security label.
    pub namespaces: BTreeMap<String, NamespaceDesired>,
    /// Declared mesh edges: allowed, denied and one-sided.
    pub edges: usize,
    pub allowed_edges: usize,
    /// Every CedarPolicy object: the generation decided, the outcome, the status last seen.
    pub policies: BTreeMap<(String, String), (Option<i64>, PolicyOutcome, Value)>,
    /// The policies the snapshot was built from (compliance scans read their catalog).
    pub store: Arc<PolicyStore>,
    /// Every LatticeComplianceProfile, with its generation and the status last seen.
    pub profiles: Vec<(LatticeComplianceProfile, Option<i64>, Value)>,
}

/// Builds a snapshot of `index` and decides every workload on it. Takes a copy of the
/// index, taken under the watches' lock and planned on outside it.
pub fn plan(index: Index) -> Result<Plan, String> {
    plan_whole(&index).map(|(plan, _, _)| plan)
}

/// [`plan`], with the mesh plan and compile context it decided with (what the
/// [`super::planner`] keeps to re-decide a change).
pub(crate) fn plan_whole(index: &Index) -> Result<(Plan, MeshPlan, CompileContext), String> {
    let world = index.world();
    let live = LiveFacts {
        baseline_missing: index.baseline_missing(),
        images: index.images().clone(),
    };
    let projection = Projection::with_live(world, live);
    let snapshot = Snapshot::build(world, &projection, index.store()).map_err(|e| e.to_string())?;
    let mesh = MeshPlan::plan(&snapshot, world);
    let ctx = CompileContext::of(world, &snapshot);
    let workloads: Vec<(&ObjectKey, &Object)> = world
        .objects()
        .filter(|(_, o)| o.kind().is_some_and(Kind::derives))
        .collect();
    let decided: Vec<(Owner, Arc<Desired>)> = workloads
        .par_iter()
        .filter_map(|(key, object)| {
            let owner = owner_of(key, object)?;
            let desired = decide(&snapshot, world, &mesh, &ctx, &owner, object, index);
            Some((owner, Arc::new(desired)))
        })
        .collect();
    let namespaces = namespaces(index, &snapshot, &projection);
    let plan = Plan {
        current: Arc::new(Current {
            world: world.clone(),
            projection,
            snapshot,
        }),
        workloads: decided.into_iter().collect(),
        namespaces,
        edges: mesh.len(),
        allowed_edges: mesh.allowed().count(),
        policies: policies_of(index),
        store: Arc::new(index.store().clone()),
        profiles: profiles_of(index),
    };
    Ok((plan, mesh, ctx))
}

/// The workload `key` names, as the owner of what it derives.
pub(crate) fn owner_of(key: &ObjectKey, object: &Object) -> Option<Owner> {
    Some(Owner {
        kind: object.kind()?,
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    })
}

/// A restore's verdict: derived only when its admission stamp verifies and Cedar's
/// `Restore` allows it, now, for the user the stamp names.
fn decide_restore(
    snapshot: &Snapshot,
    world: &lattice_engine::World,
    index: &Index,
    restore: &lattice_schemas::crd::LatticeRestore,
    object: &Object,
) -> (Verdict, Vec<Value>) {
    let requester = match index.restore_requester(restore) {
        Ok(r) => r,
        Err(why) => {
            return (
                Verdict::Failed(format!(
                    "not admitted: {why}; write it through the admission webhook as a user Restore allows"
                )),
                Vec::new(),
            );
        }
    };
    match lattice_gates::decide_restore(snapshot, world, &requester, object, jiff::Timestamp::now())
    {
        Ok(()) => (
            Verdict::Authorized,
            lattice_compiler::backup::compile_restore(restore),
        ),
        Err(gate) => (Verdict::Denied(vec![gate]), Vec::new()),
    }
}

/// Every CedarPolicy object: the generation decided, the outcome, the status last seen.
pub(crate) fn policies_of(
    index: &Index,
) -> BTreeMap<(String, String), (Option<i64>, PolicyOutcome, Value)> {
    index
        .policy_outcomes()
        .map(|((ns, name), (generation, outcome))| {
            let key = ObjectKey {
                kind: Kind::CedarPolicy.name(),
                namespace: Some(ns.clone()),
                name: name.clone(),
            };
            let status = index
                .live(&key)
                .map(|l| l.status.clone())
                .unwrap_or_default();
            (
                (ns.clone(), name.clone()),
                (*generation, outcome.clone(), status),
            )
        })
        .collect()
}

/// Every LatticeComplianceProfile, with its generation and the status last seen.
pub(crate) fn profiles_of(index: &Index) -> Vec<(LatticeComplianceProfile, Option<i64>, Value)> {
    index
        .world()
        .objects()
        .filter_map(|(key, o)| match o {
            Object::ComplianceProfile(p) => {
                let live = index.live(key).cloned().unwrap_or_default();
                Some((p.clone(), live.generation, live.status))
            }
            _ => None,
        })
        .collect()
}

/// Every live namespace's baseline and label, as `snapshot` decided.
fn namespaces(
    index: &Index,
    snapshot: &Snapshot,
    projection: &Projection,
) -> BTreeMap<String, NamespaceDesired> {
    let world = index.world();
    world
        .objects()
        .filter(|(k, _)| k.kind == "Namespace")
        .map(|(key, _)| {
            let ns = key.name.clone();
            let uid = index.live(key).map(|l| l.uid.clone()).unwrap_or_default();
            let opted_out = snapshot.opted_out(&ns);
            let mut objects = if opted_out {
                Vec::new()
            } else {
                lattice_compiler::baseline::baseline(&ns)
            };
            if !uid.is_empty() {
                let owner =
                    json!([{"apiVersion": "v1", "kind": "Namespace", "name": ns, "uid": uid}]);
                for o in &mut objects {
                    o["metadata"]["ownerReferences"] = owner.clone();
                }
            }
            let pod_security = (!opted_out).then(|| projection.pod_security(&ns));
            let on_cluster = index.baseline_of(&ns);
            let present = super::index::BASELINE_OBJECTS
                .iter()
                .filter(|(k, _)| on_cluster.contains_key(k))
                .copied()
                .collect();
            let mut hash = Sha256::new();
            hash.update(format!("{uid} {opted_out} {pod_security:?} ").as_bytes());
            for (kind, rv) in &on_cluster {
                hash.update(format!("{kind}={rv} ").as_bytes());
            }
            for o in &objects {
                hash.update(serde_json::to_vec(o).unwrap_or_default());
            }
            (
                ns,
                NamespaceDesired {
                    uid,
                    opted_out,
                    objects,
                    pod_security,
                    present,
                    digest: format!("{:x}", hash.finalize()),
                },
            )
        })
        .collect()
}

/// What one workload (or backup, or restore) derives on `snapshot`, with its owner
/// references and digest.
pub(crate) fn decide(
    snapshot: &Snapshot,
    world: &lattice_engine::World,
    mesh: &MeshPlan,
    ctx: &CompileContext,
    owner: &Owner,
    object: &Object,
    index: &Index,
) -> Desired {
    let live = index
        .live(&ObjectKey::of(object))
        .cloned()
        .unwrap_or_default();
    let (verdict, mut objects) = match object {
        Object::Restore(restore) => decide_restore(snapshot, world, index, restore, object),
        _ => match derive_in(snapshot, world, mesh, ctx, object) {
            Ok(derived) => (Verdict::Authorized, derived.objects),
            Err(CompileError::Denied { gates, .. }) => (Verdict::Denied(gates), Vec::new()),
            Err(e) => (Verdict::Failed(e.to_string()), Vec::new()),
        },
    };
    if !live.uid.is_empty() {
        let reference = json!([{
            "apiVersion": API_VERSION,
            "kind": owner.kind.name(),
            "name": owner.name,
            "uid": live.uid,
            "controller": true,
        }]);
        // A cluster-scoped owner (a backup, a restore) owns its objects in any namespace;
        // a namespaced one only those in its own.
        for o in &mut objects {
            if owner.namespace.is_empty()
                || o.pointer("/metadata/namespace").and_then(Value::as_str)
                    == Some(&owner.namespace)
            {
                o["metadata"]["ownerReferences"] = reference.clone();
            }
        }
    }
    let mut hash = Sha256::new();
    hash.update(format!("{:?} {verdict:?}", live.generation).as_bytes());
    for o in &objects {
        hash.update(serde_json::to_vec(o).unwrap_or_default());
    }
    Desired {
        uid: live.uid,
        generation: live.generation,
        verdict,
        objects,
        digest: format!("{:x}", hash.finalize()),
        previous_status: live.status,
    }
}
