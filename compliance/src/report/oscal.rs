//! OSCAL 1.1.3 `assessment-results`: one result per framework; per check an observation
//! (method TEST) naming its failing subjects; per assessed control a finding that relates
//! the observations of its checks; controls Lattice cannot assess are excluded from the
//! reviewed controls with the reason. Back-matter resources carry SHA-256 hashes of the
//! evidence: the snapshot, the world, the policies and the subject inventory.
//!
//! UUIDs are version 5, derived from the scan's snapshot, time and ids, so the same scan
//! renders the same document.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::scan::{CheckResult, FrameworkResult, ScanReport, Status};

/// The namespace of Lattice's OSCAL properties.
pub const PROPERTY_NS: &str = "https://lattice.dev/ns/oscal";

/// The namespace Lattice's v5 UUIDs are derived in.
const UUID_NS: Uuid = Uuid::from_u128(0x6c61_7474_6963_5000_8000_6f73_6361_6c00);

/// The OSCAL control id of a framework's control: `SC-7(5)` → `sc-7.5`, `CC6.1` →
/// `cc6.1`, CIS `5.2.2` → `cis-5.2.2` (a token cannot start with a digit).
pub fn control_id(framework: &str, control: &str) -> String {
    let lower = control
        .to_ascii_lowercase()
        .replace('(', ".")
        .replace(')', "");
    if framework == "cis-kubernetes" || lower.starts_with(|c: char| c.is_ascii_digit()) {
        format!("cis-{lower}")
    } else {
        lower
    }
}

struct Ids<'a> {
    report: &'a ScanReport,
}

impl Ids<'_> {
    fn of(&self, parts: &[&str]) -> String {
        let name = format!(
            "{}|{}|{}",
            self.report.snapshot_digest,
            self.report.started,
            parts.join("|")
        );
        Uuid::new_v5(&UUID_NS, name.as_bytes()).to_string()
    }
}

fn prop(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "ns": PROPERTY_NS, "value": value.to_string()})
}

/// Renders `report` as an OSCAL assessment-results document (pretty JSON).
pub fn render(report: &ScanReport) -> String {
    let ids = Ids { report };
    let resources = vec![
        resource(
            &ids.of(&["snapshot"]),
            "Decision snapshot",
            "The snapshot of entities and policies every decision of the scan was taken on; its digest covers the world and the active policies.",
            &report.snapshot_digest,
        ),
        resource(
            &ids.of(&["world"]),
            "World",
            "SHA-256 over every object of the world the scan read.",
            &report.world_digest,
        ),
        resource(
            &ids.of(&["policies"]),
            "Policies",
            &format!(
                "SHA-256 over every active policy's id, mode and text, from the rule packs {}.",
                report.packs.join(", ")
            ),
            &report.policies_digest,
        ),
        resource(
            &ids.of(&["inventory"]),
            "Subject inventory",
            "SHA-256 over the sorted uids of every subject in scope, one per line.",
            &report.subject_inventory_sha256,
        ),
    ];
    let evidence: Vec<Value> = ["snapshot", "world", "policies", "inventory"]
        .iter()
        .map(|r| json!({"href": format!("#{}", ids.of(&[r])), "description": format!("The {r} digest this observation was made on.")}))
        .collect();
    let results: Vec<Value> = report
        .frameworks
        .iter()
        .map(|fw| result(&ids, report, fw, &evidence))
        .collect();
    let mut metadata = json!({
        "title": format!("Lattice compliance scan: {}", report.frameworks_scanned.join(", ")),
        "last-modified": report.finished,
        "version": report.snapshot_digest,
        "oscal-version": "1.1.3",
        "props": [
            prop("tool", &report.tool.name),
            prop("tool-version", &report.tool.version),
        ],
    });
    if let Some(p) = &report.profile {
        metadata["props"]
            .as_array_mut()
            .expect("props is an array")
            .push(prop("profile", p));
    }
    let doc = json!({
        "assessment-results": {
            "uuid": ids.of(&["document"]),
            "metadata": metadata,
            "import-ap": {
                "href": format!("#{}", ids.of(&["policies"])),
                "remarks": "Lattice's assessment plan is its rule packs: the checks are the Cedar policies identified by the policies resource.",
            },
            "results": results,
            "back-matter": {"resources": resources},
        }
    });
    serde_json::to_string_pretty(&doc).expect("JSON values always serialize")
}

fn resource(uuid: &str, title: &str, description: &str, sha256: &str) -> Value {
    json!({
        "uuid": uuid,
        "title": title,
        "description": description,
        "rlinks": [{
            "href": format!("urn:lattice:sha256:{sha256}"),
            "hashes": [{"algorithm": "SHA-256", "value": sha256}],
        }],
    })
}

fn result(ids: &Ids, report: &ScanReport, fw: &FrameworkResult, evidence: &[Value]) -> Value {
    let include: Vec<Value> = fw
        .controls
        .iter()
        .filter(|c| c.status != Status::NotAssessed)
        .map(|c| json!({"control-id": control_id(&fw.id, &c.id)}))
        .collect();
    let excluded: Vec<&crate::scan::ControlResult> = fw
        .controls
        .iter()
        .filter(|c| c.status == Status::NotAssessed)
        .collect();
    let mut selection = json!({
        "description": format!("Controls of {} evidenced by Lattice's checks.", fw.title),
    });
    if !include.is_empty() {
        selection["include-controls"] = Value::Array(include);
    }
    if !excluded.is_empty() {
        selection["exclude-controls"] = Value::Array(
            excluded
                .iter()
                .map(|c| json!({"control-id": control_id(&fw.id, &c.id)}))
                .collect(),
        );
        selection["remarks"] = Value::String(
            excluded
                .iter()
                .map(|c| {
                    format!(
                        "{} not assessed by Lattice: {}",
                        c.id,
                        c.reason.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    // Inventory items only for failing subjects: passing ones are counted and hashed.
    let mut failing: Vec<&crate::scan::SubjectRef> = fw
        .checks
        .iter()
        .flat_map(|c| c.failures.iter().map(|f| &f.subject))
        .collect();
    failing.sort();
    failing.dedup();
    let item = |s: &crate::scan::SubjectRef| ids.of(&[&fw.id, "subject", &s.uid()]);
    let observations: Vec<Value> = fw
        .checks
        .iter()
        .map(|c| observation(ids, report, fw, c, evidence, &item))
        .collect();
    let findings: Vec<Value> = fw
        .controls
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                Status::Pass | Status::PassWithException | Status::Fail
            )
        })
        .map(|c| {
            let related: Vec<Value> = c
                .checks
                .iter()
                .map(|check| json!({"observation-uuid": ids.of(&[&fw.id, "observation", check])}))
                .collect();
            let satisfied = c.status != Status::Fail;
            let excepted = c.status == Status::PassWithException;
            json!({
                "uuid": ids.of(&[&fw.id, "finding", &c.id]),
                "title": format!("{} {}", c.id, c.title),
                "description": format!(
                    "{} {} by Lattice's checks: {}.",
                    c.id,
                    if excepted {
                        "is satisfied with an approved exception (see the exception register)"
                    } else if satisfied {
                        "is satisfied"
                    } else {
                        "is not satisfied"
                    },
                    c.checks.join(", ")
                ),
                "target": {
                    "type": "objective-id",
                    "target-id": format!("{}_obj", control_id(&fw.id, &c.id)),
                    "status": {
                        "state": if satisfied { "satisfied" } else { "not-satisfied" },
                        "reason": if excepted { "other" } else if satisfied { "pass" } else { "fail" },
                    },
                },
                "related-observations": related,
            })
        })
        .collect();
    let mut out = json!({
        "uuid": ids.of(&[&fw.id, "result"]),
        "title": format!("{} ({})", fw.title, fw.id),
        "description": format!(
            "Every Comply question of every subject in scope for {}, decided on snapshot {}. Checks: {} pass, {} pass with an approved exception, {} fail, {} not applicable. Controls: {} pass, {} pass with an approved exception, {} fail, {} not applicable, {} not assessed by Lattice.",
            fw.id, report.snapshot_digest,
            fw.check_tally.pass, fw.check_tally.pass_with_exception, fw.check_tally.fail, fw.check_tally.not_applicable,
            fw.control_tally.pass, fw.control_tally.pass_with_exception, fw.control_tally.fail, fw.control_tally.not_applicable, fw.control_tally.not_assessed,
        ),
        "start": report.started,
        "end": report.finished,
        "reviewed-controls": {"control-selections": [selection]},
    });
    if let Some(pack) = &fw.pack {
        out["props"] = json!([prop("pack", pack)]);
    }
    if !failing.is_empty() {
        out["local-definitions"] = json!({
            "inventory-items": failing.iter().map(|s| {
                let mut props = vec![prop("cedar-uid", s.uid()), prop("subject-kind", s.kind.type_name())];
                if let Some(o) = &s.object {
                    props.push(prop("declared-by", o));
                }
                json!({
                    "uuid": item(s),
                    "description": format!("{} {}", s.kind.type_name(), s.id),
                    "props": props,
                })
            }).collect::<Vec<_>>(),
        });
    }
    if !observations.is_empty() {
        out["observations"] = Value::Array(observations);
    }
    if !findings.is_empty() {
        out["findings"] = Value::Array(findings);
    }
    out
}

fn observation(
    ids: &Ids,
    report: &ScanReport,
    fw: &FrameworkResult,
    c: &CheckResult,
    evidence: &[Value],
    item: &dyn Fn(&crate::scan::SubjectRef) -> String,
) -> Value {
    let mut props = vec![
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
    let mut o = json!({
        "uuid": ids.of(&[&fw.id, "observation", &c.id]),
        "title": c.title,
        "description": format!(
            "Check {} ({}) on {} applicable subject(s): {} passed, {} failed.",
            c.id, c.source, c.applicable, c.passed, c.failures.len()
        ),
        "props": props,
        "methods": ["TEST"],
        "types": ["finding"],
        "collected": report.finished,
        "relevant-evidence": evidence,
    });
    if !c.failures.is_empty() {
        o["subjects"] = Value::Array(
            c.failures
                .iter()
                .map(|f| {
                    let mut s = json!({
                        "subject-uuid": item(&f.subject),
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

#[cfg(test)]
mod tests {
    use super::control_id;

    #[test]
    fn control_ids_are_oscal_tokens() {
        assert_eq!(control_id("nist-800-53", "SC-7(5)"), "sc-7.5");
        assert_eq!(control_id("nist-800-53", "AC-6"), "ac-6");
        assert_eq!(control_id("soc2", "CC6.1"), "cc6.1");
        assert_eq!(control_id("cis-kubernetes", "5.2.2"), "cis-5.2.2");
    }
}
