//! The bilateral mesh: a `Connect` decision for every declared edge, from either side's
//! declaration, never for all pairs.
//!
//! An edge `caller → callee` is declared when the caller lists the callee as an outbound
//! dependency or the callee lists the caller as an inbound caller. A one-sided declaration
//! is decided like any other edge (the baseline rule denies it) and reported with the side
//! that is missing. Re-planning after one workload changes re-decides only its edges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cedar_policy::Context;
use lattice_engine::attr::Rx;
use lattice_engine::project::{declared_peers, served_ports};
use lattice_engine::{Decision, ObjectKey, Query, Snapshot, World, action, uid};
use lattice_schemas::manifest::Object;
use rayon::prelude::*;

/// The `Connect` question for the edge `caller → callee` opening `ports`.
pub fn connect_query(caller: &str, callee: &str, ports: &[i64]) -> Query {
    connect_query_in(caller, callee, ports_context(ports))
}

/// The context of a `Connect` question: the callee's ports.
fn ports_context(ports: &[i64]) -> Context {
    let ports = Rx::new_set(ports.iter().map(|p| Rx::new_long(*p)));
    lattice_engine::attr::context([("ports".to_owned(), ports)])
        .expect("a set of integers is a valid context")
}

fn connect_query_in(caller: &str, callee: &str, context: Context) -> Query {
    Query::new(
        uid("Service", caller),
        action("Connect"),
        uid("Service", callee),
    )
    .with_context(context)
}

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
    /// The edge a `Connect` query asks about, decided on `snapshot`; `declared` is (by the
    /// caller, by the callee). An engine error is kept as the decision, which denies.
    ///
    /// Every query here is [`connect_query_in`]'s, of one shape (two services and a set of
    /// ports) that a test checks against the schema, so it is decided without the request
    /// being checked again each time (50,000 checks were a tenth of a large plan).
    fn decided(
        snapshot: &Snapshot,
        query: &Query,
        ports: Vec<i64>,
        declared: (bool, bool),
    ) -> EdgeDecision {
        EdgeDecision {
            caller: query.principal.id().unescaped().to_owned(),
            callee: query.resource.id().unescaped().to_owned(),
            ports,
            declared_by_caller: declared.0,
            declared_by_callee: declared.1,
            decision: snapshot.decide_prechecked(query).map_err(|e| e.to_string()),
        }
    }

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
            Ok(d) if !d.determining.is_empty() => forbidden_by(d),
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

/// A deny by forbid in words: the first deciding policy and its `@advice`.
pub(crate) fn forbidden_by(d: &Decision) -> String {
    let Some(p) = d.determining.first() else {
        return "no policy permits it".to_owned();
    };
    let advice = p
        .annotations
        .get("advice")
        .map(|a| format!(": {a}"))
        .unwrap_or_default();
    format!("forbidden by {}{advice}", p.id)
}

/// Who declares what: the state the plan is kept from.
#[derive(Clone, Debug, Default)]
struct Declarations {
    /// workload → (outbound, inbound).
    by: HashMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    ports: HashMap<String, Vec<i64>>,
    /// workload → the context of `Connect` questions to it (its ports), built once.
    contexts: HashMap<String, Context>,
}

impl Declarations {
    /// The indexes of `declared`, each map built on a core of its own (the later of two
    /// declarations with one id stands, as [`Declarations::declare`] leaves it).
    fn of(declared: Vec<Declared>) -> Declarations {
        let n = declared.len();
        let (mut by, mut ports, mut contexts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for d in declared {
            ports.push((d.id.clone(), d.ports));
            contexts.push((d.id.clone(), d.context));
            by.push((d.id, d.peers));
        }
        let ((by, ports), contexts) = rayon::join(
            || rayon::join(|| by.into_iter().collect(), || ports.into_iter().collect()),
            || contexts.into_iter().collect(),
        );
        Declarations {
            by,
            ports,
            contexts,
        }
    }

    fn declare(&mut self, d: Declared) {
        self.ports.insert(d.id.clone(), d.ports);
        self.contexts.insert(d.id.clone(), d.context);
        self.by.insert(d.id, d.peers);
    }
}

/// Every declared edge with its decision.
#[derive(Clone, Debug, Default)]
pub struct MeshPlan {
    /// (caller, callee) → decision.
    edges: BTreeMap<(String, String), EdgeDecision>,
    /// callee → callers with an edge in `edges`, so a workload's edges are found without
    /// a scan (deriving one workload must not cost a pass over 50,000 edges).
    callers: HashMap<String, BTreeSet<String>>,
    declarations: Declarations,
}

/// A workload's declared peers: (outbound, inbound).
type Peers = (BTreeSet<String>, BTreeSet<String>);

/// What one workload declares to the mesh.
struct Declared {
    id: String,
    ports: Vec<i64>,
    context: Context,
    peers: Peers,
}

impl Declared {
    /// What each of `workloads` declares, read on every core. Workloads mostly serve the
    /// same few port lists, so each list's `Connect` context is built once and shared (a
    /// context is cheap to clone, dear to build: 10,000 of them had cost 30 ms).
    fn all(workloads: &[(&ObjectKey, &Object)]) -> Vec<Declared> {
        let bare: Vec<(String, Vec<i64>, Peers)> = workloads
            .par_iter()
            .map(|(key, object)| {
                let ports: Vec<i64> = served_ports(object).into_iter().collect();
                (workload_id(key), ports, declared_peers(object))
            })
            .collect();
        let mut contexts: HashMap<Vec<i64>, Context> = HashMap::new();
        bare.into_iter()
            .map(|(id, ports, peers)| {
                let context = contexts
                    .entry(ports.clone())
                    .or_insert_with(|| ports_context(&ports))
                    .clone();
                Declared {
                    id,
                    ports,
                    context,
                    peers,
                }
            })
            .collect()
    }

    fn of(id: String, object: &Object) -> Declared {
        let ports: Vec<i64> = served_ports(object).into_iter().collect();
        Declared {
            id,
            context: ports_context(&ports),
            ports,
            peers: declared_peers(object),
        }
    }
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
    ///
    /// Built in bulk: declarations read on every core, and every name an edge can have
    /// sorted once and numbered in that order, so that edges are pairs of numbers that sort
    /// as their names do. Who declares an edge is known where it is found (a caller's
    /// outbound list or a callee's inbound one), so no edge looks a declaration up. Edges
    /// are decided on every core, and the maps are built from sorted runs (a `BTreeMap`
    /// collected from a sorted iterator is built bottom-up, without a search per edge). At
    /// 50,000 edges the bookkeeping around the decisions had cost as much as the decisions.
    pub fn plan(snapshot: &Snapshot, world: &World) -> MeshPlan {
        let workloads: Vec<(&ObjectKey, &Object)> =
            world.objects().filter(|(_, o)| o.is_workload()).collect();
        let declared = Declared::all(&workloads);
        let mut names: Vec<&str> = declared
            .par_iter()
            .flat_map_iter(|d| {
                let (outbound, inbound) = &d.peers;
                std::iter::once(d.id.as_str())
                    .chain(outbound.iter().map(String::as_str))
                    .chain(inbound.iter().map(String::as_str))
            })
            .collect();
        names.par_sort_unstable();
        names.dedup();
        let number: HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as u32))
            .collect();
        // Two workloads with one id (kinds differ, namespace and name do not): the later
        // one's declarations stand, as a re-plan's `declare` leaves them.
        let mut declaration: Vec<Option<u32>> = vec![None; names.len()];
        for (i, d) in declared.iter().enumerate() {
            declaration[number[d.id.as_str()] as usize] = Some(i as u32);
        }
        let standing: Vec<&Declared> = declaration
            .iter()
            .flatten()
            .map(|&i| &declared[i as usize])
            .collect();
        // (caller, callee, declared by the caller, declared by the callee)
        let number = &number;
        let mut edges: Vec<(u32, u32, bool, bool)> = standing
            .par_iter()
            .flat_map_iter(|d| {
                let me = number[d.id.as_str()];
                let (outbound, inbound) = &d.peers;
                let calls = outbound
                    .iter()
                    .map(move |callee| (me, number[callee.as_str()], true, false));
                let callers = inbound
                    .iter()
                    .map(move |caller| (number[caller.as_str()], me, false, true));
                calls.chain(callers)
            })
            .collect();
        edges.par_sort_unstable();
        edges.dedup_by(|later, kept| {
            let same = (later.0, later.1) == (kept.0, kept.1);
            if same {
                kept.2 |= later.2;
                kept.3 |= later.3;
            }
            same
        });
        let no_ports = ports_context(&[]);
        // Edges are decided independently, on every core.
        let decided: Vec<EdgeDecision> = edges
            .par_iter()
            .map(|&(caller, callee, by_caller, by_callee)| {
                let (caller, to) = (names[caller as usize], declaration[callee as usize]);
                let callee = names[callee as usize];
                let to = to.map(|i| &declared[i as usize]);
                let query =
                    connect_query_in(caller, callee, to.map_or(&no_ports, |d| &d.context).clone());
                let ports = to.map(|d| d.ports.clone()).unwrap_or_default();
                EdgeDecision::decided(snapshot, &query, ports, (by_caller, by_callee))
            })
            .collect();
        // The two edge indexes are independent: each is built on a core of its own.
        let callers = || -> HashMap<String, BTreeSet<String>> {
            let mut by_callee: Vec<(u32, u32)> = edges.iter().map(|e| (e.1, e.0)).collect();
            by_callee.par_sort_unstable();
            by_callee
                .chunk_by(|a, b| a.0 == b.0)
                .map(|run| {
                    let callers = run.iter().map(|e| names[e.1 as usize].to_owned());
                    (names[run[0].0 as usize].to_owned(), callers.collect())
                })
                .collect()
        };
        // Already in key order (numbers sort as names do), which the map's bulk build
        // finds in one pass.
        let edges = || -> BTreeMap<(String, String), EdgeDecision> {
            decided
                .into_iter()
                .map(|e| ((e.caller.clone(), e.callee.clone()), e))
                .collect()
        };
        let (edges, callers) = rayon::join(edges, callers);
        drop((standing, names));
        let declarations = Declarations::of(declared);
        MeshPlan {
            edges,
            callers,
            declarations,
        }
    }

    /// Re-plans after `key` changed in `world`: only edges that touch it are re-decided.
    /// Returns how many edges were decided.
    pub fn replan(&mut self, snapshot: &Snapshot, world: &World, key: &ObjectKey) -> usize {
        let id = workload_id(key);
        let before = self.edges_of(&id);
        self.declarations.by.remove(&id);
        self.declarations.ports.remove(&id);
        self.declarations.contexts.remove(&id);
        if let Some(object) = world.get(key).filter(|o| o.is_workload()) {
            self.declare(Declared::of(id.clone(), object));
        }
        let after = self.edges_of(&id);
        for edge in before.difference(&after) {
            self.remove(edge);
        }
        for (caller, callee) in &after {
            self.decide(snapshot, caller, callee);
        }
        after.len()
    }

    fn declare(&mut self, d: Declared) {
        self.declarations.declare(d);
    }

    /// The declared edges `id` is on, from its own declarations and from others' naming it.
    /// Others' declarations are already edges of the plan (every declared edge is), so the
    /// plan's own indexes find them: no pass over every edge or declaration.
    fn edges_of(&self, id: &str) -> BTreeSet<(String, String)> {
        let mut out: BTreeSet<(String, String)> = self
            .touching(id)
            .into_iter()
            .map(|e| (e.caller.clone(), e.callee.clone()))
            .collect();
        if let Some((outbound, inbound)) = self.declarations.by.get(id) {
            out.extend(
                outbound
                    .iter()
                    .map(|callee| (id.to_owned(), callee.clone())),
            );
            out.extend(inbound.iter().map(|caller| (caller.clone(), id.to_owned())));
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
        let edge = self.edge(snapshot, caller, callee);
        self.insert((caller.to_owned(), callee.to_owned()), edge);
    }

    fn insert(&mut self, key: (String, String), edge: EdgeDecision) {
        self.callers
            .entry(key.1.clone())
            .or_default()
            .insert(key.0.clone());
        self.edges.insert(key, edge);
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(callers) = self.callers.get_mut(&key.1) {
            callers.remove(&key.0);
            if callers.is_empty() {
                self.callers.remove(&key.1);
            }
        }
        self.edges.remove(key);
    }

    /// The `Connect` question for `caller → callee`, with the callee's declared ports.
    pub fn connect_query(&self, caller: &str, callee: &str) -> Query {
        match self.declarations.contexts.get(callee) {
            Some(c) => connect_query_in(caller, callee, c.clone()),
            None => connect_query(caller, callee, &[]),
        }
    }

    /// Every declared edge, by (caller, callee).
    pub fn edges(&self) -> impl Iterator<Item = &EdgeDecision> {
        self.edges.values()
    }

    /// The edge `caller → callee`, if declared.
    pub fn edge_between(&self, caller: &str, callee: &str) -> Option<&EdgeDecision> {
        self.edges.get(&(caller.to_owned(), callee.to_owned()))
    }

    /// How many edges are declared.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The edges `id` is on, as caller or as callee, in (caller, callee) order.
    pub fn touching(&self, id: &str) -> Vec<&EdgeDecision> {
        let as_caller = self
            .edges
            .range((id.to_owned(), String::new())..)
            .take_while(move |((caller, _), _)| caller == id)
            .map(|(_, e)| e);
        let as_callee = self
            .callers
            .get(id)
            .into_iter()
            .flatten()
            .filter(move |caller| caller.as_str() != id)
            .filter_map(move |caller| self.edge_between(caller, id));
        let mut out: Vec<&EdgeDecision> = as_caller.chain(as_callee).collect();
        out.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
        out
    }

    /// Decides the declared edges `edges` again on `snapshot` (a policy change reached
    /// them); undeclared ones are skipped.
    pub fn redecide(&mut self, snapshot: &Snapshot, edges: &[(String, String)]) {
        for (caller, callee) in edges {
            if self.edges.contains_key(&(caller.clone(), callee.clone())) {
                self.decide(snapshot, caller, callee);
            }
        }
    }

    /// Replaces the decision on a declared edge (a what-if recomputed it); false if the
    /// edge is not declared.
    pub fn set_decision(
        &mut self,
        caller: &str,
        callee: &str,
        decision: Result<Decision, String>,
    ) -> bool {
        match self.edges.get_mut(&(caller.to_owned(), callee.to_owned())) {
            Some(e) => {
                e.decision = decision;
                true
            }
            None => false,
        }
    }

    /// The decision on one declared edge.
    fn edge(&self, snapshot: &Snapshot, caller: &str, callee: &str) -> EdgeDecision {
        let ports = self
            .declarations
            .ports
            .get(callee)
            .cloned()
            .unwrap_or_default();
        let declared = (
            self.declared_by_caller(caller, callee),
            self.declared_by_callee(caller, callee),
        );
        EdgeDecision::decided(
            snapshot,
            &self.connect_query(caller, callee),
            ports,
            declared,
        )
    }

    pub fn allowed(&self) -> impl Iterator<Item = &EdgeDecision> {
        self.edges.values().filter(|e| e.allowed())
    }

    pub fn denied(&self) -> impl Iterator<Item = &EdgeDecision> {
        self.edges.values().filter(|e| !e.allowed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one shape of `Connect` question the plan decides without checking each request:
    /// Cedar's own schema check passes it, with ports and without.
    #[test]
    fn connect_questions_fit_the_schema() {
        let schema = lattice_schemas::cedar::schema();
        for ports in [&[][..], &[8080][..], &[80, 443, 9090][..]] {
            let q = connect_query_in("shop/web", "pay/api", ports_context(ports));
            cedar_policy::Request::new(q.principal, q.action, q.resource, q.context, Some(schema))
                .unwrap_or_else(|e| panic!("ports {ports:?}: {e}"));
        }
    }
}
