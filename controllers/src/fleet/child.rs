//! `lattice-operator agent`: a child's end of the tunnel, in its own process beside
//! `lattice-operator run`.
//!
//! It reads the bootstrap bundle (`lattice-bootstrap`, copied from the parent by whoever
//! installs the child), bootstraps once (its key is generated here and kept in
//! `lattice-agent-credentials`, never sent), and holds the tunnel: heartbeats carry the
//! child's health as its own API server reports it, and the parent's distributed set is
//! written into the child as CedarPolicy objects labelled [`INHERITED_FROM`] the parent.
//! Objects the parent withdraws are deleted. While the parent is unreachable the objects
//! stay, so the child keeps deciding on its last distributed set.
//!
//! The operator loads a CedarPolicy only with a valid admission stamp: with
//! `--admission-key` (the key the child's webhook and operator share) the agent stamps what
//! it writes, as the agent's ServiceAccount.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use lattice_gates::admission::Requester;
use lattice_schemas::crd::policy::CedarPolicySpec;
use lattice_schemas::crd::{API_VERSION, Kind};
use lattice_schemas::manifest::Object;
use lattice_tunnel::agent::{self, Agent, AgentConfig, Credentials, HealthProbe};
use lattice_tunnel::distribution::DistributedSet;
use lattice_tunnel::session::{Descendant, Health};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::stored::{
    AGENT_SECRET, Bundle, CHILD_BOOTSTRAP_SECRET, credentials_from_secret, credentials_to_secret,
};
use super::{INHERITED_FROM, absent_ok};
use crate::lattice_api::lattice_resource;
use crate::webhook::stamp::{ANNOTATION, AdmissionKey};

/// The kinds a parent distributes and the agent writes.
pub const INHERITED_KINDS: [Kind; 4] = [
    Kind::CedarPolicy,
    Kind::TrustPolicy,
    Kind::SecretProvider,
    Kind::OIDCProvider,
];

/// The field manager of what the agent writes.
pub const MANAGER: &str = "lattice-agent";

/// How the agent runs.
pub struct ChildOptions {
    /// Where the bootstrap bundle and credentials Secrets live.
    pub namespace: String,
    /// Stamps inherited CedarPolicy objects so the child's operator loads them.
    pub admission: Option<Arc<AdmissionKey>>,
    /// Who the stamp names as the writer (the agent's ServiceAccount).
    pub writer: String,
    /// This cluster's own API proxy, where calls for the clusters below it go (a cluster
    /// that is both a child and a parent). Without it such calls are refused.
    pub local_proxy: Option<super::proxy::LocalProxy>,
    /// This cluster's east-west gateway (`host:port`): where workloads in other clusters
    /// reach its own. Without it the agent reports no cross-cluster declarations.
    pub mesh_gateway: Option<String>,
    /// This cluster's workload trust domain; `<cluster>.<hierarchy trust domain>` when
    /// unset.
    pub mesh_trust_domain: Option<String>,
    /// How often the agent reads its cluster's cross-cluster declarations.
    pub mesh_every: Duration,
}

/// Reads the child's health from its own API server, and the clusters below it from its
/// LatticeClusters: its children, and what their agents report below them.
pub struct ApiHealth {
    client: Client,
    cluster: String,
}

/// The clusters below `cluster` that its LatticeClusters show: each child (`spec.parent`
/// is `cluster`) with its status, then what that child reported below itself. Parents
/// come before their children, as the tunnel requires; a name seen twice is kept once.
/// What the parent's cell would refuse is not sent, so one odd object cannot cut the
/// tunnel: a name that is not a cluster name (with everything below it), a fact that is
/// too long or not printable (sent empty), and entries past the tunnel's limit.
pub fn descendants_in(
    cluster: &str,
    clusters: &[lattice_schemas::crd::cluster::LatticeCluster],
) -> Vec<Descendant> {
    use lattice_tunnel::identity::is_cluster_name;
    use lattice_tunnel::session::{MAX_DESCENDANTS, MAX_FACT_BYTES, MAX_VERSION_BYTES};
    let fact = |v: String, max: usize| {
        if v.len() > max || v.chars().any(char::is_control) {
            String::new()
        } else {
            v
        }
    };
    let describe = |name: String,
                    parent: String,
                    environment: String,
                    phase: String,
                    ready: bool,
                    agent_connected: bool,
                    h: lattice_schemas::crd::cluster::ClusterHealth| {
        let nodes_total = u32::try_from(h.nodes_total).unwrap_or(0);
        Descendant {
            name,
            parent,
            environment: fact(environment, MAX_FACT_BYTES),
            phase: fact(phase, MAX_FACT_BYTES),
            ready,
            agent_connected,
            nodes_ready: u32::try_from(h.nodes_ready).unwrap_or(0).min(nodes_total),
            nodes_total,
            control_plane_ready: h.control_plane_ready,
            agent_version: fact(h.agent_version, MAX_VERSION_BYTES),
            kubernetes_version: fact(h.kubernetes_version, MAX_VERSION_BYTES),
        }
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut children: Vec<_> = clusters
        .iter()
        .filter(|c| c.spec.parent.as_deref() == Some(cluster))
        .collect();
    children.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for c in children {
        let Some(name) = c.metadata.name.clone() else {
            continue;
        };
        if name == cluster || !is_cluster_name(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let st = c.status.clone().unwrap_or_default();
        out.push(describe(
            name,
            cluster.to_owned(),
            c.spec.environment.clone().unwrap_or_default(),
            st.phase.clone().unwrap_or_default(),
            st.ready.unwrap_or(false),
            st.agent_connected.unwrap_or(false),
            st.health.clone().unwrap_or_default(),
        ));
        // The child's own report keeps its order (parents first); an entry whose parent
        // is not already listed is dropped rather than sent as a broken tree.
        for d in st.descendants {
            if d.name == cluster
                || !is_cluster_name(&d.name)
                || !seen.contains(&d.parent)
                || !seen.insert(d.name.clone())
            {
                continue;
            }
            out.push(describe(
                d.name,
                d.parent,
                d.environment,
                d.phase,
                d.ready,
                d.agent_connected,
                d.health,
            ));
        }
    }
    // Parents come first, so the first entries are still a tree.
    out.truncate(MAX_DESCENDANTS);
    out
}

impl ApiHealth {
    pub fn new(client: Client, cluster: &str) -> ApiHealth {
        ApiHealth {
            client,
            cluster: cluster.to_owned(),
        }
    }

    async fn descendants(&self) -> Vec<Descendant> {
        let api: Api<lattice_schemas::crd::cluster::LatticeCluster> = Api::all(self.client.clone());
        match api.list(&ListParams::default().match_any()).await {
            Ok(list) => descendants_in(&self.cluster, &list.items),
            // A cluster without the CRD (or the right) has nothing below it to report.
            Err(e) => {
                tracing::debug!("cannot list LatticeClusters for descendants: {e}");
                Vec::new()
            }
        }
    }

    async fn read(&self) -> Health {
        let version = self
            .client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_default();
        let ready = {
            let request = http::Request::get("/readyz").body(Vec::new());
            match request {
                Ok(r) => self
                    .client
                    .request_text(r)
                    .await
                    .is_ok_and(|t| t.trim() == "ok"),
                Err(_) => false,
            }
        };
        // Served from the API server's watch cache (any resource version): a heartbeat's
        // node count need not reach etcd, however many nodes the child has.
        let (nodes_ready, nodes_total) = match Api::<Node>::all(self.client.clone())
            .list(&ListParams::default().match_any())
            .await
        {
            Ok(nodes) => {
                let ready = nodes
                    .items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                (ready, nodes.items.len())
            }
            Err(e) => {
                tracing::warn!("cannot list nodes for health: {e}");
                (0, 0)
            }
        };
        Health {
            nodes_ready: u32::try_from(nodes_ready).unwrap_or(u32::MAX),
            nodes_total: u32::try_from(nodes_total).unwrap_or(u32::MAX),
            control_plane_ready: ready,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            kubernetes_version: version,
            descendants: self.descendants().await,
        }
    }
}

impl HealthProbe for ApiHealth {
    fn probe(&self) -> Pin<Box<dyn Future<Output = Health> + Send + '_>> {
        Box::pin(self.read())
    }
}

async fn put_secret(secrets: &Api<Secret>, secret: &Secret) -> Result<(), String> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let body = serde_json::to_value(secret).map_err(|e| e.to_string())?;
    let mut body = body;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Secret");
    secrets
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot write Secret {name}: {e}"))
}

/// The credentials to connect with: the stored ones while they are valid, else a
/// bootstrap with the bundle's token (stored at once, and the token cleared).
async fn credentials(
    secrets: &Api<Secret>,
    bundle: &Bundle,
    config: &AgentConfig,
    namespace: &str,
) -> Result<Credentials, String> {
    if let Some(s) = secrets
        .get_opt(AGENT_SECRET)
        .await
        .map_err(|e| format!("cannot read Secret {AGENT_SECRET}: {e}"))?
    {
        match credentials_from_secret(&s) {
            Ok(c) if c.not_after > jiff::Timestamp::now() => return Ok(c),
            Ok(_) => tracing::warn!("the stored certificate expired; bootstrapping again"),
            Err(e) => tracing::warn!("{e}; bootstrapping again"),
        }
    }
    let token = bundle.token.as_deref().ok_or_else(|| {
        format!(
            "no valid credentials and the bootstrap token was used: delete Secret lattice-bootstrap-{} on the parent for a new one, and copy it here as {CHILD_BOOTSTRAP_SECRET}",
            bundle.cluster
        )
    })?;
    let creds = agent::bootstrap(config, &bundle.ca_pem, token)
        .await
        .map_err(|e| format!("bootstrap failed: {e}"))?;
    put_secret(secrets, &credentials_to_secret(&creds, namespace)).await?;
    let clear = json!({"data": {"token": null}});
    if let Err(e) = secrets
        .patch(
            CHILD_BOOTSTRAP_SECRET,
            &PatchParams::default(),
            &Patch::Merge(&clear),
        )
        .await
    {
        tracing::warn!("cannot clear the used token: {e}");
    }
    tracing::info!(cluster = %bundle.cluster, not_after = %creds.not_after, "bootstrapped");
    Ok(creds)
}

/// Runs the agent until `shutdown`.
pub async fn run(
    client: Client,
    mut options: ChildOptions,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let bundle = secrets
        .get_opt(CHILD_BOOTSTRAP_SECRET)
        .await
        .map_err(|e| format!("cannot read Secret {CHILD_BOOTSTRAP_SECRET}: {e}"))?
        .ok_or_else(|| {
            format!(
                "no Secret {}/{CHILD_BOOTSTRAP_SECRET}: copy the parent's lattice-bootstrap-<this cluster> here",
                options.namespace
            )
        })
        .and_then(|s| Bundle::from_secret(&s))?;
    let config = AgentConfig::new(
        &bundle.cluster,
        &bundle.trust_domain,
        &bundle.endpoint,
        &bundle.server_name,
    );
    let creds = credentials(&secrets, &bundle, &config, &options.namespace).await?;
    let mut handler = super::proxy::ChildProxy::new(
        &config.cluster,
        super::proxy::Impersonating::new(client.clone()),
    );
    if let Some(local) = options.local_proxy.take() {
        handler = handler.with_local_proxy(local);
    }
    let agent = Arc::new(
        Agent::new(
            config,
            creds.clone(),
            Arc::new(ApiHealth::new(client.clone(), &bundle.cluster)),
        )
        .with_proxy(Arc::new(handler))
        .with_commands(Arc::new(super::pivot::PivotTarget::new(
            client.clone(),
            &bundle.cluster,
        ))),
    );
    let running = tokio::spawn({
        let agent = agent.clone();
        let shutdown = shutdown.clone();
        async move { agent.run(shutdown).await }
    });
    let mesh = super::peering::MeshOptions {
        gateway_address: options.mesh_gateway.clone(),
        trust_domain: options
            .mesh_trust_domain
            .clone()
            .unwrap_or_else(|| format!("{}.{}", bundle.cluster, bundle.trust_domain)),
        gateway: Default::default(),
    };
    let peering = tokio::spawn(peer_routes(
        PeerRoutes {
            client: client.clone(),
            agent: agent.clone(),
            cluster: bundle.cluster.clone(),
            parent: bundle.parent.clone(),
            namespace: options.namespace.clone(),
            mesh,
            every: options.mesh_every,
        },
        shutdown.clone(),
    ));
    let mut held = agent.distributed();
    let mut stored_cert = creds.cert_pem;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<[u8; 32]> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = held.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let now = agent.credentials();
        if now.cert_pem != stored_cert {
            match put_secret(&secrets, &credentials_to_secret(&now, &options.namespace)).await {
                Ok(()) => stored_cert = now.cert_pem,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let set = held.borrow_and_update().clone();
        // Revision 0: nothing received yet (first start, parent unreachable); what is on
        // the cluster stays as it is.
        if set.revision() == 0 || written == Some(set.digest()) {
            continue;
        }
        match write_inherited(&client, &bundle.parent, &set, &options).await {
            Ok(()) => written = Some(set.digest()),
            Err(e) => tracing::warn!("inherited objects: {e}"),
        }
    }
    running.abort();
    peering.abort();
    Ok(())
}

/// What the agent's cross-cluster mesh task works with.
struct PeerRoutes {
    client: Client,
    agent: Arc<Agent>,
    cluster: String,
    parent: String,
    /// Where the relay ConfigMap it shares with this cluster's cell lives.
    namespace: String,
    mesh: super::peering::MeshOptions,
    every: Duration,
}

/// Reports this cluster's cross-cluster declarations every `every`, and writes the
/// objects of the routes the cell sends whenever they change (and again each round, so a
/// write that failed or an object someone removed comes back).
async fn peer_routes(task: PeerRoutes, shutdown: CancellationToken) {
    let PeerRoutes {
        client,
        agent,
        cluster,
        parent,
        namespace,
        mesh,
        every,
    } = task;
    use super::peering::{
        RELAY_DOWN, RELAY_UP, from_routes, own_declarations, read_relay, read_world, to_report,
        write_relay, write_routes,
    };
    use prost::Message;
    let mut relayed_down: Option<Vec<u8>> = None;
    // The routes last written, and rounds since: unchanged routes are written again only
    // every [`REWRITE_EVERY`] rounds (so a removed object returns), not on every tick.
    let mut written: Option<Arc<lattice_proto::tunnel::v1::MeshRoutes>> = None;
    let mut rounds: u32 = 0;
    let mut routes = agent.routes();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        let report = tokio::select! {
            () = shutdown.cancelled() => return,
            changed = routes.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = tick.tick() => true,
        };
        if report {
            match read_world(&client).await {
                Ok(world) => {
                    let declarations = own_declarations(&world, &cluster, &mesh);
                    if mesh.gateway_address.is_none() && !warned {
                        let declared = world
                            .objects()
                            .any(|(_, o)| !lattice_engine::project::remote_peers(o).is_empty());
                        if declared {
                            tracing::warn!(
                                "workloads declare services in other clusters, but this agent has no --mesh-gateway: nothing is reported"
                            );
                            warned = true;
                        }
                    }
                    let mut report = to_report(&declarations);
                    // What this cluster's own cell relays up from below (a cluster that is
                    // also a parent); the agent sends on only what is below it.
                    match read_relay(&client, &namespace, RELAY_UP).await {
                        Ok(Some(bytes)) => {
                            match lattice_proto::tunnel::v1::MeshReport::decode(bytes.as_slice()) {
                                Ok(up) => report.declarations.extend(up.declarations),
                                Err(e) => tracing::warn!(
                                    "cross-cluster relay: declarations from below do not decode: {e}"
                                ),
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!("cross-cluster relay: {e}"),
                    }
                    agent.report_mesh(report);
                }
                Err(e) => tracing::warn!("cross-cluster declarations: {e}"),
            }
        }
        let held = routes.borrow_and_update().clone();
        // Nothing received yet (first start, parent unreachable): what is written stays.
        let Some(held) = held else { continue };
        rounds = rounds.wrapping_add(1);
        if written.as_ref().is_some_and(|w| Arc::ptr_eq(w, &held))
            && !rounds.is_multiple_of(REWRITE_EVERY)
        {
            continue;
        }
        let (own, below): (Vec<_>, Vec<_>) = from_routes(&held)
            .into_iter()
            .partition(|r| r.side.cluster == cluster);
        // Routes for clusters below go to this cluster's own cell, which sends them down.
        let down = super::peering::to_routes(&below).encode_to_vec();
        let mut relayed = true;
        if relayed_down.as_ref() != Some(&down) && (!below.is_empty() || relayed_down.is_some()) {
            match write_relay(&client, &namespace, RELAY_DOWN, down.clone(), MANAGER).await {
                Ok(()) => relayed_down = Some(down),
                Err(e) => {
                    tracing::warn!("cross-cluster relay: {e}");
                    relayed = false;
                }
            }
        }
        match write_routes(&client, &parent, &own, &mesh.gateway).await {
            Ok(n) => {
                tracing::debug!(objects = n, "cross-cluster routes written");
                // A relay that failed is tried again next round, with the routes.
                if relayed {
                    written = Some(held);
                }
            }
            Err(e) => tracing::warn!("cross-cluster routes: {e}"),
        }
    }
}

/// Rounds of the agent's mesh task between writes of unchanged routes.
const REWRITE_EVERY: u32 = 6;

/// Makes the child's inherited objects (CedarPolicy, TrustPolicy, SecretProvider,
/// OIDCProvider) exactly `set`.
pub async fn write_inherited(
    client: &Client,
    parent: &str,
    set: &DistributedSet,
    options: &ChildOptions,
) -> Result<(), String> {
    let mut wanted: BTreeSet<(&'static str, String, String)> = BTreeSet::new();
    for (key, json) in set.objects() {
        let Some(kind) = INHERITED_KINDS.iter().find(|k| k.name() == key.kind) else {
            tracing::warn!(kind = %key.kind, name = %key.name, "a distributed object this agent does not write");
            continue;
        };
        // CedarPolicy is namespaced, the platform kinds are not.
        if key.namespace.is_empty() != (*kind != Kind::CedarPolicy) {
            tracing::warn!(kind = %key.kind, namespace = %key.namespace, name = %key.name, "a distributed object in the wrong scope");
            continue;
        }
        let at = if key.namespace.is_empty() {
            key.name.clone()
        } else {
            format!("{}/{}", key.namespace, key.name)
        };
        let body: Value = serde_json::from_slice(json)
            .map_err(|e| format!("{} {at}: not JSON: {e}", key.kind))?;
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(body["metadata"]["labels"].clone()).unwrap_or_default();
        labels.insert(INHERITED_FROM.to_owned(), parent.to_owned());
        let mut annotations = BTreeMap::new();
        let spec = match kind {
            Kind::CedarPolicy => {
                let spec: CedarPolicySpec = serde_json::from_value(body["spec"].clone())
                    .map_err(|e| format!("{at}: not a CedarPolicy spec: {e}"))?;
                if let Some(key_) = &options.admission {
                    let writer = Requester {
                        username: options.writer.clone(),
                        groups: vec!["system:serviceaccounts".into()],
                    };
                    annotations.insert(
                        ANNOTATION.to_owned(),
                        key_.stamp(&key.namespace, &key.name, &spec, &writer),
                    );
                }
                serde_json::to_value(spec).map_err(|e| e.to_string())?
            }
            // The platform kinds, checked as the operator reads them back: a spec that does
            // not read as its kind is not written.
            _ => {
                let typed = json!({
                    "apiVersion": API_VERSION,
                    "kind": kind.name(),
                    "metadata": {"name": key.name},
                    "spec": body["spec"],
                });
                Object::from_api(kind.name(), &typed)
                    .map_err(|e| format!("{at}: not a {} spec: {e}", kind.name()))?;
                body["spec"].clone()
            }
        };
        let mut metadata = json!({
            "name": key.name,
            "labels": labels,
            "annotations": annotations,
        });
        if !key.namespace.is_empty() {
            metadata["namespace"] = json!(key.namespace);
        }
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": kind.name(),
            "metadata": metadata,
            "spec": spec,
        });
        let resource = lattice_resource(*kind);
        let api: Api<DynamicObject> = if key.namespace.is_empty() {
            Api::all_with(client.clone(), &resource)
        } else {
            Api::namespaced_with(client.clone(), &key.namespace, &resource)
        };
        api.patch(
            &key.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| format!("cannot write {} {at}: {e}", key.kind))?;
        wanted.insert((kind.name(), key.namespace.clone(), key.name.clone()));
    }
    for kind in INHERITED_KINDS {
        let resource = lattice_resource(kind);
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let present = all
            .list(&ListParams::default().labels(&format!("{INHERITED_FROM}={parent}")))
            .await
            .map_err(|e| format!("cannot list inherited {}: {e}", kind.name()))?;
        for o in present.items {
            let ns = o.metadata.namespace.clone().unwrap_or_default();
            let name = o.metadata.name.clone().unwrap_or_default();
            if wanted.contains(&(kind.name(), ns.clone(), name.clone())) {
                continue;
            }
            let api: Api<DynamicObject> = if ns.is_empty() {
                Api::all_with(client.clone(), &resource)
            } else {
                Api::namespaced_with(client.clone(), &ns, &resource)
            };
            match absent_ok(api.delete(&name, &DeleteParams::default()).await) {
                Ok(()) => {
                    tracing::info!(kind = kind.name(), namespace = %ns, %name, "inherited object withdrawn by the parent");
                }
                Err(e) => return Err(format!("cannot delete {} {ns}/{name}: {e}", kind.name())),
            }
        }
    }
    tracing::info!(
        revision = set.revision(),
        objects = set.objects().len(),
        "inherited objects written"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_schemas::crd::cluster::{ClusterStatus, DescendantStatus, LatticeCluster};

    fn cluster(
        name: &str,
        parent: &str,
        environment: &str,
        below: &[(&str, &str)],
    ) -> LatticeCluster {
        let mut c: LatticeCluster = serde_json::from_value(json!({
            "apiVersion": "lattice.dev/v1alpha1",
            "kind": "LatticeCluster",
            "metadata": {"name": name},
            "spec": {
                "providerRef": "aws",
                "parent": parent,
                "environment": environment,
                "provider": {"kubernetes": {"version": "1.33.0"}, "config": {"aws": {"region": "eu-west-1"}}},
                "nodes": {"controlPlane": 1},
            },
        }))
        .unwrap();
        c.status = Some(ClusterStatus {
            agent_connected: Some(true),
            descendants: below
                .iter()
                .map(|(n, p)| DescendantStatus {
                    name: (*n).into(),
                    parent: (*p).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn the_report_is_a_tree_the_cell_accepts_whatever_the_objects_hold() {
        let clusters = [
            cluster(
                "b-child",
                "edge",
                "prod",
                &[("deep", "b-child"), ("deeper", "deep")],
            ),
            cluster(
                "a-child",
                "edge",
                &"x".repeat(200),
                &[("orphan", "nowhere")],
            ),
            cluster("Not.A.Label", "edge", "", &[("under-bad", "Not.A.Label")]),
            cluster("elsewhere", "root", "", &[]),
            cluster("edge", "root", "", &[]),
        ];
        let report = descendants_in("edge", &clusters);
        let names: Vec<(&str, &str)> = report
            .iter()
            .map(|d| (d.name.as_str(), d.parent.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("a-child", "edge"),
                ("b-child", "edge"),
                ("deep", "b-child"),
                ("deeper", "deep"),
            ],
            "children in name order, each followed by its own report; an orphan, a bad name and what is under it, and other parents' children are left out"
        );
        assert_eq!(
            report[0].environment, "",
            "a fact the cell would refuse is sent empty"
        );
        assert_eq!(report[1].environment, "prod");
        assert!(report[0].agent_connected);

        let many: Vec<String> = (0..MAX + 10).map(|i| format!("c{i}")).collect();
        let below: Vec<(&str, &str)> = many.iter().map(|n| (n.as_str(), "big")).collect();
        let report = descendants_in("edge", &[cluster("big", "edge", "", &below)]);
        assert_eq!(report.len(), MAX, "no more than the tunnel takes");
        assert_eq!(report[0].name, "big", "and still a tree: the parent first");
    }

    const MAX: usize = lattice_tunnel::session::MAX_DESCENDANTS;
}
