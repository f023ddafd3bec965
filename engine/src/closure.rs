//! The transitive closure of the entity hierarchy, computed on every core.
//!
//! `Entities::from_entities` computes the closure itself, on one core, with an algorithm
//! for arbitrary graphs (strongly connected components over maps keyed by uid). At estate
//! scale that was a fifth of a warm `mesh` run. The projection's hierarchy is a shallow
//! DAG (containers in services in namespaces in clusters), so each entity's ancestors are
//! found by walking up from it, independently and in parallel, and the set is given to
//! Cedar's core crate with `AssumeAlreadyComputed`, as the snapshot's incremental path
//! ([`crate::snapshot`]'s `take_in`) already does. A cycle is refused, as Cedar refuses it.
//! A differential test holds the result to Cedar's own closure.

use std::borrow::Borrow;
use std::collections::HashMap;

use cedar_policy::{Entities, Entity};
use cedar_policy_core::ast::{self, EntityUID};
use cedar_policy_core::entities::{NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use foldhash::HashSet as FastSet;
use rayon::prelude::*;

/// `all` (which must hold no action) and the schema's `actions` as one `Entities`, with
/// the hierarchy closed. Fails on a cycle, naming the least uid on one, or when a uid is
/// given twice.
pub(crate) fn close<E: Borrow<Entity> + Send + Sync>(
    all: Vec<E>,
    actions: impl IntoIterator<Item = Entity>,
) -> Result<Entities, String> {
    close_kept(all, actions, |_| true)
}

/// [`close`], keeping only the entities `keep` accepts: the hierarchy is still closed over
/// all of them (a kept entity's ancestors may pass through one left out), and a cycle
/// anywhere is still an error.
pub(crate) fn close_kept<E: Borrow<Entity> + Send + Sync>(
    all: Vec<E>,
    actions: impl IntoIterator<Item = Entity>,
    keep: impl Fn(&ast::Entity) -> bool + Sync,
) -> Result<Entities, String> {
    // Each entity's ancestors first, walking parents borrowed where they lie: copying
    // every uid and parent list into a map of its own was a long stretch on one core.
    let ancestry: Vec<Result<Vec<EntityUID>, EntityUID>> = {
        let mut parents: Parents<'_> =
            HashMap::with_capacity_and_hasher(all.len(), Default::default());
        for e in &all {
            let e: &ast::Entity = e.borrow().as_ref();
            parents.insert(e.uid(), e);
        }
        if parents.len() != all.len() {
            return Err("an entity is given twice".into());
        }
        all.par_iter()
            .map(|e| {
                let e: &ast::Entity = e.borrow().as_ref();
                // Every entity is walked, kept or not: a cycle anywhere is an error.
                let found = ancestors(e.uid(), &parents)?;
                Ok(match keep(e) {
                    true => found.into_iter().cloned().collect(),
                    false => Vec::new(),
                })
            })
            .collect()
    };
    if let Some(u) = ancestry.iter().filter_map(|a| a.as_ref().err()).min() {
        return Err(format!("the hierarchy above {u} has a cycle"));
    }
    // Each given entity is dropped as soon as its closed copy is made, so the peak holds
    // one set, not two.
    let closed: Vec<Option<ast::Entity>> = all
        .into_par_iter()
        .zip(ancestry)
        .map(|(e, found)| {
            let e: &ast::Entity = e.borrow().as_ref();
            keep(e).then(|| {
                let mut owned = e.clone();
                // A parent stays a parent; the rest are indirect.
                for a in found.into_iter().flatten() {
                    owned.add_indirect_ancestor(a);
                }
                owned
            })
        })
        .collect();
    assume_closed(closed.into_iter().flatten(), actions)
}

/// `entities`, whose hierarchy is closed already (each holds all its ancestors), and the
/// schema's `actions` as one `Entities`. Fails when a uid is given twice.
pub(crate) fn assume_closed(
    entities: impl IntoIterator<Item = ast::Entity>,
    actions: impl IntoIterator<Item = Entity>,
) -> Result<Entities, String> {
    let actions = actions.into_iter().map(|a| a.as_ref().clone());
    cedar_policy_core::entities::Entities::from_entities(
        entities.into_iter().chain(actions),
        None::<&NoEntitiesSchema>,
        // Closed above; actions are the schema's, closed by it.
        TCComputation::AssumeAlreadyComputed,
        Extensions::all_available(),
    )
    .map(Entities::from)
    .map_err(|e| e.to_string())
}

/// Each given entity, by uid.
type Parents<'a> = HashMap<&'a EntityUID, &'a ast::Entity, foldhash::fast::RandomState>;

/// Every ancestor of `start`, direct or not; `Err(start)` when `start` is its own.
fn ancestors<'a>(
    start: &EntityUID,
    parents: &Parents<'a>,
) -> Result<FastSet<&'a EntityUID>, EntityUID> {
    let mut seen: FastSet<&EntityUID> = FastSet::default();
    let mut stack: Vec<&EntityUID> = match parents.get(start) {
        Some(e) => e.parents().collect(),
        None => Vec::new(),
    };
    while let Some(u) = stack.pop() {
        if u == start {
            return Err(start.clone());
        }
        if seen.insert(u) {
            // A parent not given (a dangling reference) is an ancestor with none of its own.
            if let Some(up) = parents.get(u) {
                stack.extend(up.parents());
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::{EntityUid, RestrictedExpression};
    use std::collections::HashSet;

    fn uid(t: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(t.parse().unwrap(), id.parse().unwrap())
    }

    fn entity(u: &EntityUid, parents: &[&EntityUid]) -> Entity {
        let attrs = [("n".to_owned(), RestrictedExpression::new_long(1))].into();
        Entity::new(
            u.clone(),
            attrs,
            parents.iter().map(|p| (*p).clone()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn the_closure_is_cedars_own() {
        // Containers in services in namespaces in a chain of clusters, a diamond (a
        // container in a service and a pod of the same namespace) and a dangling parent.
        let root = uid("Cluster", "root");
        let mid = uid("Cluster", "mid");
        let leaf = uid("Cluster", "leaf");
        let gone = uid("Cluster", "gone");
        let mut all = vec![
            entity(&root, &[]),
            entity(&mid, &[&root]),
            entity(&leaf, &[&mid, &gone]),
        ];
        for n in 0..40 {
            let ns = uid("Namespace", &format!("ns{n}"));
            let svc = uid("Service", &format!("ns{n}/web"));
            let pod = uid("Pod", &format!("ns{n}/web-0"));
            let c = uid("Container", &format!("ns{n}/web/main"));
            all.push(entity(&ns, &[if n % 2 == 0 { &leaf } else { &root }]));
            all.push(entity(&svc, &[&ns]));
            all.push(entity(&pod, &[&ns]));
            all.push(entity(&c, &[&svc, &pod]));
        }
        let ours = close(all.clone(), []).unwrap();
        let cedars = Entities::from_entities(all, None).unwrap();
        assert!(ours.deep_eq(&cedars), "the same entities and ancestors");
        let c = uid("Container", "ns0/web/main");
        let up: HashSet<EntityUid> = ours.ancestors(&c).unwrap().cloned().collect();
        assert!(up.contains(&root) && up.contains(&gone), "{up:?}");
        assert_eq!(
            up.len(),
            7,
            "service, pod, namespace and four clusters: {up:?}"
        );
    }

    /// Kept entities hold every ancestor, through ones left out; the others are gone; and a
    /// cycle among left-out entities is still refused.
    #[test]
    fn keeping_some_closes_over_all() {
        let root = uid("Cluster", "root");
        let ns = uid("Namespace", "ns");
        let svc = uid("Service", "ns/web");
        let c = uid("Container", "ns/web/main");
        let all = vec![
            entity(&root, &[]),
            entity(&ns, &[&root]),
            entity(&svc, &[&ns]),
            entity(&c, &[&svc]),
        ];
        let whole = close(all.clone(), []).unwrap();
        let is_namespace = |e: &ast::Entity| e.uid().entity_type().to_string() != "Namespace";
        let kept = close_kept(all, [], is_namespace).unwrap();
        assert!(kept.get(&ns).is_none(), "the namespace is left out");
        for u in [&root, &svc, &c] {
            let ours: &ast::Entity = kept.get(u).expect("kept").as_ref();
            let all: &ast::Entity = whole.get(u).unwrap().as_ref();
            assert!(ours.deep_eq(all), "{u} holds every ancestor");
        }
        let a = uid("Cluster", "a");
        let b = uid("Cluster", "b");
        let cycle = vec![entity(&a, &[&b]), entity(&b, &[&a]), entity(&ns, &[])];
        let only_ns = |e: &ast::Entity| e.uid().entity_type().to_string() == "Namespace";
        assert!(close_kept(cycle, [], only_ns).is_err());
    }

    #[test]
    fn a_cycle_is_refused_as_cedar_refuses_it() {
        let a = uid("Cluster", "a");
        let b = uid("Cluster", "b");
        let c = uid("Cluster", "c");
        let ns = uid("Namespace", "ns");
        let all = vec![
            entity(&a, &[&c]),
            entity(&b, &[&a]),
            entity(&c, &[&b]),
            entity(&ns, &[&a]),
        ];
        let err = close(all.clone(), []).unwrap_err();
        assert!(err.contains(r#"Cluster::"a""#), "{err}");
        assert!(
            Entities::from_entities(all, None).is_err(),
            "Cedar refuses it too"
        );
        let myself = vec![entity(&a, &[&a])];
        assert!(close(myself, []).is_err());
    }

    #[test]
    fn a_uid_given_twice_is_refused() {
        let a = uid("Cluster", "a");
        assert!(close(vec![entity(&a, &[]), entity(&a, &[])], []).is_err());
    }
}
