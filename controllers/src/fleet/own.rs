//! A pivoted cluster managing itself: `lattice-operator run --cluster-name NAME` on a
//! cluster whose own LatticeCluster says `status.pivoted` (the pivot's last step hands it
//! over, [`super::pivot`]) derives that cluster's Cluster API objects as its parent did,
//! asks `Provision` of itself (the baseline's `pivoted-cluster-manages-itself`), and
//! applies them into its own `capi-<cluster>` when allowed. Scaling a worker pool or
//! changing a template is then an edit of the cluster's own LatticeCluster, and needs no
//! parent: the parent may be stopped, or gone.
//!
//! It derives with the bootstrap endpoint the parent used (the adopted object's
//! `lattice.dev/bootstrap-endpoint`), so what it applies is what was moved until the spec
//! changes. It acts only while the moved `Cluster` is here and unpaused: a move (back) in
//! progress pauses it, and an unpivot records `pivoted: false` first. It never creates the
//! namespace or the `Cluster`'s bootstrap Secret; those came with the move.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use lattice_clusters::pivot::ENDPOINT_ANNOTATION;
use lattice_clusters::{BootstrapEndpoint, ProvisionOptions, provision};
use lattice_engine::{Projection, Snapshot};
use lattice_gates::lifecycle::{self, Lifecycle, LifecycleDecision, LifecycleFacts};
use lattice_schemas::crd::cluster::LatticeCluster;
use lattice_schemas::crd::{API_VERSION, Kind};
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::inputs::Published;
use super::provisioning::{
    MANAGER, digest, entry, note, publish, read_capi_cluster, resource_of, status_summary,
    write_status,
};
use crate::operator::events::Events;
use crate::webhook::State;

/// Re-applies unchanged objects every this many rounds, correcting drift.
const REAPPLY_EVERY: u32 = 12;

/// What this cluster last applied and decided about itself.
pub struct OwnCluster {
    cluster: String,
    projection: Option<(Arc<Published>, Arc<Projection>)>,
    /// The digest of what was last applied, and the rounds since.
    applied: Option<(u64, u32)>,
    /// The last decision, for its Event.
    decided: Option<(bool, Vec<String>)>,
}

/// Runs the cluster's management of itself on the leader, each time the world changes
/// and every few seconds, until the process stops.
pub async fn run(
    client: Client,
    cluster: String,
    mut worlds: watch::Receiver<Option<Arc<Published>>>,
    snapshots: Arc<State>,
) {
    let events = Events::new(client.clone(), &cluster);
    let mut own = OwnCluster::new(&cluster);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = worlds.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let Some(published) = worlds.borrow_and_update().clone() else {
            continue;
        };
        let Some(current) = snapshots.current() else {
            continue;
        };
        let snapshot: &Snapshot = AsRef::as_ref(&*current);
        if let Err(e) = own.reconcile(&client, &events, &published, snapshot).await {
            tracing::warn!(cluster = %cluster, "managing itself: {e}");
        }
    }
}

impl OwnCluster {
    /// Nothing applied or decided yet about `cluster`.
    pub fn new(cluster: &str) -> OwnCluster {
        OwnCluster {
            cluster: cluster.to_owned(),
            projection: None,
            applied: None,
            decided: None,
        }
    }

    /// One round: decide and apply when this cluster holds its own pivoted LatticeCluster.
    pub async fn reconcile(
        &mut self,
        client: &Client,
        events: &Events,
        published: &Arc<Published>,
        snapshot: &Snapshot,
    ) -> Result<(), String> {
        let world = &published.world;
        let Some(cluster) = world.objects().find_map(|(_, o)| match o {
            Object::Cluster(c) if c.metadata.name.as_deref() == Some(self.cluster.as_str()) => {
                Some(c)
            }
            _ => None,
        }) else {
            return Ok(());
        };
        let status = cluster.status.clone().unwrap_or_default();
        if !status.pivoted.unwrap_or(false) || cluster.metadata.deletion_timestamp.is_some() {
            // Its parent manages it (or will again, or it is going).
            self.applied = None;
            return Ok(());
        }
        let Some(capi) = read_capi_cluster(client, &self.cluster).await? else {
            return Ok(());
        };
        if capi["spec"]["paused"] == true {
            // A move in either direction is under way: nothing here may act on it.
            return Ok(());
        }
        let projection = match &self.projection {
            Some((p, projection)) if Arc::ptr_eq(p, published) => projection.clone(),
            _ => {
                let projection = Arc::new(Projection::of(world));
                self.projection = Some((published.clone(), projection.clone()));
                projection
            }
        };
        let now = jiff::Timestamp::now();
        let (decision, objects) = self.decide(world, &projection, snapshot, cluster, now);
        self.event(events, cluster, &decision).await;
        if decision.allowed {
            self.apply(client, &objects).await?;
        }
        self.write_status(client, cluster, &decision, now).await
    }

    /// Derives the objects and asks `Provision` of this cluster about itself; anything
    /// that cannot be derived denies, saying why.
    fn decide(
        &self,
        world: &lattice_engine::World,
        projection: &Projection,
        snapshot: &Snapshot,
        cluster: &LatticeCluster,
        now: jiff::Timestamp,
    ) -> (LifecycleDecision, Vec<Value>) {
        let denied = |error: String| LifecycleDecision {
            action: Lifecycle::Provision,
            principal: self.cluster.clone(),
            resource: self.cluster.clone(),
            allowed: false,
            policies: Vec::new(),
            advice: Vec::new(),
            errors: vec![error],
            digest: snapshot.digest().to_owned(),
        };
        // A child's control plane runs the hook its parent's endpoint is written into; a
        // root `lattice install` provisioned runs none.
        let endpoint = match cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ENDPOINT_ANNOTATION))
        {
            Some(e) => match e.parse::<BootstrapEndpoint>() {
                Ok(e) => Some(e),
                Err(e) => return (denied(format!("{ENDPOINT_ANNOTATION}: {e}")), Vec::new()),
            },
            None if cluster.spec.parent.is_none() => None,
            None => {
                return (
                    denied(format!(
                        "no {ENDPOINT_ANNOTATION} annotation: the pivot did not hand this cluster over"
                    )),
                    Vec::new(),
                );
            }
        };
        let infra = world.objects().find_map(|(_, o)| match o {
            Object::InfraProvider(p)
                if p.metadata.name.as_deref() == Some(cluster.spec.provider_ref.as_str()) =>
            {
                Some(p.spec.clone())
            }
            _ => None,
        });
        let provisioned = match provision(
            cluster,
            &ProvisionOptions {
                endpoint,
                infra: infra.as_ref(),
            },
        ) {
            Ok(p) => p,
            Err(e) => return (denied(e.to_string()), Vec::new()),
        };
        // The namespace came with the move, and creating namespaces is no right of ours.
        let objects: Vec<Value> = provisioned
            .objects
            .into_iter()
            .filter(|o| o["kind"] != "Namespace")
            .collect();
        let mut facts = LifecycleFacts::of(cluster, objects.len(), now);
        facts.phase = lattice_clusters::phase::Phase::Ready.as_str().to_owned();
        let decision =
            lifecycle::decide_own(snapshot, projection, Lifecycle::Provision, cluster, &facts);
        (decision, objects)
    }

    async fn event(&mut self, events: &Events, cluster: &LatticeCluster, d: &LifecycleDecision) {
        let key = (d.allowed, d.policies.clone());
        if self.decided.as_ref() == Some(&key) {
            return;
        }
        self.decided = Some(key);
        let reason = if d.allowed {
            "ProvisionAllowed"
        } else {
            "ProvisionDenied"
        };
        publish(events, cluster, !d.allowed, reason, "Provision", note(d)).await;
    }

    /// Applies `objects` when they changed, or every [`REAPPLY_EVERY`] rounds.
    async fn apply(&mut self, client: &Client, objects: &[Value]) -> Result<(), String> {
        let digest = digest(objects);
        if let Some((d, round)) = self.applied
            && d == digest
            && round + 1 < REAPPLY_EVERY
        {
            self.applied = Some((digest, round + 1));
            return Ok(());
        }
        let namespace = lattice_clusters::capi::namespace(&self.cluster);
        let params = PatchParams::apply(MANAGER).force();
        for object in objects {
            let ar = resource_of(object);
            if object["metadata"]["namespace"].as_str() != Some(namespace.as_str()) {
                return Err(format!(
                    "{} {} is outside {namespace}: not applied",
                    ar.kind, object["metadata"]["name"]
                ));
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &ar);
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            api.patch(name, &params, &Patch::Apply(object))
                .await
                .map_err(|e| format!("cannot apply {} {name}: {e}", ar.kind))?;
        }
        if self.applied.map(|(d, _)| d) != Some(digest) {
            tracing::info!(cluster = %self.cluster, objects = objects.len(), "applied its own Cluster API objects");
        }
        self.applied = Some((digest, 0));
        Ok(())
    }

    /// The phase, the decision and its condition in the cluster's own status, written only
    /// when they change.
    async fn write_status(
        &self,
        client: &Client,
        cluster: &LatticeCluster,
        decision: &LifecycleDecision,
        now: jiff::Timestamp,
    ) -> Result<(), String> {
        let status = cluster.status.clone().unwrap_or_default();
        let previous = status
            .decisions
            .iter()
            .find(|d| d.action == Lifecycle::Provision.as_str());
        let decided = entry(decision, previous, now);
        let condition = json!({
            "type": "ProvisionAllowed",
            "status": if decided.allowed { "True" } else { "False" },
            "reason": if decided.allowed { "Allowed" } else if decided.errors.is_empty() { "Denied" } else { "Invalid" },
            "message": status_summary(&decided),
        });
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": Kind::LatticeCluster.name(),
            "status": {
                "phase": lattice_clusters::phase::Phase::Ready.as_str(),
                "ready": true,
                "decisions": [decided],
                "conditions": [condition],
            },
        });
        let current = json!({
            "phase": status.phase,
            "ready": status.ready,
            "decisions": status.decisions,
            "conditions": status.conditions,
        });
        write_status(client, &self.cluster, &current, &body).await
    }
}
