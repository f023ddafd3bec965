//! Hostile input against the real `lattice-policy` binary: each case once aborted the
//! process or read nothing and passed. Every run here must end by itself, within its time
//! bound, with an exit code (never a signal) and a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lattice-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary and checks it ended on its own, in time, with an exit code.
fn run(args: &[&str], within: Duration) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        started.elapsed() < within,
        "{args:?} took {:?}",
        started.elapsed()
    );
    assert!(
        out.status.code().is_some(),
        "{args:?} ended by a signal ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn deep(levels: usize) -> String {
    format!(
        "@id(\"deep\")\npermit (principal, action, resource)\nwhen {{ {}true{} }};\n",
        "(".repeat(levels),
        ")".repeat(levels)
    )
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn deeply_nested_policies_are_refused_by_every_command_that_reads_them() {
    let dir = scratch("deep");
    let deep_600 = dir.join("deep.cedar");
    std::fs::write(&deep_600, deep(600)).unwrap();
    let out = run(
        &["validate", deep_600.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("levels deep"), "{}", said(&out));

    // Lists, records and if-chains nest as surely as parentheses.
    for (name, condition) in [
        (
            "lists",
            format!("{}1{}.contains(1)", "[".repeat(700), "]".repeat(700)),
        ),
        (
            "records",
            format!("{}1{}.a == 1", "{a:".repeat(700), "}".repeat(700)),
        ),
        (
            "ifs",
            format!("{}true", "if 1 == 1 then true else ".repeat(700)),
        ),
    ] {
        let f = dir.join(format!("{name}.cedar"));
        std::fs::write(
            &f,
            format!("@id(\"x\")\npermit (principal, action, resource) when {{ {condition} }};\n"),
        )
        .unwrap();
        let out = run(&["validate", f.to_str().unwrap()], Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", said(&out));
    }

    let deep_700 = dir.join("deep700.cedar");
    std::fs::write(&deep_700, deep(700)).unwrap();
    std::fs::write(dir.join("entities.json"), "[]").unwrap();
    std::fs::write(
        dir.join("request.json"),
        r#"{"principal": "User::\"a\"", "action": "Action::\"b\"", "resource": "Thing::\"c\"", "context": {}}"#,
    )
    .unwrap();
    let out = run(
        &[
            "authorize",
            "--policies",
            deep_700.to_str().unwrap(),
            "--entities",
            dir.join("entities.json").to_str().unwrap(),
            "--request-json",
            dir.join("request.json").to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("levels deep"), "{}", said(&out));

    let out = run(
        &["fmt", "--check", deep_700.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(matches!(out.status.code(), Some(1 | 2)), "{}", said(&out));
    assert!(said(&out).contains("levels deep"), "{}", said(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
