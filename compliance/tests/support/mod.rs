//! Test support: scanning conformance worlds with the repository's packs, and finding the
//! reference material.

#![allow(dead_code)]

use std::path::PathBuf;

use lattice_compliance::{ScanOptions, ScanReport, scan};
use lattice_engine::{Projection, Snapshot};

pub fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

/// The reference material (see `lattice_testkit::reference_dir`).
pub fn reference_dir() -> Option<PathBuf> {
    lattice_testkit::reference_dir()
}

/// The conformance case directory `name` under `conformance/compliance/`.
pub fn case(name: &str) -> PathBuf {
    root().join("conformance/compliance").join(name)
}

/// Scans `world` (files or directories) with the repository's packs at `at`.
pub fn scan_world(world: &[PathBuf], at: &str) -> ScanReport {
    scan_world_with(world, at, ScanOptions::default())
}

/// Scans `world` with the repository's packs at `at`, scoped by `options`.
pub fn scan_world_with(world: &[PathBuf], at: &str, options: ScanOptions) -> ScanReport {
    let (world, store) = lattice_engine::load::load(world, Some(&root().join("policies")))
        .unwrap_or_else(|e| panic!("the world did not load: {e:?}"));
    let projection = Projection::of(&world);
    let snapshot = Snapshot::build(&world, &projection, &store).expect("snapshot");
    let options = ScanOptions {
        now: Some(at.parse().expect("an RFC 3339 time")),
        ..options
    };
    scan(&world, &store, &snapshot, &options, &|_| {}).expect("scan")
}
