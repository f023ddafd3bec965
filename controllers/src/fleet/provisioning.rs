//! Provisioning on a parent: each child LatticeCluster (`spec.parent` naming this cluster)
//! is asked `Provision` (this cluster → the child); when it is allowed, the child's Cluster
//! API objects (`lattice_clusters::provision`) are applied by server-side apply into
//! `capi-<child>`, with the bootstrap Secret its control plane reads the one-time token and
//! the CA from. Its status gets the phase and conditions read from the CAPI `Cluster`, the
//! platform components it will run, and the decision with its policies; each change of the
//! decision is an Event.
//!
//! A denied `Provision` applies nothing new: a cluster never provisioned stays `Pending`
//! with the deciding policy in its status. A cluster already running is not torn down by
//! it; tearing down is `Decommission`'s, asked when the LatticeCluster is deleted.
//!
//! Once the control plane is available and the agent connected, the child is asked
//! `Pivot`; allowed, its move ([`super::pivot::move_cluster`]) runs as a task of its own so
//! the cell's rounds go on, and is started again after a failure. A pivoted child is never
//! provisioned here again: its objects are its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use lattice_clusters::{BootstrapEndpoint, ProvisionOptions, provision};
use lattice_engine::{Projection, Snapshot};
use lattice_gates::lifecycle::{self, Lifecycle, LifecycleDecision, LifecycleFacts};
use lattice_schemas::crd::cluster::{ComponentStatus, LatticeCluster, LifecycleDecisionStatus};
use lattice_schemas::crd::{API_VERSION, Kind};
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};

use super::absent_ok;
use super::inputs::{ParentOptions, Published};
use super::pivot::{self, Moved};
use super::stored::{Bundle, bootstrap_secret_name};
use crate::lattice_api::lattice_resource;
use crate::operator::events::{Events, Pending, reference};
use lattice_tunnel::cell::Cell;

/// The field manager of the CAPI objects and of the status fields written here.
pub const MANAGER: &str = "lattice-provisioning";

/// Re-applies unchanged objects every this many rounds, correcting drift.
const REAPPLY_EVERY: u32 = 12;

/// What was last applied and decided per child, and the moves in flight.
#[derive(Default)]
pub struct Provisioning {
    projection: Option<(Arc<Published>, Arc<Projection>)>,
    applied: BTreeMap<String, (u64, u32)>,
    /// The last decision of each action about each child, for its Events.
    decided: BTreeMap<(String, &'static str), (bool, Vec<String>)>,
    /// Pivots running, by child: a move takes seconds, and the cell's round goes on.
    moving: BTreeMap<String, tokio::task::JoinHandle<Result<Moved, String>>>,
    /// How each child's last move ended (until the operator restarts).
    moved: BTreeMap<String, Result<Moved, String>>,
    /// Pivoted children whose leftover copies here were cleaned up since this start.
    finished: BTreeSet<String>,
    /// Moves back (unpivots) running, by child being decommissioned.
    pub(super) unpivoting: BTreeMap<String, tokio::task::JoinHandle<Result<Moved, String>>>,
    /// How each child's last move back ended.
    pub(super) unpivoted: BTreeMap<String, Result<Moved, String>>,
}

impl Provisioning {
    /// One round over every child of this cluster in `published`.
    pub async fn reconcile(
        &mut self,
        client: &Client,
        cell: &Cell,
        events: &Events,
        options: &ParentOptions,
        published: &Arc<Published>,
        snapshot: &Snapshot,
    ) {
        let projection = match &self.projection {
            Some((p, projection)) if Arc::ptr_eq(p, published) => projection.clone(),
            _ => {
                let projection = Arc::new(Projection::of(&published.world));
                self.projection = Some((published.clone(), projection.clone()));
                projection
            }
        };
        let world = &published.world;
        let children: Vec<&LatticeCluster> = world
            .objects()
            .filter_map(|(_, o)| match o {
                Object::Cluster(c)
                    if c.spec.parent.as_deref() == Some(options.cluster.as_str()) =>
                {
                    Some(c)
                }
                _ => None,
            })
            .collect();
        let current = |c: &String| {
            children
                .iter()
                .any(|x| x.metadata.name.as_deref() == Some(c))
        };
        self.applied.retain(|c, _| current(c));
        self.decided.retain(|(c, _), _| current(c));
        self.moved.retain(|c, _| current(c));
        self.finished.retain(|c| current(c));
        self.unpivoted.retain(|c, _| current(c));
        for tasks in [&mut self.moving, &mut self.unpivoting] {
            tasks.retain(|c, task| {
                let keep = current(c);
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        let endpoint = bootstrap_endpoint(world, options);
        for child in children {
            if child.metadata.deletion_timestamp.is_some() {
                if let Err(e) = self
                    .decommission(client, cell, events, world, &projection, snapshot, child)
                    .await
                {
                    tracing::warn!(
                        cluster = child.metadata.name.as_deref().unwrap_or(""),
                        "decommission: {e}"
                    );
                }
                continue;
            }
            if let Err(e) = self
                .child(
                    client,
                    cell,
                    events,
                    options,
                    world,
                    &projection,
                    snapshot,
                    child,
                    &endpoint,
                )
                .await
            {
                tracing::warn!(
                    cluster = child.metadata.name.as_deref().unwrap_or(""),
                    "provisioning: {e}"
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn child(
        &mut self,
        client: &Client,
        cell: &Cell,
        events: &Events,
        options: &ParentOptions,
        world: &lattice_engine::World,
        projection: &Projection,
        snapshot: &Snapshot,
        cluster: &LatticeCluster,
        endpoint: &BootstrapEndpoint,
    ) -> Result<(), String> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let infra = world.objects().find_map(|(_, o)| match o {
            Object::InfraProvider(p)
                if p.metadata.name.as_deref() == Some(cluster.spec.provider_ref.as_str()) =>
            {
                Some(p.spec.clone())
            }
            _ => None,
        });
        let now = jiff::Timestamp::now();
        let provisioned = provision(
            cluster,
            &ProvisionOptions {
                endpoint: Some(endpoint.clone()),
                infra: infra.as_ref(),
            },
        );
        let (decision, components, objects) = match provisioned {
            Err(e) => {
                // Admission refuses what cannot be provisioned; a cluster written before
                // that check, or straight to etcd, gets the reason in its status.
                let decision = LifecycleDecision {
                    action: Lifecycle::Provision,
                    principal: options.cluster.clone(),
                    resource: name.clone(),
                    allowed: false,
                    policies: Vec::new(),
                    advice: Vec::new(),
                    errors: vec![e.to_string()],
                    digest: snapshot.digest().to_owned(),
                };
                (decision, Vec::new(), Vec::new())
            }
            Ok(p) => {
                let facts = LifecycleFacts::of(cluster, p.objects.len(), now);
                let decision =
                    lifecycle::decide(snapshot, projection, Lifecycle::Provision, cluster, &facts);
                (decision, p.components, p.objects)
            }
        };
        self.event(events, cluster, &decision).await;
        let status = cluster.status.clone().unwrap_or_default();
        self.collect(events, cluster).await;
        // A move that just completed recorded `pivoted`; the world may not show it yet.
        let pivoted =
            status.pivoted.unwrap_or(false) || matches!(self.moved.get(&name), Some(Ok(_)));
        // Whatever this cluster provisioned it also tears down: the child's deletion waits
        // for its decommission here.
        let held = cluster
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == super::finalizer::FINALIZER);
        if (decision.allowed || pivoted) && !held {
            super::finalizer::hold(client, &name).await?;
        }
        // Once pivoted, the child manages its own CAPI objects: nothing is applied here
        // again, and the copies a restart left behind are deleted.
        if decision.allowed && !pivoted && !self.moving.contains_key(&name) {
            self.apply(client, options, &name, &objects).await?;
        }
        if pivoted && !self.finished.contains(&name) && !self.moving.contains_key(&name) {
            let left = pivot::finish(client, &name).await?;
            if left > 0 {
                tracing::info!(cluster = %name, left, "deleted copies left by an interrupted pivot");
            }
            self.finished.insert(name.clone());
        }
        let capi = if pivoted {
            None
        } else {
            read_capi_cluster(client, &name).await?
        };
        let (mut phase, conditions) =
            lattice_clusters::phase::read(&lattice_clusters::phase::Observed {
                capi_cluster: capi.as_ref(),
                deleting: false,
                agent_connected: status.agent_connected.unwrap_or(false),
                pivoted,
            });
        let mut decided = vec![decision.clone()];
        if phase == lattice_clusters::phase::Phase::Pivoting {
            let pivot = self
                .pivot(
                    client, cell, events, snapshot, projection, cluster, phase, now, endpoint,
                )
                .await?;
            // Ready to move but not allowed to: still the parent's, still provisioning.
            if !pivot.allowed {
                phase = lattice_clusters::phase::Phase::Provisioning;
            }
            decided.push(pivot);
        }
        let mut decisions: Vec<LifecycleDecisionStatus> = status
            .decisions
            .iter()
            .filter(|d| !decided.iter().any(|n| n.action.as_str() == d.action))
            .cloned()
            .collect();
        for decision in &decided {
            let previous = status
                .decisions
                .iter()
                .find(|d| d.action == decision.action.as_str());
            decisions.push(entry(decision, previous, now));
        }
        decisions.sort_by(|a, b| a.action.cmp(&b.action));
        let mut all_conditions: Vec<Value> = conditions
            .iter()
            .map(|c| json!({"type": c.type_, "status": c.status, "reason": c.reason}))
            .collect();
        all_conditions.push(json!({
            "type": "ProvisionAllowed",
            "status": if decision.allowed { "True" } else { "False" },
            "reason": if decision.allowed { "Allowed" } else if decision.errors.is_empty() { "Denied" } else { "Invalid" },
            "message": decision.summary(),
        }));
        if let Some(p) = decisions
            .iter()
            .find(|d| d.action == Lifecycle::Pivot.as_str())
        {
            all_conditions.push(json!({
                "type": "PivotAllowed",
                "status": if p.allowed { "True" } else { "False" },
                "reason": if p.allowed { "Allowed" } else if p.errors.is_empty() { "Denied" } else { "Invalid" },
                "message": status_summary(p),
            }));
        }
        match self.moved.get(&name) {
            Some(Ok(m)) => all_conditions.push(json!({
                "type": "Moved",
                "status": "True",
                "reason": "Pivoted",
                "message": format!("moved {} objects in {} batches in {} ms", m.objects, m.batches, m.elapsed.as_millis()),
            })),
            Some(Err(e)) => all_conditions.push(json!({
                "type": "Moved",
                "status": "False",
                "reason": "MoveFailed",
                "message": format!("{e}; the move is sent again"),
            })),
            None => {}
        }
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": Kind::LatticeCluster.name(),
            "status": {
                "phase": phase.as_str(),
                "ready": phase == lattice_clusters::phase::Phase::Ready,
                "components": components.iter().map(|c| ComponentStatus { name: c.name.into(), because: c.because.into() }).collect::<Vec<_>>(),
                "decisions": decisions,
                "conditions": all_conditions,
            },
        });
        let current = json!({
            "phase": status.phase,
            "ready": status.ready,
            "components": status.components,
            "decisions": status.decisions,
            "conditions": status.conditions,
        });
        write_status(client, &name, &current, &body).await
    }

    /// Asks `Pivot` for a child ready to move and, when it is allowed, starts the move (or
    /// collects the one that ended). The facts are the phase now, the agent's health and
    /// the number of objects that would move.
    #[allow(clippy::too_many_arguments)]
    async fn pivot(
        &mut self,
        client: &Client,
        cell: &Cell,
        events: &Events,
        snapshot: &Snapshot,
        projection: &Projection,
        cluster: &LatticeCluster,
        phase: lattice_clusters::phase::Phase,
        now: jiff::Timestamp,
        endpoint: &BootstrapEndpoint,
    ) -> Result<LifecycleDecision, String> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let namespace = lattice_clusters::capi::namespace(&name);
        let count =
            lattice_clusters::pivot::plan(&name, &pivot::discover(client, &namespace).await?).len();
        let mut facts = LifecycleFacts::of(cluster, count, now);
        facts.phase = phase.as_str().to_owned();
        let decision = lifecycle::decide(snapshot, projection, Lifecycle::Pivot, cluster, &facts);
        self.event(events, cluster, &decision).await;
        if decision.allowed && !self.moving.contains_key(&name) {
            tracing::info!(cluster = %name, objects = count, "pivot allowed: moving");
            let (client, cell, child) = (client.clone(), cell.clone(), name.clone());
            let endpoint = endpoint.clone();
            self.moving.insert(
                name,
                tokio::spawn(async move {
                    let sink = pivot::ThroughTunnel {
                        cell,
                        cluster: child.clone(),
                    };
                    pivot::move_cluster(&client, &sink, &child, Some(&endpoint)).await
                }),
            );
        }
        Ok(decision)
    }

    /// Takes the outcome of `cluster`'s move if it has ended, with its Event.
    async fn collect(&mut self, events: &Events, cluster: &LatticeCluster) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        if let Some(task) = self.moving.get(&name)
            && task.is_finished()
            && let Some(task) = self.moving.remove(&name)
        {
            let outcome = task
                .await
                .unwrap_or_else(|e| Err(format!("the move stopped: {e}")));
            self.moved_event(events, cluster, &outcome).await;
            self.moved.insert(name, outcome);
        }
    }

    /// An Event when a move ended.
    async fn moved_event(
        &self,
        events: &Events,
        cluster: &LatticeCluster,
        outcome: &Result<Moved, String>,
    ) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let (warning, reason, note) = match outcome {
            Ok(m) => {
                tracing::info!(cluster = %name, objects = m.objects, elapsed_ms = m.elapsed.as_millis() as u64, "pivoted");
                (
                    false,
                    "Pivoted",
                    format!(
                        "moved {} Cluster API objects into {name} in {} batches in {} ms; it manages itself now",
                        m.objects,
                        m.batches,
                        m.elapsed.as_millis()
                    ),
                )
            }
            Err(e) => {
                tracing::warn!(cluster = %name, "pivot: {e}");
                (true, "PivotFailed", format!("{e}; the move is sent again"))
            }
        };
        publish(events, cluster, warning, reason, "Pivot", note).await;
    }

    /// An Event when the decision about `cluster` changed.
    pub(super) async fn event(
        &mut self,
        events: &Events,
        cluster: &LatticeCluster,
        d: &LifecycleDecision,
    ) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let key = (d.allowed, d.policies.clone());
        let slot = (name.clone(), d.action.as_str());
        if self.decided.get(&slot) == Some(&key) {
            return;
        }
        self.decided.insert(slot, key);
        let reason = match (d.action, d.allowed) {
            (Lifecycle::Provision, true) => "ProvisionAllowed",
            (Lifecycle::Provision, false) => "ProvisionDenied",
            (Lifecycle::Pivot, true) => "PivotAllowed",
            (Lifecycle::Pivot, false) => "PivotDenied",
            (Lifecycle::Unpivot, true) => "UnpivotAllowed",
            (Lifecycle::Unpivot, false) => "UnpivotDenied",
            (Lifecycle::Decommission, true) => "DecommissionAllowed",
            (Lifecycle::Decommission, false) => "DecommissionDenied",
        };
        publish(
            events,
            cluster,
            !d.allowed,
            reason,
            d.action.as_str(),
            note(d),
        )
        .await;
    }

    /// Applies `objects` (and the bootstrap Secret) when they changed, or every
    /// [`REAPPLY_EVERY`] rounds.
    async fn apply(
        &mut self,
        client: &Client,
        options: &ParentOptions,
        name: &str,
        objects: &[Value],
    ) -> Result<(), String> {
        let digest = digest(objects);
        let round = match self.applied.get(name) {
            Some((d, round)) if *d == digest && round + 1 < REAPPLY_EVERY => {
                self.applied.insert(name.to_owned(), (digest, round + 1));
                return Ok(());
            }
            _ => 0,
        };
        let params = PatchParams::apply(MANAGER).force();
        for object in objects {
            let ar = resource_of(object);
            let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            api.patch(object_name, &params, &Patch::Apply(object))
                .await
                .map_err(|e| format!("cannot apply {} {object_name}: {e}", ar.kind))?;
            if object["kind"] == "Namespace" {
                bootstrap_secret(client, options, name).await?;
            }
        }
        tracing::info!(cluster = %name, objects = objects.len(), "provisioned");
        self.applied.insert(name.to_owned(), (digest, round));
        Ok(())
    }
}

/// What an Event about a lifecycle decision says: the decision, its advice and errors.
pub(super) fn note(d: &LifecycleDecision) -> String {
    let mut note = d.summary();
    for a in &d.advice {
        note.push_str(&format!("; advice: {a}"));
    }
    for e in &d.errors {
        note.push_str(&format!("; {e}"));
    }
    note
}

/// A digest of derived objects, to apply them again only when they change.
pub(super) fn digest(objects: &[Value]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(objects)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// Writes `body` (a LatticeCluster status apply) unless `current` already says the same:
/// a status written with nothing new would change the world and start a write loop.
pub(super) async fn write_status(
    client: &Client,
    name: &str,
    current: &Value,
    body: &Value,
) -> Result<(), String> {
    if normalized(current) == normalized(&body["status"]) {
        return Ok(());
    }
    let api: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
    absent_ok(
        api.patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await,
    )
    .map_err(|e| format!("cannot write the status of {name}: {e}"))
}

/// Publishes one Event about `cluster`.
pub(super) async fn publish(
    events: &Events,
    cluster: &LatticeCluster,
    warning: bool,
    reason: &'static str,
    action: &'static str,
    note: String,
) {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    events
        .publish(vec![Pending {
            regarding: reference(
                API_VERSION,
                Kind::LatticeCluster.name(),
                None,
                &name,
                cluster.metadata.uid.as_deref(),
            ),
            warning,
            reason,
            action,
            note,
        }])
        .await;
}

/// A decision as the status shows it. Its time and snapshot move only with the decision:
/// the status write itself changes the world and so the next snapshot's digest, and
/// comparing digests would rewrite the status on every snapshot, forever.
pub(super) fn entry(
    decision: &LifecycleDecision,
    previous: Option<&LifecycleDecisionStatus>,
    now: jiff::Timestamp,
) -> LifecycleDecisionStatus {
    let mut entry = LifecycleDecisionStatus {
        action: decision.action.as_str().into(),
        principal: decision.principal.clone(),
        allowed: decision.allowed,
        policies: decision.policies.clone(),
        advice: decision.advice.clone(),
        errors: decision.errors.clone(),
        snapshot: decision.digest.clone(),
        time: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    if let Some(p) = previous
        && p.allowed == entry.allowed
        && p.policies == entry.policies
        && p.advice == entry.advice
        && p.errors == entry.errors
    {
        entry.time = p.time.clone();
        entry.snapshot = p.snapshot.clone();
    }
    entry
}

/// One line for a decision kept in status, as [`LifecycleDecision::summary`] says it.
pub(super) fn status_summary(d: &LifecycleDecisionStatus) -> String {
    let verdict = if d.allowed { "allowed" } else { "denied" };
    let by = match (d.policies.is_empty(), d.allowed) {
        (false, _) => format!(" (by {})", d.policies.join(", ")),
        (true, true) => String::new(),
        (true, false) if d.errors.is_empty() => " (no policy permits it)".into(),
        (true, false) => format!(" ({})", d.errors.join("; ")),
    };
    format!("{} by Cluster::{:?}: {verdict}{by}", d.action, d.principal)
}

/// Where children fetch their agent: this cell's first advertised address, on this
/// cluster's `parentConfig.bootstrapPort` (8443 by default).
fn bootstrap_endpoint(world: &lattice_engine::World, options: &ParentOptions) -> BootstrapEndpoint {
    let port = world
        .objects()
        .find_map(|(_, o)| match o {
            Object::Cluster(c) if c.metadata.name.as_deref() == Some(options.cluster.as_str()) => {
                c.spec.parent_config.as_ref().and_then(|p| p.bootstrap_port)
            }
            _ => None,
        })
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(8443);
    let host = options
        .addresses
        .first()
        .cloned()
        .unwrap_or_else(|| "lattice-cell.invalid".into());
    BootstrapEndpoint { host, port }
}

/// Copies the child's token and the CA from its bootstrap bundle into the Secret its
/// control plane reads (`<child>-lattice-bootstrap` in `capi-<child>`). Once the agent has
/// used the token, the bundle holds none and the copy keeps what it had.
async fn bootstrap_secret(
    client: &Client,
    options: &ParentOptions,
    child: &str,
) -> Result<(), String> {
    let bundles: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let Some(secret) = bundles
        .get_opt(&bootstrap_secret_name(child))
        .await
        .map_err(|e| format!("cannot read {child}'s bootstrap bundle: {e}"))?
    else {
        // The cell mints it on its next round.
        return Ok(());
    };
    let bundle = Bundle::from_secret(&secret)?;
    let Some(token) = bundle.token else {
        return Ok(());
    };
    let namespace = lattice_clusters::capi::namespace(child);
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": lattice_clusters::bootstrap::secret_name(child),
            "namespace": namespace,
            "labels": {lattice_clusters::capi::DERIVED_FROM: child},
        },
        "type": "Opaque",
        "stringData": {"token": token, "ca.crt": bundle.ca_pem},
    });
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &lattice_clusters::bootstrap::secret_name(child),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|e| format!("cannot write {child}'s bootstrap Secret: {e}"))
}

/// The CAPI `Cluster` of `child`, where it exists.
pub(super) async fn read_capi_cluster(
    client: &Client,
    child: &str,
) -> Result<Option<Value>, String> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(lattice_clusters::capi::CORE, "v1beta2", "Cluster"),
        "clusters",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &lattice_clusters::capi::namespace(child),
        &ar,
    );
    match api.get_opt(child).await {
        Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or_default())),
        // No CAPI CRDs installed: nothing was provisioned.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(format!("cannot read {child}'s CAPI Cluster: {e}")),
    }
}

/// The API resource of a derived object (every CAPI kind's plural is its lowercase kind
/// with an `s`).
pub(super) fn resource_of(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    )
}

/// A status as JSON with nulls and empty lists dropped, so what was read compares with what
/// would be written.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}
