//! The questions an object raises, one module per decision family (derivation gates, mesh
//! `Connect`, proxy, pivot, admission, compliance), asked of [`lattice_engine`].
//!
//! Built by the derivation issue.

pub use lattice_engine;
