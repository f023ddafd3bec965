//! The policy index: a decision evaluates only the policies whose scope can match it.
//!
//! Policies are bucketed by concrete action (groups expanded through the schema's action
//! hierarchy, `action` unconstrained meaning every action), then by the literal in their
//! principal scope, then by the literal in their resource scope. A request probes the buckets
//! its principal and resource can match (themselves, their ancestors, their type), evaluates
//! each non-empty bucket as its own policy set, and combines the answers with Cedar's own
//! rules: any satisfied `forbid` denies and is the reason; otherwise any satisfied `permit`
//! allows and is the reason; errors are collected from every policy that was evaluated. A
//! policy whose scope does not match is neither satisfied nor erroring in Cedar, so leaving it
//! out changes nothing: indexed and unindexed evaluation agree exactly (a differential
//! property test holds the index to that).
//!
//! Why cedar-policy-core beside cedar-policy: the public `Authorizer` rebuilds each policy's
//! condition expression (its scope and body joined) on every call, evaluates it through
//! partial evaluation, and answers with a response per policy set. A bucket here keeps its
//! policies' conditions, built once when the bucket is, and a request evaluates every
//! candidate with one core `Evaluator`, which is what `Authorizer` itself does per policy
//! (`interpret` of the condition, `get_as_bool` of the value). That is most of a decision's
//! cost: one request against one policy took 2.4 µs through `Authorizer` and 1.0 µs here.
//! The core crate is pinned to cedar-policy's exact version, and the differential property
//! test holds this evaluation to `Authorizer::is_authorized` on the whole set (decision,
//! reasons and error messages), as the conformance corpus holds it to Cedar's own answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Effect, Entities, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint, Schema,
};
use cedar_policy_core::ast;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

/// Maps probed on every decision: keyed by entity uids, which SipHash made a third of
/// finding a request's candidates. Nothing here is keyed by untrusted input an attacker
/// could shape into collisions that matter: keys are the policies' own scope literals.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The literal a scope constrains to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ScopeKey {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl From<PrincipalConstraint> for ScopeKey {
    fn from(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => ScopeKey::Any,
            PrincipalConstraint::Eq(u) => ScopeKey::Eq(u),
            PrincipalConstraint::In(u) => ScopeKey::In(u),
            PrincipalConstraint::Is(t) => ScopeKey::Is(t),
            PrincipalConstraint::IsIn(t, u) => ScopeKey::IsIn(t, u),
        }
    }
}

impl From<ResourceConstraint> for ScopeKey {
    fn from(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => ScopeKey::Any,
            ResourceConstraint::Eq(u) => ScopeKey::Eq(u),
            ResourceConstraint::In(u) => ScopeKey::In(u),
            ResourceConstraint::Is(t) => ScopeKey::Is(t),
            ResourceConstraint::IsIn(t, u) => ScopeKey::IsIn(t, u),
        }
    }
}

/// Values by the scope literal they sit under, split by the literal's kind so that a probe
/// hashes only for kinds some policy uses: a request against per-service permits
/// (`principal == …`, `resource` unconstrained) costs one lookup, not one per ancestor.
#[derive(Clone, Debug)]
struct ScopeTable<V> {
    any: Option<V>,
    eq: FastMap<EntityUid, V>,
    is: FastMap<EntityTypeName, V>,
    in_: FastMap<EntityUid, V>,
    is_in: FastMap<EntityTypeName, FastMap<EntityUid, V>>,
}

impl<V> Default for ScopeTable<V> {
    fn default() -> Self {
        ScopeTable {
            any: None,
            eq: FastMap::default(),
            is: FastMap::default(),
            in_: FastMap::default(),
            is_in: FastMap::default(),
        }
    }
}

impl<V: Default> ScopeTable<V> {
    fn entry(&mut self, key: ScopeKey) -> &mut V {
        match key {
            ScopeKey::Any => self.any.get_or_insert_with(V::default),
            ScopeKey::Eq(u) => self.eq.entry(u).or_default(),
            ScopeKey::Is(t) => self.is.entry(t).or_default(),
            ScopeKey::In(u) => self.in_.entry(u).or_default(),
            ScopeKey::IsIn(t, u) => self.is_in.entry(t).or_default().entry(u).or_default(),
        }
    }
}

impl<V> ScopeTable<V> {
    fn get(&self, key: &ScopeKey) -> Option<&V> {
        match key {
            ScopeKey::Any => self.any.as_ref(),
            ScopeKey::Eq(u) => self.eq.get(u),
            ScopeKey::Is(t) => self.is.get(t),
            ScopeKey::In(u) => self.in_.get(u),
            ScopeKey::IsIn(t, u) => self.is_in.get(t)?.get(u),
        }
    }

    fn insert(&mut self, key: ScopeKey, value: V) {
        match key {
            ScopeKey::Any => self.any = Some(value),
            ScopeKey::Eq(u) => drop(self.eq.insert(u, value)),
            ScopeKey::Is(t) => drop(self.is.insert(t, value)),
            ScopeKey::In(u) => drop(self.in_.insert(u, value)),
            ScopeKey::IsIn(t, u) => drop(self.is_in.entry(t).or_default().insert(u, value)),
        }
    }

    fn remove(&mut self, key: &ScopeKey) {
        match key {
            ScopeKey::Any => self.any = None,
            ScopeKey::Eq(u) => drop(self.eq.remove(u)),
            ScopeKey::Is(t) => drop(self.is.remove(t)),
            ScopeKey::In(u) => drop(self.in_.remove(u)),
            ScopeKey::IsIn(t, u) => {
                if let Some(by) = self.is_in.get_mut(t) {
                    by.remove(u);
                    if by.is_empty() {
                        self.is_in.remove(t);
                    }
                }
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.any
            .iter()
            .chain(self.eq.values())
            .chain(self.is.values())
            .chain(self.in_.values())
            .chain(self.is_in.values().flat_map(FastMap::values))
    }

    /// Every value whose key `uid` matches: itself, its type, it or an ancestor as `in`.
    fn probe<'s>(&'s self, uid: &EntityUid, entities: &Entities, found: &mut impl FnMut(&'s V)) {
        if let Some(v) = &self.any {
            found(v);
        }
        if !self.eq.is_empty()
            && let Some(v) = self.eq.get(uid)
        {
            found(v);
        }
        if !self.is.is_empty()
            && let Some(v) = self.is.get(uid.type_name())
        {
            found(v);
        }
        if !self.in_.is_empty() {
            for a in std::iter::once(uid).chain(entities.ancestors(uid).into_iter().flatten()) {
                if let Some(v) = self.in_.get(a) {
                    found(v);
                }
            }
        }
        if let Some(by) = self.is_in.get(uid.type_name()) {
            for a in std::iter::once(uid).chain(entities.ancestors(uid).into_iter().flatten()) {
                if let Some(v) = by.get(a) {
                    found(v);
                }
            }
        }
    }
}

/// What evaluating a request found, in Cedar's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawOutcome {
    pub decision: Decision,
    /// The determining policies: satisfied forbids on a deny, satisfied permits on an allow.
    pub reasons: BTreeSet<PolicyId>,
    /// Policies whose evaluation errored, with the message.
    pub errors: BTreeMap<PolicyId, String>,
}

/// One bucket's policies: as a set (what callers see) and compiled for evaluation.
#[derive(Debug)]
struct Bucket {
    set: PolicySet,
    compiled: Vec<Compiled>,
}

/// A policy ready to evaluate: what of its condition a candidate still has to meet, built
/// once.
#[derive(Debug)]
struct Compiled {
    id: PolicyId,
    effect: Effect,
    policy: ast::Policy,
    condition: ast::Expr,
}

impl Bucket {
    fn new(set: PolicySet) -> Bucket {
        let compiled = set
            .policies()
            .map(|p| {
                let policy: &ast::Policy = p.as_ref();
                Compiled {
                    id: p.id().clone(),
                    effect: p.effect(),
                    condition: unmet_condition(policy),
                    policy: policy.clone(),
                }
            })
            .collect();
        Bucket { set, compiled }
    }
}

/// `policy`'s condition less the scope constraints its bucket already met. Cedar's condition
/// is `principal && action && resource && body`. A request reaches a bucket only when its
/// principal and resource meet the bucket's keys exactly as Cedar reads them (the same uid,
/// its type, or an ancestor in the same entities Cedar evaluates with), so those two parts
/// are true for every candidate, and they cannot error. An `action ==` or an unconstrained
/// action is met by the bucket's action too. `action in [...]` is kept: its buckets come
/// from the schema's action groups, and Cedar reads the groups from the entities. Leaving
/// out what is true changes no answer or error, and saves comparing `principal is …`,
/// `action == …` and `resource == …` on every evaluation: `plan` on the 10,000-service
/// world took 0.84x the time warm, paired. The differential property test holds this to
/// `Authorizer` on every scope form (and fails when `action in` is left out too).
fn unmet_condition(policy: &ast::Policy) -> ast::Expr {
    let body = policy
        .non_scope_constraints()
        .cloned()
        .unwrap_or_else(|| ast::Expr::val(true));
    match policy.action_constraint() {
        ast::ActionConstraint::Any | ast::ActionConstraint::Eq(_) => body,
        action => ast::Expr::and(action.as_expr(), body),
    }
}

/// Buckets: action → principal key → resource key → policies. Tables and buckets are shared
/// between snapshots and copied on write, so a policy change copies only the tables on the
/// path to the buckets its policies sit in (at 10,000 per-service permits, copying every
/// table had made a one-policy change half again as slow).
type Buckets = FastMap<EntityUid, Arc<ScopeTable<Arc<ScopeTable<Arc<Bucket>>>>>>;

/// Policies indexed for evaluation.
#[derive(Clone, Debug, Default)]
pub struct PolicyIndex {
    buckets: Buckets,
    /// Every policy as one set, built on first use (unindexed evaluation, tests, benches).
    all: OnceLock<PolicySet>,
    len: usize,
}

/// One bucket's address: action, principal key, resource key.
type BucketKey = (EntityUid, ScopeKey, ScopeKey);

/// Where a policy sits: every (action, principal key, resource key) bucket.
fn bucket_keys(
    policy: &Policy,
    actions: &BTreeMap<EntityUid, BTreeSet<EntityUid>>,
) -> Vec<(EntityUid, ScopeKey, ScopeKey)> {
    let concrete: Vec<EntityUid> = match policy.action_constraint() {
        ActionConstraint::Any => actions.keys().cloned().collect(),
        ActionConstraint::Eq(a) => vec![a],
        ActionConstraint::In(groups) => {
            let mut set: BTreeSet<EntityUid> = BTreeSet::new();
            for g in groups {
                set.extend(
                    actions
                        .iter()
                        .filter(|(_, anc)| anc.contains(&g))
                        .map(|(a, _)| a.clone()),
                );
            }
            set.into_iter().collect()
        }
    };
    let p: ScopeKey = policy.principal_constraint().into();
    let r: ScopeKey = policy.resource_constraint().into();
    concrete
        .into_iter()
        .map(|a| (a, p.clone(), r.clone()))
        .collect()
}

impl PolicyIndex {
    /// Indexes `policies`; `schema` supplies the actions and their groups.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>, schema: &Schema) -> PolicyIndex {
        PolicyIndex::default().with_changes(std::iter::empty(), policies, schema)
    }

    /// This index with `removed` taken out and `added` put in. Only the buckets those
    /// policies sit in are rebuilt; every other bucket is shared with `self`.
    pub fn with_changes<'a, 'b>(
        &self,
        removed: impl IntoIterator<Item = &'a Policy>,
        added: impl IntoIterator<Item = &'b Policy>,
        schema: &Schema,
    ) -> PolicyIndex {
        let actions = action_members(schema);
        let mut buckets = self.buckets.clone();
        let mut len = self.len;
        // Collect the edits per bucket so each touched bucket is copied once.
        let mut edits: HashMap<BucketKey, (Vec<PolicyId>, Vec<Policy>)> = HashMap::new();
        for policy in removed {
            len = len.saturating_sub(1);
            for key in bucket_keys(policy, &actions) {
                edits.entry(key).or_default().0.push(policy.id().clone());
            }
        }
        for policy in added {
            len += 1;
            for key in bucket_keys(policy, &actions) {
                edits.entry(key).or_default().1.push(policy.clone());
            }
        }
        for ((a, p, r), (remove, add)) in edits {
            let by_principal = Arc::make_mut(buckets.entry(a).or_default());
            let by_resource = Arc::make_mut(by_principal.entry(p));
            let mut set = by_resource
                .get(&r)
                .map(|b| b.set.clone())
                .unwrap_or_default();
            for id in remove {
                let _ = set.remove_static(id);
            }
            for policy in add {
                // Ids are unique in the store, so adding cannot fail.
                let _ = set.add(policy);
            }
            if set.is_empty() {
                by_resource.remove(&r);
            } else {
                by_resource.insert(r, Arc::new(Bucket::new(set)));
            }
        }
        PolicyIndex {
            buckets,
            all: OnceLock::new(),
            len,
        }
    }

    /// How many policies are indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every indexed policy as one set.
    pub fn policy_set(&self) -> &PolicySet {
        self.all.get_or_init(|| {
            let mut all = PolicySet::new();
            for bucket in self
                .buckets
                .values()
                .flat_map(|by_principal| by_principal.values())
                .flat_map(|by_resource| by_resource.values())
            {
                for p in bucket.set.policies() {
                    // A policy sits in several buckets; the first add wins.
                    let _ = all.add(p.clone());
                }
            }
            all
        })
    }

    /// The buckets a request can match.
    fn candidates<'s>(
        &'s self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<&'s Bucket> {
        let Some(by_principal) = self.buckets.get(action) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        by_principal.probe(principal, entities, &mut |by_resource| {
            by_resource.probe(resource, entities, &mut |bucket| out.push(&**bucket));
        });
        out
    }

    /// The policies whose scope matches a request (the candidates an indexed evaluation
    /// looks at).
    pub fn scope_matches<'s>(
        &'s self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<&'s Policy> {
        self.candidates(principal, action, resource, entities)
            .into_iter()
            .flat_map(|b| b.set.policies())
            .collect()
    }

    /// How many policies an indexed evaluation of this request looks at.
    pub fn candidate_count(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> usize {
        self.candidates(principal, action, resource, entities)
            .iter()
            .map(|b| b.compiled.len())
            .sum()
    }

    /// Evaluates a request against the policies whose scope can match it: every candidate
    /// with one evaluator, as `Authorizer` evaluates each policy of a set.
    pub fn evaluate(
        &self,
        request: &Request,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> RawOutcome {
        let mut forbids = BTreeSet::new();
        let mut permits = BTreeSet::new();
        let mut errors = BTreeMap::new();
        let candidates = self.candidates(principal, action, resource, entities);
        if candidates.is_empty() {
            return combine(forbids, permits, errors);
        }
        let core: &ast::Request = request.as_ref();
        let evaluator =
            Evaluator::new(core.clone(), entities.as_ref(), Extensions::all_available());
        for c in candidates.iter().flat_map(|b| &b.compiled) {
            // A condition is a chain of `&&`, which is a boolean or an error; anything
            // else is Cedar's own type error, from its own evaluation of the policy.
            let satisfied = match evaluator.interpret(&c.condition, c.policy.env()) {
                Ok(ast::Value {
                    value: ast::ValueKind::Lit(ast::Literal::Bool(b)),
                    ..
                }) => Ok(b),
                Ok(_) => evaluator.evaluate(&c.policy),
                Err(e) => Err(e),
            };
            match satisfied {
                Ok(true) if c.effect == Effect::Forbid => {
                    forbids.insert(c.id.clone());
                }
                Ok(true) => {
                    permits.insert(c.id.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    errors.insert(c.id.clone(), e.to_string());
                }
            }
        }
        combine(forbids, permits, errors)
    }

    /// Evaluates a request against every policy, as plain Cedar does.
    pub fn evaluate_unindexed(&self, request: &Request, entities: &Entities) -> RawOutcome {
        outcome(&Authorizer::new().is_authorized(request, self.policy_set(), entities))
    }
}

fn combine(
    forbids: BTreeSet<PolicyId>,
    permits: BTreeSet<PolicyId>,
    errors: BTreeMap<PolicyId, String>,
) -> RawOutcome {
    if !forbids.is_empty() {
        RawOutcome {
            decision: Decision::Deny,
            reasons: forbids,
            errors,
        }
    } else if !permits.is_empty() {
        RawOutcome {
            decision: Decision::Allow,
            reasons: permits,
            errors,
        }
    } else {
        RawOutcome {
            decision: Decision::Deny,
            reasons: BTreeSet::new(),
            errors,
        }
    }
}

/// Cedar's response as a [`RawOutcome`].
pub fn outcome(response: &cedar_policy::Response) -> RawOutcome {
    let errors = response
        .diagnostics()
        .errors()
        .map(|e| {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            (pe.policy_id().clone(), pe.inner().to_string())
        })
        .collect();
    RawOutcome {
        decision: response.decision(),
        reasons: response.diagnostics().reason().cloned().collect(),
        errors,
    }
}

/// Every action in the schema with the groups it belongs to (itself included).
fn action_members(schema: &Schema) -> BTreeMap<EntityUid, BTreeSet<EntityUid>> {
    let Ok(actions) = schema.action_entities() else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for a in schema.actions() {
        let mut groups: BTreeSet<EntityUid> = actions
            .ancestors(a)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        groups.insert(a.clone());
        out.insert(a.clone(), groups);
    }
    out
}
