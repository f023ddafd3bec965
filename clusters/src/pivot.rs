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
        if let Step::Apply { namespace, objects } = &step {
            for o in objects {
                check(namespace, o)?;
            }
        }
        Ok(step)
    }
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
    let by_uid: BTreeMap<&str, usize> = found
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o["metadata"]["uid"].as_str().map(|u| (u, i)))
        .collect();
    let owners = |o: &Value| -> Vec<usize> {
        o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["uid"].as_str().and_then(|u| by_uid.get(u).copied()))
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
}
