//! The pivot's I/O on both ends; what moves, in which order and how each object is
//! rewritten is `lattice_clusters::pivot`'s.
//!
//! - The parent's cell ([`move_cluster`], run once `Pivot` allowed it): discovers the
//!   child's Cluster API objects in `capi-<child>`, pauses its `Cluster`, sends the objects
//!   to the child's agent in batches over the tunnel (each a lifecycle command the agent
//!   acknowledges once applied), asks it to unpause, hands it its own LatticeCluster
//!   ([`Step::Adopt`]: from then on the child's operator manages its objects, see
//!   [`super::own`]), records `status.pivoted`, and only then deletes its own copies (finalizers released first: the objects now live in the
//!   child, so nothing here may tear down what they describe). [`finish`] deletes copies a
//!   restart left behind.
//! - The child's agent ([`PivotTarget`]): applies each batch in order by server-side
//!   apply, with owner references pointed at the owners' new UIDs and status written
//!   through the status subresource, then unpauses the `Cluster` when asked and writes
//!   its own LatticeCluster and InfraProvider as handed over. It acts only in its own
//!   cluster's namespace `capi-<cluster>` and on those two objects, by name.
//! - The unpivot ([`unpivot_cluster`], the way back, before a pivoted child is
//!   decommissioned): the agent pauses its `Cluster` and exports its objects page by page
//!   (each page one command result); the parent applies them with a [`PivotTarget`] of its
//!   own, unpauses its copy, records `status.pivoted: false`, and only then asks the agent
//!   to release (delete) the child's copies.
//!
//! Each step is idempotent, so a restart on either end is recovered by sending the move
//! again: until `status.pivoted` is recorded, the source keeps every object.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::discovery::{ApiCapabilities, Scope};
use lattice_clusters::pivot::{self, Step};
use lattice_proto::tunnel::v1 as pb;
use lattice_schemas::crd::{API_VERSION, Kind};
use lattice_tunnel::cell::Cell;
use lattice_tunnel::command::CommandHandler;
use serde_json::{Value, json};

use super::absent_ok;
use crate::lattice_api::lattice_resource;

/// The field manager of what a move writes (the moved objects in the child, `pivoted` in
/// the parent's LatticeCluster status).
pub const MANAGER: &str = "lattice-pivot";

/// Requests in flight at once, on either end of a move.
const CONCURRENCY: usize = 16;

/// How long one batch may take to be applied and acknowledged.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a completed move did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub objects: usize,
    pub batches: usize,
    pub elapsed: Duration,
}

/// Every object in `namespace` of every Cluster API resource this API server serves (each
/// one a move carries, see `lattice_clusters::pivot::MOVED`), and its Secrets and
/// ConfigMaps: what a move chooses from.
pub async fn discover(client: &Client, namespace: &str) -> Result<Vec<Value>, String> {
    let groups = client
        .list_api_groups()
        .await
        .map_err(|e| format!("cannot discover API groups: {e}"))?;
    let mut resources: Vec<ApiResource> = vec![
        ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    ];
    for group in groups.groups.iter().filter(|g| pivot::group_moves(&g.name)) {
        let discovered = kube::discovery::group(client, &group.name)
            .await
            .map_err(|e| format!("cannot discover {}: {e}", group.name))?;
        for (ar, caps) in discovered.recommended_resources() {
            if caps.scope != Scope::Namespaced {
                continue;
            }
            // Fail closed: a kind the move does not know would stay behind.
            if !pivot::carries(&ar.group, &ar.plural) {
                return Err(format!(
                    "{}/{} is served here but a move does not carry it: no move until it does",
                    ar.group, ar.plural
                ));
            }
            resources.push(ar);
        }
    }
    let mut found = Vec::new();
    for ar in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list {} in {namespace}: {e}", ar.plural))?;
        for item in list.items {
            let mut v = serde_json::to_value(&item).map_err(|e| e.to_string())?;
            // A list's items carry no type; the move needs it.
            v["apiVersion"] = json!(ar.api_version);
            v["kind"] = json!(ar.kind);
            found.push(v);
        }
    }
    Ok(found)
}

/// The API resource of an object, from its apiVersion and kind (looked up once per kind).
#[derive(Default)]
struct Resources(Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>);

impl Resources {
    async fn of(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), String> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let found =
            kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
                .await
                .map_err(|e| format!("this cluster does not serve {api_version} {kind}: {e}"))?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }
}

fn api(client: &Client, namespace: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, ar)
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// Where a move's steps go: the child's agent through the tunnel ([`ThroughTunnel`]), or
/// a [`PivotTarget`] in this process (what the benchmark measures the tunnel against).
pub trait StepSink: Send + Sync {
    /// Has `step` done, answering what was done or why not.
    fn send<'a>(
        &'a self,
        step: &'a Step,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
}

/// Steps as lifecycle commands to `cluster`'s agent: a move's as `Pivot` commands, a move
/// back's (export, release) as `Unpivot` ones.
pub struct ThroughTunnel {
    pub cell: Cell,
    pub cluster: String,
}

impl StepSink for ThroughTunnel {
    fn send<'a>(
        &'a self,
        step: &'a Step,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let operation = match step {
                Step::Export { .. } | Step::Release { .. } => {
                    pb::lifecycle_command::Operation::Unpivot
                }
                Step::Apply { .. } | Step::Unpause { .. } | Step::Adopt { .. } => {
                    pb::lifecycle_command::Operation::Pivot
                }
            };
            self.cell
                .command(&self.cluster, operation, step.to_payload(), STEP_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl StepSink for PivotTarget {
    fn send<'a>(
        &'a self,
        step: &'a Step,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(self.step(step.clone()))
    }
}

/// Moves `child`'s Cluster API objects from this (the parent's) API server into the child
/// through `sink`. Run again after any failure, it completes the move.
pub async fn move_cluster(
    client: &Client,
    sink: &dyn StepSink,
    child: &str,
    endpoint: Option<&lattice_clusters::BootstrapEndpoint>,
) -> Result<Moved, String> {
    let started = Instant::now();
    let namespace = lattice_clusters::capi::namespace(child);
    let found = discover(client, &namespace).await?;
    let mut ordered = pivot::plan(child, &found);
    if !ordered
        .iter()
        .any(|o| o["kind"] == "Cluster" && o["metadata"]["name"] == child)
    {
        return Err(format!(
            "no Cluster API Cluster {child} in {namespace} to move"
        ));
    }
    // Paused here first, and sent paused: no controller on either side acts on a cluster
    // that is half moved.
    let resources = Resources::default();
    let is_cluster = |o: &Value| {
        o["kind"] == "Cluster"
            && o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("{}/", lattice_clusters::capi::CORE)))
    };
    for o in ordered.iter_mut().filter(|o| is_cluster(o)) {
        let (ar, _) = resources
            .of(
                client,
                o["apiVersion"].as_str().unwrap_or_default(),
                "Cluster",
            )
            .await?;
        api(client, &namespace, &ar)
            .patch(
                name_of(o),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": true}})),
            )
            .await
            .map_err(|e| format!("cannot pause Cluster {}: {e}", name_of(o)))?;
        o["spec"]["paused"] = json!(true);
    }
    let count = ordered.len();
    let batches = pivot::batches(ordered.iter().map(pivot::portable).collect());
    let sent = batches.len();
    for (i, objects) in batches.into_iter().enumerate() {
        let step = Step::Apply {
            namespace: namespace.clone(),
            objects,
        };
        sink.send(&step)
            .await
            .map_err(|e| format!("batch {} of {sent}: {e}", i + 1))?;
    }
    sink.send(&Step::Unpause {
        namespace: namespace.clone(),
        cluster: child.to_owned(),
    })
    .await
    .map_err(|e| format!("unpausing the moved Cluster: {e}"))?;
    let adopt = adoption(client, child, endpoint).await?;
    sink.send(&adopt)
        .await
        .map_err(|e| format!("handing {child} its own LatticeCluster: {e}"))?;
    // The child owns its objects now; from here on a restart only cleans up.
    record_pivoted(client, child, true).await?;
    delete_sources(client, &resources, &ordered).await?;
    Ok(Moved {
        objects: count,
        batches: sent,
        elapsed: started.elapsed(),
    })
}

/// The [`Step::Adopt`] of `child`: its LatticeCluster as this cluster holds it (name,
/// labels and spec; the status is the child's own) and the InfraProvider it names, when
/// this cluster has it.
pub async fn adoption(
    client: &Client,
    child: &str,
    endpoint: Option<&lattice_clusters::BootstrapEndpoint>,
) -> Result<Step, String> {
    let clusters: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
    let cluster = clusters
        .get(child)
        .await
        .map_err(|e| format!("cannot read LatticeCluster {child}: {e}"))?;
    let provider_ref = cluster.data["spec"]["providerRef"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let handed = |kind: Kind, o: &DynamicObject| {
        json!({
            "apiVersion": API_VERSION,
            "kind": kind.name(),
            "metadata": {"name": o.metadata.name, "labels": o.metadata.labels.clone().unwrap_or_default()},
            "spec": o.data["spec"],
        })
    };
    let infra = if provider_ref.is_empty() {
        None
    } else {
        let providers: Api<DynamicObject> =
            Api::all_with(client.clone(), &lattice_resource(Kind::InfraProvider));
        providers
            .get_opt(&provider_ref)
            .await
            .map_err(|e| format!("cannot read InfraProvider {provider_ref}: {e}"))?
            .map(|p| handed(Kind::InfraProvider, &p))
    };
    Ok(Step::Adopt {
        namespace: lattice_clusters::capi::namespace(child),
        cluster: handed(Kind::LatticeCluster, &cluster),
        infra,
        endpoint: endpoint.map(ToString::to_string),
    })
}

/// Deletes the copies a move left in this cluster after `status.pivoted` was recorded (a
/// restart between the two). Returns how many were left.
pub async fn finish(client: &Client, child: &str) -> Result<usize, String> {
    let namespace = lattice_clusters::capi::namespace(child);
    let left = pivot::plan(child, &discover(client, &namespace).await?);
    if !left.is_empty() {
        delete_sources(client, &Resources::default(), &left).await?;
    }
    Ok(left.len())
}

async fn record_pivoted(client: &Client, child: &str, pivoted: bool) -> Result<(), String> {
    let api: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": Kind::LatticeCluster.name(),
        "status": {"pivoted": pivoted},
    });
    api.patch_status(
        child,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|e| format!("cannot record that {child} is pivoted ({pivoted}): {e}"))
}

/// Moves `child`'s Cluster API objects back from the child into this (the parent's) API
/// server through its agent: the way back that `Unpivot` allows, before the child is torn
/// down. Run again after any failure, it completes the move back: until `pivoted: false`
/// is recorded here, the child keeps every object. `source` is the child's agent through
/// the tunnel ([`ThroughTunnel`]), or, for `lattice uninstall`, a [`PivotTarget`] on the
/// child's API server.
pub async fn unpivot_cluster(
    client: &Client,
    source: &dyn StepSink,
    child: &str,
) -> Result<Moved, String> {
    let started = Instant::now();
    let namespace = lattice_clusters::capi::namespace(child);
    let ask = |step: Step| async move { source.send(&step).await };
    let here = PivotTarget::new(client.clone(), child);
    let (mut page, mut pages, mut objects) = (0, 1, 0);
    while page < pages {
        let answer = ask(Step::Export {
            namespace: namespace.clone(),
            cluster: child.to_owned(),
            page,
        })
        .await
        .map_err(|e| format!("exporting page {} from {child}: {e}", page + 1))?;
        let exported = pivot::ExportPage::from_message(&namespace, &answer)
            .map_err(|e| format!("{child}'s export page {}: {e}", page + 1))?;
        if page == 0 {
            pages = exported.pages;
        } else if exported.pages != pages {
            return Err(format!(
                "{child}'s export changed from {pages} to {} pages: sent again",
                exported.pages
            ));
        }
        objects += exported.objects.len();
        if !exported.objects.is_empty() {
            here.apply(&namespace, exported.objects).await?;
        }
        page += 1;
    }
    let cluster_here = discover(client, &namespace)
        .await?
        .into_iter()
        .any(|o| o["kind"] == "Cluster" && o["metadata"]["name"] == child);
    if !cluster_here {
        return Err(format!(
            "{child} exported no Cluster API Cluster {child}: nothing to take back"
        ));
    }
    here.step(Step::Unpause {
        namespace: namespace.clone(),
        cluster: child.to_owned(),
    })
    .await?;
    // This cluster holds the objects now; the child's copies go only after that is known.
    record_pivoted(client, child, false).await?;
    ask(Step::Release {
        namespace,
        cluster: child.to_owned(),
    })
    .await
    .map_err(|e| format!("releasing {child}'s copies: {e}"))?;
    Ok(Moved {
        objects,
        batches: pages,
        elapsed: started.elapsed(),
    })
}

/// Deletes moved objects, what they own first, with their finalizers released: the
/// infrastructure they describe now belongs to the child and must not be torn down here.
async fn delete_sources(
    client: &Client,
    resources: &Resources,
    ordered: &[Value],
) -> Result<(), String> {
    // Nothing acts on them any more (the Cluster is paused and the child owns them), so
    // they go at once rather than in order.
    let deleted: Vec<Result<(), String>> = futures::stream::iter(ordered.iter().rev().cloned())
        .map(|o: Value| async move {
            let namespace = o["metadata"]["namespace"].as_str().unwrap_or_default();
            let (ar, _) = resources
                .of(
                    client,
                    o["apiVersion"].as_str().unwrap_or_default(),
                    o["kind"].as_str().unwrap_or_default(),
                )
                .await?;
            let api = api(client, namespace, &ar);
            let name = name_of(&o);
            if o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
            {
                absent_ok(
                    api.patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await,
                )
                .map_err(|e| format!("cannot release {} {name}: {e}", ar.kind))?;
            }
            absent_ok(api.delete(name, &DeleteParams::default()).await)
                .map_err(|e| format!("cannot delete the moved {} {name}: {e}", ar.kind))
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    deleted.into_iter().collect()
}

/// Deletes what a teardown found left of a cluster's objects, what they own first, as
/// they are: their finalizers stay, so their controllers clean up what they describe.
pub async fn delete_left(client: &Client, ordered: &[Value]) -> Result<(), String> {
    let resources = Resources::default();
    for o in ordered.iter().rev() {
        if !o["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let namespace = o["metadata"]["namespace"].as_str().unwrap_or_default();
        let (ar, _) = resources
            .of(
                client,
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
            )
            .await?;
        absent_ok(
            api(client, namespace, &ar)
                .delete(name_of(o), &DeleteParams::default())
                .await,
        )
        .map_err(|e| format!("cannot delete {} {}: {e}", ar.kind, name_of(o)))?;
    }
    Ok(())
}

/// One end of a move, acting on `cluster`'s Cluster API namespace only: the child's agent
/// (applies what the parent's cell sends, exports and releases for an unpivot), and the
/// parent taking objects back.
pub struct PivotTarget {
    client: Client,
    cluster: String,
    resources: Resources,
}

impl PivotTarget {
    /// The end of `cluster`'s moves on `client`'s API server.
    pub fn new(client: Client, cluster: &str) -> PivotTarget {
        PivotTarget {
            client,
            cluster: cluster.to_owned(),
            resources: Resources::default(),
        }
    }

    async fn step(&self, step: Step) -> Result<String, String> {
        let own = lattice_clusters::capi::namespace(&self.cluster);
        let namespace = match &step {
            Step::Apply { namespace, .. }
            | Step::Unpause { namespace, .. }
            | Step::Export { namespace, .. }
            | Step::Release { namespace, .. }
            | Step::Adopt { namespace, .. } => namespace,
        };
        if *namespace != own {
            return Err(format!(
                "{namespace:?} is not this cluster's Cluster API namespace ({own:?})"
            ));
        }
        match step {
            Step::Apply { namespace, objects } => self.apply(&namespace, objects).await,
            Step::Export {
                namespace,
                cluster,
                page,
            } => self.export(&namespace, &cluster, page).await,
            Step::Release { namespace, cluster } => {
                let found = discover(&self.client, &namespace).await?;
                let ordered = pivot::plan(&cluster, &found);
                delete_sources(&self.client, &self.resources, &ordered).await?;
                Ok(format!("released {} objects", ordered.len()))
            }
            Step::Adopt {
                cluster,
                infra,
                endpoint,
                ..
            } => self.adopt(cluster, infra, endpoint.as_deref()).await,
            Step::Unpause { namespace, cluster } => {
                let (ar, _) = self
                    .resources
                    .of(
                        &self.client,
                        lattice_clusters::capi::CORE_VERSION,
                        "Cluster",
                    )
                    .await?;
                api(&self.client, &namespace, &ar)
                    .patch(
                        &cluster,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"paused": false}})),
                    )
                    .await
                    .map_err(|e| format!("cannot unpause Cluster {cluster}: {e}"))?;
                Ok(format!("Cluster {cluster} unpaused"))
            }
        }
    }

    /// Writes this cluster's own LatticeCluster (with the endpoint annotation and
    /// `status.pivoted: true`) and the InfraProvider it names, as the parent handed them
    /// over. `Step::from_payload` has checked that they are this cluster's.
    async fn adopt(
        &self,
        cluster: Value,
        infra: Option<Value>,
        endpoint: Option<&str>,
    ) -> Result<String, String> {
        // Only what a handover carries is written: the name, labels and spec (no
        // finalizers, owners or annotations of the sender's choosing).
        let kept = |kind: Kind, o: &Value| {
            json!({
                "apiVersion": API_VERSION,
                "kind": kind.name(),
                "metadata": {
                    "name": o["metadata"]["name"],
                    "labels": o["metadata"]["labels"].as_object().cloned().unwrap_or_default(),
                },
                "spec": o["spec"],
            })
        };
        let mut cluster = kept(Kind::LatticeCluster, &cluster);
        let infra = infra.map(|i| kept(Kind::InfraProvider, &i));
        if name_of(&cluster) != self.cluster {
            return Err(format!(
                "LatticeCluster {:?} is not this cluster ({:?})",
                name_of(&cluster),
                self.cluster
            ));
        }
        let params = PatchParams::apply(MANAGER).force();
        if let Some(infra) = infra {
            let name = name_of(&infra).to_owned();
            let providers: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &lattice_resource(Kind::InfraProvider));
            providers
                .patch(&name, &params, &Patch::Apply(&infra))
                .await
                .map_err(|e| format!("cannot write InfraProvider {name}: {e}"))?;
        }
        if let Some(endpoint) = endpoint {
            cluster["metadata"]["annotations"] = json!({ pivot::ENDPOINT_ANNOTATION: endpoint });
        }
        let clusters: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &lattice_resource(Kind::LatticeCluster));
        clusters
            .patch(&self.cluster, &params, &Patch::Apply(&cluster))
            .await
            .map_err(|e| format!("cannot write LatticeCluster {}: {e}", self.cluster))?;
        clusters
            .patch_status(
                &self.cluster,
                &params,
                &Patch::Apply(json!({
                    "apiVersion": API_VERSION,
                    "kind": Kind::LatticeCluster.name(),
                    "status": {"pivoted": true},
                })),
            )
            .await
            .map_err(|e| format!("cannot record that {} is its own: {e}", self.cluster))?;
        Ok(format!("{} manages itself", self.cluster))
    }

    /// Page `page` of this cluster's objects, paused: the `Cluster` is paused here at the
    /// first page, so nothing changes while the parent reads the rest.
    async fn export(&self, namespace: &str, cluster: &str, page: usize) -> Result<String, String> {
        if cluster != self.cluster {
            return Err(format!(
                "{cluster:?} is not this cluster ({:?})",
                self.cluster
            ));
        }
        if page == 0 {
            let (ar, _) = self
                .resources
                .of(
                    &self.client,
                    lattice_clusters::capi::CORE_VERSION,
                    "Cluster",
                )
                .await?;
            absent_ok(
                api(&self.client, namespace, &ar)
                    .patch(
                        cluster,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"paused": true}})),
                    )
                    .await,
            )
            .map_err(|e| format!("cannot pause Cluster {cluster}: {e}"))?;
            // The parent manages it again from here: this cluster's operator stops.
            let own: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &lattice_resource(Kind::LatticeCluster));
            absent_ok(
                own.patch_status(
                    cluster,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(json!({
                        "apiVersion": API_VERSION,
                        "kind": Kind::LatticeCluster.name(),
                        "status": {"pivoted": false},
                    })),
                )
                .await,
            )
            .map_err(|e| format!("cannot record that {cluster} is no longer its own: {e}"))?;
        }
        let found = discover(&self.client, namespace).await?;
        let ordered: Vec<Value> = pivot::plan(cluster, &found)
            .iter()
            .map(pivot::portable)
            .collect();
        let total = ordered.len();
        let paged = pivot::pages(ordered)?;
        let pages = paged.len();
        let objects = match paged.into_iter().nth(page) {
            Some(objects) => objects,
            None if page == 0 => Vec::new(),
            None => return Err(format!("there is no page {page} of {pages}")),
        };
        Ok(pivot::ExportPage {
            objects,
            pages: pages.max(1),
            total,
        }
        .to_message())
    }

    async fn apply(&self, namespace: &str, objects: Vec<Value>) -> Result<String, String> {
        let params = PatchParams::apply(MANAGER).force();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        namespaces
            .patch(
                namespace,
                &params,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})),
            )
            .await
            .map_err(|e| format!("cannot create namespace {namespace}: {e}"))?;
        let count = objects.len();
        // New UIDs by kind and name: of objects applied here, and of owners looked up.
        let mut uids: HashMap<(String, String), String> = HashMap::new();
        let mut pending = objects;
        // Level by level: every object whose owners are all in the target goes at once.
        while !pending.is_empty() {
            let waiting: std::collections::HashSet<(String, String)> =
                pending.iter().map(kind_and_name).collect();
            let (ready, later): (Vec<Value>, Vec<Value>) = pending
                .into_iter()
                .partition(|o| owners_of(o).iter().all(|(_, k)| !waiting.contains(k)));
            if ready.is_empty() {
                let (kind, name) = kind_and_name(&later[0]);
                return Err(format!(
                    "{kind} {name}: its owners form a cycle in this batch"
                ));
            }
            pending = later;
            // Owners applied in an earlier batch (or an earlier try) are read back.
            let missing: std::collections::BTreeSet<(String, (String, String))> = ready
                .iter()
                .flat_map(owners_of)
                .filter(|(_, k)| !uids.contains_key(k))
                .collect();
            let found: Vec<Result<Option<(ObjectKey, String)>, String>> =
                futures::stream::iter(missing)
                    .map(|(api_version, key)| async move {
                        let (ar, _) = self
                            .resources
                            .of(&self.client, &api_version, &key.0)
                            .await?;
                        let found = api(&self.client, namespace, &ar)
                            .get_opt(&key.1)
                            .await
                            .map_err(|e| format!("cannot read {} {}: {e}", key.0, key.1))?;
                        Ok(found.and_then(|o| o.metadata.uid).map(|uid| (key, uid)))
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            for f in found {
                if let Some((key, uid)) = f? {
                    uids.insert(key, uid);
                }
            }
            let applied: Vec<Result<(ObjectKey, String), String>> = futures::stream::iter(ready)
                .map(|object| self.apply_one(namespace, object, &uids, &params))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for a in applied {
                let (key, uid) = a?;
                uids.insert(key, uid);
            }
        }
        Ok(format!("applied {count} objects"))
    }

    /// Applies one object whose owners are all in `uids`, then its status; its new UID.
    async fn apply_one(
        &self,
        namespace: &str,
        mut object: Value,
        uids: &HashMap<(String, String), String>,
        params: &PatchParams,
    ) -> Result<((String, String), String), String> {
        let (kind, name) = kind_and_name(&object);
        let (ar, caps) = self
            .resources
            .of(
                &self.client,
                object["apiVersion"].as_str().unwrap_or_default(),
                &kind,
            )
            .await?;
        pivot::remap_owners(&mut object, |kind, name| {
            uids.get(&(kind.to_owned(), name.to_owned())).cloned()
        })
        .map_err(|e| format!("{kind} {name}: {e}"))?;
        let status = object.as_object_mut().and_then(|o| o.remove("status"));
        let target = api(&self.client, namespace, &ar);
        let applied = target
            .patch(&name, params, &Patch::Apply(&object))
            .await
            .map_err(|e| format!("cannot apply {kind} {name}: {e}"))?;
        let has_status = caps.subresources.iter().any(|(s, _)| s.plural == "status");
        if let Some(status) = status.filter(|s| !s.is_null() && has_status) {
            let body = json!({
                "apiVersion": object["apiVersion"],
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
                "status": status,
            });
            target
                .patch_status(&name, params, &Patch::Apply(&body))
                .await
                .map_err(|e| format!("cannot write the status of {kind} {name}: {e}"))?;
        }
        let uid = applied
            .metadata
            .uid
            .ok_or_else(|| format!("{kind} {name} was applied with no UID"))?;
        Ok(((kind, name), uid))
    }
}

/// An object in the namespace being moved: its kind and name.
type ObjectKey = (String, String);

/// An object's kind and name.
fn kind_and_name(o: &Value) -> ObjectKey {
    (
        o["kind"].as_str().unwrap_or_default().to_owned(),
        name_of(o).to_owned(),
    )
}

/// The owners an object names: each one's apiVersion, and its kind and name.
fn owners_of(o: &Value) -> Vec<(String, (String, String))> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["apiVersion"].as_str().unwrap_or_default().to_owned(),
                (
                    r["kind"].as_str().unwrap_or_default().to_owned(),
                    r["name"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

impl CommandHandler for PivotTarget {
    fn handle(
        &self,
        operation: pb::lifecycle_command::Operation,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        use pb::lifecycle_command::Operation;
        Box::pin(async move {
            let step = Step::from_payload(&payload)?;
            let fits = match &step {
                Step::Apply { .. } | Step::Unpause { .. } | Step::Adopt { .. } => {
                    operation == Operation::Pivot
                }
                Step::Export { .. } | Step::Release { .. } => operation == Operation::Unpivot,
            };
            if !fits {
                return Err(format!(
                    "{} does not take this step",
                    operation.as_str_name()
                ));
            }
            let outcome = self.step(step).await;
            if let Err(e) = &outcome {
                tracing::warn!("{} step refused: {e}", operation.as_str_name());
            }
            outcome
        })
    }
}
