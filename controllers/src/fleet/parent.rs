//! The cell in `lattice-operator run --cell-listen` (on the leader): it serves the tunnel,
//! keeps the cluster CA in a Secret (made once, on first start), gives each child
//! LatticeCluster (`spec.parent` naming this cluster) a bootstrap Secret with a one-time
//! token, revokes a deleted child's certificates, writes what each child's agent reports
//! into its LatticeCluster status (`agentConnected`, `health`), and distributes the
//! CedarPolicy objects marked `propagate: true`.
//!
//! What is decided stays in the snapshot: a child's status written here is what the Cedar
//! `Cluster` entity reads (`agentConnected`, `nodesReady`, …) on the next plan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use lattice_engine::World;
use lattice_schemas::crd::cluster::{ClusterHealth, DescendantStatus};
use lattice_schemas::crd::{API_VERSION, Kind};
use lattice_schemas::manifest::Object;
use lattice_tunnel::cell::{AgentStatus, Cell, CellConfig};
use lattice_tunnel::distribution::{DistributedSet, ObjectKey};
use lattice_tunnel::tls::{CellCert, cell_config, https_config};
use lattice_tunnel::{ClusterCa, ClusterIdentity};
use serde_json::json;
use tokio::sync::watch;

pub use super::inputs::{ParentOptions, Published};

use super::absent_ok;
use super::proxy::{CellUpstream, LiveSnapshots};
use super::stored::{BOOTSTRAP_FOR, Bundle, CA_SECRET, StoredCa, bootstrap_secret_name};
use crate::lattice_api::lattice_resource;
use crate::webhook::State;

/// The field manager of what the cell writes (its own, so it never takes the operator's
/// status fields and the operator never takes its).
pub const MANAGER: &str = "lattice-cell";

/// The EndpointSlice that routes the cell's Service `service` to this leader at `ip`: the
/// tunnel's `port`, the API proxy's `proxy_port` and the bootstrap endpoint's
/// `bootstrap_port` when it serves them.
pub fn leader_slice(
    service: &str,
    namespace: &str,
    ip: std::net::IpAddr,
    port: u16,
    proxy_port: Option<u16>,
    bootstrap_port: Option<u16>,
) -> serde_json::Value {
    let mut ports = vec![json!({"name": "grpc", "port": port, "protocol": "TCP"})];
    if let Some(p) = proxy_port {
        ports.push(json!({"name": "proxy", "port": p, "protocol": "TCP"}));
    }
    if let Some(p) = bootstrap_port {
        ports.push(json!({"name": "bootstrap", "port": p, "protocol": "TCP"}));
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-leader"),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "cell.lattice.dev",
            },
        },
        "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        // The Service's port names: a Service without a selector is matched by name.
        "ports": ports,
    })
}

async fn route_to_leader(client: &Client, options: &ParentOptions) -> Result<(), String> {
    let Some((service, ip)) = &options.service else {
        return Ok(());
    };
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"),
        "endpointslices",
    );
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), &options.namespace, &resource);
    let slice = leader_slice(
        service,
        &options.namespace,
        *ip,
        options.listen.port(),
        options.proxy_listen.map(|a| a.port()),
        options.bootstrap_listen.map(|a| a.port()),
    );
    api.patch(
        &format!("{service}-leader"),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&slice),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("cannot route Service {service} to this leader: {e}"))
}

/// How long the cell's own serving certificate lives (renewed in place at two-thirds).
const CELL_CERT_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// A status whose only change is the heartbeat time is written at most this often.
const HEARTBEAT_STATUS_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Publishes the cell CA's certificate (never its key) as the ConfigMap [`CA_CONFIGMAP`]:
/// what this cluster's own agent mounts to trust this cluster's API proxy when it forwards
/// calls for the clusters below.
async fn publish_ca(client: &Client, namespace: &str, ca_pem: &str) -> Result<(), String> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": namespace},
        "data": {"ca.crt": ca_pem},
    });
    api.patch(
        CA_CONFIGMAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("cannot publish the cell CA as ConfigMap {CA_CONFIGMAP}: {e}"))
}

/// The ConfigMap holding the cell CA's certificate.
pub const CA_CONFIGMAP: &str = "lattice-cell-ca";

async fn load_or_create_ca(
    secrets: &Api<Secret>,
    options: &ParentOptions,
) -> Result<ClusterCa, String> {
    let stored = match secrets.get_opt(CA_SECRET).await {
        Err(e) => return Err(format!("cannot read Secret {CA_SECRET}: {e}")),
        Ok(Some(s)) => StoredCa::from_secret(&s)?,
        Ok(None) => {
            let ca = ClusterCa::generate(&options.trust_domain, jiff::Timestamp::now())
                .map_err(|e| format!("cannot make the cluster CA: {e}"))?;
            let stored = StoredCa {
                trust_domain: options.trust_domain.clone(),
                cert_pem: ca.cert_pem(),
                key_pem: ca.key_pem().to_owned(),
                revocations: Default::default(),
            };
            match secrets
                .create(
                    &PostParams::default(),
                    &stored.to_secret(&options.namespace),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(trust_domain = %options.trust_domain, "cluster CA created");
                    return Ok(ca);
                }
                // Another replica made it first: use that one.
                Err(Error::Api(s)) if s.code == 409 => {
                    let s = secrets
                        .get(CA_SECRET)
                        .await
                        .map_err(|e| format!("cannot read Secret {CA_SECRET}: {e}"))?;
                    StoredCa::from_secret(&s)?
                }
                Err(e) => return Err(format!("cannot write Secret {CA_SECRET}: {e}")),
            }
        }
    };
    if stored.trust_domain != options.trust_domain {
        return Err(format!(
            "Secret {CA_SECRET} is for trust domain {:?}, not {:?} (--trust-domain)",
            stored.trust_domain, options.trust_domain
        ));
    }
    ClusterCa::from_pem(
        &stored.trust_domain,
        &stored.cert_pem,
        &stored.key_pem,
        stored.revocations,
    )
    .map_err(|e| format!("Secret {CA_SECRET}: {e}"))
}

fn own_certificate(
    cell: &Cell,
    options: &ParentOptions,
) -> Result<(String, Vec<u8>, jiff::Timestamp), String> {
    let me = ClusterIdentity::new(&options.trust_domain, &options.cluster)
        .map_err(|e| format!("--cluster-name: {e}"))?;
    let (cert, key) = cell
        .own_certificate(&me, &options.addresses, CELL_CERT_LIFETIME)
        .map_err(|e| format!("cannot sign the cell's certificate: {e}"))?;
    Ok((cert.pem.clone(), key.private_key_der(), cert.renew_at()))
}

/// Serves the cell and keeps children, their status and the distributed set current until
/// the returned future is dropped or fails.
pub async fn run(
    client: Client,
    options: ParentOptions,
    mut worlds: watch::Receiver<Option<Arc<Published>>>,
    snapshots: Arc<State>,
) -> Result<(), String> {
    let peer_snapshots = snapshots.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let ca = load_or_create_ca(&secrets, &options).await?;
    let cell = Cell::new(
        ca,
        CellConfig {
            heartbeat: options.heartbeat,
            ..CellConfig::default()
        },
    );
    let (pem, key, mut renew_at) = own_certificate(&cell, &options)?;
    let own = CellCert::new(&pem, key).map_err(|e| e.to_string())?;
    let tls = cell_config(&cell.ca_pem(), own.clone()).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (--cell-listen): {e}", options.listen))?;
    tracing::info!(addr = %options.listen, trust_domain = %options.trust_domain, "cell serving");
    let stop = tokio_util::sync::CancellationToken::new();
    // Stops the server when this future is dropped (leadership lost, shutdown).
    let _stop_on_drop = stop.clone().drop_guard();
    // Callers are named by an OIDCProvider's ID tokens, or else by the API server
    // (TokenReview); the providers follow the world.
    let oidc = Arc::new(lattice_proxy::oidc::Oidc::new(Arc::new(
        lattice_proxy::authn::TokenReviewer::new(client.clone(), Vec::new()),
    )));
    // Where the proxy serves, each provider's status says whether its keys are at hand;
    // fetching them then also spares the first caller the wait.
    let mut _oidc_status = None;
    let proxy = match options.proxy_listen {
        None => None,
        Some(addr) => {
            _oidc_status = Some(AbortOnDrop(tokio::spawn(oidc_status(
                client.clone(),
                oidc.clone(),
            ))));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--proxy-listen): {e}"))?;
            let tls = https_config(own.clone()).map_err(|e| e.to_string())?;
            let proxy = Arc::new(lattice_proxy::Proxy::new(
                oidc.clone(),
                Arc::new(LiveSnapshots(snapshots.clone())),
                Arc::new(CellUpstream::new(
                    cell.clone(),
                    &options.cluster,
                    Arc::new(LiveSnapshots(snapshots)),
                )),
                lattice_proxy::ProxyConfig {
                    trusted_forwarders: options.trusted_forwarders.clone(),
                    ..lattice_proxy::ProxyConfig::default()
                },
            ));
            tracing::info!(%addr, "API proxy serving");
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                proxy.serve(listener, tls, stop.cancelled_owned()).await
            }))
        }
    };
    let bootstrap = match options.bootstrap_listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--bootstrap-listen): {e}"))?;
            let tls = https_config(own.clone()).map_err(|e| e.to_string())?;
            let endpoint = super::bootstrap::Bootstrap {
                cell: cell.clone(),
                secrets: secrets.clone(),
                clusters: Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster)),
            };
            tracing::info!(%addr, "bootstrap endpoint serving");
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                endpoint.serve(listener, tls, stop.cancelled_owned()).await
            }))
        }
    };
    let served = tokio::spawn({
        let cell = cell.clone();
        async move { cell.serve(listener, tls, stop.cancelled_owned()).await }
    });

    let mut routed = false;
    let mut ca_published = false;
    let mut agents = cell.agents().subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: BTreeMap<String, WrittenStatus> = BTreeMap::new();
    let mut revocations = cell.revocations();
    // This cluster's own declarations, for the world they were derived from.
    let mut own_for: (Arc<Published>, Vec<lattice_gates::peering::Declaration>) =
        (Arc::new(Published::default()), Vec::new());
    let mut peering = Peering::new(options.heartbeat * 3);
    let mut provisioning = super::provisioning::Provisioning::default();
    let events = crate::operator::events::Events::new(client.clone(), &options.cluster);
    loop {
        tokio::select! {
            changed = worlds.changed() => if changed.is_err() { return Ok(()) },
            _ = agents.changed() => {}
            _ = tick.tick() => {}
        }
        if served.is_finished() {
            return Err("the cell stopped serving".into());
        }
        if proxy.as_ref().is_some_and(|p| p.is_finished()) {
            return Err("the API proxy stopped serving".into());
        }
        if bootstrap.as_ref().is_some_and(|p| p.is_finished()) {
            return Err("the bootstrap endpoint stopped serving".into());
        }
        if !routed {
            match route_to_leader(&client, &options).await {
                Ok(()) => routed = true,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if !ca_published {
            match publish_ca(&client, &options.namespace, &cell.ca_pem()).await {
                Ok(()) => ca_published = true,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if jiff::Timestamp::now() >= renew_at {
            match own_certificate(&cell, &options).and_then(|(pem, key, at)| {
                own.set(&pem, key).map(|()| at).map_err(|e| e.to_string())
            }) {
                Ok(at) => renew_at = at,
                Err(e) => tracing::error!("cannot renew the cell's certificate: {e}"),
            }
        }
        let Some(published) = worlds.borrow_and_update().clone() else {
            continue;
        };
        let world = &published.world;
        oidc.configure(oidc_providers(world));
        let children = children(world, &options.cluster);
        if let Err(e) = bootstrap_secrets(&secrets, &cell, &options, &children).await {
            tracing::warn!("bootstrap Secrets: {e}");
        }
        let now_revoked = cell.revocations();
        if now_revoked != revocations {
            match store_revocations(&secrets, &now_revoked).await {
                Ok(()) => revocations = now_revoked,
                Err(e) => tracing::error!("cannot store the revocation list: {e}"),
            }
        }
        write_status(&client, &cell, &children, &mut written).await;
        if !Arc::ptr_eq(&published, &own_for.0) {
            own_for = (
                published.clone(),
                super::peering::own_declarations(world, &options.cluster, &options.mesh),
            );
        }
        if let Some(current) = peer_snapshots.current() {
            let snapshot: &lattice_engine::Snapshot = AsRef::as_ref(&*current);
            peering
                .decide(&client, &cell, &options, &children, snapshot, &own_for.1)
                .await;
            provisioning
                .reconcile(&client, &cell, &events, &options, &published, snapshot)
                .await;
        }
        let revision = cell.distribute(distributed(&published, &cell.distributed()));
        tracing::debug!(revision, "distributed set");
    }
}

/// The cross-cluster mesh at this cell: its own declarations and its children's, decided
/// on its snapshot; children get their routes through the tunnel, and this cluster's own
/// are written here.
struct Peering {
    /// Routes are first sent and written this long after the cell starts: children's
    /// reports (kept in memory) are back by then, so a restart withdraws nothing.
    grace_until: tokio::time::Instant,
    written: Option<Vec<lattice_gates::peering::Route>>,
    /// What was last logged as not routed, so a standing refusal is logged once.
    logged: Vec<(String, String, String)>,
    /// What was last written for this cluster's agent to relay up.
    relayed: Option<Vec<u8>>,
    rounds: u64,
    /// The last plan and what it was made from.
    decided: Option<Decided>,
}

/// What a plan was made from. The loop runs every few seconds, and the plan costs a Cedar
/// question per edge, so it is made again only when one of these changed.
struct PlanInputs {
    snapshot: String,
    own: Vec<lattice_gates::peering::Declaration>,
    /// Held, so a report is compared by identity (a changed one is a new `Arc`).
    reports: BTreeMap<String, Arc<lattice_proto::tunnel::v1::MeshReport>>,
    below: BTreeMap<String, String>,
}

impl PlanInputs {
    fn same(&self, other: &PlanInputs) -> bool {
        self.snapshot == other.snapshot
            && self.below == other.below
            && self.own == other.own
            && self.reports.len() == other.reports.len()
            && self
                .reports
                .iter()
                .zip(&other.reports)
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }
}

struct Decided {
    inputs: PlanInputs,
    declarations: Vec<lattice_gates::peering::Declaration>,
    plan: lattice_gates::peering::PeeringPlan,
    /// The declarations from below to relay up, encoded.
    up: Vec<u8>,
}

impl Peering {
    fn new(grace: Duration) -> Peering {
        Peering {
            grace_until: tokio::time::Instant::now() + grace,
            written: None,
            logged: Vec::new(),
            relayed: None,
            rounds: 0,
            decided: None,
        }
    }

    async fn decide(
        &mut self,
        client: &Client,
        cell: &Cell,
        options: &ParentOptions,
        children: &BTreeMap<String, Option<ClusterHealthStatus>>,
        snapshot: &lattice_engine::Snapshot,
        own: &[lattice_gates::peering::Declaration],
    ) {
        use super::peering::{
            RELAY_DOWN, RELAY_UP, from_report, from_routes, read_relay, relayed_up, to_report,
            to_routes, unrouted, write_relay, write_routes,
        };
        use prost::Message;
        let topology = lattice_gates::peering::Topology {
            own: options.cluster.clone(),
            below: children
                .iter()
                .flat_map(|(child, status)| {
                    let below = status
                        .iter()
                        .flat_map(|s| s.descendants.iter())
                        .map(|d| (d.name.clone(), child.clone()));
                    std::iter::once((child.clone(), child.clone())).chain(below)
                })
                .collect(),
        };
        let inputs = PlanInputs {
            snapshot: snapshot.digest().to_owned(),
            own: own.to_vec(),
            reports: cell.agents().mesh_reports(),
            below: topology.below.clone(),
        };
        if self
            .decided
            .as_ref()
            .is_none_or(|d| !d.inputs.same(&inputs))
        {
            let mut declarations = inputs.own.clone();
            for report in inputs.reports.values() {
                declarations.extend(from_report(report));
            }
            let plan = lattice_gates::peering::plan(snapshot, &topology, &declarations);
            // Declarations from below whose edges reach above this cluster go up through
            // its own agent (when it has a parent); their nearest common ancestor decides.
            let up = to_report(&relayed_up(&options.cluster, &plan, &declarations)).encode_to_vec();
            let not_routed = unrouted(&plan);
            if not_routed != self.logged {
                for (caller, callee, why) in &not_routed {
                    tracing::info!(%caller, %callee, %why, "cross-cluster edge not routed");
                }
                self.logged = not_routed;
            }
            self.decided = Some(Decided {
                inputs,
                declarations,
                plan,
                up,
            });
        }
        let Some(decided) = &self.decided else {
            return;
        };
        if self.relayed.as_ref() != Some(&decided.up) {
            let up = decided.up.clone();
            match write_relay(client, &options.namespace, RELAY_UP, up.clone(), MANAGER).await {
                Ok(()) => self.relayed = Some(up),
                Err(e) => tracing::warn!("cross-cluster relay: {e}"),
            }
        }
        // Children's reports are back within the grace after a restart; routing before it
        // would withdraw what they hold.
        if tokio::time::Instant::now() < self.grace_until {
            return;
        }
        let mut routes = decided.plan.routes(&decided.declarations);
        // Routes an ancestor decided for clusters below, relayed down by this cluster's
        // agent.
        match read_relay(client, &options.namespace, RELAY_DOWN).await {
            Ok(Some(bytes)) => {
                match lattice_proto::tunnel::v1::MeshRoutes::decode(bytes.as_slice()) {
                    Ok(relayed) => {
                        for r in from_routes(&relayed) {
                            routes.entry(r.side.cluster.clone()).or_default().push(r);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cross-cluster relay: routes from above do not decode: {e}")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cross-cluster relay: {e}"),
        }
        let own_routes = routes.remove(&options.cluster).unwrap_or_default();
        // Each child is sent the routes of its whole subtree (decided here or relayed from
        // above); its agent relays further down what is not its own.
        let mut by_child: BTreeMap<String, Vec<lattice_gates::peering::Route>> = BTreeMap::new();
        for (cluster, r) in routes {
            if let Some(child) = topology.below.get(&cluster) {
                by_child.entry(child.clone()).or_default().extend(r);
            }
        }
        cell.set_routes(
            by_child
                .into_iter()
                .map(|(child, mut r)| {
                    r.sort();
                    (child, to_routes(&r))
                })
                .collect(),
        );
        self.rounds += 1;
        // Written on a change, and again every dozen rounds, so a removed object returns.
        if self.written.as_ref() != Some(&own_routes) || self.rounds.is_multiple_of(12) {
            match write_routes(client, &options.cluster, &own_routes, &options.mesh.gateway).await {
                Ok(n) => {
                    tracing::debug!(objects = n, "own cross-cluster routes written");
                    self.written = Some(own_routes);
                }
                Err(e) => tracing::warn!("own cross-cluster routes: {e}"),
            }
        }
    }
}

/// The children of `cluster`: LatticeClusters whose `spec.parent` names it, with their
/// status as the snapshot holds it.
fn children(world: &World, cluster: &str) -> BTreeMap<String, Option<ClusterHealthStatus>> {
    world
        .objects()
        .filter_map(|(_, o)| match o {
            Object::Cluster(c) if c.spec.parent.as_deref() == Some(cluster) => {
                let st = c.status.as_ref().map(|s| ClusterHealthStatus {
                    agent_connected: s.agent_connected.unwrap_or(false),
                    health: s.health.clone(),
                    descendants: s.descendants.clone(),
                });
                Some((o.name().to_owned(), st))
            }
            _ => None,
        })
        .collect()
}

/// Aborts a task when dropped (the cell's loop ending ends its helpers).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the providers' keys are checked and their status written.
const OIDC_STATUS_EVERY: Duration = Duration::from_secs(5);

/// Writes each OIDCProvider's status as the proxy's authenticator holds it: `Ready` with
/// how many keys, or `Failed` with why. Only a change is written.
async fn oidc_status(client: Client, oidc: Arc<lattice_proxy::oidc::Oidc>) {
    let api: Api<DynamicObject> = Api::all_with(client, &lattice_resource(Kind::OIDCProvider));
    let mut written: BTreeMap<String, lattice_proxy::oidc::IssuerState> = BTreeMap::new();
    let mut tick = tokio::time::interval(OIDC_STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let states = oidc.states().await;
        written.retain(|name, _| states.contains_key(name));
        for (name, state) in states {
            if written.get(&name) == Some(&state) {
                continue;
            }
            let (phase, status, reason) = if state.ready {
                ("Ready", "True", "KeysFetched")
            } else {
                ("Failed", "False", "KeysUnavailable")
            };
            let body = json!({
                "apiVersion": API_VERSION,
                "kind": Kind::OIDCProvider.name(),
                "status": {
                    "phase": phase,
                    "conditions": [{
                        "type": "Ready",
                        "status": status,
                        "reason": reason,
                        "message": state.message,
                        "lastTransitionTime": jiff::Timestamp::now().to_string(),
                    }],
                },
            });
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => {
                    written.insert(name, state);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(provider = %name, "cannot write the OIDCProvider's status: {e}")
                }
            }
        }
    }
}

/// The world's OIDCProviders, as the proxy's authenticator takes them.
fn oidc_providers(world: &World) -> Vec<lattice_proxy::oidc::Configured> {
    world
        .objects()
        .filter_map(|(_, o)| match o {
            Object::OidcProvider(p) => Some(lattice_proxy::oidc::Configured {
                name: o.name().to_owned(),
                inherited: lattice_gates::admission::is_inherited(o),
                spec: p.spec.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// A child's tunnel status as its LatticeCluster holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClusterHealthStatus {
    agent_connected: bool,
    health: Option<ClusterHealth>,
    descendants: Vec<DescendantStatus>,
}

/// The label that marks a TrustPolicy or SecretProvider for distribution (a CedarPolicy
/// says `spec.propagate: true`, and an OIDCProvider `spec.propagate`, true unless set).
pub const PROPAGATE: &str = "lattice.dev/propagate";

/// What the cell distributes: every CedarPolicy marked `propagate: true`, as its name,
/// namespace, labels and spec. A policy whose current spec was refused (not admitted, or
/// invalid) keeps the version distributed before, as it stays in force here: a bad edit
/// never withdraws a forbid from the children. Beside them, every TrustPolicy and
/// SecretProvider labelled [`PROPAGATE`] `"true"`, and every OIDCProvider with
/// `propagate`, as it is.
pub fn distributed(published: &Published, before: &DistributedSet) -> BTreeMap<ObjectKey, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (_, o) in published.world.objects() {
        if matches!(
            o,
            Object::TrustPolicy(_) | Object::SecretProvider(_) | Object::OidcProvider(_)
        ) {
            let meta = o.meta();
            let marked = match o {
                // The kind's own field, as upstream has it.
                Object::OidcProvider(p) => p.spec.propagate,
                _ => meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(PROPAGATE))
                    .is_some_and(|v| v == "true"),
            };
            // What a child inherits it holds as its parent's: passed on again, further down.
            if !marked {
                continue;
            }
            let spec = match o {
                Object::TrustPolicy(t) => serde_json::to_value(&t.spec),
                Object::SecretProvider(sp) => serde_json::to_value(&sp.spec),
                Object::OidcProvider(p) => serde_json::to_value(&p.spec),
                _ => continue,
            };
            let (Ok(spec), Some(kind)) = (spec, o.kind()) else {
                continue;
            };
            let key = ObjectKey {
                kind: kind.name().to_owned(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: o.name().to_owned(),
            };
            let body = json!({
                "metadata": {
                    "name": key.name,
                    "namespace": meta.namespace,
                    "labels": meta.labels,
                },
                "spec": spec,
            });
            if let Ok(bytes) = serde_json::to_vec(&body) {
                out.insert(key, bytes);
            }
            continue;
        }
        let Object::CedarPolicy(p) = o else { continue };
        let key = ObjectKey {
            kind: Kind::CedarPolicy.name().to_owned(),
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: o.name().to_owned(),
        };
        let in_force = published
            .admitted
            .contains(&(key.namespace.clone(), key.name.clone()));
        if !in_force {
            if let Some(body) = before.objects().get(&key) {
                out.insert(key, body.clone());
            }
            continue;
        }
        if p.spec.propagate != Some(true) {
            continue;
        }
        let body = json!({
            "metadata": {
                "name": key.name,
                "namespace": key.namespace,
                "labels": p.metadata.labels,
            },
            "spec": p.spec,
        });
        if let Ok(bytes) = serde_json::to_vec(&body) {
            out.insert(key, bytes);
        }
    }
    out
}

async fn bootstrap_secrets(
    secrets: &Api<Secret>,
    cell: &Cell,
    options: &ParentOptions,
    children: &BTreeMap<String, Option<ClusterHealthStatus>>,
) -> Result<(), String> {
    let listed = secrets
        .list(&ListParams::default().labels(BOOTSTRAP_FOR))
        .await
        .map_err(|e| format!("cannot list bootstrap Secrets: {e}"))?;
    let mut have = BTreeMap::new();
    for s in listed.items {
        let name = s.metadata.name.clone().unwrap_or_default();
        match Bundle::from_secret(&s) {
            Ok(b) if name == bootstrap_secret_name(&b.cluster) => {
                have.insert(b.cluster.clone(), b);
            }
            Ok(_) => {
                tracing::warn!(secret = %name, "a bootstrap Secret under another name; ignored")
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    for (child, bundle) in &have {
        if !children.contains_key(child) {
            // The LatticeCluster is gone: so are its token, its certificates and stream.
            cell.revoke_cluster(child);
            match absent_ok(
                secrets
                    .delete(&bootstrap_secret_name(child), &DeleteParams::default())
                    .await,
            ) {
                Ok(()) => {
                    tracing::info!(cluster = %child, "child removed; its certificates are revoked");
                }
                Err(e) => {
                    tracing::warn!(cluster = %child, "cannot delete its bootstrap Secret: {e}")
                }
            }
            continue;
        }
        let Some(token) = &bundle.token else { continue };
        match cell.token_state(child) {
            // Used: the token leaves the Secret, which keeps what a reinstall needs to
            // know (endpoint, CA).
            (true, _) => {
                let patch = json!({"data": {"token": null}});
                secrets
                    .patch(
                        &bootstrap_secret_name(child),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|e| format!("cannot clear {child}'s used token: {e}"))?;
                tracing::info!(cluster = %child, "bootstrap token used; cleared");
            }
            // Minted before a restart: take it back.
            (false, false) => cell.restore_token(child, token, bundle.expires),
            (false, true) => {}
        }
    }
    let port = options.advertised_port.unwrap_or(options.listen.port());
    let host = options
        .addresses
        .first()
        .ok_or("the cell has no --cell-address for children to dial")?;
    for child in children.keys().filter(|c| !have.contains_key(*c)) {
        let token = cell
            .mint_token(child, options.token_ttl)
            .map_err(|e| e.to_string())?;
        let bundle = Bundle {
            cluster: child.clone(),
            parent: options.cluster.clone(),
            trust_domain: options.trust_domain.clone(),
            endpoint: format!("{host}:{port}"),
            server_name: host.clone(),
            ca_pem: cell.ca_pem(),
            token: Some(token.secret().to_owned()),
            expires: jiff::Timestamp::now()
                .checked_add(options.token_ttl)
                .unwrap_or_else(|_| jiff::Timestamp::now()),
        };
        let secret = bundle.to_secret(&bootstrap_secret_name(child), &options.namespace);
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(cluster = %child, "bootstrap Secret written"),
            Err(e) => tracing::warn!(cluster = %child, "cannot write its bootstrap Secret: {e}"),
        }
    }
    Ok(())
}

async fn store_revocations(
    secrets: &Api<Secret>,
    revocations: &lattice_tunnel::Revocations,
) -> Result<(), String> {
    let patch = json!({"stringData": {"revoked": revocations.to_text()}});
    secrets
        .patch(CA_SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn health_of(agent: &AgentStatus) -> ClusterHealth {
    ClusterHealth {
        nodes_ready: i64::from(agent.health.nodes_ready),
        nodes_total: i64::from(agent.health.nodes_total),
        control_plane_ready: agent.health.control_plane_ready,
        agent_version: agent.health.agent_version.clone(),
        kubernetes_version: agent.health.kubernetes_version.clone(),
        last_heartbeat_time: Some(agent.last_heartbeat.to_string()),
    }
}

fn without_time(h: &ClusterHealth) -> ClusterHealth {
    ClusterHealth {
        last_heartbeat_time: None,
        ..h.clone()
    }
}

/// What a child's agent reports below it, as its LatticeCluster status holds it.
fn descendants_of(agent: &AgentStatus) -> Vec<DescendantStatus> {
    agent
        .health
        .descendants
        .iter()
        .map(|d| DescendantStatus {
            name: d.name.clone(),
            parent: d.parent.clone(),
            environment: d.environment.clone(),
            phase: d.phase.clone(),
            ready: d.ready,
            agent_connected: d.agent_connected,
            health: ClusterHealth {
                nodes_ready: i64::from(d.nodes_ready),
                nodes_total: i64::from(d.nodes_total),
                control_plane_ready: d.control_plane_ready,
                agent_version: d.agent_version.clone(),
                kubernetes_version: d.kubernetes_version.clone(),
                last_heartbeat_time: None,
            },
        })
        .collect()
}

/// The tunnel status last written into a child's LatticeCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WrittenStatus {
    connected: bool,
    health: ClusterHealth,
    descendants: Vec<DescendantStatus>,
}

async fn write_status(
    client: &Client,
    cell: &Cell,
    children: &BTreeMap<String, Option<ClusterHealthStatus>>,
    written: &mut BTreeMap<String, WrittenStatus>,
) {
    let agents = cell.agents().snapshot();
    let api: Api<kube::api::DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
    written.retain(|c, _| children.contains_key(c));
    for (child, current) in children {
        let agent = agents.get(child);
        let connected = agent.is_some();
        let health = agent.map(health_of).or_else(|| {
            current
                .as_ref()
                .and_then(|c| c.health.clone())
                .or_else(|| written.get(child).map(|w| w.health.clone()))
        });
        let health = health.unwrap_or_default();
        // A disconnected child's last report stays: its subtree is unreachable (the cell
        // routes nothing through a child that is not connected), not gone.
        let descendants = agent.map(descendants_of).unwrap_or_else(|| {
            current
                .as_ref()
                .map(|c| c.descendants.clone())
                .or_else(|| written.get(child).map(|w| w.descendants.clone()))
                .unwrap_or_default()
        });
        // Skip what the snapshot (or the last write) already holds, unless only the
        // heartbeat time moved and the time written is getting old.
        // The snapshot drops the heartbeat time, so freshness is judged on the last write.
        let fresh = written.get(child).is_some_and(|w| {
            w.connected == connected
                && without_time(&w.health) == without_time(&health)
                && w.descendants == descendants
                && (!connected
                    || w.health.last_heartbeat_time.as_deref().is_some_and(|t| {
                        t.parse::<jiff::Timestamp>().is_ok_and(|t| {
                            jiff::Timestamp::now().duration_since(t) < HEARTBEAT_STATUS_EVERY
                        })
                    }))
        });
        let held_already = !connected
            && current.as_ref().is_some_and(|c| {
                !c.agent_connected
                    && c.health.as_ref().map(without_time) == Some(without_time(&health))
                    && c.descendants == descendants
            });
        if fresh || held_already {
            continue;
        }
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": Kind::LatticeCluster.name(),
            "status": {"agentConnected": connected, "health": health, "descendants": descendants},
        });
        match absent_ok(
            api.patch_status(
                child,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await,
        ) {
            Ok(()) => {
                written.insert(
                    child.clone(),
                    WrittenStatus {
                        connected,
                        health,
                        descendants,
                    },
                );
            }
            Err(e) => tracing::warn!(cluster = %child, "cannot write its status: {e}"),
        }
    }
}
