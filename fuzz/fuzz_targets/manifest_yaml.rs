//! Manifest files as `lattice-policy validate` reads them: YAML (with duplicate keys,
//! aliases, YAML 1.1 forms), schemas, semantic rules. Never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = lattice_schemas::manifest::source_from_bytes("fuzz.yaml", data) else {
        return;
    };
    let report = lattice_schemas::validate::validate_text("fuzz.yaml", &file.text);
    for f in &report.findings {
        let _ = f.line_col();
    }
});
