//! The effector: makes the cluster hold what a [`Plan`] authorized, and nothing else.
//!
//! Per workload whose [`Desired`] changed: server-side apply (field manager `lattice`) layer
//! by layer, delete what it had and no longer derives (revocation), then write its status.
//! A failure is retried with exponential backoff; a success is not repeated until the
//! decision changes. [`Effector::sweep`] deletes derived objects whose owner no longer
//! derives them, including those left from before a restart.
//!
//! Per namespace whose [`NamespaceDesired`] changed (including what the cluster shows of
//! its baseline, so a hand edit or delete is put right on the next pass): apply its
//! default-deny baseline and write its Pod Security label, or, when it opted out, delete
//! the baseline objects it has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use futures::future::try_join_all;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, Error};
use lattice_compiler::compile::MANAGER;
use lattice_schemas::crd::{API_VERSION, Kind};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::index::PolicyOutcome;
use super::plan::{Desired, NamespaceDesired, Owner, Plan};
use super::resources::{DERIVED, Layer, ObjectId, derived_kind};
use super::status::{Effect, policy_status, workload_status};

/// How many workloads are reconciled at once.
const CONCURRENCY: usize = 32;
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// What was last applied for a workload.
struct Applied {
    digest: String,
    objects: BTreeSet<ObjectId>,
    /// Set while failing: when to try again, and how long the next wait is.
    retry: Option<(Instant, Duration)>,
}

/// Counts of one pass, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub reconciled: usize,
    pub failed: usize,
    pub removed_owners: usize,
}

/// Applies plans; holds what it applied so unchanged workloads are left alone.
pub struct Effector {
    client: Client,
    metrics: std::sync::Arc<super::metrics::Metrics>,
    events: super::events::Events,
    applied: BTreeMap<Owner, Applied>,
    policies: BTreeMap<(String, String), (Option<i64>, PolicyOutcome)>,
    /// Per namespace: the digest applied, and while failing when to try again.
    namespaces: BTreeMap<String, (String, Option<(Instant, Duration)>)>,
    /// Per LatticeQuota, the status last written.
    quotas: BTreeMap<String, lattice_schemas::crd::quota::QuotaStatus>,
    written: Written,
}

impl Effector {
    pub fn new(
        client: Client,
        metrics: std::sync::Arc<super::metrics::Metrics>,
        identity: &str,
    ) -> Effector {
        Effector {
            events: super::events::Events::new(client.clone(), identity),
            client,
            metrics,
            applied: BTreeMap::new(),
            policies: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            quotas: BTreeMap::new(),
            written: Written::default(),
        }
    }

    /// Makes every failed workload and namespace due now (their next wait still doubles).
    pub fn retry_now(&mut self) {
        let now = Instant::now();
        for a in self.applied.values_mut() {
            if let Some((at, _)) = a.retry.as_mut() {
                *at = now;
            }
        }
        for (_, retry) in self.namespaces.values_mut() {
            if let Some((at, _)) = retry.as_mut() {
                *at = now;
            }
        }
    }

    /// When the earliest failed workload is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.applied
            .values()
            .filter_map(|a| a.retry.map(|(at, _)| at))
            .chain(
                self.namespaces
                    .values()
                    .filter_map(|(_, r)| r.map(|(at, _)| at)),
            )
            .min()
    }

    /// Applies every namespace's baseline and label whose digest changed or whose retry
    /// is due. Returns how many were reconciled and how many failed.
    async fn run_namespaces(&mut self, plan: &Plan) -> (usize, usize) {
        let now = Instant::now();
        let due: Vec<(&String, &NamespaceDesired)> = plan
            .namespaces
            .iter()
            .filter(|(ns, d)| match self.namespaces.get(*ns) {
                None => true,
                Some((digest, retry)) => {
                    *digest != d.digest || retry.is_some_and(|(at, _)| at <= now)
                }
            })
            .collect();
        let client = &self.client;
        let written = &self.written;
        let metrics = &*self.metrics;
        let results: Vec<(String, String, Result<Vec<Value>, String>)> =
            futures::stream::iter(due.into_iter().map(|(ns, d)| async move {
                (
                    ns.clone(),
                    d.digest.clone(),
                    reconcile_namespace(client, written, metrics, ns, d).await,
                )
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut failed = 0;
        let reconciled = results.len();
        let mut events = Vec::new();
        for (ns, digest, result) in results {
            let retry = match result {
                Ok(corrected) => {
                    for o in corrected {
                        events.push(super::events::Pending {
                            regarding: super::events::reference(
                                o["apiVersion"].as_str().unwrap_or_default(),
                                o["kind"].as_str().unwrap_or_default(),
                                Some(&ns),
                                o["metadata"]["name"].as_str().unwrap_or_default(),
                                None,
                            ),
                            warning: true,
                            reason: "DriftCorrected",
                            action: "Reconcile",
                            note:
                                "edited by hand; put back as the default-deny baseline derives it"
                                    .into(),
                        });
                    }
                    None
                }
                Err(e) => {
                    failed += 1;
                    let wait = self
                        .namespaces
                        .get(&ns)
                        .and_then(|(_, r)| r.map(|(_, w)| (w * 2).min(MAX_BACKOFF)))
                        .unwrap_or(Duration::from_secs(1));
                    tracing::warn!(namespace = %ns, retry_in = ?wait, "baseline not applied: {e}");
                    Some((Instant::now() + wait, wait))
                }
            };
            self.namespaces.insert(ns, (digest, retry));
        }
        self.namespaces
            .retain(|ns, _| plan.namespaces.contains_key(ns));
        self.events.publish(events).await;
        (reconciled, failed)
    }

    /// Reconciles every workload of `plan` whose decision changed or whose retry is due,
    /// removes the objects of workloads that are gone, and writes CedarPolicy statuses.
    pub async fn run(&mut self, plan: &Plan) -> Pass {
        let now = Instant::now();
        let snapshot = plan.current.snapshot.digest().to_owned();
        let stamp = jiff::Timestamp::now().to_string();
        let due: Vec<(&Owner, &Desired, BTreeSet<ObjectId>)> = plan
            .workloads
            .iter()
            .filter(|(owner, desired)| match self.applied.get(*owner) {
                None => true,
                Some(a) => a.digest != desired.digest || a.retry.is_some_and(|(at, _)| at <= now),
            })
            .map(|(owner, desired)| {
                let before = self
                    .applied
                    .get(owner)
                    .map(|a| a.objects.clone())
                    .unwrap_or_default();
                (owner, &**desired, before)
            })
            .collect();
        let client = &self.client;
        let written = &self.written;
        let results: Vec<(Owner, String, Effect, BTreeSet<ObjectId>)> =
            futures::stream::iter(due.into_iter().map(|(owner, desired, before)| {
                let snapshot = snapshot.clone();
                let stamp = stamp.clone();
                // Everything logged while reconciling carries the workload and the snapshot
                // it was decided on (as span fields in JSON logs).
                let span = tracing::info_span!(
                    "reconcile",
                    workload = %owner,
                    snapshot = %snapshot
                );
                tracing::Instrument::instrument(
                    async move {
                        let started = std::time::Instant::now();
                        let (effect, now_applied) =
                            reconcile(client, written, owner, desired, &before, &snapshot, &stamp)
                                .await;
                        match &effect {
                            Effect::Applied { objects, removed } => tracing::info!(
                                objects,
                                removed,
                                took_ms = started.elapsed().as_millis() as u64,
                                "reconciled"
                            ),
                            Effect::Failed(_) => {}
                        }
                        (owner.clone(), desired.digest.clone(), effect, now_applied)
                    },
                    span,
                )
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut pass = Pass::default();
        let mut events = Vec::new();
        for (owner, digest, effect, objects) in results {
            pass.reconciled += 1;
            let desired = plan.workloads.get(&owner);
            let denied =
                desired.is_some_and(|d| !matches!(d.verdict, super::plan::Verdict::Authorized));
            if let Some(event) = desired.and_then(|d| workload_event(&owner, d, &effect, &snapshot))
            {
                events.push(event);
            }
            self.metrics.reconciled(
                owner.kind.name(),
                match (&effect, denied) {
                    (Effect::Failed(_), _) => "error",
                    (Effect::Applied { .. }, true) => "denied",
                    (Effect::Applied { .. }, false) => "applied",
                },
            );
            let retry = match &effect {
                Effect::Applied { .. } => None,
                Effect::Failed(e) => {
                    pass.failed += 1;
                    let wait = self
                        .applied
                        .get(&owner)
                        .and_then(|a| a.retry.map(|(_, w)| (w * 2).min(MAX_BACKOFF)))
                        .unwrap_or(Duration::from_secs(1));
                    tracing::warn!(%owner, retry_in = ?wait, "reconcile failed: {e}");
                    Some((Instant::now() + wait, wait))
                }
            };
            self.applied.insert(
                owner,
                Applied {
                    digest,
                    objects,
                    retry,
                },
            );
        }
        // Workloads that were deleted: what they derived goes with them (owner references
        // would do it too, where a garbage collector runs).
        let gone: Vec<Owner> = self
            .applied
            .keys()
            .filter(|o| !plan.workloads.contains_key(*o))
            .cloned()
            .collect();
        for owner in gone {
            if let Some(a) = self.applied.remove(&owner) {
                let mut failed = false;
                for id in &a.objects {
                    if let Err(e) = delete(client, id).await {
                        tracing::warn!(%owner, object = %id, "cannot delete: {e}");
                        failed = true;
                    }
                }
                if failed {
                    // Left for the next sweep.
                    continue;
                }
                pass.removed_owners += 1;
            }
        }
        let (reconciled, failed) = self.run_namespaces(plan).await;
        pass.reconciled += reconciled;
        pass.failed += failed;
        self.write_policy_statuses(plan, &stamp).await;
        self.write_quota_statuses(plan).await;
        // Events last: what they report is done, and no baseline waits for them.
        self.events.publish(events).await;
        pass
    }

    /// Each LatticeQuota's usage and the workloads it refused, written when they change.
    async fn write_quota_statuses(&mut self, plan: &Plan) {
        let ledger = plan.current.snapshot.quotas();
        let world = &plan.current.world;
        let names: Vec<String> = world
            .of_kind(Kind::LatticeQuota.name())
            .map(|(k, _)| k.name.clone())
            .collect();
        self.quotas.retain(|name, _| names.contains(name));
        for name in names {
            let status = super::status::quota_status(&name, ledger, plan);
            if self.quotas.get(&name) == Some(&status) {
                continue;
            }
            match patch_status(&self.client, Kind::LatticeQuota, None, &name, &status).await {
                Ok(()) => {
                    self.quotas.insert(name, status);
                }
                Err(e) => tracing::warn!(quota = %name, "cannot write status: {e}"),
            }
        }
    }

    async fn write_policy_statuses(&mut self, plan: &Plan, stamp: &str) {
        for (id, (generation, outcome, previous)) in &plan.policies {
            let current = (*generation, outcome.clone());
            if self.policies.get(id) == Some(&current) {
                continue;
            }
            let status = policy_status(outcome, *generation, previous, stamp);
            match patch_status(&self.client, Kind::CedarPolicy, Some(&id.0), &id.1, &status).await {
                Ok(()) => {
                    self.policies.insert(id.clone(), current);
                    if let PolicyOutcome::Rejected { errors } = outcome {
                        self.events
                            .publish(vec![super::events::Pending {
                                regarding: super::events::reference(
                                    API_VERSION,
                                    "CedarPolicy",
                                    Some(&id.0),
                                    &id.1,
                                    None,
                                ),
                                warning: true,
                                reason: "PolicyRejected",
                                action: "Load",
                                note: format!(
                                    "not loaded (the version accepted before, if any, stays in force): {}",
                                    errors.join("; ")
                                ),
                            }])
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(policy = %format!("{}/{}", id.0, id.1), "cannot write status: {e}")
                }
            }
        }
        self.policies.retain(|id, _| plan.policies.contains_key(id));
    }

    /// Puts right what the drift watches found (see [`super::drift`]), against `plan`, the
    /// plan last applied: a derived object deleted is applied again, one edited is replaced
    /// with what was derived, and one that claims a Lattice owner but that no workload
    /// derives is deleted. Objects of a workload still failing wait in `inbox` until it
    /// applies. Returns how many objects were corrected.
    pub async fn correct_drift(&self, plan: &Plan, inbox: &super::drift::Inbox) -> usize {
        let found = inbox.drain();
        // Content this operator wrote last is its own write coming back.
        let found: Vec<ObjectId> = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            found
                .into_iter()
                .filter(|(id, f)| f.is_none() || written.get(id) != f.as_ref())
                .map(|(id, _)| id)
                .collect()
        };
        if found.is_empty() {
            return 0;
        }
        let wanted: BTreeSet<&ObjectId> = found.iter().collect();
        let mut derived: HashMap<&ObjectId, (&Owner, &Value)> = HashMap::new();
        for (owner, desired) in &plan.workloads {
            for o in &desired.objects {
                if let Some(id) = ObjectId::of(o)
                    && let Some(key) = wanted.get(&id)
                {
                    derived.insert(key, (owner, o));
                }
            }
        }
        let settled = |owner: &Owner| {
            self.applied.get(owner).is_some_and(|a| {
                a.retry.is_none() && plan.workloads.get(owner).map(|d| &d.digest) == Some(&a.digest)
            })
        };
        let client = &self.client;
        let written = &self.written;
        // A workload still failing is put right by its own retry first; what drifted in the
        // meantime is looked at again after it (kept, not dropped).
        let (waiting, ready): (Vec<&ObjectId>, Vec<&ObjectId>) = found
            .iter()
            .partition(|id| derived.get(*id).is_some_and(|(owner, _)| !settled(owner)));
        inbox.defer(waiting.into_iter().cloned());
        let corrections: Vec<super::events::Pending> = futures::stream::iter(
            ready
                .into_iter()
                .map(|id| (id, derived.get(id).map(|(owner, o)| (*owner, *o))))
                .map(|(id, desired)| async move {
                    match correct(client, written, id, desired).await {
                        Ok(corrected) => corrected,
                        Err(e) => {
                            tracing::warn!(object = %id, "drift not corrected: {e}");
                            None
                        }
                    }
                }),
        )
        .buffer_unordered(CONCURRENCY)
        .filter_map(|c| async move { c })
        .collect()
        .await;
        let count = corrections.len();
        for c in &corrections {
            self.metrics
                .drift_corrected(c.regarding.kind.as_deref().unwrap_or("?"));
        }
        self.events.publish(corrections).await;
        count
    }

    /// Deletes every derived object that a Lattice owner reference claims but no workload
    /// of `plan` derives. Kinds the cluster does not serve are skipped.
    pub async fn sweep(&self, plan: &Plan) -> usize {
        let wanted: BTreeSet<ObjectId> = plan
            .workloads
            .values()
            .flat_map(|d| d.objects.iter().filter_map(ObjectId::of))
            .collect();
        let mut deleted = 0;
        for kind in DERIVED {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.api_resource());
            let params =
                ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
            let list = match api.list(&params).await {
                Ok(l) => l,
                Err(Error::Api(s)) if s.code == 404 => continue,
                Err(e) => {
                    tracing::warn!(kind = kind.kind, "sweep cannot list: {e}");
                    continue;
                }
            };
            for o in list.items {
                let ours = o
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.api_version == API_VERSION);
                let id = ObjectId {
                    api_version: kind.api_version.to_owned(),
                    kind: kind.kind.to_owned(),
                    namespace: o.metadata.namespace.clone().unwrap_or_default(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                };
                if ours && !wanted.contains(&id) {
                    match delete(&self.client, &id).await {
                        Ok(()) => {
                            tracing::info!(object = %id, "deleted: no longer derived");
                            deleted += 1;
                        }
                        Err(e) => tracing::warn!(object = %id, "cannot delete: {e}"),
                    }
                }
            }
        }
        deleted
    }
}

/// One object the drift watches found: put back, deleted or left as it is. Returns the
/// Event for a correction.
async fn correct(
    client: &Client,
    written: &Written,
    id: &ObjectId,
    desired: Option<(&Owner, &Value)>,
) -> Result<Option<super::events::Pending>, String> {
    let Some(kind) = derived_kind(&id.api_version, &id.kind) else {
        return Ok(None);
    };
    let resource = kind.api_resource();
    let api = api_at(client, &id.namespace, &resource);
    let fail = |e: Error| describe(&resource, &id.namespace, &id.name, &e);
    let live = api.get_opt(&id.name).await.map_err(fail)?;
    let event = |note: String| super::events::Pending {
        regarding: super::events::reference(
            &id.api_version,
            &id.kind,
            Some(&id.namespace),
            &id.name,
            None,
        ),
        warning: true,
        reason: "DriftCorrected",
        action: "Reconcile",
        note,
    };
    let note = match (desired, live) {
        (None, None) => return Ok(None),
        (None, Some(live)) => {
            let value = serde_json::to_value(&live).map_err(|e| e.to_string())?;
            if !super::drift::claims_lattice_owner(&value) {
                return Ok(None);
            }
            api.delete(&id.name, &DeleteParams::background())
                .await
                .map_err(fail)?;
            "claims a Lattice workload as its owner, but no workload derives it: deleted".to_owned()
        }
        (Some((owner, desired)), None) => {
            let applied = api
                .patch(
                    &id.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(desired),
                )
                .await
                .map_err(fail)?;
            remember(written, id.clone(), &applied);
            format!("deleted by hand; applied again as {owner} derives it")
        }
        (Some((owner, desired)), Some(live)) => {
            let live_value = serde_json::to_value(&live).map_err(|e| e.to_string())?;
            let seen = super::drift::fingerprint(&live_value);
            if written.lock().unwrap_or_else(|p| p.into_inner()).get(id) == Some(&seen) {
                return Ok(None);
            }
            let mut body = desired.clone();
            body["metadata"]["resourceVersion"] = json!(live.metadata.resource_version);
            for pointer in super::drift::left_to_others(desired) {
                if let (Some(value), Some((parent, field))) =
                    (live_value.pointer(pointer), pointer.rsplit_once('/'))
                    && let Some(Value::Object(map)) = body.pointer_mut(parent)
                {
                    map.insert(field.to_owned(), value.clone());
                }
            }
            let body: DynamicObject = serde_json::from_value(body).map_err(|e| e.to_string())?;
            let dry_run = kube::api::PostParams {
                dry_run: true,
                field_manager: Some(MANAGER.to_owned()),
            };
            let defaulted = api.replace(&id.name, &dry_run, &body).await.map_err(fail)?;
            let defaulted = serde_json::to_value(&defaulted).map_err(|e| e.to_string())?;
            let Some(path) = super::drift::differs(desired, &live_value, &defaulted) else {
                // Written by something that may (a controller's annotation): accepted.
                written
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), seen);
                return Ok(None);
            };
            let params = kube::api::PostParams {
                dry_run: false,
                field_manager: Some(MANAGER.to_owned()),
            };
            let replaced = api.replace(&id.name, &params, &body).await.map_err(fail)?;
            remember(written, id.clone(), &replaced);
            format!("{path} was changed by hand; put back as {owner} derives it")
        }
    };
    tracing::warn!(object = %id, "drift corrected: {note}");
    Ok(Some(event(note)))
}

/// One workload: apply by layer, remove what is no longer derived, write status. Returns
/// the effect and the objects that may now exist.
async fn reconcile(
    client: &Client,
    written: &Written,
    owner: &Owner,
    desired: &Desired,
    before: &BTreeSet<ObjectId>,
    snapshot: &str,
    stamp: &str,
) -> (Effect, BTreeSet<ObjectId>) {
    let wanted: BTreeSet<ObjectId> = desired.objects.iter().filter_map(ObjectId::of).collect();
    let effect = match apply_layers(client, written, &desired.objects).await {
        Err(e) => Effect::Failed(e),
        Ok(()) => {
            let mut removed = 0;
            let mut failure = None;
            for id in before.difference(&wanted) {
                match delete(client, id).await {
                    Ok(()) => removed += 1,
                    Err(e) => failure = Some(format!("cannot delete {id}: {e}")),
                }
            }
            match failure {
                Some(e) => Effect::Failed(e),
                None => Effect::Applied {
                    objects: wanted.len(),
                    removed,
                },
            }
        }
    };
    let status = workload_status(desired, &effect, snapshot, &desired.previous_status, stamp);
    let effect = match patch_status(
        client,
        owner.kind,
        Some(&owner.namespace),
        &owner.name,
        &status,
    )
    .await
    {
        Ok(()) => effect,
        Err(e) if matches!(effect, Effect::Applied { .. }) => {
            Effect::Failed(format!("cannot write status: {e}"))
        }
        Err(_) => effect,
    };
    let now_applied = match &effect {
        Effect::Applied { .. } => wanted,
        // Unknown how far it got: keep tracking everything it may have created.
        Effect::Failed(_) => before.union(&wanted).cloned().collect(),
    };
    (effect, now_applied)
}

/// One namespace: its baseline applied and its Pod Security label written, or (opted out)
/// the baseline objects it has deleted. The label is written only where the platform
/// applies the baseline; an opted-out namespace's labels are left as they are.
async fn reconcile_namespace(
    client: &Client,
    written: &Written,
    metrics: &super::metrics::Metrics,
    ns: &str,
    desired: &NamespaceDesired,
) -> Result<Vec<Value>, String> {
    let mut corrected = Vec::new();
    if desired.opted_out {
        for (kind, name) in &desired.present {
            let Some(derived) = super::resources::DERIVED.iter().find(|d| d.kind == *kind) else {
                continue;
            };
            let id = ObjectId {
                api_version: derived.api_version.to_owned(),
                kind: (*kind).to_owned(),
                namespace: ns.to_owned(),
                name: (*name).to_owned(),
            };
            delete(client, &id)
                .await
                .map_err(|e| format!("cannot delete {id}: {e}"))?;
            tracing::info!(namespace = ns, object = %id, "opted out of default deny: baseline object deleted");
        }
        return Ok(corrected);
    }
    apply_layers(client, written, &desired.objects).await?;
    for o in &desired.objects {
        if put_back(client, written, o).await? {
            metrics.drift_corrected(o["kind"].as_str().unwrap_or("?"));
            corrected.push(o.clone());
        }
    }
    if let Some(level) = &desired.pod_security {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let body = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {lattice_engine::project::POD_SECURITY_LABEL: level}}
        });
        match api
            .patch(
                ns,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => {}
            // A namespace being deleted is gone by the next plan.
            Err(Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("cannot label namespace {ns}: {e}")),
        }
    }
    Ok(corrected)
}

/// The Event a workload's reconcile is worth: none for one whose status already says Ready
/// at its current generation, with nothing removed (a restarted operator catching up
/// announces nothing new; a changed spec, a denial or a revocation always is).
fn workload_event(
    owner: &Owner,
    desired: &Desired,
    effect: &Effect,
    snapshot: &str,
) -> Option<super::events::Pending> {
    use super::plan::Verdict;
    let previous = &desired.previous_status;
    if matches!(
        (effect, &desired.verdict),
        (Effect::Applied { removed: 0, .. }, Verdict::Authorized)
    ) && previous["phase"] == "Ready"
        && previous["observedGeneration"].as_i64().is_some()
        && previous["observedGeneration"].as_i64() == desired.generation
    {
        return None;
    }
    let regarding = super::events::reference(
        API_VERSION,
        owner.kind.name(),
        Some(&owner.namespace),
        &owner.name,
        Some(&desired.uid),
    );
    let (warning, reason, note) = match (effect, &desired.verdict) {
        (Effect::Failed(e), _) => (
            true,
            "ReconcileFailed",
            format!("retried with backoff: {e}"),
        ),
        (Effect::Applied { objects, removed }, Verdict::Authorized) => (
            false,
            "Applied",
            format!(
                "{objects} derived objects applied, {removed} no longer derived removed; decided on snapshot {snapshot}"
            ),
        ),
        (Effect::Applied { removed, .. }, Verdict::Denied(gates)) => {
            let why: Vec<String> = gates
                .iter()
                .map(|g| {
                    let by = if g.policies.is_empty() {
                        "default deny".to_owned()
                    } else {
                        g.policies.join(", ")
                    };
                    format!("{} {} ({by})", g.action, g.resource)
                })
                .collect();
            let reason = if *removed > 0 { "Revoked" } else { "Denied" };
            (
                true,
                reason,
                format!(
                    "denied: {}; {removed} derived objects removed; snapshot {snapshot}",
                    why.join("; ")
                ),
            )
        }
        (Effect::Applied { .. }, Verdict::Failed(e)) => (true, "Invalid", e.clone()),
    };
    Some(super::events::Pending {
        regarding,
        warning,
        reason,
        action: "Reconcile",
        note,
    })
}

/// Server-side apply removes only fields the applier owned, so a field someone else added
/// (an `action: ALLOW` with a rule that matches everything, on an allow-nothing policy)
/// survives it. A baseline object whose `spec` is not exactly what was derived is replaced
/// whole: it exists throughout (no window without policy), and holds only what the
/// decision derived.
async fn put_back(client: &Client, written: &Written, desired: &Value) -> Result<bool, String> {
    let api_version = desired["apiVersion"].as_str().unwrap_or_default();
    let kind = desired["kind"].as_str().unwrap_or_default();
    let Some(derived) = derived_kind(api_version, kind) else {
        return Err(format!("Lattice does not apply {api_version} {kind}"));
    };
    let resource = derived.api_resource();
    let ns = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let api = api_at(client, ns, &resource);
    let live = api
        .get(name)
        .await
        .map_err(|e| describe(&resource, ns, name, &e))?;
    if live.data.get("spec") == desired.get("spec") {
        return Ok(false);
    }
    let mut whole = desired.clone();
    whole["metadata"]["resourceVersion"] = json!(live.metadata.resource_version);
    let whole: DynamicObject = serde_json::from_value(whole)
        .map_err(|e| format!("{kind} {ns}/{name} cannot be written: {e}"))?;
    let params = kube::api::PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..Default::default()
    };
    let replaced = api
        .replace(name, &params, &whole)
        .await
        .map_err(|e| describe(&resource, ns, name, &e))?;
    if let Some(id) = ObjectId::of(desired) {
        remember(written, id, &replaced);
    }
    tracing::warn!(object = %format!("{kind} {ns}/{name}"), "edited by hand: put back as derived");
    Ok(true)
}

/// What the operator itself last wrote of each derived object: its content fingerprint
/// as the server returned it. Drift is content that differs from this.
pub type Written = std::sync::Mutex<HashMap<ObjectId, u64>>;

fn remember(written: &Written, id: ObjectId, object: &DynamicObject) {
    if let Ok(value) = serde_json::to_value(object) {
        written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, super::drift::fingerprint(&value));
    }
}

async fn apply_layers(client: &Client, written: &Written, objects: &[Value]) -> Result<(), String> {
    let mut layers: BTreeMap<Layer, Vec<(&Value, ApiResource)>> = BTreeMap::new();
    for o in objects {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let kind = o["kind"].as_str().unwrap_or_default();
        let derived = derived_kind(api_version, kind)
            .ok_or_else(|| format!("Lattice does not apply {api_version} {kind}"))?;
        layers
            .entry(derived.layer)
            .or_default()
            .push((o, derived.api_resource()));
    }
    let params = PatchParams::apply(MANAGER).force();
    for (_, layer) in layers {
        try_join_all(layer.into_iter().map(|(o, resource)| {
            let params = &params;
            async move {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
                let api = api_at(client, ns, &resource);
                api.patch(name, params, &Patch::Apply(o))
                    .await
                    .map(|applied| {
                        let id = ObjectId {
                            api_version: resource.api_version.clone(),
                            kind: resource.kind.clone(),
                            namespace: ns.to_owned(),
                            name: name.to_owned(),
                        };
                        remember(written, id, &applied)
                    })
                    .map_err(|e| describe(&resource, ns, name, &e))
            }
        }))
        .await?;
    }
    Ok(())
}

fn describe(resource: &ApiResource, ns: &str, name: &str, e: &Error) -> String {
    match e {
        // 404 is also a missing namespace; only the server's own words tell them apart.
        Error::Api(s)
            if s.code == 404 && s.message.contains("could not find the requested resource") =>
        {
            format!(
                "the cluster does not serve {} {} (install the CRD, or the component that provides it)",
                resource.api_version, resource.kind
            )
        }
        Error::Api(s) => format!("{} {ns}/{name}: {}", resource.kind, s.message),
        other => format!("{} {ns}/{name}: {other}", resource.kind),
    }
}

async fn delete(client: &Client, id: &ObjectId) -> Result<(), Error> {
    let Some(kind) = derived_kind(&id.api_version, &id.kind) else {
        return Ok(());
    };
    let api = api_at(client, &id.namespace, &kind.api_resource());
    match api.delete(&id.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The API of a derived object: in its namespace, or cluster-wide for a cluster-scoped one
/// (a ClusterIssuer), which has none.
fn api_at(client: &Client, ns: &str, resource: &ApiResource) -> Api<DynamicObject> {
    if ns.is_empty() {
        Api::all_with(client.clone(), resource)
    } else {
        Api::namespaced_with(client.clone(), ns, resource)
    }
}

pub use crate::lattice_api::lattice_resource;

/// Writes a Lattice object's status (server-side apply on the status subresource). A
/// deleted object is not an error.
pub async fn patch_status(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), Error> {
    let resource = lattice_resource(kind);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) if kind.namespaced() => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let body = json!({"apiVersion": API_VERSION, "kind": kind.name(), "status": status});
    match api
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
