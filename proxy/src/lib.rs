//! The Kubernetes API proxy: a request read the way kube-apiserver reads it
//! ([`request_info`]), its caller named ([`oidc`], [`authn`]), decided as one Cedar question
//! ([`authorize`]) and served over HTTPS ([`server`]), which hands what was allowed to an
//! [`server::Upstream`]: the tunnel to a child, or the API server of this cluster. Every hop
//! runs this same proxy and decides again with its own policies.

pub mod authn;
pub mod authorize;
pub mod oidc;
pub mod request_info;
pub mod server;

pub use authorize::{Verdict, authorize};
pub use lattice_gates::proxy::PROXY_ACTIONS;
pub use request_info::{RequestInfo, RequestInfoError};
pub use server::{Proxy, ProxyConfig, SnapshotSource, Upstream};
