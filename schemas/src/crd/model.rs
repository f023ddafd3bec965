//! `LatticeModel`: model serving split into roles (for example prefill and decode).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::WorkloadStatus;
use super::workload::{Autoscaling, WorkloadBody};

/// An inference deployment: one Deployment per role, each autoscaled on model metrics.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeModel",
    namespaced,
    status = "WorkloadStatus",
    shortname = "lmodel",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A model-serving workload made of roles such as prefill and decode.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.source.uri"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeModelSpec {
    pub source: ModelSource,
    /// The serving roles, by name.
    pub roles: BTreeMap<String, ModelRole>,
}

/// Where the model weights come from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// e.g. `hf://meta-llama/Llama-3.1-8B-Instruct`, `s3://bucket/path`, `pvc://claim/path`.
    #[schemars(length(min = 1))]
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// A `secret` resource of the roles holding credentials for the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// One role: a workload body with its own replicas and autoscaling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRole {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    pub workload: WorkloadBody,
    /// Autoscaling on model metrics such as KV-cache usage, with stabilization windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}
