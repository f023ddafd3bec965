//! A LatticeCluster's Cluster API objects, in the order they are applied.

use lattice_schemas::crd::cluster::LatticeCluster;
use lattice_schemas::crd::infra_provider::InfraProviderSpec;
use serde_json::{Value, json};

use crate::bootstrap;
use crate::capi::{self, metadata};
use crate::components::{Component, components};
use crate::provider::infrastructure;

/// Where a new cluster's first control-plane node fetches its agent: the parent's
/// bootstrap endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for BootstrapEndpoint {
    type Err = String;

    /// `HOST:PORT` (a name or an address; an IPv6 address in brackets).
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: {port:?} is not a port"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let valid = !bare.is_empty()
            && (bare.parse::<std::net::IpAddr>().is_ok()
                || bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid {
            return Err(format!("{s:?}: {host:?} is not a host name or address"));
        }
        Ok(BootstrapEndpoint {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for BootstrapEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

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

/// Why a LatticeCluster cannot be provisioned as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
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

/// A derived name, refused when it is not a DNS label (CAPI puts names into labels).
pub(crate) fn checked_name(name: String) -> Result<String, ProvisionError> {
    let label = name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label {
        Ok(name)
    } else {
        Err(ProvisionError::Invalid {
            field: "/metadata/name".into(),
            message: format!(
                "the derived name {name:?} is not a DNS label of at most 63 characters: shorten the cluster's or the pool's name"
            ),
        })
    }
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
