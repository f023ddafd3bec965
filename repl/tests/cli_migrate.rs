//! `lattice-policy migrate` on the upstream corpus (`conformance/upstream/manifests/`,
//! manifests written for upstream Lattice's v1alpha1): what comes out validates cleanly,
//! and everything not carried over is reported at its file and line.

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lattice-migrate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const CORPUS: &str = "conformance/upstream/manifests";

#[test]
fn the_upstream_corpus_migrates_to_manifests_that_validate_cleanly() {
    // As written for upstream, the corpus does not load here.
    let before = run(&["validate", CORPUS]);
    assert_eq!(
        before.status.code(),
        Some(1),
        "the corpus is upstream-shaped"
    );

    let out = tmp("corpus");
    let o = run(&["migrate", CORPUS, "-o", out.to_str().unwrap()]);
    let notes = String::from_utf8_lossy(&o.stderr);
    // Something is always dropped from this corpus (it exercises what has no equivalent).
    assert_eq!(o.status.code(), Some(1), "{notes}");
    assert!(
        !notes.contains("do not validate"),
        "a migrated document does not validate:\n{notes}"
    );
    let corpus_files = std::fs::read_dir(workspace().join(CORPUS))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    let written = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(written, corpus_files, "one output file per input file");

    // Validates with no error. The only warnings are the exception register's (upstream
    // permits that grant a deviation name no approver or expiry, which migrating cannot
    // invent) and the corpus's one Pi-hole reached over plain http.
    let v = run(&["validate", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(0), "{text}");
    assert!(text.contains(" 0 errors, "), "{text}");
    let warnings = text.matches('⚠').count();
    let approvals = text.matches("this permit grants an exception but").count();
    let plain_http = text.matches("is not TLS: the Pi-hole password").count();
    assert_eq!(plain_http, 1, "{text}");
    assert!(
        approvals > 0 && warnings == approvals + plain_http,
        "{text}"
    );

    // Every note names a file, a line and a column, and what happened.
    for line in notes.lines().filter(|l| l.starts_with(CORPUS)) {
        let mut parts = line.splitn(4, ':');
        let (file, l, c) = (parts.next(), parts.next(), parts.next());
        assert!(
            file.is_some_and(|f| f.ends_with(".yaml"))
                && l.and_then(|l| l.parse::<usize>().ok())
                    .is_some_and(|l| l > 0)
                && c.and_then(|c| c.parse::<usize>().ok()).is_some(),
            "not file:line:column: {line}"
        );
        assert!(
            [" dropped ", " rewritten ", " not carried over "]
                .iter()
                .any(|w| line.contains(w)),
            "{line}"
        );
    }

    // The fields the issue names, each reported where it stands.
    for expected in [
        "service-sidecars.yaml:14:9: dropped spec.workload.containers.main.workingDir",
        "job-cron.yaml",
        "concurrencyPolicy",
        "successfulJobsHistoryLimit",
        "latticeImage",
        "registryMirrors",
        "rewritten spec.parentConfig.service.type",
        "security.allowedBinaries",
        "volumes[\"/tmp\"]",
        "dropped spec.resolver",
        "dropped spec.credentialData",
        "dropped spec.trust: signature trust is a TrustPolicy",
        "not carried over spec.provider.config.basis",
        "workerReplicas",
        "dropped spec.ingress.routes.api: GRPCRoute",
    ] {
        assert!(notes.contains(expected), "no note for {expected}:\n{notes}");
    }

    // Upstream's nesting is gone and the shapes are this project's.
    let svc = std::fs::read_to_string(out.join("service-simple.yaml")).unwrap();
    assert!(!svc.contains("workload:"), "{svc}");
    assert!(svc.contains("containers:"));
    let cluster = std::fs::read_to_string(out.join("cluster-aws.yaml")).unwrap();
    assert!(cluster.contains("controlPlane: 3"), "{cluster}");
    assert!(cluster.contains("monitoring: true"), "{cluster}");
    // A package's Flux timeout is Flux's here too.
    let package = std::fs::read_to_string(out.join("package.yaml")).unwrap();
    assert!(package.contains("timeout: 10m"), "{package}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn this_projects_own_manifests_pass_through_unchanged() {
    let o = run(&["migrate", "examples/world"]);
    let summary = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{summary}");
    assert!(summary.contains(" 0 migrated,"), "{summary}");
    assert!(summary.contains(" 0 fields dropped"), "{summary}");
    // What comes out is the same objects.
    let out = tmp("world");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("world.yaml"), &o.stdout).unwrap();
    // Both verified against the same images (the snapshot's digest covers what they say).
    let a = run(&["plan", "-o", "json", "--images", "examples/world/images"]);
    let b = run(&[
        "plan",
        out.to_str().unwrap(),
        "-o",
        "json",
        "--images",
        "examples/world/images",
    ]);
    let digest = |o: &Output| {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["snapshot"].clone()
    };
    assert_eq!(
        digest(&a),
        digest(&b),
        "the world changed on its way through"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn an_upstream_secret_provider_reads_as_it_is_but_for_its_namespace() {
    // External Secrets' shape, `provider: {vault: {...}}`, is read directly; only the
    // namespace (the kind is cluster-scoped here) is not.
    let dir = tmp("sp");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sp.yaml");
    std::fs::write(
        &file,
        "apiVersion: lattice.dev/v1alpha1\nkind: SecretProvider\nmetadata:\n  name: vault-prod\nspec:\n  provider:\n    vault:\n      server: https://vault.example:8200\n      path: secret\n",
    )
    .unwrap();
    let o = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    std::fs::write(
        &file,
        "apiVersion: lattice.dev/v1alpha1\nkind: SecretProvider\nmetadata:\n  name: none\nspec:\n  provider:\n    vault: {}\n    aws: {}\n",
    )
    .unwrap();
    let o = run(&["validate", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("names no backend"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_input_changes_nothing() {
    let out = tmp("bad");
    let o = run(&[
        "migrate",
        "/nonexistent/upstream",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        !out.exists(),
        "nothing is written when the input cannot be read"
    );
}

#[test]
fn cedar_files_beside_the_manifests_are_copied_as_they_are() {
    let dir = tmp("cedar-in");
    std::fs::create_dir_all(&dir).unwrap();
    let policy = "permit (principal, action, resource);\n";
    std::fs::write(dir.join("grants.cedar"), policy).unwrap();
    std::fs::copy(
        workspace().join(CORPUS).join("service-simple.yaml"),
        dir.join("service.yaml"),
    )
    .unwrap();
    let out = tmp("cedar-out");
    let o = run(&[
        "migrate",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("grants.cedar")).unwrap(),
        policy
    );
    assert!(out.join("service.yaml").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}
