//! The evidence log, and the tamper suite: runs append to a signed hash chain, and
//! verification names every edited, deleted, inserted, reordered, rewritten or backdated
//! record and every changed rendering.

mod support;

use std::path::{Path, PathBuf};

use lattice_compliance::ScanReport;
use lattice_compliance::evidence::{
    CHAIN_FILE, EvidenceError, Signer, TamperKind, TrustedKey, Verified, VerifyError,
    VerifyOptions, append, canonical::canonical,
};
use lattice_compliance::report::{Format, render};
use serde_json::Value;
use support::{case, scan_world};

fn verify(dir: &Path, head: Option<&str>) -> Result<Verified, VerifyError> {
    lattice_compliance::evidence::verify(
        dir,
        &VerifyOptions {
            expected_head: head,
            trusted_keys: &[],
        },
    )
}

fn verify_signed(dir: &Path, keys: &[TrustedKey]) -> Result<Verified, VerifyError> {
    lattice_compliance::evidence::verify(
        dir,
        &VerifyOptions {
            expected_head: None,
            trusted_keys: keys,
        },
    )
}

/// A scan of a conformance world now: evidence is dated by the clock.
fn scan_now(world: &str) -> ScanReport {
    scan_world(
        &[case(&format!("{world}/world.yaml"))],
        &jiff::Timestamp::now().to_string(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Recomputes a line's digest as a rewriter with write access to the file would.
fn rehash(line: &mut Value) {
    line["digest"] = Value::from(sha256_hex(canonical(&line["record"]).unwrap().as_bytes()));
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-evidence-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A log of three runs over the two conformance worlds.
fn log_of_three(name: &str) -> PathBuf {
    log_of_three_signed(name, None)
}

fn log_of_three_signed(name: &str, signer: Option<&Signer>) -> PathBuf {
    let dir = temp(name);
    for (i, world) in ["compliant", "violations", "compliant"].iter().enumerate() {
        let report = scan_now(world);
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
        let a = append(&dir, &report, &files, signer).expect("append");
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
        17
    );
}

#[test]
fn an_edited_record_is_named() {
    let dir = log_of_three("edited");
    let mut l = lines(&dir);
    // Make run 2 look clean.
    assert!(l[1].contains("\"fail\":17"), "{}", l[1]);
    l[1] = l[1].replace("\"fail\":17", "\"fail\":0");
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
    rehash(&mut v);
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
    let report = scan_now("compliant");
    let before = std::fs::read(dir.join(CHAIN_FILE)).unwrap();
    match append(&dir, &report, &[], None) {
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

#[test]
fn a_digest_is_the_sha256_of_the_records_rfc_8785_form_which_an_outside_verifier_recomputes() {
    let dir = log_of_three("canonical");
    for line in lines(&dir) {
        let v: Value = serde_json::from_str(&line).unwrap();
        // Independently of the crate's canonicalizer: keys sorted (records hold ASCII
        // keys, where UTF-16 order is byte order), no whitespace, integers as written.
        fn sorted(v: &Value) -> String {
            match v {
                Value::Object(m) => {
                    let m: std::collections::BTreeMap<_, _> = m.iter().collect();
                    let fields: Vec<String> = m
                        .into_iter()
                        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), sorted(v)))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
                Value::Array(a) => {
                    format!("[{}]", a.iter().map(sorted).collect::<Vec<_>>().join(","))
                }
                other => other.to_string(),
            }
        }
        let record = &v["record"];
        assert_eq!(record["v"], 2);
        assert_eq!(v["digest"], sha256_hex(sorted(record).as_bytes()));
        // Scope and inventory are in what the digest covers.
        assert!(
            record["inventory"].as_str().unwrap().len() == 64,
            "{record}"
        );
        assert!(record.get("scope").is_some(), "{record}");
        assert!(record["appended"].as_str().is_some(), "{record}");
    }
}

#[test]
fn records_without_a_version_still_verify_and_one_after_versioned_records_is_a_rewrite() {
    // Records as an earlier build wrote them: the digest of the record as written in the
    // file, no version, no signature.
    let dir = temp("legacy");
    std::fs::create_dir_all(&dir).unwrap();
    let mut previous = lattice_compliance::evidence::GENESIS.to_owned();
    let mut l = Vec::new();
    for seq in 1..=2u64 {
        let record = format!(
            r#"{{"seq":{seq},"previous":"{previous}","started":"2026-11-2{seq}T12:00:00Z","finished":"2026-11-2{seq}T12:00:01Z","summary":{{}},"files":{{}}}}"#
        );
        let digest = sha256_hex(record.as_bytes());
        l.push(format!(r#"{{"digest":"{digest}","record":{record}}}"#));
        previous = digest;
    }
    write_lines(&dir, &l);
    let v = verify(&dir, None).expect("the old format verifies");
    assert_eq!(v.records, 2);
    // A log moves to the new format and is extended.
    let report = scan_now("compliant");
    let a = append(&dir, &report, &[], None).unwrap();
    assert_eq!(a.seq, 3);
    assert_eq!(
        verify(&dir, None).unwrap().head.as_deref(),
        Some(a.digest.as_str())
    );
    // An unversioned record forged in after it is named.
    let mut l = lines(&dir);
    let record = format!(
        r#"{{"seq":4,"previous":"{}","started":"2026-12-30T12:00:00Z","finished":"2099-01-01T00:00:00Z","summary":{{}},"files":{{}}}}"#,
        a.digest
    );
    l.push(format!(
        r#"{{"digest":"{}","record":{record}}}"#,
        sha256_hex(record.as_bytes())
    ));
    write_lines(&dir, &l);
    let p = problems(&dir, None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (TamperKind::Edited, Some(4)));
    assert!(
        p[0].2.contains("unversioned format after versioned"),
        "{}",
        p[0].2
    );
}

/// The problems verification with trusted keys finds, as (kind, seq).
fn signed_problems(dir: &Path, keys: &[TrustedKey]) -> Vec<(TamperKind, Option<u64>)> {
    match verify_signed(dir, keys) {
        Ok(_) => Vec::new(),
        Err(VerifyError::Tampered { problems, .. }) => {
            problems.into_iter().map(|p| (p.kind, p.seq)).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_whole_chain_rewrite_verifies_as_a_chain_and_fails_on_signatures() {
    let (_, signer) = Signer::generate().unwrap();
    let keys = [signer.public()];
    let dir = log_of_three_signed("rewrite", Some(&signer));
    let v = verify_signed(&dir, &keys).expect("signed and intact");
    assert_eq!((v.records, v.signed, v.signatures_checked), (3, 3, true));

    // The rewriter makes run 2 clean and recomputes every digest and link after it.
    let original = lines(&dir);
    let mut previous = lattice_compliance::evidence::GENESIS.to_owned();
    let mut forged = Vec::new();
    for line in &original {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if v["record"]["seq"] == 2 {
            v["record"]["summary"]["soc2"]["checks"]["fail"] = Value::from(0);
        }
        v["record"]["previous"] = Value::from(previous.clone());
        rehash(&mut v);
        previous = v["digest"].as_str().unwrap().to_owned();
        forged.push(v);
    }
    // Kept signatures no longer match; stripped ones are missing.
    write_lines(
        &dir,
        &forged.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
    );
    assert!(
        verify(&dir, None).is_ok(),
        "a digest chain alone cannot tell"
    );
    assert_eq!(
        signed_problems(&dir, &keys),
        [(TamperKind::Forged, Some(2)), (TamperKind::Forged, Some(3))]
    );
    let stripped: Vec<String> = forged
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("signature");
            v.to_string()
        })
        .collect();
    write_lines(&dir, &stripped);
    assert_eq!(
        signed_problems(&dir, &keys),
        [
            (TamperKind::Unsigned, Some(1)),
            (TamperKind::Unsigned, Some(2)),
            (TamperKind::Unsigned, Some(3))
        ]
    );
    // Re-signed with the rewriter's own key: not a key the verifier trusts.
    let (_, mallory) = Signer::generate().unwrap();
    let resigned: Vec<String> = forged
        .iter()
        .map(|v| {
            let mut v = v.clone();
            let bytes = canonical(&v["record"]).unwrap();
            v["signature"] = serde_json::json!({
                "key": mallory.id(),
                "ed25519": base64_encode(&mallory.sign(bytes.as_bytes())),
            });
            v.to_string()
        })
        .collect();
    write_lines(&dir, &resigned);
    assert_eq!(signed_problems(&dir, &keys).len(), 3);
    assert!(
        signed_problems(&dir, &keys)
            .iter()
            .all(|(k, _)| *k == TamperKind::Unsigned)
    );
    // The original verifies again, and a key rotation (old and new key trusted) accepts it.
    write_lines(&dir, &original);
    assert!(verify_signed(&dir, &[mallory.public(), signer.public()]).is_ok());
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn times_only_move_forward() {
    let (_, signer) = Signer::generate().unwrap();
    let keys = [signer.public()];
    let dir = log_of_three_signed("backdated", Some(&signer));
    let before = std::fs::read(dir.join(CHAIN_FILE)).unwrap();

    // A run dated in the past (`--at`) is not appended, nor one dated in the future.
    for at in ["2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"] {
        let report = scan_world(&[case("compliant/world.yaml")], at);
        match append(&dir, &report, &[], Some(&signer)) {
            Err(EvidenceError::Time(m)) => assert!(m.contains("dated by the clock"), "{m}"),
            other => panic!("a run at {at} was appended: {other:?}"),
        }
    }
    assert_eq!(std::fs::read(dir.join(CHAIN_FILE)).unwrap(), before);

    // A record backdated by whoever holds the key (so correctly signed): verify names it.
    let mut l = lines(&dir);
    let mut v: Value = serde_json::from_str(&l[2]).unwrap();
    v["record"]["appended"] = Value::from("2026-01-01T00:00:00Z");
    v["record"]["started"] = Value::from("2026-01-01T00:00:00Z");
    v["record"]["finished"] = Value::from("2026-01-01T00:00:01Z");
    rehash(&mut v);
    let bytes = canonical(&v["record"]).unwrap();
    v["signature"]["ed25519"] = Value::from(base64_encode(&signer.sign(bytes.as_bytes())));
    l[2] = v.to_string();
    write_lines(&dir, &l);
    let p = signed_problems(&dir, &keys);
    assert_eq!(p, [(TamperKind::Backdated, Some(3))]);

    // A run dated an hour before it was recorded, even when signed: backdated.
    let mut v: Value = serde_json::from_str(&l[2]).unwrap();
    let appended: jiff::Timestamp =
        serde_json::from_str::<Value>(&l[1]).unwrap()["record"]["appended"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    v["record"]["appended"] =
        Value::from((appended + jiff::SignedDuration::from_secs(5)).to_string());
    v["record"]["started"] = Value::from("2026-01-01T00:00:00Z");
    rehash(&mut v);
    let bytes = canonical(&v["record"]).unwrap();
    v["signature"]["ed25519"] = Value::from(base64_encode(&signer.sign(bytes.as_bytes())));
    l[2] = v.to_string();
    write_lines(&dir, &l);
    assert_eq!(
        signed_problems(&dir, &keys),
        [(TamperKind::Backdated, Some(3))]
    );
}

#[test]
fn concurrent_writers_never_take_one_sequence_number() {
    let dir = temp("concurrent");
    let report = scan_now("compliant");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5 {
                    append(&dir, &report, &[], None).expect("append");
                }
            });
        }
    });
    let v = verify(&dir, None).expect("intact after concurrent appends");
    assert_eq!(v.records, 20);
    let seqs: Vec<u64> = lines(&dir)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["record"]["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
}

#[test]
fn times_at_the_ends_of_the_range_are_findings_not_crashes() {
    let dir = temp("extreme-times");
    std::fs::create_dir_all(&dir).unwrap();
    // jiff's smallest and largest timestamps: an hour before the one, or a minute after the
    // other, is out of range.
    let (min, max) = ("-009999-01-02T01:59:59Z", "9999-12-30T22:00:00Z");
    for (appended, started, backdated) in [
        (min, max, true),
        (max, min, true),
        (min, min, false),
        (max, max, false),
    ] {
        let mut line = serde_json::json!({"record": {
            "v": 2, "seq": 1, "previous": lattice_compliance::evidence::GENESIS,
            "appended": appended, "started": started, "finished": started,
            "summary": {}, "files": {},
        }});
        rehash(&mut line);
        write_lines(&dir, &[line.to_string()]);
        let p = problems(&dir, None);
        let kinds: Vec<TamperKind> = p.iter().map(|x| x.0).collect();
        let want = if backdated {
            vec![TamperKind::Backdated]
        } else {
            vec![]
        };
        assert_eq!(kinds, want, "{appended} {started}: {p:?}");
    }
}
