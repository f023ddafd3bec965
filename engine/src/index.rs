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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Entities, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint, Schema,
};

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

/// The keys of the scope buckets an entity can match.
fn probe_keys(uid: &EntityUid, entities: &Entities) -> Vec<ScopeKey> {
    let ty = uid.type_name().clone();
    let mut keys = vec![
        ScopeKey::Any,
        ScopeKey::Eq(uid.clone()),
        ScopeKey::Is(ty.clone()),
    ];
    let ancestors = entities.ancestors(uid).into_iter().flatten().cloned();
    for a in std::iter::once(uid.clone()).chain(ancestors) {
        keys.push(ScopeKey::In(a.clone()));
        keys.push(ScopeKey::IsIn(ty.clone(), a));
    }
    keys
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

/// Buckets: action → principal key → resource key → policies. Buckets are shared between
/// snapshots, so a policy change rebuilds only the buckets its policies sit in.
type Buckets = HashMap<EntityUid, HashMap<ScopeKey, HashMap<ScopeKey, Arc<PolicySet>>>>;

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
            let by_resource = buckets.entry(a).or_default().entry(p).or_default();
            let mut set = by_resource
                .get(&r)
                .map(|s| (**s).clone())
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
                by_resource.insert(r, Arc::new(set));
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
            for set in self
                .buckets
                .values()
                .flat_map(HashMap::values)
                .flat_map(HashMap::values)
            {
                for p in set.policies() {
                    // A policy sits in several buckets; the first add wins.
                    let _ = all.add(p.clone());
                }
            }
            all
        })
    }

    /// The policy sets a request can match.
    fn candidates<'s>(
        &'s self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<&'s PolicySet> {
        let Some(by_principal) = self.buckets.get(action) else {
            return Vec::new();
        };
        let r_keys = probe_keys(resource, entities);
        let mut out = Vec::new();
        for pk in probe_keys(principal, entities) {
            if let Some(by_resource) = by_principal.get(&pk) {
                for rk in &r_keys {
                    if let Some(set) = by_resource.get(rk) {
                        out.push(&**set);
                    }
                }
            }
        }
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
            .flat_map(|s| s.policies())
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
            .map(|s| s.policies().count())
            .sum()
    }

    /// Evaluates a request against the policies whose scope can match it.
    pub fn evaluate(
        &self,
        request: &Request,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> RawOutcome {
        let authorizer = Authorizer::new();
        let mut forbids = BTreeSet::new();
        let mut permits = BTreeSet::new();
        let mut errors = BTreeMap::new();
        for set in self.candidates(principal, action, resource, entities) {
            let response = authorizer.is_authorized(request, set, entities);
            let reasons = response.diagnostics().reason().cloned();
            match response.decision() {
                Decision::Deny => forbids.extend(reasons),
                Decision::Allow => permits.extend(reasons),
            }
            for e in response.diagnostics().errors() {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                errors.insert(pe.policy_id().clone(), pe.inner().to_string());
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
