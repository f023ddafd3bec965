//! The tunnel between a child cluster's agent and its parent's cell. The child dials out and
//! exposes no port; who it is lives in its certificate.
//!
//! The trust the tunnel is built on, with no I/O:
//! - [`identity`]: a cluster's identity, a SPIFFE URI in its certificate, and the check that
//!   a peer's certificate speaks for the cluster it claims (never another);
//! - [`bootstrap`]: one-time bootstrap tokens, kept as digests and compared in constant time;
//! - [`ca`]: the parent's cluster CA, which signs an agent's CSR for the identity its
//!   bootstrap token names (the agent's key never leaves the agent), for 24 hours by default,
//!   to be renewed at two-thirds of the lifetime, and refuses revoked certificates.
//!
//! The protocol, with no I/O, so it can be tested and fuzzed alone:
//! - [`session`]: the rules of one agent's stream as the cell enforces them, refusing what
//!   breaks them with a [`violation`];
//! - [`peering`]: the cross-cluster mesh's reports and routes and their rules;
//! - [`distribution`]: the versioned set a parent distributes, its full syncs, deltas and
//!   digest.
//!
//! And the two ends, tonic gRPC over rustls ([`tls`]):
//! - [`cell`]: the parent's server: bootstrap, renewal, one session per agent, who is
//!   connected and their health;
//! - [`agent`]: the child's client: bootstrap, the stream, heartbeats, reconnection with
//!   backoff and jitter, renewal;
//! - [`forward`]: proxied API requests through the tunnel, one HTTP/2 stream each;
//! - [`command`]: lifecycle commands (the steps of a pivot) the cell sends an agent and
//!   the answers it waits for.

pub mod agent;
pub mod bootstrap;
pub mod ca;
pub mod cell;
pub mod command;
pub mod distribution;
pub mod forward;
pub mod identity;
pub mod peering;
pub mod session;
pub mod tls;
mod upgrade;
pub mod violation;

pub use bootstrap::{BootstrapError, BootstrapToken, TokenStore};
pub use ca::{AgentKey, CaError, ClusterCa, IssuedCert, Revocations};
pub use identity::{ClusterIdentity, IdentityError, peer_identity};
