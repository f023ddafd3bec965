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

use std::collections::BTreeMap;
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
use super::parent::{ParentOptions, Published};
use super::stored::{Bundle, bootstrap_secret_name};
use crate::lattice_api::lattice_resource;
use crate::operator::events::{Events, Pending, reference};

/// The field manager of the CAPI objects and of the status fields written here.
pub const MANAGER: &str = "lattice-provisioning";

/// Re-applies unchanged objects every this many rounds, correcting drift.
const REAPPLY_EVERY: u32 = 12;

/// What was last applied and decided per child.
#[derive(Default)]
pub struct Provisioning {
    projection: Option<(Arc<Published>, Arc<Projection>)>,
    applied: BTreeMap<String, (u64, u32)>,
    decided: BTreeMap<String, (bool, Vec<String>)>,
}

impl Provisioning {
    /// One round over every child of this cluster in `published`.
    pub async fn reconcile(
        &mut self,
        client: &Client,
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
        self.decided.retain(|c, _| current(c));
        let endpoint = bootstrap_endpoint(world, options);
        for child in children {
            if child.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Err(e) = self
                .child(
                    client,
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
                endpoint: endpoint.clone(),
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
        if decision.allowed {
            self.apply(client, options, &name, &objects).await?;
        }
        let capi = read_capi_cluster(client, &name).await?;
        let status = cluster.status.clone().unwrap_or_default();
        let (phase, conditions) =
            lattice_clusters::phase::read(&lattice_clusters::phase::Observed {
                capi_cluster: capi.as_ref(),
                deleting: false,
                agent_connected: status.agent_connected.unwrap_or(false),
                pivoted: status.pivoted.unwrap_or(false),
            });
        let mut decisions: Vec<LifecycleDecisionStatus> = status
            .decisions
            .iter()
            .filter(|d| d.action != Lifecycle::Provision.as_str())
            .cloned()
            .collect();
        let previous = status
            .decisions
            .iter()
            .find(|d| d.action == Lifecycle::Provision.as_str());
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
        // The time and snapshot move only with the decision: this very status write changes
        // the world and so the next snapshot's digest, and comparing digests would rewrite
        // the status on every snapshot, forever.
        if let Some(p) = previous
            && p.allowed == entry.allowed
            && p.policies == entry.policies
            && p.advice == entry.advice
            && p.errors == entry.errors
        {
            entry.time = p.time.clone();
            entry.snapshot = p.snapshot.clone();
        }
        decisions.push(entry);
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
        if normalized(&current) == normalized(&body["status"]) {
            return Ok(());
        }
        let api: Api<DynamicObject> =
            Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
        absent_ok(
            api.patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await,
        )
        .map_err(|e| format!("cannot write the status of {name}: {e}"))
    }

    /// An Event when the decision about `cluster` changed.
    async fn event(&mut self, events: &Events, cluster: &LatticeCluster, d: &LifecycleDecision) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let key = (d.allowed, d.policies.clone());
        if self.decided.get(&name) == Some(&key) {
            return;
        }
        self.decided.insert(name.clone(), key);
        let mut note = d.summary();
        for a in &d.advice {
            note.push_str(&format!("; advice: {a}"));
        }
        for e in &d.errors {
            note.push_str(&format!("; {e}"));
        }
        events
            .publish(vec![Pending {
                regarding: reference(
                    API_VERSION,
                    Kind::LatticeCluster.name(),
                    None,
                    &name,
                    cluster.metadata.uid.as_deref(),
                ),
                warning: !d.allowed,
                reason: if d.allowed {
                    "ProvisionAllowed"
                } else {
                    "ProvisionDenied"
                },
                action: "Provision",
                note,
            }])
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
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(objects)
                .unwrap_or_default()
                .hash(&mut h);
            h.finish()
        };
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
async fn read_capi_cluster(client: &Client, child: &str) -> Result<Option<Value>, String> {
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
fn resource_of(object: &Value) -> ApiResource {
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
