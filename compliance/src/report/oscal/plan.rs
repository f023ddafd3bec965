//! OSCAL `assessment-plan`: what a scan reviews. Its control selections are the results'
//! (per framework, with the controls Lattice cannot assess excluded and why), its subjects
//! every subject in scope (as inventory items with the same stable UUIDs the results use),
//! its method `EXAMINE` of configuration by the scanner, an assessment asset.
//!
//! Lattice produces no system security plan: `import-ssp` points at the back-matter
//! resource of the world the scan read, with its SHA-256.

use serde_json::{Value, json};

use super::{
    Ids, Options, assessment_assets, catalog_resource, control_selection, evidence_resources,
    inventory_items, inventory_uuid, metadata, prop,
};
use crate::scan::ScanReport;

/// Renders the assessment plan of `report` (pretty JSON).
pub fn render(report: &ScanReport, options: &Options) -> String {
    serde_json::to_string_pretty(&document(report, options)).expect("JSON values always serialize")
}

/// SHA-256 (bare hex) of what [`render`] returns, without holding the text.
pub(super) fn sha256(report: &ScanReport, options: &Options) -> String {
    use sha2::{Digest, Sha256};
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    serde_json::to_writer_pretty(&mut h, &document(report, options))
        .expect("JSON values always serialize");
    h.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn document(report: &ScanReport, options: &Options) -> Value {
    let ids = Ids::of_scan(report);
    let mut resources: Vec<Value> = report.frameworks.iter().map(catalog_resource).collect();
    resources.extend(evidence_resources(&ids, report));

    // One subject group per kind, each listing its subjects.
    let mut subjects: Vec<Value> = Vec::new();
    let mut start = 0;
    while start < report.inventory.len() {
        let kind = report.inventory[start].kind;
        let end = report.inventory[start..]
            .iter()
            .position(|s| s.kind != kind)
            .map_or(report.inventory.len(), |n| start + n);
        subjects.push(json!({
            "type": "inventory-item",
            "description": format!(
                "Every {} in scope ({} subject(s)).",
                kind.type_name(),
                end - start
            ),
            "props": [prop("subject-kind", kind.type_name())],
            "include-subjects": report.inventory[start..end]
                .iter()
                .map(|s| json!({"subject-uuid": inventory_uuid(s), "type": "inventory-item"}))
                .collect::<Vec<_>>(),
        }));
        start = end;
    }

    let mut local = json!({
        "activities": [{
            "uuid": ids.of(&["activity", "comply"]),
            "title": "Comply decisions on one snapshot",
            "description": "For every subject in scope and every framework, the scanner asks the decision engine one Comply question on the snapshot of the world's objects and the active Cedar policies; each check is a forbid on Comply, so a denial's reasons are the checks the subject fails. Configuration is read, nothing is changed or exercised.",
            "props": [{"name": "method", "value": "EXAMINE"}],
        }],
    });
    let items = inventory_items(report);
    if !items.is_empty() {
        local["inventory-items"] = Value::Array(items);
    }
    let mut plan = json!({
        "uuid": ids.of(&["plan-document"]),
        "metadata": metadata(
            report,
            options,
            format!("Lattice assessment plan: {}", report.frameworks_scanned.join(", ")),
        ),
        "import-ssp": {
            "href": format!("#{}", ids.of(&["world"])),
            "remarks": "Lattice produces no system security plan: the system under assessment is the world the scan read, named by its SHA-256 in this back-matter resource. An organisation with an SSP can point this at it.",
        },
        "local-definitions": local,
        "reviewed-controls": {
            "control-selections": report.frameworks.iter().map(control_selection).collect::<Vec<_>>(),
        },
        "assessment-assets": assessment_assets(report),
        "back-matter": {"resources": resources},
    });
    if !subjects.is_empty() {
        plan["assessment-subjects"] = Value::Array(subjects);
    }
    json!({"assessment-plan": plan})
}
