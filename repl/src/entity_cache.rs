//! A content-addressed cache of projected worlds: a second run on an unchanged world with
//! the same observed facts reads its Cedar entities back instead of projecting the world,
//! checking every entity against the schema and closing the hierarchy.
//!
//! The key is a SHA-256 of this executable's identity (the projection and the schema are
//! compiled into it), of the world's content digest (every object's kind, name and API
//! JSON) and of every live fact the projection reads (each image's verification and what
//! it was verified against). Images are verified afresh on every run, before the key is
//! taken, so a signature revoked at its registry is another key. Nothing is invalidated by
//! time: the projection reads no clock.
//!
//! The entry holds the entities as [`lattice_engine::entity_codec`] writes them, behind a
//! header naming the key and the SHA-256 of the body; an entry that does not verify or
//! does not decode is a miss (it is removed), never an error. A world that declares
//! wildcard peers is not cached: what it projects depends on AllowWildcard's decisions.
//!
//! A command that decides only some actions passes them: its snapshot then holds only the
//! entities those actions can read ([`EntitySlice`]), read back without the rest (the
//! entry always holds every entity), and refuses any other action.
//!
//! What is kept here is the projection only. Rule packs and CedarPolicy objects are loaded,
//! and every decision (approvals among them) is taken, afresh on each run, on the snapshot
//! these entities make; a command's whole answer is kept apart, under a key that names the
//! rule packs too ([`crate::output_cache`]).
//!
//! Where: the cache's `entities/` ([`crate::cache`]).

use std::path::Path;

use lattice_engine::project::{LiveFacts, declares_wildcards};
use lattice_engine::snapshot::SnapshotError;
use lattice_engine::{EntitySlice, PolicyStore, Projection, Snapshot, World, entity_codec};
use sha2::{Digest, Sha256};

use crate::cache::{hex, private, sha256};
use crate::world_cache::CacheUse;

/// The entry format; bump it when the header changes (the body has its own version).
const FORMAT: u64 = 1;
const MAGIC: &[u8] = b"lattice-entity-cache\n";

/// The snapshot of `world` under `store`, with `live` observed: as
/// [`Snapshot::build_consuming`] builds it, its entities read from the cache when this
/// world was projected before with the same facts. With `decides` (the only actions the
/// command will ask), a snapshot of the slice of entities they read.
pub fn snapshot(
    world: &World,
    store: &PolicyStore,
    live: LiveFacts,
    decides: Option<&[&str]>,
) -> Result<(Snapshot, CacheUse), SnapshotError> {
    snapshot_in(
        crate::cache::dir("entities").as_deref(),
        world,
        store,
        live,
        decides,
    )
}

/// [`snapshot`] with the cache at `dir` (`None`: no cache, and every entity).
pub fn snapshot_in(
    dir: Option<&Path>,
    world: &World,
    store: &PolicyStore,
    live: LiveFacts,
    decides: Option<&[&str]>,
) -> Result<(Snapshot, CacheUse), SnapshotError> {
    let wildcards = declares_wildcards(world);
    let schema = lattice_schemas::cedar::schema();
    // A world with wildcards is projected twice (see `Snapshot::build_consuming`), on
    // every entity.
    let slice = decides
        .filter(|_| !wildcards)
        .and_then(|actions| EntitySlice::for_actions(schema, store, actions));
    let assemble = |entities, slice: Option<EntitySlice>| match slice {
        Some(slice) => Snapshot::from_slice(world, entities, store, &live, slice),
        None => Snapshot::from_entities(world, entities, store, &live),
    };
    let Some(dir) = dir.filter(|d| private(d) && !wildcards) else {
        let projection = Projection::with_live(world, live.clone());
        return match slice {
            // Nothing is stored, so only the slice is checked and kept.
            Some(slice) => projection
                .into_entities_for(world, schema, Some(&slice))
                .map_err(|e| SnapshotError::Entities(e.to_string()))
                .and_then(|entities| assemble(entities, Some(slice))),
            None => Snapshot::build_consuming(world, projection, store),
        }
        .map(|s| (s, CacheUse::Bypassed));
    };
    let mut phases = crate::phases::Phases::start("load");
    let key = key(world, &live);
    let entry = format!("{key}.bin");
    let cached = crate::cache::read(dir, &entry, |bytes| {
        let body = body(bytes, &key)?;
        entity_codec::decode_slice(body, schema, slice.as_ref()).ok()
    });
    if let Some(entities) = cached {
        phases.done("the entities (cached)");
        return assemble(entities, slice).map(|s| (s, CacheUse::Hit));
    }
    let projected = Projection::with_live(world, live.clone())
        .into_entities(world, schema)
        .map_err(|e| SnapshotError::Entities(e.to_string()))?;
    phases.done("the projection and its entities");
    let stored = entity_codec::encode(&projected).is_some_and(|body| {
        let digest = sha256(&body);
        crate::cache::store(dir, &entry, &[MAGIC, key.as_bytes(), b"\n", &digest, &body])
    });
    phases.done("the entities stored");
    let how = if stored {
        CacheUse::Stored
    } else {
        CacheUse::Bypassed
    };
    // Every entity, but the same refusals as on a hit.
    assemble(projected, slice).map(|s| (s, how))
}

/// The key of `world` projected with `live`, by this executable.
fn key(world: &World, live: &LiveFacts) -> String {
    let mut h = Sha256::new();
    h.update(format!("lattice-entity-cache {FORMAT}\n"));
    crate::cache::hash_executable(&mut h);
    h.update(world.digest());
    live.hash_into(&mut h);
    hex(&h.finalize())
}

/// The body of an entry, when the entry is `key`'s and the body is the one it was written
/// with.
fn body<'a>(bytes: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let rest = rest.strip_prefix(key.as_bytes())?;
    let rest = rest.strip_prefix(b"\n")?;
    let (digest, body) = rest.split_at_checked(32)?;
    (sha256(body) == digest).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn world_at(dir: &Path) -> World {
        World::load(&[dir.to_path_buf()]).expect("the world loads")
    }

    fn example_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/world")
    }

    fn store_of(world: &World) -> PolicyStore {
        lattice_engine::load::policies_for(world, None).expect("the bundled packs load")
    }

    /// Every entity and every decision input of two snapshots is the same.
    fn assert_same(a: &Snapshot, b: &Snapshot) {
        assert_eq!(a.digest(), b.digest(), "the same snapshot digest");
        assert!(a.entities().deep_eq(b.entities()), "the same entities");
    }

    #[test]
    fn a_cached_projection_makes_the_snapshot_the_files_make() {
        let cache = tempfile::tempdir().unwrap();
        let world = world_at(&example_dir());
        let store = store_of(&world);
        let live = LiveFacts::default();
        let fresh = Snapshot::build(&world, &Projection::of(&world), &store).unwrap();
        let (stored, how) =
            snapshot_in(Some(cache.path()), &world, &store, live.clone(), None).unwrap();
        assert_eq!(how, CacheUse::Stored);
        let (cached, how) = snapshot_in(Some(cache.path()), &world, &store, live, None).unwrap();
        assert_eq!(how, CacheUse::Hit);
        assert_same(&fresh, &stored);
        assert_same(&fresh, &cached);
        // The same decisions: every mesh edge of the example world, allowed or denied alike.
        let plan = |s: &Snapshot| {
            lattice_gates::MeshPlan::plan(s, &world)
                .edges()
                .map(|e| (e.caller.clone(), e.callee.clone(), e.allowed()))
                .collect::<Vec<_>>()
        };
        let edges = plan(&fresh);
        assert!(edges.iter().any(|e| e.2) && edges.iter().any(|e| !e.2));
        assert_eq!(edges, plan(&cached));
    }

    /// A command that decides only the mesh's actions gets their slice of the entities,
    /// stored or read back, and takes every one of those decisions as on every entity; any
    /// other action is refused, not decided on what the slice left out.
    #[test]
    fn a_slice_decides_its_actions_as_every_entity_does_and_refuses_others() {
        // The example world, and the same without its namespace's opt-out (an approved
        // opt-out projects the world again, on every entity, when the snapshot is made).
        let without_opt_out = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(example_dir()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&f).unwrap();
                let text = text.replace(
                    "lattice.dev/default-deny: \"false\"",
                    "lattice.dev/default-deny: \"true\"",
                );
                std::fs::write(without_opt_out.path().join(f.file_name().unwrap()), text).unwrap();
            }
        }
        for (dir, sliced) in [
            (example_dir(), false),
            (without_opt_out.path().to_path_buf(), true),
        ] {
            let cache = tempfile::tempdir().unwrap();
            let world = world_at(&dir);
            let store = store_of(&world);
            let live = LiveFacts::default();
            let fresh = Snapshot::build(&world, &Projection::of(&world), &store).unwrap();
            let decides = Some(crate::mesh::DECIDES);
            let (stored, how) =
                snapshot_in(Some(cache.path()), &world, &store, live.clone(), decides).unwrap();
            assert_eq!(how, CacheUse::Stored);
            let (cached, how) =
                snapshot_in(Some(cache.path()), &world, &store, live, decides).unwrap();
            assert_eq!(how, CacheUse::Hit);
            assert_eq!(cached.digest(), fresh.digest());
            // Without a cache only the slice is checked and kept.
            let (bypassed, how) =
                snapshot_in(None, &world, &store, LiveFacts::default(), decides).unwrap();
            assert_eq!(how, CacheUse::Bypassed);
            let all = fresh.entities().iter().count();
            for s in [&cached, &bypassed] {
                let held = s.entities().iter().count();
                assert_eq!(held < all, sliced, "{held} of {all} entities in {dir:?}");
            }

            // The mesh document (every edge's verdict and reasons, the egress outside the
            // mesh, the baselines) is the same on the slice as on every entity.
            let doc = |s: &Snapshot| {
                let plan = lattice_gates::MeshPlan::plan(s, &world);
                crate::mesh::describe(&plan, s, &world, None, None).1
            };
            let whole = doc(&fresh);
            assert!(
                whole["edges"].as_array().is_some_and(|e| e.len() > 3)
                    && whole["egress"].as_array().is_some_and(|e| !e.is_empty()),
                "the example world has edges and egress to compare"
            );
            assert_eq!(doc(&stored), whole);
            assert_eq!(doc(&cached), whole);
            assert_eq!(doc(&bypassed), whole);

            // Another action is refused, and says why.
            let service = fresh
                .entities()
                .iter()
                .map(|e| e.uid())
                .find(|u| u.type_name().to_string() == "Lattice::Service")
                .expect("a service");
            let deploy = lattice_engine::Query::new(
                service.clone(),
                lattice_engine::action("DeployImage"),
                service,
            );
            for s in [&stored, &cached, &bypassed] {
                let err = s.decide(&deploy).unwrap_err().to_string();
                assert!(err.contains("not decided here"), "{err}");
            }
        }
    }

    #[test]
    fn another_world_or_other_facts_are_another_key_and_a_damaged_entry_is_dropped() {
        let cache = tempfile::tempdir().unwrap();
        let world = world_at(&example_dir());
        let store = store_of(&world);
        let live = LiveFacts::default();
        snapshot_in(Some(cache.path()), &world, &store, live.clone(), None).unwrap();

        // An image verified differently is another key, and its facts are what project.
        let image = lattice_engine::project::image_references(&world)
            .into_iter()
            .next()
            .expect("the example world runs images");
        let signed: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
            serde_json::json!({ image.clone(): {"digest": "sha256:00", "signers": ["ci"], "error": ""} }),
        )
        .unwrap();
        let other = LiveFacts {
            images: lattice_engine::project::ImageFacts::stated(&signed, "the test").unwrap(),
            ..LiveFacts::default()
        };
        let (s, how) =
            snapshot_in(Some(cache.path()), &world, &store, other.clone(), None).unwrap();
        assert_eq!(how, CacheUse::Stored, "not the unverified world's entry");
        let fresh = Snapshot::build(&world, &Projection::with_live(&world, other), &store).unwrap();
        assert_same(&fresh, &s);

        // One object changed: another world digest, another key.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
        )
        .unwrap();
        let small = world_at(dir.path());
        let small_store = store_of(&small);
        let (_, how) =
            snapshot_in(Some(cache.path()), &small, &small_store, live.clone(), None).unwrap();
        assert_eq!(how, CacheUse::Stored);
        std::fs::write(
            dir.path().join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: web\n",
        )
        .unwrap();
        let changed = world_at(dir.path());
        let (s, how) = snapshot_in(
            Some(cache.path()),
            &changed,
            &small_store,
            live.clone(),
            None,
        )
        .unwrap();
        assert_eq!(how, CacheUse::Stored, "a changed object is a miss");
        let fresh = Snapshot::build(&changed, &Projection::of(&changed), &small_store).unwrap();
        assert_same(&fresh, &s);

        // A damaged body fails its digest: a miss, the entry is replaced, and the snapshot
        // is the files' own.
        let entry = cache.path().join(format!("{}.bin", key(&world, &live)));
        let mut bytes = std::fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&entry, bytes).unwrap();
        let (s, how) = snapshot_in(Some(cache.path()), &world, &store, live.clone(), None).unwrap();
        assert_eq!(how, CacheUse::Stored, "the damaged entry was not used");
        let fresh = Snapshot::build(&world, &Projection::of(&world), &store).unwrap();
        assert_same(&fresh, &s);
        assert_eq!(
            snapshot_in(Some(cache.path()), &world, &store, live, None)
                .unwrap()
                .1,
            CacheUse::Hit
        );
    }

    #[test]
    fn a_world_declaring_wildcards_is_never_cached() {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("svc.yaml"),
            "apiVersion: lattice.dev/v1alpha1\nkind: LatticeMeshMember\nmetadata:\n  name: edge\n  namespace: shop\nspec:\n  target:\n    selector:\n      app: edge\n  ports:\n    http:\n      port: 8080\n  dependencies: [\"*\"]\n",
        )
        .unwrap();
        let world = World::load(&[dir.path().to_path_buf()])
            .unwrap_or_else(|e| panic!("the mesh member loads: {:?}", e.report.findings));
        assert!(declares_wildcards(&world));
        let store = store_of(&world);
        let (_, how) = snapshot_in(
            Some(cache.path()),
            &world,
            &store,
            LiveFacts::default(),
            None,
        )
        .unwrap();
        assert_eq!(how, CacheUse::Bypassed);
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }
}
