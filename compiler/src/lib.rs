//! Derivation: from a workload and an all-allowed gate report, every Kubernetes object it
//! needs, deterministically. If any gate denies, nothing is derived.

pub mod compile;
pub mod mesh;
pub mod placeholders;

pub use compile::{CompileContext, CompileError, compile_service};
pub use mesh::compile_mesh;
