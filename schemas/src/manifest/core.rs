//! Kubernetes objects outside `lattice.dev` that Lattice decides and scans: the kinds that
//! run a pod, RBAC, Services, NetworkPolicies and ServiceAccounts (DESIGN §5).
//!
//! They are kept as written (the JSON value) because the projection reads them field by
//! field and reports a wrong-typed field as an error; on load each is also read as its
//! Kubernetes type (k8s-openapi, v1.33), so a document the API server could not decode is
//! refused with the reason, never judged on what could be read of it. Objects of any other
//! kind are left alone, as before.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A Kubernetes kind Lattice reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CoreKind {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
    PodTemplate,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    Service,
    NetworkPolicy,
    ServiceAccount,
}

impl CoreKind {
    pub const ALL: [CoreKind; 16] = [
        CoreKind::Pod,
        CoreKind::Deployment,
        CoreKind::ReplicaSet,
        CoreKind::StatefulSet,
        CoreKind::DaemonSet,
        CoreKind::Job,
        CoreKind::CronJob,
        CoreKind::ReplicationController,
        CoreKind::PodTemplate,
        CoreKind::Role,
        CoreKind::ClusterRole,
        CoreKind::RoleBinding,
        CoreKind::ClusterRoleBinding,
        CoreKind::Service,
        CoreKind::NetworkPolicy,
        CoreKind::ServiceAccount,
    ];

    /// The kind as manifests write it.
    pub fn name(self) -> &'static str {
        match self {
            CoreKind::Pod => "Pod",
            CoreKind::Deployment => "Deployment",
            CoreKind::ReplicaSet => "ReplicaSet",
            CoreKind::StatefulSet => "StatefulSet",
            CoreKind::DaemonSet => "DaemonSet",
            CoreKind::Job => "Job",
            CoreKind::CronJob => "CronJob",
            CoreKind::ReplicationController => "ReplicationController",
            CoreKind::PodTemplate => "PodTemplate",
            CoreKind::Role => "Role",
            CoreKind::ClusterRole => "ClusterRole",
            CoreKind::RoleBinding => "RoleBinding",
            CoreKind::ClusterRoleBinding => "ClusterRoleBinding",
            CoreKind::Service => "Service",
            CoreKind::NetworkPolicy => "NetworkPolicy",
            CoreKind::ServiceAccount => "ServiceAccount",
        }
    }

    /// The `apiVersion` objects of this kind are served at.
    pub fn api_version(self) -> &'static str {
        match self {
            CoreKind::Pod
            | CoreKind::ReplicationController
            | CoreKind::PodTemplate
            | CoreKind::Service
            | CoreKind::ServiceAccount => "v1",
            CoreKind::Deployment
            | CoreKind::ReplicaSet
            | CoreKind::StatefulSet
            | CoreKind::DaemonSet => "apps/v1",
            CoreKind::Job | CoreKind::CronJob => "batch/v1",
            CoreKind::Role
            | CoreKind::ClusterRole
            | CoreKind::RoleBinding
            | CoreKind::ClusterRoleBinding => "rbac.authorization.k8s.io/v1",
            CoreKind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    /// The resource name the API server serves the kind under (`deployments`).
    pub fn plural(self) -> &'static str {
        match self {
            CoreKind::Pod => "pods",
            CoreKind::Deployment => "deployments",
            CoreKind::ReplicaSet => "replicasets",
            CoreKind::StatefulSet => "statefulsets",
            CoreKind::DaemonSet => "daemonsets",
            CoreKind::Job => "jobs",
            CoreKind::CronJob => "cronjobs",
            CoreKind::ReplicationController => "replicationcontrollers",
            CoreKind::PodTemplate => "podtemplates",
            CoreKind::Role => "roles",
            CoreKind::ClusterRole => "clusterroles",
            CoreKind::RoleBinding => "rolebindings",
            CoreKind::ClusterRoleBinding => "clusterrolebindings",
            CoreKind::Service => "services",
            CoreKind::NetworkPolicy => "networkpolicies",
            CoreKind::ServiceAccount => "serviceaccounts",
        }
    }

    /// The kind of `kind` at `api_version`, when Lattice reads it.
    pub fn of(api_version: &str, kind: &str) -> Option<CoreKind> {
        CoreKind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.api_version() == api_version)
    }

    /// The kind named `kind` (by name alone, as an API server's watch names it).
    pub fn from_name(kind: &str) -> Option<CoreKind> {
        CoreKind::ALL.into_iter().find(|k| k.name() == kind)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, CoreKind::ClusterRole | CoreKind::ClusterRoleBinding)
    }

    /// Whether objects of this kind run a pod (a Pod, or a pod template).
    pub fn carries_pod(self) -> bool {
        matches!(
            self,
            CoreKind::Pod
                | CoreKind::Deployment
                | CoreKind::ReplicaSet
                | CoreKind::StatefulSet
                | CoreKind::DaemonSet
                | CoreKind::Job
                | CoreKind::CronJob
                | CoreKind::ReplicationController
                | CoreKind::PodTemplate
        )
    }

    /// Reads `value` as this kind's Kubernetes type: `Err` with serde's reason when the API
    /// server could not decode it either.
    pub fn check(self, value: &Value) -> Result<(), String> {
        use k8s_openapi::api::{apps, batch, core, networking, rbac};
        fn read<T: DeserializeOwned>(value: &Value) -> Result<(), String> {
            T::deserialize(value).map(drop).map_err(|e| e.to_string())
        }
        match self {
            CoreKind::Pod => read::<core::v1::Pod>(value),
            CoreKind::Deployment => read::<apps::v1::Deployment>(value),
            CoreKind::ReplicaSet => read::<apps::v1::ReplicaSet>(value),
            CoreKind::StatefulSet => read::<apps::v1::StatefulSet>(value),
            CoreKind::DaemonSet => read::<apps::v1::DaemonSet>(value),
            CoreKind::Job => read::<batch::v1::Job>(value),
            CoreKind::CronJob => read::<batch::v1::CronJob>(value),
            CoreKind::ReplicationController => read::<core::v1::ReplicationController>(value),
            CoreKind::PodTemplate => read::<core::v1::PodTemplate>(value),
            CoreKind::Role => read::<rbac::v1::Role>(value),
            CoreKind::ClusterRole => read::<rbac::v1::ClusterRole>(value),
            CoreKind::RoleBinding => read::<rbac::v1::RoleBinding>(value),
            CoreKind::ClusterRoleBinding => read::<rbac::v1::ClusterRoleBinding>(value),
            CoreKind::Service => read::<core::v1::Service>(value),
            CoreKind::NetworkPolicy => read::<networking::v1::NetworkPolicy>(value),
            CoreKind::ServiceAccount => read::<core::v1::ServiceAccount>(value),
        }
    }
}

/// A Kubernetes object of a [`CoreKind`], as written.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreObject {
    pub kind: CoreKind,
    pub metadata: ObjectMeta,
    /// The whole object (shared: the projection and reports read it, nobody writes it).
    pub value: Arc<Value>,
}

impl CoreObject {
    /// Reads `value` as an object of `kind`: its type checked, its metadata typed.
    pub fn read(kind: CoreKind, value: Value) -> Result<CoreObject, String> {
        kind.check(&value)?;
        let metadata = match value.get("metadata") {
            None | Some(Value::Null) => ObjectMeta::default(),
            Some(m) => ObjectMeta::deserialize(m).map_err(|e| format!("metadata: {e}"))?,
        };
        Ok(CoreObject {
            kind,
            metadata,
            value: Arc::new(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_read_at_their_served_version_only() {
        assert_eq!(
            CoreKind::of("apps/v1", "Deployment"),
            Some(CoreKind::Deployment)
        );
        assert_eq!(CoreKind::of("extensions/v1beta1", "Deployment"), None);
        assert_eq!(CoreKind::of("v1", "ConfigMap"), None);
        assert!(!CoreKind::ClusterRoleBinding.namespaced());
        assert!(CoreKind::CronJob.carries_pod());
        assert!(!CoreKind::Role.carries_pod());
    }

    #[test]
    fn names_versions_and_plurals_are_kubernetes_own() {
        use k8s_openapi::Resource;
        use k8s_openapi::api::{apps, batch, core, networking, rbac};
        fn of<T: Resource>() -> (String, String, String) {
            (
                T::API_VERSION.to_owned(),
                T::KIND.to_owned(),
                T::URL_PATH_SEGMENT.to_owned(),
            )
        }
        let theirs = [
            of::<core::v1::Pod>(),
            of::<apps::v1::Deployment>(),
            of::<apps::v1::ReplicaSet>(),
            of::<apps::v1::StatefulSet>(),
            of::<apps::v1::DaemonSet>(),
            of::<batch::v1::Job>(),
            of::<batch::v1::CronJob>(),
            of::<core::v1::ReplicationController>(),
            of::<core::v1::PodTemplate>(),
            of::<rbac::v1::Role>(),
            of::<rbac::v1::ClusterRole>(),
            of::<rbac::v1::RoleBinding>(),
            of::<rbac::v1::ClusterRoleBinding>(),
            of::<core::v1::Service>(),
            of::<networking::v1::NetworkPolicy>(),
            of::<core::v1::ServiceAccount>(),
        ];
        let ours: Vec<(String, String, String)> = CoreKind::ALL
            .iter()
            .map(|k| {
                (
                    k.api_version().to_owned(),
                    k.name().to_owned(),
                    k.plural().to_owned(),
                )
            })
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_wrong_typed_field_is_refused_with_the_reason() {
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"hostNetwork": "yes", "containers": []}});
        let err = CoreObject::read(CoreKind::Pod, bad).unwrap_err();
        assert!(err.contains("boolean"), "{err}");
        let good = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "system:anonymous"}]});
        let o = CoreObject::read(CoreKind::ClusterRoleBinding, good).unwrap();
        assert_eq!(o.metadata.name.as_deref(), Some("b"));
    }
}
