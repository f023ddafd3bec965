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
}

/// Loads `world` and the rule packs under `policies` (when that directory exists), and
/// applies the world's CedarPolicy objects to them.
pub fn load(world: &[PathBuf], policies: &Path) -> Result<(World, PolicyStore), LoadFailure> {
    let world = World::load(world).map_err(|e| LoadFailure::World(Box::new(e.report)))?;
    let mut store = if policies.is_dir() {
        PolicyStore::load_packs(policies).map_err(|e| match e {
            PolicyError::Packs(report) => LoadFailure::Packs(report),
            other => LoadFailure::Policy(other),
        })?
    } else {
        PolicyStore::new()
    };
    for (_, o) in world.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).map_err(LoadFailure::Policy)?;
        }
    }
    Ok((world, store))
}
