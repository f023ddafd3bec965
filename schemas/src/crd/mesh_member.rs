//! `LatticeMeshMember`: brings a workload Lattice did not derive into the bilateral mesh.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::service::WorkloadStatus;
use super::workload::Protocol;

/// Declares the mesh identity, ports, callers and dependencies of existing pods.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeMeshMember",
    namespaced,
    status = "WorkloadStatus",
    shortname = "lmm",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Mesh membership for pods that Lattice does not derive.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeMeshMemberSpec {
    pub target: MeshTarget,
    /// Ports the member serves, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, MeshPort>,
    /// Who may call the member: `name` or `namespace/name`, or `*` (an `AllowWildcard` gate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_callers: Vec<String>,
    /// What the member calls: `name` or `namespace/name`, or `*` (an `AllowWildcard` gate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Destinations outside the mesh; each is an `AccessExternalEndpoint` gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

/// The pods the member describes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTarget {
    /// Pod labels that select the member's pods.
    pub selector: BTreeMap<String, String>,
    /// The pods' service account (default: the member's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// A served port and its peer authentication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshPort {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// `strict` mTLS (the default) or `permissive` (plain text accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_auth: Option<PeerAuth>,
}

/// Peer authentication on a port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeerAuth {
    #[default]
    Strict,
    Permissive,
}

/// An egress destination: a host or a Cilium entity such as `kube-apiserver`, with ports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// A DNS name, e.g. `api.stripe.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A Cilium entity, e.g. `kube-apiserver` or `world`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub ports: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}
