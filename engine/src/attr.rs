//! Attribute values of projected entities and request contexts, made into Cedar values
//! directly.
//!
//! `cedar_policy::Entity::new` takes attributes as restricted expressions and runs Cedar's
//! evaluator over every one of them: at estate scale (hundreds of thousands of attributes)
//! that was a third of the projection. The projection's attributes are literals, sets,
//! records and entity references; [`Rx`] holds them (with the same constructors as
//! `RestrictedExpression`, which it replaces here) and builds the values Cedar's evaluator
//! would, without it. Only the one extension value, `decimal`, is still made by Cedar's
//! evaluator, so its parsing and range rules are Cedar's.

use std::collections::{BTreeMap, HashSet};

use cedar_policy::{Context, Entity, EntityUid};
use cedar_policy_core::ast::{self, PartialValue, RestrictedExpr, Value};
use cedar_policy_core::evaluator::RestrictedEvaluator;
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;

/// An attribute's or a context field's value: what a literal restricted expression says.
#[derive(Clone, Debug)]
pub enum Rx {
    Bool(bool),
    Long(i64),
    String(SmolStr),
    Set(Vec<Rx>),
    Record(BTreeMap<SmolStr, Rx>),
    Entity(EntityUid),
    /// A `decimal("…")` value, from its text.
    Decimal(String),
}

impl Rx {
    pub fn new_bool(b: bool) -> Rx {
        Rx::Bool(b)
    }

    pub fn new_long(n: i64) -> Rx {
        Rx::Long(n)
    }

    pub fn new_string(s: String) -> Rx {
        Rx::String(s.into())
    }

    pub fn new_set(items: impl IntoIterator<Item = Rx>) -> Rx {
        Rx::Set(items.into_iter().collect())
    }

    /// A record; as in Cedar, a field named twice is an error.
    pub fn new_record(fields: impl IntoIterator<Item = (String, Rx)>) -> Result<Rx, String> {
        let mut record = BTreeMap::new();
        for (k, v) in fields {
            if record.insert(SmolStr::from(&k), v).is_some() {
                return Err(format!("the record names `{k}` twice"));
            }
        }
        Ok(Rx::Record(record))
    }

    pub fn new_entity_uid(uid: EntityUid) -> Rx {
        Rx::Entity(uid)
    }

    pub fn new_decimal(text: impl ToString) -> Rx {
        Rx::Decimal(text.to_string())
    }

    /// The Cedar value: what Cedar's evaluator makes of the same restricted expression.
    fn into_value(self) -> Result<Value, String> {
        Ok(match self {
            Rx::Bool(b) => Value::from(b),
            Rx::Long(n) => Value::from(n),
            Rx::String(s) => Value::from(s),
            Rx::Set(items) => Value::set(
                items
                    .into_iter()
                    .map(Rx::into_value)
                    .collect::<Result<Vec<_>, _>>()?,
                None,
            ),
            Rx::Record(fields) => Value::record(
                fields
                    .into_iter()
                    .map(|(k, v)| Ok((k, v.into_value()?)))
                    .collect::<Result<Vec<_>, String>>()?,
                None,
            ),
            Rx::Entity(uid) => Value::from(ast::EntityUID::from(uid)),
            Rx::Decimal(text) => {
                let call = RestrictedExpr::call_extension_fn(
                    "decimal".parse().map_err(|e| format!("{e}"))?,
                    [RestrictedExpr::val(text.as_str())],
                );
                RestrictedEvaluator::new(Extensions::all_available())
                    .interpret(call.as_borrowed())
                    .map_err(|e| format!("`{text}` is not a decimal: {e}"))?
            }
        })
    }
}

/// A request context of `fields`, as `Context::from_pairs` makes it of the same restricted
/// expressions; as there, a field named twice is an error.
pub fn context(fields: impl IntoIterator<Item = (String, Rx)>) -> Result<Context, String> {
    let mut record = BTreeMap::new();
    for (k, v) in fields {
        let v = v.into_value()?;
        if record.insert(SmolStr::from(&k), v).is_some() {
            return Err(format!("the context names `{k}` twice"));
        }
    }
    Ok(Context::from(ast::Context::Value(std::sync::Arc::new(
        record,
    ))))
}

/// An entity with `attrs`, direct `parents` and string `tags`.
pub(crate) fn entity(
    uid: EntityUid,
    attrs: Vec<(&str, Rx)>,
    parents: impl IntoIterator<Item = EntityUid>,
    tags: Option<&BTreeMap<String, String>>,
) -> Result<Entity, String> {
    // Sized once: collected through `Result`, the vector would grow a step at a time, once
    // for each of an estate's tens of thousands of entities.
    let mut values = Vec::with_capacity(attrs.len());
    for (k, v) in attrs {
        let v = v
            .into_value()
            .map_err(|e| format!("the entity {uid} cannot be built: {e}"))?;
        values.push((SmolStr::from(k), PartialValue::Value(v)));
    }
    let parents: HashSet<ast::EntityUID> = parents.into_iter().map(Into::into).collect();
    let tags = tags.into_iter().flatten().map(|(k, v)| {
        (
            SmolStr::from(k),
            PartialValue::Value(Value::from(v.as_str())),
        )
    });
    Ok(Entity::from(ast::Entity::new_with_attr_partial_value(
        uid.into(),
        values,
        HashSet::new(),
        parents,
        tags,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::RestrictedExpression as Cedar;
    use std::collections::HashMap;

    fn uid(t: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(t.parse().unwrap(), id.parse().unwrap())
    }

    #[test]
    fn every_kind_of_value_is_what_cedars_evaluator_makes() {
        let ns = uid("Namespace", "shop");
        let ours = vec![
            ("b", Rx::new_bool(true)),
            ("n", Rx::new_long(-7)),
            (
                "s",
                Rx::new_string("a string longer than twenty-three bytes".into()),
            ),
            (
                "set",
                Rx::new_set([Rx::new_long(2), Rx::new_long(1), Rx::new_long(2)]),
            ),
            ("empty", Rx::new_set([])),
            (
                "rec",
                Rx::new_record([
                    ("cpu".to_owned(), Rx::new_decimal("1.5000")),
                    ("owner".to_owned(), Rx::new_entity_uid(ns.clone())),
                ])
                .unwrap(),
            ),
        ];
        let cedars: HashMap<String, Cedar> = [
            ("b", Cedar::new_bool(true)),
            ("n", Cedar::new_long(-7)),
            (
                "s",
                Cedar::new_string("a string longer than twenty-three bytes".into()),
            ),
            (
                "set",
                Cedar::new_set([Cedar::new_long(2), Cedar::new_long(1), Cedar::new_long(2)]),
            ),
            ("empty", Cedar::new_set([])),
            (
                "rec",
                Cedar::new_record([
                    ("cpu".to_owned(), Cedar::new_decimal("1.5000")),
                    ("owner".to_owned(), Cedar::new_entity_uid(ns.clone())),
                ])
                .unwrap(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let tags: BTreeMap<String, String> = [("team".to_owned(), "web".to_owned())].into();
        let me = uid("Service", "shop/web");
        let built = entity(me.clone(), ours, [ns.clone()], Some(&tags)).unwrap();
        let by_cedar = Entity::new_with_tags(
            me,
            cedars,
            std::collections::HashSet::from([ns]),
            [("team".to_owned(), Cedar::new_string("web".into()))],
        )
        .unwrap();
        assert_eq!(built, by_cedar);
    }

    #[test]
    fn a_context_is_what_cedars_from_pairs_makes() {
        let ours = context([
            (
                "ports".to_owned(),
                Rx::new_set([Rx::new_long(8080), Rx::new_long(443)]),
            ),
            ("raisedBy".to_owned(), Rx::new_string("main".into())),
            ("sidecar".to_owned(), Rx::new_bool(false)),
        ])
        .unwrap();
        let cedars = Context::from_pairs([
            (
                "ports".to_owned(),
                Cedar::new_set([Cedar::new_long(8080), Cedar::new_long(443)]),
            ),
            ("raisedBy".to_owned(), Cedar::new_string("main".into())),
            ("sidecar".to_owned(), Cedar::new_bool(false)),
        ])
        .unwrap();
        assert_eq!(ours.as_ref(), cedars.as_ref());
        let twice = context([
            ("a".to_owned(), Rx::new_long(1)),
            ("a".to_owned(), Rx::new_long(2)),
        ]);
        assert!(twice.is_err());
    }

    #[test]
    fn a_bad_decimal_and_a_field_named_twice_are_errors() {
        let bad = entity(
            uid("Quota", "q"),
            vec![("limit", Rx::new_decimal("1.2.3"))],
            [],
            None,
        );
        assert!(bad.unwrap_err().contains("not a decimal"));
        let twice = Rx::new_record([
            ("a".to_owned(), Rx::new_long(1)),
            ("a".to_owned(), Rx::new_long(2)),
        ]);
        assert!(twice.is_err());
    }
}
