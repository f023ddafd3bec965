//! The cross-cluster mesh: edges between workloads in different clusters of the hierarchy,
//! decided by the two clusters' nearest common ancestor as one `Connect` question each.
//!
//! A workload declares a service in another cluster with `cluster` on a `service` resource.
//! Each cluster reports its declarations ([`declarations`]) up the tunnel with the facts it
//! derived of the workload; the ancestor ([`plan`]) pairs them. An edge declared from both
//! sides is asked as `Connect` over request-scoped entities: the two workloads as
//! `Service::"<cluster>/<namespace>/<name>"` (their declared cross-cluster peers as
//! `dependencies` and `callers`, so the bilateral baseline reads them as it reads local
//! ones), their namespaces, and both clusters as the snapshot holds them, also in the
//! context as `callerCluster` and `calleeCluster`. An allowed edge becomes a [`Route`] for
//! each side: the peer's SPIFFE identity, its cluster's east-west address and the ports.
//! A one-sided edge between two declaring workloads is asked too (the bundled bilateral
//! rule denies it); one whose other side declares nothing across clusters has no identity
//! or address to route to, and is refused with the side that is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cedar_policy::{Context, Entity, EntityUid, RestrictedExpression as Rx};
use lattice_engine::project::{remote_peers, served_ports, workload_bodies};
use lattice_engine::{Decision, Projection, Query, Snapshot, World, action, uid};
use lattice_schemas::manifest::Object;

/// A workload somewhere in the hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

impl Workload {
    pub fn new(cluster: &str, namespace: &str, name: &str) -> Workload {
        Workload {
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Its `Service` entity's uid in a cross-cluster question.
    pub fn uid(&self) -> EntityUid {
        uid("Service", &self.to_string())
    }

    fn namespace_uid(&self) -> EntityUid {
        uid("Namespace", &format!("{}/{}", self.cluster, self.namespace))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

/// What a workload's own cluster derived of it: its `Service` entity's facts and its
/// namespace's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub kind: String,
    pub replicas: i64,
    pub pod_security: String,
    pub ingress_tls: bool,
    pub uses_secret_provider: bool,
    pub literal_secrets: bool,
    pub secrets_in_env: bool,
    pub strict_mtls: bool,
    pub labels: BTreeMap<String, String>,
    pub namespace_default_deny: bool,
}

/// One workload's cross-cluster declarations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declaration {
    pub workload: Workload,
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub spiffe_id: String,
    pub ports: Vec<u32>,
    /// Its cluster's east-west gateway, `host:port`.
    pub address: String,
    /// Services it calls.
    pub outbound: BTreeSet<Workload>,
    /// Services that may call it.
    pub inbound: BTreeSet<Workload>,
    pub facts: Facts,
}

fn attr_bool(e: &Entity, name: &str) -> bool {
    matches!(e.attr(name), Some(Ok(cedar_policy::EvalResult::Bool(true))))
}

fn attr_string(e: &Entity, name: &str) -> String {
    match e.attr(name) {
        Some(Ok(cedar_policy::EvalResult::String(s))) => s,
        _ => String::new(),
    }
}

fn attr_long(e: &Entity, name: &str) -> i64 {
    match e.attr(name) {
        Some(Ok(cedar_policy::EvalResult::Long(n))) => n,
        _ => 0,
    }
}

/// The cross-cluster declarations of `cluster`'s `world`, with the facts `projection`
/// derives of each declaring workload. Its identity is in `trust_domain` (the workload
/// runs as a service account of its own name), and other clusters reach it at `address`.
pub fn declarations(
    world: &World,
    projection: &Projection,
    cluster: &str,
    trust_domain: &str,
    address: &str,
) -> Vec<Declaration> {
    let mut out = Vec::new();
    for (_, object) in world.objects() {
        if workload_bodies(object).is_empty() {
            continue;
        }
        let peers = remote_peers(object);
        if peers.is_empty() {
            continue;
        }
        let ns = object.namespace().unwrap_or("default");
        let workload = Workload::new(cluster, ns, object.name());
        let mut outbound = BTreeSet::new();
        let mut inbound = BTreeSet::new();
        for p in peers {
            let peer = Workload::new(&p.cluster, &p.namespace, &p.name);
            if p.outbound {
                outbound.insert(peer.clone());
            }
            if p.inbound {
                inbound.insert(peer);
            }
        }
        // A workload whose entity cannot be built is decided by nothing (its own cluster
        // refuses it too): reporting guessed facts could slip past a forbid.
        let Some(facts) = facts_of(projection, object) else {
            continue;
        };
        out.push(Declaration {
            spiffe_id: format!("spiffe://{trust_domain}/ns/{ns}/sa/{}", object.name()),
            ports: served_ports(object)
                .into_iter()
                .filter_map(|p| u32::try_from(p).ok())
                .collect(),
            address: address.to_owned(),
            outbound,
            inbound,
            facts,
            workload,
        });
    }
    out
}

/// A workload's facts as its cluster's projection derives them; `None` when its entity
/// cannot be built.
fn facts_of(projection: &Projection, object: &Object) -> Option<Facts> {
    let ns = object.namespace().unwrap_or("default");
    let service_uid = uid("Service", &format!("{ns}/{}", object.name()));
    let entities = projection.entities_of(object).ok()?;
    let s = entities.iter().find(|e| e.uid() == service_uid)?;
    let namespace = projection.namespace(ns).ok()?;
    Some(Facts {
        kind: attr_string(s, "kind"),
        replicas: attr_long(s, "replicas"),
        pod_security: attr_string(s, "podSecurity"),
        ingress_tls: attr_bool(s, "ingressTls"),
        uses_secret_provider: attr_bool(s, "usesSecretProvider"),
        literal_secrets: attr_bool(s, "literalSecrets"),
        secrets_in_env: attr_bool(s, "secretsInEnv"),
        strict_mtls: attr_bool(s, "strictMtls"),
        labels: object.meta().labels.clone().unwrap_or_default(),
        namespace_default_deny: attr_bool(&namespace, "defaultDeny"),
    })
}

/// Where the clusters are, as one cluster's cell sees them.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// The cluster deciding.
    pub own: String,
    /// Every cluster below it, with the child of `own` whose subtree holds it.
    pub below: BTreeMap<String, String>,
}

impl Topology {
    /// `Some(None)` for `own`, `Some(Some(child))` below it, `None` outside its subtree.
    fn via(&self, cluster: &str) -> Option<Option<&str>> {
        if cluster == self.own {
            return Some(None);
        }
        self.below.get(cluster).map(|c| Some(c.as_str()))
    }
}

/// Which side of an edge a route is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Caller,
    Callee,
}

/// One side of an allowed edge: what that side derives to let exactly its peer through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// This side's workload.
    pub side: Workload,
    pub role: Role,
    pub peer: Workload,
    pub peer_spiffe_id: String,
    /// The peer cluster's east-west gateway, `host:port`.
    pub peer_address: String,
    /// The callee's ports the edge opens.
    pub ports: Vec<u32>,
}

/// Where a cross-cluster edge stands at one cluster's cell.
#[derive(Clone, Debug)]
pub enum EdgeState {
    /// Declared by both sides and decided here.
    Decided(Result<Decision, String>),
    /// One side has no cross-cluster declaration at all, so there is no identity or
    /// address to route to and nothing to ask; the missing side, in words.
    OneSided(String),
    /// Both sides are below one child: that child's cell (nearer) decides it.
    Below(String),
    /// A side is outside this cluster's subtree: an ancestor decides it.
    Above,
}

/// One cross-cluster edge as one cell sees it.
#[derive(Clone, Debug)]
pub struct CrossEdge {
    pub caller: Workload,
    pub callee: Workload,
    pub declared_by_caller: bool,
    pub declared_by_callee: bool,
    pub state: EdgeState,
}

impl CrossEdge {
    pub fn allowed(&self) -> bool {
        matches!(&self.state, EdgeState::Decided(Ok(d)) if d.allowed)
    }

    /// Why an edge is not routed, in words; `None` when it is.
    pub fn reason(&self) -> Option<String> {
        Some(match &self.state {
            EdgeState::Decided(Ok(d)) if d.allowed => return None,
            EdgeState::Decided(Err(e)) => format!("cannot be decided: {e}"),
            EdgeState::Decided(Ok(d)) if !d.determining.is_empty() => crate::mesh::forbidden_by(d),
            // A default deny of a one-sided edge: say which side is missing.
            EdgeState::Decided(Ok(_)) if !self.declared_by_callee => {
                missing_caller(&self.caller, &self.callee)
            }
            EdgeState::Decided(Ok(_)) if !self.declared_by_caller => {
                missing_dependency(&self.caller, &self.callee)
            }
            EdgeState::Decided(Ok(d)) => crate::mesh::forbidden_by(d),
            EdgeState::OneSided(missing) => missing.clone(),
            EdgeState::Below(child) => {
                format!("both sides are below {child}, whose cell decides it")
            }
            EdgeState::Above => {
                "a side is outside this cluster's subtree; their nearest common ancestor decides it"
                    .to_owned()
            }
        })
    }
}

fn missing_caller(caller: &Workload, callee: &Workload) -> String {
    format!("{callee} does not list {caller} as an inbound caller")
}

fn missing_dependency(caller: &Workload, callee: &Workload) -> String {
    format!("{caller} does not list {callee} as a dependency")
}

/// Every cross-cluster edge one cell knows of, and the routes of those it allowed.
#[derive(Clone, Debug, Default)]
pub struct PeeringPlan {
    pub edges: BTreeMap<(Workload, Workload), CrossEdge>,
}

impl PeeringPlan {
    /// The routes of every allowed edge, by the cluster of the side each is for.
    pub fn routes(&self, declarations: &[Declaration]) -> BTreeMap<String, Vec<Route>> {
        let by: BTreeMap<&Workload, &Declaration> =
            declarations.iter().map(|d| (&d.workload, d)).collect();
        let mut out: BTreeMap<String, Vec<Route>> = BTreeMap::new();
        for edge in self.edges.values().filter(|e| e.allowed()) {
            let (Some(caller), Some(callee)) = (by.get(&edge.caller), by.get(&edge.callee)) else {
                continue;
            };
            out.entry(edge.caller.cluster.clone())
                .or_default()
                .push(Route {
                    side: edge.caller.clone(),
                    role: Role::Caller,
                    peer: edge.callee.clone(),
                    peer_spiffe_id: callee.spiffe_id.clone(),
                    peer_address: callee.address.clone(),
                    ports: callee.ports.clone(),
                });
            out.entry(edge.callee.cluster.clone())
                .or_default()
                .push(Route {
                    side: edge.callee.clone(),
                    role: Role::Callee,
                    peer: edge.caller.clone(),
                    peer_spiffe_id: caller.spiffe_id.clone(),
                    peer_address: caller.address.clone(),
                    ports: callee.ports.clone(),
                });
        }
        for routes in out.values_mut() {
            routes.sort();
        }
        out
    }
}

/// The `Connect` question for a cross-cluster edge, over the two declarations.
pub fn connect_query(caller: &Declaration, callee: &Declaration) -> Query {
    let ports = Rx::new_set(callee.ports.iter().map(|p| Rx::new_long(i64::from(*p))));
    let context = Context::from_pairs([
        ("ports".to_owned(), ports),
        (
            "callerCluster".to_owned(),
            Rx::new_entity_uid(uid("Cluster", &caller.workload.cluster)),
        ),
        (
            "calleeCluster".to_owned(),
            Rx::new_entity_uid(uid("Cluster", &callee.workload.cluster)),
        ),
    ])
    .expect("distinct keys make a context");
    Query::new(
        caller.workload.uid(),
        action("Connect"),
        callee.workload.uid(),
    )
    .with_context(context)
}

/// A declaration's `Service` entity and its namespace's, with uids qualified by cluster.
fn entities_of(d: &Declaration) -> Result<[Entity; 2], String> {
    let w = &d.workload;
    let f = &d.facts;
    let s = |v: &str| Rx::new_string(v.to_owned());
    let set =
        |peers: &BTreeSet<Workload>| Rx::new_set(peers.iter().map(|p| Rx::new_entity_uid(p.uid())));
    let attrs: std::collections::HashMap<String, Rx> = [
        ("name", s(&w.name)),
        ("namespace", s(&w.namespace)),
        ("kind", s(&f.kind)),
        ("dependencies", set(&d.outbound)),
        ("callers", set(&d.inbound)),
        // Wildcards never cross clusters: each edge is declared by name.
        ("dependsAll", Rx::new_bool(false)),
        ("callersAll", Rx::new_bool(false)),
        (
            "ports",
            Rx::new_set(d.ports.iter().map(|p| Rx::new_long(i64::from(*p)))),
        ),
        ("replicas", Rx::new_long(f.replicas)),
        ("podSecurity", s(&f.pod_security)),
        ("ingressTls", Rx::new_bool(f.ingress_tls)),
        ("usesSecretProvider", Rx::new_bool(f.uses_secret_provider)),
        ("literalSecrets", Rx::new_bool(f.literal_secrets)),
        ("secretsInEnv", Rx::new_bool(f.secrets_in_env)),
        ("strictMtls", Rx::new_bool(f.strict_mtls)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let tags: std::collections::HashMap<String, Rx> =
        f.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect();
    let service = Entity::new_with_tags(
        w.uid(),
        attrs,
        std::collections::HashSet::from([w.namespace_uid()]),
        tags,
    )
    .map_err(|e| format!("{w}: {e}"))?;
    let namespace = Entity::new(
        w.namespace_uid(),
        [
            ("name".to_owned(), s(&w.namespace)),
            (
                "defaultDeny".to_owned(),
                Rx::new_bool(f.namespace_default_deny),
            ),
            ("defaultDenyOptOutRequested".to_owned(), Rx::new_bool(false)),
            ("podSecurity".to_owned(), s(&f.pod_security)),
        ]
        .into_iter()
        .collect(),
        std::collections::HashSet::from([uid("Cluster", &w.cluster)]),
    )
    .map_err(|e| format!("{w}: {e}"))?;
    Ok([service, namespace])
}

/// Decides one bilateral edge on `snapshot`, with the two workloads and both clusters in
/// scope. Anything that cannot be built or asked denies, saying why.
fn decide(
    snapshot: &Snapshot,
    caller: &Declaration,
    callee: &Declaration,
) -> Result<Decision, String> {
    let mut extra = Vec::with_capacity(4);
    extra.extend(entities_of(caller)?);
    extra.extend(entities_of(callee)?);
    let clusters = [
        uid("Cluster", &caller.workload.cluster),
        uid("Cluster", &callee.workload.cluster),
    ];
    let scoped = snapshot
        .scoped(extra, &clusters)
        .map_err(|e| e.to_string())?;
    scoped
        .decide(&connect_query(caller, callee))
        .map_err(|e| e.to_string())
}

/// Pairs `declarations` (from this cluster and the clusters below it) at the cell of
/// `topology.own`: every edge either side declares, decided here when this cluster is the
/// nearest common ancestor of its two sides and both declare it.
pub fn plan(snapshot: &Snapshot, topology: &Topology, declarations: &[Declaration]) -> PeeringPlan {
    let by: BTreeMap<&Workload, &Declaration> =
        declarations.iter().map(|d| (&d.workload, d)).collect();
    let mut keys = BTreeSet::new();
    for d in declarations {
        keys.extend(d.outbound.iter().map(|c| (d.workload.clone(), c.clone())));
        keys.extend(d.inbound.iter().map(|c| (c.clone(), d.workload.clone())));
    }
    // Edges are decided independently, on every core.
    use rayon::prelude::*;
    let keys: Vec<(Workload, Workload)> = keys.into_iter().collect();
    let edges: Vec<CrossEdge> = keys
        .into_par_iter()
        .map(|(caller, callee)| {
            let caller_d = by.get(&caller).copied();
            let callee_d = by.get(&callee).copied();
            let declared_by_caller = caller_d.is_some_and(|d| d.outbound.contains(&callee));
            let declared_by_callee = callee_d.is_some_and(|d| d.inbound.contains(&caller));
            let state = match (topology.via(&caller.cluster), topology.via(&callee.cluster)) {
                (None, _) | (_, None) => EdgeState::Above,
                (Some(Some(a)), Some(Some(b))) if a == b => EdgeState::Below(a.to_owned()),
                // Both sides are known: Cedar decides, one-sided or not (the bundled
                // bilateral rule denies a one-sided edge; a policy may say otherwise).
                _ => match (caller_d, callee_d) {
                    (Some(a), Some(b)) => EdgeState::Decided(decide(snapshot, a, b)),
                    (_, None) => EdgeState::OneSided(missing_caller(&caller, &callee)),
                    (None, _) => EdgeState::OneSided(missing_dependency(&caller, &callee)),
                },
            };
            CrossEdge {
                caller,
                callee,
                declared_by_caller,
                declared_by_callee,
                state,
            }
        })
        .collect();
    PeeringPlan {
        edges: edges
            .into_iter()
            .map(|e| ((e.caller.clone(), e.callee.clone()), e))
            .collect(),
    }
}
