//! A real control plane for tests: `tools/testenv` (etcd and kube-apiserver from their Go
//! modules). [`spawn`] starts one and returns its kubeconfig once it is ready.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The testenv binary: `LATTICE_TESTENV`, else built (or found fresh) by
/// `tools/testenv/build`, which needs Go.
pub fn binary() -> PathBuf {
    crate::go_tool("LATTICE_TESTENV", "testenv")
}

/// Starts a control plane in `dir` (`--wipe` for a fresh one, `--resume` to restart on its
/// state): the process, its stdin (closing it stops testenv cleanly) and its kubeconfig.
pub fn spawn(dir: &Path, mode: &str) -> (Child, Option<ChildStdin>, PathBuf) {
    spawn_with(dir, mode, &[])
}

/// [`spawn`] with more kube-apiserver flags (`--name=value`; one named here replaces
/// testenv's own).
pub fn spawn_with(
    dir: &Path,
    mode: &str,
    flags: &[String],
) -> (Child, Option<ChildStdin>, PathBuf) {
    let mut child = Command::new(binary())
        .arg("--dir")
        .arg(dir)
        .args([mode, "--"])
        // Room for a thousand Services (the default range is a /24).
        .arg("--service-cluster-ip-range=10.0.0.0/16")
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start testenv");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read testenv's ready line");
    let kubeconfig = line
        .strip_prefix("ready ")
        .map(|p| PathBuf::from(p.trim()))
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default();
            panic!("testenv did not start: {line:?}\n{}", tail(&log, 40))
        });
    let stdin = child.stdin.take();
    (child, stdin, kubeconfig)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
