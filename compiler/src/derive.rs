//! The whole derivation of one workload, as the CLI and the operator run it: gates, then the
//! workload's objects, then the network objects of the mesh edges it is an end of.

use lattice_engine::{ObjectKey, Snapshot, World};
use lattice_gates::{MeshPlan, evaluate};
use lattice_schemas::manifest::Object;
use serde_json::Value;

use crate::compile::{CompileContext, CompileError, compile};
use crate::mesh::{edge_objects, peer_authentication};

/// What one workload derives.
#[derive(Clone, Debug)]
pub struct Derived {
    /// The objects, in apply order.
    pub objects: Vec<Value>,
    /// Audit-mode findings on its gates: reported, never enforced.
    pub warnings: Vec<String>,
}

/// Everything `object` derives in `world` under `snapshot`: nothing unless every gate
/// allows. `plan` must be the mesh plan of the same snapshot and world.
pub fn derive(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    object: &Object,
) -> Result<Derived, CompileError> {
    derive_in(snapshot, world, plan, &CompileContext::of(world), object)
}

/// [`derive`] with the world's compile context computed once by the caller (deriving many
/// workloads of one world).
pub fn derive_in(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    ctx: &CompileContext,
    object: &Object,
) -> Result<Derived, CompileError> {
    derive_with(snapshot, world, plan, ctx, object, Edges::Touching)
}

/// What the operator applies for `object`: like [`derive_in`], but with only the network
/// objects of edges it is the callee of. They live in the callee's namespace, so each
/// object has exactly one owner and a one-sided or denied edge removes exactly its own.
pub fn derive_owned(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    ctx: &CompileContext,
    object: &Object,
) -> Result<Derived, CompileError> {
    derive_with(snapshot, world, plan, ctx, object, Edges::Callee)
}

/// Which edges' network objects a derivation includes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edges {
    /// Every edge the workload is an end of (what `render` shows).
    Touching,
    /// The edges it is the callee of (what it owns).
    Callee,
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
    let key = ObjectKey::of(object);
    let id = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name
    );
    for edge in plan.touching(&id).into_iter().filter(|e| e.allowed()) {
        if edges == Edges::Touching || edge.callee == id {
            objects.extend(edge_objects(edge, world));
        }
    }
    if let Object::MeshMember(mm) = object {
        objects.extend(peer_authentication(&key.name, key.namespace.as_deref(), mm));
    }
    Ok(Derived {
        objects,
        warnings: gates.audit_findings(),
    })
}
