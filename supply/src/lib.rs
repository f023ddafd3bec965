//! Supply chain: what an image *is* and who signed it, established at its registry.
//!
//! `DeployImage` decides on `Image.digest`, `Image.signed` and `Image.signers`. This crate
//! produces those facts ([`lattice_schemas::image::Verification`]) by talking to registries:
//! it resolves a reference to the digest it names ([`registry`]), reads the cosign signatures
//! stored for that digest, and counts a signature only when a key of the governing
//! TrustPolicy verifies it and its payload names exactly that digest ([`cosign`],
//! [`keys`]). [`verify::Verifier`] ties these together with a cache by digest.
//!
//! The engine never does I/O: callers (the operator, the CLI) verify here and hand the
//! results to the projection.

pub mod bundle;
mod certs;
pub mod cosign;
pub mod docker_config;
pub mod keyless;
pub mod keys;
pub mod layout;
pub mod registry;
pub mod signers;
pub mod source;
pub mod tlog;
pub mod verify;

pub use registry::{Credentials, RegistryError, RegistryOptions};
pub use source::Source;
pub use verify::{Logins, Trust, Verifier, facts_of, trust_specs, verify_blocking};
