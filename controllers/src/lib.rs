//! Lattice's operator: the controllers as thin effectors ([`operator`]) and the admission
//! webhook ([`webhook`]).

pub mod operator;
pub mod webhook;
