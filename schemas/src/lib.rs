//! Lattice's API: custom resource types, their generated CRDs and JSON Schemas, the Cedar
//! schema, and loading and validating manifests with precise diagnostics.

pub mod cedar;
pub mod crd;
pub mod diagnostics;
pub mod generate;
pub mod image;
pub mod manifest;
pub mod placeholder;
pub mod validate;
