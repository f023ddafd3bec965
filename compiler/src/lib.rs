//! Derivation: from a workload and an all-allowed gate report, every Kubernetes object it
//! needs, deterministically. If any gate denies, nothing is derived.
//!
//! [`compile`] is the entry point; each workload kind has its module ([`service`],
//! [`batch`] for jobs, [`model`], [`package`] for Helm charts through Flux, [`backup`] for
//! Velero's backups and restores, [`issuer`] for cert-manager issuers and external-dns),
//! sharing the pod
//! builder in [`pod`], the templated ExternalSecrets in `secrets` and the building blocks
//! in [`objects`]. Network objects come from the mesh plan ([`mesh`]), each
//! namespace's default-deny [`baseline`], and egress outside the mesh ([`egress`]);
//! runtime enforcement from [`runtime`]. A cluster's side of each allowed cross-cluster
//! edge comes from its route ([`peering`]).
//!
//! Modules point one way: `derive` → `compile` → the kinds → `pod` → `runtime` →
//! `objects`; the kinds and `pod` → `secrets` → `objects`; `backup`, `issuer` → `objects`; `derive` → `mesh`, `egress` → `objects`; `peering` → `objects`.

pub mod backup;
pub mod baseline;
pub mod batch;
pub mod compile;
pub mod derive;
pub mod egress;
pub mod issuer;
pub mod mesh;
pub mod model;
pub mod objects;
pub mod package;
pub mod peering;
pub mod placeholders;
pub mod pod;
pub mod runtime;
mod secrets;
pub mod service;

pub use baseline::namespace_baseline;
pub use compile::{CompileContext, CompileError, compile};
pub use derive::{Derived, derive, derive_counting_edges, derive_in};
pub use mesh::compile_mesh;
