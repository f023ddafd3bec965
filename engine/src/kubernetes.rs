//! The projection of Kubernetes objects that run no pod (DESIGN §5): Roles, ClusterRoles
//! and their bindings become `Role` and `RoleBinding` entities with what their rules grant,
//! Services become `KubeService` entities with how they are exposed. NetworkPolicies and
//! ServiceAccounts project no entity; compliance reads them as facts of their namespace and
//! of the pods that use them. Pods are [`crate::pod`]'s.

use cedar_policy::Entity;

use crate::attr::Rx;
use lattice_schemas::manifest::core::{CoreKind, CoreObject};
use serde::Deserialize;
use serde_json::Value;

use crate::entity::{entity_with_tags, s, uid};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
}

impl Rule {
    fn grants(&self, groups: &[&str], resources: &[&str], verbs: &[&str]) -> bool {
        let any = |have: &[String], want: &[&str]| {
            have.iter().any(|h| h == "*" || want.contains(&h.as_str()))
        };
        any(&self.api_groups, groups) && any(&self.resources, resources) && any(&self.verbs, verbs)
    }

    fn wildcard(&self) -> bool {
        [&self.api_groups, &self.resources, &self.verbs]
            .iter()
            .any(|v| v.iter().any(|x| x == "*"))
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RoleBody {
    #[serde(default)]
    rules: Option<Vec<Rule>>,
    aggregation_rule: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Binding {
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Option<Vec<BindingSubject>>,
}

#[derive(Deserialize, Default)]
struct RoleRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct BindingSubject {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "externalIPs")]
    external_ips: Option<Vec<String>>,
    ports: Option<Vec<ServicePort>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServicePort {
    node_port: Option<i64>,
}

/// The uid id of a namespaced object (`ns/Kind/name`) or a cluster-scoped one (`Kind/name`).
pub fn object_id(object: &CoreObject) -> String {
    let name = object.metadata.name.as_deref().unwrap_or("");
    match namespace_of(object) {
        Some(ns) => format!("{ns}/{}/{name}", object.kind.name()),
        None => format!("{}/{name}", object.kind.name()),
    }
}

fn namespace_of(object: &CoreObject) -> Option<&str> {
    object
        .kind
        .namespaced()
        .then(|| object.metadata.namespace.as_deref().unwrap_or("default"))
}

fn read<T: for<'de> Deserialize<'de> + Default>(value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| e.to_string())
}

/// The entity of `object`, or `None` for a kind that projects none (pods are
/// [`crate::pod::project`]'s).
pub fn project(object: &CoreObject) -> Result<Option<Entity>, String> {
    let name = object.metadata.name.as_deref().unwrap_or("");
    let ns = namespace_of(object);
    let parents = ns.map(|n| uid("Namespace", n));
    let labels = object.metadata.labels.as_ref();
    let fail = |e: String| format!("{} {name}: {e}", object.kind.name());
    let entity = match object.kind {
        CoreKind::Role | CoreKind::ClusterRole => {
            let body: RoleBody = read(&object.value).map_err(fail)?;
            let rules = body.rules.unwrap_or_default();
            let any = |f: &dyn Fn(&Rule) -> bool| Rx::new_bool(rules.iter().any(f));
            entity_with_tags(
                uid("Role", &object_id(object)),
                vec![
                    ("kind", s(object.kind.name())),
                    ("name", s(name)),
                    ("namespace", s(ns.unwrap_or(""))),
                    ("wildcard", any(&Rule::wildcard)),
                    (
                        "readsSecrets",
                        any(&|r| r.grants(&[""], &["secrets"], &["get", "list", "watch"])),
                    ),
                    (
                        "createsPods",
                        any(&|r| r.grants(&[""], &["pods"], &["create"])),
                    ),
                    (
                        "escalates",
                        any(&|r| {
                            r.grants(
                                &["rbac.authorization.k8s.io"],
                                &["roles", "clusterroles"],
                                &["bind", "escalate"],
                            ) || r.grants(
                                &["", "authentication.k8s.io"],
                                &["users", "groups", "serviceaccounts", "userextras"],
                                &["impersonate"],
                            )
                        }),
                    ),
                    (
                        "aggregated",
                        Rx::new_bool(body.aggregation_rule.is_some_and(|a| !a.is_null())),
                    ),
                ],
                parents,
                labels,
            )?
        }
        CoreKind::RoleBinding | CoreKind::ClusterRoleBinding => {
            let b: Binding = read(&object.value).map_err(fail)?;
            let subjects = b.subjects.unwrap_or_default();
            let default_account = subjects
                .iter()
                .any(|sub| sub.kind == "ServiceAccount" && sub.name == "default");
            let subjects = subjects.into_iter().map(|sub| {
                let who = match sub.kind.as_str() {
                    "ServiceAccount" => {
                        let sa_ns = sub.namespace.as_deref().or(ns).unwrap_or("default");
                        format!("{sa_ns}/{}", sub.name)
                    }
                    _ => sub.name,
                };
                s(&format!("{}:{who}", sub.kind))
            });
            entity_with_tags(
                uid("RoleBinding", &object_id(object)),
                vec![
                    ("kind", s(object.kind.name())),
                    ("name", s(name)),
                    ("namespace", s(ns.unwrap_or(""))),
                    ("roleKind", s(&b.role_ref.kind)),
                    ("roleName", s(&b.role_ref.name)),
                    ("subjects", Rx::new_set(subjects)),
                    ("defaultServiceAccount", Rx::new_bool(default_account)),
                ],
                parents,
                labels,
            )?
        }
        CoreKind::Service => {
            let spec: ServiceSpec = match object.value.get("spec") {
                None | Some(Value::Null) => ServiceSpec::default(),
                Some(v) => read(v).map_err(fail)?,
            };
            let ns = ns.unwrap_or("default");
            entity_with_tags(
                uid("KubeService", &format!("{ns}/{name}")),
                vec![
                    ("name", s(name)),
                    ("namespace", s(ns)),
                    ("type", s(spec.kind.as_deref().unwrap_or("ClusterIP"))),
                    (
                        "externalIPs",
                        Rx::new_set(spec.external_ips.iter().flatten().map(|ip| s(ip))),
                    ),
                    (
                        "nodePorts",
                        Rx::new_set(
                            spec.ports
                                .iter()
                                .flatten()
                                .filter_map(|p| p.node_port.filter(|n| *n != 0))
                                .map(Rx::new_long),
                        ),
                    ),
                ],
                parents,
                labels,
            )?
        }
        _ => return Ok(None),
    };
    Ok(Some(entity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::EvalResult;
    use serde_json::json;

    fn attr(e: &Entity, name: &str) -> EvalResult {
        e.attr(name).unwrap().unwrap()
    }

    fn core(kind: CoreKind, value: Value) -> CoreObject {
        CoreObject::read(kind, value).unwrap()
    }

    #[test]
    fn roles_say_what_their_rules_grant() {
        let role = core(
            CoreKind::ClusterRole,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
                          {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}),
        );
        let e = project(&role).unwrap().unwrap();
        assert_eq!(e.uid().id().as_ref() as &str, "ClusterRole/reader");
        assert_eq!(attr(&e, "readsSecrets"), EvalResult::Bool(true));
        assert_eq!(attr(&e, "wildcard"), EvalResult::Bool(false));
        assert_eq!(attr(&e, "createsPods"), EvalResult::Bool(false));

        let star = core(
            CoreKind::Role,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "all", "namespace": "shop"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        );
        let e = project(&star).unwrap().unwrap();
        assert_eq!(e.uid().id().as_ref() as &str, "shop/Role/all");
        for a in ["wildcard", "readsSecrets", "createsPods", "escalates"] {
            assert_eq!(attr(&e, a), EvalResult::Bool(true), "{a}");
        }
    }

    #[test]
    fn bindings_name_their_role_and_subjects() {
        let b = core(
            CoreKind::RoleBinding,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "b", "namespace": "shop"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": "default"},
                             {"kind": "Group", "name": "system:unauthenticated", "apiGroup": "rbac.authorization.k8s.io"}]}),
        );
        let e = project(&b).unwrap().unwrap();
        let EvalResult::Set(subjects) = attr(&e, "subjects") else {
            panic!("a set")
        };
        let mut subjects: Vec<String> = subjects
            .iter()
            .map(|v| match v {
                EvalResult::String(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        subjects.sort();
        assert_eq!(
            subjects,
            [
                "Group:system:unauthenticated",
                "ServiceAccount:shop/default"
            ]
        );
        assert_eq!(attr(&e, "roleName"), EvalResult::String("edit".into()));
    }

    /// The API server takes any image string: one that is no reference makes an untrusted
    /// image, never a world that cannot be decided (which would stop every decision).
    #[test]
    fn an_image_that_is_no_reference_is_untrusted_not_an_error() {
        use lattice_schemas::manifest::Object;
        let deployment = core(
            CoreKind::Deployment,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "odd", "namespace": "shop"},
                "spec": {"selector": {}, "template": {"spec": {"containers": [
                    {"name": "main", "image": "Registry.Example/UPPER:Tag!"}]}}}}),
        );
        let world = crate::World::from_objects(vec![Object::Core(deployment)]);
        let projection = crate::Projection::of(&world);
        let snapshot =
            crate::Snapshot::build(&world, &projection, &crate::PolicyStore::bundled().unwrap())
                .expect("the world is decided");
        let image = snapshot
            .entities()
            .get(&uid("Image", "Registry.Example/UPPER:Tag!"))
            .expect("an image entity");
        assert_eq!(attr(image, "trustedRegistry"), EvalResult::Bool(false));
        assert_eq!(attr(image, "signed"), EvalResult::Bool(false));
    }

    #[test]
    fn services_say_how_they_are_exposed() {
        let svc = core(
            CoreKind::Service,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "externalIPs": ["203.0.113.7"],
                         "ports": [{"port": 80, "nodePort": 30080}]}}),
        );
        let e = project(&svc).unwrap().unwrap();
        assert_eq!(e.uid().id().as_ref() as &str, "default/web");
        assert_eq!(attr(&e, "type"), EvalResult::String("NodePort".into()));
        let policy = core(
            CoreKind::NetworkPolicy,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}),
        );
        assert!(project(&policy).unwrap().is_none());
    }
}
