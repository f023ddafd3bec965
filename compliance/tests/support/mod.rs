//! Test support: scanning conformance worlds with the repository's packs, and finding the
//! reference material.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lattice_compliance::{ScanOptions, ScanReport, scan};
use lattice_engine::{Projection, Snapshot};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `../shared/reference/` (or `LATTICE_REFERENCE_DIR`); absent, a printed notice and `None`,
/// except under `CI=true`, where absence fails.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LATTICE_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/reference"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "reference material missing at {}",
        dir.display()
    );
    eprintln!(
        "NOTICE: skipping: reference material not found at {}",
        dir.display()
    );
    None
}

/// The conformance case directory `name` under `conformance/compliance/`.
pub fn case(name: &str) -> PathBuf {
    root().join("conformance/compliance").join(name)
}

/// Scans `world` (files or directories) with the repository's packs at `at`.
pub fn scan_world(world: &[PathBuf], at: &str) -> ScanReport {
    let (world, store) = lattice_engine::load::load(world, &root().join("policies"))
        .unwrap_or_else(|e| panic!("the world did not load: {e:?}"));
    let projection = Projection::of(&world);
    let snapshot = Snapshot::build(&world, &projection, &store).expect("snapshot");
    let options = ScanOptions {
        now: Some(at.parse().expect("an RFC 3339 time")),
        ..ScanOptions::default()
    };
    scan(&world, &store, &snapshot, &options, &|_| {}).expect("scan")
}
