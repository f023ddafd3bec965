//! Compliance: the subjects a scan asks about, the `Comply` question each raises for a
//! framework, and the facts its context carries.
//!
//! A subject is a Cluster (a declared `LatticeCluster`), a Namespace (declared or used by a
//! workload), a Service (any workload) or a Container. Checks are forbids on `Comply`, so a
//! deny's reasons are exactly the failed checks. Some facts are not attributes of any one
//! entity but outcomes of the snapshot's own decisions (was this override approved? is this
//! allowed edge bilateral?); [`ComplyFacts`] derives them on the same snapshot so that the
//! scan and the platform can never disagree about what was authorized.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cedar_policy::{
    ActionConstraint, Effect, EntityUid, PrincipalConstraint, ResourceConstraint,
    RestrictedExpression,
};
use lattice_engine::attr::Rx;
use lattice_engine::policies::StoredPolicy;
use lattice_engine::project::{declared_peers, served_ports};
use lattice_engine::{ObjectKey, PolicyStore, Query, Snapshot, World, action, uid};
use lattice_schemas::crd::service::DeniedGate;
use lattice_schemas::crd::{EnforcementMode, LatticeComplianceProfile};
use lattice_schemas::manifest::Object;
use lattice_schemas::manifest::core::{CoreKind, CoreObject};
use rayon::prelude::*;

use crate::attrs::{bool_attr, set_attr, string_attr};

use crate::derivation::questions;
use crate::mesh::{MeshPlan, connect_query};
use crate::proxy::{EXEC_ACTIONS, PROXY_ACTIONS, PROXY_GROUPS};

pub mod derived;

pub use derived::{DerivedByWorkload, DerivedObjects};

/// The entity types a compliance check can be about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum SubjectKind {
    Cluster,
    Namespace,
    Service,
    Container,
    /// The pod a Kubernetes object runs (a Pod, or a Deployment's template, …).
    Pod,
    /// A Role or ClusterRole.
    Role,
    /// A RoleBinding or ClusterRoleBinding.
    RoleBinding,
    /// A Kubernetes Service.
    KubeService,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 8] = [
        SubjectKind::Cluster,
        SubjectKind::Namespace,
        SubjectKind::Service,
        SubjectKind::Container,
        SubjectKind::Pod,
        SubjectKind::Role,
        SubjectKind::RoleBinding,
        SubjectKind::KubeService,
    ];

    /// The Cedar type name (without the `Lattice::` namespace).
    pub fn type_name(self) -> &'static str {
        match self {
            SubjectKind::Cluster => "Cluster",
            SubjectKind::Namespace => "Namespace",
            SubjectKind::Service => "Service",
            SubjectKind::Container => "Container",
            SubjectKind::Pod => "Pod",
            SubjectKind::Role => "Role",
            SubjectKind::RoleBinding => "RoleBinding",
            SubjectKind::KubeService => "KubeService",
        }
    }

    /// The kind whose Cedar type is `name` (with or without `Lattice::`).
    pub fn of_type(name: &str) -> Option<SubjectKind> {
        let name = name.strip_prefix("Lattice::").unwrap_or(name);
        SubjectKind::ALL.into_iter().find(|k| k.type_name() == name)
    }
}

/// One thing a scan asks about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    pub kind: SubjectKind,
    /// The entity id: `name`, `namespace`, `ns/workload` or `ns/workload/container`.
    pub id: String,
    /// The namespace it lives in (none for clusters).
    pub namespace: Option<String>,
    /// The object it was declared by (none for a namespace only workloads name).
    pub object: Option<ObjectKey>,
}

impl Subject {
    /// The subject's Cedar uid.
    pub fn uid(&self) -> EntityUid {
        uid(self.kind.type_name(), &self.id)
    }

    /// The workload (`ns/name`) a Service or Container belongs to.
    pub fn workload(&self) -> Option<&str> {
        match self.kind {
            SubjectKind::Service => Some(&self.id),
            SubjectKind::Container => {
                let (ns_name, _) = self.id.rsplit_once('/')?;
                Some(ns_name)
            }
            _ => None,
        }
    }
}

/// Every subject of `world`, in a stable order (clusters, namespaces, services, containers).
/// With `namespaces`, only subjects in those namespaces (clusters are always kept).
pub fn subjects(world: &World, namespaces: Option<&BTreeSet<String>>) -> Vec<Subject> {
    let in_scope = |ns: &str| namespaces.is_none_or(|set| set.contains(ns));
    let mut out = Vec::new();
    let mut ns_seen: BTreeMap<String, Option<ObjectKey>> = BTreeMap::new();
    for (key, object) in world.objects() {
        match object {
            Object::Cluster(_) => out.push(Subject {
                kind: SubjectKind::Cluster,
                id: key.name.clone(),
                namespace: None,
                object: Some(key.clone()),
            }),
            Object::Namespace(_) => {
                ns_seen.insert(key.name.clone(), Some(key.clone()));
            }
            o if scanned_as_service(o) => {
                ns_seen
                    .entry(o.namespace().unwrap_or("default").to_owned())
                    .or_insert(None);
            }
            Object::Core(_) => {
                if let Some(ns) = object.namespace() {
                    ns_seen.entry(ns.to_owned()).or_insert(None);
                }
            }
            _ => {}
        }
    }
    for (ns, object) in ns_seen {
        if in_scope(&ns) {
            out.push(Subject {
                kind: SubjectKind::Namespace,
                id: ns.clone(),
                namespace: Some(ns),
                object,
            });
        }
    }
    let mut containers = Vec::new();
    for (key, object) in world.objects().filter(|(_, o)| scanned_as_service(o)) {
        let ns = object.namespace().unwrap_or("default");
        if !in_scope(ns) {
            continue;
        }
        let id = format!("{ns}/{}", object.name());
        for name in container_names(object) {
            containers.push(Subject {
                kind: SubjectKind::Container,
                id: format!("{id}/{name}"),
                namespace: Some(ns.to_owned()),
                object: Some(key.clone()),
            });
        }
        out.push(Subject {
            kind: SubjectKind::Service,
            id,
            namespace: Some(ns.to_owned()),
            object: Some(key.clone()),
        });
    }
    out.extend(containers);
    out.extend(kubernetes_subjects(world, namespaces));
    out
}

/// The subjects of the world's Kubernetes objects: each pod and its containers, each Role,
/// RoleBinding and Service. Cluster-scoped RBAC is in scope only when the scan is not
/// limited to namespaces.
fn kubernetes_subjects(world: &World, namespaces: Option<&BTreeSet<String>>) -> Vec<Subject> {
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    let mut rest = Vec::new();
    for (key, object) in world.objects() {
        let Object::Core(core) = object else {
            continue;
        };
        let ns = object.namespace();
        let in_scope = match (ns, namespaces) {
            (_, None) => true,
            (Some(ns), Some(set)) => set.contains(ns),
            (None, Some(_)) => false,
        };
        if !in_scope {
            continue;
        }
        let subject = |kind: SubjectKind, id: String| Subject {
            kind,
            id,
            namespace: ns.map(str::to_owned),
            object: Some(key.clone()),
        };
        let id = lattice_engine::kubernetes::object_id(core);
        match core.kind {
            k if k.carries_pod() => {
                for name in pod_container_names(core) {
                    containers.push(subject(SubjectKind::Container, format!("{id}/{name}")));
                }
                pods.push(subject(SubjectKind::Pod, id));
            }
            CoreKind::Role | CoreKind::ClusterRole => rest.push(subject(SubjectKind::Role, id)),
            CoreKind::RoleBinding | CoreKind::ClusterRoleBinding => {
                rest.push(subject(SubjectKind::RoleBinding, id))
            }
            CoreKind::Service => rest.push(subject(
                SubjectKind::KubeService,
                format!("{}/{}", ns.unwrap_or("default"), object.name()),
            )),
            _ => {}
        }
    }
    pods.extend(containers);
    pods.extend(rest);
    pods
}

/// The names of the containers, init containers and ephemeral containers of the pod a
/// Kubernetes object runs, as its `Container` uids spell them.
fn pod_container_names(core: &CoreObject) -> Vec<String> {
    let Some(pod) = lattice_engine::pod::template(core.kind.name(), &core.value) else {
        return Vec::new();
    };
    let spec = pod.get("spec");
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| spec?.get(list)?.as_array())
        .flatten()
        .map(|c| {
            c.get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// Whether `object` is a `Service` subject: every workload, a LatticePackage included,
/// which the projection makes a `Service` of kind `package` (its charts' containers are
/// not in the world, so it has no `Container` subjects).
fn scanned_as_service(object: &Object) -> bool {
    object.is_workload()
}

/// The container names of a workload as its `Container` uids spell them (`task.name` for
/// job tasks and model roles), sidecars included.
fn container_names(object: &Object) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, body, _) in lattice_engine::project::workload_bodies(object) {
        for name in body.containers.keys().chain(body.sidecars.keys()) {
            out.push(lattice_engine::project::container_name(prefix, name));
        }
    }
    out
}

/// What one subject's `Comply` context says (see `ComplyContext` in the Cedar schema).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectFacts {
    pub denied_gates: BTreeSet<String>,
    pub unapproved_overrides: BTreeSet<String>,
    pub unapproved_wildcards: BTreeSet<String>,
    pub unilateral_callers: i64,
    pub expired_audit_policies: i64,
    /// Frameworks a LatticeComplianceProfile schedules for the subject's namespace.
    pub scheduled_frameworks: BTreeSet<String>,
    /// Frameworks whose scans of the namespace a profile recorded within its interval.
    pub recorded_frameworks: BTreeSet<String>,
    pub user_proxy_grants: i64,
    /// Cluster: enforced permits reaching `exec`, `attach`, `portforward` or `proxy` for a principal scope that
    /// is not a Group.
    pub user_exec_grants: i64,
    /// Cluster: namespaces where a user in no group may write policy.
    pub ungrouped_policy_writes: i64,
    /// Service: what its derived objects show (all empty when it derived nothing).
    pub derived: DerivedObjects,
    /// Service: it serves a port named `metrics`.
    pub serves_metrics: bool,
    /// Namespace: the NetworkPolicy objects in it.
    pub network_policies: i64,
    /// Pod: the Pod Security checks it fails under its namespace's enforce level and
    /// version, at the latest baseline, and at the latest restricted (PSA's check names).
    pub pod_security_violations: BTreeSet<String>,
    pub baseline_violations: BTreeSet<String>,
    pub restricted_violations: BTreeSet<String>,
}

/// What derivation already decided and produced on the scanned snapshot, which
/// [`ComplyFacts::derive`] reads instead of deciding it again. Each part is optional.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known<'a> {
    /// The denied gates of workloads (by `namespace/name`): taken as they are. A workload
    /// absent from it has its gates decided.
    pub gates: Option<&'a DecidedGates>,
    /// What each workload's derived objects show; a workload absent from it derived
    /// nothing. Without it nothing is known of what was derived, and every fact read from
    /// derived objects fails closed.
    pub derived: Option<&'a DerivedByWorkload>,
    /// The mesh plan of the world: its decided edges give the unilateral callers.
    pub mesh: Option<&'a MeshPlan>,
}

/// The facts of every subject, derived once per scan from one snapshot.
#[derive(Clone, Debug, Default)]
pub struct ComplyFacts {
    by_subject: HashMap<(SubjectKind, String), SubjectFacts>,
}

impl ComplyFacts {
    /// Derives the facts of `subjects` from the snapshot's decisions (derivation gates and
    /// `Connect` on declared edges), the world's CedarPolicy and LatticeComplianceProfile
    /// objects, and the store's proxy permits. `now` decides which audit periods are over.
    ///
    /// `known` is what derivation already decided and produced on this snapshot
    /// (`lattice-policy plan` derives every workload before it scans); see [`Known`].
    pub fn derive(
        snapshot: &Snapshot,
        world: &World,
        store: &PolicyStore,
        subjects: &[Subject],
        now: jiff::Timestamp,
        known: Known<'_>,
    ) -> ComplyFacts {
        let Known {
            gates: decided,
            derived,
            mesh: planned,
        } = known;
        let wanted: HashSet<&str> = subjects
            .iter()
            .filter(|s| s.kind == SubjectKind::Service)
            .map(|s| s.id.as_str())
            .collect();
        let workloads: Vec<(&ObjectKey, &Object)> = world
            .objects()
            .filter(|(_, o)| o.is_workload())
            .filter(|(_, o)| {
                wanted.contains(
                    format!("{}/{}", o.namespace().unwrap_or("default"), o.name()).as_str(),
                )
            })
            .collect();
        let (gates, mesh) = rayon::join(
            || {
                workloads
                    .par_iter()
                    .map(|(_, o)| {
                        let id = format!("{}/{}", o.namespace().unwrap_or("default"), o.name());
                        let (mut service, containers) =
                            gate_facts(snapshot, o, decided.and_then(|d| d.get(&id)));
                        // What derivation showed, copied here on every core rather than
                        // below on one.
                        service.1.derived = match derived {
                            Some(d) => d.get(&id).cloned().unwrap_or_default(),
                            None => DerivedObjects::unknown(),
                        };
                        service.1.serves_metrics = serves_metrics(o);
                        (service, containers)
                    })
                    .collect::<Vec<_>>()
            },
            || match planned {
                Some(plan) => unilateral_in(snapshot, plan),
                None => unilateral_callers(snapshot, world),
            },
        );
        let mut by_subject: HashMap<(SubjectKind, String), SubjectFacts> =
            HashMap::with_capacity(subjects.len());
        for (service, containers) in gates {
            for (container, facts) in containers {
                by_subject.insert((SubjectKind::Container, container), facts);
            }
            let mut facts = service.1;
            facts.unilateral_callers = mesh.get(&service.0).copied().unwrap_or(0);
            by_subject.insert((SubjectKind::Service, service.0), facts);
        }
        let audit = expired_audit_policies(world, now);
        let scheduled = scheduled_frameworks(world);
        let recorded = recorded_frameworks(world, now);
        let proxy: Vec<&str> = PROXY_ACTIONS.iter().chain(&PROXY_GROUPS).copied().collect();
        let grants = user_proxy_grants(snapshot, store, &proxy);
        let exec_grants = user_proxy_grants(snapshot, store, EXEC_ACTIONS.as_slice());
        let policy_writes = ungrouped_policy_writes(snapshot, world);
        let kube = KubernetesFacts::of(world);
        let pod_security = pod_security_facts(snapshot, world, subjects);
        for s in subjects {
            match s.kind {
                SubjectKind::Namespace => {
                    let f = by_subject.entry((s.kind, s.id.clone())).or_default();
                    f.expired_audit_policies = audit.get(&s.id).copied().unwrap_or(0);
                    f.scheduled_frameworks = scheduled(&s.id);
                    f.recorded_frameworks = recorded(&s.id);
                    f.network_policies = kube.network_policies.get(&s.id).copied().unwrap_or(0);
                }
                SubjectKind::Pod => {
                    let f = by_subject.entry((s.kind, s.id.clone())).or_default();
                    kube.pod_facts(snapshot, world, s, f);
                    if let Some((enforced, baseline, restricted)) = pod_security.get(&s.id) {
                        f.pod_security_violations = enforced.clone();
                        f.baseline_violations = baseline.clone();
                        f.restricted_violations = restricted.clone();
                    }
                }
                SubjectKind::Container if is_kubernetes(s) => {
                    let f = by_subject.entry((s.kind, s.id.clone())).or_default();
                    f.unapproved_overrides = container_deviations(snapshot, &s.uid());
                }
                SubjectKind::Cluster => {
                    let f = by_subject.entry((s.kind, s.id.clone())).or_default();
                    f.user_proxy_grants = grants(&s.uid());
                    f.user_exec_grants = exec_grants(&s.uid());
                    f.ungrouped_policy_writes = policy_writes;
                }
                _ => {}
            }
        }
        ComplyFacts { by_subject }
    }

    /// The facts of one subject (all empty when it raised none).
    pub fn of(&self, subject: &Subject) -> SubjectFacts {
        self.by_subject
            .get(&(subject.kind, subject.id.clone()))
            .cloned()
            .unwrap_or_default()
    }
}

/// Whether a subject belongs to a Kubernetes object rather than a Lattice workload.
fn is_kubernetes(subject: &Subject) -> bool {
    subject
        .object
        .as_ref()
        .is_some_and(|k| CoreKind::from_name(k.kind).is_some())
}

/// The Pod Security checks each pod subject fails, by pod id: under its namespace's enforce
/// level and version, at the latest baseline, and at the latest restricted. Decided with
/// `RunPod` on the scan's snapshot, as admission decides it (exemptions aside: they concern
/// who makes a request, and a scan judges what runs). A pod that passes restricted passes
/// baseline, so baseline is asked only of those that do not.
fn pod_security_facts(
    snapshot: &Snapshot,
    world: &World,
    subjects: &[Subject],
) -> HashMap<String, PodSecurityFacts> {
    use crate::pod_security::{LATEST, Level, LevelVersion, NamespacePolicy, WorldPolicies};
    let world_policies = WorldPolicies::of(world);
    let mut policies: HashMap<&str, NamespacePolicy> = HashMap::new();
    let pods: Vec<(&Subject, &CoreObject)> = subjects
        .iter()
        .filter(|s| s.kind == SubjectKind::Pod)
        .filter_map(|s| match world.get(s.object.as_ref()?) {
            Some(Object::Core(core)) => Some((s, core)),
            _ => None,
        })
        .collect();
    for (s, _) in &pods {
        let ns = s.namespace.as_deref().unwrap_or("default");
        policies
            .entry(ns)
            .or_insert_with(|| world_policies.namespace(world, ns));
    }
    pods.par_iter()
        .map(|(s, core)| {
            let ns = s.namespace.as_deref().unwrap_or("default");
            let mut principals = vec![s.uid()];
            principals.extend(
                pod_container_names(core)
                    .into_iter()
                    .map(|n| uid("Container", &format!("{}/{n}", s.id))),
            );
            let at = |lv: LevelVersion| pod_violations(snapshot, &principals, ns, lv);
            let latest = |level| LevelVersion {
                level,
                version: LATEST,
            };
            let restricted = at(latest(Level::Restricted));
            let baseline = if restricted.is_empty() {
                BTreeSet::new()
            } else {
                at(latest(Level::Baseline))
            };
            let enforce = policies[ns].enforce;
            let enforced = match (enforce.level, enforce.version >= LATEST) {
                (Level::Privileged, _) => BTreeSet::new(),
                (Level::Restricted, true) => restricted.clone(),
                (Level::Baseline, true) => baseline.clone(),
                _ => at(enforce),
            };
            (s.id.clone(), (enforced, baseline, restricted))
        })
        .collect()
}

/// The Pod Security facts of one pod: (enforced, baseline, restricted) violations.
type PodSecurityFacts = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

/// The checks `principals` (a pod and its containers) fail under `lv`: each deciding
/// forbid's PSA check, `default-deny` when nothing permits `RunPod`, `error` when a question
/// cannot be decided (fail closed).
fn pod_violations(
    snapshot: &Snapshot,
    principals: &[EntityUid],
    namespace: &str,
    lv: crate::pod_security::LevelVersion,
) -> BTreeSet<String> {
    use crate::pod_security::{Mode, check_of, run_query};
    let mut out = BTreeSet::new();
    for p in principals {
        match snapshot.decide(&run_query(p.clone(), namespace, Mode::Enforce, lv)) {
            Ok(d) if d.allowed => {}
            Ok(d) if d.determining.is_empty() => {
                out.insert("default-deny".to_owned());
            }
            Ok(d) => out.extend(d.determining.iter().map(|p| check_of(p))),
            Err(_) => {
                out.insert("error".to_owned());
            }
        }
    }
    out
}

/// What the world's NetworkPolicies and ServiceAccounts say, by namespace.
#[derive(Default)]
struct KubernetesFacts {
    network_policies: HashMap<String, i64>,
    /// (namespace, service account) → its `automountServiceAccountToken`, when written.
    automount: HashMap<(String, String), bool>,
}

impl KubernetesFacts {
    fn of(world: &World) -> KubernetesFacts {
        let mut out = KubernetesFacts::default();
        for (key, object) in world.objects() {
            let Object::Core(core) = object else {
                continue;
            };
            let ns = key.namespace.clone().unwrap_or_default();
            match core.kind {
                CoreKind::NetworkPolicy => *out.network_policies.entry(ns).or_default() += 1,
                CoreKind::ServiceAccount => {
                    if let Some(v) = core
                        .value
                        .get("automountServiceAccountToken")
                        .and_then(|v| v.as_bool())
                    {
                        out.automount.insert((ns, key.name.clone()), v);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// A pod's facts: the host namespaces and volumes it deviates to, the service account
    /// it runs as, and whether that account's token is mounted (the pod's setting, else its
    /// ServiceAccount's in the world, else Kubernetes' default: mounted).
    fn pod_facts(
        &self,
        snapshot: &Snapshot,
        world: &World,
        subject: &Subject,
        f: &mut SubjectFacts,
    ) {
        let Some(pod) = snapshot.entities().get(&subject.uid()) else {
            // A pod the snapshot does not hold cannot be shown to pass: it fails every
            // check that reads these facts (fail closed), as a missing container does.
            f.unapproved_overrides
                .extend(["hostNetwork", "hostPID", "hostIPC", "hostPath"].map(str::to_owned));
            f.derived.token_mounted = true;
            f.derived.default_service_account = true;
            return;
        };
        for flag in ["hostNetwork", "hostPID", "hostIPC"] {
            if bool_attr(pod, flag) {
                f.unapproved_overrides.insert(flag.to_owned());
            }
        }
        if set_attr(pod, "volumeTypes").iter().any(|v| v == "hostPath") {
            f.unapproved_overrides.insert("hostPath".to_owned());
        }
        let ns = subject.namespace.clone().unwrap_or_default();
        let account = string_attr(pod, "serviceAccountName");
        let account = if account.is_empty() {
            "default".to_owned()
        } else {
            account
        };
        let own = subject
            .object
            .as_ref()
            .and_then(|k| match world.get(k) {
                Some(Object::Core(core)) => {
                    lattice_engine::pod::template(core.kind.name(), &core.value)
                }
                _ => None,
            })
            .and_then(|pod| {
                pod.get("spec")?
                    .get("automountServiceAccountToken")?
                    .as_bool()
            });
        f.derived.token_mounted = own
            .or_else(|| self.automount.get(&(ns, account.clone())).copied())
            .unwrap_or(true);
        f.derived.default_service_account = account == "default";
    }
}

/// The restricted settings a Kubernetes object's container deviates from, named as
/// `SecurityOverride` categories: nothing approves a deviation of an object Lattice did not
/// derive, so each is unapproved. A container whose entity is missing deviates from
/// everything (fail closed).
fn container_deviations(snapshot: &Snapshot, container: &EntityUid) -> BTreeSet<String> {
    let Some(c) = snapshot.entities().get(container) else {
        return [
            "privileged",
            "runAsRoot",
            "privilegeEscalation",
            "capability",
            "writableRootFilesystem",
            "seccomp",
        ]
        .map(str::to_owned)
        .into();
    };
    let mut out = BTreeSet::new();
    let mut flag = |yes: bool, category: &str| {
        if yes {
            out.insert(category.to_owned());
        }
    };
    flag(bool_attr(c, "privileged"), "privileged");
    flag(
        bool_attr(c, "runAsRoot") || !bool_attr(c, "runAsNonRoot"),
        "runAsRoot",
    );
    flag(
        bool_attr(c, "allowPrivilegeEscalation"),
        "privilegeEscalation",
    );
    flag(!set_attr(c, "capabilities").is_empty(), "capability");
    flag(
        !bool_attr(c, "readOnlyRootFilesystem"),
        "writableRootFilesystem",
    );
    flag(
        !matches!(
            string_attr(c, "seccompProfile").as_str(),
            "RuntimeDefault" | "Localhost"
        ),
        "seccomp",
    );
    flag(
        string_attr(c, "appArmorProfile") == "Unconfined",
        "apparmor",
    );
    out
}

type GateFacts = ((String, SubjectFacts), Vec<(String, SubjectFacts)>);

/// Denied derivation gates by workload (`namespace/name`), as derivation reports them; a
/// workload that is present with none had every gate allowed.
pub type DecidedGates = HashMap<String, Vec<DeniedGate>>;

/// The derivation gates that allowed a deviation (the actions an exception grants), by
/// workload (`namespace/name`), as derivation decided them on the scanned snapshot; a
/// workload that is present with none was allowed no deviation.
pub type AllowedDeviations = HashMap<String, Vec<crate::derivation::AllowedGate>>;

/// The denied derivation gates of one workload, attributed to the container that raised
/// them (pod-level and resource questions stay with the service).
fn gate_facts(
    snapshot: &Snapshot,
    object: &Object,
    decided: Option<&Vec<DeniedGate>>,
) -> GateFacts {
    let ns = object.namespace().unwrap_or("default");
    let id = format!("{ns}/{}", object.name());
    let principal = uid("Service", &id);
    let mut service = SubjectFacts::default();
    let mut containers: BTreeMap<String, SubjectFacts> = container_names(object)
        .into_iter()
        .map(|n| (format!("{id}/{n}"), SubjectFacts::default()))
        .collect();
    // (action, resource id, raised by) of each denied gate.
    let denied: Vec<(String, String, String)> = match decided {
        Some(gates) => gates
            .iter()
            .map(|g| {
                let id = g
                    .resource
                    .parse::<cedar_policy::EntityUid>()
                    .map(|u| u.id().unescaped().to_owned())
                    .unwrap_or_else(|_| g.resource.clone());
                (g.action.clone(), id, g.raised_by.clone())
            })
            .collect(),
        None => questions(object)
            .into_iter()
            .filter(|gate| {
                // A malformed question cannot be allowed; it counts as denied, failing
                // closed.
                let allowed = gate.malformed.is_none()
                    && lattice_engine::context_from_json(&gate.context).is_ok_and(|context| {
                        let q = Query::new(
                            principal.clone(),
                            action(gate.action),
                            gate.resource.clone(),
                        )
                        .with_context(context);
                        snapshot.decide(&q).is_ok_and(|d| d.allowed)
                    });
                !allowed
            })
            .map(|g| {
                (
                    g.action.to_owned(),
                    g.resource.id().unescaped().to_owned(),
                    g.raised_by,
                )
            })
            .collect(),
    };
    for (gate_action, resource, raised_by) in denied {
        let container = raised_by.strip_prefix("sidecar ").unwrap_or(&raised_by);
        let mut targets = vec![&mut service];
        if let Some(c) = containers.get_mut(&format!("{id}/{container}")) {
            targets.push(c);
        }
        for f in targets {
            f.denied_gates.insert(gate_action.clone());
            match gate_action.as_str() {
                "OverrideSecurity" => {
                    let category = resource.split(':').next().unwrap_or_default();
                    f.unapproved_overrides.insert(category.to_owned());
                }
                "AllowWildcard" => {
                    f.unapproved_wildcards.insert(resource.clone());
                }
                _ => {}
            }
        }
    }
    ((id, service), containers.into_iter().collect())
}

/// Per callee, the allowed `Connect` edges into it that are not bilateral: the caller
/// neither declares the callee nor has an approved outbound wildcard, or the callee neither
/// declares the caller nor has an approved inbound wildcard. An edge both sides declare is
/// bilateral whatever its decision, so only one-sided declarations are decided: at estate
/// scale, where nearly every edge is agreed, that is a handful of decisions, not a mesh plan.
fn unilateral_callers(snapshot: &Snapshot, world: &World) -> HashMap<String, i64> {
    // Reading every workload's declarations is most of this at estate scale: on every core.
    let workloads: Vec<&Object> = world
        .objects()
        .filter(|(_, o)| o.is_workload())
        .map(|(_, o)| o)
        .collect();
    /// One workload's id, the peers it calls and is called by, and the ports it serves.
    type Declarations = (String, BTreeSet<String>, BTreeSet<String>, Vec<i64>);
    let declared: Vec<Declarations> = workloads
        .par_iter()
        .map(|o| {
            let id = format!("{}/{}", o.namespace().unwrap_or("default"), o.name());
            let (deps, callers) = declared_peers(o);
            (id, deps, callers, served_ports(o).into_iter().collect())
        })
        .collect();
    let mut outbound: HashMap<String, BTreeSet<String>> = HashMap::with_capacity(declared.len());
    let mut inbound: HashMap<String, BTreeSet<String>> = HashMap::with_capacity(declared.len());
    let mut ports: HashMap<String, Vec<i64>> = HashMap::with_capacity(declared.len());
    for (id, deps, callers, served) in declared {
        ports.insert(id.clone(), served);
        outbound.insert(id.clone(), deps);
        inbound.insert(id, callers);
    }
    let declares = |map: &HashMap<String, BTreeSet<String>>, who: &str, peer: &str| {
        map.get(who).is_some_and(|set| set.contains(peer))
    };
    let mut one_sided: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (caller, callees) in &outbound {
        for callee in callees {
            if !declares(&inbound, callee, caller) {
                one_sided.insert((caller, callee));
            }
        }
    }
    for (callee, callers) in &inbound {
        for caller in callers {
            if !declares(&outbound, caller, callee) {
                one_sided.insert((caller, callee));
            }
        }
    }
    let unilateral: Vec<&str> = one_sided
        .into_par_iter()
        .filter(|(caller, callee)| {
            let caller_agrees =
                declares(&outbound, caller, callee) || snapshot.wildcards_approved(caller).0;
            let callee_agrees =
                declares(&inbound, callee, caller) || snapshot.wildcards_approved(callee).1;
            if caller_agrees && callee_agrees {
                return false;
            }
            let callee_ports = ports.get(*callee).map(Vec::as_slice).unwrap_or_default();
            let q = connect_query(caller, callee, callee_ports);
            snapshot.decide(&q).is_ok_and(|d| d.allowed)
        })
        .map(|(_, callee)| callee)
        .collect();
    let mut out: HashMap<String, i64> = HashMap::new();
    for callee in unilateral {
        *out.entry(callee.to_owned()).or_default() += 1;
    }
    out
}

/// [`unilateral_callers`] read from a mesh plan of the same snapshot and world: its edges
/// are every declared edge, each with its `Connect` decision and who declared it.
fn unilateral_in(snapshot: &Snapshot, plan: &MeshPlan) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for edge in plan.edges().filter(|e| e.one_sided() && e.allowed()) {
        let caller_agrees = edge.declared_by_caller || snapshot.wildcards_approved(&edge.caller).0;
        let callee_agrees = edge.declared_by_callee || snapshot.wildcards_approved(&edge.callee).1;
        if !(caller_agrees && callee_agrees) {
            *out.entry(edge.callee.clone()).or_default() += 1;
        }
    }
    out
}

/// Per namespace, enabled audit-mode CedarPolicy objects with no `auditUntil`, an
/// unreadable one, or one at or before `now`.
fn expired_audit_policies(world: &World, now: jiff::Timestamp) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for (key, object) in world.objects() {
        let Object::CedarPolicy(p) = object else {
            continue;
        };
        let audit = p.spec.mode == Some(EnforcementMode::Audit);
        if !audit || p.spec.enabled == Some(false) {
            continue;
        }
        let expired = match p.spec.audit_deadline() {
            Some(Ok(deadline)) => deadline <= now,
            _ => true,
        };
        if expired {
            let ns = key.namespace.clone().unwrap_or_else(|| "default".into());
            *out.entry(ns).or_default() += 1;
        }
    }
    out
}

/// For a namespace, the frameworks some LatticeComplianceProfile schedules for it.
fn scheduled_frameworks(world: &World) -> impl Fn(&str) -> BTreeSet<String> + use<> {
    // Only a profile whose evidence is written schedules anything: the operator writes
    // ConfigMap and volume-claim sinks, and refuses an S3-only one (the status says so),
    // which leaves no record of any scan.
    frameworks_of_profiles(world, &|p| {
        p.spec.evidence_sink.config_map.is_some() || p.spec.evidence_sink.volume_claim.is_some()
    })
}

/// For a namespace, the frameworks of the LatticeComplianceProfiles that cover it (all
/// namespaces when a profile names none) and that `counts` accepts.
fn frameworks_of_profiles(
    world: &World,
    counts: &dyn Fn(&LatticeComplianceProfile) -> bool,
) -> impl Fn(&str) -> BTreeSet<String> + use<> {
    let profiles: Vec<(BTreeSet<String>, BTreeSet<String>)> = world
        .objects()
        .filter_map(|(_, o)| match o {
            Object::ComplianceProfile(p) if counts(p) => Some((
                p.spec.namespaces.iter().cloned().collect(),
                p.spec.frameworks.iter().cloned().collect(),
            )),
            _ => None,
        })
        .collect();
    move |ns: &str| {
        profiles
            .iter()
            .filter(|(namespaces, _)| namespaces.is_empty() || namespaces.contains(ns))
            .flat_map(|(_, frameworks)| frameworks.iter().cloned())
            .collect()
    }
}

/// Whether a LatticeService serves a port named `metrics`: what asks Lattice for a scrape.
/// Other kinds ask for none (a mesh member runs outside Lattice; jobs and models are scraped
/// through their own stacks), so the check does not apply to them.
fn serves_metrics(object: &Object) -> bool {
    match object {
        Object::Service(svc) => svc
            .spec
            .workload
            .service
            .as_ref()
            .is_some_and(|s| s.ports.contains_key("metrics")),
        _ => false,
    }
}

/// How long after its interval a profile's last recorded run still counts as current: the
/// operator scans once per interval, and a scan takes a moment to write.
const RECORDED_GRACE: f64 = 1.1;

/// For a namespace, the frameworks some LatticeComplianceProfile recorded a scan of within
/// its interval before `now`: the operator sets `lastRecordedTime` in the status only once a
/// run's record is written (a failed scan leaves it), so these are runs that happened, not
/// a schedule. A manifest with no status has recorded nothing.
fn recorded_frameworks(
    world: &World,
    now: jiff::Timestamp,
) -> impl Fn(&str) -> BTreeSet<String> + use<> {
    frameworks_of_profiles(world, &|p| recorded_within_interval(p, now))
}

/// Whether `p`'s status records a run within its interval (and [`RECORDED_GRACE`]) before
/// `now`. An unreadable time or interval, or one too long to add, records nothing.
fn recorded_within_interval(p: &LatticeComplianceProfile, now: jiff::Timestamp) -> bool {
    let Some(last) = p
        .status
        .as_ref()
        .and_then(|s| s.last_recorded_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return false;
    };
    let Some(interval) = lattice_schemas::validate::format::duration_seconds(&p.spec.scan_interval)
    else {
        return false;
    };
    // A hostile interval (say `99999999999999999999h`) is out of range here, never a panic.
    let Ok(window) = jiff::SignedDuration::try_from_secs_f64(interval as f64 * RECORDED_GRACE)
    else {
        return false;
    };
    now.checked_sub(window).is_ok_and(|since| last >= since) && last <= now
}

/// The uid of the user a policy-management probe asks about: a member of no group.
pub const UNGROUPED_PROBE: &str = "lattice:compliance-probe:no-group";

/// In how many namespaces a user in no group may write a permit: policy management is meant
/// for named administrator groups (and named platform identities), never for whoever is
/// authenticated. Decided by Cedar on this snapshot, so a permit's `when` counts as much as
/// its scope; a probe that errors counts as allowed (fail closed).
fn ungrouped_policy_writes(snapshot: &Snapshot, world: &World) -> i64 {
    let user = uid("User", UNGROUPED_PROBE);
    let namespaces: Vec<EntityUid> = lattice_engine::project::namespaces(world)
        .into_keys()
        .map(|ns| uid("Namespace", &ns))
        .collect();
    let Ok(scoped) = snapshot.scoped(
        vec![cedar_policy::Entity::with_uid(user.clone())],
        &namespaces,
    ) else {
        return namespaces.len().max(1) as i64;
    };
    let context = cedar_policy::Context::from_pairs([
        (
            "operation".to_owned(),
            RestrictedExpression::new_string("CREATE".into()),
        ),
        (
            "effects".to_owned(),
            RestrictedExpression::new_set([RestrictedExpression::new_string("permit".into())]),
        ),
        ("actions".to_owned(), RestrictedExpression::new_set([])),
        (
            "mode".to_owned(),
            RestrictedExpression::new_string("enforce".into()),
        ),
        ("policyCount".to_owned(), RestrictedExpression::new_long(1)),
        // A policy of the cluster's own (not one inherited from a parent).
        (
            "inherited".to_owned(),
            RestrictedExpression::new_bool(false),
        ),
    ]);
    let Ok(context) = context else {
        return namespaces.len().max(1) as i64;
    };
    namespaces
        .iter()
        .filter(|ns| {
            let q = Query::new(user.clone(), action("ManagePolicy"), (*ns).clone())
                .with_context(context.clone());
            !matches!(scoped.decide(&q), Ok(d) if !d.allowed)
        })
        .count() as i64
}

/// For a cluster, how many enforced permits grant proxy actions on it to a principal scope
/// that is not a Group: `principal == User::…`, `principal is User`, or any principal.
fn user_proxy_grants<'a>(
    snapshot: &'a Snapshot,
    store: &'a PolicyStore,
    actions: &'a [&'a str],
) -> impl Fn(&EntityUid) -> i64 + 'a {
    let grants: Vec<&StoredPolicy> = store
        .active()
        .filter(|p| p.info.mode == EnforcementMode::Enforce && p.info.effect == Effect::Permit)
        .filter(|p| grants_any(&p.policy.action_constraint(), actions))
        .filter(|p| !group_scoped(&p.policy.principal_constraint()))
        .collect();
    move |cluster: &EntityUid| {
        let within = |scope: &EntityUid| {
            scope == cluster
                || snapshot
                    .entities()
                    .ancestors(cluster)
                    .is_some_and(|mut a| a.any(|p| p == scope))
        };
        grants
            .iter()
            .filter(|p| match p.policy.resource_constraint() {
                ResourceConstraint::Any => true,
                ResourceConstraint::Eq(e) => &e == cluster,
                ResourceConstraint::In(e) | ResourceConstraint::IsIn(_, e) => within(&e),
                ResourceConstraint::Is(t) => &t == cluster.type_name(),
            })
            .count() as i64
    }
}

/// Whether a permit's action scope reaches any of `actions` (an unconstrained scope reaches
/// every one).
fn grants_any(constraint: &ActionConstraint, actions: &[&str]) -> bool {
    let proxy = |a: &EntityUid| actions.contains(&a.id().unescaped());
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => proxy(a),
        ActionConstraint::In(list) => list.iter().any(proxy),
    }
}

fn group_scoped(constraint: &PrincipalConstraint) -> bool {
    let group = |e: &EntityUid| e.type_name().basename() == "Group";
    match constraint {
        PrincipalConstraint::In(e) | PrincipalConstraint::IsIn(_, e) => group(e),
        _ => false,
    }
}

/// The `Comply` question of `subject` for `framework`, with its facts as context.
pub fn comply_query(subject: &Subject, framework: &str, facts: &SubjectFacts) -> Query {
    Query::new(subject.uid(), action("Comply"), uid("Framework", framework))
        .with_context(comply_context(subject, framework, facts))
}

/// The `Comply` questions of `subject` for each of `frameworks`. Only a namespace's context
/// depends on the framework (whether a profile schedules and recorded it), so any other
/// subject's context is built once and shared.
pub fn comply_queries(subject: &Subject, frameworks: &[&str], facts: &SubjectFacts) -> Vec<Query> {
    let shared = (subject.kind != SubjectKind::Namespace)
        .then(|| {
            frameworks
                .first()
                .map(|f| comply_context(subject, f, facts))
        })
        .flatten();
    frameworks
        .iter()
        .map(|f| {
            let context = match &shared {
                Some(c) => c.clone(),
                None => comply_context(subject, f, facts),
            };
            Query::new(subject.uid(), action("Comply"), uid("Framework", f)).with_context(context)
        })
        .collect()
}

fn comply_context(
    subject: &Subject,
    framework: &str,
    facts: &SubjectFacts,
) -> cedar_policy::Context {
    let set =
        |items: &BTreeSet<String>| Rx::new_set(items.iter().map(|s| Rx::new_string(s.clone())));
    let scheduled =
        subject.kind != SubjectKind::Namespace || facts.scheduled_frameworks.contains(framework);
    let recorded =
        subject.kind != SubjectKind::Namespace || facts.recorded_frameworks.contains(framework);
    lattice_engine::attr::context([
        ("deniedGates".to_owned(), set(&facts.denied_gates)),
        (
            "unapprovedOverrides".to_owned(),
            set(&facts.unapproved_overrides),
        ),
        (
            "unapprovedWildcards".to_owned(),
            set(&facts.unapproved_wildcards),
        ),
        (
            "unilateralCallers".to_owned(),
            Rx::new_long(facts.unilateral_callers),
        ),
        (
            "expiredAuditPolicies".to_owned(),
            Rx::new_long(facts.expired_audit_policies),
        ),
        ("scanScheduled".to_owned(), Rx::new_bool(scheduled)),
        ("scansRecorded".to_owned(), Rx::new_bool(recorded)),
        (
            "userProxyGrants".to_owned(),
            Rx::new_long(facts.user_proxy_grants),
        ),
        (
            "userExecGrants".to_owned(),
            Rx::new_long(facts.user_exec_grants),
        ),
        (
            "ungroupedPolicyWrites".to_owned(),
            Rx::new_long(facts.ungrouped_policy_writes),
        ),
        ("derivedKinds".to_owned(), set(&facts.derived.kinds)),
        (
            "defaultServiceAccount".to_owned(),
            Rx::new_bool(facts.derived.default_service_account),
        ),
        (
            "tokenMounted".to_owned(),
            Rx::new_bool(facts.derived.token_mounted),
        ),
        (
            "unlistedContainers".to_owned(),
            Rx::new_long(facts.derived.unlisted_containers.len() as i64),
        ),
        (
            "servesMetrics".to_owned(),
            Rx::new_bool(facts.serves_metrics),
        ),
        (
            "networkPolicies".to_owned(),
            Rx::new_long(facts.network_policies),
        ),
        (
            "podSecurityViolations".to_owned(),
            set(&facts.pod_security_violations),
        ),
        (
            "baselineViolations".to_owned(),
            set(&facts.baseline_violations),
        ),
        (
            "restrictedViolations".to_owned(),
            set(&facts.restricted_violations),
        ),
    ])
    .expect("distinct keys of plain values always make a context")
}

/// The subject types a `Comply` policy can apply to, from its principal scope.
pub fn applies_to(policy: &cedar_policy::Policy) -> BTreeSet<SubjectKind> {
    let of = |name: &cedar_policy::EntityTypeName| {
        SubjectKind::of_type(&name.to_string())
            .into_iter()
            .collect::<BTreeSet<_>>()
    };
    match policy.principal_constraint() {
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => {
            SubjectKind::ALL.into_iter().collect()
        }
        PrincipalConstraint::Eq(e) => of(e.type_name()),
        PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => of(&t),
    }
}

/// The framework a `Comply` policy checks, from `resource == Lattice::Framework::"…"`.
pub fn framework_of(policy: &cedar_policy::Policy) -> Option<String> {
    let comply = match policy.action_constraint() {
        ActionConstraint::Eq(a) => a.id().unescaped() == "Comply",
        _ => false,
    };
    match policy.resource_constraint() {
        ResourceConstraint::Eq(e) if comply && e.type_name().basename() == "Framework" => {
            Some(e.id().unescaped().to_owned())
        }
        _ => None,
    }
}
