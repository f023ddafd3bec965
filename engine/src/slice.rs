//! Which entities a command's decisions can read: a slice of the world's entities for a
//! command that asks only some actions (`mesh` asks `Connect` and
//! `AccessExternalEndpoint`), so that it reads back, and holds, only those.
//!
//! A Cedar policy reads entity data only through an entity it reaches from the request:
//! its principal, resource and context, the entity literals the policy names, and what
//! their attributes and tags hold, transitively (`in` reads only the left side's own
//! ancestors). Every entity conforms to the schema, so the entity types a request of an
//! action can read are those the schema reaches from the action's principal, resource and
//! context types and from the active policies' literals, through attribute and tag types.
//! The slice is every entity of those types; a decision on it is the decision on every
//! entity. A snapshot over a slice refuses any other action (fails closed, and says why)
//! rather than decide it on entities it does not hold.
//!
//! Written here because Cedar's own entity manifests are an experimental feature that
//! Lattice does not build with; this is the coarser, type-level form of the same closure.

use std::collections::HashSet;

use cedar_policy::{EntityUid, Schema};
use cedar_policy_core::ast::{EntityType, EntityUID};
use cedar_policy_core::validator::ValidatorSchema;
use cedar_policy_core::validator::types::{EntityKind, Type};

use crate::policies::PolicyStore;

/// The action that approves a declared wildcard peer, decided while a snapshot is assembled.
pub(crate) const ALLOW_WILDCARD: &str = "AllowWildcard";
/// The action that lets a namespace run without the default-deny baseline, decided while a
/// snapshot is assembled.
pub(crate) const OPT_OUT_DEFAULT_DENY: &str = "OptOutDefaultDeny";
/// The actions every snapshot decides while it is assembled (its approvals): a slice
/// always covers them. The snapshot asks them by these names, so the two cannot drift.
pub(crate) const ASSEMBLY_ACTIONS: [&str; 2] = [ALLOW_WILDCARD, OPT_OUT_DEFAULT_DENY];

/// The entity types a set of actions can read, and the actions.
#[derive(Clone, Debug)]
pub struct EntitySlice {
    types: HashSet<EntityType>,
    actions: HashSet<EntityUID>,
}

impl EntitySlice {
    /// The slice for requests of `actions` (names of Lattice actions, e.g. `Connect`) under
    /// the active policies of `store`, with the snapshot's own approvals. `None` when no
    /// slice can be taken: an action the schema does not declare, or a type the schema
    /// leaves open (any entity).
    pub fn for_actions(schema: &Schema, store: &PolicyStore, actions: &[&str]) -> Option<Self> {
        let vs: &ValidatorSchema = schema.as_ref();
        let mut slice = EntitySlice {
            types: HashSet::new(),
            actions: HashSet::new(),
        };
        let mut roots: Vec<EntityType> = Vec::new();
        for name in actions.iter().chain(ASSEMBLY_ACTIONS.iter()) {
            let uid: EntityUID = crate::entity::action(name).as_ref().clone();
            let action = vs.get_action_id(&uid)?;
            roots.extend(action.applies_to_principals().cloned());
            roots.extend(action.applies_to_resources().cloned());
            if let Some(context) = action.context_type() {
                reached(context, &mut roots)?;
            }
            slice.actions.insert(uid);
        }
        for p in store.active() {
            for literal in p.policy.entity_literals() {
                let uid: &EntityUID = literal.as_ref();
                if !uid.is_action() {
                    roots.push(uid.entity_type().clone());
                }
            }
        }
        while let Some(ty) = roots.pop() {
            if !slice.types.insert(ty.clone()) {
                continue;
            }
            // A type the schema does not declare has no entities to read through.
            let Some(declared) = vs.get_entity_type(&ty) else {
                continue;
            };
            for (_, attr) in declared.attributes().iter() {
                reached(&attr.attr_type, &mut roots)?;
            }
            if let Some(tags) = declared.tag_type() {
                reached(tags, &mut roots)?;
            }
        }
        Some(slice)
    }

    /// Whether the slice holds the entities of type `ty`.
    pub fn holds(&self, ty: &EntityType) -> bool {
        self.types.contains(ty)
    }

    /// The entity types held, by name (sorted), for people and tests.
    pub fn type_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.types.iter().map(ToString::to_string).collect();
        names.sort();
        names
    }

    /// Refuses a request the slice was not taken for: another action, or a principal or
    /// resource of a type it does not hold.
    pub(crate) fn admits(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Result<(), String> {
        let action: &EntityUID = action.as_ref();
        if !self.actions.contains(action) {
            return Err(format!(
                "this snapshot holds only the entities its command's actions read; {action} is not one of them, so it is not decided here"
            ));
        }
        for uid in [principal, resource] {
            let uid: &EntityUID = uid.as_ref();
            if !uid.is_action() && !self.holds(uid.entity_type()) {
                return Err(format!(
                    "this snapshot does not hold {} entities, so {uid} is not decided here",
                    uid.entity_type()
                ));
            }
        }
        Ok(())
    }
}

/// Pushes the entity types a value of type `ty` can hold onto `out`; `None` for a type
/// open to any entity.
fn reached(ty: &Type, out: &mut Vec<EntityType>) -> Option<()> {
    match ty {
        Type::Entity(EntityKind::Entity(lub)) => out.push(lub.get_single_entity()?.clone()),
        Type::Entity(EntityKind::AnyEntity) => return None,
        Type::Set {
            element_type: Some(element),
        } => reached(element, out)?,
        Type::Record { attrs, .. } => {
            for (_, attr) in attrs.iter() {
                reached(&attr.attr_type, out)?;
            }
        }
        _ => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled() -> (Schema, PolicyStore) {
        (
            lattice_schemas::cedar::schema().clone(),
            PolicyStore::bundled().expect("the bundled packs load"),
        )
    }

    #[test]
    fn the_mesh_reads_services_and_namespaces_not_containers() {
        let (schema, store) = bundled();
        let slice = EntitySlice::for_actions(&schema, &store, &["Connect"]).unwrap();
        let names = slice.type_names();
        for held in ["Lattice::Service", "Lattice::Mesh", "Lattice::Namespace"] {
            assert!(names.iter().any(|n| n == held), "{held} in {names:?}");
        }
        for left in [
            "Lattice::Container",
            "Lattice::Image",
            "Lattice::SecretPath",
        ] {
            assert!(!names.iter().any(|n| n == left), "{left} not in {names:?}");
        }
    }

    #[test]
    fn a_policy_naming_an_entity_brings_its_type_and_what_that_reaches() {
        let (schema, mut store) = bundled();
        let before = EntitySlice::for_actions(&schema, &store, &["Connect"]).unwrap();
        assert!(!before.holds(&"Lattice::Container".parse().unwrap()));
        let object: lattice_schemas::crd::CedarPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
            "metadata": {"name": "literal", "namespace": "shop"},
            "spec": {"policies": "@id(\"literal\")\nforbid (principal, action == Lattice::Action::\"Connect\", resource) when { Lattice::Container::\"shop/web/main\".image == Lattice::Image::\"x\" };"}
        }))
        .unwrap();
        store.apply_object(&object).unwrap();
        let after = EntitySlice::for_actions(&schema, &store, &["Connect"]).unwrap();
        assert!(after.holds(&"Lattice::Container".parse().unwrap()));
        // Through `Container.image`.
        assert!(after.holds(&"Lattice::Image".parse().unwrap()));
    }

    #[test]
    fn an_undeclared_action_takes_no_slice() {
        let (schema, store) = bundled();
        assert!(EntitySlice::for_actions(&schema, &store, &["NoSuchAction"]).is_none());
    }

    #[test]
    fn only_what_the_slice_was_taken_for_is_admitted() {
        let (schema, store) = bundled();
        let slice = EntitySlice::for_actions(&schema, &store, &["Connect"]).unwrap();
        let svc = crate::entity::uid("Service", "shop/web");
        let connect = crate::entity::action("Connect");
        assert!(slice.admits(&svc, &connect, &svc).is_ok());
        let other = slice.admits(&svc, &crate::entity::action("DeployImage"), &svc);
        assert!(other.unwrap_err().contains("not decided here"));
        let container = crate::entity::uid("Container", "shop/web/main");
        let err = slice.admits(&container, &connect, &svc).unwrap_err();
        assert!(err.contains("does not hold Lattice::Container"), "{err}");
    }
}
