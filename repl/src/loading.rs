//! Loading a world and its policies for the query commands, with diagnostics on failure.

use std::path::{Path, PathBuf};

use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_schemas::manifest::Object;

use crate::output::{emit, render};

/// A loaded world, its policies and a snapshot of both.
pub struct Loaded {
    pub world: World,
    pub store: PolicyStore,
    pub snapshot: Snapshot,
}

/// Loads `world` and the rule packs under `policies` (when the directory exists), plus every
/// CedarPolicy object of the world. On any problem, prints the diagnostics and returns
/// `None`.
pub fn load(world: &[PathBuf], policies: &Path) -> Option<Loaded> {
    let shown: Vec<String> = world.iter().map(|p| p.display().to_string()).collect();
    let world = match World::load(world) {
        Ok(w) => w,
        Err(e) => {
            for f in &e.report.findings {
                emit(&render(f));
            }
            for u in &e.report.unreadable {
                eprintln!("error: cannot read {u}");
            }
            eprintln!("error: the world at {} did not load", shown.join(", "));
            return None;
        }
    };
    let mut store = if policies.is_dir() {
        match PolicyStore::load_packs(policies) {
            Ok(s) => s,
            Err(lattice_engine::policies::PolicyError::Packs(report)) => {
                for f in &report.findings {
                    emit(&render(f));
                }
                eprintln!(
                    "error: the rule packs at {} did not load",
                    policies.display()
                );
                return None;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return None;
            }
        }
    } else {
        PolicyStore::new()
    };
    for (_, o) in world.objects() {
        if let Object::CedarPolicy(p) = o
            && let Err(e) = store.apply_object(p)
        {
            eprintln!("error: {e}");
            return None;
        }
    }
    match Snapshot::build(&world, &Projection::of(&world), &store) {
        Ok(snapshot) => Some(Loaded {
            world,
            store,
            snapshot,
        }),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}
