//! Cluster lifecycle: `Provision`, `Pivot`, `Unpivot` and `Decommission`, each one Cedar
//! question from the cluster that manages a child (`principal`) about that child
//! (`resource`), with what the operation would do as context: the child's phase, whether
//! its agent reports healthy, how many objects the step creates, moves or deletes, how many
//! nodes the cluster may grow to, and the time.
//!
//! A root cluster has no parent: the installer's temporary bootstrap cluster
//! ([`BOOTSTRAP_CLUSTER`]) manages it until it is pivoted, so the question is asked with the
//! root `in` that cluster, over request-scoped entities. The baseline's
//! `parent-manages-children` then reads the same for a root as for any child.

use cedar_policy::{Context, RestrictedExpression};
use lattice_engine::{Projection, Query, Snapshot, action, uid};
use lattice_schemas::crd::cluster::{LatticeCluster, LatticeClusterSpec};
use lattice_schemas::manifest::Object;

/// The cluster that manages a root LatticeCluster until it manages itself: the installer's
/// temporary bootstrap control plane.
pub const BOOTSTRAP_CLUSTER: &str = "lattice-bootstrap";

/// The four lifecycle actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lifecycle {
    Provision,
    Pivot,
    Unpivot,
    Decommission,
}

impl Lifecycle {
    /// The Cedar action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Provision => "Provision",
            Lifecycle::Pivot => "Pivot",
            Lifecycle::Unpivot => "Unpivot",
            Lifecycle::Decommission => "Decommission",
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one lifecycle step would do, as its context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleFacts {
    /// The child's phase now (`Pending` before anything happened).
    pub phase: String,
    /// The child's agent holds its tunnel and reports its control plane ready.
    pub agent_healthy: bool,
    /// Objects the step creates, moves or deletes.
    pub object_count: i64,
    pub now: jiff::Timestamp,
}

impl LifecycleFacts {
    /// The facts of `cluster` as its status tells them, for a step touching `object_count`
    /// objects.
    pub fn of(cluster: &LatticeCluster, object_count: usize, now: jiff::Timestamp) -> Self {
        let status = cluster.status.clone().unwrap_or_default();
        LifecycleFacts {
            phase: status.phase.unwrap_or_else(|| "Pending".into()),
            agent_healthy: status.agent_connected.unwrap_or(false)
                && status.health.is_some_and(|h| h.control_plane_ready),
            object_count: i64::try_from(object_count).unwrap_or(i64::MAX),
            now,
        }
    }
}

/// The most nodes a cluster may run: its control plane plus every pool at its maximum (or
/// its replicas when it is not autoscaled).
pub fn nodes_max(spec: &LatticeClusterSpec) -> i64 {
    let pools: i64 = spec
        .nodes
        .worker_pools
        .values()
        .map(|p| i64::from(p.max.unwrap_or(p.replicas).max(p.replicas).max(0)))
        .sum();
    i64::from(spec.nodes.control_plane.max(0)) + pools
}

/// One lifecycle decision, with what a status, an Event or a terminal shows of it.
#[derive(Clone, Debug)]
pub struct LifecycleDecision {
    pub action: Lifecycle,
    /// The managing cluster.
    pub principal: String,
    /// The cluster the step is about.
    pub resource: String,
    pub allowed: bool,
    /// The deciding policies' ids (forbids on a deny by forbid, permits on an allow, none on
    /// a default deny).
    pub policies: Vec<String>,
    /// The deciding policies' `@advice`, where they give one.
    pub advice: Vec<String>,
    /// Why the question could not be answered (which denies), or the policies that erred.
    pub errors: Vec<String>,
    pub digest: String,
}

impl LifecycleDecision {
    /// One line: `Provision Cluster::"lab" by Cluster::"root": allowed (by …)`.
    pub fn summary(&self) -> String {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        let by = if self.policies.is_empty() {
            if self.allowed {
                String::new()
            } else {
                " (no policy permits it)".into()
            }
        } else {
            format!(" (by {})", self.policies.join(", "))
        };
        format!(
            "{} Cluster::{:?} by Cluster::{:?}: {verdict}{by}",
            self.action, self.resource, self.principal
        )
    }
}

/// The cluster that manages `cluster`: its parent, or the bootstrap cluster for a root.
pub fn manager(cluster: &LatticeCluster) -> &str {
    cluster.spec.parent.as_deref().unwrap_or(BOOTSTRAP_CLUSTER)
}

/// Asks `step` about `cluster` on `snapshot`, with the cluster projected as it is given
/// (whether or not the world holds it yet) and its manager as principal. Anything that
/// cannot be built or asked denies, saying why.
pub fn decide(
    snapshot: &Snapshot,
    projection: &Projection,
    step: Lifecycle,
    cluster: &LatticeCluster,
    facts: &LifecycleFacts,
) -> LifecycleDecision {
    decide_as(snapshot, projection, step, cluster, facts, Asker::Manager)
}

/// Asks `step` about `cluster` by `cluster` itself: a pivoted cluster managing its own
/// Cluster API objects (the baseline's `pivoted-cluster-manages-itself`).
pub fn decide_own(
    snapshot: &Snapshot,
    projection: &Projection,
    step: Lifecycle,
    cluster: &LatticeCluster,
    facts: &LifecycleFacts,
) -> LifecycleDecision {
    decide_as(snapshot, projection, step, cluster, facts, Asker::Itself)
}

/// Who asks a lifecycle question about a cluster.
#[derive(Clone, Copy)]
enum Asker {
    /// The cluster that manages it: its parent, or the bootstrap cluster for a root.
    Manager,
    /// The cluster itself, once pivoted.
    Itself,
}

fn decide_as(
    snapshot: &Snapshot,
    projection: &Projection,
    step: Lifecycle,
    cluster: &LatticeCluster,
    facts: &LifecycleFacts,
    asker: Asker,
) -> LifecycleDecision {
    let resource = cluster.metadata.name.clone().unwrap_or_default();
    let principal = match asker {
        Asker::Manager => manager(cluster).to_owned(),
        Asker::Itself => resource.clone(),
    };
    let mut out = LifecycleDecision {
        action: step,
        principal: principal.clone(),
        resource: resource.clone(),
        allowed: false,
        policies: Vec::new(),
        advice: Vec::new(),
        errors: Vec::new(),
        digest: snapshot.digest().to_owned(),
    };
    match ask(snapshot, projection, step, cluster, facts, asker) {
        Ok(d) => {
            out.allowed = d.allowed;
            out.policies = d.determining.iter().map(|p| p.id.clone()).collect();
            out.advice = d
                .determining
                .iter()
                .filter_map(|p| p.annotations.get("advice").cloned())
                .collect();
            out.errors = d
                .errors
                .iter()
                .map(|f| format!("{}: {}", f.policy.id, f.message))
                .collect();
        }
        Err(e) => out.errors.push(e),
    }
    out
}

fn ask(
    snapshot: &Snapshot,
    projection: &Projection,
    step: Lifecycle,
    cluster: &LatticeCluster,
    facts: &LifecycleFacts,
    asker: Asker,
) -> Result<lattice_engine::Decision, String> {
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or("the LatticeCluster has no name")?;
    let mut subject = cluster.clone();
    let mut extra = Vec::new();
    if subject.spec.parent.is_none() {
        // A root, managed by the bootstrap cluster until it manages itself.
        subject.spec.parent = Some(BOOTSTRAP_CLUSTER.to_owned());
        let bootstrap = LatticeCluster::new(BOOTSTRAP_CLUSTER, LatticeClusterSpec::default());
        extra.extend(
            projection
                .entities_of(&Object::Cluster(bootstrap))
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|e| e.uid() == uid("Cluster", BOOTSTRAP_CLUSTER)),
        );
    }
    let resource = uid("Cluster", &name);
    let principal = match asker {
        Asker::Manager => uid("Cluster", manager(&subject)),
        Asker::Itself => resource.clone(),
    };
    extra.extend(
        projection
            .entities_of(&Object::Cluster(subject.clone()))
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|e| e.uid() == resource),
    );
    let scoped = snapshot
        .scoped(extra, std::slice::from_ref(&principal))
        .map_err(|e| e.to_string())?;
    let context = Context::from_pairs([
        (
            "phase".to_owned(),
            RestrictedExpression::new_string(facts.phase.clone()),
        ),
        (
            "agentHealthy".to_owned(),
            RestrictedExpression::new_bool(facts.agent_healthy),
        ),
        (
            "objectCount".to_owned(),
            RestrictedExpression::new_long(facts.object_count),
        ),
        (
            "nodesMax".to_owned(),
            RestrictedExpression::new_long(nodes_max(&subject.spec)),
        ),
        ("now".to_owned(), crate::time::datetime(facts.now)?),
    ])
    .map_err(|e| e.to_string())?;
    let query = Query::new(principal, action(step.as_str()), resource).with_context(context);
    scoped.decide(&query).map_err(|e| e.to_string())
}
