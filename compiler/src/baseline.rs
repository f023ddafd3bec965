//! Default deny, derived: every namespace's baseline, unless `OptOutDefaultDeny` allowed
//! the namespace to run without it.
//!
//! The baseline of a namespace, three objects:
//! - a CiliumNetworkPolicy selecting every pod, with an empty ingress rule (L4: nothing
//!   comes in until an allowed edge's policy lets it) and one egress rule, DNS to the
//!   cluster resolver (L4: nothing goes out but name lookups until an allowed edge or
//!   external endpoint opens it; the DNS rule also lets Cilium see the names that FQDN
//!   egress rules match);
//! - an Istio AuthorizationPolicy with no rules (L7 allow-nothing);
//! - a namespace-wide STRICT PeerAuthentication (mTLS only).
//!
//! What the decisions allow opens exactly what they name: an allowed `Connect` edge, the
//! caller's egress and the callee's ingress on its ports ([`crate::mesh`]); an allowed
//! `AccessExternalEndpoint`, that host and port ([`crate::egress`]).

use lattice_engine::{Snapshot, World};
use serde_json::{Value, json};

use crate::objects::MANAGER;

/// The name of the per-namespace default-deny objects (the PeerAuthentication is
/// `default`, the name Istio gives a namespace-wide one).
pub const DEFAULT_DENY: &str = "lattice-default-deny";

/// The label that marks an object as part of its namespace's baseline.
pub const BASELINE_LABEL: &str = "lattice.dev/baseline";

/// The baseline of every namespace of `world` that `snapshot` did not let opt out.
pub fn namespace_baseline(snapshot: &Snapshot, world: &World) -> Vec<Value> {
    lattice_engine::project::namespaces(world)
        .into_keys()
        .filter(|ns| !snapshot.opted_out(ns))
        .flat_map(|ns| baseline(&ns))
        .collect()
}

/// The three baseline objects of namespace `ns`.
pub fn baseline(ns: &str) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/managed-by": MANAGER, BASELINE_LABEL: "true"});
    let meta = json!({"name": DEFAULT_DENY, "namespace": ns, "labels": labels});
    let dns = json!({
        "toEndpoints": [{"matchLabels": {
            "k8s:io.kubernetes.pod.namespace": "kube-system",
            "k8s:k8s-app": "kube-dns"
        }}],
        "toPorts": [{
            "ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
            "rules": {"dns": [{"matchPattern": "*"}]}
        }]
    });
    vec![
        json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta,
            "spec": {"endpointSelector": {}, "ingress": [{}], "egress": [dns]}
        }),
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta, "spec": {}}),
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns, "labels": labels},
            "spec": {"mtls": {"mode": "STRICT"}}
        }),
    ]
}
