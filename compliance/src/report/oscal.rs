//! OSCAL 1.1.3 for assessment tools: the assessment plan of a scan
//! ([`render_plan`]), its assessment results ([`render`]), and catalogs for the frameworks
//! NIST does not publish in OSCAL ([`catalog::render`]).
//!
//! ```text
//! report.oscal-ap.json   assessment-plan: reviewed controls, every subject in scope
//!   ▲ import-ap (relative href, SHA-256 in back-matter)
//! report.oscal.json      assessment-results: observations (EXAMINE, by the tool), findings,
//!                        risks (failures open, exceptions deviation-approved), inventory
//! catalog-soc2.json, catalog-cis-kubernetes.json   `compliance catalog --framework F`
//! NIST_SP-800-53_rev5_catalog.json                 NIST's own catalog (not generated)
//! ```
//!
//! UUIDs are version 5. A document's, and each element's it alone defines, are derived from
//! the snapshot, the scan's time and its scope (frameworks, namespaces, profile, baseline), so
//! the same scan renders the same bytes and scans of another scope never share one. Inventory
//! items, the tool component and parties are derived from what they name alone, so a subject
//! keeps its UUID across scans, days and frameworks and findings can be tracked.

pub mod catalog;
mod plan;
mod results;

pub use plan::render as render_plan;
pub use results::render;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::scan::{ControlResult, FrameworkResult, ScanReport, Status};
use crate::subject::SubjectRef;

/// The namespace of Lattice's OSCAL properties.
pub const PROPERTY_NS: &str = "https://lattice.dev/ns/oscal";

/// Where assessment results expect their plan: beside them, under the name the evidence log
/// and the operator's sinks give a rendering of format `oscal-ap` (`report.<extension>`).
pub const PLAN_HREF: &str = "report.oscal-ap.json";

/// NIST's OSCAL catalog of SP 800-53 Rev. 5, by the file name NIST publishes it under.
pub const NIST_CATALOG_HREF: &str = "NIST_SP-800-53_rev5_catalog.json";

/// The assessor named when none is given.
pub const DEFAULT_ASSESSOR: &str = "unspecified assessor";

/// The namespace Lattice's v5 UUIDs are derived in.
const UUID_NS: Uuid = Uuid::from_u128(0x6c61_7474_6963_5000_8000_6f73_6361_6c00);

/// What a rendering names beyond the report itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The assessor organisation, a party with role `assessor`.
    pub assessor: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            assessor: DEFAULT_ASSESSOR.to_owned(),
        }
    }
}

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

/// The file name a framework's catalog is referenced by: NIST's own for `nist-800-53`,
/// else the name `compliance catalog --framework F` is documented to write,
/// `catalog-<framework>.json`.
pub fn catalog_href(framework: &str) -> String {
    if framework == "nist-800-53" {
        NIST_CATALOG_HREF.to_owned()
    } else {
        format!("catalog-{framework}.json")
    }
}

/// A UUID derived from `parts` alone.
fn stable(parts: &[&str]) -> String {
    Uuid::new_v5(&UUID_NS, parts.join("|").as_bytes()).to_string()
}

/// The inventory-item UUID of a subject: from its Cedar uid alone, the same in every scan.
pub fn inventory_uuid(subject: &SubjectRef) -> String {
    stable(&["inventory-item", &subject.uid()])
}

/// The UUID of the scanning tool as a component (and origin actor): from its name alone.
pub fn tool_component_uuid(report: &ScanReport) -> String {
    stable(&["component", "tool", &report.tool.name])
}

fn party_uuid(kind: &str, name: &str) -> String {
    stable(&["party", kind, name])
}

/// UUIDs of one scan's documents and of what they alone define.
struct Ids {
    base: String,
}

impl Ids {
    fn of_scan(report: &ScanReport) -> Ids {
        // A baseline widens the scope (every control of it is selected); scans without one
        // keep the ids they always had.
        let baseline = report
            .frameworks
            .iter()
            .find_map(|f| f.baseline.as_ref())
            .map(|c| format!("|baseline={}", c.baseline))
            .unwrap_or_default();
        Ids {
            base: format!(
                "{}|{}|frameworks={}|namespaces={}|profile={}{baseline}",
                report.snapshot_digest,
                report.started,
                report.frameworks_scanned.join(","),
                report
                    .namespaces
                    .as_ref()
                    .map_or("*".to_owned(), |n| n.join(",")),
                report.profile.as_deref().unwrap_or(""),
            ),
        }
    }

    fn of(&self, parts: &[&str]) -> String {
        let name = format!("{}|{}", self.base, parts.join("|"));
        Uuid::new_v5(&UUID_NS, name.as_bytes()).to_string()
    }
}

fn prop(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "ns": PROPERTY_NS, "value": string(&value.to_string())})
}

/// `text` as an OSCAL string (property values, party names): one line, no leading or
/// trailing whitespace, never empty. Annotations and flags can hold anything.
fn string(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        "(none)".to_owned()
    } else {
        one_line
    }
}

/// A digest as OSCAL hash values want it: bare hex, without `sha256:`.
fn bare_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// SHA-256 of `text`, bare hex.
fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Metadata with the parties and roles: the tool that prepared the document and the
/// assessor it was prepared for.
fn metadata(report: &ScanReport, options: &Options, title: String) -> Value {
    let tool_party = party_uuid("tool", &report.tool.name);
    let assessor_party = party_uuid("assessor", &options.assessor);
    let mut assessor = json!({
        "uuid": assessor_party,
        "type": "organization",
        "name": string(&options.assessor),
    });
    if options.assessor == DEFAULT_ASSESSOR {
        assessor["remarks"] = Value::from(
            "No assessor was named when this was rendered (`lattice-policy compliance scan --assessor NAME` names one).",
        );
    }
    let mut props = vec![
        prop("tool", &report.tool.name),
        prop("tool-version", &report.tool.version),
        prop("frameworks", report.frameworks_scanned.join(", ")),
    ];
    if let Some(p) = &report.profile {
        props.push(prop("profile", p));
    }
    if let Some(ns) = &report.namespaces {
        props.push(prop("namespaces", ns.join(", ")));
    }
    json!({
        "title": title,
        "last-modified": report.finished,
        "version": report.snapshot_digest,
        "oscal-version": "1.1.3",
        "props": props,
        "roles": [
            {"id": "prepared-by", "title": "Prepared By", "description": "The tool that produced this document from the scan."},
            {"id": "assessor", "title": "Assessor", "description": "The organisation the assessment is performed for or by."},
        ],
        "parties": [
            {
                "uuid": tool_party,
                "type": "organization",
                "name": format!("Lattice ({} {})", report.tool.name, report.tool.version),
                "remarks": "The Lattice compliance scanner: every check is a Cedar decision on one snapshot.",
            },
            assessor,
        ],
        "responsible-parties": [
            {"role-id": "prepared-by", "party-uuids": [tool_party]},
            {"role-id": "assessor", "party-uuids": [assessor_party]},
        ],
    })
}

/// The scanner as an assessment asset: the component observations name as their origin.
fn assessment_assets(report: &ScanReport) -> Value {
    let component = tool_component_uuid(report);
    json!({
        "components": [{
            "uuid": component,
            "type": "software",
            "title": report.tool.name,
            "description": "The Lattice compliance scanner: it reads the platform's configuration (the world's objects and the active Cedar policies) and asks the decision engine one Comply question per subject and framework.",
            "props": [prop("version", &report.tool.version)],
            "status": {"state": "operational"},
        }],
        "assessment-platforms": [{
            "uuid": stable(&["assessment-platform", &report.tool.name]),
            "title": format!("{} compliance scan", report.tool.name),
            "uses-components": [{"component-uuid": component}],
        }],
    })
}

/// The scanner as the origin of an observation, finding or risk.
fn origins(report: &ScanReport) -> Value {
    json!([{"actors": [{"type": "tool", "actor-uuid": tool_component_uuid(report)}]}])
}

/// Every subject in scope as an inventory item.
fn inventory_items(report: &ScanReport) -> Vec<Value> {
    report
        .inventory
        .iter()
        .map(|s| {
            let mut props = vec![
                prop("cedar-uid", s.uid()),
                prop("subject-kind", s.kind.type_name()),
            ];
            if let Some(o) = &s.object {
                props.push(prop("declared-by", o));
            }
            json!({
                "uuid": inventory_uuid(s),
                "description": format!("{} {}", s.kind.type_name(), s.id),
                "props": props,
            })
        })
        .collect()
}

/// The back-matter resource of a framework's catalog, linked from its control selection.
fn catalog_resource(fw: &FrameworkResult) -> Value {
    let (title, description) = if fw.id == "nist-800-53" {
        (
            "NIST SP 800-53 Rev. 5 catalog".to_owned(),
            format!(
                "NIST's own OSCAL catalog of SP 800-53 Revision 5, published by NIST as {NIST_CATALOG_HREF}; the nist-800-53 control ids and objectives resolve in it."
            ),
        )
    } else {
        (
            format!("{} catalog", fw.title),
            format!(
                "An OSCAL catalog of the {} controls, generated from the {} pack by `lattice-policy compliance catalog --framework {}`; its control ids and objectives are the ones used here.",
                fw.id,
                fw.pack.as_deref().unwrap_or(&fw.id),
                fw.id
            ),
        )
    };
    json!({
        "uuid": stable(&["catalog-resource", &fw.id]),
        "title": title,
        "description": description,
        "props": [prop("framework", &fw.id)],
        "rlinks": [{"href": catalog_href(&fw.id), "media-type": "application/oscal.catalog+json"}],
    })
}

/// A control selection for one framework: the controls Lattice assesses, and those it
/// cannot with the reason. The plan and the results select the same.
fn control_selection(fw: &FrameworkResult) -> Value {
    let include: Vec<Value> = fw
        .controls
        .iter()
        .filter(|c| c.status != Status::NotAssessed)
        .map(|c| json!({"control-id": control_id(&fw.id, &c.id)}))
        .collect();
    let excluded: Vec<&ControlResult> = fw
        .controls
        .iter()
        .filter(|c| c.status == Status::NotAssessed)
        .collect();
    let mut selection = json!({
        "description": format!("Controls of {} evidenced by Lattice's checks.", fw.title),
        "props": [prop("framework", &fw.id)],
        "links": [{
            "href": format!("#{}", stable(&["catalog-resource", &fw.id])),
            "rel": "reference",
            "text": format!("The catalog the {} control ids resolve in", fw.id),
        }],
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
    selection
}

/// The evidence digests as back-matter resources: the snapshot, the world, the policies and
/// the subject inventory.
fn evidence_resources(ids: &Ids, report: &ScanReport) -> Vec<Value> {
    vec![
        digest_resource(
            &ids.of(&["snapshot"]),
            "Decision snapshot",
            "The snapshot of entities and policies every decision of the scan was taken on; its digest covers the world and the active policies.",
            &report.snapshot_digest,
        ),
        digest_resource(
            &ids.of(&["world"]),
            "World",
            "SHA-256 over every object of the world the scan read.",
            &report.world_digest,
        ),
        digest_resource(
            &ids.of(&["policies"]),
            "Policies",
            &format!(
                "SHA-256 over every active policy's id, mode and text, from the rule packs {}.",
                report.packs.join(", ")
            ),
            &report.policies_digest,
        ),
        digest_resource(
            &ids.of(&["inventory"]),
            "Subject inventory",
            "SHA-256 over the sorted uids of every subject in scope, one per line.",
            &report.subject_inventory_sha256,
        ),
    ]
}

fn digest_resource(uuid: &str, title: &str, description: &str, digest: &str) -> Value {
    let hex = bare_hex(digest);
    json!({
        "uuid": uuid,
        "title": title,
        "description": description,
        "rlinks": [{
            "href": format!("urn:lattice:sha256:{hex}"),
            "hashes": [{"algorithm": "SHA-256", "value": hex}],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::{bare_hex, control_id, string};

    #[test]
    fn control_ids_are_oscal_tokens() {
        assert_eq!(control_id("nist-800-53", "SC-7(5)"), "sc-7.5");
        assert_eq!(control_id("nist-800-53", "AC-6"), "ac-6");
        assert_eq!(control_id("soc2", "CC6.1"), "cc6.1");
        assert_eq!(control_id("cis-kubernetes", "5.2.2"), "cis-5.2.2");
    }

    #[test]
    fn strings_are_one_trimmed_nonempty_line() {
        assert_eq!(string("  Example\n Audit LLP "), "Example Audit LLP");
        assert_eq!(string(" \t"), "(none)");
        assert_eq!(string("2027-06-30"), "2027-06-30");
    }

    #[test]
    fn hashes_are_bare_hex() {
        assert_eq!(bare_hex("sha256:ab12"), "ab12");
        assert_eq!(bare_hex("ab12"), "ab12");
    }
}
