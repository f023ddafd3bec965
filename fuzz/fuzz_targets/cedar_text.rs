//! Policy text, as a CedarPolicy's `spec.policies` or a `.cedar` file brings it: measured,
//! checked against the schema, never a crash or an abort (the nesting bound keeps Cedar's
//! recursive parser inside its stack).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let measured = lattice_schemas::cedar::nesting(text);
    let check = lattice_schemas::cedar::check_policies(text);
    if measured.exceeded_at.is_some() {
        // Refused before Cedar read it.
        assert!(check.policies.is_none());
        assert!(check.has_errors());
    }
});
