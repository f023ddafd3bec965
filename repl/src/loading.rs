//! Loading a world and its policies for the query commands, with diagnostics on failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lattice_engine::load::LoadFailure;
use lattice_engine::project::{ImageFacts, LiveFacts};
use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_supply::layout::Layout;
use lattice_supply::{RegistryOptions, Source};

use serde_json::{Value, json};

use crate::output::render;

/// A loaded world, its policies and a snapshot of both.
pub struct Loaded {
    pub world: World,
    pub store: PolicyStore,
    pub projection: Projection,
    pub snapshot: Snapshot,
    /// The rule packs that decide, as every output names them.
    pub packs: PacksInForce,
}

/// The rule packs in force: where they came from, their names and versions, and the digest
/// of every active policy. Every command that decides names them, so an answer can never be
/// mistaken for one taken under other rules (or under none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacksInForce {
    /// `bundled`, or the `--policies` directory.
    pub source: String,
    /// `name@version`, in load order.
    pub names: Vec<String>,
    /// `sha256:…` of the active policies.
    pub digest: String,
}

impl PacksInForce {
    /// The packs of `store`, loaded from `policies` (`None`: the bundled packs).
    pub fn of(store: &PolicyStore, policies: Option<&Path>) -> PacksInForce {
        PacksInForce {
            source: policies.map_or("bundled".to_owned(), |p| p.display().to_string()),
            names: store
                .packs()
                .map(|p| format!("{}@{}", p.meta.name, p.meta.version))
                .collect(),
            digest: format!(
                "sha256:{}",
                store
                    .digest()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
        }
    }

    /// One line for people: `packs (bundled): baseline@0.1.0, … — sha256:…`.
    pub fn line(&self) -> String {
        format!(
            "packs ({}): {} — {}\n",
            self.source,
            self.names.join(", "),
            self.digest
        )
    }

    /// The same for machines.
    pub fn json(&self) -> Value {
        json!({"source": self.source, "names": self.names, "digest": self.digest})
    }
}

/// Loads `world` and the rule packs under `policies` (when the directory exists), plus every
/// CedarPolicy object of the world. On any problem, prints the diagnostics (on stderr) and
/// returns `None`.
pub fn load(world: &[PathBuf], policies: Option<&Path>) -> Option<Loaded> {
    match try_load(world, policies) {
        Ok(l) => Some(l),
        Err(text) => {
            eprint!("{text}");
            None
        }
    }
}

/// Loads as [`load`] does; on any problem, the rendered diagnostics. Nothing is half loaded.
pub fn try_load(world_paths: &[PathBuf], policies: Option<&Path>) -> Result<Loaded, String> {
    let (world, store) = world_and_store(world_paths, policies)?;
    let projection = project(&world, world_paths)?;
    let snapshot =
        Snapshot::build(&world, &projection, &store).map_err(|e| format!("error: {e}\n"))?;
    let packs = PacksInForce::of(&store, policies);
    Ok(Loaded {
        world,
        store,
        projection,
        snapshot,
        packs,
    })
}

/// What a one-shot command decides on, before its snapshot: the world, its policies and
/// what was observed outside the manifests (the images' verifications).
pub struct Inputs {
    pub world: World,
    pub store: PolicyStore,
    pub live: LiveFacts,
}

/// Loads the world and its policies and verifies its images, for one-shot work that never
/// re-projects (`plan`, `mesh`, a compliance scan). Diagnostics on stderr.
pub fn load_inputs(world_paths: &[PathBuf], policies: Option<&Path>) -> Option<Inputs> {
    let mut phases = crate::phases::Phases::start("load");
    let loaded = world_and_store(world_paths, policies).and_then(|(world, store)| {
        phases.done("the world and its policies");
        let live = live_facts(&world, world_paths)?;
        phases.done("the images' verification");
        Ok(Inputs { world, store, live })
    });
    loaded.map_err(|text| eprint!("{text}")).ok()
}

/// The snapshot of `inputs`: the projection is consumed by the snapshot, so the peak holds
/// each entity once, and its entities are read back from the cache of projected worlds when
/// this world was projected before with the same facts ([`crate::entity_cache`]). With
/// `decides`, the only actions the command asks, the snapshot holds only the entities they
/// read. Diagnostics on stderr.
pub fn snapshot_of(inputs: &Inputs, decides: Option<&[&str]>) -> Option<Snapshot> {
    let mut phases = crate::phases::Phases::start("load");
    // Through the cache of projected worlds: an unchanged world with the same facts is not
    // projected again.
    let snapshot =
        crate::entity_cache::snapshot(&inputs.world, &inputs.store, inputs.live.clone(), decides)
            .map(|(snapshot, _)| snapshot)
            .map_err(|e| eprintln!("error: {e}"))
            .ok()?;
    phases.done("the snapshot, entities included");
    Some(snapshot)
}

/// [`load_inputs`] and then [`snapshot_of`]: the world, its policies and their snapshot.
pub fn load_once(
    world_paths: &[PathBuf],
    policies: Option<&Path>,
    decides: Option<&[&str]>,
) -> Option<(World, PolicyStore, Snapshot)> {
    let inputs = load_inputs(world_paths, policies)?;
    let snapshot = snapshot_of(&inputs, decides)?;
    Some((inputs.world, inputs.store, snapshot))
}

/// The world and its policies, or the rendered diagnostics.
fn world_and_store(
    world_paths: &[PathBuf],
    policies: Option<&Path>,
) -> Result<(World, PolicyStore), String> {
    let shown: Vec<String> = world_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // Through the cache of validated worlds: unchanged manifests are not parsed again. The
    // rule packs need no world, so they load alongside it; the world's own problems are
    // reported first, as when they loaded one after the other.
    let mut phases = crate::phases::Phases::start("load");
    let (world, packs) = rayon::join(
        || crate::world_cache::load(world_paths),
        || lattice_engine::load::packs(policies),
    );
    let loaded = world
        .map_err(|e| LoadFailure::World(Box::new(e.report)))
        .and_then(|(world, how)| {
            phases.done(match how {
                crate::world_cache::CacheUse::Hit => "the world (cached), and the packs",
                _ => "the world (from its files), and the packs",
            });
            let store = lattice_engine::load::with_world_policies(packs?, &world)?;
            Ok((world, store))
        });
    let (world, store) = match loaded {
        Ok(l) => l,
        Err(LoadFailure::World(report)) => {
            let mut out = String::new();
            for f in &report.findings {
                out.push_str(&render(f));
            }
            for u in &report.unreadable {
                out.push_str(&format!("error: cannot read {u}\n"));
            }
            out.push_str(&format!(
                "error: the world at {} did not load\n",
                shown.join(", ")
            ));
            return Err(out);
        }
        Err(LoadFailure::Packs(report)) => {
            let mut out = String::new();
            for f in &report.findings {
                out.push_str(&render(f));
            }
            for u in &report.unreadable {
                out.push_str(&format!("error: cannot read {u}\n"));
            }
            out.push_str(&format!(
                "error: the rule packs at {} did not load\n",
                policies.map_or("the bundled packs".to_owned(), |p| p.display().to_string())
            ));
            return Err(out);
        }
        Err(LoadFailure::Policy(e)) => return Err(format!("error: {e}\n")),
        Err(LoadFailure::NoPacks(why)) => return Err(format!("error: {why}\n")),
    };
    Ok((world, store))
}

/// How the images of a world are verified: the global `--offline`, `--images`,
/// `--registry-ca` and `--plain-http` flags.
#[derive(Clone, Debug, Default)]
pub struct ImageOptions {
    /// Verify nothing: every image under a TrustPolicy registry reads as unsigned.
    pub offline: bool,
    /// An OCI image layout to verify against instead of the registries.
    pub layout: Option<PathBuf>,
    /// CA certificates (PEM files) trusted for registries besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// A Docker `config.json` holding registry logins.
    pub auth_file: Option<PathBuf>,
}

static IMAGE_OPTIONS: OnceLock<ImageOptions> = OnceLock::new();

/// Sets how images are verified, once, before anything is loaded.
pub fn set_image_options(options: ImageOptions) {
    let _ = IMAGE_OPTIONS.set(options);
}

/// Projects `world` with its images verified as [`ImageOptions`] say: against `--images`,
/// else the layout the world carries (`images/`), else the registries; nothing with
/// `--offline`. Only images under a TrustPolicy registry are verified. A layout or CA
/// that cannot be read is an error (nothing is decided on a half-read trust source).
pub fn project(world: &World, world_paths: &[PathBuf]) -> Result<Projection, String> {
    Ok(Projection::with_live(
        world,
        live_facts(world, world_paths)?,
    ))
}

/// What the command line observes outside the manifests: the images' verifications, as
/// [`project`] takes them.
fn live_facts(world: &World, world_paths: &[PathBuf]) -> Result<LiveFacts, String> {
    Ok(LiveFacts {
        images: image_facts(world, world_paths)?,
        ..LiveFacts::default()
    })
}

fn image_facts(world: &World, world_paths: &[PathBuf]) -> Result<ImageFacts, String> {
    let options = IMAGE_OPTIONS.get().cloned().unwrap_or_default();
    if options.offline {
        return Ok(ImageFacts::default());
    }
    let source = match options
        .layout
        .or_else(|| lattice_supply::layout::beside(world_paths))
    {
        Some(dir) => Source::Layout(
            Layout::open(&dir)
                .map_err(|e| format!("error: the OCI image layout cannot be read: {e}\n"))?,
        ),
        None => {
            let mut ca_pem = Vec::new();
            for f in &options.ca_files {
                ca_pem.push(std::fs::read(f).map_err(|e| {
                    format!("error: cannot read the registry CA {}: {e}\n", f.display())
                })?);
            }
            let credentials = match &options.auth_file {
                None => Default::default(),
                Some(f) => {
                    lattice_supply::docker_config::read(f).map_err(|e| format!("error: {e}\n"))?
                }
            };
            Source::registries(&RegistryOptions {
                ca_pem,
                plain_http: options.plain_http.clone(),
                credentials,
                ..RegistryOptions::default()
            })
        }
    };
    Ok(lattice_supply::facts_of(world, source))
}
