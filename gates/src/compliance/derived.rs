//! What the objects derived for a workload show, read from the objects themselves.
//!
//! A check that reads a workload's *request* ("two replicas", "a metrics port") says what was
//! asked for, not what the platform produced. These facts are read from the Kubernetes
//! objects derivation returned (what the operator applies): a PodDisruptionBudget that
//! exists, a scrape object that exists, the service account and token mount each pod spec
//! really carries, the binary allowlist each container really runs under. A workload that
//! derived nothing (denied, or failed) has none of them.
//!
//! The objects are plain Kubernetes JSON: this module reads them as any client would and
//! knows nothing of how the compiler built them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

/// The kind of the Tetragon policy that kills any binary outside a container's allowlist.
pub const ALLOWLIST_KIND: &str = "TracingPolicyNamespaced";

/// What one workload's derived objects show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerivedObjects {
    /// The kinds of the objects derived (`PodDisruptionBudget`, `VMServiceScrape`, …).
    pub kinds: BTreeSet<String>,
    /// Some pod runs as its namespace's `default` service account (or names none).
    pub default_service_account: bool,
    /// Some pod mounts a service account token: neither the pod nor its service account
    /// sets `automountServiceAccountToken: false`.
    pub token_mounted: bool,
    /// Containers (by name) of pods that no binary allowlist selects: they may run any
    /// program their image holds.
    pub unlisted_containers: BTreeSet<String>,
}

/// Derived objects by workload (`namespace/name`). A workload that is absent derived nothing.
pub type DerivedByWorkload = HashMap<String, DerivedObjects>;

impl DerivedObjects {
    /// What is assumed when the derived objects were not read: the worst of each fact, so
    /// that a check reading them fails rather than passes on nothing.
    pub fn unknown() -> DerivedObjects {
        DerivedObjects {
            kinds: BTreeSet::new(),
            default_service_account: true,
            token_mounted: true,
            unlisted_containers: BTreeSet::from(["(not read)".to_owned()]),
        }
    }

    /// Reads the objects one workload derived.
    pub fn read(objects: &[Value]) -> DerivedObjects {
        let mut out = DerivedObjects::default();
        // Service accounts derived here, and whether each turns token mounting off.
        let accounts: BTreeMap<&str, bool> = objects
            .iter()
            .filter(|o| kind(o) == Some("ServiceAccount"))
            .filter_map(|o| {
                let name = o.pointer("/metadata/name")?.as_str()?;
                let off = o.get("automountServiceAccountToken") == Some(&Value::Bool(false));
                Some((name, off))
            })
            .collect();
        let allowlists: Vec<(&serde_json::Map<String, Value>, Vec<&str>)> = objects
            .iter()
            .filter(|o| kind(o) == Some(ALLOWLIST_KIND))
            .filter_map(|o| {
                let labels = o.pointer("/spec/podSelector/matchLabels")?.as_object()?;
                Some((labels, selected_containers(o)))
            })
            .collect();
        for object in objects {
            let Some(k) = kind(object) else { continue };
            out.kinds.insert(k.to_owned());
            let mut templates = Vec::new();
            pod_templates(object, &mut templates);
            for (labels, pod) in templates {
                let account = pod
                    .get("serviceAccountName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .unwrap_or("default");
                if account == "default" {
                    out.default_service_account = true;
                }
                let mounted = match pod
                    .get("automountServiceAccountToken")
                    .and_then(Value::as_bool)
                {
                    Some(set) => set,
                    // The pod leaves it to its service account; one this workload does not
                    // derive is not known to turn it off.
                    None => !accounts.get(account).copied().unwrap_or(false),
                };
                if mounted {
                    out.token_mounted = true;
                }
                let containers = pod
                    .get("containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("name").and_then(Value::as_str));
                for name in containers {
                    let listed = allowlists.iter().any(|(selector, names)| {
                        names.contains(&name)
                            && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    });
                    if !listed {
                        out.unlisted_containers.insert(name.to_owned());
                    }
                }
            }
        }
        out
    }
}

fn kind(object: &Value) -> Option<&str> {
    object.get("kind").and_then(Value::as_str)
}

/// Every pod template inside `value`, with its labels: anything whose `spec` holds a
/// `containers` list (a Deployment's template, a CronJob's job template, each task of a batch
/// job, a leader and worker template…), so that every workload shape is read the same way.
fn pod_templates<'a>(
    value: &'a Value,
    out: &mut Vec<(&'a serde_json::Map<String, Value>, &'a Value)>,
) {
    static NO_LABELS: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);
    match value {
        Value::Object(map) => {
            if let Some(spec) = map.get("spec")
                && spec.get("containers").is_some_and(Value::is_array)
            {
                let labels = value
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .unwrap_or(&NO_LABELS);
                out.push((labels, spec));
                return;
            }
            for v in map.values() {
                pod_templates(v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                pod_templates(v, out);
            }
        }
        _ => {}
    }
}

/// The container names an allowlist policy's `containerSelector` selects with `name In […]`.
fn selected_containers(policy: &Value) -> Vec<&str> {
    policy
        .pointer("/spec/containerSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("key").and_then(Value::as_str) == Some("name")
                && e.get("operator").and_then(Value::as_str) == Some("In")
        })
        .flat_map(|e| {
            e.get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(Value::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(pod: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": pod}}})
    }

    #[test]
    fn reads_kinds_accounts_and_tokens_from_the_objects() {
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"},
                   "automountServiceAccountToken": false}),
            deployment(json!({"serviceAccountName": "web", "containers": [{"name": "main"}]})),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"}}),
        ];
        let d = DerivedObjects::read(&objects);
        assert!(d.kinds.contains("PodDisruptionBudget"));
        assert!(!d.default_service_account);
        assert!(!d.token_mounted, "the derived account turns mounting off");
    }

    #[test]
    fn a_pod_without_an_account_or_with_a_token_is_seen() {
        let d = DerivedObjects::read(&[deployment(json!({"containers": [{"name": "main"}]}))]);
        assert!(d.default_service_account);
        assert!(d.token_mounted, "nothing turned mounting off");
        let d = DerivedObjects::read(&[
            json!({"kind": "ServiceAccount", "metadata": {"name": "web"}, "automountServiceAccountToken": false}),
            deployment(
                json!({"serviceAccountName": "web", "automountServiceAccountToken": true,
                              "containers": [{"name": "main"}]}),
            ),
        ]);
        assert!(
            d.token_mounted,
            "the pod's own setting wins over its account's"
        );
    }

    #[test]
    fn pod_specs_are_found_in_every_workload_shape() {
        let cron = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec":
            {"serviceAccountName": "default", "containers": []}}}}}});
        assert!(DerivedObjects::read(&[cron]).default_service_account);
        let tasks = json!({"kind": "Job", "apiVersion": "batch.volcano.sh/v1alpha1", "spec": {"tasks": [
            {"template": {"spec": {"serviceAccountName": "a", "automountServiceAccountToken": false, "containers": []}}},
            {"template": {"spec": {"containers": []}}}
        ]}});
        let d = DerivedObjects::read(&[tasks]);
        assert!(
            d.default_service_account,
            "the second task names no account"
        );
    }

    #[test]
    fn allowlists_select_containers_by_pod_labels_and_name() {
        let policy = |app: &str| {
            json!({"kind": ALLOWLIST_KIND, "spec": {
                "podSelector": {"matchLabels": {"app": app}},
                "containerSelector": {"matchExpressions": [
                    {"key": "name", "operator": "In", "values": ["main"]}]}}})
        };
        let pod = deployment(json!({"containers": [{"name": "main"}, {"name": "proxy"}]}));
        let d = DerivedObjects::read(&[pod.clone(), policy("web")]);
        assert_eq!(d.unlisted_containers, BTreeSet::from(["proxy".to_owned()]));
        let d = DerivedObjects::read(&[pod, policy("other")]);
        assert_eq!(
            d.unlisted_containers,
            BTreeSet::from(["main".to_owned(), "proxy".to_owned()]),
            "an allowlist for other pods selects none of these"
        );
    }
}
