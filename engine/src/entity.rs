//! What every projection builds with (Lattice kinds in [`crate::project`], pods in
//! [`crate::pod`], RBAC and Services in [`crate::kubernetes`]): entity uids by type, string
//! attributes, entities with tags, an image's uid text, a workload's Score bodies and the
//! label by which a namespace asks to leave the default-deny baseline. Kept apart so that
//! those projections depend on it rather than on each other.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid};
use lattice_schemas::crd::workload::WorkloadBody;
use lattice_schemas::image::ImageRef;
use lattice_schemas::manifest::Object;

use crate::attr::Rx;

/// The label by which a namespace *asks* to opt out of Lattice's default-deny baseline
/// (`"false"`). A request only: `OptOutDefaultDeny` decides it.
pub const DEFAULT_DENY_LABEL: &str = "lattice.dev/default-deny";

/// The Cedar entity types, parsed once.
pub(crate) struct Types {
    names: HashMap<&'static str, EntityTypeName>,
}

impl Types {
    fn get() -> &'static Types {
        static TYPES: OnceLock<Types> = OnceLock::new();
        TYPES.get_or_init(|| {
            let all = [
                "Cluster",
                "Namespace",
                "Service",
                "Container",
                "Pod",
                "Role",
                "RoleBinding",
                "KubeService",
                "Image",
                "SecretProvider",
                "SecretPath",
                "ImageProvider",
                "Volume",
                "ExternalEndpoint",
                "SecurityOverride",
                "Host",
                "Mesh",
                "Gpu",
                "Quota",
                "User",
                "Group",
                "Framework",
                "Control",
            ];
            Types {
                names: all
                    .into_iter()
                    .map(|t| {
                        (
                            t,
                            EntityTypeName::from_str(&format!("Lattice::{t}"))
                                .expect("valid type name"),
                        )
                    })
                    .collect(),
            }
        })
    }
}

/// `Lattice::<ty>::"<id>"`.
pub fn uid(ty: &'static str, id: &str) -> EntityUid {
    let t = Types::get()
        .names
        .get(ty)
        .unwrap_or_else(|| panic!("unknown entity type {ty}"))
        .clone();
    EntityUid::from_type_name_and_id(t, EntityId::new(id))
}

/// A string attribute.
pub(crate) fn s(v: &str) -> Rx {
    Rx::new_string(v.to_owned())
}

/// An entity with `attrs`, direct `parents` and string `tags`.
pub(crate) fn entity_with_tags(
    uid: EntityUid,
    attrs: Vec<(&str, Rx)>,
    parents: impl IntoIterator<Item = EntityUid>,
    tags: Option<&BTreeMap<String, String>>,
) -> Result<Entity, String> {
    crate::attr::entity(uid, attrs, parents, tags)
}

/// Whether a namespace with these labels asks to opt out of the default-deny baseline.
/// Only a request: `OptOutDefaultDeny` decides it.
pub fn opt_out_requested(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(DEFAULT_DENY_LABEL))
        .is_some_and(|v| v == "false")
}

/// The normalized image reference a container uses (the `Image` uid), or the text as
/// written when it does not parse (so a policy can still deny it).
pub fn image_uid_text(image: &str) -> String {
    ImageRef::parse(image)
        .map(|i| i.to_string())
        .unwrap_or_else(|_| image.to_owned())
}

/// The workload bodies of an object with the name each is known by (`""` for a service, the
/// task or role name for a job or model) and its replicas: the one place that knows how job
/// tasks and model roles hold their Score bodies.
pub fn workload_bodies(object: &Object) -> Vec<(&str, &WorkloadBody, i32)> {
    match object {
        Object::Service(s) => vec![("", &s.spec.workload, s.spec.replicas.unwrap_or(1))],
        Object::Job(j) => j
            .spec
            .tasks
            .iter()
            .map(|(n, t)| (n.as_str(), &t.workload, t.replicas.unwrap_or(1)))
            .collect(),
        Object::Model(m) => m
            .spec
            .roles
            .iter()
            .map(|(n, r)| (n.as_str(), &r.workload, r.replicas.unwrap_or(1)))
            .collect(),
        _ => Vec::new(),
    }
}

/// `Lattice::Action::"<name>"` (built directly, so any name is safe).
pub fn action(name: &str) -> EntityUid {
    use std::str::FromStr;
    static ACTION: std::sync::OnceLock<cedar_policy::EntityTypeName> = std::sync::OnceLock::new();
    let ty = ACTION.get_or_init(|| {
        cedar_policy::EntityTypeName::from_str("Lattice::Action").expect("a valid type name")
    });
    EntityUid::from_type_name_and_id(ty.clone(), cedar_policy::EntityId::new(name))
}
