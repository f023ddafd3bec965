//! Network objects for the mesh plan. For every allowed edge: in the callee's namespace a
//! CiliumNetworkPolicy (L4 ingress: the callee's ports, from the caller's pods) and an
//! Istio AuthorizationPolicy (L7: the caller's SPIFFE identity, the callee's ports); in the
//! caller's namespace a CiliumNetworkPolicy opening exactly the caller's egress to the
//! callee's pods on those ports. For mesh members that accept plain text on some ports, a
//! PeerAuthentication that says which. Nothing is derived for a denied or one-sided edge:
//! without it, the namespaces' default-deny baselines hold in both directions.

use std::collections::BTreeMap;

use lattice_engine::World;
use lattice_gates::{EdgeDecision, MeshPlan};
use lattice_schemas::crd::mesh_member::PeerAuth;
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};

use crate::objects::{DIRECTION_LABEL, MANAGER, bounded_name, endpoint_labels, object, tcp_ports};

/// How a workload's pods are selected and which identity they run as.
pub struct Identity {
    selector: BTreeMap<String, String>,
    service_account: String,
}

/// The identity of the workload `namespace/name` of `world`, if there is one.
pub fn identity(world: &World, id: &str) -> Option<Identity> {
    let (_, name) = id.split_once('/')?;
    Some(match world.workload(id)? {
        Object::MeshMember(mm) => Identity {
            selector: mm.spec.target.selector.clone(),
            service_account: mm
                .spec
                .target
                .service_account
                .clone()
                .unwrap_or_else(|| name.to_owned()),
        },
        _ => Identity {
            selector: [("app.kubernetes.io/name".to_owned(), name.to_owned())].into(),
            service_account: name.to_owned(),
        },
    })
}

fn edge_name(caller: &str, callee: &str) -> String {
    let callee_name = callee.split_once('/').map(|(_, n)| n).unwrap_or(callee);
    let caller = caller.replace('/', "-");
    bounded_name(format!("{callee_name}-from-{caller}"))
}

/// The caller-side (egress) object's name: `<caller>-to-<callee ns>-<callee>`.
fn egress_name(caller: &str, callee: &str) -> String {
    let caller_name = caller.split_once('/').map(|(_, n)| n).unwrap_or(caller);
    let callee = callee.replace('/', "-");
    bounded_name(format!("{caller_name}-to-{callee}"))
}

/// The objects every allowed edge of `plan` needs, and the PeerAuthentications of mesh
/// members with plain-text ports, in a stable order.
pub fn compile_mesh(plan: &MeshPlan, world: &World) -> Vec<Value> {
    let mut out: Vec<Value> = plan
        .allowed()
        .flat_map(|edge| edge_objects(edge, world))
        .collect();
    for (key, object) in world.objects() {
        if let Object::MeshMember(mm) = object {
            out.extend(peer_authentication(&key.name, key.namespace.as_deref(), mm));
        }
    }
    out
}

/// The network objects of one allowed edge, both sides (none when either end is not in
/// `world`).
pub fn edge_objects(edge: &EdgeDecision, world: &World) -> Vec<Value> {
    let (Some(caller), Some(callee)) =
        (identity(world, &edge.caller), identity(world, &edge.callee))
    else {
        return Vec::new();
    };
    let mut out = ingress_objects(edge, &callee, world);
    out.extend(egress_object(edge, &caller, world));
    out
}

/// The callee's side of an allowed edge: L4 ingress from the caller's pods and L7 from the
/// caller's identity, in the callee's namespace.
/// `callee` is the callee's identity, as [`identity`] finds it: its edges share it.
pub fn ingress_objects(edge: &EdgeDecision, callee: &Identity, world: &World) -> Vec<Value> {
    EdgeSide::ingress(edge, callee, world).map_or_else(Vec::new, EdgeSide::build)
}

/// The caller's side of an allowed edge: a CiliumNetworkPolicy in the caller's namespace
/// opening its pods' egress to exactly the callee's pods on the edge's ports.
/// `caller` is the caller's identity, as [`identity`] finds it: its edges share it.
pub fn egress_object(edge: &EdgeDecision, caller: &Identity, world: &World) -> Option<Value> {
    EdgeSide::egress(edge, caller, world).and_then(|side| side.build().pop())
}

const CILIUM_POLICY: &str = "CiliumNetworkPolicy";
const ISTIO_POLICY: &str = "AuthorizationPolicy";

/// One workload's side of an allowed edge, found but not yet built. Its kinds are known
/// before it is built, so a plan that only counts objects by kind builds none of them: at
/// 50,000 edges, building them was a fifth of a plan's CPU.
pub enum EdgeSide<'a> {
    /// The callee's: the CiliumNetworkPolicy and AuthorizationPolicy admitting the caller.
    Ingress {
        edge: &'a EdgeDecision,
        callee: &'a Identity,
        caller: Identity,
    },
    /// The caller's: the CiliumNetworkPolicy opening its egress to the callee.
    Egress {
        edge: &'a EdgeDecision,
        caller: &'a Identity,
        callee: Identity,
    },
}

impl<'a> EdgeSide<'a> {
    /// The callee's side of `edge`, when it opens anything: the callee serves a port (a
    /// rule without ports would open every port) and the caller is in `world`.
    pub fn ingress(
        edge: &'a EdgeDecision,
        callee: &'a Identity,
        world: &World,
    ) -> Option<EdgeSide<'a>> {
        if edge.ports.is_empty() {
            return None;
        }
        let caller = identity(world, &edge.caller)?;
        Some(EdgeSide::Ingress {
            edge,
            callee,
            caller,
        })
    }

    /// The caller's side of `edge`, when it opens anything (as for [`EdgeSide::ingress`]).
    pub fn egress(
        edge: &'a EdgeDecision,
        caller: &'a Identity,
        world: &World,
    ) -> Option<EdgeSide<'a>> {
        if edge.ports.is_empty() {
            return None;
        }
        let callee = identity(world, &edge.callee)?;
        Some(EdgeSide::Egress {
            edge,
            caller,
            callee,
        })
    }

    /// The kinds of the objects [`EdgeSide::build`] returns, in its order.
    pub fn kinds(&self) -> &'static [&'static str] {
        match self {
            EdgeSide::Ingress { .. } => &[CILIUM_POLICY, ISTIO_POLICY],
            EdgeSide::Egress { .. } => &[CILIUM_POLICY],
        }
    }

    /// The objects of this side, in apply order.
    pub fn build(self) -> Vec<Value> {
        match self {
            EdgeSide::Ingress {
                edge,
                callee,
                caller,
            } => ingress(edge, callee, &caller),
            EdgeSide::Egress {
                edge,
                caller,
                callee,
            } => vec![egress(edge, caller, &callee)],
        }
    }
}

fn ingress(edge: &EdgeDecision, callee: &Identity, caller: &Identity) -> Vec<Value> {
    let (caller_ns, _) = edge.caller.split_once('/').unwrap_or_default();
    let (callee_ns, _) = edge.callee.split_once('/').unwrap_or_default();
    let meta = edge_meta(edge, edge_name(&edge.caller, &edge.callee), callee_ns, None);
    let rule = endpoint_rule("fromEndpoints", caller_ns, &caller.selector, &edge.ports);
    let principal = format!("cluster.local/ns/{caller_ns}/sa/{}", caller.service_account);
    let istio_rule = object([
        (
            "from",
            vec![object([(
                "source",
                object([("principals", vec![Value::from(principal)].into())]),
            )])]
            .into(),
        ),
        (
            "to",
            vec![object([(
                "operation",
                object([(
                    "ports",
                    edge.ports
                        .iter()
                        .map(|p| Value::from(p.to_string()))
                        .collect(),
                )]),
            )])]
            .into(),
        ),
    ]);
    let selector = labels_value(callee.selector.clone());
    vec![
        object([
            ("apiVersion", "cilium.io/v2".into()),
            ("kind", CILIUM_POLICY.into()),
            ("metadata", meta.clone()),
            (
                "spec",
                object([
                    (
                        "endpointSelector",
                        object([("matchLabels", selector.clone())]),
                    ),
                    ("ingress", vec![rule].into()),
                ]),
            ),
        ]),
        object([
            ("apiVersion", "security.istio.io/v1".into()),
            ("kind", ISTIO_POLICY.into()),
            ("metadata", meta),
            (
                "spec",
                object([
                    ("selector", object([("matchLabels", selector)])),
                    ("action", "ALLOW".into()),
                    ("rules", vec![istio_rule].into()),
                ]),
            ),
        ]),
    ]
}

fn egress(edge: &EdgeDecision, caller: &Identity, callee: &Identity) -> Value {
    let (caller_ns, _) = edge.caller.split_once('/').unwrap_or_default();
    let (callee_ns, _) = edge.callee.split_once('/').unwrap_or_default();
    let meta = edge_meta(
        edge,
        egress_name(&edge.caller, &edge.callee),
        caller_ns,
        Some("egress"),
    );
    let rule = endpoint_rule("toEndpoints", callee_ns, &callee.selector, &edge.ports);
    object([
        ("apiVersion", "cilium.io/v2".into()),
        ("kind", CILIUM_POLICY.into()),
        ("metadata", meta),
        (
            "spec",
            object([
                (
                    "endpointSelector",
                    object([("matchLabels", labels_value(caller.selector.clone()))]),
                ),
                ("egress", vec![rule].into()),
            ]),
        ),
    ])
}

/// The metadata of one side's object for `edge`: its name and namespace, and labels naming
/// the edge (and, on the caller's side, the direction it opens).
fn edge_meta(edge: &EdgeDecision, name: String, ns: &str, direction: Option<&str>) -> Value {
    let mut labels = serde_json::Map::with_capacity(4);
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    let id = |end: &str| Value::String(end.replace('/', "."));
    labels.insert("lattice.dev/caller".into(), id(&edge.caller));
    labels.insert("lattice.dev/callee".into(), id(&edge.callee));
    if let Some(direction) = direction {
        labels.insert(DIRECTION_LABEL.into(), direction.into());
    }
    object([
        ("name", name.into()),
        ("namespace", ns.into()),
        ("labels", Value::Object(labels)),
    ])
}

/// A Cilium rule between this side's pods and the pods `selector` picks in `ns`
/// (`peers` is `fromEndpoints` or `toEndpoints`), on `ports`.
fn endpoint_rule(
    peers: &str,
    ns: &str,
    selector: &BTreeMap<String, String>,
    ports: &[i64],
) -> Value {
    let labels = endpoint_labels(ns, selector);
    object([
        (peers, vec![object([("matchLabels", labels.into())])].into()),
        ("toPorts", tcp_ports(ports)),
    ])
}

/// Labels as a JSON object, in their (sorted) order.
fn labels_value(labels: BTreeMap<String, String>) -> Value {
    Value::Object(
        labels
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// For a mesh member that accepts plain text on some ports: STRICT mTLS except on those.
pub fn peer_authentication(
    name: &str,
    ns: Option<&str>,
    mm: &lattice_schemas::crd::LatticeMeshMember,
) -> Option<Value> {
    let permissive: serde_json::Map<String, Value> = mm
        .spec
        .ports
        .values()
        .filter(|p| p.peer_auth == Some(PeerAuth::Permissive))
        .map(|p| (p.port.to_string(), json!({"mode": "PERMISSIVE"})))
        .collect();
    if permissive.is_empty() {
        return None;
    }
    Some(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": MANAGER}},
        "spec": {"selector": {"matchLabels": mm.spec.target.selector}, "mtls": {"mode": "STRICT"}, "portLevelMtls": permissive}
    }))
}

/// A workload's traffic to itself (job tasks at rendezvous, a model's prefill handing off to
/// its decode): its own identity on its own ports. Not a `Connect` question: the caller and
/// callee are one workload, under one service account.
pub fn self_edge(
    name: &str,
    ns: &str,
    bodies: &[&lattice_schemas::crd::workload::WorkloadBody],
) -> Vec<Value> {
    let ports: std::collections::BTreeSet<i32> = bodies
        .iter()
        .flat_map(|b| b.service.iter().flat_map(|s| s.ports.values()))
        .map(|p| p.target_port.unwrap_or(p.port))
        .collect();
    if ports.is_empty() {
        return Vec::new();
    }
    let id = format!("{ns}.{name}");
    let meta = json!({"name": format!("{name}-self"), "namespace": ns, "labels": {"app.kubernetes.io/managed-by": MANAGER, "lattice.dev/caller": id, "lattice.dev/callee": id}});
    let selector = json!({"app.kubernetes.io/name": name});
    let cilium_ports = tcp_ports(&ports);
    vec![
        json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta,
            "spec": {"endpointSelector": {"matchLabels": selector}, "ingress": [{
                "fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": ns, "app.kubernetes.io/name": name}}],
                "toPorts": cilium_ports.clone()
            }], "egress": [{
                "toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": ns, "app.kubernetes.io/name": name}}],
                "toPorts": cilium_ports
            }]}
        }),
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta,
            "spec": {"selector": {"matchLabels": selector}, "action": "ALLOW", "rules": [{
                "from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/{name}")]}}],
                "to": [{"operation": {"ports": ports.iter().map(|p| p.to_string()).collect::<Vec<_>>()}}]
            }]}
        }),
    ]
}
