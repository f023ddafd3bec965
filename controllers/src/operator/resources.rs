//! The kinds Lattice derives: where each is served and in which layer it is applied.
//!
//! Layers go in order, each only once the one before applied: what the workload stands on
//! (identity, configuration, secrets, network policy) before the workload, and the
//! autoscaler last, so nothing scales a Deployment that does not exist yet.

use kube::core::{ApiResource, GroupVersionKind};

/// An apply layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    Infrastructure,
    Workload,
    Autoscaling,
}

/// A kind Lattice derives.
#[derive(Clone, Copy, Debug)]
pub struct DerivedKind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub layer: Layer,
}

impl DerivedKind {
    /// What kube needs to address it.
    pub fn api_resource(&self) -> ApiResource {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version),
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind),
            self.plural,
        )
    }
}

use Layer::*;

/// Every kind the compiler emits (a test keeps this in step with the compiler's output).
pub const DERIVED: &[DerivedKind] = &[
    k("v1", "ServiceAccount", "serviceaccounts", Infrastructure),
    k("v1", "ConfigMap", "configmaps", Infrastructure),
    k(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Infrastructure,
    ),
    k(
        "external-secrets.io/v1",
        "ExternalSecret",
        "externalsecrets",
        Infrastructure,
    ),
    k(
        "cert-manager.io/v1",
        "Certificate",
        "certificates",
        Infrastructure,
    ),
    k(
        "cert-manager.io/v1",
        "ClusterIssuer",
        "clusterissuers",
        Infrastructure,
    ),
    k(
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        Infrastructure,
    ),
    k(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        Infrastructure,
    ),
    k(
        "security.istio.io/v1",
        "PeerAuthentication",
        "peerauthentications",
        Infrastructure,
    ),
    k(
        "cilium.io/v1alpha1",
        "TracingPolicyNamespaced",
        "tracingpoliciesnamespaced",
        Infrastructure,
    ),
    k(
        "source.toolkit.fluxcd.io/v1",
        "HelmRepository",
        "helmrepositories",
        Infrastructure,
    ),
    k(
        "source.toolkit.fluxcd.io/v1",
        "OCIRepository",
        "ocirepositories",
        Infrastructure,
    ),
    k(
        "velero.io/v1",
        "BackupStorageLocation",
        "backupstoragelocations",
        Infrastructure,
    ),
    k("v1", "Service", "services", Workload),
    k("apps/v1", "Deployment", "deployments", Workload),
    k("batch.volcano.sh/v1alpha1", "Job", "jobs", Workload),
    k("batch.volcano.sh/v1alpha1", "CronJob", "cronjobs", Workload),
    k(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        Workload,
    ),
    k(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        "gateways",
        Workload,
    ),
    k(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "httproutes",
        Workload,
    ),
    k("flagger.app/v1beta1", "Canary", "canaries", Workload),
    k(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        "helmreleases",
        Workload,
    ),
    k(
        "operator.victoriametrics.com/v1beta1",
        "VMServiceScrape",
        "vmservicescrapes",
        Workload,
    ),
    k("velero.io/v1", "Schedule", "schedules", Workload),
    k("velero.io/v1", "Backup", "backups", Workload),
    k("velero.io/v1", "Restore", "restores", Workload),
    k(
        "keda.sh/v1alpha1",
        "ScaledObject",
        "scaledobjects",
        Autoscaling,
    ),
];

const fn k(
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    layer: Layer,
) -> DerivedKind {
    DerivedKind {
        api_version,
        kind,
        plural,
        layer,
    }
}

/// The derived kind of an object, by its `apiVersion` and `kind`.
pub fn derived_kind(api_version: &str, kind: &str) -> Option<&'static DerivedKind> {
    DERIVED
        .iter()
        .find(|d| d.api_version == api_version && d.kind == kind)
}

/// Identifies one derived object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectId {
    /// The id of a derived object (`None` when it lacks a kind or name).
    pub fn of(object: &serde_json::Value) -> Option<ObjectId> {
        let s = |p: &str| {
            object
                .pointer(p)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Some(ObjectId {
            api_version: s("/apiVersion")?,
            kind: s("/kind")?,
            namespace: s("/metadata/namespace").unwrap_or_default(),
            name: s("/metadata/name")?,
        })
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}
