//! The whole derivation of one workload, as the CLI and the operator run it: gates, then the
//! workload's objects, its egress outside the mesh, then its side of each allowed mesh edge
//! it is an end of (the callee's ingress, the caller's egress). Everything a workload
//! derives lives in its own namespace and is owned by it.

use std::collections::BTreeMap;

use lattice_engine::{ObjectKey, Snapshot, World};
use lattice_gates::{GateReport, MeshPlan, evaluate};
use lattice_schemas::manifest::Object;
use serde_json::Value;

use crate::compile::{CompileContext, CompileError, compile};
use crate::egress::external_egress;
use crate::mesh::{EdgeSide, identity, peer_authentication};

/// What one workload derives.
#[derive(Clone, Debug)]
pub struct Derived {
    /// The objects, in apply order.
    pub objects: Vec<Value>,
    /// Audit-mode findings on its gates: reported, never enforced.
    pub warnings: Vec<String>,
    /// Every gate it was derived under, all allowed: what a compliance scan on the same
    /// snapshot reads instead of asking them again.
    pub gates: GateReport,
    /// Its mesh edges' objects, counted by kind and not built: empty but from
    /// [`derive_counting_edges`], whose `objects` leave them out.
    pub unbuilt: BTreeMap<&'static str, usize>,
}

/// Whether derivation builds a workload's mesh edge objects or only counts them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edges {
    Built,
    Counted,
}

/// Everything `object` derives in `world` under `snapshot`: nothing unless every gate
/// allows. `plan` must be the mesh plan of the same snapshot and world.
pub fn derive(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    object: &Object,
) -> Result<Derived, CompileError> {
    derive_in(
        snapshot,
        world,
        plan,
        &CompileContext::of(world, snapshot),
        object,
    )
}

/// [`derive`] with the world's compile context computed once by the caller (deriving many
/// workloads of one world). What the operator applies for `object`.
pub fn derive_in(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    ctx: &CompileContext,
    object: &Object,
) -> Result<Derived, CompileError> {
    derive_with(snapshot, world, plan, ctx, object, Edges::Built)
}

/// [`derive_in`] for a caller that reads what the objects are but needs none of the mesh
/// edges' own: those are counted by kind in [`Derived::unbuilt`] and left out of
/// `objects`. Everything else, gates included, is derived exactly as [`derive_in`] does.
pub fn derive_counting_edges(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    ctx: &CompileContext,
    object: &Object,
) -> Result<Derived, CompileError> {
    derive_with(snapshot, world, plan, ctx, object, Edges::Counted)
}

fn derive_with(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    ctx: &CompileContext,
    object: &Object,
    edges: Edges,
) -> Result<Derived, CompileError> {
    let gates = evaluate(snapshot, object);
    let mut objects = compile(object, &gates, ctx)?;
    if !object.is_workload() {
        // A backup: no mesh, no egress (and its name is no workload's id).
        return Ok(Derived {
            objects,
            warnings: gates.audit_findings(),
            gates,
            unbuilt: BTreeMap::new(),
        });
    }
    objects.extend(external_egress(object));
    let key = ObjectKey::of(object);
    let id = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name
    );
    // Each edge's side in this workload's namespace: it owns exactly these, so a
    // one-sided or denied edge removes exactly its own.
    // Its identity is found once, not once per edge.
    let mut unbuilt = BTreeMap::new();
    if let Some(me) = identity(world, &id) {
        for edge in plan.touching(&id).into_iter().filter(|e| e.allowed()) {
            let ingress = (edge.callee == id)
                .then(|| EdgeSide::ingress(edge, &me, world))
                .flatten();
            let egress = (edge.caller == id)
                .then(|| EdgeSide::egress(edge, &me, world))
                .flatten();
            for side in ingress.into_iter().chain(egress) {
                match edges {
                    Edges::Built => objects.extend(side.build()),
                    Edges::Counted => {
                        for kind in side.kinds() {
                            *unbuilt.entry(*kind).or_insert(0) += 1;
                        }
                    }
                }
            }
        }
    }
    if let Object::MeshMember(mm) = object {
        objects.extend(peer_authentication(&key.name, key.namespace.as_deref(), mm));
    }
    Ok(Derived {
        objects,
        warnings: gates.audit_findings(),
        gates,
        unbuilt,
    })
}
