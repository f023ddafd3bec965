//! OSCAL `assessment-results`: one result for the scan (one assessment run), with
//!
//! - every subject in scope as an inventory item, passing ones included;
//! - per framework a control selection (controls Lattice cannot assess excluded, with why);
//! - per check an observation (method `EXAMINE`: the scan reads configuration, its origin
//!   the scanner as a `tool`) naming its failing subjects;
//! - per failing check an `open` risk with its remediation, and per exception in the
//!   register a risk that is `deviation-approved` (or `deviation-requested` while it lacks
//!   an approver or expiry, `open` once expired), naming the approving policy, the approver
//!   and the expiry;
//! - per assessed control a finding that relates its checks' observations and risks;
//! - back-matter resources for the plan (with its SHA-256), the catalogs and the evidence
//!   digests.

use serde_json::{Value, json};

use super::{
    Ids, Options, PLAN_HREF, assessment_assets, catalog_resource, control_id, control_selection,
    evidence_resources, inventory_items, inventory_uuid, metadata, origins, prop,
};
use crate::exceptions::{Exception, ExceptionState};
use crate::scan::{CheckResult, FrameworkResult, ScanReport, Status};

/// Renders `report` as an OSCAL assessment-results document (pretty JSON) that imports the
/// plan [`super::render_plan`] renders for the same report and options.
pub fn render(report: &ScanReport, options: &Options) -> String {
    let ids = Ids::of_scan(report);
    // The plan is hashed as it is written out, and dropped before the results are built.
    let plan_sha256 = super::plan::sha256(report, options);

    let evidence: Vec<Value> = ["snapshot", "world", "policies", "inventory"]
        .iter()
        .map(|r| json!({"href": format!("#{}", ids.of(&[r])), "description": format!("The {r} digest this observation was made on.")}))
        .collect();
    let mut resources = vec![json!({
        "uuid": ids.of(&["plan-resource"]),
        "title": "Assessment plan",
        "description": format!(
            "The assessment plan of this scan (`lattice-policy compliance scan -o oscal-ap`, uuid {}), expected beside these results as {PLAN_HREF}; its SHA-256 lets a reader check it is the plan these results were produced under.",
            ids.of(&["plan-document"])
        ),
        "props": [prop("plan-uuid", ids.of(&["plan-document"]))],
        "rlinks": [{
            "href": PLAN_HREF,
            "media-type": "application/oscal.ap+json",
            "hashes": [{"algorithm": "SHA-256", "value": plan_sha256}],
        }],
    })];
    resources.extend(report.frameworks.iter().map(catalog_resource));
    resources.extend(evidence_resources(&ids, report));

    let mut observations = Vec::new();
    let mut risks = Vec::new();
    let mut findings = Vec::new();
    for fw in &report.frameworks {
        for c in &fw.checks {
            observations.push(observation(&ids, report, fw, c, &evidence));
            if c.status == Status::Fail {
                risks.push(failure_risk(&ids, report, fw, c));
            }
        }
        findings.extend(framework_findings(&ids, report, fw));
    }
    for e in &report.exceptions {
        observations.push(exception_observation(&ids, report, e, &evidence));
        risks.push(exception_risk(&ids, report, e));
    }

    let mut result = json!({
        "uuid": ids.of(&["result"]),
        "title": format!("Lattice compliance scan: {}", report.frameworks_scanned.join(", ")),
        "description": description(report),
        "start": report.started,
        "end": report.finished,
        "props": report.frameworks.iter().map(|fw| prop("framework", &fw.id))
            .chain(report.frameworks.iter().filter_map(|fw| fw.pack.as_ref().map(|p| prop("pack", p))))
            .collect::<Vec<_>>(),
        "local-definitions": {"assessment-assets": assessment_assets(report)},
        "reviewed-controls": {
            "control-selections": report.frameworks.iter().map(control_selection).collect::<Vec<_>>(),
        },
    });
    let items = inventory_items(report);
    if !items.is_empty() {
        result["local-definitions"]["inventory-items"] = Value::Array(items);
    }
    if !observations.is_empty() {
        result["observations"] = Value::Array(observations);
    }
    if !risks.is_empty() {
        result["risks"] = Value::Array(risks);
    }
    if !findings.is_empty() {
        result["findings"] = Value::Array(findings);
    }
    let doc = json!({
        "assessment-results": {
            "uuid": ids.of(&["results-document"]),
            "metadata": metadata(
                report,
                options,
                format!("Lattice compliance scan: {}", report.frameworks_scanned.join(", ")),
            ),
            "import-ap": {
                "href": PLAN_HREF,
                "remarks": format!(
                    "The plan rendered for the same scan by `lattice-policy compliance scan -o oscal-ap`; back-matter resource {} carries its SHA-256.",
                    ids.of(&["plan-resource"])
                ),
            },
            "results": [result],
            "back-matter": {"resources": resources},
        }
    });
    serde_json::to_string_pretty(&doc).expect("JSON values always serialize")
}

fn description(report: &ScanReport) -> String {
    let per_framework: Vec<String> = report
        .frameworks
        .iter()
        .map(|fw| {
            format!(
                "{}: checks {} pass, {} pass with an approved exception, {} fail, {} not applicable; controls {} pass, {} pass with an approved exception, {} partially evidenced, {} fail, {} not applicable, {} not assessed by Lattice.",
                fw.id,
                fw.check_tally.pass, fw.check_tally.pass_with_exception, fw.check_tally.fail, fw.check_tally.not_applicable,
                fw.control_tally.pass, fw.control_tally.pass_with_exception, fw.control_tally.partially_evidenced, fw.control_tally.fail, fw.control_tally.not_applicable, fw.control_tally.not_assessed,
            )
        })
        .collect();
    format!(
        "Every Comply question of every subject in scope ({} subjects), decided on snapshot {}. {}",
        report.inventory.len(),
        report.snapshot_digest,
        per_framework.join(" ")
    )
}

fn observation(
    ids: &Ids,
    report: &ScanReport,
    fw: &FrameworkResult,
    c: &CheckResult,
    evidence: &[Value],
) -> Value {
    let mut props = vec![
        prop("framework", &fw.id),
        prop("check", &c.id),
        prop("policy-source", &c.source),
        prop("severity", &c.severity),
        prop("result", c.status.label()),
        prop("subjects-applicable", c.applicable),
        prop("subjects-passed", c.passed),
        prop("subjects-failed", c.failures.len()),
    ];
    for control in &c.controls {
        props.push(prop("control", control));
    }
    for e in &c.exceptions {
        props.push(prop("excused-by", e));
    }
    let mut o = json!({
        "uuid": ids.of(&[&fw.id, "observation", &c.id]),
        "title": c.title,
        "description": format!(
            "Check {} ({}) on {} applicable subject(s): {} passed, {} failed.",
            c.id, c.source, c.applicable, c.passed, c.failures.len()
        ),
        "props": props,
        "methods": ["EXAMINE"],
        "types": ["finding"],
        "origins": origins(report),
        "collected": report.finished,
        "relevant-evidence": evidence,
    });
    if !c.failures.is_empty() {
        o["subjects"] = Value::Array(
            c.failures
                .iter()
                .map(|f| {
                    let mut s = json!({
                        "subject-uuid": inventory_uuid(&f.subject),
                        "type": "inventory-item",
                        "title": f.subject.uid(),
                    });
                    if let Some(e) = &f.error {
                        s["remarks"] = Value::String(e.clone());
                    }
                    s
                })
                .collect(),
        );
    }
    if !c.remediation.is_empty() {
        o["remarks"] = Value::String(format!("Remediation: {}", c.remediation));
    }
    o
}

/// What to do about a failing check: its `@remediation`, else a description naming it.
fn remediation_text(c: &CheckResult) -> String {
    if c.remediation.trim().is_empty() {
        format!(
            "Change each failing subject so that check {} ({}) no longer denies it, or record an approved exception (a permit with @approver and @expires) for it; the check is written at {}.",
            c.id, c.title, c.source
        )
    } else {
        c.remediation.clone()
    }
}

fn failure_risk(ids: &Ids, report: &ScanReport, fw: &FrameworkResult, c: &CheckResult) -> Value {
    json!({
        "uuid": ids.of(&[&fw.id, "risk", &c.id]),
        "title": format!("{} fails: {}", c.id, c.title),
        "description": format!(
            "{} of {} applicable subject(s) fail check {} ({}); the observation lists them.",
            c.failures.len(), c.applicable, c.id, c.source
        ),
        "statement": format!(
            "Severity {}. Until they are remediated, {} control(s) {} are not satisfied for the failing subjects.",
            c.severity, fw.id, c.controls.join(", ")
        ),
        "props": [prop("framework", &fw.id), prop("check", &c.id), prop("severity", &c.severity)],
        "status": "open",
        "origins": origins(report),
        "characterizations": [{
            "origin": {"actors": [{"type": "tool", "actor-uuid": super::tool_component_uuid(report)}]},
            "facets": [{"name": "severity", "system": super::PROPERTY_NS, "value": c.severity}],
        }],
        "remediations": [{
            "uuid": ids.of(&[&fw.id, "remediation", &c.id]),
            "lifecycle": "recommendation",
            "title": format!("Remediate {}", c.id),
            "description": remediation_text(c),
        }],
        "related-observations": [{"observation-uuid": ids.of(&[&fw.id, "observation", &c.id])}],
    })
}

/// The OSCAL risk status of an exception: accepted while approved, requested while it
/// lacks an approver or expiry, open again once expired (the checks it excused fail).
fn exception_status(e: &Exception) -> &'static str {
    match e.state {
        ExceptionState::Approved => "deviation-approved",
        ExceptionState::Incomplete => "deviation-requested",
        ExceptionState::Expired => "open",
    }
}

fn exception_observation(
    ids: &Ids,
    report: &ScanReport,
    e: &Exception,
    evidence: &[Value],
) -> Value {
    let mut o = json!({
        "uuid": ids.of(&["exception-observation", &e.policy, e.kind.label()]),
        "title": format!("Exception {}", e.policy),
        "description": format!(
            "The permit {} ({}) grants a {} ({}) to {} subject(s) in scope.",
            e.policy, e.source, e.kind.label(), e.grants.join(", "), e.subjects.len()
        ),
        "props": [prop("exception-policy", &e.policy), prop("exception-state", e.state.label())],
        "methods": ["EXAMINE"],
        "origins": origins(report),
        "collected": report.finished,
        "relevant-evidence": evidence,
    });
    if !e.subjects.is_empty() {
        o["subjects"] = e
            .subjects
            .iter()
            .map(|s| json!({"subject-uuid": inventory_uuid(s), "type": "inventory-item", "title": s.uid()}))
            .collect();
    }
    o
}

fn exception_risk(ids: &Ids, report: &ScanReport, e: &Exception) -> Value {
    let approver = e.approver.as_deref().unwrap_or("nobody on record");
    let expires = match e.expires.as_deref() {
        None => "no expiry on record".to_owned(),
        Some("never") => "no expiry (a standing rule)".to_owned(),
        Some(x) => format!("through {x}"),
    };
    let mut props = vec![
        prop("exception-policy", &e.policy),
        prop("exception-kind", e.kind.label()),
        prop("exception-state", e.state.label()),
    ];
    if let Some(a) = &e.approver {
        props.push(prop("approver", a));
    }
    if let Some(x) = &e.expires {
        props.push(prop("expires", x));
    }
    let mut risk = json!({
        "uuid": ids.of(&["exception-risk", &e.policy, e.kind.label()]),
        "title": format!("{} granted by {}: {}", e.kind.label(), e.policy, e.grants.join(", ")),
        "description": format!(
            "The {} permitted by policy {} ({}) for {} subject(s).",
            e.kind.label(), e.policy, e.source, e.subjects.len()
        ),
        "statement": match e.state {
            ExceptionState::Approved => format!(
                "Accepted by {approver}, {expires}, by the policy {}.", e.policy
            ),
            ExceptionState::Incomplete => format!(
                "Not yet approved: {} (approver: {approver}; expiry: {expires}).",
                e.reason.as_deref().unwrap_or("the approval is incomplete")
            ),
            ExceptionState::Expired => format!(
                "The approval by {approver} has {}; the checks it excused fail.",
                e.reason.as_deref().unwrap_or("expired")
            ),
        },
        "props": props,
        "status": exception_status(e),
        "origins": origins(report),
        "related-observations": [{"observation-uuid": ids.of(&["exception-observation", &e.policy, e.kind.label()])}],
    });
    // An expiry that names a time is the deadline of the accepted risk.
    if let Some(x) = &e.expires
        && let Ok(Some(until)) = lattice_schemas::cedar::expiry(x)
    {
        risk["deadline"] = Value::String(until.to_string());
    }
    risk
}

fn framework_findings(ids: &Ids, report: &ScanReport, fw: &FrameworkResult) -> Vec<Value> {
    fw.controls
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                Status::Pass
                    | Status::PassWithException
                    | Status::PartiallyEvidenced
                    | Status::Fail
            )
        })
        .map(|c| {
            let cited: Vec<&CheckResult> = fw
                .checks
                .iter()
                .filter(|k| c.checks.contains(&k.id))
                .collect();
            let related: Vec<Value> = c
                .checks
                .iter()
                .map(|check| json!({"observation-uuid": ids.of(&[&fw.id, "observation", check])}))
                .collect();
            let mut risks: Vec<String> = cited
                .iter()
                .filter(|k| k.status == Status::Fail)
                .map(|k| ids.of(&[&fw.id, "risk", &k.id]))
                .collect();
            let mut excused: Vec<&String> = cited.iter().flat_map(|k| &k.exceptions).collect();
            excused.sort();
            excused.dedup();
            risks.extend(
                report
                    .exceptions
                    .iter()
                    .filter(|e| excused.contains(&&e.policy))
                    .map(|e| ids.of(&["exception-risk", &e.policy, e.kind.label()])),
            );
            // Partial evidence is not a satisfied objective: OSCAL's state has only two values,
            // so it is `not-satisfied` with reason `other`, a `partially-evidenced` prop and
            // the part the checks do not show as remarks.
            let partial = c.status == Status::PartiallyEvidenced;
            let satisfied = !matches!(c.status, Status::Fail | Status::PartiallyEvidenced);
            let excepted = c.status == Status::PassWithException;
            let mut finding = json!({
                "uuid": ids.of(&[&fw.id, "finding", &c.id]),
                "title": format!("{} {}", c.id, c.title),
                "description": format!(
                    "{} {} by Lattice's checks: {}.",
                    c.id,
                    if partial {
                        "is partially evidenced (every check passes, but they do not show all of its objective)"
                    } else if excepted {
                        "is satisfied with an approved exception (see the exception register)"
                    } else if satisfied {
                        "is satisfied"
                    } else {
                        "is not satisfied"
                    },
                    c.checks.join(", ")
                ),
                "props": [prop("framework", &fw.id)],
                "origins": origins(report),
                "target": {
                    "type": "objective-id",
                    "target-id": format!("{}_obj", control_id(&fw.id, &c.id)),
                    "status": {
                        "state": if satisfied { "satisfied" } else { "not-satisfied" },
                        "reason": if excepted || partial { "other" } else if satisfied { "pass" } else { "fail" },
                    },
                },
                "related-observations": related,
            });
            if partial {
                if let Some(props) = finding["props"].as_array_mut() {
                    props.push(prop("evidence", "partial"));
                }
                finding["target"]["status"]["remarks"] = Value::String(format!(
                    "Partially evidenced: {}",
                    c.reason.as_deref().unwrap_or("the checks show part of the objective")
                ));
            }
            if !risks.is_empty() {
                finding["related-risks"] = risks
                    .into_iter()
                    .map(|r| json!({"risk-uuid": r}))
                    .collect();
            }
            finding
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::remediation_text;
    use crate::scan::{CheckResult, Status};

    #[test]
    fn a_check_without_remediation_gets_one_that_names_it() {
        let mut c = CheckResult {
            id: "org/no-foo".into(),
            title: "No foo".into(),
            severity: "low".into(),
            remediation: String::new(),
            controls: vec!["AC-6".into()],
            applies_to: Vec::new(),
            source: "org/policy:3".into(),
            status: Status::Fail,
            applicable: 1,
            passed: 0,
            excepted: 0,
            exceptions: Vec::new(),
            failures: Vec::new(),
        };
        let text = remediation_text(&c);
        assert!(
            text.contains("org/no-foo") && text.contains("org/policy:3"),
            "{text}"
        );
        c.remediation = "Remove foo.".into();
        assert_eq!(remediation_text(&c), "Remove foo.");
    }
}
