//! `CedarPolicy`: policies as Kubernetes objects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, EnforcementMode};

/// Cedar policies applied to the platform. Each policy needs a unique `@id`; its stable id
/// is `<namespace>/<name>/<id>`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "CedarPolicy",
    namespaced,
    status = "CedarPolicyStatus",
    shortname = "cp",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Cedar policies that decide what workloads, users and clusters may do.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Policies",
        type_ = "integer",
        json_path = ".status.policyCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CedarPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cedar policy text; every policy carries `@id("…")`.
    pub policies: String,
    /// Disabled policies stay stored but are not evaluated (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Apply to child clusters too (inherited down the cluster hierarchy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate: Option<bool>,
    /// `enforce` (the default) decides; `audit` is evaluated and reported only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EnforcementMode>,
}

/// What the policy controller found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CedarPolicyStatus {
    /// `Accepted` or `Rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbid_count: Option<i32>,
    /// Each problem, with line and column in `spec.policies`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
