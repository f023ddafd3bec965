//! `lattice-policy mesh`: allowed edges, denied declared edges with reasons, one-sided
//! declarations.

use std::path::{Path, PathBuf};

use lattice_gates::MeshPlan;
use serde_json::{Value, json};

use crate::output::{Format, emit};
use crate::{EXIT_OK, EXIT_USAGE};

pub fn run(world: &[PathBuf], policies: &Path, namespace: Option<&str>, format: Format) -> u8 {
    let Some(loaded) = crate::loading::load(world, policies) else {
        return EXIT_USAGE;
    };
    let plan = MeshPlan::plan(&loaded.snapshot, &loaded.world);
    let (text, doc) = describe(&plan, loaded.snapshot.digest(), namespace);
    match format {
        Format::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        )),
        Format::Human => emit(&text),
    }
    EXIT_OK
}

/// The plan's edges with an end in `namespace` (all without one): a table and its JSON.
pub fn describe(plan: &MeshPlan, digest: &str, namespace: Option<&str>) -> (String, Value) {
    let in_scope = |a: &str, b: &str| {
        namespace
            .is_none_or(|ns| a.starts_with(&format!("{ns}/")) || b.starts_with(&format!("{ns}/")))
    };
    let edges: Vec<_> = plan
        .edges()
        .filter(|e| in_scope(&e.caller, &e.callee))
        .collect();
    let rows: Vec<_> = edges
        .iter()
        .map(|e| {
            json!({
                "caller": e.caller, "callee": e.callee, "ports": e.ports,
                "allowed": e.allowed(), "declaredByCaller": e.declared_by_caller,
                "declaredByCallee": e.declared_by_callee, "oneSided": e.one_sided(),
                "reason": e.reason(),
                "policies": e.decision.as_ref().map(|d| d.determining.iter().map(|p| p.id.clone()).collect::<Vec<_>>()).unwrap_or_default(),
            })
        })
        .collect();
    let doc = json!({"snapshot": digest, "edges": rows});
    let width = edges
        .iter()
        .map(|e| e.caller.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    out.push_str(&format!(
        "{:<7} {:<width$}    {:<28} {}\n",
        "VERDICT", "CALLER", "CALLEE", "PORTS / REASON"
    ));
    for e in &edges {
        let verdict = if e.allowed() { "ALLOW" } else { "DENY" };
        let detail = match e.reason() {
            None => e
                .ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            Some(r) => r,
        };
        out.push_str(&format!(
            "{verdict:<7} {:<width$} -> {:<28} {detail}\n",
            e.caller, e.callee
        ));
    }
    let allowed = edges.iter().filter(|e| e.allowed()).count();
    let one_sided = edges.iter().filter(|e| e.one_sided()).count();
    out.push_str(&format!(
        "{} declared edges: {allowed} allowed, {} denied ({one_sided} one-sided) — snapshot {digest}\n",
        edges.len(),
        edges.len() - allowed,
    ));
    (out, doc)
}
