//! The Kubernetes API proxy's core: a request read the way kube-apiserver reads it
//! ([`request_info`]) and decided as one Cedar question ([`authorize`]). Authentication,
//! the HTTPS endpoint and forwarding through the tunnel build on these; this crate holds the
//! part every hop shares and nothing here does I/O.

pub mod authorize;
pub mod request_info;

pub use authorize::{Verdict, authorize};
pub use lattice_gates::proxy::PROXY_ACTIONS;
pub use request_info::{RequestInfo, RequestInfoError};
