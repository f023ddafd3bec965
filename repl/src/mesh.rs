//! `lattice-policy mesh`: allowed edges (each opens the caller's egress and the callee's
//! ingress on its ports), denied declared edges with reasons, one-sided declarations; the
//! egress each workload has outside the mesh; and each namespace's default-deny baseline.

use std::io::Write;
use std::path::{Path, PathBuf};

use lattice_engine::{Snapshot, World};
use lattice_gates::{EdgeDecision, MeshPlan};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::output::{Format, LazyRows, Printer, write_document_with};
use crate::{EXIT_OK, EXIT_USAGE};

/// The actions `mesh` decides: every edge's `Connect` and each workload's egress outside
/// the mesh. Its snapshot holds only the entities they read, and refuses any other.
pub const DECIDES: &[&str] = &["Connect", "AccessExternalEndpoint"];

pub fn run(
    world_paths: &[PathBuf],
    policies: Option<&Path>,
    namespace: Option<&str>,
    format: Format,
) -> u8 {
    let Some(inputs) = crate::loading::load_inputs(world_paths, policies) else {
        return EXIT_USAGE;
    };
    let mut phases = crate::phases::Phases::start("mesh");
    // The same inputs print the same mesh: a run on them is read back, not decided again.
    let options = [
        ("format", format!("{format:?}")),
        ("namespace", namespace.unwrap_or("").to_owned()),
        ("all-namespaces", namespace.is_none().to_string()),
    ];
    let question = crate::output_cache::Question {
        command: "mesh",
        options: &options,
        world_paths,
        policies,
    };
    let slot = crate::output_cache::Slot::of(&question, &inputs.world, &inputs.live);
    if let Some(printed) = slot.as_ref().and_then(|s| s.read()) {
        phases.done("the mesh (cached)");
        let code = printed.emit();
        std::mem::forget(inputs);
        return code;
    }
    // The projection is consumed into the snapshot: nothing here projects again.
    let Some(snapshot) = crate::loading::snapshot_of(&inputs, Some(DECIDES)) else {
        return EXIT_USAGE;
    };
    phases.done("the snapshot");
    let crate::loading::Inputs { world, store, .. } = inputs;
    let packs = crate::loading::PacksInForce::of(&store, policies);
    let plan = MeshPlan::plan(&snapshot, &world);
    phases.done("the mesh plan");
    let (mut text, mut doc) = describe(&plan, &snapshot, &world, namespace, Some(format));
    text.push_str(&packs.line());
    doc["packs"] = packs.json();
    phases.done("the description");
    // Printed as it is made, and kept for the next run on the same inputs.
    let mut printer = Printer::new(slot.is_some());
    let written = match format {
        // The edges' rows are made as they are written (see `describe`).
        Format::Json => {
            let edges = edges_in_scope(&plan, namespace);
            let row = |i: usize| EdgeRow::of(edges[i]);
            write_document_with(
                &mut printer,
                &doc,
                &[&LazyRows {
                    key: "edges",
                    len: edges.len(),
                    row: &row,
                }],
            )
        }
        Format::Human => printer.write_all(text.as_bytes()),
    };
    if let (Some(slot), Some(copy)) = (&slot, printer.finish(written)) {
        slot.store(EXIT_OK, &copy);
    }
    phases.done("output");
    // The process ends here: the world, the snapshot and the plan (most of a gigabyte at
    // 10,000 services) are left to the operating system, as `plan` leaves its own.
    std::mem::forget((world, store, snapshot, plan, text, doc));
    EXIT_OK
}

/// The plan's edges with an end in `namespace` (all without one), the egress outside the
/// mesh and the baselines of the namespaces in scope: a table and its JSON. With a
/// `format`, only that one is built (the other's edges are left out; with JSON, the
/// document's `edges` are left for the writer to make from [`edges_in_scope`] and
/// [`EdgeRow`]): at 50,000 edges each costs as much as the plan.
pub fn describe(
    plan: &MeshPlan,
    snapshot: &Snapshot,
    world: &World,
    namespace: Option<&str>,
    format: Option<Format>,
) -> (String, Value) {
    let (table, document) = (format != Some(Format::Json), format != Some(Format::Human));
    let digest = snapshot.digest();
    let edges = edges_in_scope(plan, namespace);
    // Rows and lines are built on every core: at 50,000 edges they cost as much as the plan.
    let rows = if document && table {
        Value::Array(edges.par_iter().map(|e| edge_row(e)).collect())
    } else {
        Value::Null
    };
    let external = external(snapshot, world, namespace);
    let baselines: Vec<(String, bool)> = lattice_engine::project::namespaces(world)
        .into_keys()
        .filter(|ns| namespace.is_none_or(|n| n == ns))
        .map(|ns| {
            let on = !snapshot.opted_out(&ns);
            (ns, on)
        })
        .collect();
    let cross = cross_cluster(world, namespace);
    let mut doc = json!({
        "snapshot": digest,
        "edges": null,
        "egress": external.iter().map(|(w, host, proto, ports, allowed)| json!({
            "workload": w, "host": host, "protocol": proto, "ports": ports, "allowed": allowed
        })).collect::<Vec<_>>(),
        "namespaces": baselines.iter().map(|(ns, on)| json!({"name": ns, "defaultDeny": on})).collect::<Vec<_>>(),
        "crossCluster": cross.iter().map(|(w, p)| json!({
            "workload": w, "cluster": p.cluster, "namespace": p.namespace, "name": p.name,
            "outbound": p.outbound, "inbound": p.inbound,
        })).collect::<Vec<_>>(),
    });
    // Moved in, in its place: `json!` would serialize each of the 50,000 rows again.
    doc["edges"] = rows;
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
    let lines: Vec<String> = if !table {
        Vec::new()
    } else {
        edges
            .par_iter()
            .map(|e| {
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
                format!(
                    "{verdict:<7} {:<width$} -> {:<28} {detail}\n",
                    e.caller, e.callee
                )
            })
            .collect()
    };
    out.extend(lines);
    let allowed = edges.iter().filter(|e| e.allowed()).count();
    let one_sided = edges.iter().filter(|e| e.one_sided()).count();
    if !external.is_empty() {
        out.push_str("\nEGRESS outside the mesh (AccessExternalEndpoint)\n");
        for (w, host, proto, ports, allowed) in &external {
            let verdict = if *allowed { "ALLOW" } else { "DENY" };
            let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            out.push_str(&format!(
                "{verdict:<7} {w:<width$} -> {host}:{}/{proto}\n",
                ports.join(",")
            ));
        }
    }
    if !cross.is_empty() {
        out.push_str(
            "\nCROSS-CLUSTER declarations (decided by the two clusters' nearest common ancestor, not here)\n",
        );
        for (w, p) in &cross {
            let peer = format!("{}/{}/{}", p.cluster, p.namespace, p.name);
            if p.outbound {
                out.push_str(&format!("CALLS   {w:<width$} -> {peer}\n"));
            }
            if p.inbound {
                out.push_str(&format!("TAKES   {w:<width$} <- {peer}\n"));
            }
        }
    }
    out.push_str(
        "\nBASELINE (L4 ingress and egress deny, DNS allowed; L7 allow-nothing; STRICT mTLS)\n",
    );
    for (ns, on) in &baselines {
        out.push_str(&format!(
            "{:<7} {ns}\n",
            if *on { "APPLIED" } else { "OPTOUT" }
        ));
    }
    out.push_str(&format!(
        "{} declared edges: {allowed} allowed, {} denied ({one_sided} one-sided); an allowed edge opens the caller's egress and the callee's ingress on its ports — snapshot {digest}\n",
        edges.len(),
        edges.len() - allowed,
    ));
    (out, doc)
}

/// The plan's edges with an end in `namespace` (all without one), in the plan's order.
pub fn edges_in_scope<'p>(plan: &'p MeshPlan, namespace: Option<&str>) -> Vec<&'p EdgeDecision> {
    let prefix = namespace.map(|ns| format!("{ns}/"));
    plan.edges()
        .filter(|e| {
            prefix
                .as_deref()
                .is_none_or(|p| e.caller.starts_with(p) || e.callee.starts_with(p))
        })
        .collect()
}

/// One edge as the document's `edges` hold it.
pub fn edge_row(e: &EdgeDecision) -> Value {
    serde_json::to_value(EdgeRow::of(e)).expect("an edge's row is JSON")
}

/// One edge's row, borrowing the edge: what [`edge_row`] makes a value of, and what the
/// JSON output renders directly.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRow<'a> {
    caller: &'a str,
    callee: &'a str,
    ports: &'a [i64],
    allowed: bool,
    declared_by_caller: bool,
    declared_by_callee: bool,
    one_sided: bool,
    reason: Option<String>,
    policies: Vec<&'a str>,
}

impl<'a> EdgeRow<'a> {
    pub fn of(e: &'a EdgeDecision) -> EdgeRow<'a> {
        EdgeRow {
            caller: &e.caller,
            callee: &e.callee,
            ports: &e.ports,
            allowed: e.allowed(),
            declared_by_caller: e.declared_by_caller,
            declared_by_callee: e.declared_by_callee,
            one_sided: e.one_sided(),
            reason: e.reason(),
            policies: e.decision.as_ref().map_or(Vec::new(), |d| {
                d.determining.iter().map(|p| p.id.as_str()).collect()
            }),
        }
    }
}

/// Each workload's declared peers in other clusters, in `namespace` (all without one).
fn cross_cluster(
    world: &World,
    namespace: Option<&str>,
) -> Vec<(String, lattice_engine::project::RemotePeer)> {
    let mut out = Vec::new();
    for (key, object) in world.objects() {
        let Some(ns) = key.namespace.as_deref() else {
            continue;
        };
        if namespace.is_some_and(|n| n != ns) {
            continue;
        }
        for peer in lattice_engine::project::remote_peers(object) {
            out.push((format!("{ns}/{}", key.name), peer));
        }
    }
    out
}

/// Each workload's endpoints outside the mesh in `namespace` (all without one): workload,
/// host, protocol, ports, and whether every `AccessExternalEndpoint` gate for them allowed.
/// Only those gates are decided (a workload's other gates, its quota among them, say
/// nothing here), without explanations, on every core.
fn external(
    snapshot: &Snapshot,
    world: &World,
    namespace: Option<&str>,
) -> Vec<(String, String, String, Vec<i64>, bool)> {
    let workloads: Vec<_> = world
        .objects()
        .filter(|(key, object)| {
            key.namespace
                .as_deref()
                .is_some_and(|ns| namespace.is_none_or(|n| n == ns))
                && object.is_workload()
        })
        .collect();
    workloads
        .par_iter()
        .flat_map_iter(|(key, object)| {
            let endpoints = lattice_compiler::egress::external_endpoints(object);
            let allowed: std::collections::HashSet<String> = if endpoints.is_empty() {
                Default::default()
            } else {
                lattice_gates::questions(object)
                    .iter()
                    .filter(|g| g.action == "AccessExternalEndpoint")
                    .filter(|g| lattice_gates::decide(snapshot, object, g).is_ok_and(|d| d.allowed))
                    .map(|g| g.resource.id().unescaped().to_owned())
                    .collect()
            };
            let workload = format!(
                "{}/{}",
                key.namespace.as_deref().unwrap_or_default(),
                key.name
            );
            endpoints.into_iter().map(move |((host, proto), ports)| {
                let all = ports
                    .iter()
                    .all(|p| allowed.contains(&format!("{host}:{p}")));
                (workload.clone(), host, proto, ports, all)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_cluster_declarations_are_listed_as_decided_elsewhere() {
        let root = lattice_testkit::workspace_root();
        let mut world = World::load(&[root.join("examples/world")]).unwrap();
        let api = lattice_schemas::manifest::Object::from_api(
            "LatticeService",
            &json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
                "metadata": {"name": "api", "namespace": "payments"},
                "spec": {
                    "containers": {"main": {"image": "ghcr.io/lattice-demo/api:1.0"}},
                    "service": {"ports": {"http": {"port": 8080}}},
                    "resources": {"frontend": {"type": "service", "direction": "inbound", "namespace": "shop", "cluster": "edge"}}
                }
            }),
        )
        .unwrap();
        world.upsert(api);
        let store = lattice_engine::PolicyStore::load_packs(&root.join("policies")).unwrap();
        let snapshot =
            Snapshot::build(&world, &lattice_engine::Projection::of(&world), &store).unwrap();
        let plan = MeshPlan::plan(&snapshot, &world);
        let (text, doc) = describe(&plan, &snapshot, &world, Some("payments"), None);
        assert!(text.contains("CROSS-CLUSTER"), "{text}");
        assert!(text.contains("TAKES   payments/api"), "{text}");
        assert!(text.contains("<- edge/shop/frontend"), "{text}");
        assert_eq!(doc["crossCluster"][0]["cluster"], "edge");
        assert_eq!(doc["crossCluster"][0]["inbound"], true);
        // Not an edge of this cluster's plan.
        assert!(plan.edges().all(|e| e.callee != "payments/api"));
    }
}
