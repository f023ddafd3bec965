//! `lattice-policy render`: the objects a workload compiles to, or why it is denied; the
//! Cluster API objects a LatticeCluster is provisioned with, once `Provision` allows it; or
//! a namespace's default-deny baseline.

use std::path::{Path, PathBuf};

use lattice_clusters::{BootstrapEndpoint, ProvisionOptions, provision};
use lattice_compiler::{CompileError, Derived, derive};
use lattice_engine::Snapshot;
use lattice_gates::MeshPlan;
use lattice_gates::lifecycle::{self, Lifecycle, LifecycleFacts};
use lattice_schemas::crd::cluster::LatticeCluster;
use lattice_schemas::generate::to_yaml;
use lattice_schemas::manifest::{Manifest, Object};
use serde_json::json;

use crate::output::{Format, emit, emit_json, render as render_diagnostic};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

pub fn run(
    file: &Path,
    world: &[PathBuf],
    policies: Option<&Path>,
    endpoint: Option<&BootstrapEndpoint>,
    format: Format,
) -> u8 {
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
    // Workloads, and backups (a restore says it is decided for its writer, at admission).
    let workloads: Vec<_> = report
        .manifests
        .iter()
        .filter(|m| {
            m.object
                .kind()
                .is_some_and(lattice_schemas::crd::Kind::derives)
        })
        .collect();
    let clusters: Vec<_> = report
        .manifests
        .iter()
        .filter_map(|m| match &m.object {
            Object::Cluster(c) => Some(c),
            _ => None,
        })
        .collect();
    if let ([], [cluster]) = (workloads.as_slice(), clusters.as_slice()) {
        return render_cluster(
            cluster,
            &report.manifests,
            world,
            policies,
            endpoint,
            format,
        );
    }
    let [manifest] = workloads.as_slice() else {
        eprintln!(
            "error: {} holds {} workloads (LatticeService, LatticeJob, LatticeModel, LatticeMeshMember, LatticePackage, LatticeClusterBackup, LatticeRestore) and {} LatticeClusters; render takes exactly one of either",
            file.display(),
            workloads.len(),
            clusters.len()
        );
        return EXIT_USAGE;
    };
    let Some(mut loaded) = crate::loading::load(world, policies) else {
        return EXIT_USAGE;
    };
    // The workload joins the world it is rendered in (replacing its older version).
    loaded.world.upsert(manifest.object.clone());
    let projection = match crate::loading::project(&loaded.world, world) {
        Ok(p) => p,
        Err(e) => {
            eprint!("{e}");
            return EXIT_USAGE;
        }
    };
    let snapshot = match Snapshot::build(&loaded.world, &projection, &loaded.store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let plan = MeshPlan::plan(&snapshot, &loaded.world);
    match derive(&snapshot, &loaded.world, &plan, &manifest.object) {
        Ok(Derived {
            objects, warnings, ..
        }) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            emit_objects(&objects, format, &loaded.packs, snapshot.digest());
            EXIT_OK
        }
        Err(CompileError::Denied { workload, gates }) => {
            match format {
                Format::Json => {
                    let doc = json!({"workload": workload, "allowed": false, "snapshot": snapshot.digest(), "packs": loaded.packs.json(), "denied": gates});
                    emit_json(&doc);
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
                    out.push_str(&loaded.packs.line());
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

/// Where a rendered cluster's hook fetches its agent when no `--bootstrap-endpoint` is
/// given: a reserved name that resolves nowhere, so a render applied as it is cannot reach
/// a stranger.
const UNSET_ENDPOINT_HOST: &str = "lattice-cell.invalid";

/// `render -f cluster.yaml`: `Provision` asked of the cluster's manager (its parent, or the
/// installer's bootstrap cluster for a root); the CAPI objects when it allows, else the
/// decision with its policies and advice (exit 1).
fn render_cluster(
    cluster: &LatticeCluster,
    manifests: &[Manifest],
    world: &[PathBuf],
    policies: Option<&Path>,
    endpoint: Option<&BootstrapEndpoint>,
    format: Format,
) -> u8 {
    let Some(loaded) = crate::loading::load(world, policies) else {
        return EXIT_USAGE;
    };
    let name = cluster.metadata.name.clone().unwrap_or_default();
    // The InfraProvider it names: beside it in the file, else in the world.
    let infra = manifests
        .iter()
        .map(|m| &m.object)
        .chain(loaded.world.objects().map(|(_, o)| o))
        .find_map(|o| match o {
            Object::InfraProvider(p)
                if p.metadata.name.as_deref() == Some(&cluster.spec.provider_ref) =>
            {
                Some(p.spec.clone())
            }
            _ => None,
        });
    if infra.is_none() && cluster.spec.provider.config.docker.is_none() {
        eprintln!(
            "warning: no InfraProvider `{}` in the file or the world: the objects name no credentials",
            cluster.spec.provider_ref
        );
    }
    let endpoint = endpoint.cloned().unwrap_or_else(|| {
        let port = loaded
            .world
            .objects()
            .find_map(|(_, o)| match o {
                Object::Cluster(p) if p.metadata.name.as_deref() == cluster.spec.parent.as_deref() => {
                    p.spec.parent_config.as_ref().and_then(|c| c.bootstrap_port)
                }
                _ => None,
            })
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(8443);
        eprintln!(
            "warning: no --bootstrap-endpoint: the bootstrap hook names {UNSET_ENDPOINT_HOST}:{port}, which reaches nothing"
        );
        BootstrapEndpoint {
            host: UNSET_ENDPOINT_HOST.into(),
            port,
        }
    });
    let provisioned = match provision(
        cluster,
        &ProvisionOptions {
            endpoint: Some(endpoint),
            infra: infra.as_ref(),
        },
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: LatticeCluster {name}: {e}");
            return EXIT_USAGE;
        }
    };
    let facts = LifecycleFacts::of(cluster, provisioned.objects.len(), jiff::Timestamp::now());
    let decision = lifecycle::decide(
        &loaded.snapshot,
        &loaded.projection,
        Lifecycle::Provision,
        cluster,
        &facts,
    );
    if decision.allowed {
        eprintln!("{}", decision.summary());
        eprintln!(
            "the cluster will run: {}",
            provisioned
                .components
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        emit_objects(
            &provisioned.objects,
            format,
            &loaded.packs,
            loaded.snapshot.digest(),
        );
        return EXIT_OK;
    }
    match format {
        Format::Json => {
            let doc = json!({
                "cluster": name,
                "allowed": false,
                "snapshot": decision.digest,
                "packs": loaded.packs.json(),
                "denied": {
                    "action": decision.action.as_str(),
                    "principal": decision.principal,
                    "resource": decision.resource,
                    "policies": decision.policies,
                    "advice": decision.advice,
                    "errors": decision.errors,
                },
            });
            emit_json(&doc);
        }
        Format::Human => {
            let mut out = format!("DENIED {}: nothing is provisioned\n", decision.summary());
            for a in &decision.advice {
                out.push_str(&format!("  advice: {a}\n"));
            }
            for e in &decision.errors {
                out.push_str(&format!("  error: {e}\n"));
            }
            out.push_str(&loaded.packs.line());
            out.push_str(&format!("snapshot {}\n", decision.digest));
            emit(&out);
        }
    }
    EXIT_FINDINGS
}

/// `render --namespace NS`: the baseline the platform applies to `ns` (the CLI decides on
/// the decisions alone; a running cluster also needs the objects to be there), or, when
/// `OptOutDefaultDeny` allowed it to run without one, that decision and the policies that
/// took it.
pub fn namespace(ns: &str, world: &[PathBuf], policies: Option<&Path>, format: Format) -> u8 {
    let Some(loaded) = crate::loading::load(world, policies) else {
        return EXIT_USAGE;
    };
    let namespaces = lattice_engine::project::namespaces(&loaded.world);
    let Some(requested) = namespaces.get(ns) else {
        eprintln!(
            "error: the world neither declares nor uses namespace `{ns}` (known: {})",
            namespaces.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return EXIT_USAGE;
    };
    let snapshot = &loaded.snapshot;
    let objects = if snapshot.opted_out(ns) {
        let (cluster, _) = lattice_engine::project::root_cluster(&loaded.world);
        let q = lattice_engine::opt_out_query(&cluster, ns, *requested);
        let by: Vec<String> = snapshot
            .decide(&q)
            .map(|d| d.determining.iter().map(|p| p.id.clone()).collect())
            .unwrap_or_default();
        eprintln!(
            "namespace {ns} runs without the default-deny baseline: OptOutDefaultDeny allowed by {}",
            if by.is_empty() {
                "?".to_owned()
            } else {
                by.join(", ")
            }
        );
        Vec::new()
    } else {
        lattice_compiler::baseline::baseline(ns)
    };
    emit_objects(&objects, format, &loaded.packs, snapshot.digest());
    EXIT_OK
}

/// Objects as YAML documents for `kubectl apply`, headed by a comment that names the packs
/// and snapshot that decided them (a file kept in Git says what produced it); or as one JSON
/// array, with the packs on stderr.
fn emit_objects(
    objects: &[serde_json::Value],
    format: Format,
    packs: &crate::loading::PacksInForce,
    snapshot: &str,
) {
    match format {
        Format::Json => {
            eprint!("{}", packs.line());
            emit_json(objects);
        }
        // Nothing to apply is nothing on stdout; who decided goes with the reason on stderr.
        Format::Human if objects.is_empty() => eprint!("{}", packs.line()),
        Format::Human => emit(&format!(
            "# rendered by lattice-policy under {}# snapshot {snapshot}\n{}",
            packs.line(),
            objects.iter().map(to_yaml).collect::<String>()
        )),
    }
}
