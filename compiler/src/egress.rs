//! Egress to what lies outside the mesh: for a workload whose `AccessExternalEndpoint`
//! gates all allowed (derivation happens only then), one CiliumNetworkPolicy opening
//! exactly each endpoint's host and port from its pods, and nothing else.
//!
//! A host is matched by name (`toFQDNs`; the namespace baseline's DNS rule lets Cilium see
//! the lookups), an IP address by CIDR (`/32` or `/128`), and a mesh member's Cilium entity
//! (`entity:world`, `entity:kube-apiserver`) as that entity.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lattice_engine::project::{egress_host, external_endpoint, protocol_name, workload_bodies};
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};

use crate::objects::{DIRECTION_LABEL, MANAGER, object_name};

/// The endpoints a workload reaches outside the mesh: (host, protocol) → ports.
pub fn external_endpoints(object: &Object) -> BTreeMap<(String, String), Vec<i64>> {
    let mut out: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for (_, body, _) in workload_bodies(object) {
        for r in body.resources.values() {
            if r.type_ == "external-service"
                && let Some((host, port, protocol)) = external_endpoint(r)
            {
                out.entry((host, protocol.to_ascii_uppercase()))
                    .or_default()
                    .push(port);
            }
        }
    }
    if let Object::MeshMember(mm) = object {
        for e in &mm.spec.egress {
            let host = egress_host(e);
            if host.is_empty() {
                continue;
            }
            out.entry((host, protocol_name(e.protocol)))
                .or_default()
                .extend(e.ports.iter().map(|p| i64::from(*p)));
        }
    }
    for ports in out.values_mut() {
        ports.sort_unstable();
        ports.dedup();
    }
    out
}

/// The egress object of `object` (none when it reaches nothing outside the mesh). Its pods
/// are selected as the mesh selects them: a mesh member by its target selector, any other
/// workload by `app.kubernetes.io/name`.
pub fn external_egress(object: &Object) -> Option<Value> {
    let endpoints = external_endpoints(object);
    if endpoints.is_empty() {
        return None;
    }
    let name = object.name();
    let ns = object.namespace().unwrap_or("default");
    let selector: Value = match object {
        Object::MeshMember(mm) => json!(mm.spec.target.selector),
        _ => json!({"app.kubernetes.io/name": name}),
    };
    let rules: Vec<Value> = endpoints
        .iter()
        .map(|((host, protocol), ports)| {
            let ports: Vec<Value> = ports
                .iter()
                .map(|p| json!({"port": p.to_string(), "protocol": protocol}))
                .collect();
            let mut rule = destination(host);
            if !ports.is_empty() {
                rule["toPorts"] = json!([{"ports": ports}]);
            }
            rule
        })
        .collect();
    Some(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": object_name(&[name, "egress"]),
            "namespace": ns,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": MANAGER, DIRECTION_LABEL: "egress"}
        },
        "spec": {"endpointSelector": {"matchLabels": selector}, "egress": rules}
    }))
}

/// How Cilium names one destination.
fn destination(host: &str) -> Value {
    if let Some(entity) = host.strip_prefix("entity:") {
        return json!({"toEntities": [entity]});
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => json!({"toCIDR": [format!("{ip}/32")]}),
        Ok(IpAddr::V6(ip)) => json!({"toCIDR": [format!("{ip}/128")]}),
        Err(_) => json!({"toFQDNs": [{"matchName": host}]}),
    }
}
