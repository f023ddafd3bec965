//! Projection: World → Cedar entities, exactly as DESIGN §5 and `lattice.cedarschema` say.
//!
//! Each object projects to the entities it owns (a workload: its `Service`, one `Container`
//! per container and sidecar, and the `SecretPath`, `SecurityOverride`, `ExternalEndpoint`,
//! `Host`, `Gpu` and `Volume` entities its spec names). Re-projecting one object rebuilds only
//! its group. Facts that cross objects — a namespace's pod security level, an image's
//! verified signatures — are read from the World when the group is built, and the groups that
//! depend on a changed fact are rebuilt with it.
//!
//! Facts fail closed: a Pod Security level that is not exactly `privileged`, `baseline` or
//! `restricted` reads as `restricted`; a namespace is `defaultDeny` unless
//! `OptOutDefaultDeny` allowed its opt-out (see [`Approvals`]) and, in a running cluster,
//! its baseline objects are all present ([`LiveFacts`]); and an entity that cannot be
//! built is an error naming its object, never an entity stripped of its attributes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, Schema};
use cedar_policy_core::ast;
use lattice_schemas::crd::workload::{Container, Direction, Resource, WorkloadBody};
use lattice_schemas::image::{ImageRef, Verification};
use lattice_schemas::manifest::Object;
use rayon::prelude::*;
use serde_json::Value;

pub(crate) use crate::attr::Rx;
use crate::conformance::{CHUNK, check_in_chunks};
pub use crate::entity::{
    DEFAULT_DENY_LABEL, image_uid_text, opt_out_requested, uid, workload_bodies,
};
pub(crate) use crate::entity::{entity_with_tags, s};
use crate::world::{ObjectKey, World};

/// The label that sets a namespace's Pod Security Standard level.
pub const POD_SECURITY_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// Deviations that exist whether or not a workload raises them, so a question about any of
/// them finds its entity: the flags, every Linux capability, and the sysctls the Pod
/// Security Standards call safe. Other sysctls exist once a workload sets them.
pub const OVERRIDE_CATALOG: &[(&str, &str)] = &[
    ("privileged", ""),
    ("runAsRoot", ""),
    ("runAsRootGroup", ""),
    ("writableRootFilesystem", ""),
    ("privilegeEscalation", ""),
    ("hostNetwork", ""),
    ("shareProcessNamespace", ""),
    ("seccomp", "Unconfined"),
    ("apparmor", "Unconfined"),
    ("capability", "ALL"),
    ("capability", "AUDIT_CONTROL"),
    ("capability", "AUDIT_READ"),
    ("capability", "AUDIT_WRITE"),
    ("capability", "BLOCK_SUSPEND"),
    ("capability", "BPF"),
    ("capability", "CHECKPOINT_RESTORE"),
    ("capability", "CHOWN"),
    ("capability", "DAC_OVERRIDE"),
    ("capability", "DAC_READ_SEARCH"),
    ("capability", "FOWNER"),
    ("capability", "FSETID"),
    ("capability", "IPC_LOCK"),
    ("capability", "IPC_OWNER"),
    ("capability", "KILL"),
    ("capability", "LEASE"),
    ("capability", "LINUX_IMMUTABLE"),
    ("capability", "MAC_ADMIN"),
    ("capability", "MAC_OVERRIDE"),
    ("capability", "MKNOD"),
    ("capability", "NET_ADMIN"),
    ("capability", "NET_BIND_SERVICE"),
    ("capability", "NET_BROADCAST"),
    ("capability", "NET_RAW"),
    ("capability", "PERFMON"),
    ("capability", "SETFCAP"),
    ("capability", "SETGID"),
    ("capability", "SETPCAP"),
    ("capability", "SETUID"),
    ("capability", "SYS_ADMIN"),
    ("capability", "SYS_BOOT"),
    ("capability", "SYS_CHROOT"),
    ("capability", "SYS_MODULE"),
    ("capability", "SYS_NICE"),
    ("capability", "SYS_PACCT"),
    ("capability", "SYS_PTRACE"),
    ("capability", "SYS_RAWIO"),
    ("capability", "SYS_RESOURCE"),
    ("capability", "SYS_TIME"),
    ("capability", "SYS_TTY_CONFIG"),
    ("capability", "SYSLOG"),
    ("capability", "WAKE_ALARM"),
    ("sysctl", "kernel.shm_rmid_forced"),
    ("sysctl", "net.ipv4.ip_local_port_range"),
    ("sysctl", "net.ipv4.ip_unprivileged_port_start"),
    ("sysctl", "net.ipv4.tcp_syncookies"),
    ("sysctl", "net.ipv4.ping_group_range"),
    ("sysctl", "net.ipv4.ip_local_reserved_ports"),
    ("sysctl", "net.ipv4.tcp_keepalive_time"),
    ("sysctl", "net.ipv4.tcp_fin_timeout"),
    ("sysctl", "net.ipv4.tcp_keepalive_intvl"),
    ("sysctl", "net.ipv4.tcp_keepalive_probes"),
];

/// The kinds that are workloads: each projects a `Service` (and, but for a package, its
/// `Container`s).
const WORKLOAD_KINDS: [&str; 5] = [
    "LatticeService",
    "LatticeJob",
    "LatticeModel",
    "LatticeMeshMember",
    "LatticePackage",
];

/// The cluster a world describes when it has no root `LatticeCluster`.
pub const LOCAL_CLUSTER: &str = "local";

/// Reads an entity uid in full Cedar syntax (`Lattice::Service::"shop/api"`) or in the short
/// form `Type::id` (`Service::shop/api`, `Action::Connect`), whose type is in the Lattice
/// namespace and whose id is everything after the first `::`.
pub fn parse_uid(text: &str) -> Result<EntityUid, String> {
    let text = text.trim();
    if text.contains('"') {
        return EntityUid::from_str(text)
            .map_err(|e| format!("`{text}` is not an entity uid: {e}"));
    }
    let (ty, id) = text.split_once("::").ok_or_else(|| {
        format!("`{text}` is not an entity uid; write `Type::id`, e.g. `Service::shop/api`")
    })?;
    let ty = ty.strip_prefix("Lattice::").unwrap_or(ty);
    let name = EntityTypeName::from_str(&format!("Lattice::{ty}"))
        .map_err(|e| format!("`{ty}` is not a type name: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

/// The projected entities of a World, grouped by the object that owns them.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    /// The maps are persistent: a copy (one per plan in the operator) shares every node
    /// that did not change.
    groups: imbl::OrdMap<ObjectKey, Arc<Vec<Entity>>>,
    /// Image references each group uses, to build `Image` entities once.
    image_refs: imbl::OrdMap<ObjectKey, BTreeSet<String>>,
    /// Namespaces each group lives in or names.
    namespaces: imbl::OrdMap<ObjectKey, BTreeSet<String>>,
    /// The cross-object facts of the world projected, kept so that what depends only on
    /// them (the shared entities, an object under admission) does not read the world again.
    facts: Facts,
    /// Entities that could not be built, by the object that owns them: any makes the
    /// projection an error (the engine never decides on a partial fact).
    errors: imbl::OrdMap<ObjectKey, Vec<String>>,
}

/// Why a projection gives no entities.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// An entity of this object could not be built.
    #[error("{object}: {message}")]
    Entity { object: String, message: String },
    /// The entities do not conform to the schema.
    #[error("{0}")]
    Schema(#[from] Box<cedar_policy::entities_errors::EntitiesError>),
    /// The entity hierarchy has a cycle (or names an entity twice).
    #[error("{0}")]
    Hierarchy(String),
}

/// What one workload's change did to a projection's entities: what to add or replace,
/// and what is gone ([`Projection::update_workload`]).
#[derive(Debug, Default)]
pub struct EntityDelta {
    pub upsert: Vec<Entity>,
    pub remove: Vec<EntityUid>,
}

impl EntityDelta {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }

    /// This change followed by `next`, as one change: where both touch an entity, `next`
    /// says what becomes of it.
    pub fn then(mut self, next: EntityDelta) -> EntityDelta {
        let touched: HashSet<EntityUid> = next
            .upsert
            .iter()
            .map(Entity::uid)
            .chain(next.remove.iter().cloned())
            .collect();
        self.upsert.retain(|e| !touched.contains(&e.uid()));
        self.remove.retain(|u| !touched.contains(u));
        self.upsert.extend(next.upsert);
        self.remove.extend(next.remove);
        self
    }
}

/// Entities every world holds whether or not a workload names them (the override
/// catalog, the mesh), so no workload's change removes them.
fn always_implied(u: &EntityUid) -> bool {
    match u.type_name().basename() {
        "Mesh" | "Cluster" => true,
        "SecurityOverride" => {
            let id: &str = u.id().as_ref();
            OVERRIDE_CATALOG.iter().any(|(category, value)| {
                if value.is_empty() {
                    id == *category
                } else {
                    id.split_once(':') == Some((category, value))
                }
            })
        }
        _ => false,
    }
}

/// Outcomes of the snapshot's own decisions that change what entities say, decided on
/// entities without any approval so that no approval rests on itself: declared wildcards
/// that `AllowWildcard` approved, and namespaces whose opt-out of the default-deny baseline
/// `OptOutDefaultDeny` allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Service uid id → (outbound, inbound) wildcards approved.
    pub wildcards: HashMap<String, (bool, bool)>,
    /// Namespaces that run without the baseline.
    pub opted_out: BTreeSet<String>,
}

impl Approvals {
    /// Nothing approved: entities are as projected.
    pub fn is_empty(&self) -> bool {
        self.wildcards.is_empty() && self.opted_out.is_empty()
    }
}

/// What is observed outside the manifests, projected as facts: what the running cluster
/// shows (the operator observes it; the CLI has none), and what verifying the images at
/// their registries established (both verify, through `lattice-supply`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveFacts {
    /// Namespaces whose default-deny baseline should hold but some of whose baseline
    /// objects are not on the cluster: they are not `defaultDeny`, and their workloads
    /// are not `strictMtls`.
    pub baseline_missing: BTreeSet<String>,
    /// The images' verifications.
    pub images: ImageFacts,
}

impl LiveFacts {
    /// Feeds every fact to `h`, unambiguously: the snapshot's digest names them, and a
    /// cache of projected entities is keyed by them.
    pub fn hash_into(&self, h: &mut sha2::Sha256) {
        use sha2::Digest;
        for ns in &self.baseline_missing {
            h.update(b"baseline-missing:");
            h.update(ns.as_bytes());
            h.update([0]);
        }
        if let Some(source) = &self.images.source {
            h.update(b"images-verified-against:");
            h.update(source.as_bytes());
            h.update([0]);
        }
        for (image, v) in self.images.results.iter() {
            h.update(b"image:");
            for part in [image.as_str(), v.digest.as_str(), v.error.as_str()]
                .into_iter()
                .chain(v.signers.iter().map(String::as_str))
            {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update([1]);
        }
    }
}

/// What verifying the world's images established: the only source of `Image.signed`,
/// `Image.signers` and `Image.resolvedDigest`. An image with no result is not signed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// What the images were verified against, for people (`the images' registries`, an
    /// OCI layout), or `None` when nothing was verified (offline).
    pub source: Option<String>,
    /// Normalized image reference → its verification.
    pub results: Arc<BTreeMap<String, Verification>>,
}

impl ImageFacts {
    /// Verifications a test states (a policy test file's `images:`, a decision case's):
    /// normalized reference → `{digest, signers, error}`, as `lattice-supply` reports them.
    /// The engine does no I/O, so a test of decisions says what verification found.
    pub fn stated(
        images: &serde_json::Map<String, Value>,
        origin: &str,
    ) -> Result<ImageFacts, String> {
        let mut results = BTreeMap::new();
        for (image, v) in images {
            let v: Verification =
                serde_json::from_value(v.clone()).map_err(|e| format!("images.{image}: {e}"))?;
            results.insert(image_uid_text(image), v);
        }
        Ok(ImageFacts {
            source: Some(format!("the verifications {origin} states")),
            results: Arc::new(results),
        })
    }
}

/// Every image reference the world's workloads and pods use, normalized as the `Image`
/// entities name them: what is to be verified before the world is projected.
pub fn image_references(world: &World) -> BTreeSet<String> {
    world
        .objects()
        .flat_map(|(_, object)| object_image_references(object))
        .collect()
}

/// The image references one object's containers use, normalized as in
/// [`image_references`].
pub fn object_image_references(object: &Object) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, body, _) in workload_bodies(object) {
        for set in [&body.containers, &body.sidecars] {
            for c in set.values() {
                out.insert(image_uid_text(&c.image));
            }
        }
    }
    if let Object::Core(o) = object
        && o.kind.carries_pod()
    {
        let ns = object.namespace().unwrap_or("default");
        if let Ok(Some(pod)) = crate::pod::project(o.kind.name(), &o.value, ns) {
            out.extend(
                pod.images
                    .into_iter()
                    .filter(|i| ImageRef::parse(i).is_ok()),
            );
        }
    }
    out
}

/// Facts that cross objects, read from the World.
#[derive(Clone, Debug, Default)]
struct Facts {
    cluster: String,
    /// The level of an unlabelled namespace (the root cluster's `podSecurityDefault`).
    default_pod_security: String,
    /// Each declared namespace's enforced level, already read fail-closed.
    pod_security: HashMap<String, String>,
    /// Namespaces whose opt-out was approved (empty in the projection before approvals).
    opted_out: BTreeSet<String>,
    live: LiveFacts,
    /// TrustPolicy registries: prefix, whether a signature is required, the names of its
    /// keys (a verification counts only by these).
    registries: Vec<(String, bool, BTreeSet<String>)>,
    /// An unpaused LatticeClusterBackup schedules backups of every namespace: what the
    /// `backups` of the cluster the world describes means.
    backups_scheduled: bool,
    /// Each DNSProvider's zone: (provider, zone).
    dns_zones: Vec<(String, lattice_schemas::crd::issuer::DNSProviderSpec)>,
}

impl Facts {
    /// The DNSProvider whose zone holds `host` (the longest zone, then the first name), and
    /// that zone; empty strings when none does.
    fn zone_of(&self, host: &str) -> (&str, &str) {
        self.dns_zones
            .iter()
            .filter(|(_, spec)| spec.covers(host))
            .max_by(|(a, x), (b, y)| x.zone.len().cmp(&y.zone.len()).then(b.cmp(a)))
            .map_or(("", ""), |(p, spec)| {
                (p.as_str(), spec.zone.trim_end_matches('.'))
            })
    }

    fn of(world: &World) -> Facts {
        let mut pod_security = HashMap::new();
        let mut registries = Vec::new();
        let mut root = None;
        let mut labelled: HashMap<String, Option<String>> = HashMap::new();
        let mut backups_scheduled = false;
        let mut dns_zones = Vec::new();
        for (_, o) in world.objects() {
            match o {
                Object::DnsProvider(d) => dns_zones.push((o.name().to_owned(), d.spec.clone())),
                Object::ClusterBackup(b) => {
                    let scope = &b.spec.scope;
                    backups_scheduled |= b.spec.schedule.is_some()
                        && !b.spec.paused
                        && scope.include_namespaces.is_empty()
                        && scope.namespace_selector.is_none();
                }
                Object::Namespace(ns) => {
                    let level = ns
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(POD_SECURITY_LABEL))
                        .cloned();
                    labelled.insert(o.name().to_owned(), level);
                }
                Object::TrustPolicy(t) => {
                    // `verified` is deprecated and ignored: signatures are verified at the
                    // registry, never declared.
                    for r in &t.spec.registries {
                        registries.push((
                            r.prefix.trim_end_matches('/').to_owned(),
                            r.require_signature.unwrap_or(true),
                            r.keys.iter().map(|k| k.name.clone()).collect(),
                        ));
                    }
                }
                Object::Cluster(c) if c.spec.parent.is_none() && root.is_none() => {
                    root = Some((
                        o.name().to_owned(),
                        c.spec.pod_security_default.unwrap_or_default(),
                    ))
                }
                _ => {}
            }
        }
        let (cluster, default_level) = root.unwrap_or_else(|| {
            (
                LOCAL_CLUSTER.to_owned(),
                lattice_schemas::crd::PodSecurityLevel::Restricted,
            )
        });
        for (ns, label) in labelled {
            pod_security.insert(ns, enforced_level(label.as_deref(), default_level).into());
        }
        Facts {
            cluster,
            default_pod_security: default_level.as_str().to_owned(),
            pod_security,
            opted_out: BTreeSet::new(),
            live: LiveFacts::default(),
            registries,
            backups_scheduled,
            dns_zones,
        }
    }

    /// Whether the platform applies `ns`'s baseline: not opted out by decision, and (in a
    /// running cluster) every baseline object present.
    fn default_deny(&self, ns: &str) -> bool {
        !self.opted_out.contains(ns) && !self.live.baseline_missing.contains(ns)
    }

    /// The TrustPolicy registry that governs `img` (the longest matching prefix), if any:
    /// whether it requires a signature, and its keys' names.
    fn registry_of(&self, img: &ImageRef) -> Option<(bool, &BTreeSet<String>)> {
        self.registries
            .iter()
            .filter(|(prefix, _, _)| under_prefix(img, prefix))
            .max_by_key(|(prefix, _, _)| prefix.len())
            .map(|(_, required, keys)| (*required, keys))
    }

    fn pod_security(&self, ns: &str) -> String {
        self.pod_security
            .get(ns)
            .cloned()
            .unwrap_or_else(|| self.default_pod_security.clone())
    }
}

/// The Pod Security level the platform enforces for a namespace labelled `label`: the
/// label when it is exactly a level, `restricted` for any other value (fail closed: a
/// misspelled `Restricted` must not match no level's forbids), `default` when unlabelled.
pub fn enforced_level(
    label: Option<&str>,
    default: lattice_schemas::crd::PodSecurityLevel,
) -> &'static str {
    match label {
        None => default.as_str(),
        Some(l) => lattice_schemas::crd::PodSecurityLevel::parse(l)
            .unwrap_or(lattice_schemas::crd::PodSecurityLevel::Restricted)
            .as_str(),
    }
}

/// The root cluster's name and its default Pod Security level, as the projection reads them.
pub fn root_cluster(world: &World) -> (String, lattice_schemas::crd::PodSecurityLevel) {
    let f = Facts::of(world);
    let level =
        lattice_schemas::crd::PodSecurityLevel::parse(&f.default_pod_security).unwrap_or_default();
    (f.cluster, level)
}

impl Projection {
    /// Projects a whole World.
    pub fn of(world: &World) -> Projection {
        Projection::with_live(world, LiveFacts::default())
    }

    /// Projects a whole World with what a running cluster observed.
    pub fn with_live(world: &World, live: LiveFacts) -> Projection {
        let mut facts = Facts::of(world);
        facts.live = live;
        // Objects project independently once the cross-object facts are known.
        let objects: Vec<(&ObjectKey, &Object)> = world.objects().collect();
        let groups: Vec<(ObjectKey, Group)> = objects
            .into_par_iter()
            .map(|(key, object)| {
                let mut g = Group::default();
                project_object(object, &facts, &mut g);
                (key.clone(), g)
            })
            .collect();
        let mut p = Projection::default();
        for (key, g) in groups {
            p.put(key, g);
        }
        p.facts = facts;
        p
    }

    /// The root cluster's name and the Pod Security level of a namespace that names none,
    /// as [`root_cluster`] reads them from the world projected (without reading it again).
    pub fn root_cluster(&self) -> (&str, &str) {
        (&self.facts.cluster, &self.facts.default_pod_security)
    }

    /// What the running cluster was observed to hold when this was projected.
    pub fn live(&self) -> &LiveFacts {
        &self.facts.live
    }

    /// Re-projects after `key` changed (upserted or deleted) in `world`, rebuilding only the
    /// groups that depend on it. Returns the keys whose groups were rebuilt.
    pub fn update(&mut self, world: &World, key: &ObjectKey) -> Vec<ObjectKey> {
        let mut facts = Facts::of(world);
        facts.live = self.facts.live.clone();
        // Cross-object facts: a Namespace's labels reach its workloads; a TrustPolicy or a
        // root cluster reaches every workload and namespace.
        let dependents: Vec<ObjectKey> = match key.kind {
            "Namespace" => world
                .objects()
                .filter(|(k, _)| k.namespace.as_deref() == Some(&key.name))
                .map(|(k, _)| k.clone())
                .collect(),
            // A DNSProvider's zone is a fact of every host in it.
            "TrustPolicy" | "LatticeCluster" | "DNSProvider" => {
                world.objects().map(|(k, _)| k.clone()).collect()
            }
            // Whether backups are scheduled is the root cluster's `backups`.
            "LatticeClusterBackup" => world
                .objects()
                .filter(|(k, _)| k.kind == "LatticeCluster")
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut rebuilt = vec![key.clone()];
        rebuilt.extend(dependents.into_iter().filter(|k| k != key));
        for k in &rebuilt {
            self.remove(k);
            if let Some(object) = world.get(k) {
                self.insert(k.clone(), object, &facts);
            }
        }
        self.facts = facts;
        rebuilt
    }

    /// Re-projects the workload (or Kubernetes object) `key` after it changed (upserted or
    /// deleted) in `world`, and says which of [`Projection::entities`] changed with it, so a snapshot can take
    /// the change in without projecting the world again. Refused, with why and the
    /// projection unchanged, when the change reaches past the workload's own entities:
    /// another object projects one of its entities differently, a namespace comes or goes
    /// with it, or one of its entities cannot be built (the whole world then says so).
    /// Approvals are not applied: the caller keeps to workloads no approval concerns.
    pub fn update_workload(
        &mut self,
        world: &World,
        key: &ObjectKey,
    ) -> Result<EntityDelta, String> {
        let mut g = Group::default();
        if let Some(object) = world.get(key) {
            if !object.is_workload() && !matches!(object, Object::Core(_)) {
                return Err(format!("{key} is not a workload or a Kubernetes object"));
            }
            project_object(object, &self.facts, &mut g);
        }
        if let Some(e) = g.errors.first() {
            return Err(format!("{key}: {e}"));
        }
        let empty = BTreeSet::new();
        let old_namespaces = self.namespaces.get(key).unwrap_or(&empty);
        for ns in old_namespaces.symmetric_difference(&g.namespaces) {
            let declared = world
                .get(&ObjectKey {
                    kind: "Namespace",
                    namespace: None,
                    name: ns.clone(),
                })
                .is_some();
            let named = self
                .namespaces
                .iter()
                .any(|(k, named)| k != key && named.contains(ns));
            if !declared && !named {
                return Err(format!("the namespace {ns} comes or goes with {key}"));
            }
        }
        // A workload's Service and Containers are its own, unless another workload kind
        // has the same namespace and name (then both project one Service).
        let id = format!(
            "{}/{}",
            key.namespace.as_deref().unwrap_or("default"),
            key.name
        );
        let namesake = WORKLOAD_KINDS.contains(&key.kind)
            && WORKLOAD_KINDS.iter().any(|kind| {
                *kind != key.kind
                    && world
                        .get(&ObjectKey {
                            kind,
                            namespace: key.namespace.clone(),
                            name: key.name.clone(),
                        })
                        .is_some()
            });
        if namesake {
            return Err(format!("another workload is named {id}"));
        }
        let old: HashMap<EntityUid, &Entity> = self
            .groups
            .get(key)
            .into_iter()
            .flat_map(|g| g.iter())
            .map(|e| (e.uid(), e))
            .collect();
        let new: HashMap<EntityUid, &Entity> = g.entities.iter().map(|e| (e.uid(), e)).collect();
        // (Entity equality is uid equality: contents are compared with deep_eq.)
        let same = |u: &EntityUid| match (old.get(u), new.get(u)) {
            (Some(a), Some(b)) => a.deep_eq(b),
            _ => false,
        };
        let changed: HashSet<EntityUid> = old
            .keys()
            .chain(new.keys())
            .filter(|u| !same(u))
            .cloned()
            .collect();
        // Only a changed entity that others may hold too needs a look at every group: an
        // unchanged one is as it was, whoever else holds it.
        let shared: HashSet<&cedar_policy_core::ast::EntityUID> = changed
            .iter()
            .filter(|u| !matches!(u.type_name().basename(), "Service" | "Container"))
            .map(|u| u.as_ref())
            .collect();
        let mut others: HashMap<EntityUid, &Entity> = HashMap::new();
        if !shared.is_empty() {
            // Compared as the core crate's uids, by reference: the public uid() is a copy.
            for (k, group) in &self.groups {
                if k == key {
                    continue;
                }
                for e in group.iter() {
                    if shared.contains(e.as_ref().uid()) {
                        others.entry(e.uid()).or_insert(e);
                    }
                }
            }
        }
        let mut delta = EntityDelta::default();
        for u in &changed {
            if let (Some(e), Some(held)) = (new.get(u), others.get(u))
                && !held.deep_eq(e)
            {
                return Err(format!("{u} is projected differently by another object"));
            }
        }
        // What changed, with its descendants in the group (a Service's Containers):
        // replacing an entity strips the ancestors it gave them, so they are replaced too.
        let mut upsert: HashSet<EntityUid> = changed
            .iter()
            .filter(|u| new.contains_key(*u))
            .cloned()
            .collect();
        loop {
            let before = upsert.len();
            for e in &g.entities {
                if e.as_ref()
                    .parents()
                    .any(|p| upsert.contains(&EntityUid::from(p.clone())))
                {
                    upsert.insert(e.uid());
                }
            }
            if upsert.len() == before {
                break;
            }
        }
        delta.upsert.extend(
            g.entities
                .iter()
                .filter(|e| upsert.contains(&e.uid()))
                .cloned(),
        );
        for (u, e) in &old {
            if new.contains_key(u) {
                continue;
            }
            match others.get(u) {
                Some(held) if !held.deep_eq(e) => delta.upsert.push((*held).clone()),
                Some(_) => {}
                None if always_implied(u) => {}
                None => delta.remove.push(u.clone()),
            }
        }
        let old_images = self.image_refs.get(key).unwrap_or(&empty);
        let used_elsewhere = |r: &String| {
            self.image_refs
                .iter()
                .any(|(k, refs)| k != key && refs.contains(r))
        };
        for r in g.images.difference(old_images) {
            if !used_elsewhere(r) {
                delta.upsert.push(image_entity(r, &self.facts)?);
            }
        }
        for r in old_images.difference(&g.images) {
            if !used_elsewhere(r) {
                delta.remove.push(uid("Image", r));
            }
        }
        self.remove(key);
        if world.get(key).is_some() {
            self.put(key.clone(), g);
        }
        Ok(delta)
    }

    fn remove(&mut self, key: &ObjectKey) {
        self.groups.remove(key);
        self.errors.remove(key);
        self.image_refs.remove(key);
        self.namespaces.remove(key);
    }

    fn insert(&mut self, key: ObjectKey, object: &Object, facts: &Facts) {
        let mut g = Group::default();
        project_object(object, facts, &mut g);
        self.put(key, g);
    }

    fn put(&mut self, key: ObjectKey, g: Group) {
        if !g.errors.is_empty() {
            self.errors.insert(key.clone(), g.errors);
        }
        self.groups.insert(key.clone(), Arc::new(g.entities));
        if !g.images.is_empty() {
            self.image_refs.insert(key.clone(), g.images);
        }
        if !g.namespaces.is_empty() {
            self.namespaces.insert(key, g.namespaces);
        }
    }

    /// The entities `object` projects to in `world` (whether or not the world holds it),
    /// with those it names and needs to be decided alone: its images, its namespace and the
    /// cluster. What admission decides a new object's gates on, before it exists.
    /// Reads nothing but this projection: the world's facts and its declared namespaces.
    pub fn entities_of(&self, object: &Object) -> Result<Vec<Entity>, ProjectionError> {
        let facts = &self.facts;
        let mut g = Group::default();
        project_object(object, facts, &mut g);
        for r in &g.images.clone() {
            g.push(image_entity(r, facts));
        }
        for ns in &g.namespaces.clone() {
            let declared = self.group(&ObjectKey {
                kind: "Namespace",
                namespace: None,
                name: ns.clone(),
            });
            if declared.is_empty() {
                g.push(namespace_entity(ns, &BTreeMap::new(), facts));
            } else {
                g.entities.extend(declared.iter().cloned());
            }
        }
        g.push(cluster_default(facts));
        if let Some(message) = g.errors.into_iter().next() {
            return Err(ProjectionError::Entity {
                object: ObjectKey::of(object).to_string(),
                message,
            });
        }
        let mut out = g.entities;
        let mut seen = HashSet::new();
        out.retain(|e| seen.insert(e.uid()));
        Ok(out)
    }

    /// The Pod Security level the platform enforces in `ns` (its `podSecurity` fact).
    pub fn pod_security(&self, ns: &str) -> String {
        self.facts.pod_security(ns)
    }

    /// The entity of namespace `ns`: as declared, or with its default facts when the world
    /// does not declare it.
    pub fn namespace(&self, ns: &str) -> Result<Entity, ProjectionError> {
        let declared = self.group(&ObjectKey {
            kind: "Namespace",
            namespace: None,
            name: ns.to_owned(),
        });
        if let Some(e) = declared.first() {
            return Ok(e.clone());
        }
        namespace_entity(ns, &BTreeMap::new(), &self.facts).map_err(|message| {
            ProjectionError::Entity {
                object: format!("Namespace {ns}"),
                message,
            }
        })
    }

    /// The first entity that could not be built, as an error naming its object.
    fn check_built(&self) -> Result<(), ProjectionError> {
        match self.errors.iter().next() {
            Some((key, messages)) => Err(ProjectionError::Entity {
                object: key.to_string(),
                message: messages.join("; "),
            }),
            None => Ok(()),
        }
    }

    /// The entities owned by one object.
    pub fn group(&self, key: &ObjectKey) -> &[Entity] {
        self.groups
            .get(key)
            .map(|g| g.as_slice())
            .unwrap_or_default()
    }

    /// Every entity, validated against the schema. Entities several objects name (a shared
    /// secret path, an image) appear once; namespaces named by workloads but not declared
    /// get their default facts.
    pub fn entities(
        &self,
        world: &World,
        schema: &Schema,
        approvals: &Approvals,
    ) -> Result<Entities, ProjectionError> {
        self.check_built()?;
        let approved_facts;
        let facts = if approvals.opted_out.is_empty() {
            &self.facts
        } else {
            let mut f = self.facts.clone();
            f.opted_out = approvals.opted_out.clone();
            approved_facts = f;
            &approved_facts
        };
        // Objects an approval changes are projected again with it: services whose
        // wildcards AllowWildcard approved, and namespaces whose opt-out OptOutDefaultDeny
        // allowed, with every object in them. Those come first, so they win over the plain
        // projection.
        let mut front: Vec<Entity> = Vec::new();
        for (key, object) in world.objects() {
            let id = format!(
                "{}/{}",
                key.namespace.as_deref().unwrap_or("default"),
                key.name
            );
            let wildcards = approvals.wildcards.get(&id);
            let in_opted_out = match key.kind {
                "Namespace" => approvals.opted_out.contains(&key.name),
                _ => key
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| approvals.opted_out.contains(ns)),
            };
            if wildcards.is_some() || in_opted_out {
                let mut g = Group {
                    wildcards: wildcards.copied().unwrap_or_default(),
                    ..Group::default()
                };
                project_object(object, facts, &mut g);
                if let Some(message) = g.errors.into_iter().next() {
                    return Err(ProjectionError::Entity {
                        object: key.to_string(),
                        message,
                    });
                }
                front.extend(g.entities);
            }
        }
        let back = implied(&self.namespaces, &self.image_refs, world, facts)?;
        // The first entity with a uid is the one kept: declared objects come before implied
        // ones, so a declared Namespace wins.
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let all: Vec<&Entity> = front
            .iter()
            .chain(self.groups.values().flat_map(|g| g.iter()))
            .chain(&back)
            .filter(|e| seen.insert(e.uid()))
            .collect();
        conforming_entities(&all, schema)
    }

    /// Every entity, validated against the schema, consuming the projection so that no
    /// entity is held twice: for one-shot work (a compliance scan) on a world where no
    /// wildcard awaits approval. The entities equal [`Projection::entities`] with no
    /// approved wildcards.
    pub fn into_entities(
        self,
        world: &World,
        schema: &Schema,
    ) -> Result<Entities, ProjectionError> {
        self.into_entities_for(world, schema, None)
    }

    /// [`Projection::into_entities`] for a command whose decisions read only `slice`'s
    /// entities (all without one): the hierarchy is closed over every entity, so each kept
    /// one holds all its ancestors, but only the kept ones are checked against the schema
    /// and kept. The others are what those decisions never read.
    pub fn into_entities_for(
        self,
        world: &World,
        schema: &Schema,
        slice: Option<&crate::slice::EntitySlice>,
    ) -> Result<Entities, ProjectionError> {
        self.check_built()?;
        let back = implied(&self.namespaces, &self.image_refs, world, &self.facts)?;
        // Sized once: at estate scale growing them is a third of this function.
        let n = self.groups.values().map(|g| g.len()).sum::<usize>() + back.len();
        let mut all: Vec<Entity> = Vec::with_capacity(n);
        all.extend(
            self.groups
                .into_iter()
                .flat_map(|(_, g)| Arc::try_unwrap(g).unwrap_or_else(|shared| (*shared).clone()))
                .chain(back),
        );
        // The first of each uid is kept. Its uid is borrowed where it lies, not copied into
        // a set, and hashed with foldhash: on one core, copying and SipHashing 70,000 uids
        // was the longest serial stretch of an estate's snapshot.
        let first: Vec<bool> = {
            let mut seen: foldhash::HashSet<&ast::EntityUID> =
                foldhash::HashSet::with_capacity_and_hasher(all.len(), Default::default());
            all.iter().map(|e| seen.insert(e.as_ref().uid())).collect()
        };
        if first.contains(&false) {
            let mut first = first.into_iter();
            all.retain(|_| first.next().unwrap_or(false));
        }
        let keep = |e: &ast::Entity| slice.is_none_or(|s| s.holds(e.uid().entity_type()));
        // Checked in chunks on every core first; then the closure is built on every core.
        match slice {
            None => check_in_chunks(&all, schema)?,
            Some(_) => {
                let kept: Vec<&Entity> = all.iter().filter(|e| keep(e.as_ref())).collect();
                check_in_chunks(&kept, schema)?;
            }
        }
        let actions = schema.action_entities().map_err(Box::new)?;
        crate::closure::close_kept(all, actions, keep).map_err(ProjectionError::Hierarchy)
    }
}

/// Entities no object owns: namespaces named but not declared, images, defaults.
fn implied(
    namespaces: &imbl::OrdMap<ObjectKey, BTreeSet<String>>,
    image_refs: &imbl::OrdMap<ObjectKey, BTreeSet<String>>,
    world: &World,
    facts: &Facts,
) -> Result<Vec<Entity>, ProjectionError> {
    let mut g = Group::default();
    let declared: HashSet<String> = world
        .objects()
        .filter(|(k, _)| k.kind == "Namespace")
        .map(|(k, _)| k.name.clone())
        .collect();
    let named: BTreeSet<&String> = namespaces.values().flatten().collect();
    for ns in named {
        if !declared.contains(ns) {
            g.push(namespace_entity(ns, &BTreeMap::new(), facts));
        }
    }
    let refs: Vec<&String> = image_refs
        .values()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // One per image of the estate (10,000 at scale): built on every core, kept in order.
    let images: Vec<_> = refs.par_iter().map(|r| image_entity(r, facts)).collect();
    g.entities
        .reserve(images.len() + OVERRIDE_CATALOG.len() + 4);
    for image in images {
        g.push(image);
    }
    g.push(cluster_default(facts));
    for d in descendants(world) {
        g.push(descendant_entity(d));
    }
    for (category, value) in OVERRIDE_CATALOG {
        g.push(override_entity(category, value));
    }
    for m in ["inbound", "outbound", "advertise"] {
        g.push(Ok(Entity::new_no_attrs(uid("Mesh", m), HashSet::new())));
    }
    match g.errors.into_iter().next() {
        Some(message) => Err(ProjectionError::Entity {
            object: "the world's shared entities".into(),
            message,
        }),
        None => Ok(g.entities),
    }
}

/// Entities checked against the schema, with the transitive closure of their hierarchy
/// and the schema's actions: what `Entities::from_entities(all, Some(schema))` builds.
/// Cedar checks conformance and computes the closure one after the other on one core; here
/// both run on every core ([`crate::conformance`], [`crate::closure`]). The error is the
/// non-conforming entity Cedar would name (the least uid).
fn conforming_entities(all: &[&Entity], schema: &Schema) -> Result<Entities, ProjectionError> {
    // Small sets gain nothing from threads.
    if all.len() <= CHUNK {
        let owned = all.iter().map(|e| (*e).clone());
        return Ok(Entities::from_entities(owned, Some(schema)).map_err(Box::new)?);
    }
    check_in_chunks(all, schema)?;
    let actions = schema.action_entities().map_err(Box::new)?;
    crate::closure::close(all.to_vec(), actions).map_err(ProjectionError::Hierarchy)
}

#[derive(Default)]
struct Group {
    /// Approved wildcards (outbound, inbound) of the workload being projected.
    wildcards: (bool, bool),
    entities: Vec<Entity>,
    images: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    /// Entities that could not be built: the group is an error, never partial.
    errors: Vec<String>,
}

impl Group {
    fn push(&mut self, built: Result<Entity, String>) {
        match built {
            Ok(e) => self.entities.push(e),
            Err(e) => self.errors.push(e),
        }
    }
}

fn entity(
    uid: EntityUid,
    attrs: Vec<(&str, Rx)>,
    parents: impl IntoIterator<Item = EntityUid>,
) -> Result<Entity, String> {
    entity_with_tags(uid, attrs, parents, None)
}

/// Every namespace of `world`, declared or named by an object in it, with whether it asks
/// to opt out of the default-deny baseline (only a declared Namespace can ask).
pub fn namespaces(world: &World) -> BTreeMap<String, bool> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for (key, object) in world.objects() {
        match object {
            Object::Namespace(ns) => {
                out.insert(
                    key.name.clone(),
                    opt_out_requested(ns.metadata.labels.as_ref()),
                );
            }
            _ => {
                if let Some(ns) = &key.namespace {
                    out.entry(ns.clone()).or_insert(false);
                }
            }
        }
    }
    out
}

fn namespace_entity(
    name: &str,
    labels: &BTreeMap<String, String>,
    facts: &Facts,
) -> Result<Entity, String> {
    entity_with_tags(
        uid("Namespace", name),
        vec![
            ("name", s(name)),
            ("defaultDeny", Rx::new_bool(facts.default_deny(name))),
            (
                "defaultDenyOptOutRequested",
                Rx::new_bool(opt_out_requested(Some(labels))),
            ),
            ("podSecurity", s(&facts.pod_security(name))),
        ],
        [uid("Cluster", &facts.cluster)],
        Some(labels),
    )
}

fn cluster_default(facts: &Facts) -> Result<Entity, String> {
    // The local cluster when the world declares none (a declared one comes first and wins).
    entity(
        uid("Cluster", &facts.cluster),
        vec![
            ("name", s(&facts.cluster)),
            ("provider", s("")),
            ("environment", s("")),
            ("region", s("")),
            ("kubernetesVersion", s("")),
            ("phase", s("Ready")),
            ("ready", Rx::new_bool(true)),
            ("agentConnected", Rx::new_bool(false)),
            ("nodesReady", Rx::new_long(0)),
            ("nodesTotal", Rx::new_long(0)),
            ("controlPlaneReady", Rx::new_bool(false)),
            ("agentVersion", s("")),
            ("pivoted", Rx::new_bool(false)),
            ("backups", Rx::new_bool(facts.backups_scheduled)),
            ("monitoring", Rx::new_bool(false)),
            ("defaultPodSecurity", s(&facts.default_pod_security)),
        ],
        [],
    )
}

fn image_entity(reference: &str, facts: &Facts) -> Result<Entity, String> {
    let img = ImageRef::parse(reference)
        .map_err(|e| format!("the image reference `{reference}` cannot be read: {e}"))?;
    let registry = facts.registry_of(&img);
    let verification = facts.live.images.results.get(reference);
    // A verification counts only by the governing registry's keys as they are now: one
    // taken under other TrustPolicies is not carried over.
    let (signers, error): (BTreeSet<String>, String) = match (registry, verification) {
        (None, _) => (
            BTreeSet::new(),
            "no TrustPolicy registry covers this image".to_owned(),
        ),
        (Some((_, keys)), Some(v)) => (
            v.signers.intersection(keys).cloned().collect(),
            v.error.clone(),
        ),
        (Some(_), None) => (
            BTreeSet::new(),
            match &facts.live.images.source {
                None => "not verified: offline, no registry was asked".to_owned(),
                Some(source) => format!("not verified against {source}"),
            },
        ),
    };
    let resolved = match verification {
        Some(v) if !v.digest.is_empty() => v.digest.as_str(),
        _ => img.digest.as_str(),
    };
    entity(
        uid("Image", reference),
        vec![
            ("registry", s(&img.registry)),
            ("repository", s(&img.repository)),
            ("tag", s(&img.tag)),
            ("digest", s(&img.digest)),
            ("resolvedDigest", s(resolved)),
            ("signed", Rx::new_bool(!signers.is_empty())),
            ("trustedRegistry", Rx::new_bool(registry.is_some())),
            (
                "signatureRequired",
                Rx::new_bool(registry.is_none_or(|(required, _)| required)),
            ),
            ("signers", Rx::new_set(signers.iter().map(|x| s(x)))),
            ("verifyError", s(&error)),
            (
                "trustedKeys",
                Rx::new_set(
                    registry
                        .into_iter()
                        .flat_map(|(_, keys)| keys.iter().map(|k| s(k))),
                ),
            ),
        ],
        [],
    )
}

/// Whether `img` lives under a TrustPolicy registry prefix (a host, or a host and a path
/// ending at a `/` boundary).
fn under_prefix(img: &ImageRef, prefix: &str) -> bool {
    let full = format!("{}/{}", img.registry, img.repository);
    full == prefix || full.starts_with(&format!("{prefix}/"))
}

/// The clusters below this one's children that no LatticeCluster here declares, as the
/// children's agents report them (`status.descendants`), each once (the first report, in
/// the world's order, of a name two children claim; the cell routes such a name nowhere).
fn descendants(world: &World) -> Vec<&lattice_schemas::crd::cluster::DescendantStatus> {
    let declared: HashSet<&str> = world
        .objects()
        .filter(|(k, _)| k.kind == "LatticeCluster")
        .map(|(k, _)| k.name.as_str())
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    world
        .objects()
        .filter_map(|(_, o)| match o {
            Object::Cluster(c) => c.status.as_ref(),
            _ => None,
        })
        .flat_map(|st| &st.descendants)
        .filter(|d| !declared.contains(d.name.as_str()) && seen.insert(d.name.as_str()))
        .collect()
}

/// A reported descendant as a `Cluster` entity `in` its parent. What only its own
/// LatticeCluster declares (provider, region, labels) is empty, and its Pod Security default
/// is the strictest.
fn descendant_entity(
    d: &lattice_schemas::crd::cluster::DescendantStatus,
) -> Result<Entity, String> {
    let h = &d.health;
    entity(
        uid("Cluster", &d.name),
        vec![
            ("name", s(&d.name)),
            ("provider", s("")),
            ("environment", s(&d.environment)),
            ("region", s("")),
            ("kubernetesVersion", s(&h.kubernetes_version)),
            ("phase", s(&d.phase)),
            ("ready", Rx::new_bool(d.ready)),
            ("agentConnected", Rx::new_bool(d.agent_connected)),
            ("nodesReady", Rx::new_long(h.nodes_ready.max(0))),
            ("nodesTotal", Rx::new_long(h.nodes_total.max(0))),
            ("controlPlaneReady", Rx::new_bool(h.control_plane_ready)),
            ("agentVersion", s(&h.agent_version)),
            ("pivoted", Rx::new_bool(false)),
            ("backups", Rx::new_bool(false)),
            ("monitoring", Rx::new_bool(false)),
            (
                "defaultPodSecurity",
                s(lattice_schemas::crd::PodSecurityLevel::Restricted.as_str()),
            ),
        ],
        [uid("Cluster", &d.parent)],
    )
}

fn project_object(object: &Object, facts: &Facts, g: &mut Group) {
    match object {
        Object::Namespace(ns) => {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            g.push(namespace_entity(object.name(), &labels, facts));
        }
        Object::Cluster(c) => {
            let st = c.status.clone().unwrap_or_default();
            let health = st.health.clone().unwrap_or_default();
            let is_root = c.spec.parent.is_none() && object.name() == facts.cluster;
            let cfg = &c.spec.provider.config;
            let provider = cfg.name().unwrap_or("");
            let region = cfg
                .aws
                .as_ref()
                .map(|a| a.region.clone())
                .unwrap_or_default();
            g.push(entity_with_tags(
                uid("Cluster", object.name()),
                vec![
                    ("name", s(object.name())),
                    ("provider", s(provider)),
                    (
                        "environment",
                        s(c.spec.environment.as_deref().unwrap_or("")),
                    ),
                    ("region", s(&region)),
                    ("kubernetesVersion", s(&c.spec.provider.kubernetes.version)),
                    ("phase", s(st.phase.as_deref().unwrap_or("Pending"))),
                    ("ready", Rx::new_bool(st.ready.unwrap_or(false))),
                    (
                        "agentConnected",
                        Rx::new_bool(st.agent_connected.unwrap_or(false)),
                    ),
                    ("nodesReady", Rx::new_long(health.nodes_ready.max(0))),
                    ("nodesTotal", Rx::new_long(health.nodes_total.max(0))),
                    (
                        "controlPlaneReady",
                        Rx::new_bool(health.control_plane_ready),
                    ),
                    ("agentVersion", s(&health.agent_version)),
                    ("pivoted", Rx::new_bool(st.pivoted.unwrap_or(false))),
                    // The cluster the world describes has backups when one is scheduled
                    // here; a cluster below keeps its own (what its spec asks, here).
                    (
                        "backups",
                        Rx::new_bool(if is_root {
                            facts.backups_scheduled
                        } else {
                            c.spec.backups.unwrap_or(false)
                        }),
                    ),
                    (
                        "monitoring",
                        Rx::new_bool(c.spec.monitoring.unwrap_or(false)),
                    ),
                    (
                        "defaultPodSecurity",
                        s(c.spec.pod_security_default.unwrap_or_default().as_str()),
                    ),
                ],
                c.spec.parent.iter().map(|p| uid("Cluster", p)),
                c.metadata.labels.as_ref(),
            ));
        }
        Object::SecretProvider(sp) => g.push(entity(
            uid("SecretProvider", object.name()),
            vec![
                ("name", s(object.name())),
                ("backend", s(sp.spec.backend().unwrap_or_default())),
            ],
            [],
        )),
        Object::ImageProvider(ip) => g.push(entity(
            uid("ImageProvider", object.name()),
            vec![
                ("name", s(object.name())),
                ("registry", s(&ip.spec.registry)),
                (
                    "secretProvider",
                    s(ip.spec
                        .credentials
                        .as_ref()
                        .map_or("", |c| c.provider.as_str())),
                ),
                (
                    "path",
                    s(ip.spec.credentials.as_ref().map_or("", |c| c.id.as_str())),
                ),
            ],
            [],
        )),
        Object::Service(svc) => {
            let spec = &svc.spec;
            let replicas = spec
                .replicas
                .or(spec.autoscaling.as_ref().and_then(|a| a.min))
                .unwrap_or(1);
            let ingress_tls = spec.ingress.as_ref().is_none_or(|i| i.tls.is_some());
            workload(
                object,
                "service",
                &[("", &spec.workload)],
                replicas,
                ingress_tls,
                true,
                facts,
                g,
            );
            if let Some(ing) = &spec.ingress {
                for h in &ing.hosts {
                    let (provider, zone) = facts.zone_of(h);
                    g.push(entity(
                        uid("Host", h),
                        vec![
                            ("name", s(h)),
                            ("zone", s(zone)),
                            ("dnsProvider", s(provider)),
                        ],
                        [],
                    ));
                }
            }
        }
        Object::Job(_) | Object::Model(_) => {
            let bodies = workload_bodies(object);
            let replicas: i32 = bodies.iter().map(|(_, _, r)| r).sum();
            let kind = if matches!(object, Object::Job(_)) {
                "job"
            } else {
                "model"
            };
            let bodies: Vec<(&str, &WorkloadBody)> =
                bodies.into_iter().map(|(n, b, _)| (n, b)).collect();
            workload(object, kind, &bodies, replicas, true, true, facts, g);
        }
        Object::MeshMember(mm) => {
            let ns = object.namespace().unwrap_or("default");
            let (deps, callers) = declared_peers(object);
            let deps = deps.iter().map(|p| uid("Service", p)).collect();
            let callers = callers.iter().map(|p| uid("Service", p)).collect();
            let strict = mm.spec.ports.values().all(|p| {
                p.peer_auth.unwrap_or_default()
                    == lattice_schemas::crd::mesh_member::PeerAuth::Strict
            });
            let ports: Vec<i64> = mm.spec.ports.values().map(|p| i64::from(p.port)).collect();
            g.namespaces.insert(ns.to_owned());
            g.push(service_entity(
                object,
                "meshmember",
                deps,
                callers,
                ports,
                1,
                true,
                SecretUse::default(),
                strict,
                g.wildcards,
                facts,
            ));
            for e in &mm.spec.egress {
                for p in &e.ports {
                    g.push(endpoint(
                        &egress_host(e),
                        i64::from(*p),
                        &protocol_name(e.protocol),
                    ));
                }
            }
        }
        Object::Package(pkg) => {
            let ns = object.namespace().unwrap_or("default");
            g.namespaces.insert(ns.to_owned());
            let uses_secrets = pkg.spec.resources.values().any(|r| r.type_ == "secret");
            g.push(service_entity(
                object,
                "package",
                vec![],
                vec![],
                vec![],
                1,
                true,
                SecretUse {
                    provider: uses_secrets,
                    // Chart values are where a Helm user writes a password; judged by value.
                    literal: pkg
                        .spec
                        .values
                        .iter()
                        .flat_map(|m| m.values())
                        .any(holds_literal_credential),
                    ..SecretUse::default()
                },
                true,
                g.wildcards,
                facts,
            ));
            for r in pkg.spec.resources.values() {
                resource_entities(r, ns, object.name(), g);
            }
        }
        Object::Core(o) => {
            if let Some(ns) = object.namespace() {
                g.namespaces.insert(ns.to_owned());
            }
            if o.kind.carries_pod() {
                let ns = object.namespace().unwrap_or("default");
                match crate::pod::project(o.kind.name(), &o.value, ns) {
                    Ok(Some(pod)) => {
                        // The API server takes any image string; one that is no reference
                        // is an image nobody trusts, not an error that would stop every
                        // decision of the world.
                        for image in pod.images {
                            if ImageRef::parse(&image).is_ok() {
                                g.images.insert(image);
                            } else {
                                g.push(crate::pod::untrusted_image(&image));
                            }
                        }
                        g.entities.extend(pod.entities);
                    }
                    Ok(None) => {}
                    Err(e) => g.errors.push(e.to_string()),
                }
            } else if let Some(e) = crate::kubernetes::project(o).transpose() {
                g.push(e);
            }
        }
        Object::Quota(q) => {
            let limits = crate::quota::Limits::of(&q.spec.limits)
                .fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Rx::new_decimal(crate::quota::decimal_text(v))))
                .collect::<Vec<_>>();
            match Rx::new_record(limits) {
                Ok(limits) => g.push(entity(
                    uid("Quota", object.name()),
                    vec![
                        ("name", s(object.name())),
                        ("scope", s(&crate::quota::scope_text(&q.spec))),
                        ("limits", limits),
                    ],
                    [],
                )),
                Err(e) => g.errors.push(format!("quota {}: {e}", object.name())),
            }
        }
        Object::CedarPolicy(_)
        | Object::TrustPolicy(_)
        | Object::InfraProvider(_)
        | Object::ComplianceProfile(_)
        | Object::OidcProvider(_)
        // Decided at their writes (ManageBackup, Restore, ManageCertIssuer, ManageDnsProvider),
        // with what they say in context; a DNSProvider's zone is a fact of its hosts.
        | Object::ClusterBackup(_)
        | Object::Restore(_)
        | Object::CertIssuer(_)
        | Object::DnsProvider(_) => {}
    }
}

/// Whether any string in `value` (at any depth) is a literal credential.
fn holds_literal_credential(value: &Value) -> bool {
    match value {
        Value::String(v) => {
            !lattice_schemas::placeholder::has_refs(v)
                && crate::credentials::looks_like_credential(v).is_some()
        }
        Value::Array(items) => items.iter().any(holds_literal_credential),
        Value::Object(map) => map.values().any(holds_literal_credential),
        _ => false,
    }
}

/// `name` → `ns/name`; `other/name` stays.
fn qualify(peer: &str, ns: &str) -> String {
    if peer.contains('/') {
        peer.to_owned()
    } else {
        format!("{ns}/{peer}")
    }
}

/// How a workload reads secrets.
#[derive(Clone, Copy, Default)]
struct SecretUse {
    /// At least one secret through a SecretProvider.
    provider: bool,
    /// Some variable holds a literal value that looks like a credential
    /// ([`crate::credentials`]).
    literal: bool,
    /// Some variable reads a secret resource: it is derived as an environment variable
    /// from a Secret (`secretKeyRef`), where CIS 5.4.1 prefers a mounted file.
    in_env: bool,
}

/// Whether `value` reads a secret resource of `body` (`${resources.<secret>.<key>}`).
fn reads_secret(value: &str, body: &WorkloadBody) -> bool {
    lattice_schemas::placeholder::parse(value)
        .unwrap_or_default()
        .iter()
        .any(|segment| match segment {
            lattice_schemas::placeholder::Segment::Ref { path, .. } => {
                path.first().map(String::as_str) == Some("resources")
                    && path
                        .get(1)
                        .and_then(|r| body.resources.get(r))
                        .is_some_and(|r| r.type_ == "secret")
            }
            lattice_schemas::placeholder::Segment::Text(_) => false,
        })
}

#[allow(clippy::too_many_arguments)]
fn service_entity(
    object: &Object,
    kind: &str,
    dependencies: Vec<EntityUid>,
    callers: Vec<EntityUid>,
    ports: Vec<i64>,
    replicas: i32,
    ingress_tls: bool,
    secrets: SecretUse,
    strict_mtls: bool,
    wildcards: (bool, bool),
    facts: &Facts,
) -> Result<Entity, String> {
    let ns = object.namespace().unwrap_or("default");
    let labels = object.meta().labels.clone().unwrap_or_default();
    entity_with_tags(
        uid("Service", &format!("{ns}/{}", object.name())),
        vec![
            ("name", s(object.name())),
            ("namespace", s(ns)),
            ("kind", s(kind)),
            (
                "dependencies",
                Rx::new_set(dependencies.into_iter().map(Rx::new_entity_uid)),
            ),
            (
                "callers",
                Rx::new_set(callers.into_iter().map(Rx::new_entity_uid)),
            ),
            // Wildcards hold only once AllowWildcard approves them (see Snapshot::build).
            ("dependsAll", Rx::new_bool(wildcards.0)),
            ("callersAll", Rx::new_bool(wildcards.1)),
            ("ports", Rx::new_set(ports.into_iter().map(Rx::new_long))),
            ("replicas", Rx::new_long(i64::from(replicas))),
            ("podSecurity", s(&facts.pod_security(ns))),
            ("ingressTls", Rx::new_bool(ingress_tls)),
            ("usesSecretProvider", Rx::new_bool(secrets.provider)),
            ("literalSecrets", Rx::new_bool(secrets.literal)),
            ("secretsInEnv", Rx::new_bool(secrets.in_env)),
            // Strict only as derived and applied: the namespace's baseline holds the
            // STRICT PeerAuthentication, and the workload's own ports are all strict.
            (
                "strictMtls",
                Rx::new_bool(strict_mtls && facts.default_deny(ns)),
            ),
        ],
        [uid("Namespace", ns)],
        Some(&labels),
    )
}

/// A container's name as its `Container` uid spells it: `task.name` for a job task or model
/// role, the plain name for a service.
pub fn container_name(body: &str, container: &str) -> String {
    if body.is_empty() {
        container.to_owned()
    } else {
        format!("{body}.{container}")
    }
}

/// The services a workload declares, as `namespace/name`: (outbound, inbound). Wildcards
/// are not peers (see [`declared_wildcards`]).
pub fn declared_peers(object: &Object) -> (BTreeSet<String>, BTreeSet<String>) {
    let ns = object.namespace().unwrap_or("default");
    let mut out = (BTreeSet::new(), BTreeSet::new());
    let mut from_body = |b: &WorkloadBody| {
        for (name, r) in &b.resources {
            // A peer in another cluster is no edge of this cluster's plan: see
            // [`remote_peers`].
            if r.type_ == "service" && name != "*" && r.cluster.is_none() {
                let peer = format!("{}/{name}", r.namespace.as_deref().unwrap_or(ns));
                let d = r.direction.unwrap_or(Direction::Outbound);
                if d.is_outbound() {
                    out.0.insert(peer.clone());
                }
                if d.is_inbound() {
                    out.1.insert(peer);
                }
            }
        }
    };
    for (_, body, _) in workload_bodies(object) {
        from_body(body);
    }
    if let Object::MeshMember(mm) = object {
        out.0 = mm
            .spec
            .dependencies
            .iter()
            .filter(|p| *p != "*")
            .map(|p| qualify(p, ns))
            .collect();
        out.1 = mm
            .spec
            .allowed_callers
            .iter()
            .filter(|p| *p != "*")
            .map(|p| qualify(p, ns))
            .collect();
    }
    out
}

/// A service in another cluster that a workload declares (`cluster` on a `service`
/// resource).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemotePeer {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// This workload calls the peer.
    pub outbound: bool,
    /// The peer calls this workload.
    pub inbound: bool,
}

/// The services in other clusters a workload declares. Mesh members name only peers in
/// their own cluster.
pub fn remote_peers(object: &Object) -> Vec<RemotePeer> {
    let ns = object.namespace().unwrap_or("default");
    let mut out = BTreeSet::new();
    for (_, body, _) in workload_bodies(object) {
        for (name, r) in &body.resources {
            let Some(cluster) = r.cluster.as_deref().filter(|_| r.type_ == "service") else {
                continue;
            };
            if name == "*" {
                continue;
            }
            let d = r.direction.unwrap_or_default();
            out.insert(RemotePeer {
                cluster: cluster.to_owned(),
                namespace: r.namespace.as_deref().unwrap_or(ns).to_owned(),
                name: name.clone(),
                outbound: d.is_outbound(),
                inbound: d.is_inbound(),
            });
        }
    }
    out.into_iter().collect()
}

/// The ports a workload serves.
pub fn served_ports(object: &Object) -> BTreeSet<i64> {
    match object {
        Object::MeshMember(mm) => mm.spec.ports.values().map(|p| i64::from(p.port)).collect(),
        _ => workload_bodies(object)
            .into_iter()
            .flat_map(|(_, b, _)| {
                b.service
                    .iter()
                    .flat_map(|s| s.ports.values().map(|p| i64::from(p.port)))
            })
            .collect(),
    }
}

/// Whether any object of `world` declares a wildcard peer, whose approval (AllowWildcard)
/// changes what is projected.
pub fn declares_wildcards(world: &World) -> bool {
    world.objects().any(|(_, o)| {
        let (outbound, inbound) = declared_wildcards(o);
        outbound || inbound
    })
}

/// Declared wildcards of a workload: (outbound, inbound).
pub fn declared_wildcards(object: &Object) -> (bool, bool) {
    if let Object::MeshMember(mm) = object {
        return (
            mm.spec.dependencies.iter().any(|d| d == "*"),
            mm.spec.allowed_callers.iter().any(|c| c == "*"),
        );
    }
    let mut out = (false, false);
    for (_, body, _) in workload_bodies(object) {
        for (name, r) in &body.resources {
            if r.type_ == "service" && name == "*" && r.cluster.is_none() {
                let d = r.direction.unwrap_or_default();
                out.0 |= d.is_outbound();
                out.1 |= d.is_inbound();
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn workload(
    object: &Object,
    kind: &str,
    bodies: &[(&str, &WorkloadBody)],
    replicas: i32,
    ingress_tls: bool,
    strict: bool,
    facts: &Facts,
    g: &mut Group,
) {
    let ns = object.namespace().unwrap_or("default");
    g.namespaces.insert(ns.to_owned());
    let (deps, callers) = declared_peers(object);
    let ports = served_ports(object);
    let mut uses_secrets = false;
    let mut literal = false;
    let mut in_env = false;
    let svc_uid = uid("Service", &format!("{ns}/{}", object.name()));
    for (prefix, body) in bodies {
        for r in body.resources.values() {
            uses_secrets |= r.type_ == "secret";
            resource_entities(r, ns, object.name(), g);
            if r.type_ == "volume"
                && let Some(id) = &r.id
                && r.params.as_ref().is_some_and(|p| p.contains_key("size"))
            {
                // An owned, shareable volume.
                let consumers: Vec<EntityUid> = r
                    .params
                    .as_ref()
                    .and_then(|p| p.get("allowedConsumers"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|c| uid("Service", &qualify(c, ns)))
                    .collect();
                g.push(entity(
                    uid("Volume", &format!("{ns}/{id}")),
                    vec![
                        ("id", s(id)),
                        ("owner", Rx::new_entity_uid(svc_uid.clone())),
                        (
                            "allowedConsumers",
                            Rx::new_set(consumers.into_iter().map(Rx::new_entity_uid)),
                        ),
                    ],
                    [uid("Namespace", ns)],
                ));
            }
        }
        for (sidecar, set) in [(false, &body.containers), (true, &body.sidecars)] {
            for (cname, c) in set {
                let full = container_name(prefix, cname);
                // Judged by the value, never the name; a value with placeholders is filled
                // from a declared resource at deploy time, so it is no literal.
                literal |= c.variables.values().any(|v| {
                    !lattice_schemas::placeholder::has_refs(v)
                        && crate::credentials::looks_like_credential(v).is_some()
                });
                in_env |= c.variables.values().any(|v| reads_secret(v, body));
                container_entities(&full, c, sidecar, &svc_uid, facts, g);
            }
        }
        for name in body.sysctls.keys() {
            g.push(override_entity("sysctl", name));
        }
        if body.host_network == Some(true) {
            g.push(override_entity("hostNetwork", ""));
        }
        if body.share_process_namespace == Some(true) {
            g.push(override_entity("shareProcessNamespace", ""));
        }
    }
    let deps = deps.iter().map(|d| uid("Service", d)).collect();
    let callers = callers.iter().map(|c| uid("Service", c)).collect();
    let service = service_entity(
        object,
        kind,
        deps,
        callers,
        ports.into_iter().collect(),
        replicas,
        ingress_tls,
        SecretUse {
            provider: uses_secrets,
            literal,
            in_env,
        },
        strict,
        g.wildcards,
        facts,
    );
    match service {
        Ok(e) => g.entities.insert(0, e),
        Err(e) => g.errors.push(e),
    }
}

fn override_entity(category: &str, value: &str) -> Result<Entity, String> {
    let id = if value.is_empty() {
        category.to_owned()
    } else {
        format!("{category}:{value}")
    };
    entity(
        uid("SecurityOverride", &id),
        vec![("category", s(category)), ("value", s(value))],
        [],
    )
}

/// The `SecurityOverride` uids a container's settings raise (deviations from restricted).
pub fn container_overrides(c: &Container) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(sec) = &c.security else { return out };
    if sec.privileged == Some(true) {
        out.push(("privileged".into(), String::new()));
    }
    if sec.run_as_user == Some(0) || sec.run_as_non_root == Some(false) {
        out.push(("runAsRoot".into(), String::new()));
    }
    if sec.run_as_group == Some(0) {
        out.push(("runAsRootGroup".into(), String::new()));
    }
    if sec.read_only_root_filesystem == Some(false) {
        out.push(("writableRootFilesystem".into(), String::new()));
    }
    if sec.allow_privilege_escalation == Some(true) {
        out.push(("privilegeEscalation".into(), String::new()));
    }
    for cap in &sec.capabilities {
        out.push(("capability".into(), cap.clone()));
    }
    if sec.seccomp_profile.as_deref() == Some("Unconfined") {
        out.push(("seccomp".into(), "Unconfined".into()));
    }
    if sec.apparmor_profile.as_deref() == Some("Unconfined") {
        out.push(("apparmor".into(), "Unconfined".into()));
    }
    out
}

/// The `Container` entity of container `name` of the workload `svc` (`Service::"ns/name"`).
fn container_entities(
    name: &str,
    c: &Container,
    sidecar: bool,
    svc: &EntityUid,
    facts: &Facts,
    g: &mut Group,
) {
    let image = image_uid_text(&c.image);
    g.images.insert(image.clone());
    // As the compiler derives the pod: pinned to what verification resolved, if anything.
    let pinned = ImageRef::parse(&c.image).is_ok_and(|i| !i.digest.is_empty())
        || facts
            .live
            .images
            .results
            .get(&image)
            .is_some_and(|v| !v.digest.is_empty());
    let sec = c.security.clone().unwrap_or_default();
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let has_limits = limits.is_some_and(|l| l.cpu.is_some() && l.memory.is_some());
    let run_as_root = sec.run_as_user == Some(0)
        || sec.run_as_group == Some(0)
        || sec.run_as_non_root == Some(false);
    // The settings as the compiler renders them (compiler/src/pod.rs): restricted defaults,
    // all capabilities dropped, RuntimeDefault seccomp unless a profile is asked for.
    let profile_type = |p: Option<&str>| match p {
        None | Some("RuntimeDefault") => "RuntimeDefault",
        Some("Unconfined") => "Unconfined",
        Some(_) => "Localhost",
    };
    g.push(entity(
        uid("Container", &format!("{}/{name}", svc.id().unescaped())),
        vec![
            ("name", s(name)),
            ("containerType", s("container")),
            ("image", Rx::new_entity_uid(uid("Image", &image))),
            ("pinned", Rx::new_bool(pinned)),
            ("privileged", Rx::new_bool(sec.privileged == Some(true))),
            ("runAsRoot", Rx::new_bool(run_as_root)),
            (
                "readOnlyRootFilesystem",
                Rx::new_bool(sec.read_only_root_filesystem != Some(false)),
            ),
            (
                "allowPrivilegeEscalation",
                Rx::new_bool(sec.allow_privilege_escalation == Some(true)),
            ),
            (
                "capabilities",
                Rx::new_set(sec.capabilities.iter().map(|c| s(c))),
            ),
            ("dropsAllCapabilities", Rx::new_bool(true)),
            (
                "runAsNonRoot",
                Rx::new_bool(sec.run_as_non_root.unwrap_or(sec.run_as_user != Some(0))),
            ),
            ("runAsUser", Rx::new_long(sec.run_as_user.unwrap_or(-1))),
            (
                "seccompProfile",
                s(profile_type(sec.seccomp_profile.as_deref())),
            ),
            (
                "appArmorProfile",
                s(sec
                    .apparmor_profile
                    .as_deref()
                    .map_or("", |p| profile_type(Some(p)))),
            ),
            ("seLinuxType", s("")),
            ("seLinuxUser", s("")),
            ("seLinuxRole", s("")),
            ("procMount", s("")),
            ("hostPorts", Rx::new_set([])),
            ("hostProcess", Rx::new_bool(false)),
            ("windows", Rx::new_bool(false)),
            ("hasLimits", Rx::new_bool(has_limits)),
            ("sidecar", Rx::new_bool(sidecar)),
        ],
        [svc.clone()],
    ));
    for (category, value) in container_overrides(c) {
        g.push(override_entity(&category, &value));
    }
}

/// The host an egress rule names: a DNS name, or `entity:<name>` for a Cilium entity such as
/// `world` or `kube-apiserver` (an `ExternalEndpoint` too, so it passes the same gate).
pub fn egress_host(rule: &lattice_schemas::crd::mesh_member::EgressRule) -> String {
    match (&rule.host, &rule.entity) {
        (Some(h), _) => h.clone(),
        (None, Some(e)) => format!("entity:{e}"),
        (None, None) => String::new(),
    }
}

/// `TCP` or `UDP`.
pub fn protocol_name(p: Option<lattice_schemas::crd::workload::Protocol>) -> String {
    match p.unwrap_or_default() {
        lattice_schemas::crd::workload::Protocol::Tcp => "TCP".into(),
        lattice_schemas::crd::workload::Protocol::Udp => "UDP".into(),
    }
}

fn endpoint(host: &str, port: i64, protocol: &str) -> Result<Entity, String> {
    entity(
        uid("ExternalEndpoint", &format!("{host}:{port}")),
        vec![
            ("host", s(host)),
            ("port", Rx::new_long(port)),
            ("protocol", s(protocol)),
        ],
        [],
    )
}

/// The `SecretPath` id a secret resource reads: `provider:path`.
pub fn secret_path_id(r: &Resource) -> Option<String> {
    let provider = r.params.as_ref()?.get("provider")?.as_str()?;
    Some(format!("{provider}:{}", r.id.as_deref()?))
}

/// The endpoint an `external-service` resource reaches: host, port (443 unless given) and
/// protocol.
pub fn external_endpoint(r: &Resource) -> Option<(String, i64, String)> {
    let params = r.params.as_ref()?;
    let host = params.get("host")?.as_str()?.to_owned();
    let port = params.get("port").and_then(Value::as_i64).unwrap_or(443);
    let protocol = params
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_owned();
    Some((host, port, protocol))
}

/// The `Gpu` a gpu resource asks for (its model, or `any`).
pub fn gpu_model(r: &Resource) -> String {
    r.params
        .as_ref()
        .and_then(|p| p.get("model"))
        .and_then(Value::as_str)
        .unwrap_or("any")
        .to_owned()
}

fn resource_entities(r: &Resource, _ns: &str, _owner: &str, g: &mut Group) {
    match r.type_.as_str() {
        "secret" => {
            if let (Some(id), Some(provider), Some(path)) = (
                secret_path_id(r),
                r.params
                    .as_ref()
                    .and_then(|p| p.get("provider"))
                    .and_then(Value::as_str),
                &r.id,
            ) {
                g.push(entity(
                    uid("SecretPath", &id),
                    vec![("provider", s(provider)), ("path", s(path))],
                    [uid("SecretProvider", provider)],
                ));
            }
        }
        "external-service" => {
            if let Some((host, port, proto)) = external_endpoint(r) {
                g.push(endpoint(&host, port, &proto));
            }
        }
        "gpu" => {
            let model = gpu_model(r);
            g.push(entity(uid("Gpu", &model), vec![("model", s(&model))], []));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_kinds_are_the_schemas_workload_kinds() {
        let schemas: Vec<&str> = lattice_schemas::crd::Kind::ALL
            .into_iter()
            .filter(|k| k.is_workload())
            .map(|k| k.name())
            .collect();
        assert_eq!(schemas, WORKLOAD_KINDS);
    }

    /// The cluster the world describes has backups only when one is scheduled here: an
    /// unpaused LatticeClusterBackup of every namespace (exclusions allowed), not the
    /// LatticeCluster's request, nor one paused, one-off or narrowed to some namespaces.
    #[test]
    fn backups_are_those_scheduled_not_those_asked_for() {
        let cluster = "apiVersion: lattice.dev/v1alpha1\nkind: LatticeCluster\nmetadata: {name: prod}\nspec:\n  providerRef: aws\n  provider: {kubernetes: {version: 1.32.0}, config: {docker: {}}}\n  nodes: {controlPlane: 1}\n  backups: true\n---\n";
        let backups = |backup: &str| {
            let text = format!(
                "{cluster}apiVersion: lattice.dev/v1alpha1\nkind: LatticeClusterBackup\nmetadata: {{name: b}}\nspec:\n{backup}"
            );
            let report = lattice_schemas::validate::validate_text("world.yaml", &text);
            assert_eq!(report.errors(), 0, "{:?}", report.findings);
            let world =
                World::from_objects(report.manifests.into_iter().map(|m| m.object).collect());
            let projection = Projection::of(&world);
            let cluster = world
                .objects()
                .map(|(_, o)| o)
                .find(|o| matches!(o, Object::Cluster(_)))
                .unwrap();
            let entities = projection.entities_of(cluster).unwrap();
            let e = entities
                .iter()
                .find(|e| e.uid() == uid("Cluster", "prod"))
                .unwrap();
            e.attr("backups").unwrap().unwrap().to_string()
        };
        assert_eq!(
            backups("  schedule: \"@daily\"\n  scope: {excludeNamespaces: [scratch]}\n"),
            "true"
        );
        assert_eq!(backups("  schedule: \"@daily\"\n  paused: true\n"), "false");
        assert_eq!(backups("  scope: {includeNamespaces: [shop]}\n"), "false");
        assert_eq!(
            backups("  schedule: \"@daily\"\n  scope: {includeNamespaces: [shop]}\n"),
            "false"
        );
        assert_eq!(
            backups("  schedule: \"@daily\"\n  scope: {namespaceSelector: {tier: prod}}\n"),
            "false"
        );
    }

    /// A world of `n` services, each with a container and its own image: 3n entities.
    fn services(n: usize) -> World {
        let text: String = (0..n)
            .map(|i| {
                format!(
                    "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: s{i}\n  namespace: ns{}\nspec:\n  containers:\n    main:\n      image: ghcr.io/org/app{i}:1.0\n---\n",
                    i % 7
                )
            })
            .collect();
        let report = lattice_schemas::validate::validate_text("world.yaml", &text);
        assert_eq!(report.errors(), 0, "{:?}", report.findings);
        World::from_objects(report.manifests.into_iter().map(|m| m.object).collect())
    }

    fn non_actions(e: &Entities) -> Vec<Entity> {
        e.iter()
            .filter(|x| x.uid().type_name().basename() != "Action")
            .cloned()
            .collect()
    }

    #[test]
    fn the_parallel_check_builds_what_cedar_builds() {
        let world = services(1000);
        let schema = lattice_schemas::cedar::schema();
        let built = Projection::of(&world)
            .entities(&world, schema, &Approvals::default())
            .unwrap();
        let all = non_actions(&built);
        assert!(all.len() > 3000, "the parallel path needs many entities");
        let by_cedar = Entities::from_entities(all, Some(schema)).unwrap();
        assert!(built.deep_eq(&by_cedar));
    }

    #[test]
    fn reported_descendants_are_clusters_in_their_parents_unless_declared_here() {
        let text = "apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: root
spec:
  providerRef: aws
  provider:
    kubernetes: {version: \"1.33.0\"}
    config: {aws: {region: eu-west-1}}
  nodes: {controlPlane: 1}
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: mid
spec:
  providerRef: aws
  parent: root
  provider:
    kubernetes: {version: \"1.33.0\"}
    config: {aws: {region: eu-west-1}}
  nodes: {controlPlane: 1}
status:
  descendants:
    - {name: leaf, parent: mid, environment: prod, phase: Ready, ready: true, agentConnected: true,
       health: {nodesReady: 2, nodesTotal: 3, controlPlaneReady: true}}
    - {name: twig, parent: leaf, phase: Provisioning}
    - {name: root, parent: mid}
";
        let report = lattice_schemas::validate::validate_text("world.yaml", text);
        assert_eq!(report.errors(), 0, "{:?}", report.findings);
        let world = World::from_objects(report.manifests.into_iter().map(|m| m.object).collect());
        let schema = lattice_schemas::cedar::schema();
        let built = Projection::of(&world)
            .entities(&world, schema, &Approvals::default())
            .unwrap();
        let cluster = |n: &str| uid("Cluster", n);
        let leaf = built.get(&cluster("leaf")).expect("leaf is a Cluster here");
        assert_eq!(
            leaf.attr("nodesReady").unwrap().unwrap(),
            cedar_policy::EvalResult::Long(2)
        );
        assert_eq!(
            leaf.attr("environment").unwrap().unwrap(),
            cedar_policy::EvalResult::String("prod".into())
        );
        let ancestors: HashSet<EntityUid> = built
            .ancestors(&cluster("twig"))
            .unwrap()
            .cloned()
            .collect();
        assert_eq!(
            ancestors,
            [cluster("leaf"), cluster("mid"), cluster("root")].into(),
            "a grandchild is in every cluster above it"
        );
        let root = built.get(&cluster("root")).unwrap();
        assert_eq!(
            root.attr("region").unwrap().unwrap(),
            cedar_policy::EvalResult::String("eu-west-1".into()),
            "a report never replaces a declared LatticeCluster"
        );
    }

    #[test]
    fn a_non_conforming_entity_in_any_chunk_is_an_error() {
        let world = services(1000);
        let schema = lattice_schemas::cedar::schema();
        let built = Projection::of(&world)
            .entities(&world, schema, &Approvals::default())
            .unwrap();
        let mut all = non_actions(&built);
        let bogus = entity(uid("Service", "ns0/bogus"), vec![("nope", s("x"))], []).unwrap();
        for at in [0, all.len() / 2, all.len()] {
            let mut with = all.clone();
            with.insert(at, bogus.clone());
            let with: Vec<&Entity> = with.iter().collect();
            let err = conforming_entities(&with, schema).unwrap_err();
            assert!(format!("{err:?}").contains("ns0/bogus"), "{err:?}");
        }
        all.truncate(10);
        all.push(bogus);
        let all: Vec<&Entity> = all.iter().collect();
        assert!(conforming_entities(&all, schema).is_err());
    }
}
