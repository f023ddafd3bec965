//! `lattice-policy plan`: everything the platform decides and derives for a world, in one
//! place: each workload's gates and what it derives, each namespace's baseline, the mesh,
//! the compliance summary per framework, and the snapshot it was all decided on.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use lattice_compiler::{CompileContext, CompileError, derive_counting_edges, derive_in};
use lattice_compliance::scan::{ScanOptions, scan};
use lattice_gates::MeshPlan;
use lattice_gates::compliance::{
    AllowedDeviations, DecidedGates, DerivedByWorkload, DerivedObjects,
};
use lattice_schemas::crd::service::DeniedGate;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::output::{Format, LazyRows, Printer, write_document_with};
use crate::style::Style;
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// What one workload comes to.
enum Outcome {
    /// Every gate allowed: the objects it derives, counted by kind (and kept only for
    /// `--detail`: at 10,000 workloads they are most of the memory a plan would hold).
    Derived {
        counts: BTreeMap<String, usize>,
        objects: Option<Vec<Value>>,
        /// What the objects show, for the compliance scan.
        facts: DerivedObjects,
        /// The deviations its gates allowed, for the scan's exception register.
        deviations: Vec<lattice_gates::AllowedGate>,
    },
    Denied(Vec<DeniedGate>),
    Failed(String),
}

pub fn run(paths: &[PathBuf], policies: Option<&Path>, detail: bool, format: Format) -> u8 {
    let mut phases = crate::phases::Phases::start("plan");
    let bar = progress("loading the world");
    let Some(inputs) = crate::loading::load_inputs(paths, policies) else {
        return EXIT_USAGE;
    };
    // The same inputs print the same plan: a run on them is read back, not decided again.
    let style = Style::detect();
    let options = [
        ("format", format!("{format:?}")),
        ("detail", detail.to_string()),
        ("color", style.colored().to_string()),
    ];
    let question = crate::output_cache::Question {
        command: "plan",
        options: &options,
        world_paths: paths,
        policies,
    };
    let slot = crate::output_cache::Slot::of(&question, &inputs.world, &inputs.live);
    if let Some(printed) = slot.as_ref().and_then(|s| s.read()) {
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        phases.done("loading, and the plan read back (cached)");
        let code = printed.emit();
        std::mem::forget(inputs);
        return code;
    }
    // Nothing is projected again after the snapshot: it may consume the projection, so no
    // entity is held twice (at 10,000 services, hundreds of megabytes and their building).
    let Some(owned_snapshot) = crate::loading::snapshot_of(&inputs, None) else {
        return EXIT_USAGE;
    };
    let crate::loading::Inputs {
        world: owned_world,
        store,
        ..
    } = inputs;
    let packs = crate::loading::PacksInForce::of(&store, policies);
    let (world, snapshot) = (&owned_world, &owned_snapshot);
    phases.done("loading and the snapshot");
    // Shared with the scan, which reads the unilateral callers from its edges.
    let mesh = std::sync::Arc::new(MeshPlan::plan(snapshot, world));
    phases.done("the mesh plan");
    let ctx = CompileContext::of(world, snapshot);
    let workloads: Vec<(
        &lattice_engine::ObjectKey,
        &lattice_schemas::manifest::Object,
    )> = world.objects().filter(|(_, o)| o.is_workload()).collect();
    if let Some(b) = &bar {
        b.set_length(workloads.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos}/{len} workloads")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.set_message("deciding and deriving");
    }
    let mut outcomes: Vec<(String, &'static str, Outcome)> = workloads
        .par_iter()
        .map(|(k, o)| {
            if let Some(b) = &bar {
                b.inc(1);
            }
            let outcome = derive_one(snapshot, world, &mesh, &ctx, o, detail);
            let id = format!("{}/{}", k.namespace.as_deref().unwrap_or("default"), k.name);
            (id, o.kind_name(), outcome)
        })
        .collect();
    outcomes.par_sort_by(|a, b| a.0.cmp(&b.0));
    phases.done("every workload's gates and objects");
    if let Some(b) = &bar {
        b.set_style(indicatif::ProgressStyle::default_spinner());
        b.set_message("scanning compliance");
    }
    // Every gate of a derived or denied workload was just decided: the scan takes those
    // denials as they are. A workload that failed otherwise is decided by the scan itself.
    // Sized up front: grown one insert at a time, on one core, these maps were about a third
    // of the time between the phases.
    let mut decided = DecidedGates::with_capacity(outcomes.len());
    decided.extend(outcomes.iter().filter_map(|(id, _, o)| match o {
        Outcome::Derived { .. } => Some((id.clone(), Vec::new())),
        Outcome::Denied(gates) => Some((id.clone(), gates.clone())),
        Outcome::Failed(_) => None,
    }));
    // Only the scan reads the facts and the deviations: they move to it.
    let mut derived = DerivedByWorkload::with_capacity(outcomes.len());
    let mut deviations = AllowedDeviations::with_capacity(outcomes.len());
    for (id, _, o) in &mut outcomes {
        if let Outcome::Derived {
            facts,
            deviations: allowed,
            ..
        } = o
        {
            derived.insert(id.clone(), std::mem::take(facts));
            deviations.insert(id.clone(), std::mem::take(allowed));
        }
    }
    let options = ScanOptions {
        decided_gates: Some(std::sync::Arc::new(decided)),
        derived: Some(std::sync::Arc::new(derived)),
        allowed_deviations: Some(std::sync::Arc::new(deviations)),
        mesh: Some(mesh.clone()),
        ..ScanOptions::default()
    };
    let report = scan(world, &store, snapshot, &options, &|_| {});
    phases.done("the compliance scan");
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };

    let namespaces: Vec<(String, bool)> = lattice_engine::project::namespaces(world)
        .into_keys()
        .map(|ns| {
            let applied = !snapshot.opted_out(&ns);
            (ns, applied)
        })
        .collect();
    let platform = platform_objects(snapshot, world, &mesh, &ctx);
    let edges: Vec<&lattice_gates::EdgeDecision> = mesh.edges().collect();
    let denied_workloads = outcomes
        .iter()
        .filter(|(_, _, o)| !matches!(o, Outcome::Derived { .. }))
        .count();
    let denied_edges = edges.iter().filter(|e| !e.allowed()).count();

    let code = if denied_workloads > 0 || denied_edges > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    // Printed as it is made, and kept for the next run on the same inputs.
    let mut printer = Printer::new(slot.is_some());
    let written = match format {
        // The document is built only when it is printed: at 10,000 services it is a few
        // hundred milliseconds of work a terminal reader does not need.
        Format::Json => {
            // The two long arrays (60,000 rows at 10,000 services) are made as they are
            // written, on every core, from rows that borrow what they show: held whole as
            // JSON values they were the most fresh memory the output asked for.
            let workload_row = |i: usize| WorkloadRow::of(&outcomes[i]);
            let edge_row = |i: usize| PlanEdgeRow::of(edges[i]);
            let doc = json!({
                "snapshot": snapshot.digest(),
                "packs": packs.json(),
                "workloads": null,
                "namespaces": namespaces.iter().map(|(ns, applied)| json!({"name": ns, "defaultDeny": applied})).collect::<Vec<_>>(),
                "platform": platform.iter().map(|(kind, name, o)| match o {
                    PlatformOutcome::Derived(counts) => json!({"kind": kind, "name": name, "objects": counts}),
                    PlatformOutcome::Failed(e) => json!({"kind": kind, "name": name, "error": e}),
                    PlatformOutcome::Restore => json!({"kind": kind, "name": name, "decided": "Restore, for its writer"}),
                }).collect::<Vec<_>>(),
                "mesh": null,
                "compliance": report.frameworks.iter().map(|f| json!({
                    "framework": f.id, "checks": f.check_tally, "controls": f.control_tally,
                })).collect::<Vec<_>>(),
            });
            write_document_with(
                &mut printer,
                &doc,
                &[
                    &LazyRows {
                        key: "workloads",
                        len: outcomes.len(),
                        row: &workload_row,
                    },
                    &LazyRows {
                        key: "mesh",
                        len: edges.len(),
                        row: &edge_row,
                    },
                ],
            )
        }
        Format::Human => {
            let s = style;
            let mut out = String::new();
            out.push_str(&format!(
                "WORKLOADS ({} of {} derive)\n",
                outcomes.len() - denied_workloads,
                outcomes.len()
            ));
            for (id, kind, o) in &outcomes {
                match o {
                    Outcome::Derived {
                        counts, objects, ..
                    } => {
                        let c: Vec<String> =
                            counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
                        out.push_str(&format!(
                            "  {} {id} ({kind}): {}\n",
                            s.allow("ALLOW"),
                            c.join(", ")
                        ));
                        if let Some(objects) = objects {
                            for obj in objects {
                                out.push_str(&format!(
                                    "      {} {}/{}\n",
                                    obj["kind"].as_str().unwrap_or("?"),
                                    obj["metadata"]["namespace"].as_str().unwrap_or(""),
                                    obj["metadata"]["name"].as_str().unwrap_or("?")
                                ));
                            }
                        }
                    }
                    Outcome::Denied(gates) => {
                        out.push_str(&format!(
                            "  {} {id} ({kind}): nothing derived\n",
                            s.deny("DENY ")
                        ));
                        for g in gates {
                            out.push_str(&format!(
                                "      {} {} (raised by {})",
                                g.action, g.resource, g.raised_by
                            ));
                            if !g.policies.is_empty() {
                                out.push_str(&format!(": {}", s.id(&g.policies.join(", "))));
                            }
                            out.push('\n');
                            if let Some(a) = &g.advice {
                                out.push_str(&format!("        advice: {a}\n"));
                            }
                        }
                    }
                    Outcome::Failed(e) => {
                        out.push_str(&format!("  {} {id} ({kind}): {e}\n", s.deny("FAIL ")));
                    }
                }
            }
            out.push_str("\nNAMESPACES (default-deny baseline: L4 in and out with DNS, L7 allow-nothing, STRICT mTLS)\n");
            for (ns, applied) in &namespaces {
                let verdict = if *applied {
                    s.allow("APPLIED")
                } else {
                    s.warn("OPTOUT ")
                };
                out.push_str(&format!("  {verdict} {ns}\n"));
            }
            if !platform.is_empty() {
                out.push_str("\nPLATFORM (backups through Velero, issuers through cert-manager, DNS zones through external-dns)\n");
            }
            for (kind, name, o) in &platform {
                match o {
                    PlatformOutcome::Derived(counts) => {
                        let c: Vec<String> =
                            counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
                        out.push_str(&format!(
                            "  {} {name} ({kind}): {}\n",
                            s.allow("ALLOW"),
                            c.join(", ")
                        ));
                    }
                    PlatformOutcome::Failed(e) => {
                        out.push_str(&format!("  {} {name} ({kind}): {e}\n", s.deny("FAIL ")));
                    }
                    PlatformOutcome::Restore => out.push_str(&format!(
                        "  {} {name} ({kind}): Restore is decided for whoever writes it, at admission and again by the operator\n",
                        s.warn("ASK  ")
                    )),
                }
            }
            out.push_str(&format!(
                "\nMESH ({} declared edges: {} allowed, {denied_edges} denied)\n",
                edges.len(),
                edges.len() - denied_edges
            ));
            for e in edges.iter().filter(|e| !e.allowed() || detail) {
                let verdict = if e.allowed() {
                    s.allow("ALLOW")
                } else {
                    s.deny("DENY ")
                };
                let why = e.reason().unwrap_or_else(|| {
                    e.ports
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                });
                out.push_str(&format!(
                    "  {verdict} {} -> {}: {why}\n",
                    e.caller, e.callee
                ));
            }
            out.push_str(
                "\nCOMPLIANCE (checks passed / by an approved exception / failed; controls passed / by exception / partially evidenced / failed / not assessed)\n",
            );
            for f in &report.frameworks {
                let c = &f.check_tally;
                let k = &f.control_tally;
                out.push_str(&format!(
                    "  {:<16} checks {} / {} / {}   controls {} / {} / {} / {} / {}\n",
                    f.id,
                    c.pass,
                    c.pass_with_exception,
                    if c.fail > 0 {
                        s.deny(&c.fail.to_string())
                    } else {
                        c.fail.to_string()
                    },
                    k.pass,
                    k.pass_with_exception,
                    k.partially_evidenced,
                    k.fail,
                    k.not_assessed
                ));
            }
            out.push('\n');
            out.push_str(&packs.line());
            out.push_str(&format!(
                "{} of {} workloads denied, {denied_edges} of {} edges denied — snapshot {}\n",
                denied_workloads,
                outcomes.len(),
                edges.len(),
                snapshot.digest()
            ));
            if !detail {
                out.push_str("(--detail lists every derived object and every allowed edge; -o json gives one document)\n");
            }
            printer.write_all(out.as_bytes())
        }
    };
    if let (Some(slot), Some(copy)) = (&slot, printer.finish(written)) {
        slot.store(code, &copy);
    }
    phases.done("the output");
    // The process ends here: what the plan read and decided (gigabytes at 10,000 services)
    // is left to the operating system instead of being freed piece by piece.
    std::mem::forget((outcomes, report, mesh, options));
    std::mem::forget((owned_world, store, owned_snapshot));
    code
}

/// One workload's row in the JSON document's `workloads`, borrowing its outcome.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum WorkloadRow<'a> {
    Derived {
        workload: &'a str,
        kind: &'a str,
        allowed: bool,
        objects: &'a BTreeMap<String, usize>,
        /// Every derived object with `--detail`, else null.
        derived: Option<&'a [Value]>,
    },
    Denied {
        workload: &'a str,
        kind: &'a str,
        allowed: bool,
        denied: &'a [DeniedGate],
    },
    Failed {
        workload: &'a str,
        kind: &'a str,
        allowed: bool,
        error: &'a str,
    },
}

impl<'a> WorkloadRow<'a> {
    fn of((id, kind, outcome): &'a (String, &'static str, Outcome)) -> WorkloadRow<'a> {
        match outcome {
            Outcome::Derived {
                counts, objects, ..
            } => WorkloadRow::Derived {
                workload: id,
                kind,
                allowed: true,
                objects: counts,
                derived: objects.as_deref(),
            },
            Outcome::Denied(gates) => WorkloadRow::Denied {
                workload: id,
                kind,
                allowed: false,
                denied: gates,
            },
            Outcome::Failed(e) => WorkloadRow::Failed {
                workload: id,
                kind,
                allowed: false,
                error: e,
            },
        }
    }
}

/// One edge's row in the JSON document's `mesh`, borrowing the edge (`mesh`'s own rows say
/// more: which side declared it and the deciding policies).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanEdgeRow<'a> {
    caller: &'a str,
    callee: &'a str,
    allowed: bool,
    ports: &'a [i64],
    one_sided: bool,
    reason: Option<String>,
}

impl<'a> PlanEdgeRow<'a> {
    fn of(e: &'a lattice_gates::EdgeDecision) -> PlanEdgeRow<'a> {
        PlanEdgeRow {
            caller: &e.caller,
            callee: &e.callee,
            allowed: e.allowed(),
            ports: &e.ports,
            one_sided: e.one_sided(),
            reason: e.reason(),
        }
    }
}

/// What a backup, restore, issuer or DNS provider comes to in a plan.
enum PlatformOutcome {
    Derived(BTreeMap<String, usize>),
    Failed(String),
    /// Decided for the user who writes it (`Restore`), which a plan of files cannot know.
    Restore,
}

/// What every LatticeClusterBackup, CertIssuer and DNSProvider derives, and every
/// LatticeRestore, by name.
fn platform_objects(
    snapshot: &lattice_engine::Snapshot,
    world: &lattice_engine::World,
    mesh: &MeshPlan,
    ctx: &CompileContext,
) -> Vec<(&'static str, String, PlatformOutcome)> {
    world
        .objects()
        .filter_map(|(key, o)| {
            let outcome = match o {
                lattice_schemas::manifest::Object::ClusterBackup(_)
                | lattice_schemas::manifest::Object::CertIssuer(_)
                | lattice_schemas::manifest::Object::DnsProvider(_) => {
                    match derive_in(snapshot, world, mesh, ctx, o) {
                        Ok(d) => PlatformOutcome::Derived(counts(&d.objects)),
                        Err(e) => PlatformOutcome::Failed(e.to_string()),
                    }
                }
                lattice_schemas::manifest::Object::Restore(_) => PlatformOutcome::Restore,
                _ => return None,
            };
            Some((key.kind, key.name.clone(), outcome))
        })
        .collect()
}

/// Objects counted by kind.
fn counts(objects: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in objects {
        *out.entry(o["kind"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    out
}

/// A spinner on a terminal, nothing when piped.
fn progress(message: &'static str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(bar)
}

/// What one workload comes to on `snapshot`; its objects are kept only with `detail`.
/// Without it, its mesh edges' objects are counted, never built: nothing would read them.
fn derive_one(
    snapshot: &lattice_engine::Snapshot,
    world: &lattice_engine::World,
    mesh: &MeshPlan,
    ctx: &CompileContext,
    object: &lattice_schemas::manifest::Object,
    detail: bool,
) -> Outcome {
    let derived = match detail {
        true => derive_in(snapshot, world, mesh, ctx, object),
        false => derive_counting_edges(snapshot, world, mesh, ctx, object),
    };
    match derived {
        Ok(d) => {
            let mut counts = counts(&d.objects);
            let mut facts = DerivedObjects::read(&d.objects);
            for (kind, n) in d.unbuilt {
                *counts.entry(kind.to_owned()).or_insert(0) += n;
                facts.kinds.insert(kind.to_owned());
            }
            Outcome::Derived {
                counts,
                facts,
                deviations: lattice_compliance::exceptions::deviations(&d.gates),
                objects: detail.then_some(d.objects),
            }
        }
        Err(CompileError::Denied { gates, .. }) => Outcome::Denied(gates),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// What a compliance scan reads from derivation: by workload, its denied gates, what its
/// derived objects show and the deviations it was allowed; and the mesh plan derived on.
pub(crate) struct ForScan {
    pub decided: DecidedGates,
    pub derived: DerivedByWorkload,
    pub deviations: AllowedDeviations,
    pub mesh: std::sync::Arc<MeshPlan>,
}

/// Derives every workload of `world` in `namespaces` (all when `None`) on `snapshot`, as
/// `plan` does, and keeps what a compliance scan reads.
pub(crate) fn derive_for_scan(
    world: &lattice_engine::World,
    snapshot: &lattice_engine::Snapshot,
    namespaces: Option<&std::collections::BTreeSet<String>>,
) -> ForScan {
    let mesh = std::sync::Arc::new(MeshPlan::plan(snapshot, world));
    let ctx = CompileContext::of(world, snapshot);
    let workloads: Vec<(String, &lattice_schemas::manifest::Object)> = world
        .objects()
        .filter(|(_, o)| o.is_workload())
        .filter(|(k, _)| {
            namespaces.is_none_or(|set| set.contains(k.namespace.as_deref().unwrap_or("default")))
        })
        .map(|(k, o)| {
            (
                format!("{}/{}", k.namespace.as_deref().unwrap_or("default"), k.name),
                o,
            )
        })
        .collect();
    let outcomes: Vec<(String, Outcome)> = workloads
        .par_iter()
        .map(|(id, o)| {
            (
                id.clone(),
                derive_one(snapshot, world, &mesh, &ctx, o, false),
            )
        })
        .collect();
    let mut decided = DecidedGates::new();
    let mut derived = DerivedByWorkload::new();
    let mut deviations = AllowedDeviations::new();
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Derived {
                facts,
                deviations: allowed,
                ..
            } => {
                decided.insert(id.clone(), Vec::new());
                derived.insert(id.clone(), facts);
                deviations.insert(id, allowed);
            }
            Outcome::Denied(gates) => {
                decided.insert(id, gates);
            }
            // Failed otherwise: the scan decides its gates itself; it derived nothing.
            Outcome::Failed(_) => {}
        }
    }
    ForScan {
        decided,
        derived,
        deviations,
        mesh,
    }
}
