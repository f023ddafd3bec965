//! A Markdown report for a human auditor: the scope and evidence digests, a summary per
//! framework and per control family, every failing check with its subjects and remediation,
//! every control's status, and what Lattice does not assess.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::scan::{CheckResult, FrameworkResult, ScanReport, Status, Tally};

/// Failing subjects listed per check before the rest are counted.
pub const LISTED_SUBJECTS: usize = 50;

/// Per control family (in first-appearance order): id, title and the tally of its controls.
pub fn families(fw: &FrameworkResult) -> Vec<(String, String, Tally)> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Tally> = BTreeMap::new();
    for c in &fw.controls {
        if !by.contains_key(&c.family) {
            order.push(c.family.clone());
        }
        by.entry(c.family.clone()).or_default().add(c.status);
    }
    order.sort_by_key(|f| crate::scan::control_order(f));
    order
        .into_iter()
        .map(|f| {
            let title = fw.families.get(&f).cloned().unwrap_or_else(|| f.clone());
            let tally = by.remove(&f).unwrap_or_default();
            (f, title, tally)
        })
        .collect()
}

/// Failing checks, most severe first.
pub fn failing(fw: &FrameworkResult) -> Vec<&CheckResult> {
    let rank = |s: &str| match s {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        _ => 3,
    };
    let mut out: Vec<&CheckResult> = fw
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .collect();
    out.sort_by(|a, b| (rank(&a.severity), &a.id).cmp(&(rank(&b.severity), &b.id)));
    out
}

/// Markdown table cell text.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn render(report: &ScanReport) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Lattice compliance report\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| scanned | {} to {} |", report.started, report.finished);
    let _ = writeln!(w, "| tool | {} {} |", report.tool.name, report.tool.version);
    let _ = writeln!(w, "| snapshot | `{}` |", report.snapshot_digest);
    let _ = writeln!(w, "| world SHA-256 | `{}` |", report.world_digest);
    let _ = writeln!(w, "| policies SHA-256 | `{}` |", report.policies_digest);
    let _ = writeln!(w, "| rule packs | {} |", report.packs.join(", "));
    let _ = writeln!(
        w,
        "| subject inventory SHA-256 | `{}` |",
        report.subject_inventory_sha256
    );
    if let Some(p) = &report.profile {
        let _ = writeln!(w, "| profile | {p} |");
    }
    let _ = writeln!(
        w,
        "| namespaces | {} |",
        report
            .namespaces
            .as_ref()
            .map_or("all".to_owned(), |n| n.join(", "))
    );
    let subjects: Vec<String> = report
        .subjects
        .iter()
        .map(|(k, n)| format!("{n} {}", k.type_name()))
        .collect();
    let _ = writeln!(w, "| subjects | {} |\n", subjects.join(", "));

    let _ = writeln!(w, "## Summary\n");
    let _ = writeln!(
        w,
        "| framework | checks pass | checks pass by exception | checks fail | checks n/a | controls pass | controls pass by exception | controls partially evidenced | controls fail | controls n/a | not assessed by Lattice |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for fw in &report.frameworks {
        let (c, k) = (&fw.check_tally, &fw.control_tally);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&fw.title),
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
    register(w, report);
    pod_security_levels(w, report);
    for fw in &report.frameworks {
        framework(w, fw);
    }
    out
}

/// The Pod Security levels per namespace (with the `pod-security` framework).
fn pod_security_levels(w: &mut String, report: &ScanReport) {
    if report.pod_security.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\n## Pod Security levels by namespace\n\n| namespace | enforces | pods | meet baseline | meet restricted | violate what it enforces | every pod meets |\n|---|---|---|---|---|---|---|"
    );
    for ns in &report.pod_security {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&ns.namespace),
            ns.enforces,
            ns.pods,
            ns.meet_baseline,
            ns.meet_restricted,
            ns.violate_enforced,
            ns.level
        );
    }
}

/// Subjects listed per exception before the rest are counted.
const LISTED_COVERED: usize = 5;

/// The exception register: every permit that grants a deviation.
fn register(w: &mut String, report: &ScanReport) {
    let _ = writeln!(w, "\n## Exception register\n");
    if report.exceptions.is_empty() {
        let _ = writeln!(w, "No permit in force grants a deviation.");
        return;
    }
    let _ = writeln!(
        w,
        "Every permit in force that grants a deviation from the posture. A check a subject passes only by one of these reads **pass (approved exception)**; once an exception expires, the checks it excused fail.\n"
    );
    let _ = writeln!(
        w,
        "| policy | kind | grants | approver | expires | state | subjects |\n|---|---|---|---|---|---|---|"
    );
    for e in &report.exceptions {
        let mut covered: Vec<String> = e
            .subjects
            .iter()
            .take(LISTED_COVERED)
            .map(|s| format!("`{}`", s.uid()))
            .collect();
        if e.subjects.len() > LISTED_COVERED {
            covered.push(format!("and {} more", e.subjects.len() - LISTED_COVERED));
        }
        let state = match &e.reason {
            Some(why) => format!("{}: {why}", e.state.label()),
            None => e.state.label().to_owned(),
        };
        let _ = writeln!(
            w,
            "| `{}` ({}) | {} | {} | {} | {} | {} | {} |",
            cell(&e.policy),
            cell(&e.source),
            e.kind.label(),
            cell(&e.grants.join(", ")),
            cell(e.approver.as_deref().unwrap_or("—")),
            cell(e.expires.as_deref().unwrap_or("—")),
            cell(&state),
            cell(&covered.join(", "))
        );
    }
}

fn framework(w: &mut String, fw: &FrameworkResult) {
    let _ = writeln!(w, "\n## {} (`{}`)\n", fw.title, fw.id);
    if let Some(p) = &fw.pack {
        let _ = writeln!(w, "Rule pack `{p}`.\n");
    }
    if let Some(c) = &fw.baseline {
        let _ = writeln!(w, "**Coverage.** {}.\n", c.line());
    }
    let _ = writeln!(w, "### By control family\n");
    let _ = writeln!(
        w,
        "| family | pass | pass by exception | partially evidenced | fail | not applicable | not assessed by Lattice |\n|---|---|---|---|---|---|---|"
    );
    for (id, title, t) in families(fw) {
        let _ = writeln!(
            w,
            "| {} {} | {} | {} | {} | {} | {} | {} |",
            cell(&id),
            cell(&title),
            t.pass,
            t.pass_with_exception,
            t.partially_evidenced,
            t.fail,
            t.not_applicable,
            t.not_assessed
        );
    }
    let failing = failing(fw);
    let _ = writeln!(w, "\n### Failing checks\n");
    if failing.is_empty() {
        let _ = writeln!(w, "None: every applicable check passes.");
    }
    for c in failing {
        let _ = writeln!(
            w,
            "#### {} — {}\n\n- severity: **{}**\n- controls: {}\n- policy: `{}` ({})\n- {} of {} subject(s) fail:\n",
            c.id,
            c.title,
            c.severity,
            c.controls.join(", "),
            c.id,
            c.source,
            c.failures.len(),
            c.applicable
        );
        for f in c.failures.iter().take(LISTED_SUBJECTS) {
            let at = f
                .source
                .as_ref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            let by = f
                .subject
                .object
                .as_ref()
                .map(|o| format!(" (declared by {o}{at})"))
                .unwrap_or_default();
            let err = f
                .error
                .as_ref()
                .map(|e| format!(" — not evaluated: {e}"))
                .unwrap_or_default();
            let _ = writeln!(w, "  - `{}`{by}{err}", f.subject.uid());
        }
        if c.failures.len() > LISTED_SUBJECTS {
            let _ = writeln!(
                w,
                "  - … and {} more (see the CSV or OSCAL rendering)",
                c.failures.len() - LISTED_SUBJECTS
            );
        }
        let _ = writeln!(w, "\n**Remediation:** {}\n", c.remediation);
    }
    let _ = writeln!(w, "\n### Controls\n");
    let _ = writeln!(
        w,
        "| control | title | status | checks | what the checks do not show |\n|---|---|---|---|---|"
    );
    for c in fw
        .controls
        .iter()
        .filter(|c| c.status != Status::NotAssessed)
    {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            cell(&c.id),
            cell(&c.title),
            c.status.label(),
            cell(&c.checks.join(", ")),
            cell(c.reason.as_deref().unwrap_or(""))
        );
    }
    let not: Vec<_> = fw
        .controls
        .iter()
        .filter(|c| c.status == Status::NotAssessed)
        .collect();
    if !not.is_empty() {
        let _ = writeln!(w, "\n### Not assessed by Lattice\n");
        let _ = writeln!(w, "| control | title | why |\n|---|---|---|");
        for c in not {
            let _ = writeln!(
                w,
                "| {} | {} | {} |",
                cell(&c.id),
                cell(&c.title),
                cell(c.reason.as_deref().unwrap_or(""))
            );
        }
    }
}
