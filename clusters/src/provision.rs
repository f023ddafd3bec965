//! A LatticeCluster's Cluster API objects, in the order they are applied.

use lattice_schemas::crd::cluster::LatticeCluster;
use lattice_schemas::crd::infra_provider::InfraProviderSpec;
use serde_json::{Value, json};

use crate::bootstrap::{self, BootstrapEndpoint};
use crate::capi::{self, metadata};
use crate::components::{Component, components};
use crate::error::{ProvisionError, checked_name};
use crate::provider::infrastructure;

/// What provisioning needs besides the LatticeCluster.
#[derive(Clone, Debug)]
pub struct ProvisionOptions<'a> {
    /// The parent's bootstrap endpoint, which the control plane's hook fetches the agent
    /// from. `None` for a root that `lattice install` provisions: it has no parent to join,
    /// and the installer, holding its kubeconfig, moves its objects in itself.
    pub endpoint: Option<BootstrapEndpoint>,
    /// The InfraProvider the cluster names (`spec.providerRef`), for its credentials.
    pub infra: Option<&'a InfraProviderSpec>,
}

/// A cluster's CAPI objects and the platform components it will run.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// The namespace the objects live in on the managing cluster.
    pub namespace: String,
    /// Every object, in apply order: the namespace, the infrastructure cluster, the
    /// control plane's machine template and control plane, the `Cluster`, then per pool
    /// its machine template, bootstrap template and `MachineDeployment`.
    pub objects: Vec<Value>,
    pub components: Vec<Component>,
}

/// The CAPI objects of `cluster`.
pub fn provision(
    cluster: &LatticeCluster,
    options: &ProvisionOptions,
) -> Result<Provisioned, ProvisionError> {
    let name = checked_name(cluster.metadata.name.clone().unwrap_or_default())?;
    let spec = &cluster.spec;
    if spec.nodes.control_plane < 1 {
        return Err(ProvisionError::Invalid {
            field: "/spec/nodes/controlPlane".into(),
            message: "a cluster needs at least one control-plane node".into(),
        });
    }
    for (pool, p) in &spec.nodes.worker_pools {
        checked_name(format!("{name}-{pool}"))?;
        if let (Some(min), Some(max)) = (p.min, p.max)
            && min > max
        {
            return Err(ProvisionError::Invalid {
                field: format!("/spec/nodes/workerPools/{pool}/min"),
                message: format!("pool `{pool}`: `min` {min} is above `max` {max}"),
            });
        }
    }
    let infra = infrastructure(&name, spec, options.infra)?;
    let control_plane = bootstrap::control_plane(&name, spec, &infra, options.endpoint.as_ref());
    let version = capi::kubernetes_version(&spec.provider.kubernetes.version);
    let namespace = capi::namespace(&name);
    let mut objects = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {capi::DERIVED_FROM: name}},
        }),
        infra.cluster.clone(),
        infra.control_plane.clone(),
        control_plane.clone(),
        json!({
            "apiVersion": capi::CORE_VERSION,
            "kind": "Cluster",
            "metadata": metadata(&name, &name),
            "spec": {
                "clusterNetwork": {
                    "pods": {"cidrBlocks": [capi::POD_CIDR]},
                    "services": {"cidrBlocks": [capi::SERVICE_CIDR]},
                },
                "controlPlaneRef": capi::reference_to(&control_plane),
                "infrastructureRef": capi::reference_to(&infra.cluster),
            },
        }),
    ];
    for (pool, p) in &spec.nodes.worker_pools {
        let machine = &infra.workers[pool];
        let config = bootstrap::worker_template(&name, pool, p, spec, &infra);
        let selector = json!({capi::CLUSTER_NAME_LABEL: name, capi::POOL_LABEL: pool});
        let mut md = json!({
            "apiVersion": capi::CORE_VERSION,
            "kind": "MachineDeployment",
            "metadata": metadata(&name, &format!("{name}-{pool}")),
            "spec": {
                "clusterName": name,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {
                        "clusterName": name,
                        "version": version,
                        "bootstrap": {"configRef": capi::reference_to(&config)},
                        "infrastructureRef": capi::reference_to(machine),
                    },
                },
            },
        });
        if p.min.is_some() || p.max.is_some() {
            // The cluster autoscaler owns the replica count between the bounds; CAPI starts
            // a new pool at its minimum.
            md["metadata"]["annotations"] = json!({
                capi::AUTOSCALER_MIN: p.min.unwrap_or(0).to_string(),
                capi::AUTOSCALER_MAX: p.max.unwrap_or(p.replicas.max(p.min.unwrap_or(0))).to_string(),
            });
        } else {
            md["spec"]["replicas"] = json!(p.replicas);
        }
        objects.push(machine.clone());
        objects.push(config);
        objects.push(md);
    }
    Ok(Provisioned {
        namespace,
        objects,
        components: components(spec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_read_host_and_port() {
        let e: BootstrapEndpoint = "cell.example.com:8443".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("cell.example.com", 8443));
        let e: BootstrapEndpoint = "[fd00::1]:8443".parse().unwrap();
        assert_eq!(e.to_string(), "[fd00::1]:8443");
        for bad in [
            "cell",
            "cell:0",
            "cell:http",
            ":8443",
            "a b:1",
            "a;rm -rf /:1",
        ] {
            assert!(bad.parse::<BootstrapEndpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_that_are_not_labels_are_refused() {
        assert!(checked_name("lab-general".into()).is_ok());
        for bad in ["Lab", "-lab", "lab_", &"a".repeat(64)] {
            assert!(checked_name(bad.into()).is_err(), "{bad}");
        }
    }
}
