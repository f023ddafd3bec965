//! The admission webhook (`lattice-operator webhook`): Kubernetes calls it on every create,
//! update and delete of a Lattice object. Reading ([`review`]) and deciding ([`admit`]) are
//! pure; [`server`] is HTTPS over rustls with limits on size and time; [`tls`] reloads the
//! serving certificate when it changes; [`metrics`] is `/metrics`.

pub mod admit;
pub mod metrics;
pub mod proof;
pub mod review;
pub mod server;
pub mod stamp;
pub mod tls;

use std::path::{Path, PathBuf};

use lattice_engine::load::LoadFailure;
use lattice_engine::project::LiveFacts;
use lattice_engine::{Projection, Snapshot};

pub use admit::{Current, Verdict, admit};
pub use server::{Limits, State, serve};

/// Where the standalone webhook verifies the world's images.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// An OCI image layout (`--images`); else the one the world carries (`images/`).
    pub layout: Option<PathBuf>,
    /// How registries are reached when no layout is given or carried.
    pub registries: lattice_supply::RegistryOptions,
}

/// Loads the world and policies the webhook decides on, its images verified against
/// `images.layout`, else the OCI image layout the world carries (`images/`), else their
/// registries. The error is plain text.
pub fn load_current(
    world: &[PathBuf],
    policies: Option<&Path>,
    images: &Images,
) -> Result<Current, String> {
    let paths = world;
    let (world, store) = lattice_engine::load::load(world, policies).map_err(|e| match e {
        LoadFailure::World(r) => format!(
            "the world did not load: {} error(s){}",
            r.errors(),
            first(&r)
        ),
        LoadFailure::Packs(r) => format!(
            "the rule packs did not load: {} error(s){}",
            r.errors(),
            first(&r)
        ),
        LoadFailure::Policy(e) => e.to_string(),
        LoadFailure::NoPacks(why) => why,
    })?;
    let layout = images
        .layout
        .clone()
        .or_else(|| lattice_supply::layout::beside(paths));
    let source = match layout {
        Some(dir) => lattice_supply::Source::Layout(
            lattice_supply::layout::Layout::open(&dir)
                .map_err(|e| format!("the OCI image layout cannot be read: {e}"))?,
        ),
        None => lattice_supply::Source::registries(&images.registries),
    };
    let live = LiveFacts {
        images: lattice_supply::facts_of(&world, source),
        ..LiveFacts::default()
    };
    let projection = Projection::with_live(&world, live);
    let snapshot = Snapshot::build(&world, &projection, &store).map_err(|e| e.to_string())?;
    Ok(Current {
        world,
        projection,
        snapshot,
    })
}

fn first(r: &lattice_schemas::validate::Report) -> String {
    r.findings
        .first()
        .map(|f| {
            let (line, col) = f.line_col();
            format!(", first at {}:{line}:{col}: {}", f.file.name, f.message)
        })
        .or_else(|| r.unreadable.first().map(|u| format!(", cannot read {u}")))
        .unwrap_or_default()
}
