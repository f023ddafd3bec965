//! A tamper-evident evidence log for audit periods: every scan appends one record to
//! `chain.jsonl` and keeps its renderings under `runs/<seq>/`.
//!
//! Each line is `{"digest": D, "record": R, "signature": S}`.
//!
//! - `R` holds the format version (`"v": 2`), the run's sequence number, when it was
//!   appended (the clock's time, never the scan's `--at`), when it started and finished, the
//!   snapshot, world and policy digests, its scope (namespaces and profile), the SHA-256 of
//!   its subject inventory, the summary, the SHA-256 of each rendering, and `previous`: the
//!   digest of the record before it (64 zeros for the first).
//! - `D` is the lowercase hex SHA-256 of `R` in the JSON Canonicalization Scheme (RFC 8785;
//!   see [`canonical`]), so an outside verifier recomputes it with any JCS implementation.
//! - `S`, when the writer holds a signing key, is `{"key": id, "ed25519": base64}`: the
//!   Ed25519 signature of the same canonical bytes of `R` (see [`keys`]).
//!
//! [`verify`] recomputes every digest and link and names the records that were edited,
//! deleted, inserted, reordered or backdated, and the renderings that changed. A digest chain
//! alone can be rewritten end to end by whoever can write the file; with trusted public keys,
//! every record must also carry a valid signature by one of them, which a rewriter cannot
//! make. Truncating the newest records leaves a valid shorter chain: keep the head digest
//! somewhere else (the operator writes it to the profile's status and to a ConfigMap) and
//! pass it back as the expected head to detect that too.
//!
//! Records written before the format had a version (no `"v"`) are still verified: their
//! digest is the SHA-256 of the record as written in the file, and they carry no signature.
//!
//! Appends take an exclusive lock on `chain.lock`, so two writers never take one sequence
//! number.

pub mod canonical;
pub mod keys;
pub mod runs;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use keys::{KeyError, Signer, TrustedKey};

use crate::scan::ScanReport;

/// The log file inside an evidence directory.
pub const CHAIN_FILE: &str = "chain.jsonl";
/// The file appends lock.
pub const LOCK_FILE: &str = "chain.lock";
/// The `previous` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The record format this build writes.
pub const RECORD_VERSION: u64 = 2;
/// The longest a run may have started before it is appended. A scan takes seconds to
/// minutes; an older start is a run dated in the past (`--at`), which is no evidence of
/// what held at that time.
pub const MAX_RUN_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);
/// How far ahead of the clock a run may say it started (clocks of one host agree; this
/// only absorbs rounding).
const CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a record's digest and signature cover: its canonical bytes, or for a record
/// without a version, the record as written in the file.
fn signed_bytes(record: &Value) -> Result<Vec<u8>, String> {
    match record.get("v") {
        None => Ok(serde_json::to_string(record)
            .map_err(|e| e.to_string())?
            .into_bytes()),
        Some(v) if v.as_u64() == Some(RECORD_VERSION) => {
            canonical::canonical(record).map(String::into_bytes)
        }
        Some(v) => Err(format!(
            "the record's format version {v} is not one this build knows ({RECORD_VERSION})"
        )),
    }
}

/// What was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub digest: String,
    /// Where the renderings were written.
    pub dir: PathBuf,
}

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("cannot use evidence directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the evidence log in {dir} is not intact ({} problem(s)); run `lattice-policy compliance verify {dir}` and resolve it before appending", problems.len())]
    Broken { dir: PathBuf, problems: Vec<Tamper> },
    /// The run's times would put the log out of order: evidence is dated by the clock, and
    /// times only move forward.
    #[error("{0}")]
    Time(String),
    #[error("the record cannot be written: {0}")]
    Record(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Opens `path` for writing without following a symlink.
fn open_nofollow(path: &Path, append: bool) -> Result<File, EvidenceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).custom_flags(libc::O_NOFOLLOW);
    if append {
        options.append(true);
    } else {
        options.write(true);
    }
    options.open(path).map_err(io(path))
}

/// Whether a run that started at `started` may be recorded at `now` after a newest record
/// appended at `newest`.
fn check_times(
    started: &str,
    now: jiff::Timestamp,
    newest: Option<jiff::Timestamp>,
) -> Result<(), EvidenceError> {
    let started: jiff::Timestamp = started.parse().map_err(|e| {
        EvidenceError::Time(format!(
            "the run's start `{started}` is not an RFC 3339 time: {e}"
        ))
    })?;
    if let Some(newest) = newest
        && now < newest
    {
        return Err(EvidenceError::Time(format!(
            "the clock reads {now}, before the newest record ({newest}); times in the log only move forward, so fix the clock before appending"
        )));
    }
    if now
        .checked_add(CLOCK_SKEW)
        .is_ok_and(|latest| started > latest)
    {
        return Err(EvidenceError::Time(format!(
            "the run says it started at {started}, after the clock's {now}; evidence is dated by the clock"
        )));
    }
    if now
        .checked_sub(MAX_RUN_AGE)
        .is_ok_and(|earliest| earliest > started)
    {
        return Err(EvidenceError::Time(format!(
            "the run started at {started}, more than an hour before it is recorded ({now}); evidence is dated by the clock, so a scan `--at` another time is not appended"
        )));
    }
    Ok(())
}

/// Appends one run: writes `renderings` (file name → content) under `runs/<seq>/` and a
/// record linking to the previous one, signed when `signer` is given. Holds an exclusive
/// lock for the whole append, refuses to extend a log that does not verify, and refuses a
/// run dated more than [`MAX_RUN_AGE`] before the clock or a clock behind the newest record.
pub fn append(
    dir: &Path,
    report: &ScanReport,
    renderings: &[(String, Vec<u8>)],
    signer: Option<&Signer>,
) -> Result<Appended, EvidenceError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = open_nofollow(&lock_path, false)?;
    // Released when `lock` is dropped at the end of this call.
    lock.lock().map_err(io(&lock_path))?;
    let verified = match verify(dir, &VerifyOptions::default()) {
        Ok(v) => v,
        // A new log starts here.
        Err(VerifyError::Empty(_)) => Verified::default(),
        Err(VerifyError::Io(e)) => return Err(e),
        Err(VerifyError::Unreadable(message)) => {
            return Err(EvidenceError::Io {
                path: dir.join(CHAIN_FILE),
                source: std::io::Error::other(message),
            });
        }
        Err(VerifyError::Tampered { problems, .. }) => {
            return Err(EvidenceError::Broken {
                dir: dir.to_owned(),
                problems,
            });
        }
    };
    let now = jiff::Timestamp::now();
    check_times(&report.started, now, verified.newest)?;
    let seq = verified.records + 1;
    let run_dir = dir.join("runs").join(format!("{seq:06}"));
    fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    let mut files = serde_json::Map::new();
    for (name, bytes) in renderings {
        // Never written through a symlink or over anything already there: a run file that
        // exists (planted, or a link elsewhere) is an error, not a target.
        let plain = Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || name.contains('/') {
            return Err(EvidenceError::Io {
                path: run_dir.join(name),
                source: std::io::Error::other("a run file name must be a plain file name"),
            });
        }
        let path = run_dir.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(io(&path))?;
        files.insert(
            name.clone(),
            json!({"path": format!("runs/{seq:06}/{name}"), "sha256": sha256_hex(bytes)}),
        );
    }
    let summary: serde_json::Map<String, Value> = report
        .frameworks
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                json!({"checks": f.check_tally, "controls": f.control_tally}),
            )
        })
        .collect();
    let record = json!({
        "v": RECORD_VERSION,
        "seq": seq,
        "previous": verified.head.unwrap_or_else(|| GENESIS.to_owned()),
        "appended": now.to_string(),
        "started": report.started,
        "finished": report.finished,
        "tool": format!("{} {}", report.tool.name, report.tool.version),
        "snapshot": report.snapshot_digest,
        "world": report.world_digest,
        "policies": report.policies_digest,
        "frameworks": report.frameworks_scanned,
        "scope": {"namespaces": report.namespaces, "profile": report.profile},
        "inventory": report.subject_inventory_sha256,
        "summary": summary,
        "files": files,
    });
    let bytes = signed_bytes(&record).map_err(EvidenceError::Record)?;
    let digest = sha256_hex(&bytes);
    let mut line = json!({"digest": digest, "record": record});
    if let Some(signer) = signer {
        line["signature"] =
            json!({"key": signer.id(), "ed25519": BASE64.encode(signer.sign(&bytes))});
    }
    let line = serde_json::to_string(&line).map_err(|e| EvidenceError::Record(e.to_string()))?;
    let chain = dir.join(CHAIN_FILE);
    // The log itself is appended to only as a regular file (verify refused anything else;
    // O_NOFOLLOW closes the window between that check and this open).
    let mut f = open_nofollow(&chain, true)?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&chain))?;
    drop(lock);
    Ok(Appended {
        seq,
        digest,
        dir: run_dir,
    })
}

/// One thing wrong with a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tamper {
    /// 1-based line in `chain.jsonl` (0 for the log as a whole).
    pub line: usize,
    /// The record's sequence number, when readable.
    pub seq: Option<u64>,
    pub kind: TamperKind,
    pub message: String,
}

/// The kinds of tampering a log can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamperKind {
    /// The record's content does not match its digest, or the line is not a record.
    Edited,
    /// Records are missing before this one (a gap in sequence numbers), or at the end.
    Deleted,
    /// A record that does not belong (a repeated sequence number, or a link to a record
    /// that is not the one before it).
    Inserted,
    /// Sequence numbers go backwards.
    Reordered,
    /// A rendering of a run was changed or removed.
    FileChanged,
    /// Keys are trusted, and the record carries no signature by one of them.
    Unsigned,
    /// The record's signature is not its signer's signature of its content: it was rewritten.
    Forged,
    /// The record's times go backwards, or it records a run dated well before it was
    /// appended.
    Backdated,
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            // The log as a whole, or a run kept outside a log file.
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", CHAIN_FILE, self.line, self.message)
        }
    }
}

/// A log that verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// The newest record's digest (none for an empty log).
    pub head: Option<String>,
    /// When the newest record was appended (or, for a record without a version, finished).
    pub newest: Option<jiff::Timestamp>,
    /// Records that carry a signature.
    pub signed: u64,
    /// Whether every record's signature was checked against a trusted key (only when keys
    /// were given; then every record is signed by one of them).
    pub signatures_checked: bool,
}

/// What [`verify`] checks beyond the log itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// The digest the newest record must have, kept outside the log (detects truncation).
    pub expected_head: Option<&'a str>,
    /// Keys whose signatures are accepted. When any is given, every record must be signed
    /// by one of them (detects a rewritten chain).
    pub trusted_keys: &'a [TrustedKey],
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Io(#[from] EvidenceError),
    /// No log, or one without a record: nothing was verified. Deleting the log must not
    /// read as "intact".
    #[error("{0}: there is no evidence log here (no record to verify)")]
    Empty(String),
    /// The log is not a regular file (a pipe, a device, a symlink) or a line is too long.
    #[error("{0}")]
    Unreadable(String),
    #[error("the evidence log is not intact: {} problem(s)", problems.len())]
    Tampered {
        problems: Vec<Tamper>,
        /// How many lines were read.
        records: u64,
    },
}

/// The longest line of a log read; a longer one is refused rather than held in memory.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Verifies the log in `dir`. An absent or empty log is [`VerifyError::Empty`]: a deleted
/// log must not verify as intact. The log and every run file must be regular files (not a
/// pipe, device or symlink) and are read as streams with bounded buffers. See
/// [`VerifyOptions`] for the expected head and trusted keys.
pub fn verify(dir: &Path, options: &VerifyOptions<'_>) -> Result<Verified, VerifyError> {
    let chain = dir.join(CHAIN_FILE);
    let lines = match regular_file(&chain) {
        Ok(Some(file)) => read_lines(file, &chain)?,
        Ok(None) => Vec::new(),
        Err(message) => return Err(VerifyError::Unreadable(message)),
    };
    if lines.iter().all(|l| l.trim().is_empty()) {
        return Err(nothing_left(chain.display().to_string(), options));
    }
    verify_lines(dir, &lines, options)
}

/// No record at all: nothing verified, or, when a head was expected, everything deleted.
fn nothing_left(place: String, options: &VerifyOptions<'_>) -> VerifyError {
    match options.expected_head {
        None => VerifyError::Empty(place),
        Some(head) => VerifyError::Tampered {
            problems: vec![Tamper {
                line: 0,
                seq: None,
                kind: TamperKind::Deleted,
                message: format!(
                    "{place} holds no record, but the head {head} was expected: every record was deleted"
                ),
            }],
            records: 0,
        },
    }
}

/// Opens `path` if it is a regular file (`None` when absent), never following a symlink
/// and never opening a pipe or device, which would block or never end.
fn regular_file(path: &Path) -> Result<Option<File>, String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.file_type().is_file() => Err(format!(
            "{} is not a regular file (a symlink, pipe or device); evidence is read only from regular files",
            path.display()
        )),
        Ok(_) => File::open(path)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
    }
}

/// The log's lines, each at most [`MAX_RECORD_BYTES`].
fn read_lines(file: File, path: &Path) -> Result<Vec<String>, VerifyError> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| VerifyError::Unreadable(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_RECORD_BYTES {
            return Err(VerifyError::Unreadable(format!(
                "{}: line {} is longer than {MAX_RECORD_BYTES} bytes; no record is",
                path.display(),
                lines.len() + 1
            )));
        }
        lines.push(
            String::from_utf8_lossy(&line)
                .trim_end_matches('\n')
                .to_owned(),
        );
    }
    Ok(lines)
}

/// SHA-256 of a run file, streamed; `None` when it is no regular file or cannot be read.
fn file_digest(path: &Path) -> Option<String> {
    let mut file = regular_file(path).ok()??;
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).ok()?;
    Some(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn verify_lines(
    dir: &Path,
    lines: &[String],
    options: &VerifyOptions<'_>,
) -> Result<Verified, VerifyError> {
    let mut problems = Vec::new();
    let mut previous: Option<(u64, String)> = None;
    let mut count = 0u64;
    let mut signed = 0u64;
    let mut newest: Option<jiff::Timestamp> = None;
    let mut versioned = false;
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.as_str();
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        let mut problem = |seq: Option<u64>, kind: TamperKind, message: String| {
            problems.push(Tamper {
                line: line_no,
                seq,
                kind,
                message,
            })
        };
        let parsed: Option<(String, Value, Option<Value>)> =
            serde_json::from_str::<Value>(line).ok().and_then(|v| {
                let digest = v.get("digest")?.as_str()?.to_owned();
                let record = v.get("record")?.clone();
                Some((digest, record, v.get("signature").cloned()))
            });
        let Some((digest, record, signature)) = parsed else {
            problem(
                None,
                TamperKind::Edited,
                "the line is not a record: it was edited".into(),
            );
            previous = None;
            continue;
        };
        let seq = record.get("seq").and_then(Value::as_u64);
        let link = record
            .get("previous")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = seq.map_or("the record".to_owned(), |s| format!("record {s}"));
        let bytes = signed_bytes(&record);
        match &bytes {
            Ok(b) if sha256_hex(b) == digest => {}
            Ok(_) => problem(
                seq,
                TamperKind::Edited,
                format!("{name} was edited: its content no longer matches its digest"),
            ),
            Err(e) => problem(seq, TamperKind::Edited, format!("{name} was edited: {e}")),
        }
        // A record without a version after one with: an old-format record was forged in,
        // since a log only ever moves to the newer format.
        if record.get("v").is_some() {
            versioned = true;
        } else if versioned {
            problem(
                seq,
                TamperKind::Edited,
                format!(
                    "{name} is in the unversioned format after versioned records: it was rewritten"
                ),
            );
        }
        if signature.is_some() {
            signed += 1;
        }
        if !options.trusted_keys.is_empty() {
            let signature = signature.as_ref().map(|s| {
                let field = |f: &str| s.get(f).and_then(Value::as_str).unwrap_or_default();
                (field("key"), field("ed25519"))
            });
            check_signature(
                &name,
                signature,
                bytes.as_deref().ok(),
                "its content",
                options.trusted_keys,
            )
            .unwrap_or_else(|(kind, message)| problem(seq, kind, message));
        }
        newest = check_record_times(&name, &record, newest).unwrap_or_else(|(at, message)| {
            problem(seq, TamperKind::Backdated, message);
            at
        });
        let mut ordered = true;
        if let Some(s) = seq {
            let expected = previous.as_ref().map_or(1, |(p, _)| p + 1);
            if !seen.insert(s) {
                ordered = false;
                problem(
                    seq,
                    TamperKind::Inserted,
                    format!("{name} repeats a sequence number: a record was inserted"),
                );
            } else if s < expected {
                ordered = false;
                problem(
                    seq,
                    TamperKind::Reordered,
                    format!(
                        "{name} comes after record {}: records were reordered",
                        expected - 1
                    ),
                );
            } else if s > expected {
                ordered = false;
                let missing = if s - expected == 1 {
                    format!("record {expected} was")
                } else {
                    format!("records {expected}–{} were", s - 1)
                };
                problem(
                    seq,
                    TamperKind::Deleted,
                    format!("{missing} deleted before {name}"),
                );
            }
        }
        let expected_link = previous
            .as_ref()
            .map_or(GENESIS.to_owned(), |(_, d)| d.clone());
        if ordered && link != expected_link {
            problem(
                seq,
                TamperKind::Inserted,
                format!(
                    "{name} does not link to the record before it: a record was inserted or replaced"
                ),
            );
        }
        for (file, entry) in record
            .get("files")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let path = entry
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let want = entry
                .get("sha256")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // A path outside the directory is itself a sign of tampering.
            let safe = !path.is_empty()
                && Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            match safe.then(|| file_digest(&dir.join(path))).flatten() {
                Some(digest) => {
                    if digest != want {
                        problem(
                            seq,
                            TamperKind::FileChanged,
                            format!("{name}: `{file}` ({path}) was changed after the run"),
                        );
                    }
                }
                None => problem(
                    seq,
                    TamperKind::FileChanged,
                    format!("{name}: `{file}` ({path}) is missing or not a regular file"),
                ),
            }
        }
        previous = Some((seq.unwrap_or(0), digest));
    }
    let verified = Verified {
        records: count,
        head: previous.map(|(_, d)| d),
        newest,
        signed,
        signatures_checked: !options.trusted_keys.is_empty(),
    };
    conclude(problems, verified, options.expected_head, "record")
}

/// Checks a signature (the signing key's id and the base64 Ed25519 signature) of `message`
/// against the trusted keys; `what` names what was signed, for the message. Shared by the
/// log and by runs kept as objects ([`runs`]).
fn check_signature(
    name: &str,
    signature: Option<(&str, &str)>,
    message: Option<&[u8]>,
    what: &str,
    trusted: &[TrustedKey],
) -> Result<(), (TamperKind, String)> {
    let Some((key, signature)) = signature else {
        return Err((
            TamperKind::Unsigned,
            format!("{name} is not signed, and signatures are required"),
        ));
    };
    let Some(trusted) = trusted.iter().find(|k| k.id() == key) else {
        return Err((
            TamperKind::Unsigned,
            format!("{name} is signed by key `{key}`, which is not a trusted key"),
        ));
    };
    let valid = BASE64
        .decode(signature)
        .ok()
        .zip(message)
        .is_some_and(|(sig, message)| trusted.verifies(message, &sig));
    if valid {
        Ok(())
    } else {
        Err((
            TamperKind::Forged,
            format!("{name}'s signature by key `{key}` does not match {what}: it was rewritten"),
        ))
    }
}

/// The verdict on a log or a set of runs once each was checked: the newest must be the
/// expected head, and any problem makes it tampered. `unit` names what was verified
/// (`record`, `run`).
fn conclude(
    mut problems: Vec<Tamper>,
    verified: Verified,
    expected_head: Option<&str>,
    unit: &str,
) -> Result<Verified, VerifyError> {
    if let Some(want) = expected_head
        && verified.head.as_deref() != Some(want)
    {
        problems.push(Tamper {
            line: 0,
            seq: None,
            kind: TamperKind::Deleted,
            message: format!(
                "the newest {unit} is {} but {want} was expected: {unit}s were deleted from the end or replaced",
                verified.head.as_deref().unwrap_or("(none)")
            ),
        });
    }
    if problems.is_empty() {
        Ok(verified)
    } else {
        Err(VerifyError::Tampered {
            problems,
            records: verified.records,
        })
    }
}

/// The time a record was appended (for a record without a version, when its run finished),
/// and whether it moves the log forward: not before `newest`, and for a versioned record,
/// a run that started no later than it was appended and no more than [`MAX_RUN_AGE`]
/// before. On a problem, the time to carry on with and why.
#[allow(clippy::type_complexity)]
fn check_record_times(
    name: &str,
    record: &Value,
    newest: Option<jiff::Timestamp>,
) -> Result<Option<jiff::Timestamp>, (Option<jiff::Timestamp>, String)> {
    let time = |field: &str| {
        record
            .get(field)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let versioned = record.get("v").is_some();
    let at = if versioned {
        time("appended")
    } else {
        time("finished")
    };
    let Some(at) = at else {
        return Err((
            newest,
            format!("{name} has no readable time it was recorded"),
        ));
    };
    if let Some(newest) = newest
        && at < newest
    {
        return Err((
            Some(newest),
            format!(
                "{name} was recorded at {at}, before the record ahead of it ({newest}): it was backdated"
            ),
        ));
    }
    if versioned {
        match time("started") {
            // Checked: a hostile record's times sit at the ends of the range, where plain
            // arithmetic would overflow.
            Some(started)
                if at
                    .checked_add(CLOCK_SKEW)
                    .is_ok_and(|latest| started > latest) =>
            {
                return Err((
                    Some(at),
                    format!("{name}'s run started at {started}, after it was recorded ({at})"),
                ));
            }
            Some(started)
                if at
                    .checked_sub(MAX_RUN_AGE)
                    .is_ok_and(|earliest| earliest > started) =>
            {
                return Err((
                    Some(at),
                    format!(
                        "{name}'s run is dated {started}, more than an hour before it was recorded ({at}): it was backdated"
                    ),
                ));
            }
            Some(_) => {}
            None => {
                return Err((Some(at), format!("{name} has no readable start time")));
            }
        }
    }
    Ok(Some(at))
}
