//! The parts of the fleet CLI `lattice` that read what others send it, as a library so the
//! fuzzer (`fuzz/fuzz_targets/device_flow_answers.rs`) reaches them; the commands are the
//! binary's (`main.rs`).

pub mod device_flow;
