//! A content-addressed cache of what `plan` and `mesh` print: a second run on the same
//! inputs prints the same bytes, with the same exit status, without deciding again.
//!
//! What these commands print is a function of what the key names, and of nothing else:
//! every decision is a Cedar evaluation, which is deterministic, over a snapshot made from
//! the world, its rule packs and the facts observed outside the manifests, and what is
//! derived and scanned is made from the same. Neither reads a clock (`now` is only in the
//! contexts of proxy access and cluster lifecycle, which they never ask) or the environment
//! beyond what the key names. The key is a SHA-256 of:
//! - this executable's identity (the compiler, the engine, the bundled rule packs and the
//!   schemas are compiled into it: a rebuilt binary is another key);
//! - the command and every option that changes what it prints, whether the output is
//!   colored among them;
//! - the world: the paths as given, every object's content digest and where it was written;
//! - every fact observed outside the manifests: images are verified afresh on each run,
//!   before the key is taken, so a signature revoked at its registry is another key;
//! - the rule packs: with `--policies DIR`, the name and content of every file under it
//!   that the loader reads (`*.yaml`, `*.yml`, `*.cedar`, through links): packs carry
//!   compliance mappings and metadata besides their policies.
//!
//! Any change to any of these is another key; nothing expires by time. Only a run that
//! printed its whole answer is stored, with its exit status; an entry carries the SHA-256
//! of its body, and one that does not verify is a miss (it is removed), never trusted.
//! Standard input is never cached. `LATTICE_NO_CACHE=outputs` turns this cache alone off,
//! so that every decision is taken afresh on a world still read back (as an auditor
//! re-deriving a plan may want; the answer is the same bytes either way, which the tests
//! check), and `LATTICE_NO_CACHE=1` turns it off with the others.
//!
//! Where: the cache's `outputs/` ([`crate::cache`]).

use std::path::{Path, PathBuf};

use lattice_engine::World;
use lattice_engine::project::LiveFacts;
use sha2::{Digest, Sha256};

use crate::cache::{hex, private, sha256};

/// The entry format; bump it when the header changes.
const FORMAT: u64 = 1;
const MAGIC: &[u8] = b"lattice-output-cache\n";

/// What one run printed on stdout, and the status it exited with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Printed {
    pub stdout: Vec<u8>,
    pub code: u8,
}

impl Printed {
    /// Writes the output to stdout and gives the exit status.
    pub fn emit(&self) -> u8 {
        crate::output::emit_bytes(&self.stdout);
        self.code
    }
}

/// Where a command's answer is kept: the entry a key names in a cache directory.
#[derive(Clone, Debug)]
pub struct Slot {
    dir: PathBuf,
    key: String,
}

/// The question one command was asked: its name and every option that changes what it
/// prints, in a fixed order.
pub struct Question<'a> {
    pub command: &'a str,
    pub options: &'a [(&'a str, String)],
    pub world_paths: &'a [PathBuf],
    pub policies: Option<&'a Path>,
}

impl Slot {
    /// The slot of `question` asked of `world` with `live` observed, in the cache's
    /// `outputs/`; `None` when the cache is off or the inputs cannot be cached.
    pub fn of(question: &Question, world: &World, live: &LiveFacts) -> Option<Slot> {
        Slot::in_dir(crate::cache::dir("outputs")?, question, world, live)
    }

    /// [`Slot::of`] with the cache at `dir`.
    pub fn in_dir(
        dir: PathBuf,
        question: &Question,
        world: &World,
        live: &LiveFacts,
    ) -> Option<Slot> {
        if !private(&dir) || question.world_paths.iter().any(|p| p == Path::new("-")) {
            return None;
        }
        let key = key(question, world, live)?;
        Some(Slot { dir, key })
    }

    fn entry(&self) -> String {
        format!("{}.out", self.key)
    }

    /// What a run with this key printed, when one was stored and its entry verifies.
    pub fn read(&self) -> Option<Printed> {
        crate::cache::read(&self.dir, &self.entry(), |bytes| {
            let rest = bytes.strip_prefix(MAGIC)?;
            let rest = rest.strip_prefix(self.key.as_bytes())?;
            let rest = rest.strip_prefix(b"\n")?;
            let (&code, rest) = rest.split_first()?;
            let (digest, body) = rest.split_at_checked(32)?;
            (sha256(body) == digest).then(|| Printed {
                stdout: body.to_vec(),
                code,
            })
        })
    }

    /// Keeps what a run printed (`stdout`, in chunks) and its exit status `code` under this
    /// key. Whether it was stored; a cache that cannot be written is no error.
    pub fn store(&self, code: u8, stdout: &[Vec<u8>]) -> bool {
        let mut h = Sha256::new();
        for chunk in stdout {
            h.update(chunk);
        }
        let digest: [u8; 32] = h.finalize().into();
        let head: [&[u8]; 5] = [MAGIC, self.key.as_bytes(), b"\n", &[code], &digest];
        let parts: Vec<&[u8]> = head
            .into_iter()
            .chain(stdout.iter().map(Vec::as_slice))
            .collect();
        crate::cache::store(&self.dir, &self.entry(), &parts)
    }
}

/// Feeds `bytes` to `h` with its length first, so that no two sequences of parts hash
/// alike.
fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The key of `question` on `world` with `live`; `None` when a `--policies` file cannot be
/// read (the load that follows reports it).
fn key(question: &Question, world: &World, live: &LiveFacts) -> Option<String> {
    let mut h = Sha256::new();
    h.update(format!("lattice-output-cache {FORMAT}\n"));
    crate::cache::hash_executable(&mut h);
    part(&mut h, question.command.as_bytes());
    for (name, value) in question.options {
        part(&mut h, name.as_bytes());
        part(&mut h, value.as_bytes());
    }
    h.update(b"world\0");
    for p in question.world_paths {
        part(&mut h, p.display().to_string().as_bytes());
    }
    h.update(world.digest());
    for (k, _) in world.objects() {
        part(&mut h, world.location(k).unwrap_or("").as_bytes());
    }
    h.update(b"live\0");
    live.hash_into(&mut h);
    h.update(b"policies\0");
    match question.policies {
        None => h.update(b"bundled"),
        Some(dir) => {
            part(&mut h, dir.display().to_string().as_bytes());
            for (name, digest) in files_under(dir)? {
                part(&mut h, name.as_bytes());
                h.update(digest);
            }
        }
    }
    Some(hex(&h.finalize()))
}

/// Every rule-pack file under `dir` (`*.yaml`, `*.yml`, `*.cedar`, through links, as the
/// loader follows them), by name relative to it and in order, with the SHA-256 of its
/// content; `None` when one cannot be read, or the tree is deeper than any pack directory
/// (a link that loops), so nothing is cached. Other files are never read, so a large one
/// beside the packs costs nothing.
fn files_under(dir: &Path) -> Option<Vec<(String, [u8; 32])>> {
    const DEPTH: usize = 16;
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = pending.pop() {
        if depth > DEPTH {
            return None;
        }
        for entry in std::fs::read_dir(&d).ok()? {
            let path = entry.ok()?.path();
            if std::fs::metadata(&path).ok()?.is_dir() {
                pending.push((path, depth + 1));
            } else if path
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "cedar")
            {
                let name = path.strip_prefix(dir).ok()?.display().to_string();
                found.push((name, sha256(&std::fs::read(&path).ok()?)));
            }
        }
    }
    found.sort();
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_world() -> (PathBuf, World) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/world");
        let world = World::load(std::slice::from_ref(&dir)).expect("the world loads");
        (dir, world)
    }

    fn question<'a>(
        options: &'a [(&'a str, String)],
        paths: &'a [PathBuf],
        policies: Option<&'a Path>,
    ) -> Question<'a> {
        Question {
            command: "plan",
            options,
            world_paths: paths,
            policies,
        }
    }

    /// Every input the key names makes another key, and nothing else does.
    #[test]
    fn each_input_a_plan_reads_is_in_its_key() {
        let (dir, world) = example_world();
        let paths = [dir.clone()];
        let json = [("format", "Json".to_owned())];
        let live = LiveFacts::default();
        let key_of = |q: &Question, w: &World, l: &LiveFacts| key(q, w, l).expect("a key");
        let base = key_of(&question(&json, &paths, None), &world, &live);
        assert_eq!(base, key_of(&question(&json, &paths, None), &world, &live));

        let human = [("format", "Human".to_owned())];
        assert_ne!(base, key_of(&question(&human, &paths, None), &world, &live));
        let mut mesh = question(&json, &paths, None);
        mesh.command = "mesh";
        assert_ne!(base, key_of(&mesh, &world, &live));
        let other_paths = [dir.join(".")];
        assert_ne!(
            base,
            key_of(&question(&json, &other_paths, None), &world, &live)
        );
        // A fact observed outside the manifests.
        let observed = LiveFacts {
            baseline_missing: ["shop".to_owned()].into(),
            ..LiveFacts::default()
        };
        assert_ne!(
            base,
            key_of(&question(&json, &paths, None), &world, &observed)
        );
        // A world with one object fewer.
        let (first, _) = world.objects().next().unwrap();
        let smaller = World::from_objects(
            world
                .objects()
                .filter(|(k, _)| *k != first)
                .map(|(_, o)| o.clone())
                .collect(),
        );
        assert_ne!(
            base,
            key_of(&question(&json, &paths, None), &smaller, &live)
        );
        // A rule-pack directory: every file under it the loader reads, and only those.
        let packs = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = packs.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let packs_key = || key_of(&question(&json, &paths, Some(packs.path())), &world, &live);
        write("p/pack.yaml", "name: p\nversion: 1.0.0\n");
        let with_packs = packs_key();
        assert_ne!(base, with_packs);
        write("p/pack.yaml", "name: p\nversion: 1.0.1\n");
        let bumped = packs_key();
        assert_ne!(with_packs, bumped);
        write("p/notes.md", "");
        assert_eq!(bumped, packs_key(), "a file the loader does not read");
        write("p/more/extra.cedar", "");
        assert_ne!(bumped, packs_key());
    }

    #[test]
    fn an_entry_is_read_back_whole_or_not_at_all() {
        let (dir, world) = example_world();
        let cache = tempfile::tempdir().unwrap();
        let paths = [dir];
        let options = [("format", "Json".to_owned())];
        let q = question(&options, &paths, None);
        let live = LiveFacts::default();
        let slot = Slot::in_dir(cache.path().to_path_buf(), &q, &world, &live).unwrap();
        assert_eq!(slot.read(), None);
        let printed = Printed {
            stdout: b"{\"answer\": 1}\n".to_vec(),
            code: 1,
        };
        // Kept in chunks, read back whole.
        assert!(slot.store(1, &[b"{\"answer\"".to_vec(), b": 1}\n".to_vec()]));
        assert_eq!(slot.read(), Some(printed.clone()));
        // Cut short (as a crash might leave it): a miss, and the entry is gone.
        let entry = cache.path().join(slot.entry());
        let bytes = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(slot.read(), None);
        assert!(!entry.exists());
        // Another key's entry under this key's name is not this key's answer.
        let other = Slot {
            dir: cache.path().to_path_buf(),
            key: "0".repeat(64),
        };
        assert!(other.store(printed.code, std::slice::from_ref(&printed.stdout)));
        std::fs::rename(cache.path().join(other.entry()), &entry).unwrap();
        assert_eq!(slot.read(), None);
    }

    #[test]
    fn standard_input_and_a_shared_directory_are_never_cached() {
        let (_, world) = example_world();
        let options = [];
        let live = LiveFacts::default();
        let dir = tempfile::tempdir().unwrap();
        let stdin = [PathBuf::from("-")];
        let q = question(&options, &stdin, None);
        assert!(Slot::in_dir(dir.path().to_path_buf(), &q, &world, &live).is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let paths = [PathBuf::from("examples/world")];
            let q = question(&options, &paths, None);
            assert!(Slot::in_dir(dir.path().to_path_buf(), &q, &world, &live).is_some());
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            assert!(Slot::in_dir(dir.path().to_path_buf(), &q, &world, &live).is_none());
        }
    }
}
