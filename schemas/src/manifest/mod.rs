//! Reading manifests: YAML with source spans, typed Lattice objects, Score documents.

pub mod yaml;
