//! Flat renderings: CSV (one row per check and failing subject), JUnit XML (a test case per
//! check) and SARIF 2.1.0 (a rule per check, a result per failing subject).

use serde_json::{Value, json};

use crate::scan::{ScanReport, Status};

/// RFC 4180 quoting.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// One row per failing subject of a check, and one row for each check with none.
pub fn csv(report: &ScanReport) -> String {
    let mut out = String::from(
        "framework,check,title,severity,controls,status,applicable,passed,failed,subject,declared_by,declared_at,error,policy_source,remediation\r\n",
    );
    for fw in &report.frameworks {
        for c in &fw.checks {
            let row = |subject: &str, object: &str, at: &str, error: &str| {
                [
                    fw.id.as_str(),
                    &c.id,
                    &c.title,
                    &c.severity,
                    &c.controls.join(" "),
                    c.status.label(),
                    &c.applicable.to_string(),
                    &c.passed.to_string(),
                    &c.failures.len().to_string(),
                    subject,
                    object,
                    at,
                    error,
                    &c.source,
                    &c.remediation,
                ]
                .iter()
                .map(|f| field(f))
                .collect::<Vec<_>>()
                .join(",")
                    + "\r\n"
            };
            if c.failures.is_empty() {
                out += &row("", "", "", "");
            }
            for f in &c.failures {
                out += &row(
                    &f.subject.uid(),
                    f.subject.object.as_deref().unwrap_or(""),
                    f.source.as_deref().unwrap_or(""),
                    f.error.as_deref().unwrap_or(""),
                );
            }
        }
    }
    out
}

/// XML text and attribute escaping.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A test suite per framework, a test case per check: failed checks fail with their
/// subjects, checks with no subject in scope are skipped.
pub fn junit(report: &ScanReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = report.frameworks.iter().map(|f| f.checks.len()).sum();
    let failures: usize = report.frameworks.iter().map(|f| f.check_tally.fail).sum();
    out += &format!(
        "<testsuites name=\"lattice compliance\" tests=\"{total}\" failures=\"{failures}\" timestamp=\"{}\">\n",
        xml(&report.started)
    );
    for fw in &report.frameworks {
        out += &format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" timestamp=\"{}\">\n",
            xml(&fw.id),
            fw.checks.len(),
            fw.check_tally.fail,
            fw.check_tally.not_applicable,
            xml(&report.started)
        );
        out += &format!(
            "    <properties><property name=\"snapshot\" value=\"{}\"/><property name=\"packs\" value=\"{}\"/><property name=\"policies-sha256\" value=\"{}\"/></properties>\n",
            xml(&report.snapshot_digest),
            xml(&report.packs.join(", ")),
            xml(&report.policies_digest)
        );
        for c in &fw.checks {
            out += &format!(
                "    <testcase classname=\"{}\" name=\"{}: {}\">",
                xml(&fw.id),
                xml(&c.id),
                xml(&c.title)
            );
            match c.status {
                Status::Fail => {
                    let subjects: Vec<String> = c
                        .failures
                        .iter()
                        .map(|f| match &f.error {
                            Some(e) => format!("{} ({e})", f.subject.uid()),
                            None => f.subject.uid(),
                        })
                        .collect();
                    out += &format!(
                        "\n      <failure message=\"{} of {} subject(s) fail {} [{}]\" type=\"{}\">{}\nRemediation: {}</failure>\n    ",
                        c.failures.len(),
                        c.applicable,
                        xml(&c.id),
                        xml(&c.controls.join(", ")),
                        xml(&c.severity),
                        xml(&subjects.join("\n")),
                        xml(&c.remediation)
                    );
                }
                Status::NotApplicable => out += "<skipped message=\"no subject in scope\"/>",
                _ => {}
            }
            out += "</testcase>\n";
        }
        out += "  </testsuite>\n";
    }
    out += "</testsuites>\n";
    out
}

fn level(severity: &str) -> &'static str {
    match severity {
        "critical" | "high" => "error",
        "medium" => "warning",
        _ => "note",
    }
}

/// SARIF 2.1.0: a rule per check (its controls as tags), a result per failing subject with
/// the subject's Cedar uid as its logical location and the policy as a related location.
pub fn sarif(report: &ScanReport) -> String {
    let mut rules = Vec::new();
    let mut results = Vec::new();
    for fw in &report.frameworks {
        for c in &fw.checks {
            let index = rules.len();
            rules.push(json!({
                "id": c.id,
                "name": c.title,
                "shortDescription": {"text": c.title},
                "fullDescription": {"text": format!("{} ({}: {})", c.title, fw.id, c.controls.join(", "))},
                "help": {"text": c.remediation},
                "defaultConfiguration": {"level": level(&c.severity)},
                "properties": {
                    "tags": c.controls.iter().map(|k| format!("{}:{k}", fw.id)).collect::<Vec<_>>(),
                    "severity": c.severity,
                    "framework": fw.id,
                },
            }));
            for f in &c.failures {
                let text = match &f.error {
                    Some(e) => format!("{} could not be checked: {e}", f.subject.uid()),
                    None => format!("{} fails {}: {}", f.subject.uid(), c.id, c.title),
                };
                let mut logical = vec![json!({
                    "fullyQualifiedName": f.subject.uid(),
                    "kind": "resource",
                })];
                if let Some(o) = &f.subject.object {
                    logical.push(json!({"fullyQualifiedName": o, "kind": "object"}));
                }
                let (file, line) = split_location(&c.source);
                results.push(json!({
                    "ruleId": c.id,
                    "ruleIndex": index,
                    "level": level(&c.severity),
                    "message": {"text": text},
                    "locations": [subject_location(f.source.as_deref(), logical)],
                    "relatedLocations": [{
                        "id": 0,
                        "message": {"text": "the check"},
                        "physicalLocation": {
                            "artifactLocation": {"uri": file},
                            "region": {"startLine": line},
                        },
                    }],
                }));
            }
        }
    }
    let doc: Value = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": report.tool.name,
                "version": report.tool.version,
                "informationUri": "https://example.invalid/lattice",
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "startTimeUtc": report.started,
                "endTimeUtc": report.finished,
            }],
            "properties": {"snapshot": report.snapshot_digest, "packs": report.packs, "policiesSha256": report.policies_digest},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).expect("JSON values always serialize")
}

/// `path:line` as a path and a line (line 1 when none is written).
fn split_location(at: &str) -> (&str, u64) {
    match at.rsplit_once(':') {
        Some((file, line)) => (file, line.parse().unwrap_or(1)),
        None => (at, 1),
    }
}

/// A SARIF location of a failing subject: the object's file and line when the world was
/// read from files (what code-scanning tools annotate), and always its logical names.
fn subject_location(source: Option<&str>, logical: Vec<Value>) -> Value {
    match source {
        Some(at) => {
            let (file, line) = split_location(at);
            json!({
                "physicalLocation": {
                    "artifactLocation": {"uri": file},
                    "region": {"startLine": line},
                },
                "logicalLocations": logical,
            })
        }
        None => json!({"logicalLocations": logical}),
    }
}
