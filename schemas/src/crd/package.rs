//! `LatticePackage`: a Helm chart installed with Lattice-managed secrets. Flux installs,
//! upgrades, rolls back and removes it: a package derives a Flux `HelmRelease` and the
//! chart's source, and Lattice does not re-implement Helm.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{FreeForm, free_form_schema};
use super::service::WorkloadStatus;
use super::workload::Resource;

/// A Helm chart with values, whose secret resources go through the same gates as workloads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticePackage",
    namespaced,
    status = "WorkloadStatus",
    shortname = "lpkg",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Helm chart installed with policy-checked secrets.",
    printcolumn(name = "Chart", type_ = "string", json_path = ".spec.chart.name"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.chart.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct LatticePackageSpec {
    pub chart: Chart,
    /// Helm values; may hold `${resources.NAME.KEY}` placeholders for secret resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub values: Option<FreeForm>,
    /// Resources the values refer to; `secret` resources are `AccessSecret` gates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Resource>,
    /// Packages installed and ready before this one: `name` (this namespace) or
    /// `namespace/name`. Flux's `dependsOn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// How often Flux reconciles the release and its chart source, e.g. `10m` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long one Helm install, upgrade or rollback may take, e.g. `10m` (Flux's default
    /// is 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A chart in a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Chart {
    /// `https://…` or `oci://…`.
    pub repository: String,
    pub name: String,
    pub version: String,
}
