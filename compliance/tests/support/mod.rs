//! Test support: scanning conformance worlds with the repository's packs, and finding the
//! reference material.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use lattice_compiler::Derived;
use lattice_compliance::{ScanOptions, ScanReport, scan};
use lattice_engine::{Projection, Snapshot};
use lattice_gates::compliance::{DerivedByWorkload, DerivedObjects};

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

/// `world` with the repository's packs, and its snapshot.
pub fn load_world(
    world: &[PathBuf],
) -> (lattice_engine::World, lattice_engine::PolicyStore, Snapshot) {
    let (world, store) = lattice_engine::load::load(world, Some(&root().join("policies")))
        .unwrap_or_else(|e| panic!("the world did not load: {e:?}"));
    // The worlds' images are signed in the example world's OCI layout.
    let layout = lattice_supply::layout::Layout::open(&root().join("examples/world/images"))
        .expect("the example images");
    let live = lattice_engine::project::LiveFacts {
        images: lattice_supply::facts_of(&world, lattice_supply::Source::Layout(layout)),
        ..Default::default()
    };
    let projection = Projection::with_live(&world, live);
    let snapshot = Snapshot::build(&world, &projection, &store).expect("snapshot");
    (world, store, snapshot)
}

/// Scans `world` with the repository's packs at `at`, scoped by `options`.
pub fn scan_world_with(world: &[PathBuf], at: &str, options: ScanOptions) -> ScanReport {
    let (world, store, snapshot) = load_world(world);
    let options = ScanOptions {
        now: Some(at.parse().expect("an RFC 3339 time")),
        derived: options
            .derived
            .or_else(|| Some(std::sync::Arc::new(derive_all(&world, &snapshot)))),
        ..options
    };
    scan(&world, &store, &snapshot, &options, &|_| {}).expect("scan")
}

/// Every workload of `world` that derives on `snapshot`, by id, with what it derived.
fn derived(world: &lattice_engine::World, snapshot: &Snapshot) -> Vec<(String, Derived)> {
    let mesh = lattice_gates::MeshPlan::plan(snapshot, world);
    world
        .objects()
        .filter(|(_, o)| o.is_workload())
        .filter_map(|(k, o)| {
            let d = lattice_compiler::derive(snapshot, world, &mesh, o).ok()?;
            let id = format!("{}/{}", k.namespace.as_deref().unwrap_or("default"), k.name);
            Some((id, d))
        })
        .collect()
}

/// What every workload of `world` derives on `snapshot`, read as the scan reads it (what
/// `lattice-policy plan`, `compliance scan` and the operator hand the scan).
pub fn derive_all(world: &lattice_engine::World, snapshot: &Snapshot) -> DerivedByWorkload {
    derived(world, snapshot)
        .into_iter()
        .map(|(id, d)| (id, DerivedObjects::read(&d.objects)))
        .collect()
}

/// The deviations every workload of `world` was allowed when derived on `snapshot` (what
/// `lattice-policy plan` and `compliance scan` hand the exception register).
pub fn deviations_of(
    world: &lattice_engine::World,
    snapshot: &Snapshot,
) -> lattice_gates::compliance::AllowedDeviations {
    derived(world, snapshot)
        .into_iter()
        .map(|(id, d)| (id, lattice_compliance::exceptions::deviations(&d.gates)))
        .collect()
}

/// The criteria of the AICPA's 2017 Trust Services Criteria (revised points of focus,
/// 2022): the common criteria CC1–CC9 and the availability criteria A1. The reference list
/// beside the checkout (Kubescape's SOC 2 framework) names only the eight criteria its own
/// controls touch, so it bounds nothing here; it is checked to be a subset of these.
const TSC_2017: &[(&str, u32)] = &[
    ("CC1", 5),
    ("CC2", 3),
    ("CC3", 4),
    ("CC4", 2),
    ("CC5", 3),
    ("CC6", 8),
    ("CC7", 5),
    ("CC8", 1),
    ("CC9", 2),
    ("A1", 3),
];

pub fn tsc_2017() -> BTreeSet<String> {
    TSC_2017
        .iter()
        .flat_map(|(series, n)| (1..=*n).map(move |i| format!("{series}.{i}")))
        .collect()
}
