//! Cluster API's vocabulary as this crate writes it: API versions (pinned to the releases
//! whose CRDs are in the reference material), references, names, labels and annotations.

use serde_json::{Value, json};

/// Core CAPI (`Cluster`, `MachineDeployment`), v1.14.
pub const CORE: &str = "cluster.x-k8s.io";
pub const CORE_VERSION: &str = "cluster.x-k8s.io/v1beta2";
/// Kubeadm bootstrap and control plane, v1.14.
pub const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io";
pub const KUBEADM_BOOTSTRAP_VERSION: &str = "bootstrap.cluster.x-k8s.io/v1beta2";
pub const CONTROL_PLANE: &str = "controlplane.cluster.x-k8s.io";
pub const KUBEADM_CONTROL_PLANE_VERSION: &str = "controlplane.cluster.x-k8s.io/v1beta2";
/// RKE2 bootstrap and control plane (cluster-api-provider-rke2).
pub const RKE2_BOOTSTRAP_VERSION: &str = "bootstrap.cluster.x-k8s.io/v1beta2";
pub const RKE2_CONTROL_PLANE_VERSION: &str = "controlplane.cluster.x-k8s.io/v1beta2";
/// Every infrastructure provider's group.
pub const INFRASTRUCTURE: &str = "infrastructure.cluster.x-k8s.io";

/// The label CAPI puts on every object of a cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The label that names the LatticeCluster an object was derived from.
pub const DERIVED_FROM: &str = "lattice.dev/cluster";
/// The cluster autoscaler's bounds on a MachineDeployment.
pub const AUTOSCALER_MIN: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
pub const AUTOSCALER_MAX: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
/// The label every node of a worker pool carries, valued with the pool's name.
pub const POOL_LABEL: &str = "lattice.dev/pool";

/// The pods' and Services' networks of every cluster (CAPI's quick-start defaults).
pub const POD_CIDR: &str = "192.168.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The API server's port.
pub const API_SERVER_PORT: i64 = 6443;

/// The namespace a cluster's CAPI objects live in on the cluster that manages it.
pub fn namespace(cluster: &str) -> String {
    format!("capi-{cluster}")
}

/// A v1beta2 contract reference (`apiGroup`, `kind`, `name`).
pub fn reference(api_group: &str, kind: &str, name: &str) -> Value {
    json!({"apiGroup": api_group, "kind": kind, "name": name})
}

/// The group of an `apiVersion` (`infrastructure.cluster.x-k8s.io/v1beta2` →
/// `infrastructure.cluster.x-k8s.io`).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// A reference to `object` (which carries `apiVersion`, `kind` and `metadata.name`).
pub fn reference_to(object: &Value) -> Value {
    reference(
        group_of(object["apiVersion"].as_str().unwrap_or_default()),
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// An object's metadata: its name, the cluster's namespace and CAPI's cluster label.
pub fn metadata(cluster: &str, name: &str) -> Value {
    json!({
        "name": name,
        "namespace": namespace(cluster),
        "labels": {CLUSTER_NAME_LABEL: cluster, DERIVED_FROM: cluster},
    })
}

/// A Kubernetes release as CAPI wants it (`1.32.0` → `v1.32.0`; `1.32` → `v1.32.0`).
pub fn kubernetes_version(version: &str) -> String {
    let bare = version.trim_start_matches('v');
    let parts = bare.split('.').count();
    if parts == 2 {
        format!("v{bare}.0")
    } else {
        format!("v{bare}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_take_a_v_and_a_patch() {
        assert_eq!(kubernetes_version("1.32.0"), "v1.32.0");
        assert_eq!(kubernetes_version("v1.31.6"), "v1.31.6");
        assert_eq!(kubernetes_version("1.30"), "v1.30.0");
    }

    #[test]
    fn references_read_the_group_off_the_api_version() {
        let o = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "AWSCluster", "metadata": {"name": "a"}});
        assert_eq!(
            reference_to(&o),
            json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "AWSCluster", "name": "a"})
        );
    }
}
