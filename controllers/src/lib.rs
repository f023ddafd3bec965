//! Lattice's operator: the controllers as thin effectors ([`operator`]), the admission
//! webhook ([`webhook`]), and the cluster hierarchy's cell and agent ([`fleet`]).

pub mod fleet;
pub mod lattice_api;
pub mod operator;
pub mod webhook;
