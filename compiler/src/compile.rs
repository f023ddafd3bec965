//! Compiling a workload whose gates all allowed into the Kubernetes objects it needs: the
//! entry point, shared naming, and the facts placeholders resolve against.
//!
//! Deterministic: the same workload, report and context give the same objects, byte for byte
//! (maps are ordered, and the config hash covers everything the pod template is made from).

use std::collections::BTreeMap;

use lattice_engine::World;
use lattice_engine::project::served_ports;
use lattice_gates::GateReport;
use lattice_schemas::crd::service::DeniedGate;
use lattice_schemas::crd::workload::WorkloadBody;
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::placeholders::{PlaceholderError, Scope};

/// The field manager and `managed-by` label of everything Lattice derives.
pub const MANAGER: &str = "lattice";
/// The annotation carrying the hash of the pod's inputs, so a change rolls the pods.
pub const CONFIG_HASH: &str = "lattice.dev/config-hash";

/// World facts a workload's placeholders resolve against.
#[derive(Clone, Debug, Default)]
pub struct CompileContext {
    /// `namespace/name` → served ports, for `${resources.peer.port}` and `.url`.
    pub peer_ports: BTreeMap<String, Vec<i64>>,
    pub cluster: String,
    pub environment: String,
}

impl CompileContext {
    /// The facts of `world`.
    pub fn of(world: &World) -> CompileContext {
        let mut ctx = CompileContext {
            cluster: lattice_engine::project::LOCAL_CLUSTER.to_owned(),
            ..CompileContext::default()
        };
        for (key, object) in world.objects() {
            if let Some(ns) = &key.namespace {
                let ports = served_ports(object);
                if !ports.is_empty() {
                    ctx.peer_ports
                        .insert(format!("{ns}/{}", key.name), ports.into_iter().collect());
                }
            }
            if let lattice_schemas::manifest::Object::Cluster(c) = object
                && c.spec.parent.is_none()
            {
                ctx.cluster = key.name.clone();
                ctx.environment = c.spec.environment.clone().unwrap_or_default();
            }
        }
        ctx
    }
}

/// Why nothing was derived.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A gate denied: no objects at all (no partial derivation).
    #[error("{workload}: {} gate(s) denied", .gates.len())]
    Denied {
        workload: String,
        gates: Vec<DeniedGate>,
    },
    #[error("{workload}: {source}")]
    Placeholder {
        workload: String,
        #[source]
        source: PlaceholderError,
    },
    /// The workload cannot be derived as written (validation lets few such cases through).
    #[error("{workload}: {reason}")]
    Invalid { workload: String, reason: String },
    /// The object is not a workload.
    #[error(
        "{0} is not a workload; only LatticeService, LatticeJob, LatticeModel and LatticeMeshMember derive objects"
    )]
    NotAWorkload(String),
}

pub(crate) fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": MANAGER})
}

pub(crate) fn meta(name: &str, ns: &str, owner: &str) -> Value {
    json!({"name": name, "namespace": ns, "labels": labels(owner)})
}

/// A Kubernetes-safe name from parts (lowercase, `-` separated, ≤ 63).
pub(crate) fn object_name(parts: &[&str]) -> String {
    let joined: String = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-");
    let trimmed = joined.trim_matches('-');
    if trimmed.len() <= 63 {
        return trimmed.to_owned();
    }
    let hash = format!("{:x}", Sha256::digest(joined.as_bytes()));
    format!("{}-{}", trimmed[..54].trim_end_matches('-'), &hash[..8])
}

/// The objects a workload derives, in apply order; nothing at all unless every gate of
/// `report` allowed. A mesh member derives no objects of its own (its network objects come
/// from the mesh plan).
pub fn compile(
    object: &Object,
    report: &GateReport,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let key = lattice_engine::ObjectKey::of(object);
    let workload = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name
    );
    if !report.allowed() {
        return Err(CompileError::Denied {
            workload,
            gates: report.denied_gates(),
        });
    }
    match object {
        Object::Service(s) => crate::service::compile_service(s, ctx),
        Object::Job(j) => crate::batch::compile_job(j, ctx),
        Object::Model(m) => crate::model::compile_model(m, ctx),
        Object::MeshMember(_) => Ok(Vec::new()),
        _ => Err(CompileError::NotAWorkload(format!(
            "{} {workload}",
            key.kind
        ))),
    }
}

type Labels = BTreeMap<String, String>;

/// The placeholder scope of one workload body; `metadata` is (annotations, labels).
pub(crate) fn scope<'a>(
    metadata: (Option<&'a Labels>, Option<&'a Labels>),
    name: &'a str,
    ns: &'a str,
    body: &'a WorkloadBody,
    ctx: &'a CompileContext,
    empty: &'a BTreeMap<String, String>,
) -> Scope<'a> {
    Scope {
        name,
        namespace: ns,
        annotations: metadata.0.unwrap_or(empty),
        labels: metadata.1.unwrap_or(empty),
        resources: &body.resources,
        peer_ports: &ctx.peer_ports,
        cluster: &ctx.cluster,
        environment: &ctx.environment,
    }
}

/// The workload's identity: one service account for all its parts, its pods' SPIFFE id.
pub(crate) fn service_account(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": meta(name, ns, name),
        "automountServiceAccountToken": false
    })
}

/// A PodDisruptionBudget keeping all but one pod of `selector` up during voluntary disruption.
pub(crate) fn disruption_budget(name: &str, ns: &str, owner: &str, selector: &Value) -> Value {
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": meta(name, ns, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    })
}

/// A ClusterIP Service for the ports of `body`, selecting `selector`.
pub(crate) fn service_object(
    name: &str,
    ns: &str,
    owner: &str,
    body: &WorkloadBody,
    selector: &Value,
) -> Option<Value> {
    let service = body.service.as_ref().filter(|s| !s.ports.is_empty())?;
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|(pname, p)| {
            json!({"name": pname, "port": p.port, "targetPort": p.target_port.unwrap_or(p.port),
                   "protocol": format!("{:?}", p.protocol.unwrap_or_default()).to_uppercase()})
        })
        .collect();
    Some(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(name, ns, owner),
        "spec": {"selector": selector, "ports": ports}
    }))
}
