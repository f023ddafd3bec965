//! `LatticeQuota`: the most the workloads in a scope may ask for together. Whether a
//! workload fits is a Cedar decision (`ConsumeQuota`), asked as a derivation gate; the usage
//! it is decided against is a fact the projection sums.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::common::Condition;

/// Limits on what the workloads of a namespace, a group of namespaces, or one workload ask
/// for: CPU and memory requests, GPUs, and how many workloads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeQuota",
    status = "QuotaStatus",
    shortname = "lquota",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Limits on what the workloads in a scope may ask for together, decided by Cedar.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.namespace"),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service"),
    printcolumn(
        name = "Workloads",
        type_ = "string",
        json_path = ".status.usage.workloads"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeQuotaSpec {
    /// Every workload in this namespace. Exactly one of `namespace`, `namespaceSelector`
    /// and `service` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A group: every workload in the namespaces carrying all of these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<BTreeMap<String, String>>,
    /// One workload, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The limits; one left out is not limited.
    pub limits: QuotaLimits,
}

/// What a quota limits. CPU and memory are the pods' requests (their limits where a
/// container requests nothing) times the replicas (an autoscaled service's maximum).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLimits {
    /// CPU, a quantity such as `20` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d+(?:m|\.\d+)?$"))]
    pub cpu: Option<String>,
    /// Memory, a quantity such as `64Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0\.\d+|[1-9]\d*(\.\d+)?)(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"))]
    pub memory: Option<String>,
    /// GPUs (`gpu` resources, times replicas).
    #[serde(
        default,
        rename = "nvidia.com/gpu",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub gpu: Option<u32>,
    /// How many workloads (services, jobs, models and packages; a mesh member runs nothing
    /// Lattice derives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub workloads: Option<u32>,
}

/// What the operator last measured: the usage of every workload the quota covers, and the
/// workloads it refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// What every workload it covers asks for together (allowed or not): `cpu` in cores,
    /// `memory` in MiB (`…Mi`), `nvidia.com/gpu` and `workloads` counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, String>,
    /// Workloads (`namespace/name`) it refused: they derive nothing until there is room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the operator last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
