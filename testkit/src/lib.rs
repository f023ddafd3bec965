//! What Lattice's test suites share: where the workspace is, and where the reference
//! material of `../shared/reference/` is (DESIGN §8).

use std::path::PathBuf;

/// The workspace root: the parent of the crate under test, as cargo names it when it runs a
/// test or bench (every crate sits one level below the root). The path this crate was
/// compiled at is only the fallback: a build cache shared between clones may hold a testkit
/// compiled in another checkout, whose path need not exist any more.
pub fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("every crate sits in the workspace root")
        .to_path_buf()
}

/// `../shared/reference/` (or `LATTICE_REFERENCE_DIR`). Absent, tests that need it print a
/// notice and return early, except under `CI=true`, where absence is a failure.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LATTICE_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/reference"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "reference material not found at {} (set LATTICE_REFERENCE_DIR)",
        dir.display()
    );
    eprintln!(
        "NOTICE: skipping: reference material not found at {}",
        dir.display()
    );
    None
}

pub mod schemas;
