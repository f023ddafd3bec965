//! The questions an object raises, one module per decision family, asked of
//! [`lattice_engine`]: derivation gates (may this workload run this image, read this secret,
//! add this capability…), the bilateral mesh (`Connect` for every declared edge), admission
//! of policies and objects, proxied Kubernetes API calls (one question per request and hop),
//! the cluster lifecycle (`Provision`, `Pivot`, `Unpivot`, `Decommission`), and compliance
//! (`Comply` for every subject and framework).

pub mod admission;
mod attrs;
pub mod compliance;
pub mod derivation;
pub mod kubernetes;
pub mod lifecycle;
pub mod mesh;
pub mod peering;
pub mod pod_security;
pub mod proxy;
pub mod time;

pub use admission::{Requester, decide_restore, evaluate_object};
pub use derivation::{
    AllowedGate, Gate, GateOutcome, GateReport, decide, evaluate, questions, quota_questions,
};
pub use mesh::{EdgeDecision, MeshPlan, connect_query};
