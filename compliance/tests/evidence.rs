//! The evidence log: runs append to a hash chain, and verification names every edited,
//! deleted, inserted or reordered record and every changed rendering.

mod support;

use std::path::{Path, PathBuf};

use lattice_compliance::evidence::{
    CHAIN_FILE, EvidenceError, TamperKind, VerifyError, append, verify,
};
use lattice_compliance::report::{Format, render};
use serde_json::Value;
use support::{case, scan_world};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-evidence-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A log of three runs over the two conformance worlds.
fn log_of_three(name: &str) -> PathBuf {
    let dir = temp(name);
    for (i, world) in ["compliant", "violations", "compliant"].iter().enumerate() {
        let report = scan_world(
            &[case(&format!("{world}/world.yaml"))],
            &format!("2026-11-2{}T12:00:00Z", i + 1),
        );
        let files = vec![
            (
                "report.json".to_owned(),
                render(&report, Format::Json).into_bytes(),
            ),
            (
                "report.oscal.json".to_owned(),
                render(&report, Format::Oscal).into_bytes(),
            ),
        ];
        let a = append(&dir, &report, &files).expect("append");
        assert_eq!(a.seq, i as u64 + 1);
    }
    dir
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(CHAIN_FILE))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    std::fs::write(dir.join(CHAIN_FILE), lines.join("\n") + "\n").unwrap();
}

/// The problems verification finds, as (kind, seq).
fn problems(dir: &Path, head: Option<&str>) -> Vec<(TamperKind, Option<u64>, String)> {
    match verify(dir, head) {
        Ok(_) => Vec::new(),
        Err(VerifyError::Tampered { problems, .. }) => problems
            .into_iter()
            .map(|p| (p.kind, p.seq, p.message))
            .collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn an_intact_log_verifies_and_links_each_record_to_the_one_before() {
    let dir = log_of_three("intact");
    let v = verify(&dir, None).expect("intact");
    assert_eq!(v.records, 3);
    let records: Vec<Value> = lines(&dir)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records[0]["record"]["previous"],
        lattice_compliance::evidence::GENESIS
    );
    assert_eq!(records[1]["record"]["previous"], records[0]["digest"]);
    assert_eq!(records[2]["record"]["previous"], records[1]["digest"]);
    assert_eq!(v.head.as_deref(), records[2]["digest"].as_str());
    assert!(verify(&dir, v.head.as_deref()).is_ok());
    // Each run kept its renderings, hashed in its record.
    let oscal = dir.join(
        records[1]["record"]["files"]["report.oscal.json"]["path"]
            .as_str()
            .unwrap(),
    );
    assert!(
        std::fs::read_to_string(oscal)
            .unwrap()
            .contains("assessment-results")
    );
    assert_eq!(
        records[1]["record"]["summary"]["soc2"]["checks"]["fail"],
        16
    );
}

#[test]
fn an_edited_record_is_named() {
    let dir = log_of_three("edited");
    let mut l = lines(&dir);
    // Make run 2 look clean.
    l[1] = l[1].replace("\"fail\":16", "\"fail\":0");
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (TamperKind::Edited, Some(2)));
}

#[test]
fn an_edited_record_with_a_recomputed_digest_breaks_the_next_link() {
    let dir = log_of_three("rehashed");
    let mut l = lines(&dir);
    let mut v: Value = serde_json::from_str(&l[1]).unwrap();
    v["record"]["snapshot"] = Value::from("sha256:forged");
    let record = serde_json::to_string(&v["record"]).unwrap();
    v["digest"] = Value::from(
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&record))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    l[1] = serde_json::to_string(&v).unwrap();
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (TamperKind::Inserted, Some(3)));
    assert!(p[0].2.contains("does not link"), "{}", p[0].2);
}

#[test]
fn a_deleted_record_is_named() {
    let dir = log_of_three("deleted");
    let mut l = lines(&dir);
    l.remove(1);
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (TamperKind::Deleted, Some(3)));
    assert!(p[0].2.contains("record 2 was deleted"), "{}", p[0].2);
}

#[test]
fn reordered_records_are_named() {
    let dir = log_of_three("reordered");
    let mut l = lines(&dir);
    l.swap(1, 2);
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    let kinds: Vec<_> = p.iter().map(|x| (x.0, x.1)).collect();
    assert!(kinds.contains(&(TamperKind::Reordered, Some(2))), "{p:?}");
}

#[test]
fn an_inserted_record_is_named() {
    let dir = log_of_three("inserted");
    let mut l = lines(&dir);
    let copy = l[1].clone();
    l.insert(2, copy);
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    let kinds: Vec<_> = p.iter().map(|x| (x.0, x.1)).collect();
    assert_eq!(kinds, vec![(TamperKind::Inserted, Some(2))], "{p:?}");
}

#[test]
fn a_changed_rendering_and_a_truncated_log_are_named() {
    let dir = log_of_three("file");
    let head = verify(&dir, None).unwrap().head.unwrap();
    let report = dir.join("runs/000002/report.oscal.json");
    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::write(&report, text.replace("not-satisfied", "satisfied")).unwrap();
    let p = problems(&dir, None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (TamperKind::FileChanged, Some(2)));
    std::fs::write(&report, text).unwrap();
    assert!(verify(&dir, Some(&head)).is_ok());

    // Dropping the newest record leaves a valid shorter chain; the kept head catches it.
    let mut l = lines(&dir);
    l.pop();
    write_lines(&dir, &l);
    assert!(verify(&dir, None).is_ok());
    let p = problems(&dir, Some(&head));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, TamperKind::Deleted);
}

#[test]
fn a_line_that_is_not_a_record_is_an_edit_and_appending_to_a_broken_log_is_refused() {
    let dir = log_of_three("garbage");
    let mut l = lines(&dir);
    l[0] = "{not json".into();
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    assert!(p.iter().any(|x| x.0 == TamperKind::Edited), "{p:?}");
    let report = scan_world(&[case("compliant/world.yaml")], "2026-11-24T12:00:00Z");
    let before = std::fs::read(dir.join(CHAIN_FILE)).unwrap();
    match append(&dir, &report, &[]) {
        Err(EvidenceError::Broken { problems, .. }) => assert!(!problems.is_empty()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read(dir.join(CHAIN_FILE)).unwrap(), before);
}

#[test]
fn a_rendering_path_outside_the_directory_is_tampering() {
    let dir = log_of_three("escape");
    let mut l = lines(&dir);
    // A forged record pointing outside: caught as an edit and as a bad file path.
    l[2] = l[2].replace("runs/000003/report.json", "../../etc/passwd");
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    assert!(p.iter().any(|x| x.0 == TamperKind::Edited), "{p:?}");
    assert!(p.iter().any(|x| x.0 == TamperKind::FileChanged), "{p:?}");
}

#[test]
fn a_missing_or_empty_log_verifies_nothing() {
    let dir = temp("missing");
    assert!(matches!(verify(&dir, None), Err(VerifyError::Empty(_))));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(CHAIN_FILE), "\n\n").unwrap();
    assert!(matches!(verify(&dir, None), Err(VerifyError::Empty(_))));
    // A log whose file was deleted after three runs is not intact either.
    let three = log_of_three("deleted");
    std::fs::remove_file(three.join(CHAIN_FILE)).unwrap();
    assert!(matches!(verify(&three, None), Err(VerifyError::Empty(_))));
}

#[test]
fn pipes_links_and_endless_lines_are_refused_without_blocking() {
    let dir = log_of_three("streams");
    let chain = dir.join(CHAIN_FILE);
    // A run file replaced by a FIFO would block a reader forever.
    let report = dir.join("runs/000002/report.oscal.json");
    std::fs::remove_file(&report).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&report)
            .status()
            .unwrap()
            .success()
    );
    let p = problems(&dir, None);
    assert!(
        p.iter().any(|(k, s, m)| *k == TamperKind::FileChanged
            && *s == Some(2)
            && m.contains("not a regular file")),
        "{p:?}"
    );
    // A run file symlinked to /dev/zero would be read until memory ran out.
    std::fs::remove_file(&report).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &report).unwrap();
    assert!(!problems(&dir, None).is_empty());
    // The log itself as a symlink is refused.
    let real = dir.join("elsewhere.jsonl");
    std::fs::rename(&chain, &real).unwrap();
    std::os::unix::fs::symlink(&real, &chain).unwrap();
    assert!(matches!(
        verify(&dir, None),
        Err(VerifyError::Unreadable(_))
    ));
    std::fs::remove_file(&chain).unwrap();
    // One line longer than any record is refused, not held whole.
    let long = format!(
        "{}\n",
        "x".repeat(lattice_compliance::evidence::MAX_RECORD_BYTES + 10)
    );
    std::fs::write(&chain, long).unwrap();
    assert!(matches!(
        verify(&dir, None),
        Err(VerifyError::Unreadable(_))
    ));
}
