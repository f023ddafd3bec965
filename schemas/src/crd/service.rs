//! `LatticeService`: one long-running workload, Score-compatible.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;
use std::collections::BTreeMap;

use super::workload::{Autoscaling, Container, Resource, ServiceSpec, WorkloadBody};

/// A long-running workload: a Score body plus replicas, autoscaling, ingress, rollout
/// strategy and observability. Lattice derives every Kubernetes object it needs, and only
/// what policy allows.
#[derive(CustomResource, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeService",
    namespaced,
    status = "WorkloadStatus",
    shortname = "lsvc",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A long-running workload, Score-compatible, compiled into every object it needs.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeServiceSpec {
    #[serde(flatten)]
    pub workload: WorkloadBody,
    /// Desired replicas when not autoscaled (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<Observability>,
}

/// Read through [`SpecFields`] rather than serde's `flatten`, which buffers every spec into
/// an intermediate tree and reads it again: at estate scale that was most of the time
/// typing a world. What is read is the same: the test
/// `a_spec_reads_back_every_field_it_writes` holds the two field lists together.
impl<'de> Deserialize<'de> for LatticeServiceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = SpecFields::deserialize(d)?;
        Ok(LatticeServiceSpec {
            workload: WorkloadBody {
                containers: f.containers,
                service: f.service,
                resources: f.resources,
                sidecars: f.sidecars,
                sysctls: f.sysctls,
                host_network: f.host_network,
                share_process_namespace: f.share_process_namespace,
                image_pull_secrets: f.image_pull_secrets,
            },
            replicas: f.replicas,
            autoscaling: f.autoscaling,
            ingress: f.ingress,
            deploy: f.deploy,
            observability: f.observability,
        })
    }
}

/// Every field of a [`LatticeServiceSpec`], the workload body's among them, at one level.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    containers: BTreeMap<String, Container>,
    #[serde(default)]
    service: Option<ServiceSpec>,
    #[serde(default)]
    resources: BTreeMap<String, Resource>,
    #[serde(default)]
    sidecars: BTreeMap<String, Container>,
    #[serde(default)]
    sysctls: BTreeMap<String, String>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    share_process_namespace: Option<bool>,
    #[serde(default)]
    image_pull_secrets: Vec<String>,
    #[serde(default)]
    replicas: Option<i32>,
    #[serde(default)]
    autoscaling: Option<Autoscaling>,
    #[serde(default)]
    ingress: Option<Ingress>,
    #[serde(default)]
    deploy: Option<Deploy>,
    #[serde(default)]
    observability: Option<Observability>,
}

/// Status of every workload kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// `Pending`, `Ready`, `Denied` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready` and `Authorized` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Every gate the last reconcile found denied, with its reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_gates: Vec<DeniedGate>,
    /// Digest of the policy snapshot the last decision was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_digest: Option<String>,
}

/// A derivation gate that policy denied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeniedGate {
    /// The Cedar action, e.g. `DeployImage`.
    pub action: String,
    /// The Cedar resource uid.
    pub resource: String,
    /// What raised the question: a container, sidecar or resource name.
    pub raised_by: String,
    /// Stable ids of the determining policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The `@advice` of the determining policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// Exposure through the Gateway API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// Host names to serve; each one is an `ExposeHost` gate.
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Path routes; none means every path to the first service port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<IngressRoute>,
    /// The Gateway to attach to, when not the platform default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ref: Option<super::common::ObjectRef>,
}

/// TLS for ingress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// `auto`: a cert-manager Certificate from `issuerRef`; `manual`: an existing secret.
    pub mode: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// The certificate secret for `manual` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// How ingress certificates are obtained.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Auto,
    Manual,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `ClusterIssuer` (the default) or `Issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One HTTP route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressRoute {
    /// Path to match (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `PathPrefix` (the default) or `Exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_type: Option<PathType>,
    /// The name of the service port to route to (default: the first port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// How a route path matches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PathType {
    PathPrefix,
    Exact,
}

/// Rollout strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deploy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Progressive delivery settings for `strategy: canary` (Flagger analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// How new versions roll out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Rolling,
    Canary,
}

/// Canary analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Time between analysis steps, a duration such as `1m`.
    pub interval: String,
    /// Traffic percentage added per step.
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: i32,
    /// Traffic percentage at which the canary is promoted.
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: i32,
    /// Failed checks before rollback.
    #[schemars(range(min = 1))]
    pub threshold: i32,
}

/// Metrics, tracing and runtime enforcement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observability {
    /// Scrape settings for the port named `metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsScrape>,
    /// Derive a Tetragon binary allowlist from the containers' entrypoints (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_enforcement: Option<bool>,
}

/// How metrics are scraped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsScrape {
    /// HTTP path (default `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Scrape interval, a duration such as `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field is set, by struct literals with no `..Default::default()`: a field added
    /// to either struct stops this test compiling until it is read by `SpecFields` too.
    #[test]
    fn a_spec_reads_back_every_field_it_writes() {
        let container = Container {
            image: "ghcr.io/org/app:1.0".into(),
            ..Default::default()
        };
        let spec = LatticeServiceSpec {
            workload: WorkloadBody {
                containers: [("main".to_owned(), container.clone())].into(),
                service: Some(ServiceSpec::default()),
                resources: [("db".to_owned(), Resource::default())].into(),
                sidecars: [("proxy".to_owned(), container)].into(),
                sysctls: [("net.core.somaxconn".to_owned(), "1024".to_owned())].into(),
                host_network: Some(false),
                share_process_namespace: Some(true),
                image_pull_secrets: vec!["registry".into()],
            },
            replicas: Some(3),
            autoscaling: Some(Autoscaling::default()),
            ingress: Some(Ingress {
                hosts: vec!["shop.example.com".into()],
                ..Default::default()
            }),
            deploy: Some(Deploy::default()),
            observability: Some(Observability::default()),
        };
        let json = serde_json::to_value(&spec).unwrap();
        let back: LatticeServiceSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, spec);
        // Without its required field it is refused, as the flattened body refused it.
        let mut missing = json;
        missing.as_object_mut().unwrap().remove("containers");
        let err = serde_json::from_value::<LatticeServiceSpec>(missing).unwrap_err();
        assert!(err.to_string().contains("containers"), "{err}");
    }
}
