//! `LatticeCluster`: a cluster Lattice provisions, pivots and reaches through its agent.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, FreeForm, free_form_schema};

/// A workload cluster: provider, Kubernetes version, nodes and platform services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeCluster",
    status = "ClusterStatus",
    shortname = "lc",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Kubernetes cluster that Lattice provisions and manages.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.provider.kubernetes.version"
    ),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeClusterSpec {
    /// The `InfraProvider` that holds the credentials.
    pub provider_ref: String,
    pub provider: ClusterProvider,
    pub nodes: Nodes,
    /// The environment the cluster serves, e.g. `prod` (a Cedar attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The parent cluster that manages this one; absent for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Set when this cluster manages children: where their agents reach its cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_config: Option<ParentConfig>,
    /// Install the service mesh and Lattice's service controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<bool>,
    /// Install the monitoring stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<bool>,
    /// Enable scheduled backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<bool>,
    /// Install the External Secrets Operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secrets: Option<bool>,
    /// The Pod Security Standards level of a namespace that names none (the
    /// `pod-security.kubernetes.io/enforce` label); `restricted` when unset. Read from the
    /// root cluster; Cedar sees it as `Cluster.defaultPodSecurity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_default: Option<crate::crd::common::PodSecurityLevel>,
}

/// Provider and Kubernetes distribution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProvider {
    pub kubernetes: KubernetesSpec,
    /// Exactly one provider block.
    pub config: ProviderConfig,
}

/// Kubernetes version and bootstrap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// A release such as `1.32.0`.
    #[schemars(regex(pattern = r"^v?\d+\.\d+(\.\d+)?$"))]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
}

/// How nodes are bootstrapped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    #[default]
    Kubeadm,
    Rke2,
}

/// Provider-specific settings; exactly one block is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub proxmox: Option<FreeForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub openstack: Option<FreeForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub docker: Option<FreeForm>,
}

/// AWS settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsConfig {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cp_instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
}

/// Control plane size and worker pools.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Nodes {
    #[schemars(range(min = 1))]
    pub control_plane: i32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub worker_pools: BTreeMap<String, WorkerPool>,
}

/// A pool of worker nodes, optionally autoscaled between `min` and `max`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPool {
    #[schemars(range(min = 0))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where child agents reach this cluster's cell.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentConfig {
    /// The gRPC port of the cell (default 50051).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc_port: Option<i32>,
    /// The HTTPS port that serves bootstrap manifests (default 8443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub bootstrap_port: Option<i32>,
    /// How the cell is exposed: `LoadBalancer` (the default) or `NodePort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
}

/// A child cluster's health, as its agent reads it from its own API server and reports it
/// in heartbeats.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    #[schemars(range(min = 0))]
    pub nodes_ready: i64,
    #[schemars(range(min = 0))]
    pub nodes_total: i64,
    /// The child's API server answers and reports itself ready.
    pub control_plane_ready: bool,
    /// The agent's version.
    #[serde(default)]
    pub agent_version: String,
    /// The Kubernetes version the child's API server reports.
    #[serde(default)]
    pub kubernetes_version: String,
    /// When the cell last heard from the agent (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

/// A cluster below a child, with the facts the cluster directly above it holds of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DescendantStatus {
    /// Its LatticeCluster name.
    pub name: String,
    /// The cluster directly above it.
    pub parent: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub ready: bool,
    /// Its agent holds a tunnel to its parent's cell.
    #[serde(default)]
    pub agent_connected: bool,
    #[serde(default)]
    pub health: ClusterHealth,
}

/// What the cluster controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// `Pending`, `Provisioning`, `Pivoting`, `Ready`, `Failed` or `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The cluster's agent holds a tunnel to its parent's cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_connected: Option<bool>,
    /// The health the cluster's agent last reported to its parent's cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ClusterHealth>,
    /// The cluster manages its own Cluster API objects (it has been pivoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pivoted: Option<bool>,
    /// The clusters below this one, as its agent reports them (written by this cluster's
    /// parent's cell): the API proxy routes calls for them through this cluster, and they
    /// are `Cluster` entities in this cluster, `in` their parents, so policy can name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descendants: Vec<DescendantStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
