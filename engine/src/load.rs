//! Loading a world and the policies it is decided under, as every entry point does it: the
//! manifests (validated), the rule packs, and every CedarPolicy object of the world.

use std::path::{Path, PathBuf};

use lattice_schemas::manifest::Object;
use lattice_schemas::validate::Report;

use crate::policies::{PolicyError, PolicyStore};
use crate::world::World;

/// Why a world and its policies did not load. Nothing is half loaded.
#[derive(Debug)]
pub enum LoadFailure {
    /// The manifests have errors or could not be read.
    World(Box<Report>),
    /// The rule packs have errors.
    Packs(Box<Report>),
    /// A CedarPolicy object of the world was refused.
    Policy(PolicyError),
    /// The rule-pack directory does not exist or holds no pack: deciding without the
    /// packs would deny what the cluster allows and pass checks nobody ran.
    NoPacks(String),
}

/// Loads `world` and the rule packs under `policies` (the bundled packs when `None`), and
/// applies the world's CedarPolicy objects to them. A `policies` that is not a directory of
/// at least one pack is an error, never an empty set of rules.
pub fn load(
    world: &[PathBuf],
    policies: Option<&Path>,
) -> Result<(World, PolicyStore), LoadFailure> {
    let world = World::load(world).map_err(|e| LoadFailure::World(Box::new(e.report)))?;
    let store = policies_for(&world, policies)?;
    Ok((world, store))
}

/// The rule packs under `policies` (the bundled packs when `None`) with the CedarPolicy
/// objects of an already loaded `world` applied, as [`load`] makes them.
pub fn policies_for(world: &World, policies: Option<&Path>) -> Result<PolicyStore, LoadFailure> {
    with_world_policies(packs(policies)?, world)
}

/// The rule packs under `policies` (the bundled packs when `None`), before any world's
/// CedarPolicy objects: they need no world, so a caller may load them while it loads one.
pub fn packs(policies: Option<&Path>) -> Result<PolicyStore, LoadFailure> {
    let Some(policies) = policies else {
        return PolicyStore::bundled().map_err(LoadFailure::Policy);
    };
    if !policies.is_dir() {
        return Err(LoadFailure::NoPacks(format!(
            "no rule packs at {}: it is not a directory (pass --policies with the rule-pack directory, e.g. the repository's policies/)",
            policies.display()
        )));
    }
    let has_pack = std::fs::read_dir(policies)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.path().join("pack.yaml").is_file());
    if !has_pack {
        return Err(LoadFailure::NoPacks(format!(
            "no rule packs at {}: no subdirectory holds a pack.yaml",
            policies.display()
        )));
    }
    PolicyStore::load_packs(policies).map_err(|e| match e {
        PolicyError::Packs(report) => LoadFailure::Packs(report),
        other => LoadFailure::Policy(other),
    })
}

/// `store` with every CedarPolicy object of `world` applied.
pub fn with_world_policies(
    mut store: PolicyStore,
    world: &World,
) -> Result<PolicyStore, LoadFailure> {
    for (_, o) in world.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).map_err(LoadFailure::Policy)?;
        }
    }
    Ok(store)
}
