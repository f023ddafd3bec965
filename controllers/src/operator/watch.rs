//! Watches feeding the [`Index`]: one per Lattice kind, one for Namespaces, and one per kind
//! of the namespaces' default-deny baseline (label `lattice.dev/baseline=true`), each
//! restarted with backoff on error. An object that cannot be read is skipped with a warning
//! (the watch goes on); a relist replaces what the index held of that kind. A baseline kind
//! the cluster does not serve counts as listed (nothing of it exists; every namespace then
//! lacks its baseline, which the projection says). So does a Lattice kind whose CRD is not
//! installed: no object of it can exist, so only what needs that kind is idle (no
//! compliance profile, no packages, …), said once in the log; the watch keeps retrying, and
//! lists the kind as soon as its CRD appears.
//!
//! The Kubernetes kinds Lattice decides and scans (pods and the workloads that run them,
//! RBAC, Services, NetworkPolicies, ServiceAccounts) are watched too, so that compliance
//! scans and `whatif` see the live cluster's own objects. One the operator may not list
//! (RBAC that predates these rules) counts as listed with a warning and a metric, as an
//! absent CRD does: the scans then cover less of the cluster, and the log says which kinds.
//!
//! Nothing is decided until every watch has listed once: a snapshot of half a cluster could
//! revoke what the other half permits.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use lattice_schemas::crd::Kind;
use lattice_schemas::manifest::core::CoreKind;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use super::apply::lattice_resource;
use super::index::{BASELINE_OBJECTS, Index};
use super::resources::DERIVED;

/// What the watches share with the planner.
pub struct Shared {
    pub index: Mutex<Index>,
    /// Woken when the index changed in a way that decides something.
    pub changed: Notify,
    /// How many watches have completed their first list.
    pub synced: watch::Sender<usize>,
    /// Woken when a watch lists again after an error: the API server is reachable again,
    /// so reconciles waiting out a backoff need not wait any longer.
    pub reconnected: Notify,
    pub metrics: Arc<super::metrics::Metrics>,
}

/// How many watches there are.
pub fn watch_count() -> usize {
    Kind::ALL.len() + 1 + BASELINE_OBJECTS.len() + CoreKind::ALL.len()
}

/// The API resource of a Kubernetes kind Lattice reads.
fn core_resource(kind: CoreKind) -> ApiResource {
    use k8s_openapi::api::{apps, batch, core, networking, rbac};
    match kind {
        CoreKind::Pod => ApiResource::erase::<core::v1::Pod>(&()),
        CoreKind::Deployment => ApiResource::erase::<apps::v1::Deployment>(&()),
        CoreKind::ReplicaSet => ApiResource::erase::<apps::v1::ReplicaSet>(&()),
        CoreKind::StatefulSet => ApiResource::erase::<apps::v1::StatefulSet>(&()),
        CoreKind::DaemonSet => ApiResource::erase::<apps::v1::DaemonSet>(&()),
        CoreKind::Job => ApiResource::erase::<batch::v1::Job>(&()),
        CoreKind::CronJob => ApiResource::erase::<batch::v1::CronJob>(&()),
        CoreKind::ReplicationController => {
            ApiResource::erase::<core::v1::ReplicationController>(&())
        }
        CoreKind::PodTemplate => ApiResource::erase::<core::v1::PodTemplate>(&()),
        CoreKind::Role => ApiResource::erase::<rbac::v1::Role>(&()),
        CoreKind::ClusterRole => ApiResource::erase::<rbac::v1::ClusterRole>(&()),
        CoreKind::RoleBinding => ApiResource::erase::<rbac::v1::RoleBinding>(&()),
        CoreKind::ClusterRoleBinding => ApiResource::erase::<rbac::v1::ClusterRoleBinding>(&()),
        CoreKind::Service => ApiResource::erase::<core::v1::Service>(&()),
        CoreKind::NetworkPolicy => ApiResource::erase::<networking::v1::NetworkPolicy>(&()),
        CoreKind::ServiceAccount => ApiResource::erase::<core::v1::ServiceAccount>(&()),
    }
}

/// Starts every watch; they run until the runtime stops.
pub fn spawn_all(client: &Client, shared: &Arc<Shared>) {
    for kind in Kind::ALL {
        let resource = lattice_resource(kind);
        tokio::spawn(run(client.clone(), resource, kind.name(), shared.clone()));
    }
    let namespaces = ApiResource::erase::<Namespace>(&());
    tokio::spawn(run(client.clone(), namespaces, "Namespace", shared.clone()));
    for kind in CoreKind::ALL {
        tokio::spawn(run(
            client.clone(),
            core_resource(kind),
            kind.name(),
            shared.clone(),
        ));
    }
    for (kind, _) in BASELINE_OBJECTS {
        if let Some(derived) = DERIVED.iter().find(|d| d.kind == kind) {
            tokio::spawn(run_baseline(
                client.clone(),
                derived.api_resource(),
                shared.clone(),
            ));
        }
    }
}

/// Watches one kind of baseline object.
async fn run_baseline(client: Client, resource: ApiResource, shared: Arc<Shared>) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let kind = resource.kind.clone();
    let config = watcher::Config::default().labels(&format!(
        "{}=true",
        lattice_compiler::baseline::BASELINE_LABEL
    ));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist: Option<BTreeSet<String>> = None;
    let mut first = true;
    let synced = |first: &mut bool| {
        if std::mem::take(first) {
            shared.synced.send_modify(|n| *n += 1);
        }
    };
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                if first {
                    tracing::warn!(
                        kind,
                        "the cluster does not serve {kind}: no namespace can hold its default-deny baseline"
                    );
                }
                synced(&mut first);
                continue;
            }
            Err(e) => {
                shared.metrics.watch_error(&kind);
                tracing::warn!(kind, "watch error (retrying with backoff): {e}");
                continue;
            }
        };
        let mut index = shared.index.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match event {
            Event::Init => {
                relist = Some(BTreeSet::new());
                false
            }
            Event::InitApply(o) | Event::Apply(o) => {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                if let Some(seen) = relist.as_mut() {
                    seen.insert(ns.clone());
                }
                let rv = o.metadata.resource_version.clone().unwrap_or_default();
                index.baseline_seen(&kind, &ns, &name_of(&o), Some(&rv))
            }
            Event::Delete(o) => {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                index.baseline_seen(&kind, &ns, &name_of(&o), None)
            }
            Event::InitDone => {
                let seen = relist.take().unwrap_or_default();
                let changed = index.baselines_relisted(&kind, &seen);
                synced(&mut first);
                changed
            }
        };
        drop(index);
        if changed {
            shared.changed.notify_one();
        }
    }
}

async fn run(client: Client, resource: ApiResource, kind: &'static str, shared: Arc<Shared>) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let kind: &'static str = kind;
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<BTreeSet<(Option<String>, String)>> = None;
    let mut first = true;
    let mut absent = false;
    let mut failing = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                if s.code == 404 || (s.code == 403 && CoreKind::from_name(kind).is_some()) =>
            {
                if !absent {
                    absent = true;
                    shared.metrics.served(kind, false);
                    if s.code == 403 {
                        tracing::warn!(
                            kind,
                            "not allowed to list {kind}: compliance scans and what-if do not see the cluster's {kind} objects (grant get, list and watch as deploy/operator/rbac.yaml does)"
                        );
                    } else {
                        tracing::warn!(
                            kind,
                            "the {kind} CRD is not installed: no {kind} can exist, and what needs one is idle until it is"
                        );
                    }
                }
                if std::mem::take(&mut first) {
                    shared.synced.send_modify(|n| *n += 1);
                }
                continue;
            }
            Err(e) => {
                shared.metrics.watch_error(kind);
                failing = true;
                tracing::warn!(kind, "watch error (retrying with backoff): {e}");
                continue;
            }
        };

        let changed = match event {
            Event::Init => {
                relist = Some(BTreeSet::new());
                false
            }
            Event::InitApply(o) => {
                if let Some(seen) = relist.as_mut() {
                    seen.insert((o.metadata.namespace.clone(), name_of(&o)));
                }
                apply(&shared, &resource, &o)
            }
            Event::Apply(o) => apply(&shared, &resource, &o),
            Event::Delete(o) => {
                let mut index = shared.index.lock().unwrap_or_else(|p| p.into_inner());
                index.delete(kind, o.metadata.namespace.as_deref(), &name_of(&o))
            }
            Event::InitDone => {
                // A list succeeded: the kind is served (again).
                if std::mem::take(&mut absent) {
                    shared.metrics.served(kind, true);
                    tracing::info!(kind, "the {kind} CRD is installed now: watching it");
                }
                if std::mem::take(&mut failing) {
                    tracing::info!(kind, "listed again after an error");
                    shared.reconnected.notify_one();
                }
                let seen = relist.take().unwrap_or_default();
                let mut index = shared.index.lock().unwrap_or_else(|p| p.into_inner());
                let gone: Vec<(Option<String>, String)> =
                    index.keys_of(kind).filter(|k| !seen.contains(k)).collect();
                let mut changed = false;
                for (ns, name) in gone {
                    changed |= index.delete(kind, ns.as_deref(), &name);
                }
                drop(index);
                if first {
                    first = false;
                    shared.synced.send_modify(|n| *n += 1);
                    tracing::debug!(kind, "listed");
                }
                changed
            }
        };
        if changed {
            shared.changed.notify_one();
        }
    }
}

fn name_of(o: &DynamicObject) -> String {
    o.metadata.name.clone().unwrap_or_default()
}

fn apply(shared: &Shared, resource: &ApiResource, o: &DynamicObject) -> bool {
    let kind = resource.kind.as_str();
    let value = match serde_json::to_value(o) {
        // List items may come without their type; typed reading wants it.
        Ok(Value::Object(mut v)) => {
            v.insert("apiVersion".into(), resource.api_version.clone().into());
            v.insert("kind".into(), resource.kind.clone().into());
            Value::Object(v)
        }
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(kind, "skipping an object that cannot be read: {e}");
            return false;
        }
    };
    let mut index = shared.index.lock().unwrap_or_else(|p| p.into_inner());
    match index.apply(kind, &value) {
        Ok(changed) => changed,
        Err(e) => {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            tracing::warn!(kind, name, "skipping an object that cannot be read: {e}");
            false
        }
    }
}
