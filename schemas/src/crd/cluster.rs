//! `LatticeCluster`: a cluster Lattice provisions, pivots and reaches through its agent.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;

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
    /// Asks for scheduled backups. The cluster the platform runs in has them once a
    /// LatticeClusterBackup schedules every namespace (Velero); Cedar's `Cluster.backups`
    /// reads that, not this request.
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
    pub aws: Option<Box<AwsConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<Box<ProxmoxConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack: Option<Box<OpenStackConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerConfig>,
}

impl ProviderConfig {
    /// The provider's name (`aws`, `proxmox`, `openstack`, `docker`) when exactly one block
    /// is set.
    pub fn name(&self) -> Option<&'static str> {
        let set: Vec<&'static str> = [
            ("aws", self.aws.is_some()),
            ("proxmox", self.proxmox.is_some()),
            ("openstack", self.openstack.is_some()),
            ("docker", self.docker.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        match set.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
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

/// Proxmox VE settings (Cluster API provider CAPMOX). Field names follow upstream Lattice.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxmoxConfig {
    /// The API server's address (kube-vip announces it on the control-plane nodes).
    pub control_plane_endpoint: String,
    /// The addresses the nodes take.
    pub ipv4_pool: Ipv4Pool,
    /// The Proxmox node holding the VM template.
    pub source_node: String,
    /// The VM template to clone.
    #[schemars(range(min = 100))]
    pub template_id: i64,
    /// The bridge the nodes' first NIC attaches to (default `vmbr0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[schemars(length(min = 1))]
    pub dns_servers: Vec<String>,
    /// Proxmox nodes VMs may be placed on (default: the source node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_nodes: Vec<String>,
    /// Storage for full clones (default: the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// The interface kube-vip announces the endpoint on (default `eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_ip_network_interface: Option<String>,
    /// Keys for the nodes' default user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Addresses for `LoadBalancer` Services in the new cluster (its platform components'
    /// setting; no Cluster API object carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_cidr: Option<String>,
    /// Control-plane machine size (default 4 cores, 8 GiB, 50 GB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_machine: Option<MachineSize>,
    /// Worker machine size (default 4 cores, 16 GiB, 100 GB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_machine: Option<MachineSize>,
}

/// A range of node addresses and their gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ipv4Pool {
    /// `FIRST-LAST/PREFIX` (`10.20.0.101-120/24` or `10.20.0.101-10.20.0.120/24`), or a
    /// CIDR.
    pub range: String,
    pub gateway: String,
}

/// The size of a virtual machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineSize {
    #[schemars(range(min = 1))]
    pub cores: i32,
    #[schemars(range(min = 1))]
    pub memory_gib: i32,
    #[schemars(range(min = 5))]
    pub disk_gib: i32,
}

/// OpenStack settings (Cluster API provider CAPO). Field names follow upstream Lattice.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenStackConfig {
    /// The external network's name (floating IPs and the API load balancer).
    pub external_network: String,
    /// The image nodes boot.
    pub image_name: String,
    /// The cloud's entry in the `clouds.yaml` of the InfraProvider's credentials Secret
    /// (default `openstack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_nameservers: Vec<String>,
    /// The nodes' subnet (default `10.6.0.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cidr: Option<String>,
    /// Control-plane flavor (default `m1.large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cp_flavor: Option<String>,
    /// Worker flavor where a pool names no `instanceType` (default `m1.xlarge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_flavor: Option<String>,
}

/// Docker settings (Cluster API provider CAPD, for development and tests).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    /// Addresses for `LoadBalancer` Services in the new cluster (its platform components'
    /// setting; no Cluster API object carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_cidr: Option<String>,
    /// The node image (default `kindest/node:v<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_image: Option<String>,
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

/// A platform component the cluster runs, and the spec field that asks for it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub name: String,
    /// The spec field that asks for it (`always` for what every cluster runs).
    pub because: String,
}

/// One lifecycle decision about a cluster: Cedar's answer and its evidence.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleDecisionStatus {
    /// `Provision`, `Pivot`, `Unpivot` or `Decommission`.
    pub action: String,
    /// The cluster that asked (the one that manages this one).
    pub principal: String,
    pub allowed: bool,
    /// The deciding policies' ids (none on a default deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The deciding policies' advice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
    /// Why the question could not be answered, or the policies that erred (either denies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The snapshot the decision was first taken on (not rewritten while the decision
    /// stays the same).
    #[serde(default)]
    pub snapshot: String,
    /// When it was first taken (RFC 3339).
    #[serde(default)]
    pub time: String,
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
    /// The platform components the spec asks the cluster to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// The last lifecycle decision of each action (`Provision`, `Pivot`, `Unpivot`,
    /// `Decommission`) taken about this cluster, with what decided it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<LifecycleDecisionStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A node address range as Cluster API's IPAM reads it: `FIRST-LAST` or a CIDR, with the
/// prefix length of the nodes' network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Range {
    /// `10.20.0.101-10.20.0.120`, or `10.20.0.0/24` for a whole CIDR.
    pub addresses: String,
    pub prefix: u8,
}

impl Ipv4Pool {
    /// The pool's addresses and prefix, or what is wrong with `range` or `gateway`:
    /// addresses that are not IPv4, a range that runs backwards, a prefix above 32, or a
    /// gateway outside the nodes' network.
    pub fn parse(&self) -> Result<Ipv4Range, String> {
        use std::net::Ipv4Addr;
        let (span, prefix) = self
            .range
            .split_once('/')
            .ok_or_else(|| format!("range {:?} has no `/PREFIX`", self.range))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("range {:?}: the prefix is not 0 to 32", self.range))?;
        let ip = |text: &str| -> Result<Ipv4Addr, String> {
            text.parse()
                .map_err(|_| format!("range {:?}: {text:?} is not an IPv4 address", self.range))
        };
        let gateway: Ipv4Addr = self
            .gateway
            .parse()
            .map_err(|_| format!("gateway {:?} is not an IPv4 address", self.gateway))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let same_network = |a: Ipv4Addr| u32::from(a) & mask == u32::from(gateway) & mask;
        let (first, last, addresses) = match span.split_once('-') {
            None => {
                let base = ip(span)?;
                let first = Ipv4Addr::from(u32::from(base) & mask);
                let last = Ipv4Addr::from(u32::from(base) | !mask);
                (first, last, format!("{first}/{prefix}"))
            }
            Some((first, last)) => {
                let first = ip(first)?;
                // `10.20.0.101-120`: the last address's leading octets are the first's.
                let last = if last.contains('.') {
                    ip(last)?
                } else {
                    let octet: u8 = last.parse().map_err(|_| {
                        format!(
                            "range {:?}: {last:?} is not an address or an octet",
                            self.range
                        )
                    })?;
                    let [a, b, c, _] = first.octets();
                    Ipv4Addr::new(a, b, c, octet)
                };
                if u32::from(last) < u32::from(first) {
                    return Err(format!(
                        "range {:?} runs backwards ({first} is after {last})",
                        self.range
                    ));
                }
                (first, last, format!("{first}-{last}"))
            }
        };
        if !same_network(first) || !same_network(last) {
            return Err(format!(
                "range {:?} is not in the gateway {gateway}'s network /{prefix}",
                self.range
            ));
        }
        Ok(Ipv4Range { addresses, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(range: &str, gateway: &str) -> Result<Ipv4Range, String> {
        Ipv4Pool {
            range: range.into(),
            gateway: gateway.into(),
        }
        .parse()
    }

    #[test]
    fn ranges_read_as_cluster_api_writes_them() {
        assert_eq!(
            pool("10.20.0.101-120/24", "10.20.0.1").unwrap(),
            Ipv4Range {
                addresses: "10.20.0.101-10.20.0.120".into(),
                prefix: 24
            }
        );
        assert_eq!(
            pool("10.20.0.101-10.20.0.120/24", "10.20.0.1")
                .unwrap()
                .addresses,
            "10.20.0.101-10.20.0.120"
        );
        assert_eq!(
            pool("10.20.0.0/25", "10.20.0.1").unwrap().addresses,
            "10.20.0.0/25"
        );
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for (range, gateway, wanted) in [
            ("10.20.0.101-120", "10.20.0.1", "no `/PREFIX`"),
            ("10.20.0.101-120/33", "10.20.0.1", "prefix"),
            ("10.20.0.120-101/24", "10.20.0.1", "backwards"),
            ("10.20.0.101-999/24", "10.20.0.1", "octet"),
            ("10.20.0.101-120/24", "10.21.0.1", "not in the gateway"),
            ("10.20.0.101-120/24", "gateway", "not an IPv4"),
            ("ten-120/24", "10.20.0.1", "not an IPv4"),
        ] {
            let e = pool(range, gateway).unwrap_err();
            assert!(e.contains(wanted), "{range} via {gateway}: {e}");
        }
    }
}
