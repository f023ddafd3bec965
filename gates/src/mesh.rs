//! The bilateral mesh: a `Connect` decision for every declared edge, from either side's
//! declaration, never for all pairs.
//!
//! An edge `caller → callee` is declared when the caller lists the callee as an outbound
//! dependency or the callee lists the caller as an inbound caller. A one-sided declaration
//! is decided like any other edge (the baseline rule denies it) and reported with the side
//! that is missing. Re-planning after one workload changes re-decides only its edges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cedar_policy::Context;
use lattice_engine::project::{declared_peers, served_ports};
use lattice_engine::{Decision, ObjectKey, Query, Snapshot, World, action, uid};
use lattice_schemas::manifest::Object;

/// One declared edge and its decision.
#[derive(Clone, Debug)]
pub struct EdgeDecision {
    /// `namespace/name` of the caller.
    pub caller: String,
    pub callee: String,
    /// The callee ports the edge opens.
    pub ports: Vec<i64>,
    pub declared_by_caller: bool,
    pub declared_by_callee: bool,
    pub decision: Result<Decision, String>,
}

impl EdgeDecision {
    pub fn allowed(&self) -> bool {
        self.decision.as_ref().is_ok_and(|d| d.allowed)
    }

    /// Whether only one side declares the edge.
    pub fn one_sided(&self) -> bool {
        self.declared_by_caller != self.declared_by_callee
    }

    /// Why a denied edge is denied, in words.
    pub fn reason(&self) -> Option<String> {
        if self.allowed() {
            return None;
        }
        Some(match &self.decision {
            Err(e) => format!("cannot be decided: {e}"),
            Ok(d) if !d.determining.is_empty() => {
                let p = &d.determining[0];
                let advice = p
                    .annotations
                    .get("advice")
                    .map(|a| format!(": {a}"))
                    .unwrap_or_default();
                format!("forbidden by {}{advice}", p.id)
            }
            Ok(_) if !self.declared_by_callee => {
                format!("{} does not list {} as a caller", self.callee, self.caller)
            }
            Ok(_) if !self.declared_by_caller => format!(
                "{} does not list {} as a dependency",
                self.caller, self.callee
            ),
            Ok(_) => "no policy permits it".to_owned(),
        })
    }
}

/// Who declares what: the state the plan is kept from.
#[derive(Clone, Debug, Default)]
struct Declarations {
    /// workload → (outbound, inbound).
    by: HashMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    ports: HashMap<String, Vec<i64>>,
}

/// Every declared edge with its decision.
#[derive(Clone, Debug, Default)]
pub struct MeshPlan {
    pub edges: BTreeMap<(String, String), EdgeDecision>,
    declarations: Declarations,
}

fn workload_id(key: &ObjectKey) -> String {
    format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name
    )
}

impl MeshPlan {
    /// Plans every declared edge of `world`.
    pub fn plan(snapshot: &Snapshot, world: &World) -> MeshPlan {
        let mut plan = MeshPlan::default();
        for (key, object) in world.objects() {
            if object.is_workload() {
                plan.declare(workload_id(key), object);
            }
        }
        let edges: BTreeSet<(String, String)> = plan.all_edges();
        for (caller, callee) in edges {
            plan.decide(snapshot, &caller, &callee);
        }
        plan
    }

    /// Re-plans after `key` changed in `world`: only edges that touch it are re-decided.
    /// Returns how many edges were decided.
    pub fn replan(&mut self, snapshot: &Snapshot, world: &World, key: &ObjectKey) -> usize {
        let id = workload_id(key);
        let before = self.edges_of(&id);
        self.declarations.by.remove(&id);
        self.declarations.ports.remove(&id);
        if let Some(object) = world.get(key).filter(|o| o.is_workload()) {
            self.declare(id.clone(), object);
        }
        let after = self.edges_of(&id);
        for edge in before.difference(&after) {
            self.edges.remove(edge);
        }
        for (caller, callee) in &after {
            self.decide(snapshot, caller, callee);
        }
        after.len()
    }

    fn declare(&mut self, id: String, object: &Object) {
        self.declarations
            .ports
            .insert(id.clone(), served_ports(object).into_iter().collect());
        self.declarations.by.insert(id, declared_peers(object));
    }

    fn all_edges(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (id, (outbound, inbound)) in &self.declarations.by {
            out.extend(outbound.iter().map(|callee| (id.clone(), callee.clone())));
            out.extend(inbound.iter().map(|caller| (caller.clone(), id.clone())));
        }
        out
    }

    /// The declared edges `id` is on, from its own declarations and from others' naming it.
    fn edges_of(&self, id: &str) -> BTreeSet<(String, String)> {
        let mut out: BTreeSet<(String, String)> = self
            .edges
            .keys()
            .filter(|(a, b)| a == id || b == id)
            .cloned()
            .collect();
        if let Some((outbound, inbound)) = self.declarations.by.get(id) {
            out.extend(
                outbound
                    .iter()
                    .map(|callee| (id.to_owned(), callee.clone())),
            );
            out.extend(inbound.iter().map(|caller| (caller.clone(), id.to_owned())));
        }
        // Others that name `id` (their declarations are unchanged by this update).
        for (other, (outbound, inbound)) in &self.declarations.by {
            if outbound.contains(id) {
                out.insert((other.clone(), id.to_owned()));
            }
            if inbound.contains(id) {
                out.insert((id.to_owned(), other.clone()));
            }
        }
        // Keep only edges someone still declares.
        out.retain(|(caller, callee)| {
            self.declared_by_caller(caller, callee) || self.declared_by_callee(caller, callee)
        });
        out
    }

    fn declared_by_caller(&self, caller: &str, callee: &str) -> bool {
        self.declarations
            .by
            .get(caller)
            .is_some_and(|(o, _)| o.contains(callee))
    }

    fn declared_by_callee(&self, caller: &str, callee: &str) -> bool {
        self.declarations
            .by
            .get(callee)
            .is_some_and(|(_, i)| i.contains(caller))
    }

    fn decide(&mut self, snapshot: &Snapshot, caller: &str, callee: &str) {
        let ports = self
            .declarations
            .ports
            .get(callee)
            .cloned()
            .unwrap_or_default();
        let decision = Context::from_json_value(serde_json::json!({"ports": ports}), None)
            .map_err(|e| e.to_string())
            .and_then(|context| {
                let q = Query::new(
                    uid("Service", caller),
                    action("Connect"),
                    uid("Service", callee),
                )
                .with_context(context);
                snapshot.decide(&q).map_err(|e| e.to_string())
            });
        let edge = EdgeDecision {
            caller: caller.to_owned(),
            callee: callee.to_owned(),
            ports,
            declared_by_caller: self.declared_by_caller(caller, callee),
            declared_by_callee: self.declared_by_callee(caller, callee),
            decision,
        };
        self.edges
            .insert((caller.to_owned(), callee.to_owned()), edge);
    }

    pub fn allowed(&self) -> impl Iterator<Item = &EdgeDecision> {
        self.edges.values().filter(|e| e.allowed())
    }

    pub fn denied(&self) -> impl Iterator<Item = &EdgeDecision> {
        self.edges.values().filter(|e| !e.allowed())
    }
}
