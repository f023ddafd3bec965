//! Where the command line keeps what it may reuse between runs, and how an entry is kept:
//! the validated worlds ([`crate::world_cache`]), their projected entities
//! ([`crate::entity_cache`]) and what `plan` and `mesh` printed ([`crate::output_cache`]).
//!
//! Where: `$LATTICE_CACHE_DIR`, else `$XDG_CACHE_HOME/lattice`, else `~/.cache/lattice`,
//! one directory per kind of entry (created 0700, the newest [`KEEP`] entries kept; a
//! directory that others may write to is not used). `LATTICE_NO_CACHE=1` turns it off, and
//! `LATTICE_NO_CACHE=outputs` (a comma-separated list of kinds) only the kinds it names.
//! An entry is one file per key, written to a temporary name and renamed into place, so a
//! reader sees a whole entry or none.
//!
//! Hand-written rather than a crate (`cacache`): one file per key, replaced atomically, is
//! all that is needed.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Entries kept per kind; older ones are removed when a new one is written.
const KEEP: usize = 16;

/// The kinds of entry, each a directory of the cache.
pub const KINDS: [&str; 3] = ["worlds", "entities", "outputs"];

/// The directory for entries of `kind` (one of [`KINDS`]), unless that cache is off.
pub fn dir(kind: &str) -> Option<PathBuf> {
    if off(std::env::var("LATTICE_NO_CACHE").ok().as_deref(), kind) {
        return None;
    }
    if let Some(d) = std::env::var_os("LATTICE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join(kind));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("lattice").join(kind))
}

/// Whether `LATTICE_NO_CACHE` set to `setting` turns off the cache of `kind`: any value but
/// empty or `0` turns every cache off, except a comma-separated list of kinds, which turns
/// off those alone (`outputs`: decide afresh, on a world still read back).
fn off(setting: Option<&str>, kind: &str) -> bool {
    let Some(setting) = setting
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "0")
    else {
        return false;
    };
    let named: Vec<&str> = setting.split(',').map(str::trim).collect();
    if named.iter().all(|k| KINDS.contains(k)) {
        named.contains(&kind)
    } else {
        true
    }
}

/// Feeds this executable's identity to `h`: its version, path, size and modification
/// time. A rebuilt binary may validate or project differently, so its entries are not
/// another binary's.
pub fn hash_executable(h: &mut Sha256) {
    h.update(env!("CARGO_PKG_VERSION"));
    if let Ok(exe) = std::env::current_exe() {
        h.update(exe.display().to_string());
        if let Ok(m) = std::fs::metadata(&exe) {
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified()
                && let Ok(since) = t.duration_since(std::time::UNIX_EPOCH)
            {
                h.update(since.as_nanos().to_le_bytes());
            }
        }
    }
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `dir` is absent (it will be made 0700) or writable by its owner alone:
/// whoever can write the cache decides what loads.
pub fn private(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(dir) {
            Ok(m) => m.permissions().mode() & 0o022 == 0,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        true
    }
}

/// Writes `parts` as the entry `name` of `dir`, atomically, and prunes the oldest entries
/// with its extension. Whether it was stored; a cache that cannot be written is no error.
///
/// Not synced to disk: an entry a crash leaves short or empty fails the digest every
/// entry carries of its body, and is a miss.
pub fn store(dir: &Path, name: &str, parts: &[&[u8]]) -> bool {
    let entry = dir.join(name);
    let stored = (|| -> std::io::Result<()> {
        create_private_dir(dir)?;
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        std::fs::rename(&tmp, &entry)
    })()
    .is_ok();
    if stored && let Some(ext) = entry.extension() {
        prune(dir, ext);
    }
    stored
}

/// The bytes of the entry `name` of `dir` when `check` accepts them; an entry it refuses
/// (damaged, or another key's) is removed, so that the next run stores a good one.
pub fn read<T>(dir: &Path, name: &str, check: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
    let entry = dir.join(name);
    let bytes = std::fs::read(&entry).ok()?;
    let found = check(&bytes);
    if found.is_none() {
        let _ = std::fs::remove_file(&entry);
    }
    found
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Keeps the [`KEEP`] newest entries ending in `ext`.
fn prune(dir: &Path, ext: &std::ffi::OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension() == Some(ext))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, old) in found.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(old);
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cache_turns_off_every_kind_or_the_kinds_it_names() {
        for kind in KINDS {
            assert!(!off(None, kind));
            assert!(!off(Some(""), kind));
            assert!(!off(Some("0"), kind));
            assert!(off(Some("1"), kind));
            assert!(off(Some("true"), kind));
            // A list with a name that is no kind is read as "off", never as "on".
            assert!(off(Some("outputs,everything"), kind));
        }
        assert!(off(Some("outputs"), "outputs"));
        assert!(!off(Some("outputs"), "worlds"));
        assert!(!off(Some("outputs"), "entities"));
        assert!(off(Some("entities, outputs"), "entities"));
        assert!(!off(Some("entities, outputs"), "worlds"));
    }
}
