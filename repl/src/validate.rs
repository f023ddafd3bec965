//! `lattice-policy validate`.

use std::path::PathBuf;

use lattice_schemas::validate::{Report, validate_paths};
use serde_json::json;

use crate::output::{Format, emit, emit_json, render};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

pub fn run(paths: &[PathBuf], format: Format) -> u8 {
    let report = validate_paths(paths);
    match format {
        Format::Human => print_human(&report),
        Format::Json => print_json(&report),
    }
    // Reading nothing is never a pass.
    if !report.unreadable.is_empty() || report.files == 0 {
        if report.files == 0 && report.unreadable.is_empty() {
            eprintln!("error: no file was checked");
        }
        EXIT_USAGE
    } else if report.errors() > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_human(report: &Report) {
    for f in &report.findings {
        emit(&render(f));
    }
    for u in &report.unreadable {
        eprintln!("error: cannot read {u}");
    }
    emit(&format!(
        "checked {}: {}, {} — {}, {}\n",
        plural(report.files, "file", "files"),
        plural(report.objects, "object", "objects"),
        plural(report.policies, "policy", "policies"),
        plural(report.errors(), "error", "errors"),
        plural(report.warnings(), "warning", "warnings"),
    ));
    if !report.skipped.is_empty() {
        emit(&format!(
            "skipped {} of other API groups (not Lattice objects)\n",
            plural(report.skipped.len(), "document", "documents")
        ));
    }
}

fn print_json(report: &Report) {
    let findings: Vec<_> = report.findings.iter().map(|f| f.record()).collect();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|(file, api_version, kind)| json!({"file": file, "apiVersion": api_version, "kind": kind}))
        .collect();
    let doc = json!({
        "files": report.files,
        "objects": report.objects,
        "policies": report.policies,
        "errors": report.errors(),
        "warnings": report.warnings(),
        "findings": findings,
        "skipped": skipped,
        "unreadable": report.unreadable,
    });
    emit_json(&doc);
}
