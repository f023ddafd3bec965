//! Derivation: from a workload and an all-allowed gate report, every Kubernetes object it
//! needs, deterministically. If any gate denies, nothing is derived.
//!
//! [`compile`] is the entry point; each workload kind has its module ([`service`],
//! [`batch`] for jobs, [`model`]), sharing the pod builder in [`pod`]. Network objects come
//! from the mesh plan ([`mesh`]); runtime enforcement from [`runtime`].

pub mod batch;
pub mod compile;
pub mod derive;
pub mod mesh;
pub mod model;
pub mod placeholders;
pub mod pod;
pub mod runtime;
pub mod service;

pub use compile::{CompileContext, CompileError, compile};
pub use derive::{Derived, derive, derive_in, derive_owned};
pub use mesh::{compile_mesh, namespace_baseline};
