//! Decommission on a parent: a child LatticeCluster that is deleted is torn down here, in
//! order, once Cedar allows it, and only then goes.
//!
//! Every child this cluster provisions carries the finalizer [`FINALIZER`]
//! ([`super::finalizer::hold`]), so
//! its deletion waits for this controller. For a child being deleted, each round:
//!
//! 1. asks `Decommission` (this cluster → the child; context: its phase, its agent's
//!    health, and `objectCount`, the clusters it still manages: those this server holds
//!    under it and those its agent reports). Denied, nothing happens: the child stays
//!    `Deleting` with the decision, its policies and advice in status, the condition
//!    `DecommissionAllowed=False` and an Event, until the forbid is withdrawn;
//! 2. for a pivoted child, asks `Unpivot`: its Cluster API objects come back here first
//!    ([`super::pivot::unpivot_cluster`]), so that Cluster API on this cluster deletes
//!    the machines the child runs on, rather than the child deleting itself;
//! 3. deletes the CAPI `Cluster` and waits until Cluster API has deleted it (its own
//!    finalizer holds it while the machines and infrastructure go);
//! 4. deletes what is left of the child's objects in `capi-<child>` (templates, the
//!    bootstrap Secret), then the namespace;
//! 5. releases the finalizer. The LatticeCluster goes, and with it (in the cell's next
//!    round) the child's bootstrap Secret; its certificates are revoked, so its agent's
//!    stream is closed and refused from then on.

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use lattice_engine::{Projection, Snapshot};
use lattice_gates::lifecycle::{self, Lifecycle, LifecycleDecision, LifecycleFacts};
use lattice_schemas::crd::cluster::{LatticeCluster, LifecycleDecisionStatus};
use lattice_schemas::crd::{API_VERSION, Kind};
use lattice_schemas::manifest::Object;
use lattice_tunnel::cell::Cell;
use serde_json::{Value, json};

use super::absent_ok;
use super::finalizer::{FINALIZER, release};
use super::pivot;
use super::provisioning::{
    Provisioning, entry, publish, read_capi_cluster, status_summary, write_status,
};
use crate::operator::events::Events;

/// Where a teardown stands, for the `TornDown` condition.
enum Progress {
    /// Waiting for a decision that allows the next step.
    Held(String),
    /// A step is under way.
    Working(String),
    /// The finalizer was released: nothing is left to report on.
    Done,
}

impl Provisioning {
    /// One round of decommissioning `cluster`, a child being deleted.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn decommission(
        &mut self,
        client: &Client,
        cell: &Cell,
        events: &Events,
        world: &lattice_engine::World,
        projection: &Projection,
        snapshot: &Snapshot,
        cluster: &LatticeCluster,
    ) -> Result<(), String> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let held = cluster
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER);
        if !held {
            // Not provisioned here (or already released): nothing of it to tear down.
            return Ok(());
        }
        self.collect_unpivot(events, cluster).await;
        let now = jiff::Timestamp::now();
        let status = cluster.status.clone().unwrap_or_default();
        let manages = world
            .objects()
            .filter(|(_, o)| matches!(o, Object::Cluster(c) if c.spec.parent.as_deref() == Some(name.as_str())))
            .count()
            + status.descendants.len();
        let facts = LifecycleFacts::of(cluster, manages, now);
        let decision = lifecycle::decide(
            snapshot,
            projection,
            Lifecycle::Decommission,
            cluster,
            &facts,
        );
        self.event(events, cluster, &decision).await;
        let mut decided = vec![decision.clone()];
        // A move back that just completed recorded `pivoted: false`; the world may not show
        // it yet.
        let pivoted =
            status.pivoted.unwrap_or(false) && !matches!(self.unpivoted.get(&name), Some(Ok(_)));
        let progress = if !decision.allowed {
            Progress::Held(format!("{}: nothing is torn down", decision.summary()))
        } else if pivoted {
            let unpivot = self
                .unpivot(client, cell, events, projection, snapshot, cluster, now)
                .await;
            let progress = if unpivot.allowed {
                Progress::Working(match self.unpivoted.get(&name) {
                    Some(Err(e)) => {
                        format!("moving {name}'s Cluster API objects back: {e}; sent again")
                    }
                    _ => format!("moving {name}'s Cluster API objects back here"),
                })
            } else {
                Progress::Held(format!("{}: the objects stay in {name}", unpivot.summary()))
            };
            decided.push(unpivot);
            progress
        } else {
            self.tear_down(client, events, cluster).await?
        };
        let (Progress::Held(message) | Progress::Working(message)) = &progress else {
            return Ok(());
        };
        let held = matches!(progress, Progress::Held(_));
        self.write_status(client, cluster, &decided, held, message, now)
            .await
    }

    /// Takes the outcome of `cluster`'s move back if it has ended, with its Event.
    async fn collect_unpivot(&mut self, events: &Events, cluster: &LatticeCluster) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        if let Some(task) = self.unpivoting.get(&name)
            && task.is_finished()
            && let Some(task) = self.unpivoting.remove(&name)
        {
            let outcome = task
                .await
                .unwrap_or_else(|e| Err(format!("the move back stopped: {e}")));
            let (warning, reason, note) = match &outcome {
                Ok(m) => (
                    false,
                    "Unpivoted",
                    format!(
                        "moved {} Cluster API objects back from {name} in {} pages in {} ms",
                        m.objects,
                        m.batches,
                        m.elapsed.as_millis()
                    ),
                ),
                Err(e) => (true, "UnpivotFailed", format!("{e}; sent again")),
            };
            tracing::info!(cluster = %name, "{note}");
            publish(events, cluster, warning, reason, "Unpivot", note).await;
            self.unpivoted.insert(name.clone(), outcome);
        }
    }

    /// Asks `Unpivot` for a pivoted child being decommissioned and, allowed, starts its
    /// move back (or collects the one that ended).
    #[allow(clippy::too_many_arguments)]
    async fn unpivot(
        &mut self,
        client: &Client,
        cell: &Cell,
        events: &Events,
        projection: &Projection,
        snapshot: &Snapshot,
        cluster: &LatticeCluster,
        now: jiff::Timestamp,
    ) -> LifecycleDecision {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let mut facts = LifecycleFacts::of(cluster, 0, now);
        facts.phase = lattice_clusters::phase::Phase::Deleting.as_str().to_owned();
        let decision = lifecycle::decide(snapshot, projection, Lifecycle::Unpivot, cluster, &facts);
        self.event(events, cluster, &decision).await;
        if decision.allowed && !self.unpivoting.contains_key(&name) {
            tracing::info!(cluster = %name, "unpivot allowed: moving back");
            let (client, cell, child) = (client.clone(), cell.clone(), name.clone());
            self.unpivoting.insert(
                name,
                tokio::spawn(async move {
                    let source = pivot::ThroughTunnel {
                        cell,
                        cluster: child.clone(),
                    };
                    pivot::unpivot_cluster(&client, &source, &child).await
                }),
            );
        }
        decision
    }

    /// The teardown of a child whose Cluster API objects are here, one step per round.
    async fn tear_down(
        &mut self,
        client: &Client,
        events: &Events,
        cluster: &LatticeCluster,
    ) -> Result<Progress, String> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let namespace = lattice_clusters::capi::namespace(&name);
        if let Some(capi) = read_capi_cluster(client, &name).await? {
            if capi["metadata"]["deletionTimestamp"].is_null() {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &namespace,
                    &ApiResource::from_gvk_with_plural(
                        &kube::api::GroupVersionKind::gvk(
                            lattice_clusters::capi::CORE,
                            "v1beta2",
                            "Cluster",
                        ),
                        "clusters",
                    ),
                );
                absent_ok(api.delete(&name, &DeleteParams::default()).await)
                    .map_err(|e| format!("cannot delete {name}'s CAPI Cluster: {e}"))?;
                tracing::info!(cluster = %name, "decommission: CAPI Cluster deleted");
            }
            return Ok(Progress::Working(format!(
                "waiting for Cluster API to delete Cluster {name} (its machines and infrastructure)"
            )));
        }
        let left =
            lattice_clusters::pivot::plan(&name, &pivot::discover(client, &namespace).await?);
        if !left.is_empty() {
            pivot::delete_left(client, &left).await?;
            return Ok(Progress::Working(format!(
                "deleting {} objects left in {namespace}",
                left.len()
            )));
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        absent_ok(
            namespaces
                .delete(&namespace, &DeleteParams::default())
                .await,
        )
        .map_err(|e| format!("cannot delete namespace {namespace}: {e}"))?;
        release(client, &name).await?;
        tracing::info!(cluster = %name, "decommissioned");
        publish(
            events,
            cluster,
            false,
            "Decommissioned",
            "Decommission",
            format!("{name} is torn down: its Cluster API objects and {namespace} are deleted"),
        )
        .await;
        Ok(Progress::Done)
    }

    async fn write_status(
        &self,
        client: &Client,
        cluster: &LatticeCluster,
        decided: &[LifecycleDecision],
        held: bool,
        message: &str,
        now: jiff::Timestamp,
    ) -> Result<(), String> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let status = cluster.status.clone().unwrap_or_default();
        let mut decisions: Vec<LifecycleDecisionStatus> = status
            .decisions
            .iter()
            .filter(|d| !decided.iter().any(|n| n.action.as_str() == d.action))
            .cloned()
            .collect();
        for d in decided {
            let previous = status
                .decisions
                .iter()
                .find(|p| p.action == d.action.as_str());
            decisions.push(entry(d, previous, now));
        }
        decisions.sort_by(|a, b| a.action.cmp(&b.action));
        let condition = |type_: &str, action: Lifecycle| {
            decisions.iter().find(|d| d.action == action.as_str()).map(|d| {
                json!({
                    "type": type_,
                    "status": if d.allowed { "True" } else { "False" },
                    "reason": if d.allowed { "Allowed" } else if d.errors.is_empty() { "Denied" } else { "Invalid" },
                    "message": status_summary(d),
                })
            })
        };
        let mut conditions: Vec<Value> = status
            .conditions
            .iter()
            .filter(|c| {
                !matches!(
                    c.type_.as_str(),
                    "DecommissionAllowed" | "UnpivotAllowed" | "TornDown"
                )
            })
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        conditions.extend(condition("DecommissionAllowed", Lifecycle::Decommission));
        if decided.iter().any(|d| d.action == Lifecycle::Unpivot) {
            conditions.extend(condition("UnpivotAllowed", Lifecycle::Unpivot));
        }
        conditions.push(json!({
            "type": "TornDown",
            "status": "False",
            "reason": if held { "Held" } else { "TearingDown" },
            "message": message,
        }));
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": Kind::LatticeCluster.name(),
            "status": {
                "phase": lattice_clusters::phase::Phase::Deleting.as_str(),
                "ready": false,
                "components": status.components,
                "decisions": decisions,
                "conditions": conditions,
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
}
