//! `lattice-policy migrate`: manifests written for upstream Lattice, rewritten in this
//! project's shapes (`lattice_schemas::manifest::upstream`), with every field that is not
//! carried over as it was reported at its file and line.
//!
//! A document already in this project's shape, or of another API group, is passed through
//! unchanged. Every migrated document is validated as `lattice-policy validate` would, and
//! one that does not validate is an error, not output that merely looks right.

use std::io::Write;
use std::path::{Path, PathBuf};

use lattice_schemas::diagnostics::{Severity, SourceFile};
use lattice_schemas::generate::to_yaml;
use lattice_schemas::manifest::upstream::{self, Change, Note};
use lattice_schemas::manifest::{self, human_path, yaml};
use lattice_schemas::validate::{input_files, input_name, read_bounded, validate_text};
use serde_json::Value;

use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// What became of the documents of one run.
#[derive(Default)]
struct Tally {
    unchanged: usize,
    migrated: usize,
    not_carried: usize,
    dropped: usize,
    rewritten: usize,
    invalid: usize,
}

/// One input file's output.
struct Output {
    path: PathBuf,
    text: String,
}

pub fn run(paths: &[PathBuf], out_dir: Option<&Path>) -> u8 {
    let (files, unreadable) = input_files(paths);
    for u in &unreadable {
        eprintln!("error: cannot read {u}");
    }
    if !unreadable.is_empty() || files.is_empty() {
        return EXIT_USAGE;
    }
    let root = common_parent(&files);
    let mut tally = Tally::default();
    let mut outputs = Vec::new();
    let mut failed = false;
    for path in &files {
        let name = input_name(path);
        let bytes = match read_bounded(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                failed = true;
                continue;
            }
        };
        let file = match manifest::source_from_bytes(&name, &bytes) {
            Ok(f) => f,
            Err(finding) => {
                eprint!("{}", crate::output::render(&finding));
                failed = true;
                continue;
            }
        };
        let relative_path = || path.strip_prefix(&root).unwrap_or(path).to_path_buf();
        // Cedar files need no shape change (policies without `@id` load as they are): they
        // are copied as they are, never left behind in silence.
        if path.extension().is_some_and(|e| e == "cedar") {
            if out_dir.is_some() {
                outputs.push(Output {
                    path: relative_path(),
                    text: file.text.clone(),
                });
            } else {
                eprintln!("{name}: a Cedar file, unchanged (not part of the YAML on stdout)");
            }
            continue;
        }
        let Some(text) = migrate_file(&file, &mut tally) else {
            failed = true;
            continue;
        };
        let relative = if path == Path::new("-") {
            PathBuf::from("stdin.yaml")
        } else {
            relative_path()
        };
        outputs.push(Output {
            path: relative,
            text,
        });
    }
    if failed {
        return EXIT_USAGE;
    }
    match out_dir {
        Some(dir) => {
            for o in &outputs {
                if let Err(e) = write_new(&dir.join(&o.path), &o.text) {
                    eprintln!("error: cannot write {}: {e}", dir.join(&o.path).display());
                    return EXIT_USAGE;
                }
            }
        }
        None => crate::output::emit(&outputs.iter().map(|o| o.text.as_str()).collect::<String>()),
    }
    eprintln!(
        "{} documents: {} migrated, {} unchanged (already this project's shape or not Lattice's), {} not carried over; {} fields dropped, {} rewritten{}",
        tally.migrated + tally.unchanged + tally.not_carried,
        tally.migrated,
        tally.unchanged,
        tally.not_carried,
        tally.dropped,
        tally.rewritten,
        if tally.invalid > 0 {
            format!("; {} migrated documents do not validate", tally.invalid)
        } else {
            String::new()
        }
    );
    if tally.dropped + tally.not_carried + tally.invalid > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// Migrates every document of `file`; `None` when the file is not YAML that can be read.
fn migrate_file(file: &std::sync::Arc<SourceFile>, tally: &mut Tally) -> Option<String> {
    let (docs, errors) = yaml::parse_documents(&file.text);
    if !errors.is_empty() {
        let loaded = manifest::load_source(file);
        for f in loaded
            .findings
            .iter()
            .filter(|f| f.code.starts_with("lattice::yaml"))
        {
            eprint!("{}", crate::output::render(f));
        }
        return None;
    }
    let mut out = format!("# migrated by lattice-policy migrate from {}\n", file.name);
    for doc in docs {
        if doc.value.is_null() {
            continue;
        }
        let group = doc
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.split_once('/'))
            .map_or("", |(g, _)| g);
        let ours = group == "lattice.dev" && already_ours(&doc.value);
        let kind = doc.value.get("kind").and_then(Value::as_str);
        if group != "lattice.dev" || (ours && kind != Some("CedarPolicy")) {
            tally.unchanged += 1;
            out.push_str(&to_yaml(&doc.value));
            continue;
        }
        let migration = if ours {
            upstream::name_policies(&doc.value)
        } else {
            upstream::migrate(&doc.value)
        };
        if ours && migration.notes.is_empty() {
            tally.unchanged += 1;
            out.push_str(&to_yaml(&doc.value));
            continue;
        }
        let spans = doc.spans(&file.text);
        let mut located: Vec<(usize, &Note)> = migration
            .notes
            .iter()
            .map(|n| (at_of(spans, n), n))
            .collect();
        located.sort_by_key(|(at, _)| *at);
        for (at, note) in located {
            report(file, at, &doc.value, note);
            match note.change {
                Change::Dropped => tally.dropped += 1,
                Change::Rewritten => tally.rewritten += 1,
                Change::NotCarried => {}
            }
        }
        let Some(value) = migration.value else {
            tally.not_carried += 1;
            continue;
        };
        tally.migrated += 1;
        let text = to_yaml(&value);
        let report = validate_text(&format!("{} (migrated)", file.name), &text);
        let errors: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        if !errors.is_empty() {
            tally.invalid += 1;
            for f in errors {
                eprint!("{}", crate::output::render(f));
            }
        }
        out.push_str(&text);
    }
    Some(out)
}

/// Whether `value` already loads, with no error, as this project's object.
fn already_ours(value: &Value) -> bool {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if upstream::upstream_only(kind) {
        return false;
    }
    let report = validate_text("document", &to_yaml(value));
    report.manifests.len() == 1
        && !report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error)
}

/// Where a note's field stands in the file: its key, else its value.
fn at_of(spans: &yaml::SpanMap, note: &Note) -> usize {
    spans
        .find(&note.pointer)
        .map(|s| s.key.clone().unwrap_or_else(|| s.value.clone()).start)
        .unwrap_or(0)
}

/// `file:line:column: dropped spec.x.y: reason`, at the key of the field in the upstream
/// document.
fn report(file: &SourceFile, at: usize, value: &Value, note: &Note) {
    let (line, col) = file.line_col(at);
    let path = if note.pointer.is_empty() {
        value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("document")
            .to_owned()
    } else {
        human_path(value, &note.pointer)
    };
    eprintln!(
        "{}:{line}:{col}: {} {path}: {}",
        file.name,
        note.change.label(),
        note.reason
    );
}

/// The deepest directory holding every file (for a single file, its directory).
fn common_parent(files: &[PathBuf]) -> PathBuf {
    let mut parents = files
        .iter()
        .filter(|p| *p != Path::new("-"))
        .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default());
    let Some(mut common) = parents.next() else {
        return PathBuf::new();
    };
    for p in parents {
        while !p.starts_with(&common) {
            if !common.pop() {
                return PathBuf::new();
            }
        }
    }
    common
}

/// Writes `text` at `path` without ever writing through a symlink: into a new file beside
/// it, then renamed over it (a rename replaces the name, not what a link points at).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(std::io::Error::other(
            "it exists and is not a regular file (a symlink, pipe or directory); not replaced",
        ));
    }
    let tmp = path.with_extension(format!("migrate-{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
