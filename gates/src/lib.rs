//! The questions an object raises, one module per decision family, asked of
//! [`lattice_engine`]: derivation gates (may this workload run this image, read this secret,
//! add this capability…) and the bilateral mesh (`Connect` for every declared edge).

pub mod admission;
pub mod derivation;
pub mod mesh;

pub use admission::{Requester, evaluate_object, manage_policy};
pub use derivation::{Gate, GateOutcome, GateReport, evaluate, questions};
pub use mesh::{EdgeDecision, MeshPlan, connect_query};
