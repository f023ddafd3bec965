//! A content-addressed cache of loaded worlds: a second run on unchanged manifests skips
//! YAML parsing and strict schema validation, which are most of a cold load.
//!
//! The key is a SHA-256 of this executable's identity (its version, path, size and
//! modification time: a rebuilt binary may validate differently) and of every input file's
//! name and content digest, in the order the loader reads them. Any change to any file, or
//! a file added or removed, is another key; nothing is invalidated by time. Only a world
//! that loaded without errors is stored, and only when its files did not change while it
//! loaded. The entry holds each object as its API-server JSON (what
//! [`Object::from_api_slice`] reads) and where it was written (`path:line`); its body
//! carries its own digest, and an entry that does not verify or does not type is a miss
//! (it is removed), never an error.
//!
//! What this cache holds is the validated world. Its projected entities are kept apart
//! ([`crate::entity_cache`]), and so are the answers of `plan` and `mesh`
//! ([`crate::output_cache`]), under keys that name the rule packs as well. Nothing here is
//! decided: rule packs, CedarPolicy objects and image verification are taken afresh on each
//! run.
//!
//! Where: the cache's `worlds/` ([`crate::cache`]); standard input (`-`) is never cached.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lattice_engine::World;
use lattice_engine::world::LoadError;
use lattice_schemas::manifest::Object;
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::{hex, private};

/// The entry format; bump it when the layout changes.
const FORMAT: u64 = 2;

/// How a load went (the tests read it; the commands do not report it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Read from the cache.
    Hit,
    /// Loaded from the files and stored.
    Stored,
    /// Loaded from the files; not stored (off, standard input, or the load failed).
    Bypassed,
}

/// The cache directory, unless the cache is off.
pub fn dir() -> Option<PathBuf> {
    crate::cache::dir("worlds")
}

/// Loads the world at `paths` as [`World::load`] does, through the cache at [`dir`].
pub fn load(paths: &[PathBuf]) -> Result<(World, CacheUse), LoadError> {
    match dir() {
        Some(dir) => load_in(&dir, paths),
        None => World::load(paths).map(|w| (w, CacheUse::Bypassed)),
    }
}

/// [`load`] with the cache at `dir`.
pub fn load_in(dir: &Path, paths: &[PathBuf]) -> Result<(World, CacheUse), LoadError> {
    // Whoever can write the cache decides what loads: a directory others may write to is
    // not used at all.
    let Some(key) = private(dir).then(|| key(paths)).flatten() else {
        return World::load(paths).map(|w| (w, CacheUse::Bypassed));
    };
    let entry = format!("{key}.json");
    if let Some(world) = crate::cache::read(dir, &entry, |bytes| parse(bytes, &key)) {
        return Ok((world, CacheUse::Hit));
    }
    let world = World::load(paths)?;
    // A file edited while it loaded may have been read half before, half after: store
    // only what the key still names.
    if self::key(paths).as_deref() == Some(key.as_str()) && write(dir, &entry, &key, &world) {
        return Ok((world, CacheUse::Stored));
    }
    Ok((world, CacheUse::Bypassed))
}

/// The key of `paths`: `None` when an input cannot be cached (standard input, a path that
/// cannot be read, which the loader reports).
fn key(paths: &[PathBuf]) -> Option<String> {
    if paths.iter().any(|p| p == Path::new("-")) {
        return None;
    }
    let (files, unreadable) = lattice_schemas::validate::input_files(paths);
    if !unreadable.is_empty() {
        return None;
    }
    let digests: Vec<Option<[u8; 32]>> = files
        .par_iter()
        .map(|f| std::fs::read(f).ok().map(|b| Sha256::digest(&b).into()))
        .collect();
    let mut h = Sha256::new();
    h.update(format!("lattice-world-cache {FORMAT}\n"));
    crate::cache::hash_executable(&mut h);
    for (file, digest) in files.iter().zip(digests) {
        let name = file.display().to_string();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(digest?);
    }
    Some(hex(&h.finalize()))
}

/// An entry: a header line (`{"format":…,"key":…,"body":"sha256 of the rest"}`), then one
/// line per object: its kind, where it was written (a JSON string) and the object's API
/// JSON ([`Object::to_api_json`]), separated by tabs (which JSON text escapes). Objects are
/// typed from their text directly, and each one's content digest is the SHA-256 of that
/// text, as the world takes it of the same bytes.
fn parse(bytes: &[u8], key: &str) -> Option<World> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header: Value = serde_json::from_slice(&bytes[..newline]).ok()?;
    let body = &bytes[newline + 1..];
    if header["format"] != FORMAT
        || header["key"] != key
        || header["body"] != hex(&Sha256::digest(body)).as_str()
    {
        return None;
    }
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let objects: Option<Vec<_>> = lines
        .par_iter()
        .map(|line| {
            let mut fields = line.splitn(3, |&b| b == b'\t');
            let kind = std::str::from_utf8(fields.next()?).ok()?;
            let at: String = serde_json::from_slice(fields.next()?).ok()?;
            let json = fields.next()?;
            let object = Object::from_api_slice(kind, json).ok()?;
            Some((object, Arc::<str>::from(at), Sha256::digest(json).into()))
        })
        .collect();
    Some(World::from_located_digested(objects?))
}

/// Stores `world` under `key` as the entry `entry` ([`crate::cache::store`]).
fn write(dir: &Path, entry: &str, key: &str, world: &World) -> bool {
    let lines: Vec<Vec<u8>> = world
        .objects()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|(k, o)| {
            let mut line = Vec::new();
            line.extend_from_slice(o.kind_name().as_bytes());
            line.push(b'\t');
            let at = world.location(k).unwrap_or("");
            line.extend_from_slice(&serde_json::to_vec(at).unwrap_or_default());
            line.push(b'\t');
            line.extend_from_slice(&o.to_api_json());
            line.push(b'\n');
            line
        })
        .collect();
    let body: Vec<u8> = lines.concat();
    let header =
        serde_json::json!({"format": FORMAT, "key": key, "body": hex(&Sha256::digest(&body))});
    let Ok(header) = serde_json::to_string(&header) else {
        return false;
    };
    crate::cache::store(dir, entry, &[header.as_bytes(), b"\n", &body])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_world() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/world")
    }

    #[test]
    fn a_cached_world_is_the_world_the_files_load() {
        let cache = tempfile::tempdir().unwrap();
        let paths = vec![example_world()];
        let from_files = World::load(&paths).unwrap();
        let (stored, how) = load_in(cache.path(), &paths).unwrap();
        assert_eq!(how, CacheUse::Stored);
        let (cached, how) = load_in(cache.path(), &paths).unwrap();
        assert_eq!(how, CacheUse::Hit);
        for w in [&stored, &cached] {
            assert_eq!(w.digest(), from_files.digest(), "the same objects");
            assert_eq!(w.len(), from_files.len());
            for (k, _) in from_files.objects() {
                assert_eq!(w.location(k), from_files.location(k), "{k:?} is located");
            }
        }
    }

    #[test]
    fn any_change_to_a_file_is_a_miss_and_a_damaged_entry_is_dropped() {
        let cache = tempfile::tempdir().unwrap();
        let world = tempfile::tempdir().unwrap();
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
        std::fs::write(world.path().join("ns.yaml"), ns).unwrap();
        let paths = vec![world.path().to_path_buf()];
        assert_eq!(load_in(cache.path(), &paths).unwrap().1, CacheUse::Stored);
        assert_eq!(load_in(cache.path(), &paths).unwrap().1, CacheUse::Hit);

        // Another label: another key, and the new content is what loads.
        std::fs::write(
            world.path().join("ns.yaml"),
            format!("{ns}  labels:\n    team: web\n"),
        )
        .unwrap();
        let (w, how) = load_in(cache.path(), &paths).unwrap();
        assert_eq!(how, CacheUse::Stored);
        let Some((_, Object::Namespace(n))) = w.objects().next() else {
            panic!("a namespace");
        };
        assert_eq!(n.metadata.labels.as_ref().unwrap()["team"], "web");

        // A file added is another key too.
        std::fs::write(
            world.path().join("more.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pay\n",
        )
        .unwrap();
        let (w, how) = load_in(cache.path(), &paths).unwrap();
        assert_eq!((how, w.len()), (CacheUse::Stored, 2));

        // Tampering with an entry's objects breaks its body digest: a miss, then restored.
        let key = key(&paths).unwrap();
        let entry = cache.path().join(format!("{key}.json"));
        let text = std::fs::read_to_string(&entry).unwrap();
        std::fs::write(&entry, text.replace("\"pay\"", "\"bad\"")).unwrap();
        let (w, how) = load_in(cache.path(), &paths).unwrap();
        assert_eq!(how, CacheUse::Stored, "the damaged entry was not used");
        assert!(w.objects().any(|(_, o)| o.name() == "pay"));
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_others_may_write_to_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let cache = tempfile::tempdir().unwrap();
        let shared = cache.path().join("worlds");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let paths = vec![example_world()];
        assert_eq!(load_in(&shared, &paths).unwrap().1, CacheUse::Bypassed);
        assert_eq!(
            std::fs::read_dir(&shared).unwrap().count(),
            0,
            "nothing stored"
        );
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(load_in(&shared, &paths).unwrap().1, CacheUse::Stored);
    }

    #[test]
    fn a_world_with_errors_is_never_stored() {
        let cache = tempfile::tempdir().unwrap();
        let world = tempfile::tempdir().unwrap();
        std::fs::write(
            world.path().join("bad.yaml"),
            "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: x\nspec:\n  nonsense: 1\n",
        )
        .unwrap();
        let paths = vec![world.path().to_path_buf()];
        assert!(load_in(cache.path(), &paths).is_err());
        assert!(load_in(cache.path(), &paths).is_err(), "still refused");
        assert_eq!(
            std::fs::read_dir(cache.path()).unwrap().count(),
            0,
            "nothing stored"
        );
    }
}
