//! Lattice's decision engine (DESIGN §2, §5, §6): the World of typed objects, its projection
//! into Cedar entities, the policy store, immutable snapshots and decisions with evidence.
//!
//! ```text
//! World ──Projection──► Entities ─┐
//!                                 ├─► Snapshot (digest) ──decide(Query)──► Decision
//! PolicyStore ──PolicyIndex───────┘
//! ```

pub mod index;
pub mod policies;
pub mod project;
pub mod snapshot;
pub mod world;

pub use policies::{PolicyInfo, PolicySource, PolicyStore};
pub use project::{Projection, uid};
pub use snapshot::{Decision, Engine, Query, QueryError, Snapshot, action};
pub use world::{ObjectKey, World};
