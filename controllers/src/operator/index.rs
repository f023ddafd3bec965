//! What the operator knows of the cluster, fed by its watches and free of I/O: every
//! Lattice object and namespace as a [`World`], the policies in force as a [`PolicyStore`],
//! and per object the server facts (uid, generation, status) that the World leaves out.
//!
//! Only what decides anything enters the World: status and server bookkeeping are kept
//! aside, so the operator's own status writes never look like a change that needs a new
//! snapshot.
//!
//! Besides the World, the index holds what the cluster shows of each namespace's
//! default-deny baseline (which baseline objects exist, at which resource version): a
//! namespace missing any is not `defaultDeny` in the projection, and a change to any (a
//! hand edit or delete) makes the planner re-apply it.

use std::collections::{BTreeMap, BTreeSet};

use lattice_engine::project::ImageFacts;
use lattice_engine::{ObjectKey, PolicyStore, World};

use crate::webhook::stamp::{ANNOTATION as STAMP, AdmissionKey};
use lattice_schemas::crd::Kind;
use lattice_schemas::manifest::Object;
use lattice_schemas::manifest::core::CoreKind;
use serde_json::{Map, Value};

/// Server facts about one watched object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    pub uid: String,
    pub generation: Option<i64>,
    /// The object's `status` as last seen (conditions keep their transition times).
    pub status: Value,
}

/// How a CedarPolicy object fared when its policies were parsed and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// In force.
    Accepted { permits: usize, forbids: usize },
    /// Refused whole; the version accepted before (if any) stays in force.
    Rejected { errors: Vec<String> },
}

/// The watched state. [`Index::apply`] and [`Index::delete`] say whether the World or the
/// policies changed, which is when a new snapshot is due. The planner decides on a copy
/// ([`Clone`]), so the watches never wait for a plan.
#[derive(Clone)]
pub struct Index {
    world: World,
    /// Persistent and shared, like the World: the planner's copy costs no status copies.
    live: imbl::OrdMap<ObjectKey, std::sync::Arc<Live>>,
    store: PolicyStore,
    policies: BTreeMap<(String, String), (Option<i64>, PolicyOutcome)>,
    /// Baseline objects on the cluster: (namespace, kind) → resource version.
    baselines: BTreeMap<(String, &'static str), String>,
    /// Checks that a CedarPolicy passed the admission webhook with `ManagePolicy` allowed.
    admission: std::sync::Arc<AdmissionKey>,
    /// What verifying the world's images at their registries established (the `images`
    /// task sets it), and whether it has been set once.
    images: ImageFacts,
    images_ready: bool,
    /// What changed since the planner last took a copy.
    changes: Changes,
}

/// What changed in an [`Index`] since its changes were last taken: what the planner
/// re-decides when it need not decide everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Objects whose decided part changed, that came or that went.
    pub objects: BTreeSet<ObjectKey>,
    /// What the cluster shows of some namespace's baseline changed.
    pub baselines: bool,
    /// Some image's verification changed.
    pub images: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && !self.baselines && !self.images
    }
}

/// The kinds of a namespace's baseline, with the name each object has.
pub const BASELINE_OBJECTS: [(&str, &str); 3] = [
    (
        "CiliumNetworkPolicy",
        lattice_compiler::baseline::DEFAULT_DENY,
    ),
    (
        "AuthorizationPolicy",
        lattice_compiler::baseline::DEFAULT_DENY,
    ),
    ("PeerAuthentication", "default"),
];

impl Index {
    /// An empty index deciding with the rule packs in `packs`, loading only CedarPolicy
    /// objects whose admission stamp verifies under `admission`.
    pub fn new(packs: PolicyStore, admission: std::sync::Arc<AdmissionKey>) -> Index {
        Index {
            admission,
            world: World::new(),
            live: imbl::OrdMap::new(),
            store: packs,
            policies: BTreeMap::new(),
            baselines: BTreeMap::new(),
            images: ImageFacts::default(),
            images_ready: false,
            changes: Changes::default(),
        }
    }

    /// Takes in the images' verifications. Returns whether any changed.
    pub fn set_images(&mut self, images: ImageFacts) -> bool {
        self.images_ready = true;
        if images == self.images {
            return false;
        }
        self.images = images;
        self.changes.images = true;
        true
    }

    /// The images' verifications.
    pub fn images(&self) -> &ImageFacts {
        &self.images
    }

    /// Whether the images were verified once: no plan is made before (it would decide every
    /// signed image unsigned, and revoke what runs).
    pub fn images_ready(&self) -> bool {
        self.images_ready
    }

    /// What changed since this was last asked, which it then forgets.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Takes in one object as the API server returned it (`kind` is a Lattice kind or
    /// `Namespace`). Returns whether anything that decides changed; an object that cannot
    /// be read is an error and changes nothing.
    pub fn apply(&mut self, kind: &str, value: &Value) -> Result<bool, String> {
        if CoreKind::from_name(kind).is_some() && !judged_on_its_own(value) {
            // Judged through its controller: forgetting it keeps one subject per thing that
            // runs.
            let ns = value.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = str_at(value, "/metadata/name");
            return Ok(self.delete(kind, ns, &name));
        }
        let decided = decided_part(kind, value);
        let object = Object::from_api(kind, &decided)?;
        if let Object::Core(core) = &object {
            // One object whose entities cannot be built would make every snapshot an
            // error: it is skipped, as an object that cannot be read is.
            let ns = object.namespace().unwrap_or("default");
            lattice_engine::pod::project(kind, &core.value, ns).map_err(|e| e.to_string())?;
            lattice_engine::kubernetes::project(core)?;
        }
        let key = ObjectKey::of(&object);
        if key.name.is_empty() {
            return Err(format!("a {kind} without a name"));
        }
        self.live.insert(
            key.clone(),
            std::sync::Arc::new(Live {
                uid: str_at(value, "/metadata/uid"),
                generation: value
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64),
                status: value.get("status").cloned().unwrap_or(Value::Null),
            }),
        );
        if self.world.get(&key) == Some(&object) {
            return Ok(false);
        }
        if let Object::CedarPolicy(p) = &object {
            let id = (key.namespace.clone().unwrap_or_default(), key.name.clone());
            // Loaded only if the webhook admitted exactly this spec for a user ManagePolicy
            // allowed; one written past it (webhook down, configuration removed) is refused.
            let stamp = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STAMP))
                .map(String::as_str);
            let place = crate::webhook::stamp::place(Kind::CedarPolicy.name(), Some(&id.0));
            let admitted = self.admission.verify(place, &id.1, &p.spec, stamp);
            let outcome = match admitted {
                Err(why) => PolicyOutcome::Rejected {
                    errors: vec![format!(
                        "not admitted: {why}; write it through the admission webhook as a user ManagePolicy allows"
                    )],
                },
                Ok(_) => match self.store.apply_object(p) {
                    Ok(_) => {
                        let (permits, forbids) = self.store.effect_counts(&id.0, &id.1);
                        PolicyOutcome::Accepted { permits, forbids }
                    }
                    Err(e) => PolicyOutcome::Rejected {
                        errors: policy_errors(&e, &p.spec.policies),
                    },
                },
            };
            let generation = value
                .pointer("/metadata/generation")
                .and_then(Value::as_i64);
            self.policies.insert(id, (generation, outcome.clone()));
            if let PolicyOutcome::Rejected { errors } = outcome {
                tracing::warn!(policy = %key, errors = errors.len(), "CedarPolicy refused; the version accepted before stays in force");
            }
        }
        self.world.upsert(object);
        self.changes.objects.insert(key);
        Ok(true)
    }

    /// Forgets a deleted object. Returns whether anything that decides changed.
    pub fn delete(&mut self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let Some(kind_name) = static_kind(kind) else {
            return false;
        };
        let key = ObjectKey {
            kind: kind_name,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        };
        self.live.remove(&key);
        if kind == Kind::CedarPolicy.name() {
            let ns = namespace.unwrap_or_default();
            self.store.remove_object(ns, name);
            self.policies.remove(&(ns.to_owned(), name.to_owned()));
        }
        let gone = self.world.delete(&key).is_some();
        if gone {
            self.changes.objects.insert(key);
        }
        gone
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn store(&self) -> &PolicyStore {
        &self.store
    }

    /// Takes the World and the policies out of a copy the planner owns.
    pub fn into_world_and_store(self) -> (World, PolicyStore) {
        (self.world, self.store)
    }

    /// `(namespace, name)` of every indexed object of `kind`.
    pub fn keys_of<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (Option<String>, String)> + 'a {
        self.live
            .keys()
            .filter(move |k| k.kind == kind)
            .map(|k| (k.namespace.clone(), k.name.clone()))
    }

    /// Server facts of a watched object.
    pub fn live(&self, key: &ObjectKey) -> Option<&Live> {
        self.live.get(key).map(|l| &**l)
    }

    /// Takes in a baseline object seen on the cluster (`resource_version` `None`: deleted).
    /// Returns whether anything changed. Objects that are not a baseline object by kind and
    /// name are ignored.
    pub fn baseline_seen(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> bool {
        let Some((kind, _)) = BASELINE_OBJECTS
            .iter()
            .find(|(k, n)| *k == kind && *n == name)
        else {
            return false;
        };
        let key = (namespace.to_owned(), *kind);
        let changed = match resource_version {
            Some(rv) => self.baselines.insert(key, rv.to_owned()).as_deref() != Some(rv),
            None => self.baselines.remove(&key).is_some(),
        };
        self.changes.baselines |= changed;
        changed
    }

    /// Forgets every baseline object of `kind` not in `seen` (after a relist).
    pub fn baselines_relisted(&mut self, kind: &str, seen: &BTreeSet<String>) -> bool {
        let before = self.baselines.len();
        self.baselines
            .retain(|(ns, k), _| *k != kind || seen.contains(ns));
        let changed = before != self.baselines.len();
        self.changes.baselines |= changed;
        changed
    }

    /// The baseline objects `namespace` has on the cluster: kind → resource version.
    pub fn baseline_of(&self, namespace: &str) -> BTreeMap<&'static str, String> {
        BASELINE_OBJECTS
            .iter()
            .filter_map(|(k, _)| {
                self.baselines
                    .get(&(namespace.to_owned(), *k))
                    .map(|rv| (*k, rv.clone()))
            })
            .collect()
    }

    /// Namespaces of the World missing some baseline object on the cluster.
    pub fn baseline_missing(&self) -> BTreeSet<String> {
        lattice_engine::project::namespaces(&self.world)
            .into_keys()
            .filter(|ns| self.baseline_of(ns).len() < BASELINE_OBJECTS.len())
            .collect()
    }

    /// Every CedarPolicy object's outcome, with the generation it was decided for.
    pub fn policy_outcomes(
        &self,
    ) -> impl Iterator<Item = (&(String, String), &(Option<i64>, PolicyOutcome))> {
        self.policies.iter()
    }

    /// The user a LatticeRestore's admission stamp names for its current spec, or why there
    /// is none (written past the webhook, edited since, or stamped under another key).
    pub fn restore_requester(
        &self,
        restore: &lattice_schemas::crd::LatticeRestore,
    ) -> Result<lattice_gates::Requester, String> {
        let stamp = restore
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STAMP))
            .map(String::as_str);
        let kind = Kind::LatticeRestore.name();
        self.admission.verify(
            crate::webhook::stamp::place(kind, None),
            restore.metadata.name.as_deref().unwrap_or_default(),
            &restore.spec,
            stamp,
        )
    }
}

/// The kind name as the World spells it (a `'static` string).
fn static_kind(kind: &str) -> Option<&'static str> {
    Kind::from_name(kind)
        .map(Kind::name)
        .or((kind == "Namespace").then_some("Namespace"))
        .or(CoreKind::from_name(kind).map(CoreKind::name))
}

/// Whether a Kubernetes object is a subject of its own: not run by a controller. A
/// Deployment's ReplicaSets and their Pods, a CronJob's Jobs, a DaemonSet's Pods and a
/// node's static Pods are judged through what owns them, by its template; the objects
/// Lattice derives name their workload as controller and are judged as that workload. (A
/// controller reference must name an object that exists, or the garbage collector deletes
/// the dependent; admission judges every Pod whoever owns it.)
fn judged_on_its_own(value: &Value) -> bool {
    !value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        })
}

fn str_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The object without the metadata the server keeps for itself (resource version, managed
/// fields, timestamps), which change without changing any decision, and without its
/// status, except a LatticeCluster's: its tunnel and health facts are the Cedar `Cluster`
/// entity's (less the heartbeat time, which changes every minute and decides nothing), and
/// its deletion and finalizers start and hold its decommission.
fn decided_part(kind: &str, value: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(top) = value {
        for (k, v) in top {
            match k.as_str() {
                "status" if kind == Kind::LatticeCluster.name() => {
                    let mut status = v.clone();
                    if let Some(health) = status.get_mut("health").and_then(Value::as_object_mut) {
                        health.remove("lastHeartbeatTime");
                    }
                    out.insert(k.clone(), status);
                }
                "status" => {}
                "metadata" => {
                    let mut meta = Map::new();
                    if let Value::Object(m) = v {
                        // The creation time orders a quota's workloads (oldest first); it
                        // never changes over an object's life.
                        for field in [
                            "name",
                            "namespace",
                            "labels",
                            "annotations",
                            "uid",
                            "creationTimestamp",
                        ] {
                            if let Some(x) = m.get(field) {
                                meta.insert(field.to_owned(), x.clone());
                            }
                        }
                        // A cluster being deleted is decommissioned, and only while the
                        // parent's finalizer holds it.
                        if kind == Kind::LatticeCluster.name() {
                            for field in ["deletionTimestamp", "finalizers"] {
                                if let Some(x) = m.get(field) {
                                    meta.insert(field.to_owned(), x.clone());
                                }
                            }
                        }
                        if let Some(ann) =
                            meta.get_mut("annotations").and_then(Value::as_object_mut)
                        {
                            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
                        }
                    }
                    out.insert(k.clone(), Value::Object(meta));
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

fn policy_errors(e: &lattice_engine::policies::PolicyError, text: &str) -> Vec<String> {
    match e {
        lattice_engine::policies::PolicyError::Object { problems, .. } => problems
            .iter()
            .filter(|p| !p.warning)
            .map(|p| {
                let before = text.get(..p.span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: {}", p.message)
            })
            .collect(),
        other => vec![other.to_string()],
    }
}
