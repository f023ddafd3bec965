//! Derivation: from a workload and an all-allowed gate report, every Kubernetes object it
//! needs, deterministically.
//!
//! Built by the derivation issue.

pub use lattice_gates;
