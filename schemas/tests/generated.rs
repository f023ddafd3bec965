//! The checked-in CRDs and JSON Schemas must be what the Rust types generate.

use std::path::Path;

use lattice_schemas::generate::{REGENERATE_COMMAND, artifacts};

#[test]
fn generated_artifacts_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("LATTICE_UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    let expected: Vec<_> = artifacts();
    for artifact in &expected {
        let path = root.join(&artifact.path);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != artifact.contents {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &artifact.contents).unwrap();
            } else {
                stale.push(artifact.path.display().to_string());
            }
        }
    }
    // Files that no kind generates any more are stale too.
    for dir in ["crds", "jsonschema"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let rel = Path::new(dir).join(entry.file_name());
            if !expected.iter().any(|a| a.path == rel) {
                if update {
                    std::fs::remove_file(entry.path()).unwrap();
                } else {
                    stale.push(format!("{} (no longer generated)", rel.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are stale: {}\nregenerate them with:\n    {REGENERATE_COMMAND}",
        stale.join(", ")
    );
}
