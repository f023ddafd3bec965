//! `LatticeJob`: batch work, gang-scheduled (derived as a Volcano job).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::WorkloadStatus;
use super::workload::WorkloadBody;

/// A batch job of one or more tasks, scheduled as a gang.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeJob",
    namespaced,
    status = "WorkloadStatus",
    shortname = "ljob",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A batch job of gang-scheduled tasks.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeJobSpec {
    /// The tasks, by name (e.g. `master`, `worker`).
    pub tasks: BTreeMap<String, JobTask>,
    /// Pods that must be schedulable together before any starts (gang scheduling);
    /// defaults to the sum of task replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_available: Option<i32>,
    /// The scheduler queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A cron schedule; absent means run once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Retries of the whole job before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_retry: Option<i32>,
}

/// One task of a job: a workload body run by `replicas` pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    pub workload: WorkloadBody,
    /// `Never` (the default) or `OnFailure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
}
