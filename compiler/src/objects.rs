//! What every derivation module builds on: the field manager and labels, naming, the facts
//! placeholders resolve against, the errors, the parts of a workload, and the small objects
//! every kind derives (service account, Service, disruption budget). Depends on nothing
//! else in the crate but placeholders, so the kinds' modules all point down here.

use std::collections::BTreeMap;

use lattice_engine::project::{object_image_references, served_ports};
use lattice_engine::{Snapshot, World};
use lattice_schemas::crd::service::DeniedGate;
use lattice_schemas::crd::workload::WorkloadBody;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::placeholders::{PlaceholderError, Scope};

/// The field manager and `managed-by` label of everything Lattice derives.
pub const MANAGER: &str = "lattice";
/// The label that tells a derived network object's direction (`egress`) apart.
pub const DIRECTION_LABEL: &str = "lattice.dev/direction";
/// The annotation carrying the hash of the pod's inputs, so a change rolls the pods.
pub const CONFIG_HASH: &str = "lattice.dev/config-hash";

/// World facts a workload's placeholders resolve against.
#[derive(Clone, Debug, Default)]
pub struct CompileContext {
    /// `namespace/name` → served ports, for `${resources.peer.port}` and `.url`.
    pub peer_ports: BTreeMap<String, Vec<i64>>,
    pub cluster: String,
    pub environment: String,
    /// ImageProviders by name, for pull secrets that name one.
    pub image_providers: BTreeMap<String, lattice_schemas::crd::image_provider::ImageProviderSpec>,
    /// Normalized image reference → the digest verification resolved it to, which derived
    /// pod templates pin (`image@sha256:…`).
    pub digests: BTreeMap<String, String>,
    /// Each namespace of the world with its labels, for backups that select namespaces.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// DNSProviders by name, for ACME issuers that answer DNS-01 challenges through one.
    pub dns_providers: BTreeMap<String, lattice_schemas::crd::issuer::DNSProviderSpec>,
}

impl CompileContext {
    /// The facts of `world`, with the image digests `snapshot` decided on.
    pub fn of(world: &World, snapshot: &Snapshot) -> CompileContext {
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
            ctx.pin_images(snapshot, object);
            if let lattice_schemas::manifest::Object::Namespace(ns) = object {
                ctx.namespace_labels.insert(
                    key.name.clone(),
                    ns.metadata.labels.clone().unwrap_or_default(),
                );
            }
            if let lattice_schemas::manifest::Object::DnsProvider(d) = object {
                ctx.dns_providers.insert(key.name.clone(), d.spec.clone());
            }
            if let lattice_schemas::manifest::Object::ImageProvider(ip) = object {
                ctx.image_providers
                    .insert(key.name.clone(), ip.spec.clone());
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

    /// Takes in the digests `snapshot` resolved for `object`'s images (after that object
    /// changed, without recomputing the whole context).
    pub fn pin_images(&mut self, snapshot: &Snapshot, object: &lattice_schemas::manifest::Object) {
        for image in object_image_references(object) {
            match snapshot.resolved_digest(&image) {
                Some(digest) => self.digests.insert(image, digest),
                None => self.digests.remove(&image),
            };
        }
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
        "{0} is not a workload; only LatticeService, LatticeJob, LatticeModel, LatticeMeshMember and LatticePackage derive objects"
    )]
    NotAWorkload(String),
    /// A restore derives only under an allowed `Restore` decision for the user who wrote it,
    /// which the operator asks with the admission stamp's user.
    #[error(
        "{0} derives only once Cedar's Restore allows it for the user who wrote it: the operator asks, with the user its admission stamp names"
    )]
    RestoreUndecided(String),
}

/// A JSON object of `fields`, in their order, each moved in. Objects that nest another
/// built value (a pod template, labels, a selector) are assembled with it rather than with
/// `json!`, which serializes every interpolated `Value` again: a deep copy through serde
/// that was a tenth of deriving a 10,000-service world, and most of the mesh's share.
pub(crate) fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut map = serde_json::Map::with_capacity(N);
    for (k, v) in fields {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

pub(crate) fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": MANAGER})
}

pub(crate) fn meta(name: &str, ns: &str, owner: &str) -> Value {
    object([
        ("name", name.into()),
        ("namespace", ns.into()),
        ("labels", labels(owner)),
    ])
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
        image_providers: &ctx.image_providers,
        digests: &ctx.digests,
    }
}

/// The workload's identity: one service account for all its parts, its pods' SPIFFE id.
pub(crate) fn service_account(name: &str, ns: &str) -> Value {
    object([
        ("apiVersion", "v1".into()),
        ("kind", "ServiceAccount".into()),
        ("metadata", meta(name, ns, name)),
        ("automountServiceAccountToken", false.into()),
    ])
}

/// Cilium's `toPorts` entry for TCP `ports`.
pub(crate) fn tcp_ports<P: std::fmt::Display>(ports: impl IntoIterator<Item = P>) -> Value {
    let ports: Vec<Value> = ports
        .into_iter()
        .map(|p| {
            let mut port = serde_json::Map::with_capacity(2);
            port.insert("port".into(), Value::String(p.to_string()));
            port.insert("protocol".into(), Value::from("TCP"));
            Value::Object(port)
        })
        .collect();
    let mut rule = serde_json::Map::with_capacity(1);
    rule.insert("ports".into(), Value::Array(ports));
    Value::Array(vec![Value::Object(rule)])
}

/// A name of at most 63 characters: long ones keep a prefix and a hash of the whole.
pub(crate) fn bounded_name(full: String) -> String {
    if full.len() <= 63 {
        return full;
    }
    use sha2::Digest;
    let hash = format!("{:x}", sha2::Sha256::digest(full.as_bytes()));
    format!("{}-{}", full[..54].trim_end_matches('-'), &hash[..8])
}

/// Cilium's labels for the pods of a workload in namespace `ns`: its selector, scoped to
/// the namespace.
pub(crate) fn endpoint_labels(
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::with_capacity(selector.len() + 1);
    labels.insert(
        "k8s:io.kubernetes.pod.namespace".into(),
        Value::String(ns.to_owned()),
    );
    for (k, v) in selector {
        labels.insert(k.clone(), Value::String(v.clone()));
    }
    labels
}

/// A PodDisruptionBudget keeping all but one pod of `selector` up during voluntary disruption.
pub(crate) fn disruption_budget(name: &str, ns: &str, owner: &str, selector: &Value) -> Value {
    object([
        ("apiVersion", "policy/v1".into()),
        ("kind", "PodDisruptionBudget".into()),
        ("metadata", meta(name, ns, owner)),
        (
            "spec",
            object([
                ("maxUnavailable", 1.into()),
                ("selector", object([("matchLabels", selector.clone())])),
            ]),
        ),
    ])
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
    Some(object([
        ("apiVersion", "v1".into()),
        ("kind", "Service".into()),
        ("metadata", meta(name, ns, owner)),
        (
            "spec",
            object([("selector", selector.clone()), ("ports", ports.into())]),
        ),
    ]))
}

/// The label that tells a workload's parts (job tasks, model roles) apart.
pub const PART_LABEL: &str = "lattice.dev/part";

/// One part of a workload: what its objects are named after and which labels its pods carry.
/// All parts of a workload share its identity (service account and `app.kubernetes.io/name`),
/// which is what the mesh authorizes.
pub struct Part<'a> {
    /// The workload's name: service account, `app.kubernetes.io/name`, owner label.
    pub workload: &'a str,
    pub ns: &'a str,
    /// The task or role; empty for a service.
    pub name: &'a str,
    /// The prefix of every object this part derives.
    pub base: String,
}

impl<'a> Part<'a> {
    pub fn new(workload: &'a str, ns: &'a str, name: &'a str) -> Part<'a> {
        Part {
            workload,
            ns,
            name,
            base: object_name(&[workload, name]),
        }
    }

    /// The labels that select exactly this part's pods.
    pub fn selector(&self) -> Value {
        let mut s = json!({"app.kubernetes.io/name": self.workload});
        if !self.name.is_empty() {
            s[PART_LABEL] = json!(self.name);
        }
        s
    }

    /// The labels of this part's pods.
    pub fn pod_labels(&self) -> Value {
        let mut l = self.selector();
        l["app.kubernetes.io/managed-by"] = json!(MANAGER);
        l
    }
}
