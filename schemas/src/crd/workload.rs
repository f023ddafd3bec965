//! The Score workload body (containers, service, resources) and the Lattice extensions
//! that every workload kind shares.
//!
//! Field names follow the Score specification (`score.dev/v1b1`) one to one, so a Score
//! document is a valid body. Maps are `BTreeMap` so that everything derived from them is
//! deterministic.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{FreeForm, free_form_schema};

/// The part of a workload that Score defines, plus Lattice's pod-level extensions.
/// `LatticeService`, job tasks and model roles all embed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadBody {
    /// The containers of the workload, by name (Score `containers`).
    pub containers: BTreeMap<String, Container>,
    /// Ports the workload serves (Score `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// What the workload depends on or offers, by name (Score `resources`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Resource>,
    /// Extra containers run beside the main ones (proxies, agents). Each raises the same
    /// derivation gates as a container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sidecars: BTreeMap<String, Container>,
    /// Namespaced kernel parameters for the pod; each one is an `OverrideSecurity` gate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Run in the node's network namespace (an `OverrideSecurity` gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// Share one process namespace between the containers (an `OverrideSecurity` gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_process_namespace: Option<bool>,
    /// Names of `secret` resources that hold registry credentials
    /// (derived as `kubernetes.io/dockerconfigjson` secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
}

// The larger optional parts are boxed: a map of containers keeps room for eleven in each
// node, so every byte of this struct is paid eleven times per workload (about 60 MB of a
// 10,000-service world when they were inline). A plain comment: doc comments become the
// CRD's descriptions.
/// One container (Score `container`, with Lattice's `security` and `startupProbe`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// The image reference, e.g. `nginx`, `ghcr.io/org/app:1.2` or `app@sha256:…`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Overrides the image entrypoint. Never placeholder-substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image arguments. Never placeholder-substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables; values may hold `${…}` placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Files to mount, keyed by absolute path in the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, ContainerFile>,
    /// Volumes to mount, keyed by absolute path in the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, ContainerVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<ContainerResources>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Box<Probe>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Box<Probe>>,
    /// Lattice extension: a probe that gates the other two until the container has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Box<Probe>>,
    /// Score `before`: containers that must reach a state before this one starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub before: BTreeMap<String, BeforeCondition>,
    /// Lattice extension: deviations from the restricted security defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<ContainerSecurity>>,
}

/// A file mounted into a container: exactly one of `content`, `binaryContent` or `source`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerFile {
    /// Octal file mode, e.g. `"0644"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?[0-7]{3}$"))]
    pub mode: Option<String>,
    /// A path to a local file whose content is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Inline text; placeholders are expanded unless `noExpand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Inline base64 content; never expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_content: Option<String>,
    /// Do not expand placeholders in `content` or `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_expand: Option<bool>,
}

/// A volume mounted into a container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerVolume {
    /// The volume, usually `${resources.NAME}` naming a `volume` resource.
    pub source: String,
    /// A sub path within the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Compute requests and limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceAmounts>,
}

/// Amounts of memory and CPU, as Kubernetes quantities.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// e.g. `512Mi`, `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0\.\d+|[1-9]\d*(\.\d+)?)(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"))]
    pub memory: Option<String>,
    /// e.g. `250m`, `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d+(?:m|\.\d+)?$"))]
    pub cpu: Option<String>,
}

/// A health probe: exactly one of `httpGet` or `exec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// Lattice extension: seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i32>,
    /// Lattice extension: seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period_seconds: Option<i32>,
    /// Lattice extension: consecutive failures before the probe fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
}

/// An HTTP GET probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<HttpScheme>,
    pub path: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// The scheme of an HTTP probe.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HttpScheme {
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

/// A header sent with an HTTP probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HttpHeader {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub value: String,
}

/// A probe that runs a command in the container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

/// Score `before`: the state another container must reach first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct BeforeCondition {
    pub ready: ReadyState,
}

/// A container state named by Score `before`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyState {
    Started,
    Healthy,
    Complete,
}

/// Deviations from the restricted Pod Security defaults. Lattice runs every container as
/// non-root, read-only, without privilege escalation, with all capabilities dropped and the
/// runtime's default seccomp profile; each field set here to something else is a gate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecurity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Linux capabilities to add, e.g. `NET_ADMIN` (all others stay dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// `RuntimeDefault` (the default), `Unconfined`, or `Localhost/<profile>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<String>,
    /// `RuntimeDefault` (the default), `Unconfined`, or `Localhost/<profile>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
}

/// Score `service`: the ports the workload serves, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, ServicePort>,
}

/// One served port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The container port, when it differs from `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// A transport protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// A Score resource: something the workload depends on (or, for `service` resources with
/// `direction: inbound`, who may call it). Well-known `type`s: `service`, `secret`,
/// `volume`, `gpu`, `external-service`; any other Score type is carried through.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The resource type.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 63))]
    pub type_: String,
    /// A specialisation of the type, chosen by the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// A shared identity: for a volume, the id of a volume owned elsewhere; for a secret,
    /// the path in the secret provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Type-specific parameters (see the README for each type's keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub params: Option<FreeForm>,
    /// Score resource metadata (annotations and any other keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub metadata: Option<FreeForm>,
    /// Lattice extension for `service` resources: `outbound` (this workload calls it, the
    /// default), `inbound` (it may call this workload) or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Lattice extension for `service` resources: the peer's namespace when it is not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Lattice extension for `service` resources: the cluster of the hierarchy the peer runs
    /// in, when it is another one. Such an edge is matched by the two clusters' nearest
    /// common ancestor, as a `Connect` decision, and routed to both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// The name a workload calls a service in another cluster by: what the caller's route
/// (an Istio ServiceEntry) resolves to the peer cluster's east-west gateway. `.internal` is
/// reserved for private use, so it never leaves the mesh.
pub fn remote_host(name: &str, namespace: &str, cluster: &str) -> String {
    format!("{name}.{namespace}.{cluster}.lattice.internal")
}

/// Which way traffic flows for a `service` resource.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Outbound,
    Inbound,
    Both,
}

impl Direction {
    /// This workload calls the peer.
    pub fn is_outbound(self) -> bool {
        matches!(self, Direction::Outbound | Direction::Both)
    }
    /// The peer calls this workload.
    pub fn is_inbound(self) -> bool {
        matches!(self, Direction::Inbound | Direction::Both)
    }
}

/// Horizontal autoscaling bounds and targets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Lower bound; defaults to `replicas` (or 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min: Option<i32>,
    #[schemars(range(min = 1))]
    pub max: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<ScalingMetric>,
    /// Seconds to wait before scaling up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_up_stabilization_seconds: Option<i32>,
    /// Seconds to wait before scaling down again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: Option<i32>,
}

/// A metric to scale on and its target: `cpu` and `memory` are utilisation percentages;
/// any other name is a Prometheus metric (e.g. `vllm:gpu_cache_usage_perc`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetric {
    #[schemars(length(min = 1))]
    pub metric: String,
    #[schemars(range(min = 1))]
    pub target: i64,
}
