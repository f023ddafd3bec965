//! The infrastructure half: per provider, the infrastructure cluster and the machine
//! templates of the control plane and of each worker pool.
//!
//! | provider | CAPI provider | cluster | machine template |
//! |---|---|---|---|
//! | `aws` | CAPA, `v1beta2` | `AWSCluster` | `AWSMachineTemplate` |
//! | `proxmox` | CAPMOX, `v1alpha2` | `ProxmoxCluster` | `ProxmoxMachineTemplate` |
//! | `openstack` | CAPO, `v1beta1` | `OpenStackCluster` | `OpenStackMachineTemplate` |
//! | `docker` | CAPD, `v1beta2` | `DockerCluster` | `DockerMachineTemplate` |
//!
//! Machine templates are immutable in CAPI: a changed template is a new object, and the
//! control plane or MachineDeployment rolls its machines onto it. So each template's name
//! ends in a digest of its spec, and an unchanged spec keeps its name.

use std::collections::BTreeMap;

use lattice_schemas::crd::cluster::{LatticeClusterSpec, MachineSize};
use lattice_schemas::crd::infra_provider::InfraProviderSpec;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::capi::{self, INFRASTRUCTURE, metadata};
use crate::error::{ProvisionError, checked_name};

/// The provider's objects and what the bootstrap side needs to know of it.
#[derive(Clone, Debug)]
pub struct Infrastructure {
    /// `AWSCluster`, `ProxmoxCluster`, `OpenStackCluster` or `DockerCluster`.
    pub cluster: Value,
    /// The control plane's machine template.
    pub control_plane: Value,
    /// Each worker pool's machine template, by pool name.
    pub workers: BTreeMap<String, Value>,
    /// Kubelets run with `cloud-provider: external` (a cloud controller manager sets the
    /// nodes' provider IDs).
    pub external_cloud_provider: bool,
    /// The endpoint address the control plane announces itself (with kube-vip), where the
    /// provider has no load balancer to make one.
    pub virtual_ip: Option<VirtualIp>,
}

/// An endpoint address kube-vip announces by ARP from whichever control-plane node leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualIp {
    pub address: String,
    pub interface: String,
}

/// The default machine sizes on Proxmox.
const PROXMOX_CONTROL_PLANE: MachineSize = MachineSize {
    cores: 4,
    memory_gib: 8,
    disk_gib: 50,
};
const PROXMOX_WORKER: MachineSize = MachineSize {
    cores: 4,
    memory_gib: 16,
    disk_gib: 100,
};

/// The infrastructure objects of cluster `name`.
pub fn infrastructure(
    name: &str,
    spec: &LatticeClusterSpec,
    infra: Option<&InfraProviderSpec>,
) -> Result<Infrastructure, ProvisionError> {
    let cfg = &spec.provider.config;
    let pools = &spec.nodes.worker_pools;
    let version = capi::kubernetes_version(&spec.provider.kubernetes.version);
    if let Some(aws) = &cfg.aws {
        let machine = |instance_type: &str, profile: &str| {
            let mut m = json!({
                "instanceType": instance_type,
                "iamInstanceProfile": profile,
            });
            if let Some(key) = &aws.ssh_key_name {
                m["sshKeyName"] = json!(key);
            }
            if let Some(ami) = &aws.ami {
                m["ami"] = json!({"id": ami});
            }
            m
        };
        let mut cluster = json!({"region": aws.region});
        if let Some(key) = &aws.ssh_key_name {
            cluster["sshKeyName"] = json!(key);
        }
        let worker_default = aws.worker_instance_type.as_deref().unwrap_or("m6i.xlarge");
        return Ok(Infrastructure {
            cluster: object("AWSCluster", "v1beta2", name, name, cluster),
            control_plane: template(
                "AWSMachineTemplate",
                "v1beta2",
                name,
                "control-plane",
                machine(
                    aws.cp_instance_type.as_deref().unwrap_or("m6i.large"),
                    "control-plane.cluster-api-provider-aws.sigs.k8s.io",
                ),
            )?,
            workers: per_pool(pools, |pool, p| {
                template(
                    "AWSMachineTemplate",
                    "v1beta2",
                    name,
                    pool,
                    machine(
                        p.instance_type.as_deref().unwrap_or(worker_default),
                        "nodes.cluster-api-provider-aws.sigs.k8s.io",
                    ),
                )
            })?,
            external_cloud_provider: true,
            virtual_ip: None,
        });
    }
    if let Some(px) = &cfg.proxmox {
        let range = px
            .ipv4_pool
            .parse()
            .map_err(|message| ProvisionError::Invalid {
                field: "/spec/provider/config/proxmox/ipv4Pool".into(),
                message,
            })?;
        let mut cluster = json!({
            "controlPlaneEndpoint": {"host": px.control_plane_endpoint, "port": capi::API_SERVER_PORT},
            "ipv4Config": {
                "addresses": [range.addresses],
                "prefix": range.prefix,
                "gateway": px.ipv4_pool.gateway,
            },
            "dnsServers": px.dns_servers,
            "allowedNodes": if px.allowed_nodes.is_empty() { vec![px.source_node.clone()] } else { px.allowed_nodes.clone() },
        });
        if let Some(secret) = infra.and_then(|i| i.credentials_secret_ref.as_ref()) {
            cluster["credentialsRef"] = json!({"name": secret.name, "namespace": secret.namespace});
        }
        let machine = |size: &MachineSize| {
            let mut m = json!({
                "sourceNode": px.source_node,
                "templateID": px.template_id,
                "full": true,
                "format": "qcow2",
                "numSockets": 1,
                "numCores": size.cores,
                "memoryMiB": i64::from(size.memory_gib) * 1024,
                "disks": {"bootVolume": {"disk": "scsi0", "sizeGb": size.disk_gib}},
                "network": {"networkDevices": [{
                    "name": "net0",
                    "bridge": px.bridge.as_deref().unwrap_or("vmbr0"),
                    "model": "virtio",
                    "defaultIPv4": true,
                }]},
            });
            if let Some(storage) = &px.storage {
                m["storage"] = json!(storage);
            }
            m
        };
        let worker = px.worker_machine.as_ref().unwrap_or(&PROXMOX_WORKER);
        return Ok(Infrastructure {
            cluster: object("ProxmoxCluster", "v1alpha2", name, name, cluster),
            control_plane: template(
                "ProxmoxMachineTemplate",
                "v1alpha2",
                name,
                "control-plane",
                machine(
                    px.control_plane_machine
                        .as_ref()
                        .unwrap_or(&PROXMOX_CONTROL_PLANE),
                ),
            )?,
            workers: per_pool(pools, |pool, _| {
                template(
                    "ProxmoxMachineTemplate",
                    "v1alpha2",
                    name,
                    pool,
                    machine(worker),
                )
            })?,
            external_cloud_provider: false,
            virtual_ip: Some(VirtualIp {
                address: px.control_plane_endpoint.clone(),
                interface: px
                    .virtual_ip_network_interface
                    .clone()
                    .unwrap_or_else(|| "eth0".into()),
            }),
        });
    }
    if let Some(os) = &cfg.openstack {
        let cloud = os.cloud_name.as_deref().unwrap_or("openstack");
        let identity = json!({
            "type": "Secret",
            "name": infra
                .and_then(|i| i.credentials_secret_ref.as_ref())
                .map_or_else(|| format!("{}-credentials", spec.provider_ref), |s| s.name.clone()),
            "cloudName": cloud,
        });
        let mut subnet = json!({"cidr": os.node_cidr.as_deref().unwrap_or("10.6.0.0/24")});
        if !os.dns_nameservers.is_empty() {
            subnet["dnsNameservers"] = json!(os.dns_nameservers);
        }
        let cluster = json!({
            "identityRef": identity,
            "externalNetwork": {"filter": {"name": os.external_network}},
            "managedSubnets": [subnet],
            "apiServerLoadBalancer": {"enabled": true},
            "managedSecurityGroups": {"allowAllInClusterTraffic": true},
        });
        let machine = |flavor: &str| {
            let mut m = json!({
                "flavor": flavor,
                "image": {"filter": {"name": os.image_name}},
            });
            if let Some(key) = &os.ssh_key_name {
                m["sshKeyName"] = json!(key);
            }
            m
        };
        let worker_default = os.worker_flavor.as_deref().unwrap_or("m1.xlarge");
        return Ok(Infrastructure {
            cluster: object("OpenStackCluster", "v1beta1", name, name, cluster),
            control_plane: template(
                "OpenStackMachineTemplate",
                "v1beta1",
                name,
                "control-plane",
                machine(os.cp_flavor.as_deref().unwrap_or("m1.large")),
            )?,
            workers: per_pool(pools, |pool, p| {
                template(
                    "OpenStackMachineTemplate",
                    "v1beta1",
                    name,
                    pool,
                    machine(p.instance_type.as_deref().unwrap_or(worker_default)),
                )
            })?,
            external_cloud_provider: true,
            virtual_ip: None,
        });
    }
    if let Some(docker) = &cfg.docker {
        let image = docker
            .custom_image
            .clone()
            .unwrap_or_else(|| format!("kindest/node:{version}"));
        let machine = json!({"customImage": image});
        return Ok(Infrastructure {
            cluster: object("DockerCluster", "v1beta2", name, name, json!({})),
            control_plane: template(
                "DockerMachineTemplate",
                "v1beta2",
                name,
                "control-plane",
                machine.clone(),
            )?,
            workers: per_pool(pools, |pool, _| {
                template(
                    "DockerMachineTemplate",
                    "v1beta2",
                    name,
                    pool,
                    machine.clone(),
                )
            })?,
            external_cloud_provider: false,
            virtual_ip: None,
        });
    }
    Err(ProvisionError::Invalid {
        field: "/spec/provider/config".into(),
        message: "no provider block (aws, proxmox, openstack or docker)".into(),
    })
}

fn per_pool(
    pools: &BTreeMap<String, lattice_schemas::crd::cluster::WorkerPool>,
    mut f: impl FnMut(&str, &lattice_schemas::crd::cluster::WorkerPool) -> Result<Value, ProvisionError>,
) -> Result<BTreeMap<String, Value>, ProvisionError> {
    pools
        .iter()
        .map(|(name, pool)| Ok((name.clone(), f(name, pool)?)))
        .collect()
}

fn object(kind: &str, version: &str, cluster: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("{INFRASTRUCTURE}/{version}"),
        "kind": kind,
        "metadata": metadata(cluster, name),
        "spec": spec,
    })
}

/// A machine template named `<cluster>-<role>-<digest of its spec>`.
fn template(
    kind: &str,
    version: &str,
    cluster: &str,
    role: &str,
    machine: Value,
) -> Result<Value, ProvisionError> {
    let digest = Sha256::digest(machine.to_string().as_bytes());
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let name = checked_name(format!("{cluster}-{role}-{suffix}"))?;
    Ok(object(
        kind,
        version,
        cluster,
        &name,
        json!({"template": {"spec": machine}}),
    ))
}
