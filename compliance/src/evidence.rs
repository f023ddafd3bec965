//! A tamper-evident evidence log for audit periods: every scan appends one record to
//! `chain.jsonl` and keeps its renderings under `runs/<seq>/`.
//!
//! Each line is `{"digest": D, "record": R}` where `R` holds the run's sequence number,
//! time, snapshot digest, summary, the SHA-256 of each rendering, and `previous`: the digest
//! of the record before it (64 zeros for the first). `D` is the SHA-256 of `R` serialized
//! canonically (sorted keys, no whitespace). [`verify`] recomputes every digest and link and
//! names the records that were edited, deleted, inserted or reordered, and the renderings
//! that changed. Truncating the newest records leaves a valid shorter chain: keep the head
//! digest [`verify`] reports somewhere else (a ticket, the profile's status) and pass it back
//! as `expected_head` to detect that too.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::scan::ScanReport;

/// The log file inside an evidence directory.
pub const CHAIN_FILE: &str = "chain.jsonl";
/// The `previous` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of a record: SHA-256 of its canonical JSON.
fn digest_of(record: &Value) -> String {
    sha256_hex(
        serde_json::to_string(record)
            .expect("JSON values serialize")
            .as_bytes(),
    )
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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Appends one run: writes `renderings` (file name → content) under `runs/<seq>/` and a
/// record linking to the previous one. Refuses to extend a log that does not verify.
pub fn append(
    dir: &Path,
    report: &ScanReport,
    renderings: &[(String, Vec<u8>)],
) -> Result<Appended, EvidenceError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let verified = match verify(dir, None) {
        Ok(v) => v,
        // A new log starts here.
        Err(VerifyError::Empty(_)) => Verified {
            records: 0,
            head: None,
        },
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
        "seq": seq,
        "previous": verified.head.unwrap_or_else(|| GENESIS.to_owned()),
        "started": report.started,
        "finished": report.finished,
        "tool": format!("{} {}", report.tool.name, report.tool.version),
        "snapshot": report.snapshot_digest,
        "world": report.world_digest,
        "policies": report.policies_digest,
        "frameworks": report.frameworks_scanned,
        "summary": summary,
        "files": files,
    });
    let digest = digest_of(&record);
    let line = serde_json::to_string(&json!({"digest": digest, "record": record}))
        .expect("JSON values serialize");
    let chain = dir.join(CHAIN_FILE);
    // The log itself is appended to only as a regular file (verify refused anything else;
    // O_NOFOLLOW closes the window between that check and this open).
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&chain)
            .map_err(io(&chain))?
    };
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&chain))?;
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
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", CHAIN_FILE, self.line, self.message)
    }
}

/// A log that verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// The newest record's digest (none for an empty log).
    pub head: Option<String>,
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
/// pipe, device or symlink) and are read as streams with bounded buffers. With
/// `expected_head`, the newest record must have that digest (detects truncation).
pub fn verify(dir: &Path, expected_head: Option<&str>) -> Result<Verified, VerifyError> {
    let chain = dir.join(CHAIN_FILE);
    let lines = match regular_file(&chain) {
        Ok(Some(file)) => read_lines(file, &chain)?,
        Ok(None) => return Err(VerifyError::Empty(chain.display().to_string())),
        Err(message) => return Err(VerifyError::Unreadable(message)),
    };
    if lines.iter().all(|l| l.trim().is_empty()) {
        return Err(VerifyError::Empty(chain.display().to_string()));
    }
    verify_lines(dir, &lines, expected_head)
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
    expected_head: Option<&str>,
) -> Result<Verified, VerifyError> {
    let mut problems = Vec::new();
    let mut previous: Option<(u64, String)> = None;
    let mut count = 0u64;
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
        let parsed: Option<(String, Value)> =
            serde_json::from_str::<Value>(line).ok().and_then(|v| {
                let digest = v.get("digest")?.as_str()?.to_owned();
                let record = v.get("record")?.clone();
                Some((digest, record))
            });
        let Some((digest, record)) = parsed else {
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
        if digest_of(&record) != digest {
            problem(
                seq,
                TamperKind::Edited,
                format!("{name} was edited: its content no longer matches its digest"),
            );
        }
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
    let head = previous.map(|(_, d)| d);
    if let Some(want) = expected_head
        && head.as_deref() != Some(want)
    {
        problems.push(Tamper {
            line: 0,
            seq: None,
            kind: TamperKind::Deleted,
            message: format!(
                "the newest record is {} but {want} was expected: records were deleted from the end or replaced",
                head.as_deref().unwrap_or("(none)")
            ),
        });
    }
    if problems.is_empty() {
        Ok(Verified {
            records: count,
            head,
        })
    } else {
        Err(VerifyError::Tampered {
            problems,
            records: count,
        })
    }
}
