//! The tunnel between a child cluster's agent and its parent's cell. The child dials out and
//! exposes no port; who it is lives in its certificate.
//!
//! This crate holds the trust the tunnel is built on, with no I/O of its own:
//! - [`identity`]: a cluster's identity, a SPIFFE URI in its certificate, and the check that
//!   a peer's certificate speaks for the cluster it claims (never another);
//! - [`bootstrap`]: one-time bootstrap tokens, kept as digests and compared in constant time;
//! - [`ca`]: the parent's cluster CA, which signs an agent's CSR for the identity its
//!   bootstrap token names (the agent's key never leaves the agent), for 24 hours by default,
//!   to be renewed at two-thirds of the lifetime, and refuses revoked certificates.
//!
//! The gRPC stream (tonic over rustls), heartbeats, distribution and proxied streams build on
//! these.

pub mod bootstrap;
pub mod ca;
pub mod identity;

pub use bootstrap::{BootstrapError, BootstrapToken, TokenStore};
pub use ca::{AgentKey, CaError, ClusterCa, IssuedCert};
pub use identity::{ClusterIdentity, IdentityError, peer_identity};
