//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `../shared/reference/` (or `LATTICE_REFERENCE_DIR`). Absent: tests that need it print a
/// notice and return early, except under `CI=true`, where absence is a failure.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LATTICE_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/reference"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "reference material not found at {} (set LATTICE_REFERENCE_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "NOTICE: skipping: reference material not found at {}",
        dir.display()
    );
    None
}

/// Every file under `dir` with extension `ext`, sorted.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
