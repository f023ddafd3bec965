//! Admission of the Kubernetes objects that run no pod and that Lattice judges at admission:
//! Roles, ClusterRoles, their bindings and Services. Each write is one `AdmitKubernetes`
//! question: the object's entity (projected as the compliance scans project it) in its
//! namespace, or in the cluster for a cluster-scoped kind, with the operation and who writes
//! it in context. The baseline pack permits every such write and forbids what must never
//! exist (anything granted to anonymous users, Service external IPs); organisations add
//! forbids of their own. Pods are [`crate::pod_security`]'s.

use std::sync::Arc;

use cedar_policy::{Context, RestrictedExpression as Rx};
use lattice_engine::policies::PolicyInfo;
use lattice_engine::{Query, Snapshot, World, action, uid};
use lattice_schemas::manifest::core::{CoreKind, CoreObject};
use serde_json::Value;

use crate::admission::Requester;
use crate::pod_security::WorldPolicies;

/// The kinds asked `AdmitKubernetes`.
pub const ADMITTED_KINDS: [CoreKind; 5] = [
    CoreKind::Role,
    CoreKind::ClusterRole,
    CoreKind::RoleBinding,
    CoreKind::ClusterRoleBinding,
    CoreKind::Service,
];

/// The answer for one object.
#[derive(Clone, Debug)]
pub struct ObjectAdmission {
    /// `ClusterRoleBinding anonymous-admin`, `Service shop/web`.
    pub object: String,
    pub refused: bool,
    /// The policies that decided: the forbids that refused it, or the permits that allowed
    /// it (empty for a default deny).
    pub determining: Vec<Arc<PolicyInfo>>,
}

impl ObjectAdmission {
    /// Why it was refused, with each forbid's advice; empty when admitted.
    pub fn message(&self) -> String {
        if !self.refused {
            return String::new();
        }
        if self.determining.is_empty() {
            return format!(
                "{}: no policy permits AdmitKubernetes (load the baseline pack, or permit it)",
                self.object
            );
        }
        let reasons: Vec<String> = self
            .determining
            .iter()
            .map(|p| match p.annotations.get("advice") {
                Some(advice) => format!("{} — {advice}", p.id),
                None => p.id.clone(),
            })
            .collect();
        format!("{}: refused by {}", self.object, reasons.join("; "))
    }
}

/// Decides the write of `object` (of `kind`, in `namespace` when it names none) by
/// `requester`. `Ok(None)` for a kind not asked; an object that cannot be read as its
/// Kubernetes type is an error (refused).
#[allow(clippy::too_many_arguments)]
pub fn admit(
    snapshot: &Snapshot,
    world: &World,
    policies: &WorldPolicies,
    kind: &str,
    object: &Value,
    namespace: &str,
    requester: &Requester,
    operation: &str,
) -> Result<Option<ObjectAdmission>, String> {
    let Some(core_kind) = ADMITTED_KINDS.iter().copied().find(|k| k.name() == kind) else {
        return Ok(None);
    };
    let mut value = object.clone();
    if core_kind.namespaced()
        && value.pointer("/metadata/namespace").is_none()
        && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("namespace".into(), Value::String(namespace.to_owned()));
    }
    let core = CoreObject::read(core_kind, value)?;
    let entity = lattice_engine::kubernetes::project(&core)?
        .ok_or_else(|| format!("{kind} projects no entity"))?;
    let name = core.metadata.name.clone().unwrap_or_default();
    let mut extra = vec![entity.clone()];
    extra.extend(requester.entities());
    let mut also = Vec::new();
    let (resource, described) = if core_kind.namespaced() {
        let ns = core.metadata.namespace.as_deref().unwrap_or(namespace);
        let ns_uid = uid("Namespace", ns);
        if snapshot.entities().get(&ns_uid).is_some() {
            also.push(ns_uid.clone());
        } else {
            let labels = crate::pod_security::namespace_labels(world, ns).unwrap_or_default();
            extra.push(lattice_engine::pod::unmanaged_namespace(
                ns,
                &labels,
                &policies.cluster,
                policies.default_enforce.name(),
            )?);
        }
        (ns_uid, format!("{kind} {ns}/{name}"))
    } else {
        let c = uid("Cluster", &policies.cluster);
        also.push(c.clone());
        (c, format!("{kind} {name}"))
    };
    let scoped = snapshot.scoped(extra, &also).map_err(|e| e.0)?;
    let context = Context::from_pairs([
        ("operation".to_owned(), Rx::new_string(operation.to_owned())),
        (
            "user".to_owned(),
            Rx::new_entity_uid(uid("User", &requester.username)),
        ),
    ])
    .map_err(|e| e.to_string())?;
    let q = Query::new(entity.uid(), action("AdmitKubernetes"), resource).with_context(context);
    let d = scoped.decide(&q).map_err(|e| e.0)?;
    Ok(Some(ObjectAdmission {
        object: described,
        refused: !d.allowed,
        determining: d.determining,
    }))
}
