//! Checking projected entities against the Cedar schema, on every core.
//!
//! Cedar's conformance checker asks its schema for an entity type's description once per
//! entity, and for each attribute's type once per attribute. Cedar's own schema adapter
//! (`CoreSchema`) answers by cloning the type's whole schema entry, scanning every type for
//! the allowed parents, and converting each attribute's validator type afresh: at estate
//! scale (40,000 entities) that was most of the check. [`TypeTable`] answers the same
//! questions from descriptions made once per entity type, taken from `CoreSchema` itself,
//! so the checker and its verdicts are Cedar's own; only the lookups are cached.
//!
//! Why cedar-policy-core: the public API checks entities only while building an
//! `Entities` of them, which takes them by value and computes their closure. Checking
//! 40,000 entities that way cloned every one and built a throwaway closure per chunk,
//! twice the work of the closure the snapshot keeps. Cedar's own conformance checker reads
//! them where they are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Entity, Schema};
use cedar_policy_core::ast::{self, Eid, EntityType, EntityUID};
use cedar_policy_core::entities::conformance::EntitySchemaConformanceChecker;
use cedar_policy_core::entities::{EntityTypeDescription, SchemaType};
use cedar_policy_core::validator::{CoreSchema, ValidatorSchema};
use nonempty::NonEmpty;
use rayon::prelude::*;
use smol_str::SmolStr;

/// Entities per check chunk: large enough to amortize a chunk, small enough to spread
/// over every core.
pub(crate) const CHUNK: usize = 2048;

/// Checks `all` against the schema on every core, as `Entities::from_entities` checks each
/// entity it is given (before the closure: the entity's own parents), and fails as it does,
/// on the least uid that does not conform.
pub(crate) fn check_in_chunks<E: std::borrow::Borrow<Entity> + Sync>(
    all: &[E],
    schema: &Schema,
) -> Result<(), Box<cedar_policy::entities_errors::EntitiesError>> {
    let table = TypeTable::of(schema.as_ref());
    let checker = EntitySchemaConformanceChecker::new(
        &table,
        cedar_policy_core::extensions::Extensions::all_available(),
    );
    let first = all
        .par_chunks(CHUNK)
        .filter_map(|c| {
            c.iter()
                .filter_map(|e| {
                    let e: &ast::Entity = e.borrow().as_ref();
                    // Actions are the schema's own, checked by Cedar when it adds them.
                    if e.uid().entity_type().is_action() {
                        return None;
                    }
                    checker
                        .validate_entity(e)
                        .err()
                        .map(|err| (e.uid().clone(), err))
                })
                .min_by(|a, b| a.0.cmp(&b.0))
        })
        .min_by(|a, b| a.0.cmp(&b.0));
    match first {
        Some((_, err)) => Err(Box::new(err.into())),
        None => Ok(()),
    }
}

/// The schema's entity types, each described once: a `cedar_policy_core` schema for the
/// conformance checker.
struct TypeTable<'a> {
    core: CoreSchema<'a>,
    types: HashMap<EntityType, Described>,
}

impl<'a> TypeTable<'a> {
    fn of(schema: &'a ValidatorSchema) -> TypeTable<'a> {
        use cedar_policy_core::entities::Schema as _;
        let core = CoreSchema::new(schema);
        let types = schema
            .entity_types()
            .filter_map(|t| {
                let name = t.name().clone();
                let described = core.entity_type(&name)?;
                // Every attribute's type converted once, by Cedar's own conversion.
                let attrs = t
                    .attributes()
                    .iter()
                    .filter_map(|(a, _)| Some((a.clone(), described.attr_type(a)?)))
                    .collect();
                let required = described.required_attrs().collect();
                let tag = described.tag_type();
                let parents = described.allowed_parent_types();
                let open = described.open_attributes();
                let external = described.is_external();
                let enumerated = described.enum_entity_eids().cloned();
                Some((
                    name.clone(),
                    Described(Arc::new(Description {
                        name,
                        attrs,
                        required,
                        tag,
                        parents,
                        open,
                        external,
                        enumerated,
                    })),
                ))
            })
            .collect();
        TypeTable { core, types }
    }
}

impl cedar_policy_core::entities::Schema for TypeTable<'_> {
    type EntityTypeDescription = Described;
    type ActionEntityIterator = Vec<Arc<ast::Entity>>;

    fn entity_type(&self, entity_type: &EntityType) -> Option<Described> {
        self.types.get(entity_type).cloned()
    }

    fn action(&self, action: &EntityUID) -> Option<Arc<ast::Entity>> {
        self.core.action(action)
    }

    fn entity_types_with_basename<'b>(
        &'b self,
        basename: &'b ast::UnreservedId,
    ) -> Box<dyn Iterator<Item = EntityType> + 'b> {
        self.core.entity_types_with_basename(basename)
    }

    fn action_entities(&self) -> Self::ActionEntityIterator {
        self.core.action_entities().collect()
    }
}

/// One entity type's description, shared by every entity of the type.
#[derive(Clone)]
struct Described(Arc<Description>);

struct Description {
    name: EntityType,
    attrs: HashMap<SmolStr, SchemaType>,
    required: Vec<SmolStr>,
    tag: Option<SchemaType>,
    parents: Arc<HashSet<EntityType>>,
    open: bool,
    external: bool,
    enumerated: Option<NonEmpty<Eid>>,
}

impl EntityTypeDescription for Described {
    fn entity_type(&self) -> EntityType {
        self.0.name.clone()
    }

    fn attr_type(&self, attr: &str) -> Option<SchemaType> {
        self.0.attrs.get(attr).cloned()
    }

    fn tag_type(&self) -> Option<SchemaType> {
        self.0.tag.clone()
    }

    fn required_attrs<'s>(&'s self) -> Box<dyn Iterator<Item = SmolStr> + 's> {
        Box::new(self.0.required.iter().cloned())
    }

    fn allowed_parent_types(&self) -> Arc<HashSet<EntityType>> {
        self.0.parents.clone()
    }

    fn open_attributes(&self) -> bool {
        self.0.open
    }

    fn enum_entity_eids(&self) -> Option<&NonEmpty<Eid>> {
        self.0.enumerated.as_ref()
    }

    fn is_external(&self) -> bool {
        self.0.external
    }
}
