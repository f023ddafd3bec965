//! What one side of an allowed cross-cluster edge derives, from its route
//! ([`lattice_gates::peering::Route`]): exactly the peer's identity, through the clusters'
//! east-west gateways, and nothing else.
//!
//! - A caller gets an Istio ServiceEntry for the peer's name
//!   ([`lattice_schemas::crd::workload::remote_host`]), whose endpoint is the peer cluster's
//!   east-west gateway and whose `subjectAltNames` require the peer's SPIFFE identity of
//!   the server it reaches; and a CiliumNetworkPolicy opening its pods' egress to that
//!   gateway's address and port only.
//! - A callee gets an AuthorizationPolicy admitting exactly the peer's SPIFFE identity on
//!   the edge's ports, and a CiliumNetworkPolicy admitting the east-west gateway's pods
//!   (where traffic from other clusters arrives) to its pods on those ports.
//!
//! Cross-cluster traffic is mutual TLS end to end (the gateway passes it through), so the
//! identity the callee checks is the caller's own, under the hierarchy's shared trust root.
//! Every object carries [`PEERING_MANAGER`] as its manager, so the agent that writes them can
//! find and withdraw them, and the operator's own pruning never takes them.

use std::collections::BTreeMap;

use lattice_gates::peering::{Role, Route};
use lattice_schemas::crd::workload::remote_host;
use serde_json::{Value, json};

use crate::objects::{bounded_name, endpoint_labels, tcp_ports};

/// The `app.kubernetes.io/managed-by` value of route objects.
pub const PEERING_MANAGER: &str = "lattice-peering";

/// Where a cluster's east-west gateway pods run, as Cilium selects them.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Default for Gateway {
    /// Istio's multi-network east-west gateway as its installer labels it.
    fn default() -> Gateway {
        Gateway {
            namespace: "istio-system".into(),
            labels: [("istio".to_owned(), "eastwestgateway".to_owned())].into(),
        }
    }
}

fn selector(name: &str) -> BTreeMap<String, String> {
    [("app.kubernetes.io/name".to_owned(), name.to_owned())].into()
}

fn labels(route: &Route) -> Value {
    json!({
        "app.kubernetes.io/managed-by": PEERING_MANAGER,
        "lattice.dev/peer-cluster": route.peer.cluster,
        "lattice.dev/role": match route.role { Role::Caller => "caller", Role::Callee => "callee" },
    })
}

/// The objects one route derives, in its side's namespace.
pub fn route_objects(route: &Route, gateway: &Gateway) -> Vec<Value> {
    if route.ports.is_empty() {
        return Vec::new();
    }
    match route.role {
        Role::Caller => caller_objects(route),
        Role::Callee => callee_objects(route, gateway),
    }
}

/// The objects every route derives, each once (two callers in one namespace share the
/// ServiceEntry of a peer they both call).
pub fn routes_objects(routes: &[Route], gateway: &Gateway) -> Vec<Value> {
    let mut out: BTreeMap<(String, String, String), Value> = BTreeMap::new();
    for r in routes {
        for o in route_objects(r, gateway) {
            let key = (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            out.entry(key).or_insert(o);
        }
    }
    out.into_values().collect()
}

fn caller_objects(route: &Route) -> Vec<Value> {
    let Some((host, port)) = route.peer_address.rsplit_once(':') else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let Ok(gateway_port) = port.parse::<u16>() else {
        return Vec::new();
    };
    let peer = &route.peer;
    let ns = &route.side.namespace;
    let port_name = |p: &u32| format!("tcp-{p}");
    let entry = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {
            "name": bounded_name(format!("{}-{}-{}", peer.name, peer.namespace, peer.cluster)),
            "namespace": ns,
            "labels": labels(route),
        },
        "spec": {
            "hosts": [remote_host(&peer.name, &peer.namespace, &peer.cluster)],
            "location": "MESH_INTERNAL",
            "resolution": if is_ip { "STATIC" } else { "DNS" },
            "ports": route.ports.iter().map(|p| json!({"number": p, "name": port_name(p), "protocol": "TCP"})).collect::<Vec<_>>(),
            "endpoints": [{
                "address": host,
                "ports": route.ports.iter().map(|p| (port_name(p), json!(gateway_port))).collect::<serde_json::Map<_, _>>(),
            }],
            // The caller's proxy accepts only the peer's own certificate.
            "subjectAltNames": [route.peer_spiffe_id],
            "exportTo": ["."],
        }
    });
    let to = if is_ip {
        let prefix = if host.contains(':') { 128 } else { 32 };
        json!({"toCIDR": [format!("{host}/{prefix}")]})
    } else {
        json!({"toFQDNs": [{"matchName": host}]})
    };
    let mut rule = to;
    rule["toPorts"] = tcp_ports([gateway_port]);
    let egress = json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": bounded_name(format!("{}-to-{}-{}-{}", route.side.name, peer.cluster, peer.namespace, peer.name)),
            "namespace": ns,
            "labels": labels(route),
        },
        "spec": {"endpointSelector": {"matchLabels": selector(&route.side.name)}, "egress": [rule]}
    });
    vec![entry, egress]
}

fn callee_objects(route: &Route, gateway: &Gateway) -> Vec<Value> {
    let peer = &route.peer;
    let ns = &route.side.namespace;
    let name = bounded_name(format!(
        "{}-from-{}-{}-{}",
        route.side.name, peer.cluster, peer.namespace, peer.name
    ));
    let meta = json!({"name": name, "namespace": ns, "labels": labels(route)});
    let principal = route
        .peer_spiffe_id
        .strip_prefix("spiffe://")
        .unwrap_or(&route.peer_spiffe_id);
    let ports: Vec<String> = route.ports.iter().map(u32::to_string).collect();
    vec![
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta,
            "spec": {
                "selector": {"matchLabels": selector(&route.side.name)},
                "action": "ALLOW",
                "rules": [{"from": [{"source": {"principals": [principal]}}], "to": [{"operation": {"ports": ports}}]}]
            }
        }),
        json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta,
            "spec": {
                "endpointSelector": {"matchLabels": selector(&route.side.name)},
                "ingress": [{
                    "fromEndpoints": [{"matchLabels": endpoint_labels(&gateway.namespace, &gateway.labels)}],
                    "toPorts": tcp_ports(&route.ports),
                }]
            }
        }),
    ]
}
