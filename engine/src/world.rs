//! The World: every typed object of one deployment, keyed by kind, namespace and name.
//!
//! Loaded whole from manifests (for the CLI, the REPL and tests) or kept up to date object by
//! object (for the controllers). Every object carries a content digest so snapshots can say
//! exactly which facts they were taken on.

use std::path::PathBuf;
use std::sync::Arc;

use lattice_schemas::manifest::Object;
use lattice_schemas::validate::{Report, validate_paths};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Identifies an object in the World.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The kind as written in manifests (`LatticeService`, `Namespace`, …).
    pub kind: &'static str,
    /// Set for namespaced kinds.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of an object.
    pub fn of(object: &Object) -> ObjectKey {
        ObjectKey {
            kind: object.kind_name(),
            namespace: object.namespace().map(str::to_owned),
            name: object.name().to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// The offset of the first line at or after `start` that holds content: a document's start
/// may be its `---` marker, a directive or a comment above it, and a report should point at
/// the object itself.
fn first_content(text: &str, start: usize) -> usize {
    let mut at = start.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    // From the start of the line `start` is on.
    at = text[..at].rfind('\n').map_or(0, |i| i + 1);
    for line in text[at..].split_inclusive('\n') {
        let trimmed = line.trim();
        let marker = matches!(trimmed, "---" | "...") || trimmed.starts_with('%');
        if !(trimmed.is_empty() || trimmed.starts_with('#') || marker) {
            return at;
        }
        at += line.len();
    }
    start.min(text.len())
}

/// A content digest (SHA-256).
pub type ContentDigest = [u8; 32];

/// The typed objects of one deployment. Objects are shared (`Arc`), so a copy of a World
/// costs its keys, not its objects: the operator copies its World for every plan.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Persistent: a copy shares every node that did not change since.
    objects: imbl::OrdMap<ObjectKey, Entry>,
    /// Where each object loaded from a file was written (`path:line`), so reports can point
    /// at it. Not part of any digest: moving a manifest changes no fact.
    locations: imbl::OrdMap<ObjectKey, Arc<str>>,
}

/// One object with its content digest, and the digest of its key and content together
/// (what the World's digest is made of, computed once per object rather than per digest).
#[derive(Clone, Debug)]
struct Entry {
    object: Arc<Object>,
    content: ContentDigest,
    keyed: ContentDigest,
}

impl Entry {
    fn new(key: &ObjectKey, object: Object, content: ContentDigest) -> Entry {
        let mut h = Sha256::new();
        h.update(key.kind.as_bytes());
        h.update([0]);
        h.update(key.namespace.as_deref().unwrap_or_default().as_bytes());
        h.update([0]);
        h.update(key.name.as_bytes());
        h.update([0]);
        h.update(content);
        Entry {
            object: Arc::new(object),
            content,
            keyed: h.finalize().into(),
        }
    }
}

/// Why a World could not be loaded: the validation report with every finding.
#[derive(Debug)]
pub struct LoadError {
    pub report: Report,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the world has {} error(s)", self.report.errors())?;
        for finding in self.report.findings.iter().take(5) {
            let (line, col) = finding.line_col();
            write!(
                f,
                "\n  {}:{line}:{col}: {}",
                finding.file.name, finding.message
            )?;
        }
        for u in &self.report.unreadable {
            write!(f, "\n  cannot read {u}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl World {
    /// An empty world.
    pub fn new() -> World {
        World::default()
    }

    /// Loads every manifest under `paths`. Any error (or unreadable path) rejects the whole
    /// load: a world is never built from half-valid input.
    pub fn load(paths: &[PathBuf]) -> Result<World, LoadError> {
        let report = validate_paths(paths);
        if report.errors() > 0 || !report.unreadable.is_empty() {
            return Err(LoadError { report });
        }
        // Each manifest's YAML tree is freed on the worker that takes its object out.
        let (objects, locations): (Vec<Object>, Vec<(ObjectKey, Arc<str>)>) = report
            .manifests
            .into_par_iter()
            .map(|m| {
                let (line, _) = m.file.line_col(first_content(&m.file.text, m.doc.start));
                let at: Arc<str> = format!("{}:{line}", m.file.name).into();
                let key = ObjectKey::of(&m.object);
                (m.object, (key, at))
            })
            .unzip();
        let mut world = World::from_objects(objects);
        world.locations = locations.into_iter().collect();
        Ok(world)
    }

    /// A world of `objects`; a later object replaces an earlier one with the same key.
    /// Digests are computed on every core: at 10,000 objects they are a real part of a load.
    pub fn from_objects(objects: Vec<Object>) -> World {
        let digested: Vec<(Object, ContentDigest)> = objects
            .into_par_iter()
            .map(|o| {
                let d = object_digest(&o);
                (o, d)
            })
            .collect();
        let mut world = World::new();
        for (object, digest) in digested {
            world.objects.insert(
                ObjectKey::of(&object),
                Entry::new(&ObjectKey::of(&object), object, digest),
            );
        }
        world
    }

    /// A world of objects with where each was written (`path:line`), as [`World::load`]
    /// makes it: what a cache of loaded worlds restores.
    pub fn from_located(objects: Vec<(Object, Arc<str>)>) -> World {
        let (objects, at): (Vec<Object>, Vec<Arc<str>>) = objects.into_iter().unzip();
        let keys: Vec<ObjectKey> = objects.iter().map(ObjectKey::of).collect();
        let mut world = World::from_objects(objects);
        world.locations = keys.into_iter().zip(at).collect();
        world
    }

    /// [`World::from_located`] for objects whose content digests are known: each is the
    /// SHA-256 of the object's [`Object::to_api_json`], as a cache that stored those bytes
    /// has them. The caller vouches for the digests; a wrong one makes another world digest.
    pub fn from_located_digested(objects: Vec<(Object, Arc<str>, ContentDigest)>) -> World {
        let mut world = World::new();
        let mut locations = Vec::with_capacity(objects.len());
        for (object, at, digest) in objects {
            let key = ObjectKey::of(&object);
            locations.push((key.clone(), at));
            world
                .objects
                .insert(key.clone(), Entry::new(&key, object, digest));
        }
        world.locations = locations.into_iter().collect();
        world
    }

    /// Inserts or replaces an object; returns the one it replaced.
    pub fn upsert(&mut self, object: Object) -> Option<Arc<Object>> {
        let digest = object_digest(&object);
        let key = ObjectKey::of(&object);
        let entry = Entry::new(&key, object, digest);
        self.objects.insert(key, entry).map(|e| e.object)
    }

    /// Removes an object; returns it.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Arc<Object>> {
        self.locations.remove(key);
        self.objects.remove(key).map(|e| e.object)
    }

    /// Where the object was written (`path:line`), when it was loaded from a file.
    pub fn location(&self, key: &ObjectKey) -> Option<&str> {
        self.locations.get(key).map(|l| &**l)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).map(|e| e.object.as_ref())
    }

    /// The workload `namespace/name` (of any workload kind), found by key.
    pub fn workload(&self, id: &str) -> Option<&Object> {
        let (ns, name) = id.split_once('/')?;
        // One key, its kind changed per try: the mesh looks up both ends of every edge.
        let mut key = ObjectKey {
            kind: "",
            namespace: Some(ns.to_owned()),
            name: name.to_owned(),
        };
        lattice_schemas::crd::Kind::ALL
            .into_iter()
            .filter(|k| k.is_workload())
            .find_map(|kind| {
                key.kind = kind.name();
                self.get(&key)
            })
    }

    /// The objects of one kind, in key order, found without reading the others.
    pub fn of_kind(&self, kind: &'static str) -> impl Iterator<Item = (&ObjectKey, &Object)> {
        let from = ObjectKey {
            kind,
            namespace: None,
            name: String::new(),
        };
        self.objects
            .range(from..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(k, e)| (k, e.object.as_ref()))
    }

    /// Every object, in key order.
    pub fn objects(&self) -> impl Iterator<Item = (&ObjectKey, &Object)> {
        self.objects.iter().map(|(k, e)| (k, e.object.as_ref()))
    }

    /// The digest of one object, if present.
    pub fn object_digest(&self, key: &ObjectKey) -> Option<&ContentDigest> {
        self.objects.get(key).map(|e| &e.content)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// A digest of every object's key and content.
    pub fn digest(&self) -> ContentDigest {
        let mut h = Sha256::new();
        for e in self.objects.values() {
            h.update(e.keyed);
        }
        h.finalize().into()
    }
}

fn object_digest(object: &Object) -> ContentDigest {
    Sha256::digest(object.to_api_json()).into()
}
