//! Lattice's operator: the admission webhook (and, to come, the controllers and the cell).

pub mod webhook;
