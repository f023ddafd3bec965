//! What Lattice's test suites share: where the workspace is, and where the reference
//! material of `../shared/reference/` is (DESIGN §8).

use std::path::{Path, PathBuf};

/// The workspace root: the parent of the crate under test, as cargo names it when it runs a
/// test or bench (every crate sits one level below the root). The path this crate was
/// compiled at is only the fallback: a build cache shared between clones may hold a testkit
/// compiled in another checkout, whose path need not exist any more.
pub fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("every crate sits in the workspace root")
        .to_path_buf()
}

/// The version of the bundled rule pack `name`, as its `pack.yaml` says: tests that read
/// what the packs in force are named compare against it rather than pin it.
pub fn pack_version(name: &str) -> String {
    let path = workspace_root()
        .join("policies")
        .join(name)
        .join("pack.yaml");
    let meta = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    meta.lines()
        .find_map(|l| l.strip_prefix("version: "))
        .unwrap_or_else(|| panic!("{} has no version", path.display()))
        .trim()
        .to_owned()
}

/// `../shared/reference/` (or `LATTICE_REFERENCE_DIR`). Absent, tests that need it print a
/// notice and return early, except under `CI=true`, where absence is a failure.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LATTICE_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/reference"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "reference material not found at {} (set LATTICE_REFERENCE_DIR)",
        dir.display()
    );
    eprintln!(
        "NOTICE: skipping: reference material not found at {}",
        dir.display()
    );
    None
}

/// A Go program the tests run as a real peer: the path `env` names when set, else what
/// `tools/<tool>/build` builds (or finds up to date) and prints as its last line, built once
/// per test process. Building needs Go.
pub fn go_tool(env: &str, tool: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    static BUILT: std::sync::Mutex<std::collections::BTreeMap<String, PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(tool.to_owned())
        .or_insert_with(|| {
            let script = workspace_root().join("tools").join(tool).join("build");
            let out = std::process::Command::new(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("run {} (needs Go): {e}", script.display()));
            assert!(out.status.success(), "{} failed", script.display());
            let text = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(text.lines().last().expect("build prints the path").trim())
        })
        .clone()
}

pub mod capi;
pub mod oci;
pub mod oidc;
pub mod schemas;
pub mod testenv;
pub mod tls;

/// A loopback port no one is listening on, below the kernel's ephemeral range (32768 and
/// up on Linux by default). A server a test stops and starts again on the same port can
/// then always have it back: a port from `bind(0)` is an ephemeral one, which any outgoing
/// connection of a test running beside it may take as its local port once the server lets
/// go, and the restart fails with "address in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test process starts somewhere else in the span, and takes the ports after it.
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port below the ephemeral range");
        let port = u16::try_from(LOW + (start + n) % SPAN).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Copies the directory `from` to `to`, recursively (a world with its `images/` layout).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for e in std::fs::read_dir(from)
        .expect("read the directory")
        .flatten()
    {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a file");
        }
    }
}

/// Has `cmd` (a `lattice-policy` run) use the caches at `cache`, whatever the environment
/// says, or with `None` no cache at all (`LATTICE_NO_CACHE=1`).
pub fn with_caches<'a>(
    cmd: &'a mut std::process::Command,
    cache: Option<&Path>,
) -> &'a mut std::process::Command {
    match cache {
        Some(dir) => cmd
            .env("LATTICE_CACHE_DIR", dir)
            .env_remove("LATTICE_NO_CACHE"),
        None => cmd.env("LATTICE_NO_CACHE", "1"),
    }
}
