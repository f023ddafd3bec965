//! `lattice-policy render`: the objects a workload compiles to, or why it is denied.

use std::path::{Path, PathBuf};

use lattice_compiler::{CompileError, Derived, derive};
use lattice_engine::{Projection, Snapshot};
use lattice_gates::MeshPlan;
use lattice_schemas::generate::to_yaml;
use serde_json::json;

use crate::output::{Format, emit, render as render_diagnostic};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

pub fn run(file: &Path, world: &[PathBuf], policies: &Path, format: Format) -> u8 {
    let report = lattice_schemas::validate::validate_paths(&[file.to_path_buf()]);
    if report.errors() > 0 || !report.unreadable.is_empty() {
        for f in &report.findings {
            emit(&render_diagnostic(f));
        }
        for u in &report.unreadable {
            eprintln!("error: cannot read {u}");
        }
        return EXIT_USAGE;
    }
    let workloads: Vec<_> = report
        .manifests
        .iter()
        .filter(|m| m.object.is_workload())
        .collect();
    let [manifest] = workloads.as_slice() else {
        eprintln!(
            "error: {} holds {} workloads (LatticeService, LatticeJob, LatticeModel, LatticeMeshMember); render takes exactly one",
            file.display(),
            workloads.len()
        );
        return EXIT_USAGE;
    };
    let Some(mut loaded) = crate::loading::load(world, policies) else {
        return EXIT_USAGE;
    };
    // The workload joins the world it is rendered in (replacing its older version).
    loaded.world.upsert(manifest.object.clone());
    let snapshot =
        match Snapshot::build(&loaded.world, &Projection::of(&loaded.world), &loaded.store) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        };
    let plan = MeshPlan::plan(&snapshot, &loaded.world);
    match derive(&snapshot, &loaded.world, &plan, &manifest.object) {
        Ok(Derived { objects, warnings }) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            match format {
                Format::Json => emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&objects).expect("JSON values serialize")
                )),
                Format::Human => emit(&objects.iter().map(to_yaml).collect::<String>()),
            }
            EXIT_OK
        }
        Err(CompileError::Denied { workload, gates }) => {
            match format {
                Format::Json => {
                    let doc = json!({"workload": workload, "allowed": false, "snapshot": snapshot.digest(), "denied": gates});
                    emit(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&doc).expect("JSON values serialize")
                    ));
                }
                Format::Human => {
                    let mut out =
                        format!("DENIED {workload}: nothing is derived until every gate allows\n");
                    for g in &gates {
                        out.push_str(&format!(
                            "  {} {} (raised by {})\n",
                            g.action, g.resource, g.raised_by
                        ));
                        if !g.policies.is_empty() {
                            out.push_str(&format!("    decided by: {}\n", g.policies.join(", ")));
                        }
                        if let Some(a) = &g.advice {
                            out.push_str(&format!("    advice: {a}\n"));
                        }
                    }
                    out.push_str(&format!("snapshot {}\n", snapshot.digest()));
                    emit(&out);
                }
            }
            EXIT_FINDINGS
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}
