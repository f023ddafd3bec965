//! Drift: derived objects edited, deleted or forged by hand, noticed as it happens.
//!
//! Every derived kind is watched with the selector `app.kubernetes.io/managed-by=lattice`.
//! The watch keeps no objects, only a fingerprint of each one's *content* (everything but
//! `status` and server bookkeeping), so status updates, which are most watch traffic, are
//! dropped where they arrive. A changed fingerprint, or a deletion, puts the object in the
//! [`Inbox`]; the leader's effector drains it after each pass and decides, per object,
//! against the plan it applied ([`super::apply::Effector::correct_drift`]):
//!
//! - content equal to what the operator itself last wrote: nothing to do (its own writes);
//! - a derived object deleted: applied again;
//! - a derived object whose content differs: the API server is asked, by a dry-run update
//!   with the derived object, what that object would be with its defaults; where the live
//!   object differs from that ([`differs`]), it is replaced whole (a server-side apply would
//!   keep fields someone else added);
//! - an object that claims a Lattice workload as its owner but that no workload derives:
//!   deleted.
//!
//! The comparison lives here and is pure; the I/O is the effector's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use lattice_compiler::compile::MANAGER;
use serde_json::Value;
use tokio::sync::Notify;

use super::resources::{DERIVED, DerivedKind, ObjectId};

/// Annotation keys that Kubernetes' own controllers write on objects Lattice derives; a
/// key under one of these is not drift. Any other label or annotation added, changed or
/// removed by hand is (an annotation such as `istio.io/dry-run` changes what a policy does).
const CONTROLLER_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/",
    "pv.kubernetes.io/",
    "volume.kubernetes.io/",
    "volume.beta.kubernetes.io/",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// What the drift watches found since the effector last looked: per object, its content
/// fingerprint, or `None` when it is gone.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    /// Woken when something was added.
    pub arrived: Notify,
}

#[derive(Default)]
struct InboxState {
    /// The content last seen of every derived object on the cluster.
    observed: HashMap<ObjectId, u64>,
    dirty: BTreeMap<ObjectId, Option<u64>>,
}

impl Inbox {
    /// Records what a watch saw of `id` (`None`: deleted). Returns whether its content
    /// changed (a status update does not).
    pub fn observe(&self, id: ObjectId, fingerprint: Option<u64>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = match fingerprint {
            Some(f) => state.observed.insert(id.clone(), f),
            None => state.observed.remove(&id),
        };
        if before == fingerprint {
            return false;
        }
        state.dirty.insert(id, fingerprint);
        drop(state);
        self.arrived.notify_one();
        true
    }

    /// After a relist of `kind`: objects of it that were not listed are gone.
    fn relisted(&self, kind: &DerivedKind, seen: &BTreeSet<ObjectId>) {
        let gone: Vec<ObjectId> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .observed
                .keys()
                .filter(|id| id.kind == kind.kind && id.api_version == kind.api_version)
                .filter(|id| !seen.contains(*id))
                .cloned()
                .collect()
        };
        for id in gone {
            self.observe(id, None);
        }
    }

    /// Puts `ids` back, as last observed, to be looked at on the next drain. Nobody is
    /// woken: they wait for the next pass rather than spinning.
    pub fn defer(&self, ids: impl IntoIterator<Item = ObjectId>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            let observed = state.observed.get(&id).copied();
            state.dirty.entry(id).or_insert(observed);
        }
    }

    /// Takes everything found since the last call.
    pub fn drain(&self) -> BTreeMap<ObjectId, Option<u64>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut state.dirty)
    }
}

/// Starts one watch per derived kind; they run until the runtime stops. A kind the cluster
/// does not serve is retried with backoff (nothing of it can drift meanwhile).
pub fn spawn_all(client: &Client, inbox: &Arc<Inbox>, metrics: &Arc<super::metrics::Metrics>) {
    for kind in DERIVED {
        tokio::spawn(watch(client.clone(), kind, inbox.clone(), metrics.clone()));
    }
}

async fn watch(
    client: Client,
    kind: &'static DerivedKind,
    inbox: Arc<Inbox>,
    metrics: Arc<super::metrics::Metrics>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.api_resource());
    let config =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist: Option<BTreeSet<ObjectId>> = None;
    let id_of = |o: &DynamicObject| ObjectId {
        api_version: kind.api_version.to_owned(),
        kind: kind.kind.to_owned(),
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
    };
    while let Some(event) = events.next().await {
        match event {
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {}
            Err(e) => {
                metrics.watch_error(kind.kind);
                tracing::debug!(kind = kind.kind, "drift watch error (retrying): {e}");
            }
            Ok(Event::Init) => relist = Some(BTreeSet::new()),
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                let id = id_of(&o);
                if let Some(seen) = relist.as_mut() {
                    seen.insert(id.clone());
                }
                match serde_json::to_value(&o) {
                    Ok(value) => {
                        inbox.observe(id, Some(fingerprint(&value)));
                    }
                    Err(e) => tracing::warn!(object = %id, "cannot read: {e}"),
                }
            }
            Ok(Event::Delete(o)) => {
                inbox.observe(id_of(&o), None);
            }
            Ok(Event::InitDone) => inbox.relisted(kind, &relist.take().unwrap_or_default()),
        }
    }
}

/// A fingerprint of what an object says: every field but `status` and the metadata the
/// server keeps (resource version, managed fields, generation, uid, timestamps). Stable
/// across key order.
pub fn fingerprint(object: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let Value::Object(map) = object {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            match key.as_str() {
                "status" | "apiVersion" | "kind" => {}
                "metadata" => {
                    for field in [
                        "name",
                        "namespace",
                        "labels",
                        "annotations",
                        "ownerReferences",
                    ] {
                        field.hash(&mut hasher);
                        hash_value(&map["metadata"][field], &mut hasher);
                    }
                }
                _ => {
                    key.hash(&mut hasher);
                    hash_value(&map[key], &mut hasher);
                }
            }
        }
    }
    hasher.finish()
}

fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => (2u8, n.to_string()).hash(hasher),
        Value::String(s) => (3u8, s).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(hasher);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(hasher);
                hash_value(&map[key], hasher);
            }
        }
    }
}

/// Fields a derived object leaves to others, as JSON pointers: the replica count of a
/// Deployment that sets none (its autoscaler owns it), the volume a claim was bound to
/// (the binder sets it).
pub fn left_to_others(desired: &Value) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut leave = |kind: &str, pointer: &'static str| {
        if desired["kind"] == kind && desired.pointer(pointer).is_none() {
            fields.push(pointer);
        }
    };
    leave("Deployment", "/spec/replicas");
    leave("PersistentVolumeClaim", "/spec/volumeName");
    fields
}

/// Where `live` departs from what was derived: `defaulted` is the derived object as the
/// API server would store it (a dry-run update), which every field outside `metadata` and
/// `status` must equal; labels and annotations must be exactly the derived ones, except
/// those Kubernetes' controllers add; the derived owner references must be there. Returns
/// the first difference's path, or `None` when `live` is as derived.
pub fn differs(desired: &Value, live: &Value, defaulted: &Value) -> Option<String> {
    let skip = left_to_others(desired);
    let strip = |v: &Value| {
        let mut v = v.clone();
        for pointer in &skip {
            if let Some((parent, field)) = pointer.rsplit_once('/')
                && let Some(Value::Object(map)) = v.pointer_mut(parent)
            {
                map.remove(field);
            }
        }
        v
    };
    let (live_body, defaulted_body) = (strip(live), strip(defaulted));
    let keys: BTreeSet<&String> = [&live_body, &defaulted_body]
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys())
        .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"))
        .collect();
    for key in keys {
        if let Some(path) = first_difference(&live_body[key], &defaulted_body[key], key) {
            return Some(path);
        }
    }
    for field in ["labels", "annotations"] {
        let wanted = desired["metadata"][field].as_object();
        let have = live["metadata"][field].as_object();
        let keys: BTreeSet<&String> = wanted
            .into_iter()
            .chain(have)
            .flat_map(|m| m.keys())
            .collect();
        for key in keys {
            let by_controller = CONTROLLER_ANNOTATIONS.iter().any(|p| key.starts_with(p));
            let (want, has) = (
                wanted.and_then(|m| m.get(key)),
                have.and_then(|m| m.get(key)),
            );
            if want != has && !(want.is_none() && by_controller) {
                return Some(format!("metadata.{field}.{key}"));
            }
        }
    }
    let owners = live["metadata"]["ownerReferences"].as_array();
    for wanted in desired["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let present = owners.into_iter().flatten().any(|o| {
            ["apiVersion", "kind", "name", "uid"]
                .iter()
                .all(|f| o[f] == wanted[f])
        });
        if !present {
            return Some("metadata.ownerReferences".into());
        }
    }
    None
}

fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(path.to_owned()),
    }
}

/// Whether `object` names a Lattice workload as its owner.
pub fn claims_lattice_owner(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["apiVersion"] == lattice_schemas::crd::API_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(rules: Value) -> Value {
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "api", "namespace": "shop", "resourceVersion": "7",
                         "labels": {"app.kubernetes.io/managed-by": "lattice"},
                         "ownerReferences": [{"apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService", "name": "api", "uid": "u1"}]},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "rules": rules},
        })
    }

    #[test]
    fn the_fingerprint_ignores_status_bookkeeping_and_key_order() {
        let a = policy(json!([{"from": []}]));
        let mut b = a.clone();
        b["status"] = json!({"ready": true});
        b["metadata"]["resourceVersion"] = json!("8");
        b["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let reordered: Value = serde_json::from_str(
            r#"{"spec": {"rules": [{"from": []}], "selector": {"matchLabels": {"app": "api"}}}}"#,
        )
        .unwrap();
        let mut c = a.clone();
        c["spec"] = reordered["spec"].clone();
        assert_eq!(fingerprint(&a), fingerprint(&c));
        let mut d = a.clone();
        d["spec"]["rules"] = json!([{}]);
        assert_ne!(fingerprint(&a), fingerprint(&d));
        let mut e = a.clone();
        e["metadata"]["annotations"] = json!({"istio.io/dry-run": "true"});
        assert_ne!(fingerprint(&a), fingerprint(&e));
    }

    #[test]
    fn an_allow_all_rule_or_a_dry_run_annotation_is_drift_a_controller_annotation_is_not() {
        let desired = policy(json!([{"from": [{"source": {"principals": ["a"]}}]}]));
        assert_eq!(differs(&desired, &desired, &desired), None);
        let mut opened = desired.clone();
        opened["spec"]["rules"] = json!([{}]);
        assert_eq!(
            differs(&desired, &opened, &desired).as_deref(),
            Some("spec.rules[0].from")
        );
        let mut added = desired.clone();
        added["spec"]["action"] = json!("ALLOW");
        assert_eq!(
            differs(&desired, &added, &desired).as_deref(),
            Some("spec.action")
        );
        let mut dry = desired.clone();
        dry["metadata"]["annotations"] = json!({"istio.io/dry-run": "true"});
        assert_eq!(
            differs(&desired, &dry, &desired).as_deref(),
            Some("metadata.annotations.istio.io/dry-run")
        );
        let mut relabelled = desired.clone();
        relabelled["metadata"]["labels"] = json!({});
        assert!(differs(&desired, &relabelled, &desired).is_some());
        let mut orphaned = desired.clone();
        orphaned["metadata"]["ownerReferences"] = json!([]);
        assert_eq!(
            differs(&desired, &orphaned, &desired).as_deref(),
            Some("metadata.ownerReferences")
        );
        let mut revised = desired.clone();
        revised["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
        revised["status"] = json!({"anything": 1});
        assert_eq!(differs(&desired, &revised, &desired), None);
    }

    #[test]
    fn server_defaults_are_not_drift_and_an_autoscaled_replica_count_is_left_alone() {
        let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "api"}}}});
        let mut defaulted = desired.clone();
        defaulted["spec"]["replicas"] = json!(1);
        defaulted["spec"]["revisionHistoryLimit"] = json!(10);
        let mut live = defaulted.clone();
        live["spec"]["replicas"] = json!(4);
        assert_eq!(differs(&desired, &live, &defaulted), None);
        live["spec"]["revisionHistoryLimit"] = json!(0);
        assert_eq!(
            differs(&desired, &live, &defaulted).as_deref(),
            Some("spec.revisionHistoryLimit")
        );
        let mut fixed = desired.clone();
        fixed["spec"]["replicas"] = json!(2);
        let mut live = fixed.clone();
        live["spec"]["replicas"] = json!(4);
        assert_eq!(
            differs(&fixed, &live, &fixed).as_deref(),
            Some("spec.replicas")
        );
    }

    #[test]
    fn the_inbox_drops_status_only_updates_and_keeps_deletions() {
        let inbox = Inbox::default();
        let id = ObjectId {
            api_version: "v1".into(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: "api".into(),
        };
        assert!(inbox.observe(id.clone(), Some(1)));
        assert!(!inbox.observe(id.clone(), Some(1)));
        assert_eq!(inbox.drain().len(), 1);
        assert!(inbox.drain().is_empty());
        assert!(inbox.observe(id.clone(), None));
        assert_eq!(inbox.drain().get(&id), Some(&None));
        let kind = DERIVED.iter().find(|k| k.kind == "Service").unwrap();
        inbox.observe(id.clone(), Some(2));
        inbox.drain();
        inbox.relisted(kind, &BTreeSet::new());
        assert_eq!(inbox.drain().get(&id), Some(&None));
        // Deferred: back on the next drain, as last observed, without waking anyone.
        inbox.observe(id.clone(), Some(3));
        inbox.drain();
        inbox.defer([id.clone()]);
        assert_eq!(inbox.drain().get(&id), Some(&Some(3)));
        assert!(inbox.drain().is_empty());
    }
}
