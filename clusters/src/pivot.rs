//! The move of a cluster's Cluster API objects into the cluster itself (the *pivot*), and
//! back (the *unpivot*), with no I/O: which objects move, in which order, in which batches,
//! and how each one is rewritten for its new home. The operator does the I/O on both ends
//! (`lattice-operator`'s `fleet::pivot`), and the tunnel carries the [`Step`]s.
//!
//! As `clusterctl move` does, the set is the cluster's namespace's objects of every Cluster
//! API group, plus its Secrets and ConfigMaps, that belong to the cluster: labelled
//! [`CLUSTER_NAME_LABEL`] or [`DERIVED_FROM`] with its name, or owned (transitively) by
//! something that is. Owners come before what they own, so the target can point each owner
//! reference at the owner's new UID. The source `Cluster` is paused before the move and the
//! target one unpaused after it, so no controller acts on a half-moved cluster.
//!
//! Every step is idempotent: applying a batch again changes nothing, so either end may
//! restart and the move is sent again from the start.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capi::{CLUSTER_NAME_LABEL, CORE, DERIVED_FROM};

/// Objects per batch: large enough that a 500-object cluster moves in a few round trips.
pub const BATCH_OBJECTS: usize = 100;

/// Bytes per batch (as JSON), well inside one tunnel command.
pub const BATCH_BYTES: usize = 4 << 20;

/// One step of a move, as the cell sends it to the agent (JSON in a lifecycle command).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum Step {
    /// Create or update these objects in order (owners before what they own), with their
    /// status, owner references pointing at the owners' UIDs in the target.
    Apply {
        namespace: String,
        objects: Vec<Value>,
    },
    /// Unpause the moved `Cluster`: the target's controllers take over.
    Unpause { namespace: String, cluster: String },
    /// The pivot's last step before the parent records it: the child takes its own
    /// LatticeCluster (spec as the parent holds it, `status.pivoted: true`) and the
    /// InfraProvider it names, with the bootstrap endpoint it was provisioned against
    /// ([`ENDPOINT_ANNOTATION`]), so that its own operator derives exactly what was moved
    /// and manages it from now on.
    Adopt {
        namespace: String,
        cluster: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        infra: Option<Value>,
        /// `None` for a root `lattice install` provisioned: its control plane runs no hook.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// The unpivot, asked of the child: pause its own `Cluster` (at page 0) and answer page
    /// `page` of its objects, planned and portable, as an [`ExportPage`].
    Export {
        namespace: String,
        cluster: String,
        page: usize,
    },
    /// The unpivot's last step, once the parent holds every object and has recorded it:
    /// delete the child's copies, finalizers released (the parent's controllers act on
    /// the infrastructure from now on).
    Release { namespace: String, cluster: String },
}

/// Bytes of objects per exported page: a page travels back in one command result
/// (at most 64 KiB), with room for its framing.
pub const PAGE_BYTES: usize = 56 << 10;

/// One page of an unpivot's export, as the child's agent answers [`Step::Export`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportPage {
    /// This page's objects, in plan order.
    pub objects: Vec<Value>,
    /// How many pages the export has.
    pub pages: usize,
    /// How many objects, over all pages.
    pub total: usize,
}

impl ExportPage {
    /// The page as a command result's message.
    pub fn to_message(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A page read from a child's answer: every object must be one a move may carry into
    /// `namespace` (a child can write nothing else on its parent), and the counts must
    /// agree.
    pub fn from_message(namespace: &str, message: &str) -> Result<ExportPage, String> {
        let page: ExportPage =
            serde_json::from_str(message).map_err(|e| format!("not an export page: {e}"))?;
        for o in &page.objects {
            check(namespace, o)?;
        }
        if page.objects.len() > page.total || (page.total > 0 && page.pages == 0) {
            return Err(format!(
                "an export page of {} objects claims {} in {} pages",
                page.objects.len(),
                page.total,
                page.pages
            ));
        }
        Ok(page)
    }
}

/// Splits `objects` into pages of at most [`PAGE_BYTES`] each, in order. An object larger
/// than a page cannot be carried back, and says so.
pub fn pages(objects: Vec<Value>) -> Result<Vec<Vec<Value>>, String> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut size = 0;
    for o in objects {
        let bytes = serde_json::to_vec(&o).map_or(0, |b| b.len()) + 1;
        if bytes > PAGE_BYTES {
            return Err(format!(
                "{} {} is {bytes} bytes, more than one page ({PAGE_BYTES}) can carry back",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
        if out.is_empty() || size + bytes > PAGE_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(p) = out.last_mut() {
            p.push(o);
        }
    }
    Ok(out)
}

impl Step {
    /// The step as a command's payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A step from a command's payload; anything else is refused whole.
    pub fn from_payload(payload: &[u8]) -> Result<Step, String> {
        let step: Step =
            serde_json::from_slice(payload).map_err(|e| format!("not a pivot step: {e}"))?;
        match &step {
            Step::Apply { namespace, objects } => {
                for o in objects {
                    check(namespace, o)?;
                }
            }
            // The unpivot reads and deletes only the cluster's own CAPI namespace.
            Step::Export {
                namespace, cluster, ..
            }
            | Step::Release { namespace, cluster } => {
                if *namespace != crate::capi::namespace(cluster) {
                    return Err(format!(
                        "{namespace:?} is not the Cluster API namespace of {cluster:?}"
                    ));
                }
            }
            Step::Unpause { .. } => {}
            Step::Adopt {
                namespace,
                cluster,
                infra,
                endpoint,
            } => check_adoption(namespace, cluster, infra.as_ref(), endpoint.as_deref())?,
        }
        Ok(step)
    }
}

/// The annotation on a self-managed LatticeCluster naming the bootstrap endpoint its
/// control plane was provisioned against: part of what its objects are derived from.
pub const ENDPOINT_ANNOTATION: &str = "lattice.dev/bootstrap-endpoint";

/// Whether an [`Step::Adopt`] names one LatticeCluster whose Cluster API namespace is
/// `namespace`, with a valid spec and endpoint, and at most the InfraProvider that spec
/// names: nothing else can be written through it.
fn check_adoption(
    namespace: &str,
    cluster: &Value,
    infra: Option<&Value>,
    endpoint: Option<&str>,
) -> Result<(), String> {
    use lattice_schemas::crd::cluster::LatticeCluster;
    use lattice_schemas::crd::infra_provider::InfraProvider;
    let parsed: LatticeCluster = serde_json::from_value(cluster.clone())
        .map_err(|e| format!("the adopted LatticeCluster cannot be read: {e}"))?;
    let name = parsed.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() || crate::capi::namespace(name) != namespace {
        return Err(format!(
            "LatticeCluster {name:?} is not the cluster of {namespace:?}"
        ));
    }
    match endpoint {
        Some(e) => drop(e.parse::<crate::BootstrapEndpoint>()?),
        // Only a root is provisioned with no hook to fetch an agent.
        None if parsed.spec.parent.is_some() => {
            return Err(format!("{name} has a parent but no bootstrap endpoint"));
        }
        None => {}
    }
    if let Some(infra) = infra {
        let provider: InfraProvider = serde_json::from_value(infra.clone())
            .map_err(|e| format!("the adopted InfraProvider cannot be read: {e}"))?;
        if provider.metadata.name.as_deref() != Some(parsed.spec.provider_ref.as_str()) {
            return Err(format!(
                "InfraProvider {:?} is not the one {name} names ({:?})",
                provider.metadata.name.unwrap_or_default(),
                parsed.spec.provider_ref
            ));
        }
    }
    Ok(())
}

/// What a child's operator and agent need, beyond `deploy/`, to manage the child's own
/// Cluster API objects once it is pivoted, all limited to that cluster: in `capi-<cluster>`
/// only, the operator (`operator_account`) reads the `Cluster` and applies the kinds
/// provisioning derives (create and patch: what scaling a pool or rolling a template
/// writes); cluster-wide, but by name, the agent patches its own LatticeCluster (and its
/// status) and the InfraProvider it names when the pivot hands them over.
pub fn self_management_rbac(
    cluster: &str,
    provider_ref: &str,
    namespace_of_accounts: &str,
    operator_account: &str,
    agent_account: &str,
) -> Vec<Value> {
    let namespace = crate::capi::namespace(cluster);
    let apply = |group: &str, resources: &[&str]| serde_json::json!({"apiGroups": [group], "resources": resources, "verbs": ["create", "patch"]});
    let operator_rules = vec![
        serde_json::json!({"apiGroups": [CORE], "resources": ["clusters"], "verbs": ["get"]}),
        apply(CORE, &["clusters", "machinedeployments"]),
        apply(
            crate::capi::CONTROL_PLANE,
            &["kubeadmcontrolplanes", "rke2controlplanes"],
        ),
        apply(
            crate::capi::BOOTSTRAP,
            &["kubeadmconfigtemplates", "rke2configtemplates"],
        ),
        apply(
            crate::capi::INFRASTRUCTURE,
            &[
                "awsclusters",
                "awsmachinetemplates",
                "proxmoxclusters",
                "proxmoxmachinetemplates",
                "openstackclusters",
                "openstackmachinetemplates",
                "dockerclusters",
                "dockermachinetemplates",
            ],
        ),
    ];
    let subject = |account: &str| serde_json::json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace_of_accounts}]);
    let own = format!("{SELF_MANAGEMENT_ROLE}-{cluster}");
    vec![
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SELF_MANAGEMENT_ROLE, "namespace": namespace},
            "rules": operator_rules,
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": SELF_MANAGEMENT_ROLE, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SELF_MANAGEMENT_ROLE},
            "subjects": subject(operator_account),
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": own},
            "rules": [
                {"apiGroups": ["lattice.dev"], "resources": ["latticeclusters", "latticeclusters/status"],
                 "resourceNames": [cluster], "verbs": ["get", "patch"]},
                {"apiGroups": ["lattice.dev"], "resources": ["infraproviders"],
                 "resourceNames": [provider_ref], "verbs": ["get", "patch"]},
            ],
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": own},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": own},
            "subjects": subject(agent_account),
        }),
    ]
}

/// The Role (in `capi-<cluster>`) through which a pivoted cluster's operator manages its
/// own Cluster API objects; the agent's ClusterRole for its own LatticeCluster is this
/// name with `-<cluster>`.
pub const SELF_MANAGEMENT_ROLE: &str = "lattice-self-management";

/// The name of the Role (and its binding) that lets a child's agent export and release
/// its own Cluster API objects for an unpivot.
pub const AGENT_UNPIVOT_ROLE: &str = "lattice-agent-unpivot";

/// What a child's agent needs, beyond `deploy/agent`, to answer an unpivot: the namespace
/// `capi-<cluster>`, and in it only, `list` and `delete` on every resource a move carries
/// and on Secrets and ConfigMaps, bound to the agent's ServiceAccount
/// (`agent_namespace`/`agent_account`). Namespaced, so the agent reads no Secret anywhere
/// else; the bootstrap endpoint serves these with the agent's manifests.
pub fn agent_unpivot_rbac(cluster: &str, agent_namespace: &str, agent_account: &str) -> Vec<Value> {
    let namespace = crate::capi::namespace(cluster);
    let mut rules: Vec<Value> = MOVED
        .iter()
        .map(|(group, resources)| {
            serde_json::json!({
                "apiGroups": [group],
                "resources": resources,
                "verbs": ["list", "delete"],
            })
        })
        .collect();
    rules.push(serde_json::json!({
        "apiGroups": [""],
        "resources": ["secrets", "configmaps"],
        "verbs": ["list", "delete"],
    }));
    vec![
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace},
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": AGENT_UNPIVOT_ROLE, "namespace": namespace},
            "rules": rules,
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": AGENT_UNPIVOT_ROLE, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT_UNPIVOT_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": agent_account, "namespace": agent_namespace}],
        }),
    ]
}

/// Whether `object` may be applied into `namespace` by a move: a named object of a Cluster
/// API group, or a Secret or ConfigMap, in that namespace. The agent applies nothing else,
/// so a move cannot be used to write anywhere else in the child.
pub fn check(namespace: &str, object: &Value) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() || kind.is_empty() {
        return Err("an object with no kind or name".into());
    }
    if object["metadata"]["namespace"].as_str() != Some(namespace) {
        return Err(format!(
            "{kind} {name} is not in the namespace {namespace:?} being moved"
        ));
    }
    if !moves(api_version, kind) {
        return Err(format!("{api_version} {kind} is not a Cluster API object"));
    }
    Ok(())
}

/// Whether objects of this type move: every Cluster API group's, and Secrets and
/// ConfigMaps.
pub fn moves(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    group == CORE
        || group.ends_with(&format!(".{CORE}"))
        || (api_version == "v1" && matches!(kind, "Secret" | "ConfigMap"))
}

/// Whether a group's objects are discovered for a move.
pub fn group_moves(group: &str) -> bool {
    group == CORE || group.ends_with(&format!(".{CORE}"))
}

/// The Cluster API resources a move carries, by group: those of CAPI itself (core,
/// kubeadm, ClusterClass, IPAM, ClusterResourceSets) and of the providers Lattice
/// provisions with (CAPA, CAPO, CAPMOX, CAPD, RKE2). RBAC grants exactly these
/// (`deploy/cell`, `deploy/agent`); a server that serves another namespaced resource of a
/// Cluster API group refuses the move rather than leave its objects behind.
pub const MOVED: &[(&str, &[&str])] = &[
    (
        "cluster.x-k8s.io",
        &[
            "clusters",
            "clusterclasses",
            "machines",
            "machinesets",
            "machinedeployments",
            "machinehealthchecks",
            "machinepools",
            "machinedrainrules",
        ],
    ),
    (
        "bootstrap.cluster.x-k8s.io",
        &[
            "kubeadmconfigs",
            "kubeadmconfigtemplates",
            "rke2configs",
            "rke2configtemplates",
        ],
    ),
    (
        "controlplane.cluster.x-k8s.io",
        &[
            "kubeadmcontrolplanes",
            "kubeadmcontrolplanetemplates",
            "rke2controlplanes",
            "rke2controlplanetemplates",
        ],
    ),
    (
        "infrastructure.cluster.x-k8s.io",
        &[
            "awsclusters",
            "awsclustertemplates",
            "awsmachines",
            "awsmachinetemplates",
            "openstackclusters",
            "openstackclustertemplates",
            "openstackmachines",
            "openstackmachinetemplates",
            "proxmoxclusters",
            "proxmoxclustertemplates",
            "proxmoxmachines",
            "proxmoxmachinetemplates",
            "dockerclusters",
            "dockerclustertemplates",
            "dockermachines",
            "dockermachinetemplates",
            "dockermachinepools",
        ],
    ),
    (
        "ipam.cluster.x-k8s.io",
        &["ipaddresses", "ipaddressclaims", "inclusterippools"],
    ),
    (
        "addons.cluster.x-k8s.io",
        &["clusterresourcesets", "clusterresourcesetbindings"],
    ),
];

/// Whether a move carries `group`'s `plural` (see [`MOVED`]).
pub fn carries(group: &str, plural: &str) -> bool {
    MOVED
        .iter()
        .any(|(g, resources)| *g == group && resources.contains(&plural))
}

/// An object's identity within the namespace being moved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub name: String,
}

fn key(o: &Value) -> Key {
    Key {
        kind: o["kind"].as_str().unwrap_or_default().to_owned(),
        name: o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The objects of `found` (everything discovered in the cluster's namespace) that belong
/// to `cluster`, owners before what they own; ties in a stable order (kind, then name).
pub fn plan(cluster: &str, found: &[Value]) -> Vec<Value> {
    // A UID names one object on a real server, but a listing is input: should two objects
    // share one, an owner reference to it waits for both rather than for whichever was
    // listed last.
    let mut by_uid: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, o) in found.iter().enumerate() {
        if let Some(u) = o["metadata"]["uid"].as_str() {
            by_uid.entry(u).or_default().push(i);
        }
    }
    let owners = |o: &Value| -> Vec<usize> {
        o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["uid"].as_str().and_then(|u| by_uid.get(u)))
            .flatten()
            .copied()
            .collect()
    };
    let labelled = |o: &Value| {
        let labels = &o["metadata"]["labels"];
        labels[CLUSTER_NAME_LABEL] == cluster || labels[DERIVED_FROM] == cluster
    };
    // Belongs: labelled, the Cluster itself, or owned by something that belongs.
    let mut belongs: Vec<bool> = found
        .iter()
        .map(|o| labelled(o) || (o["kind"] == "Cluster" && o["metadata"]["name"] == cluster))
        .collect();
    loop {
        let mut changed = false;
        for (i, o) in found.iter().enumerate() {
            if !belongs[i] && owners(o).iter().any(|&j| belongs[j]) {
                belongs[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Kahn's algorithm over owner → owned, smallest key first.
    let chosen: Vec<usize> = (0..found.len()).filter(|&i| belongs[i]).collect();
    let mut waiting: BTreeMap<usize, usize> = BTreeMap::new();
    let mut owned_by: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &chosen {
        let mine: BTreeSet<usize> = owners(&found[i])
            .into_iter()
            .filter(|&j| belongs[j] && j != i)
            .collect();
        waiting.insert(i, mine.len());
        for j in mine {
            owned_by.entry(j).or_default().push(i);
        }
    }
    let mut ready: BTreeSet<(Key, usize)> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(&i, _)| (key(&found[i]), i))
        .collect();
    let mut ordered = Vec::with_capacity(chosen.len());
    while let Some(next) = ready.pop_first() {
        let i = next.1;
        waiting.remove(&i);
        ordered.push(found[i].clone());
        for &k in owned_by.get(&i).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    ready.insert((key(&found[k]), k));
                }
            }
        }
    }
    // An ownership cycle (which Kubernetes' garbage collector would never settle) still
    // moves, after everything else.
    let mut rest: Vec<(Key, usize)> = waiting.keys().map(|&i| (key(&found[i]), i)).collect();
    rest.sort();
    ordered.extend(rest.into_iter().map(|(_, i)| found[i].clone()));
    ordered
}

/// `object` as it is sent: what the source server assigned (UID, resource version,
/// timestamps, managed fields) is dropped, and so is a deletion in progress. Owner
/// references keep the source UIDs, for the target to map.
pub fn portable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o["metadata"].as_object_mut() {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(field);
        }
    }
    o
}

/// Splits `objects` into batches of at most [`BATCH_OBJECTS`] objects and about
/// [`BATCH_BYTES`] bytes, in order.
pub fn batches(objects: Vec<Value>) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut size = 0;
    for o in objects {
        let bytes = serde_json::to_vec(&o).map_or(0, |b| b.len());
        let full = out.last().is_none_or(|b| {
            b.len() >= BATCH_OBJECTS || (size + bytes > BATCH_BYTES && !b.is_empty())
        });
        if full {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(b) = out.last_mut() {
            b.push(o);
        }
    }
    out
}

/// Points `object`'s owner references at the owners' UIDs in the target. `uid_of` finds
/// an owner by kind and name in the namespace being moved. An owner that does not exist in
/// the target is an error (owners are applied first, so it is a move out of order).
pub fn remap_owners(
    object: &mut Value,
    mut uid_of: impl FnMut(&str, &str) -> Option<String>,
) -> Result<(), String> {
    let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut() else {
        return Ok(());
    };
    for r in refs {
        let kind = r["kind"].as_str().unwrap_or_default().to_owned();
        let name = r["name"].as_str().unwrap_or_default().to_owned();
        let uid = uid_of(&kind, &name)
            .ok_or_else(|| format!("its owner {kind} {name} is not in the target yet"))?;
        r["uid"] = Value::String(uid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, uid: &str, owners: &[&str], label: Option<&str>) -> Value {
        let group = if kind == "Secret" {
            "v1".to_owned()
        } else {
            format!("{CORE}/v1beta2")
        };
        let mut o = json!({
            "apiVersion": group,
            "kind": kind,
            "metadata": {"name": name, "namespace": "capi-edge", "uid": uid, "resourceVersion": "7",
                         "ownerReferences": owners.iter().map(|u| json!({"kind": "X", "name": u, "uid": u})).collect::<Vec<_>>()},
        });
        if let Some(l) = label {
            o["metadata"]["labels"] = json!({CLUSTER_NAME_LABEL: l});
        }
        o
    }

    fn names(v: &[Value]) -> Vec<&str> {
        v.iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn owners_come_first_and_only_the_clusters_own_objects_move() {
        let found = vec![
            obj("Machine", "m-1", "u-m1", &["u-ms"], Some("edge")),
            obj("MachineSet", "ms", "u-ms", &["u-md"], Some("edge")),
            obj("MachineDeployment", "md", "u-md", &["u-c"], Some("edge")),
            obj("Cluster", "edge", "u-c", &[], None),
            // Owned by a moved object, though unlabelled: it moves.
            obj("Secret", "edge-kubeconfig", "u-s", &["u-c"], None),
            // Another cluster's, and an unowned stranger: they stay.
            obj("Cluster", "other", "u-o", &[], None),
            obj("Machine", "theirs", "u-t", &["u-o"], Some("other")),
            obj("Secret", "stranger", "u-x", &[], None),
        ];
        let ordered = plan("edge", &found);
        assert_eq!(
            names(&ordered),
            ["edge", "md", "ms", "m-1", "edge-kubeconfig"]
        );
    }

    #[test]
    fn a_cycle_still_moves_everything_once() {
        let found = vec![
            obj("Machine", "a", "u-a", &["u-b"], Some("edge")),
            obj("Machine", "b", "u-b", &["u-a"], Some("edge")),
            obj("Cluster", "edge", "u-c", &[], None),
        ];
        assert_eq!(names(&plan("edge", &found)), ["edge", "a", "b"]);
    }

    #[test]
    fn an_owner_reference_to_a_shared_uid_waits_for_every_object_bearing_it() {
        // Found by fuzzing: the Cluster and a stranger listed after it share a UID. The
        // labelled Machine waited only for the stranger (the last listed), so it could move
        // before the Cluster that owns it.
        let found = vec![
            obj("Cluster", "edge", "u-c", &[], None),
            // "AWSMachine" sorts before "Cluster": only the ownership orders them.
            obj("AWSMachine", "a", "u-a", &["u-c"], Some("edge")),
            obj("Secret", "stranger", "u-c", &[], None),
        ];
        assert_eq!(names(&plan("edge", &found)), ["edge", "a"]);
    }

    #[test]
    fn portable_objects_forget_the_source_server_and_owners_are_remapped() {
        let o = obj("Machine", "m", "u-m", &["u-ms"], Some("edge"));
        let mut p = portable(&o);
        assert!(p["metadata"]["uid"].is_null());
        assert!(p["metadata"]["resourceVersion"].is_null());
        remap_owners(&mut p, |kind, name| {
            (kind == "X" && name == "u-ms").then(|| "new".into())
        })
        .unwrap();
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "new");
        let err = remap_owners(&mut portable(&o), |_, _| None).unwrap_err();
        assert!(err.contains("not in the target"), "{err}");
    }

    #[test]
    fn batches_keep_order_and_bounds() {
        let objects: Vec<Value> = (0..250)
            .map(|i| {
                obj(
                    "Secret",
                    &format!("s-{i:03}"),
                    &format!("u{i}"),
                    &[],
                    Some("edge"),
                )
            })
            .collect();
        let b = batches(objects.clone());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(b.concat(), objects);
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn every_cluster_api_crd_of_the_reference_material_is_carried() {
        let Some(reference) = lattice_testkit::reference_dir() else {
            return;
        };
        let mut seen = 0;
        for dir in std::fs::read_dir(reference.join("crds")).unwrap() {
            let dir = dir.unwrap().path();
            if !dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cluster-api")
            {
                continue;
            }
            for file in std::fs::read_dir(&dir).unwrap() {
                let name = file.unwrap().file_name().to_string_lossy().into_owned();
                let (group, rest) = name.split_once('_').unwrap();
                let plural = rest.trim_end_matches(".yaml");
                assert!(carries(group, plural), "{group}/{plural} is not carried");
                seen += 1;
            }
        }
        assert!(seen >= 26, "only {seen} CRDs found");
        assert!(group_moves("cluster.x-k8s.io") && !group_moves("evilcluster.x-k8s.io"));
        assert!(!carries("cluster.x-k8s.io", "secrets"));
    }

    #[test]
    fn a_step_applies_nothing_outside_the_namespace_or_cluster_api() {
        let good = Step::Apply {
            namespace: "capi-edge".into(),
            objects: vec![obj("Machine", "m", "u", &[], None)],
        };
        assert_eq!(Step::from_payload(&good.to_payload()).unwrap(), good);
        let mut elsewhere = obj("Machine", "m", "u", &[], None);
        elsewhere["metadata"]["namespace"] = json!("kube-system");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "capi-edge"}});
        let rbac = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "p", "namespace": "capi-edge"}});
        let lookalike = json!({"apiVersion": "evilcluster.x-k8s.io/v1", "kind": "Cluster", "metadata": {"name": "p", "namespace": "capi-edge"}});
        for bad in [elsewhere, pod, rbac, lookalike] {
            let step = Step::Apply {
                namespace: "capi-edge".into(),
                objects: vec![bad],
            };
            assert!(Step::from_payload(&step.to_payload()).is_err());
        }
        assert!(Step::from_payload(b"{\"step\":\"format\"}").is_err());
        assert!(Step::from_payload(b"\xff").is_err());
    }

    fn adopt(namespace: &str, name: &str, infra: Option<&str>, endpoint: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "step": "adopt",
            "namespace": namespace,
            "cluster": {
                "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster",
                "metadata": {"name": name},
                "spec": {
                    "providerRef": "docker",
                    "provider": {"kubernetes": {"version": "1.32.0"}, "config": {"docker": {}}},
                    "nodes": {"controlPlane": 1, "workerPools": {"default": {"replicas": 2}}},
                },
            },
            "infra": infra.map(|n| json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "InfraProvider",
                "metadata": {"name": n}, "spec": {"type": "docker"},
            })),
            "endpoint": endpoint,
        }))
        .unwrap()
    }

    #[test]
    fn an_adoption_hands_over_only_the_clusters_own_objects() {
        let ok = Step::from_payload(&adopt(
            "capi-edge",
            "edge",
            Some("docker"),
            "cell.example:8443",
        ));
        assert!(matches!(ok, Ok(Step::Adopt { .. })), "{ok:?}");
        assert!(Step::from_payload(&adopt("capi-edge", "edge", None, "10.0.0.1:8443")).is_ok());
        for (payload, why) in [
            (
                adopt("capi-edge", "other", None, "cell:8443"),
                "not the cluster of",
            ),
            (
                adopt("kube-system", "edge", None, "cell:8443"),
                "not the cluster of",
            ),
            (
                adopt("capi-edge", "edge", Some("aws"), "cell:8443"),
                "is not the one",
            ),
            (adopt("capi-edge", "edge", None, "cell"), "HOST:PORT"),
        ] {
            let e = Step::from_payload(&payload).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // No endpoint: a root `lattice install` provisioned without a hook, never a child.
        let mut root =
            serde_json::from_slice::<Value>(&adopt("capi-edge", "edge", None, "c:1")).unwrap();
        root.as_object_mut().unwrap().remove("endpoint");
        assert!(Step::from_payload(&serde_json::to_vec(&root).unwrap()).is_ok());
        root["cluster"]["spec"]["parent"] = json!("production");
        let e = Step::from_payload(&serde_json::to_vec(&root).unwrap()).unwrap_err();
        assert!(e.contains("has a parent but no bootstrap endpoint"), "{e}");
        let mut bad =
            serde_json::from_slice::<Value>(&adopt("capi-edge", "edge", None, "c:1")).unwrap();
        bad["cluster"]["spec"]["nodes"] = json!("many");
        let e = Step::from_payload(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn self_management_rights_are_the_clusters_own_and_write_only() {
        let rbac = self_management_rbac(
            "edge",
            "docker",
            "lattice-system",
            "lattice-operator",
            "lattice-agent",
        );
        let role = &rbac[0];
        assert_eq!(role["kind"], "Role");
        assert_eq!(role["metadata"]["namespace"], "capi-edge");
        for rule in role["rules"].as_array().unwrap() {
            assert!(!rule.to_string().contains('*'), "no wildcards: {rule}");
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(
                    ["get", "create", "patch"].contains(&verb.as_str().unwrap()),
                    "{rule}"
                );
            }
            // Nothing a move carries beyond what provisioning derives: no Secrets, no
            // machines, no deletes.
            assert!(!rule["resources"].to_string().contains("secrets"), "{rule}");
            assert!(
                !rule["resources"].to_string().contains("\"machines\""),
                "{rule}"
            );
        }
        assert_eq!(rbac[1]["subjects"][0]["name"], "lattice-operator");
        let own = &rbac[2];
        assert_eq!(own["kind"], "ClusterRole");
        let names: Vec<&Value> = own["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["resourceNames"])
            .collect();
        assert_eq!(names, [&json!(["edge"]), &json!(["docker"])]);
        assert_eq!(rbac[3]["subjects"][0]["name"], "lattice-agent");
    }

    #[test]
    fn the_agents_unpivot_rights_are_its_own_namespace_list_and_delete_only() {
        let rbac = agent_unpivot_rbac("edge", "lattice-system", "lattice-agent");
        assert_eq!(rbac[0]["metadata"]["name"], "capi-edge");
        let role = &rbac[1];
        assert_eq!(role["metadata"]["namespace"], "capi-edge");
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["verbs"], json!(["list", "delete"]));
            assert!(!rule.to_string().contains('*'), "no wildcards: {rule}");
        }
        let granted: usize = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["resources"].as_array().unwrap().len())
            .sum();
        let moved: usize = MOVED.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(granted, moved + 2, "MOVED, Secrets and ConfigMaps");
        assert_eq!(rbac[2]["metadata"]["namespace"], "capi-edge");
        assert_eq!(rbac[2]["subjects"][0]["name"], "lattice-agent");
    }

    #[test]
    fn an_unpivot_reads_and_deletes_only_the_clusters_own_namespace() {
        let export = Step::Export {
            namespace: "capi-edge".into(),
            cluster: "edge".into(),
            page: 2,
        };
        assert_eq!(Step::from_payload(&export.to_payload()).unwrap(), export);
        for step in [
            Step::Export {
                namespace: "kube-system".into(),
                cluster: "edge".into(),
                page: 0,
            },
            Step::Release {
                namespace: "capi-lab".into(),
                cluster: "edge".into(),
            },
        ] {
            assert!(Step::from_payload(&step.to_payload()).is_err(), "{step:?}");
        }
    }

    #[test]
    fn export_pages_fit_a_command_result_and_carry_only_what_a_move_may() {
        let objects: Vec<Value> = (0..400)
            .map(|i| {
                let mut o = obj("Machine", &format!("m{i:03}"), &format!("u{i}"), &[], None);
                o["spec"] = json!({"padding": "x".repeat(400)});
                o
            })
            .collect();
        let paged = pages(objects.clone()).unwrap();
        assert!(paged.len() > 1);
        assert_eq!(paged.concat(), objects, "every object once, in order");
        for p in &paged {
            let page = ExportPage {
                objects: p.clone(),
                pages: paged.len(),
                total: objects.len(),
            };
            let message = page.to_message();
            assert!(message.len() <= 64 << 10, "{}", message.len());
            assert_eq!(
                ExportPage::from_message("capi-edge", &message).unwrap(),
                page
            );
        }
        let mut huge = obj("Machine", "big", "u", &[], None);
        huge["spec"] = json!({"padding": "x".repeat(PAGE_BYTES)});
        assert!(pages(vec![huge]).unwrap_err().contains("Machine big"));
        // A child cannot make its parent write outside the namespace, or anything else.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "capi-edge"}});
        let bad = ExportPage {
            objects: vec![pod],
            pages: 1,
            total: 1,
        }
        .to_message();
        assert!(ExportPage::from_message("capi-edge", &bad).is_err());
        let lying = ExportPage {
            objects: vec![objects[0].clone()],
            pages: 0,
            total: 0,
        }
        .to_message();
        assert!(ExportPage::from_message("capi-edge", &lying).is_err());
        assert!(ExportPage::from_message("capi-edge", "not json").is_err());
    }
}
