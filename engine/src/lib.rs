//! Lattice's decision engine (DESIGN §2, §5, §6): the World of typed objects, its projection
//! into Cedar entities, the policy store, immutable snapshots and decisions with evidence.
//!
//! Built by the engine issue on top of [`lattice_schemas`]; this crate holds the place in
//! the dependency order `schemas ← engine ← gates ← compiler ← {controllers, repl}`.

pub use lattice_schemas;
