//! Lattice's decision engine (DESIGN §2, §5, §6): the World of typed objects, its projection
//! into Cedar entities, the policy store, immutable snapshots and decisions with evidence.
//!
//! ```text
//! World ──Projection──► Entities ─┐
//!                                 ├─► Snapshot (digest) ──decide(Query)──► Decision
//! PolicyStore ──PolicyIndex───────┘
//! ```

pub mod attr;
mod closure;
mod conformance;
pub mod credentials;
mod entity;
pub mod entity_codec;
pub mod explain;
pub mod index;
pub mod kubernetes;
pub mod load;
pub mod pod;
pub mod policies;
pub mod project;
pub mod quota;
pub mod requests;
pub mod slice;
pub mod snapshot;
pub mod what_if;
pub mod world;

pub use explain::{Explanation, NearMiss, Why};
pub use policies::{PolicyInfo, PolicySource, PolicyStore};
pub use project::{EntityDelta, Projection, parse_uid, uid};
pub use slice::EntitySlice;
pub use snapshot::{
    Decision, Engine, Query, QueryError, Snapshot, action, context_from_json, opt_out_query,
};
pub use what_if::{PolicyChange, WhatIf, what_if};
pub use world::{ObjectKey, World};
