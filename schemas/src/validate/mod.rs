//! `lattice-policy validate`: manifests and policies checked the way a careful reviewer
//! would, before anything reaches a cluster.
//!
//! Three layers, each reported with file:line:column:
//! 1. syntax: YAML (with duplicate keys) and Cedar parse errors;
//! 2. schema: every Lattice document against its kind's strict JSON Schema (unknown fields
//!    are errors, as with `kubectl --validate=strict`), every policy strictly against
//!    `lattice.cedarschema`, with unique `@id`s;
//! 3. semantics: what a schema cannot say (placeholders naming undeclared resources,
//!    duplicate ports, replicas above the autoscaling maximum, secrets without a provider,
//!    and the rest in `kinds.rs` and `workload.rs`).

pub mod format;
mod kinds;
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

use crate::cedar;
use crate::diagnostics::{Finding, Severity, SourceFile};
use crate::manifest::{self, Manifest};

pub use kinds::{EVIDENCE_FORMATS, FRAMEWORKS};

/// Where semantic rules put their findings.
pub(crate) struct Ctx<'a> {
    pub m: &'a Manifest,
    out: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    pub fn push(&mut self, f: Finding) {
        self.out.push(f);
    }
}

/// The outcome of validating some paths.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Files read.
    pub files: usize,
    /// Lattice objects (and Namespaces) checked.
    pub objects: usize,
    /// Cedar policies checked (in `.cedar` files and CedarPolicy objects).
    pub policies: usize,
    /// Documents of other API groups, not checked: (file, apiVersion, kind).
    pub skipped: Vec<(String, String, String)>,
    /// Paths that could not be read at all.
    pub unreadable: Vec<String>,
    /// The objects that loaded, for callers that go on to use them.
    pub manifests: Vec<Manifest>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count()
    }
}

/// Validates files and directories (recursively: `*.yaml`, `*.yml`, `*.cedar`).
pub fn validate_paths(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    let (files, unreadable) = input_files(paths);
    report.unreadable = unreadable;
    // Files are independent until the cross-file checks below, so they are read and
    // checked on every core; merging in path order keeps the report deterministic.
    let checked: Vec<FileCheck> = files.par_iter().map(|p| check_file(p)).collect();
    let mut partial = Vec::new();
    let mut cedar_by_dir: BTreeMap<PathBuf, Vec<(Arc<SourceFile>, cedar::PolicyCheck)>> =
        BTreeMap::new();
    // Every file's manifests are moved into one vector, sized once (a manifest is about a
    // kilobyte, and an estate has tens of thousands).
    report
        .manifests
        .reserve(checked.iter().map(|c| c.report.manifests.len()).sum());
    for c in checked {
        let FileCheck {
            report: r,
            partial: p,
            cedar,
        } = c;
        report.files += r.files;
        report.policies += r.policies;
        report.findings.extend(r.findings);
        report.skipped.extend(r.skipped);
        report.unreadable.extend(r.unreadable);
        report.manifests.extend(r.manifests);
        partial.extend(p);
        if let Some((dir, file, check)) = cedar {
            cedar_by_dir.entry(dir).or_default().push((file, check));
        }
    }
    for files in cedar_by_dir.values() {
        duplicate_ids_across_files(files, &mut report.findings);
    }
    check_manifests(&mut report, &partial);
    report
        .findings
        .sort_by(|a, b| (&a.file.name, a.span.start).cmp(&(&b.file.name, b.span.start)));
    report
}

/// The files the named paths hold, as every command that reads manifests finds them:
/// directories searched for `*.yaml`, `*.yml` and `*.cedar` (not through symlinks, hidden or
/// build directories), a file or stream named explicitly read whatever its name, `-` for
/// standard input. A named path that yields nothing is an error, never an empty success.
pub fn input_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for p in paths {
        let (files_before, unreadable_before) = (files.len(), unreadable.len());
        collect(p, true, 0, &mut files, &mut unreadable);
        if files.len() == files_before && unreadable.len() == unreadable_before {
            unreadable.push(format!(
                "{}: holds no *.yaml, *.yml or *.cedar file to check",
                p.display()
            ));
        }
    }
    (files, unreadable)
}

/// How an input is named in diagnostics: its path, or `<stdin>` for `-`.
pub fn input_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads a file, standard input (`-`) or a stream, never past one byte more than a manifest
/// may hold (`/dev/zero` ends there), so the size check refuses it rather than memory
/// running out.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let limit = (manifest::MAX_FILE_BYTES + 1) as u64;
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path)?
            .take(limit)
            .read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// What checking one file found, before the cross-file checks.
#[derive(Default)]
struct FileCheck {
    report: Report,
    /// Objects that failed their schema but could be read, for the semantic rules.
    partial: Vec<Manifest>,
    /// A Cedar file's directory, source and check, for duplicate `@id`s across files.
    cedar: Option<(PathBuf, Arc<SourceFile>, cedar::PolicyCheck)>,
}

fn check_file(path: &Path) -> FileCheck {
    let mut out = FileCheck::default();
    let report = &mut out.report;
    let name = input_name(path);
    let bytes = match read_bounded(path) {
        Ok(b) => b,
        Err(e) => {
            report.unreadable.push(format!("{name}: {e}"));
            return out;
        }
    };
    report.files += 1;
    let file = match manifest::source_from_bytes(&name, &bytes) {
        Ok(f) => f,
        Err(finding) => {
            report.findings.push(finding);
            return out;
        }
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("cedar") => {
            let check = check_cedar_file(&file, report);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            out.cedar = Some((dir, file, check));
        }
        _ if path.file_name().is_some_and(|n| n == "pack.yaml") => check_pack(&file, report),
        _ => {
            let loaded = manifest::load_source(&file);
            report.findings.extend(loaded.findings);
            report.skipped.extend(loaded.skipped);
            report.manifests.extend(loaded.manifests);
            out.partial.extend(loaded.partial);
        }
    }
    out
}

/// Validates manifests given as text (one file).
pub fn validate_text(name: &str, text: &str) -> Report {
    let file = SourceFile::new(name, text);
    checked(manifest::load_source(&file))
}

/// Validates one object that arrived already parsed (an AdmissionReview's): the same checks
/// as [`validate_text`], with findings named by path instead of place in a text.
pub fn validate_value(name: &str, value: serde_json::Value) -> Report {
    checked(manifest::load_json(name, value))
}

/// The report of one loaded file (or object), its semantic rules run.
fn checked(loaded: manifest::Loaded) -> Report {
    let mut report = Report {
        files: 1,
        findings: loaded.findings,
        skipped: loaded.skipped,
        manifests: loaded.manifests,
        ..Report::default()
    };
    check_manifests(&mut report, &loaded.partial);
    report
}

/// Runs the semantic rules over the loaded objects and over `partial` ones (which failed
/// their schema but could be read), and finds objects defined twice.
fn check_manifests(report: &mut Report, partial: &[Manifest]) {
    let all: Vec<&Manifest> = report.manifests.iter().chain(partial).collect();
    // The rules look at one object at a time, so they run on every core.
    let by_rules: Vec<Vec<Finding>> = all
        .par_iter()
        .map(|m| {
            let mut out = Vec::new();
            kinds::check(&mut Ctx { m, out: &mut out });
            out
        })
        .collect();
    let mut seen: HashMap<(String, Option<String>, String), &Manifest> = HashMap::new();
    let mut findings = Vec::new();
    for (m, from_rules) in all.into_iter().zip(by_rules) {
        report.objects += 1;
        if let manifest::Object::CedarPolicy(p) = &m.object {
            report.policies += cedar::statement_spans(&p.spec.policies).len();
        }
        let key = (
            m.object.kind_name().to_owned(),
            m.object.namespace().map(str::to_owned),
            m.object.name().to_owned(),
        );
        if let Some(first) = seen.get(&key) {
            let (line, _) = first.file.line_col(first.span("").start);
            findings.push(
                m.error_at(
                    "lattice::manifest::duplicate-object",
                    "/metadata/name",
                    format!("{} is defined twice", m.describe()),
                )
                .with_help(format!("first defined in {}:{line}", first.file.name)),
            );
        } else {
            seen.insert(key, m);
        }
        findings.extend(from_rules);
    }
    report.findings.extend(findings);
}

/// How deep directories are searched; deeper ones are reported, not skipped silently.
pub const MAX_DEPTH: usize = 32;

fn collect(
    path: &Path,
    explicit: bool,
    depth: usize,
    out: &mut Vec<PathBuf>,
    unreadable: &mut Vec<String>,
) {
    // `-` is standard input, read as a stream.
    if explicit && path == Path::new("-") {
        out.push(path.to_path_buf());
        return;
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            unreadable.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    // A file named explicitly that is no regular file (a pipe, `/dev/stdin`, a process
    // substitution) is read as a stream, up to the same size limit.
    if explicit && !meta.is_dir() {
        out.push(path.to_path_buf());
        return;
    }
    if meta.is_file() {
        let ext = path.extension().and_then(|e| e.to_str());
        if explicit || matches!(ext, Some("yaml" | "yml" | "cedar")) {
            out.push(path.to_path_buf());
        }
        return;
    }
    // Symlinked directories are not followed (no cycles), nor hidden or build directories.
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !meta.is_dir() || (!explicit && is_link) {
        return;
    }
    if depth > MAX_DEPTH {
        unreadable.push(format!(
            "{}: more than {MAX_DEPTH} directories deep; not searched",
            path.display()
        ));
        return;
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            unreadable.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    entries.sort();
    for e in entries {
        let hidden = e
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n == "target");
        if !hidden {
            collect(&e, false, depth + 1, out, unreadable);
        }
    }
}

fn check_cedar_file(file: &Arc<SourceFile>, report: &mut Report) -> cedar::PolicyCheck {
    let check = cedar::check_policies(&file.text);
    report.policies += check.ids.len();
    for p in &check.problems {
        let mut f = Finding::error("lattice::cedar", file, p.span.clone(), p.message.clone());
        if let Some(h) = &p.help {
            f = f.with_help(h.clone());
        }
        if let Some(first) = &p.first {
            let (line, _) = file.line_col(first.start);
            f = f.with_help(format!(
                "first used by the policy on line {line}; ids must be unique"
            ));
        }
        if p.warning {
            f = f.warning();
        }
        report.findings.push(f);
    }
    check
}

/// A rule pack's ids are unique across all of its files.
fn duplicate_ids_across_files(
    files: &[(Arc<SourceFile>, cedar::PolicyCheck)],
    out: &mut Vec<Finding>,
) {
    let mut seen: HashMap<&str, (&Arc<SourceFile>, &Range<usize>)> = HashMap::new();
    for (file, check) in files {
        let mut local = std::collections::HashSet::new();
        for (id, span) in &check.ids {
            let Some(id) = id.as_deref() else { continue };
            if !local.insert(id) {
                continue; // already reported within the file
            }
            match seen.get(id) {
                Some((first, first_span)) if !Arc::ptr_eq(first, file) => {
                    let (line, _) = first.line_col(first_span.start);
                    out.push(
                        Finding::error(
                            "lattice::cedar",
                            file,
                            span.start..span.start + 1,
                            format!("duplicate `@id(\"{id}\")` in this rule pack"),
                        )
                        .with_help(format!(
                            "first used in {}:{line}; ids must be unique within a pack",
                            first.name
                        )),
                    );
                }
                Some(_) => {}
                None => {
                    seen.insert(id, (file, span));
                }
            }
        }
    }
}

/// The fields of a rule pack's `pack.yaml`.
const PACK_FIELDS: [&str; 11] = [
    "name",
    "version",
    "title",
    "description",
    "framework",
    "mode",
    "families",
    "controls",
    "notAssessed",
    "partial",
    "allowUnnamedPolicies",
];

fn check_pack(file: &Arc<SourceFile>, report: &mut Report) {
    let (docs, errors) = manifest::yaml::parse_documents(&file.text);
    if !errors.is_empty() {
        for e in errors {
            report
                .findings
                .push(Finding::error("lattice::yaml", file, e.span, e.message));
        }
        return;
    }
    let Some(doc) = docs.into_iter().find(|d| !d.value.is_null()) else {
        report.findings.push(
            Finding::error("lattice::pack", file, 0..0, "pack.yaml is empty")
                .with_help("give at least `name` and `version`"),
        );
        return;
    };
    let at = |p: &str| {
        doc.spans(&file.text)
            .find(p)
            .map(|s| s.key.clone().unwrap_or(s.value.clone()))
            .unwrap_or(0..0)
    };
    let Value::Object(map) = &doc.value else {
        report.findings.push(Finding::error(
            "lattice::pack",
            file,
            at(""),
            "pack.yaml must be a mapping",
        ));
        return;
    };
    for (k, v) in map {
        let p = format!("/{k}");
        if !PACK_FIELDS.contains(&k.as_str()) {
            let mut f = Finding::error(
                "lattice::pack",
                file,
                at(&p),
                format!("unknown field `{k}` in pack.yaml"),
            );
            if let Some(s) = manifest::suggest(k, &PACK_FIELDS) {
                f = f.with_help(format!("did you mean `{s}`?"));
            }
            report.findings.push(f);
            continue;
        }
        let ok = match k.as_str() {
            "mode" => matches!(v.as_str(), Some("enforce" | "audit")),
            "allowUnnamedPolicies" => v.is_boolean(),
            "controls" | "families" | "notAssessed" | "partial" => v
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string)),
            _ => v.is_string(),
        };
        if !ok {
            let expected = match k.as_str() {
                "mode" => "`enforce` or `audit`",
                "allowUnnamedPolicies" => "`true` or `false`",
                "controls" => "a mapping of control ids to titles",
                "families" => "a mapping of control family ids to titles",
                "notAssessed" => "a mapping of control ids to why Lattice cannot assess them",
                "partial" => "a mapping of control ids to what their checks do not show",
                _ => "a string",
            };
            report.findings.push(Finding::error(
                "lattice::pack",
                file,
                at(&p),
                format!("`{k}` must be {expected}"),
            ));
        }
    }
    // A `partial` id that is not a control would leave the control it meant "satisfied".
    if let Some(Value::Object(partial)) = map.get("partial") {
        let controls = map.get("controls").and_then(Value::as_object);
        for id in partial.keys() {
            if !controls.is_some_and(|c| c.contains_key(id)) {
                report.findings.push(
                    Finding::error(
                        "lattice::pack",
                        file,
                        at(&format!("/partial/{id}")),
                        format!("`partial` names {id}, which is not one of the pack's `controls`"),
                    )
                    .with_help("list the control under `controls` with its title, or fix the id"),
                );
            }
        }
    }
    for required in ["name", "version"] {
        if !map.contains_key(required) {
            report.findings.push(Finding::error(
                "lattice::pack",
                file,
                at(""),
                format!("pack.yaml has no `{required}`"),
            ));
        }
    }
}
