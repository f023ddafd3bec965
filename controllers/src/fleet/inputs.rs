//! What the parent's side of the fleet runs on: how the cell is configured
//! ([`ParentOptions`]) and what it reads from each plan ([`Published`]).
//!
//! Apart from [`super::parent`], which runs the cell, so that the controllers the cell
//! drives (provisioning, and through it decommission) read these without depending back on
//! the cell.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use lattice_engine::World;

/// How the cell runs.
#[derive(Clone, Debug)]
pub struct ParentOptions {
    /// This cluster's LatticeCluster name: children name it in `spec.parent`.
    pub cluster: String,
    /// Where the CA and bootstrap Secrets live.
    pub namespace: String,
    pub listen: SocketAddr,
    /// Names (DNS or IP) children dial the cell at; the first goes into bootstrap Secrets.
    pub addresses: Vec<String>,
    /// The port children dial (the cell Service's), when it is not the listening one.
    pub advertised_port: Option<u16>,
    pub trust_domain: String,
    pub token_ttl: jiff::SignedDuration,
    pub heartbeat: Duration,
    /// Route this Service (one without a selector) to the leader: the cell writes its
    /// EndpointSlice with `pod_ip`, so children never land on a standby replica.
    pub service: Option<(String, std::net::IpAddr)>,
    /// Serve the Kubernetes API proxy here: HTTPS with the cell's certificate (clients
    /// trust the cluster CA), `/clusters/<name>/…` for this cluster and its children.
    pub proxy_listen: Option<SocketAddr>,
    /// Serve the bootstrap endpoint here (HTTPS with the cell's certificate).
    pub bootstrap_listen: Option<SocketAddr>,
    /// Users who may name the caller they forward for through the proxy (the agents of
    /// the hops above).
    pub trusted_forwarders: Vec<String>,
    /// How this cluster takes part in the cross-cluster mesh.
    pub mesh: super::peering::MeshOptions,
}

/// What the cell reads from each plan.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub world: World,
    /// CedarPolicy objects (namespace, name) whose current spec is in force: only these
    /// are distributed as they are now.
    pub admitted: BTreeSet<(String, String)>,
}
