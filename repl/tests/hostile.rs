//! Hostile input against the real `lattice-policy` binary: each case once aborted the
//! process or read nothing and passed. Every run here must end by itself, within its time
//! bound, with an exit code (never a signal) and a clear message.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
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

const BAD: &str = "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: x\n  namespace: shop\nspec:\n  containerz: {}\n";

#[test]
fn validation_never_passes_by_reading_nothing() {
    use std::io::Write;
    // Standard input, as `-` and as /dev/stdin: read, and the error found.
    for name in ["-", "/dev/stdin"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
            .args(["validate", name])
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(BAD.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", said(&out));
        assert!(said(&out).contains("containerz"), "{name}: {}", said(&out));
        assert!(
            said(&out).contains("checked 1 file"),
            "{name}: {}",
            said(&out)
        );
    }
    // A named pipe, as a process substitution makes one.
    let dir = scratch("fifo");
    let fifo = dir.join("world.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success(),
        "mkfifo"
    );
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, BAD).unwrap())
    };
    let out = run(
        &["validate", fifo.to_str().unwrap()],
        Duration::from_secs(20),
    );
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("containerz"), "{}", said(&out));
    // An endless stream is cut at the size limit and refused.
    let out = run(&["validate", "/dev/zero"], Duration::from_secs(30));
    assert_ne!(out.status.code(), Some(0), "{}", said(&out));
    assert!(said(&out).contains("more than"), "{}", said(&out));
    // A directory with nothing to check, and a path that does not exist: errors, exit 2.
    let empty = scratch("empty");
    let out = run(
        &["validate", empty.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("holds no"), "{}", said(&out));
    let out = run(&["validate", "/nonexistent/world"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    // Files deeper than the search goes are reported, not skipped in silence.
    let mut deep = scratch("deep-dirs");
    let top = deep.clone();
    for i in 0..40 {
        deep = deep.join(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("x.yaml"), BAD).unwrap();
    let out = run(
        &["validate", top.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("directories deep"), "{}", said(&out));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn kubectl_and_validate_read_a_file_alike() {
    let dir = scratch("bom");
    // A byte order mark is not content.
    let ns = dir.join("ns.yaml");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n");
    std::fs::write(&ns, bytes).unwrap();
    let out = run(&["validate", ns.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    // `replicas: 010` is 10 here and 8 to kubectl: refused, naming both.
    let svc = dir.join("svc.yaml");
    std::fs::write(
        &svc,
        "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: web\n  namespace: team\nspec:\n  replicas: 010\n  containers:\n    main:\n      image: ghcr.io/acme/web:1.0\n",
    )
    .unwrap();
    let out = run(
        &["validate", svc.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("reads as 10 here (YAML 1.2) but as 8 in kubectl"),
        "{}",
        said(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rule_packs_never_go_missing_in_silence() {
    // Without --policies every command decides under the packs the binary carries, from
    // any directory: the same decisions as the repository's policies/.
    let elsewhere = scratch("cwd");
    let world = workspace().join("examples/world");
    let w = world.to_str().unwrap();
    let can = [
        "can",
        "--world",
        w,
        "Service::shop/checkout",
        "Connect",
        "Service::payments/ledger",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(can)
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        said(&out).contains("baseline/bilateral-connect"),
        "{}",
        said(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(["compliance", "scan", "--world", w, "-o", "json"])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", said(&out));
    // A named directory that is not there, or holds no pack, is an error, never an empty
    // set of rules.
    for args in [
        vec!["mesh", "--world", w, "--policies", "policies"],
        vec!["compliance", "scan", "--world", w, "--policies", "policies"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
            .args(&args)
            .current_dir(&elsewhere)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", said(&out));
        assert!(
            said(&out).contains("no rule packs at policies"),
            "{args:?}: {}",
            said(&out)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args([
            "mesh",
            "--world",
            w,
            "--policies",
            elsewhere.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("no subdirectory holds a pack.yaml"),
        "{}",
        said(&out)
    );
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn a_huge_line_is_never_repeated_in_diagnostics() {
    // One 5 MB string literal on one line, with problems on that line: each diagnostic
    // names the place instead of repeating the line (15 MB gave 377 MB of output).
    let dir = scratch("huge");
    let f = dir.join("huge.cedar");
    std::fs::write(
        &f,
        format!(
            "@id(\"x\") permit(principal, action == Lattice::Action::\"Connect\", resource) when {{ \"{}\" == 1 && context.nope }};\n@id(\"x\") permit(principal, action, resource);\n",
            "A".repeat(5_000_000)
        ),
    )
    .unwrap();
    let out = run(&["validate", f.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() < 64 * 1024,
        "{} bytes of diagnostics",
        out.stdout.len()
    );
    assert!(said(&out).contains("too long to show"), "{}", said(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
