//! Evidence kept as one object per run (the operator's ConfigMap sink) rather than as one
//! log file: each run carries its sequence number, its digest, the digest of the run before
//! it and, when the writer holds a key, a signature, so the runs form the same kind of chain
//! as `chain.jsonl` and [`verify_runs`] names the same kinds of tampering.
//!
//! A run's digest is the lowercase hex SHA-256 of: the previous run's digest (empty for the
//! first run), then for each file in byte order of its name, the name's bytes followed by the
//! 32-byte SHA-256 of its content. Its signature is Ed25519 over the digest's hex text,
//! written `<key id>:<base64>`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use super::{Signer, Tamper, TamperKind, Verified, VerifyError, VerifyOptions};

/// The annotation holding a run's sequence number.
pub const SEQ_ANNOTATION: &str = "lattice.dev/evidence-seq";
/// The annotation holding a run's digest.
pub const DIGEST_ANNOTATION: &str = "lattice.dev/evidence-sha256";
/// The annotation holding the previous run's digest.
pub const PREVIOUS_ANNOTATION: &str = "lattice.dev/previous-evidence-sha256";
/// The annotation holding a run's signature.
pub const SIGNATURE_ANNOTATION: &str = "lattice.dev/evidence-signature";
/// The label naming the profile a run belongs to.
pub const PROFILE_LABEL: &str = "lattice.dev/compliance-profile";
/// The prefix of the ConfigMap (in the operator's namespace) that anchors a profile's head:
/// data `head` (the newest digest) and `seq`.
pub const HEAD_PREFIX: &str = "lattice-evidence-head-";

/// One run as its object holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// The object's name, to point at it.
    pub name: String,
    /// The annotations as written (absent ones are `None`).
    pub seq: Option<String>,
    pub digest: Option<String>,
    pub previous: Option<String>,
    pub signature: Option<String>,
    /// The files of the run, by name.
    pub files: BTreeMap<String, String>,
}

impl Run {
    /// A run from an object's name, annotations and data.
    pub fn from_object(
        name: &str,
        annotations: &BTreeMap<String, String>,
        files: BTreeMap<String, String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            seq: annotations.get(SEQ_ANNOTATION).cloned(),
            digest: annotations.get(DIGEST_ANNOTATION).cloned(),
            previous: annotations.get(PREVIOUS_ANNOTATION).cloned(),
            signature: annotations.get(SIGNATURE_ANNOTATION).cloned(),
            files,
        }
    }
}

/// The digest of a run whose predecessor's digest is `previous` (empty for the first).
pub fn run_digest(previous: &str, files: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    hash.update(previous.as_bytes());
    for (name, text) in files {
        hash.update(name.as_bytes());
        hash.update(Sha256::digest(text.as_bytes()));
    }
    format!("{:x}", hash.finalize())
}

/// The signature annotation of a run with `digest`.
pub fn sign_run(signer: &Signer, digest: &str) -> String {
    format!(
        "{}:{}",
        signer.id(),
        BASE64.encode(signer.sign(digest.as_bytes()))
    )
}

/// Verifies runs (in any order; they are put in sequence order) as [`super::verify`]
/// verifies a log: every digest recomputed, every link, no gap or repeat in sequence
/// numbers, signatures against the trusted keys when any is given, and the expected head.
/// No runs at all is [`VerifyError::Empty`].
pub fn verify_runs(runs: &[Run], options: &VerifyOptions<'_>) -> Result<Verified, VerifyError> {
    if runs.is_empty() {
        return Err(super::nothing_left("the sink".into(), options));
    }
    let mut problems = Vec::new();
    let mut problem = |run: &Run, seq: Option<u64>, kind: TamperKind, message: String| {
        problems.push(Tamper {
            line: 0,
            seq,
            kind,
            message: format!("{}: {message}", run.name),
        })
    };
    let mut ordered: Vec<(Option<u64>, &Run)> = runs
        .iter()
        .map(|r| (r.seq.as_deref().and_then(|s| s.parse().ok()), r))
        .collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.name.cmp(&b.1.name)));
    let mut previous: Option<(u64, String)> = None;
    let mut signed = 0;
    for (seq, run) in &ordered {
        let Some(seq) = *seq else {
            problem(
                run,
                None,
                TamperKind::Edited,
                "the run has no readable sequence number: it was edited".into(),
            );
            continue;
        };
        let name = format!("run {seq}");
        let expected = previous.as_ref().map_or(1, |(p, _)| p + 1);
        let mut linked = true;
        if seq < expected {
            linked = false;
            problem(
                run,
                Some(seq),
                TamperKind::Inserted,
                format!("{name} repeats a sequence number: a run was inserted"),
            );
        } else if seq > expected {
            linked = false;
            let missing = if seq - expected == 1 {
                format!("run {expected} was")
            } else {
                format!("runs {expected}–{} were", seq - 1)
            };
            problem(
                run,
                Some(seq),
                TamperKind::Deleted,
                format!("{missing} deleted before {name}"),
            );
        }
        let link = run.previous.clone().unwrap_or_default();
        let want_link = previous
            .as_ref()
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        if linked && link != want_link {
            problem(
                run,
                Some(seq),
                TamperKind::Inserted,
                format!(
                    "{name} does not link to the run before it: a run was inserted or replaced"
                ),
            );
        }
        let digest = run.digest.clone().unwrap_or_default();
        if run_digest(&link, &run.files) != digest {
            problem(
                run,
                Some(seq),
                TamperKind::Edited,
                format!("{name} was edited: its files no longer match its digest"),
            );
        }
        if run.signature.is_some() {
            signed += 1;
        }
        if !options.trusted_keys.is_empty() {
            let checked = super::check_signature(
                &name,
                run.signature.as_deref().and_then(|s| s.split_once(':')),
                Some(digest.as_bytes()),
                "its digest",
                options.trusted_keys,
            );
            if let Err((kind, message)) = checked {
                problem(run, Some(seq), kind, message);
            }
        }
        if seq >= expected {
            previous = Some((seq, digest));
        }
    }
    let verified = Verified {
        records: runs.len() as u64,
        head: previous.map(|(_, d)| d),
        newest: None,
        signed,
        signatures_checked: !options.trusted_keys.is_empty(),
    };
    super::conclude(problems, verified, options.expected_head, "run")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64, signer: Option<&Signer>) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut previous = String::new();
        for seq in 1..=n {
            let files = BTreeMap::from([
                ("report.json".to_owned(), format!("{{\"run\": {seq}}}")),
                ("report.md".to_owned(), format!("# run {seq}\n")),
            ]);
            let digest = run_digest(&previous, &files);
            runs.push(Run {
                name: format!("audit-{seq}"),
                seq: Some(seq.to_string()),
                digest: Some(digest.clone()),
                previous: Some(previous.clone()),
                signature: signer.map(|s| sign_run(s, &digest)),
                files,
            });
            previous = digest;
        }
        runs
    }

    fn kinds(runs: &[Run], options: &VerifyOptions<'_>) -> Vec<(TamperKind, Option<u64>)> {
        match verify_runs(runs, options) {
            Ok(_) => Vec::new(),
            Err(VerifyError::Tampered { problems, .. }) => {
                problems.into_iter().map(|p| (p.kind, p.seq)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_intact_chain_of_runs_verifies_in_any_listing_order() {
        let (_, signer) = Signer::generate().unwrap();
        let mut runs = chain(4, Some(&signer));
        runs.reverse();
        let keys = [signer.public()];
        let v = verify_runs(
            &runs,
            &VerifyOptions {
                expected_head: runs[0].digest.as_deref(),
                trusted_keys: &keys,
            },
        )
        .unwrap();
        assert_eq!((v.records, v.signed, v.signatures_checked), (4, 4, true));
    }

    #[test]
    fn each_attack_on_the_runs_is_named() {
        let (_, signer) = Signer::generate().unwrap();
        let keys = [signer.public()];
        let none = VerifyOptions::default();
        let signed = VerifyOptions {
            expected_head: None,
            trusted_keys: &keys,
        };

        let mut edited = chain(3, Some(&signer));
        edited[1]
            .files
            .insert("report.md".into(), "all passed".into());
        assert_eq!(kinds(&edited, &none), [(TamperKind::Edited, Some(2))]);

        // The newest run deleted: only the head kept elsewhere shows it.
        let full = chain(3, Some(&signer));
        let head = full[2].digest.clone().unwrap();
        let truncated = &full[..2];
        assert!(verify_runs(truncated, &none).is_ok());
        let anchored = VerifyOptions {
            expected_head: Some(&head),
            trusted_keys: &[],
        };
        assert_eq!(kinds(truncated, &anchored), [(TamperKind::Deleted, None)]);

        let mut gap = chain(3, None);
        gap.remove(1);
        assert_eq!(kinds(&gap, &none), [(TamperKind::Deleted, Some(3))]);

        // Every run rewritten with recomputed digests: only signatures show it.
        let mut rewritten = chain(3, None);
        for run in &mut rewritten {
            run.files.insert("report.md".into(), "all passed".into());
        }
        let mut previous = String::new();
        for run in &mut rewritten {
            let d = run_digest(&previous, &run.files);
            run.previous = Some(previous.clone());
            run.digest = Some(d.clone());
            previous = d;
        }
        assert!(verify_runs(&rewritten, &none).is_ok());
        assert_eq!(
            kinds(&rewritten, &signed),
            [
                (TamperKind::Unsigned, Some(1)),
                (TamperKind::Unsigned, Some(2)),
                (TamperKind::Unsigned, Some(3))
            ]
        );
        // …and keeping the old signatures does not help the rewriter.
        let original = chain(3, Some(&signer));
        for (r, o) in rewritten.iter_mut().zip(&original) {
            r.signature = o.signature.clone();
        }
        assert_eq!(kinds(&rewritten, &signed).len(), 3);
        assert!(
            kinds(&rewritten, &signed)
                .iter()
                .all(|(k, _)| *k == TamperKind::Forged)
        );
        // A key the verifier does not trust signs nothing it accepts.
        let (_, other) = Signer::generate().unwrap();
        let foreign = chain(1, Some(&other));
        assert_eq!(kinds(&foreign, &signed), [(TamperKind::Unsigned, Some(1))]);
    }
}
