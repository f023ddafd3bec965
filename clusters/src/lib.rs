//! Clusters: what a `LatticeCluster` becomes in Cluster API (CAPI), and what Lattice reads
//! back from it.
//!
//! - [`provision`]: the spec → CAPI objects: `Cluster`, the control plane (kubeadm or
//!   RKE2), one `MachineDeployment` per worker pool with its bootstrap template, and the
//!   provider's infrastructure cluster and machine templates (AWS, Proxmox, OpenStack,
//!   Docker). The first control-plane nodes run the bootstrap hook ([`bootstrap`]), which
//!   fetches the cluster's agent from its parent with the one-time token.
//! - [`phase`]: the LatticeCluster's phase and conditions from the CAPI objects' status.
//! - [`pivot`]: the move of a cluster's CAPI objects into the cluster itself: which move,
//!   owners first, in batches, and the steps the tunnel carries.
//! - [`components`]: the platform components the spec asks the cluster to run.
//!
//! Pure planning: nothing here reads or writes an API server. Whether a step may happen is
//! `lattice_gates::lifecycle`'s (a Cedar `Provision`, `Pivot`, `Unpivot` or
//! `Decommission`); the controllers apply what this crate plans for allowed steps.

pub mod bootstrap;
pub mod capi;
pub mod components;
pub mod error;
pub mod phase;
pub mod pivot;
pub mod provider;
pub mod provision;

pub use bootstrap::BootstrapEndpoint;
pub use error::ProvisionError;
pub use provision::{ProvisionOptions, provision};
