//! A self-contained HTML report (no scripts, no external assets) with the content of the
//! Markdown one, for auditors who read in a browser or print to PDF.

use std::fmt::Write;

use super::markdown::{LISTED_SUBJECTS, failing, families};
use super::table::xml as esc;
use crate::scan::{FrameworkResult, ScanReport, Status};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code{font-size:90%}.pass{color:#176f2c}.pass-with-exception,.partially-evidenced{color:#8a5a00}.fail{color:#b3261e;font-weight:600}\
.not-applicable,.not-assessed{color:#666}section.check{border-left:4px solid #b3261e;padding-left:1em;margin:1em 0}";

fn status(s: Status) -> String {
    let class = match s {
        Status::Pass => "pass",
        Status::PassWithException => "pass-with-exception",
        Status::Fail => "fail",
        Status::PartiallyEvidenced => "partially-evidenced",
        Status::NotApplicable => "not-applicable",
        Status::NotAssessed => "not-assessed",
    };
    format!("<span class=\"{class}\">{}</span>", s.label())
}

pub fn render(report: &ScanReport) -> String {
    let mut w = String::new();
    let _ = write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lattice compliance report</title><style>{STYLE}</style></head><body>\n<h1>Lattice compliance report</h1>\n<table>"
    );
    let mut row = |k: &str, v: String| {
        let _ = write!(w, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    };
    row(
        "scanned",
        format!("{} to {}", esc(&report.started), esc(&report.finished)),
    );
    row(
        "tool",
        esc(&format!("{} {}", report.tool.name, report.tool.version)),
    );
    row(
        "snapshot",
        format!("<code>{}</code>", esc(&report.snapshot_digest)),
    );
    row(
        "world SHA-256",
        format!("<code>{}</code>", esc(&report.world_digest)),
    );
    row(
        "policies SHA-256",
        format!("<code>{}</code>", esc(&report.policies_digest)),
    );
    row("rule packs", esc(&report.packs.join(", ")));
    row(
        "subject inventory SHA-256",
        format!("<code>{}</code>", esc(&report.subject_inventory_sha256)),
    );
    if let Some(p) = &report.profile {
        row("profile", esc(p));
    }
    row(
        "namespaces",
        esc(&report
            .namespaces
            .as_ref()
            .map_or("all".to_owned(), |n| n.join(", "))),
    );
    row(
        "subjects",
        esc(&report
            .subjects
            .iter()
            .map(|(k, n)| format!("{n} {}", k.type_name()))
            .collect::<Vec<_>>()
            .join(", ")),
    );
    let _ = write!(
        w,
        "</table>\n<h2>Summary</h2>\n<table><tr><th>framework</th><th>checks pass</th><th>checks pass by exception</th><th>checks fail</th><th>checks n/a</th><th>controls pass</th><th>controls pass by exception</th><th>controls partially evidenced</th><th>controls fail</th><th>controls n/a</th><th>not assessed by Lattice</th></tr>"
    );
    for fw in &report.frameworks {
        let (c, k) = (&fw.check_tally, &fw.control_tally);
        let _ = write!(
            w,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&fw.id),
            esc(&fw.title),
            c.pass,
            c.pass_with_exception,
            c.fail,
            c.not_applicable,
            k.pass,
            k.pass_with_exception,
            k.partially_evidenced,
            k.fail,
            k.not_applicable,
            k.not_assessed
        );
    }
    w.push_str("</table>\n<h2>Exception register</h2>\n");
    if report.exceptions.is_empty() {
        w.push_str("<p>No permit in force grants a deviation.</p>\n");
    } else {
        w.push_str("<table><tr><th>policy</th><th>kind</th><th>grants</th><th>approver</th><th>expires</th><th>state</th><th>subjects</th></tr>");
        for e in &report.exceptions {
            let state = match &e.reason {
                Some(why) => format!("{}: {why}", e.state.label()),
                None => e.state.label().to_owned(),
            };
            let _ = write!(
                w,
                "<tr><td><code>{}</code> ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.policy),
                esc(&e.source),
                e.kind.label(),
                esc(&e.grants.join(", ")),
                esc(e.approver.as_deref().unwrap_or("—")),
                esc(e.expires.as_deref().unwrap_or("—")),
                esc(&state),
                esc(&e
                    .subjects
                    .iter()
                    .map(|s| s.uid())
                    .collect::<Vec<_>>()
                    .join(", "))
            );
        }
        w.push_str("</table>\n");
    }
    for fw in &report.frameworks {
        framework(&mut w, fw);
    }
    w.push_str("</body></html>\n");
    w
}

fn framework(w: &mut String, fw: &FrameworkResult) {
    let _ = writeln!(
        w,
        "<h2 id=\"{}\">{} (<code>{}</code>)</h2>",
        esc(&fw.id),
        esc(&fw.title),
        esc(&fw.id)
    );
    if let Some(p) = &fw.pack {
        let _ = writeln!(w, "<p>Rule pack <code>{}</code>.</p>", esc(p));
    }
    if let Some(c) = &fw.baseline {
        let _ = writeln!(w, "<p><b>Coverage.</b> {}.</p>", esc(&c.line()));
    }
    w.push_str("<h3>By control family</h3>\n<table><tr><th>family</th><th>pass</th><th>pass by exception</th><th>partially evidenced</th><th>fail</th><th>not applicable</th><th>not assessed by Lattice</th></tr>");
    for (id, title, t) in families(fw) {
        let _ = write!(
            w,
            "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&id),
            esc(&title),
            t.pass,
            t.pass_with_exception,
            t.partially_evidenced,
            t.fail,
            t.not_applicable,
            t.not_assessed
        );
    }
    w.push_str("</table>\n<h3>Failing checks</h3>\n");
    let failing = failing(fw);
    if failing.is_empty() {
        w.push_str("<p>None: every applicable check passes.</p>\n");
    }
    for c in failing {
        let _ = write!(
            w,
            "<section class=\"check\"><h4>{} — {}</h4><p>severity <b>{}</b>; controls {}; policy <code>{}</code> ({}); {} of {} subject(s) fail:</p><ul>",
            esc(&c.id),
            esc(&c.title),
            esc(&c.severity),
            esc(&c.controls.join(", ")),
            esc(&c.id),
            esc(&c.source),
            c.failures.len(),
            c.applicable
        );
        for f in c.failures.iter().take(LISTED_SUBJECTS) {
            let at = f
                .source
                .as_ref()
                .map(|s| format!(" at {}", esc(s)))
                .unwrap_or_default();
            let by = f
                .subject
                .object
                .as_ref()
                .map(|o| format!(" (declared by {}{at})", esc(o)))
                .unwrap_or_default();
            let err = f
                .error
                .as_ref()
                .map(|e| format!(" — not evaluated: {}", esc(e)))
                .unwrap_or_default();
            let _ = write!(
                w,
                "<li><code>{}</code>{by}{err}</li>",
                esc(&f.subject.uid())
            );
        }
        if c.failures.len() > LISTED_SUBJECTS {
            let _ = write!(
                w,
                "<li>… and {} more (see the CSV or OSCAL rendering)</li>",
                c.failures.len() - LISTED_SUBJECTS
            );
        }
        let _ = writeln!(
            w,
            "</ul><p><b>Remediation:</b> {}</p></section>",
            esc(&c.remediation)
        );
    }
    w.push_str("<h3>Controls</h3>\n<table><tr><th>control</th><th>title</th><th>status</th><th>checks</th></tr>");
    for c in &fw.controls {
        // A partially evidenced control shows both its checks and what they do not show.
        let detail = match (&c.reason, c.status) {
            (Some(r), Status::PartiallyEvidenced) => {
                format!("{}; not shown: {}", esc(&c.checks.join(", ")), esc(r))
            }
            (Some(r), _) => esc(r),
            (None, _) => esc(&c.checks.join(", ")),
        };
        let _ = write!(
            w,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{detail}</td></tr>",
            esc(&c.id),
            esc(&c.title),
            status(c.status)
        );
    }
    w.push_str("</table>\n");
}
