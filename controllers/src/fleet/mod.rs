//! The operator's side of the cluster hierarchy, on top of `lattice-tunnel`.
//!
//! ```text
//!  parent (lattice-operator run --cell-listen)          child (lattice-operator agent)
//!  ┌───────────────────────────────────────┐            ┌──────────────────────────────┐
//!  │ CA Secret ─► cell (gRPC, mTLS) ◄──────┼── dials ───┤ agent ◄─ bootstrap Secret    │
//!  │ LatticeCluster children ─► bootstrap  │  out only  │   │   ─► credentials Secret  │
//!  │   Secrets (one-time tokens)           │            │   ├─► health: nodes, /readyz │
//!  │ heartbeats ─► LatticeCluster status   │            │   └─► inherited CedarPolicy  │
//!  │ propagate: true CedarPolicy ─► sync   │            │       objects (full, deltas) │
//!  └───────────────────────────────────────┘            └──────────────────────────────┘
//! ```
//!
//! - [`stored`]: how the CA, the bootstrap bundle and the agent's credentials are kept in
//!   Secrets (pure, tested without a cluster);
//! - [`parent`]: the cell in the operator: its CA, children's tokens, their status and
//!   what is distributed to them;
//! - [`child`]: the agent subcommand: bootstrap, health, and the inherited objects;
//! - [`bootstrap`]: the HTTPS endpoint a new child's control plane fetches its agent from
//!   with its one-time token;
//! - [`provisioning`]: on a parent, each child's `Provision` and `Pivot` decisions and,
//!   when allowed, its Cluster API objects or their move, phase, components and decisions
//!   in its status;
//! - [`inputs`]: the cell's options and what it reads from each plan;
//! - [`finalizer`]: the finalizer that holds a child's deletion until its teardown;
//! - [`decommission`]: on a parent, a deleted child's teardown once `Decommission` allows
//!   it (first moved back, when `Unpivot` allows it, if it was pivoted), held by a
//!   finalizer until done;
//! - [`own`]: a pivoted cluster managing itself: its own LatticeCluster's `Provision`,
//!   asked of itself, and its own Cluster API objects (scaling a pool with no parent);
//! - [`pivot`]: the move itself: the cell's side (discover, pause, send, unpause, record,
//!   delete) and the agent's (apply in order with owners remapped, unpause);
//! - [`proxy`]: where the API proxy's allowed calls go: through the cell to a child, and
//!   at the child to its API server as the caller.

pub mod bootstrap;
pub mod child;
pub mod decommission;
pub mod finalizer;
pub mod inputs;
pub mod own;
pub mod parent;
pub mod peering;
pub mod pivot;
pub mod provisioning;
pub mod proxy;
pub mod stored;

/// The namespace the operator keeps its Secrets in by default.
pub const NAMESPACE: &str = "lattice-system";

/// The label on an object the agent wrote from its parent's distributed set: its value is
/// the parent's cluster name.
pub const INHERITED_FROM: &str = "lattice.dev/inherited-from";

/// A write or delete whose object is gone counts as done.
fn absent_ok<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
