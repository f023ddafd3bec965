//! Snapshots: one immutable view (schema + entities + indexed policies + digest) that every
//! decision is taken on, and the [`Engine`] that swaps a new one in atomically.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Context, Decision as CedarDecision, Effect, Entities, Entity, EntityUid, Policy, PolicyId,
    Request, RestrictedExpression, Schema,
};
use lattice_schemas::crd::EnforcementMode;
use sha2::{Digest, Sha256};

pub use crate::entity::action;
use crate::index::{PolicyIndex, RawOutcome};
use crate::policies::{PolicyInfo, PolicyStore, StoredPolicy};
use crate::project::{Approvals, Projection, declared_wildcards, namespaces, root_cluster, uid};
use crate::requests::CheckedRequests;
use crate::slice::EntitySlice;
use crate::world::World;

/// What a snapshot is assembled from.
struct Parts {
    schema: Arc<Schema>,
    requests: Arc<CheckedRequests>,
    entities: Arc<Entities>,
    approved: Approvals,
    enforce: Arc<PolicyIndex>,
    audit: Arc<PolicyIndex>,
    policies: Arc<HashMap<PolicyId, Arc<StoredPolicy>>>,
    /// The quotas' ledger when the world's workloads and quotas are those it was kept for
    /// (a policy change); otherwise it is computed from the world.
    quotas: Option<Arc<crate::quota::Ledger>>,
}

impl Parts {
    /// The parts of a snapshot of `entities` under every active policy of `store`, indexed
    /// by mode.
    fn new(schema: Arc<Schema>, entities: Entities, store: &PolicyStore) -> Parts {
        let policies: HashMap<PolicyId, Arc<StoredPolicy>> = store
            .active()
            .map(|p| (p.policy.id().clone(), Arc::new(p.clone())))
            .collect();
        let by_mode = |mode: EnforcementMode| {
            policies
                .values()
                .filter(move |p| p.info.mode == mode)
                .map(|p| &p.policy)
        };
        let enforce = Arc::new(PolicyIndex::new(by_mode(EnforcementMode::Enforce), &schema));
        let audit = Arc::new(PolicyIndex::new(by_mode(EnforcementMode::Audit), &schema));
        Parts {
            requests: Arc::new(CheckedRequests::new(&schema)),
            schema,
            entities: Arc::new(entities),
            approved: Approvals::default(),
            enforce,
            audit,
            policies: Arc::new(policies),
            quotas: None,
        }
    }
}

/// One immutable view of schema, entities and policies.
pub struct Snapshot {
    schema: Arc<Schema>,
    /// Requests checked against `schema`, remembered by shape.
    requests: Arc<CheckedRequests>,
    entities: Arc<Entities>,
    /// Wildcard declarations AllowWildcard approved, and namespaces OptOutDefaultDeny let
    /// run without the baseline.
    approved: Approvals,
    world_digest: [u8; 32],
    enforce: Arc<PolicyIndex>,
    audit: Arc<PolicyIndex>,
    /// Every active policy, shared with the store it came from.
    policies: Arc<HashMap<PolicyId, Arc<StoredPolicy>>>,
    /// What each workload asks of the quotas covering it, against their usage before it.
    quotas: Arc<crate::quota::Ledger>,
    /// When the entities are a slice ([`EntitySlice`]): what they were taken for. Any
    /// other request is refused.
    slice: Option<Arc<EntitySlice>>,
    digest: String,
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("entities do not conform to the schema: {0}")]
    Entities(String),
    #[error("{0}")]
    Slice(String),
}

/// A question for the engine.
#[derive(Clone, Debug)]
pub struct Query {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub context: Context,
}

impl Query {
    /// A query with an empty context.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Query {
        Query {
            principal,
            action,
            resource,
            context: Context::empty(),
        }
    }

    /// Replaces the context.
    pub fn with_context(mut self, context: Context) -> Query {
        self.context = context;
        self
    }
}

/// A request context from JSON: what `Context::from_json_value(value, None)` builds, without
/// Cedar's JSON reader for the plain values Lattice's contexts hold (strings, booleans,
/// integers, and sets and records of them), which is several times faster on the tens of
/// thousands of contexts a what-if builds. Anything else (`__entity` or `__extn` escapes,
/// floats) is read by Cedar, with its errors.
pub fn context_from_json(value: &serde_json::Value) -> Result<Context, String> {
    use crate::attr::Rx;
    fn plain(v: &serde_json::Value) -> Option<Rx> {
        use serde_json::Value as J;
        Some(match v {
            J::String(s) => Rx::new_string(s.clone()),
            J::Bool(b) => Rx::new_bool(*b),
            J::Number(n) => Rx::new_long(n.as_i64()?),
            J::Array(items) => Rx::new_set(items.iter().map(plain).collect::<Option<Vec<_>>>()?),
            J::Object(m) if !m.keys().any(|k| k.starts_with("__")) => Rx::new_record(
                m.iter()
                    .map(|(k, v)| Some((k.clone(), plain(v)?)))
                    .collect::<Option<Vec<_>>>()?,
            )
            .ok()?,
            _ => return None,
        })
    }
    if let serde_json::Value::Object(m) = value
        && !m.keys().any(|k| k.starts_with("__"))
        && let Some(pairs) = m
            .iter()
            .map(|(k, v)| Some((k.clone(), plain(v)?)))
            .collect::<Option<Vec<_>>>()
        && let Ok(c) = crate::attr::context(pairs)
    {
        return Ok(c);
    }
    Context::from_json_value(value.clone(), None).map_err(|e| e.to_string())
}

/// `OptOutDefaultDeny` for namespace `ns` of `cluster`, `requested` when its label asks.
pub fn opt_out_query(cluster: &str, ns: &str, requested: bool) -> Query {
    let context = Context::from_pairs([(
        "requested".to_owned(),
        RestrictedExpression::new_bool(requested),
    )])
    .expect("a bool makes a valid context");
    Query::new(
        uid("Namespace", ns),
        action(crate::slice::OPT_OUT_DEFAULT_DENY),
        uid("Cluster", cluster),
    )
    .with_context(context)
}

/// A query the schema rejects (unknown entity type, action not applicable, wrong context).
#[derive(Debug, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct QueryError(pub String);

/// A policy that errored during a decision.
#[derive(Clone, Debug)]
pub struct PolicyFault {
    pub policy: Arc<PolicyInfo>,
    pub message: String,
}

/// The answer to a query, with its evidence.
#[derive(Clone, Debug)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that decided: satisfied (or erroring) forbids on a deny by forbid,
    /// satisfied permits on an allow, none on a default deny.
    pub determining: Vec<Arc<PolicyInfo>>,
    /// Enforce-mode policies that errored. An erroring forbid denies; an erroring permit
    /// permits nothing. Neither passes silently.
    pub errors: Vec<PolicyFault>,
    /// Audit-mode policies that would have decided, and audit policies that errored. They
    /// never change `allowed`.
    pub audit: Vec<Arc<PolicyInfo>>,
    pub audit_errors: Vec<PolicyFault>,
    /// The digest of the snapshot the decision was taken on.
    pub digest: String,
}

impl Decision {
    /// Whether the deny comes from no permit matching (rather than a forbid).
    pub fn is_default_deny(&self) -> bool {
        !self.allowed && self.determining.is_empty()
    }
}

impl Snapshot {
    /// Builds a snapshot of `world` under `store`. Wildcard declarations hold only where
    /// `AllowWildcard` allows them, so that decision is taken first, on the same policies.
    pub fn build(
        world: &World,
        projection: &Projection,
        store: &PolicyStore,
    ) -> Result<Snapshot, SnapshotError> {
        let schema = Arc::new(lattice_schemas::cedar::schema().clone());
        let entities = projection
            .entities(world, &schema, &Approvals::default())
            .map_err(|e| SnapshotError::Entities(e.to_string()))?;
        let parts = Parts::new(schema, entities, store);
        Snapshot::assemble(parts, world, projection, store)
    }

    /// Builds a snapshot consuming the projection, for one-shot work (a compliance scan)
    /// that never re-projects: no entity is held twice while the snapshot is built, which
    /// at estate scale is the difference between a scan's peak memory and the REPL's. A
    /// world that declares wildcards is built as [`Snapshot::build`] builds it (their
    /// approval needs a second projection). Same snapshot, same digest either way.
    pub fn build_consuming(
        world: &World,
        projection: Projection,
        store: &PolicyStore,
    ) -> Result<Snapshot, SnapshotError> {
        if crate::project::declares_wildcards(world) {
            return Snapshot::build(world, &projection, store);
        }
        let schema = lattice_schemas::cedar::schema();
        let live = projection.live().clone();
        let entities = projection
            .into_entities(world, schema)
            .map_err(|e| SnapshotError::Entities(e.to_string()))?;
        Snapshot::from_entities(world, entities, store, &live)
    }

    /// Builds a snapshot on entities projected already: what
    /// [`Projection::into_entities`] made of `world` with `live` (kept, say, in a cache of
    /// projected worlds). As [`Snapshot::build_consuming`], for a world that declares no
    /// wildcard; approvals are decided here, on these entities.
    pub fn from_entities(
        world: &World,
        entities: Entities,
        store: &PolicyStore,
        live: &crate::project::LiveFacts,
    ) -> Result<Snapshot, SnapshotError> {
        let schema = Arc::new(lattice_schemas::cedar::schema().clone());
        let parts = Parts::new(schema, entities, store);
        // With no declared wildcard only an opt-out can be approved; then (rarely) the
        // world is projected again to apply it.
        Snapshot::assemble_with(parts, world, store, live, None)
    }

    /// [`Snapshot::from_entities`] on a slice of them: `entities` holds at least every
    /// entity of a type `slice` holds (read back from the cache of projected worlds, say).
    /// The snapshot decides only the requests the slice was taken for and refuses any other.
    pub fn from_slice(
        world: &World,
        entities: Entities,
        store: &PolicyStore,
        live: &crate::project::LiveFacts,
        slice: EntitySlice,
    ) -> Result<Snapshot, SnapshotError> {
        let mut snapshot = Snapshot::from_entities(world, entities, store, live)?;
        snapshot.slice = Some(Arc::new(slice));
        Ok(snapshot)
    }

    /// The slice the entities were taken for, when they are one.
    pub fn slice(&self) -> Option<&EntitySlice> {
        self.slice.as_deref()
    }

    /// A snapshot of the same world under another policy set (`world` may differ from the
    /// snapshot's own in CedarPolicy objects only, which project no entity). Policies are compared with
    /// this snapshot's by identity: only the added and removed ones touch the index, and the
    /// entities are reused unless the change alters which wildcards are approved.
    pub fn with_policies(
        &self,
        world: &World,
        projection: &Projection,
        store: &PolicyStore,
    ) -> Result<Snapshot, SnapshotError> {
        // Other policies may read entities the slice left out.
        if self.slice.is_some() {
            return Err(SnapshotError::Slice(
                "a snapshot of a slice of the entities cannot take other policies".into(),
            ));
        }
        let current: HashMap<&PolicyId, &StoredPolicy> =
            store.active().map(|p| (p.policy.id(), p)).collect();
        let mut policies = (*self.policies).clone();
        let (mut removed_enforce, mut removed_audit, mut added_enforce, mut added_audit) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, old) in self.policies.iter() {
            if !current
                .get(id)
                .is_some_and(|p| Arc::ptr_eq(&p.info, &old.info))
            {
                policies.remove(id);
                match old.info.mode {
                    EnforcementMode::Enforce => removed_enforce.push(&old.policy),
                    EnforcementMode::Audit => removed_audit.push(&old.policy),
                }
            }
        }
        for (id, p) in &current {
            if !self
                .policies
                .get(*id)
                .is_some_and(|old| Arc::ptr_eq(&old.info, &p.info))
            {
                policies.insert((*id).clone(), Arc::new((*p).clone()));
                match p.info.mode {
                    EnforcementMode::Enforce => added_enforce.push(&p.policy),
                    EnforcementMode::Audit => added_audit.push(&p.policy),
                }
            }
        }
        let enforce = Arc::new(self.enforce.with_changes(
            removed_enforce,
            added_enforce,
            &self.schema,
        ));
        let audit = Arc::new(
            self.audit
                .with_changes(removed_audit, added_audit, &self.schema),
        );
        let parts = Parts {
            schema: self.schema.clone(),
            requests: self.requests.clone(),
            entities: self.entities.clone(),
            approved: self.approved.clone(),
            enforce,
            audit,
            policies: Arc::new(policies),
            // Only CedarPolicy objects differ: no workload or quota did.
            quotas: Some(self.quotas.clone()),
        };
        Snapshot::assemble(parts, world, projection, store)
    }

    fn assemble(
        parts: Parts,
        world: &World,
        projection: &Projection,
        store: &PolicyStore,
    ) -> Result<Snapshot, SnapshotError> {
        let live = projection.live().clone();
        Snapshot::assemble_with(parts, world, store, &live, Some(projection))
    }

    /// Assembles a snapshot, taking the decisions that change entities (approvals) on the
    /// entities without them. Without `given`, the world is projected again only when an
    /// approval needs it.
    fn assemble_with(
        parts: Parts,
        world: &World,
        store: &PolicyStore,
        live: &crate::project::LiveFacts,
        given: Option<&Projection>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut owned: Option<Projection> = None;
        let mut projection = || -> Projection {
            // Only reached without `given`: see the two call sites below.
            Projection::with_live(world, live.clone())
        };
        let Parts {
            schema,
            requests,
            entities,
            approved,
            enforce,
            audit,
            policies,
            quotas,
        } = parts;
        let world_digest = world.digest();
        let mut snapshot = Snapshot {
            schema,
            requests,
            entities,
            approved,
            world_digest,
            enforce,
            audit,
            policies,
            quotas: quotas.unwrap_or_else(|| Arc::new(crate::quota::Ledger::of(world))),
            slice: None,
            digest: String::new(),
        };
        // Approvals are decided on entities without any approval, so an approval never
        // rests on itself.
        let approved = if snapshot.approved.is_empty() {
            snapshot.approvals(world)
        } else {
            let p = match given {
                Some(p) => p,
                None => owned.get_or_insert_with(&mut projection),
            };
            let base = p
                .entities(world, &snapshot.schema, &Approvals::default())
                .map_err(|e| SnapshotError::Entities(e.to_string()))?;
            let with = std::mem::replace(&mut snapshot.entities, Arc::new(base));
            let approved = snapshot.approvals(world);
            snapshot.entities = with;
            approved
        };
        if approved != snapshot.approved {
            let p = match given {
                Some(p) => p,
                None => owned.get_or_insert_with(&mut projection),
            };
            snapshot.entities = Arc::new(
                p.entities(world, &snapshot.schema, &approved)
                    .map_err(|e| SnapshotError::Entities(e.to_string()))?,
            );
            snapshot.approved = approved;
        }
        snapshot.digest = snapshot_digest(&world_digest, store, live);
        Ok(snapshot)
    }

    /// This snapshot with one workload's entity changes taken in
    /// ([`Projection::update_workload`]): the policies, their indexes and the approvals
    /// are shared; the new entities are checked against the schema and the hierarchy's
    /// closure is repaired where they touch it. `world` is the world after the change.
    ///
    /// The caller vouches that the change leaves every approval as it was (the workload
    /// declares no wildcard and lives where no opt-out was approved, before and after):
    /// approvals are not decided again here.
    pub fn with_entity_delta(
        &self,
        world: &World,
        store: &PolicyStore,
        live: &crate::project::LiveFacts,
        delta: crate::project::EntityDelta,
    ) -> Result<Snapshot, SnapshotError> {
        let entities = take_in(&self.entities, &self.schema, delta)?;
        let world_digest = world.digest();
        Ok(Snapshot {
            schema: self.schema.clone(),
            requests: self.requests.clone(),
            entities: Arc::new(entities),
            approved: self.approved.clone(),
            world_digest,
            enforce: self.enforce.clone(),
            audit: self.audit.clone(),
            policies: self.policies.clone(),
            quotas: Arc::new(crate::quota::Ledger::of(world)),
            slice: self.slice.clone(),
            digest: snapshot_digest(&world_digest, store, live),
        })
    }

    /// This snapshot with `ledger` as its quotas' (an object under admission written in).
    pub fn with_quotas(mut self, ledger: crate::quota::Ledger) -> Snapshot {
        self.quotas = Arc::new(ledger);
        self
    }

    /// The quotas' ledger of the world this snapshot was taken of.
    pub fn quotas(&self) -> &crate::quota::Ledger {
        &self.quotas
    }

    /// The approvals this snapshot's entities carry.
    pub fn approved(&self) -> &Approvals {
        &self.approved
    }

    /// The policies in force here that `before` did not have in the same version, and
    /// those it had that are gone: every policy whose scope bounds what a policy change
    /// can decide differently.
    pub fn policies_changed_since(&self, before: &Snapshot) -> Vec<Policy> {
        let differs = |a: &Snapshot, b: &Snapshot| -> Vec<Policy> {
            a.policies
                .iter()
                .filter(|(id, p)| {
                    !b.policies
                        .get(*id)
                        .is_some_and(|q| Arc::ptr_eq(&p.info, &q.info))
                })
                .map(|(_, p)| p.policy.clone())
                .collect()
        };
        let mut out = differs(self, before);
        out.extend(differs(before, self));
        out
    }

    /// Every active policy (enforced and audited).
    pub fn active_policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().map(|p| &p.policy)
    }

    /// Whether an approval (a wildcard or a namespace's opt-out) concerns the workload
    /// `namespace/name`: its entities are then not as plainly projected.
    pub fn approval_concerns(&self, namespace: &str, id: &str) -> bool {
        self.approved.opted_out.contains(namespace) || self.approved.wildcards.contains_key(id)
    }

    /// Every approval decided on this snapshot's entities.
    fn approvals(&self, world: &World) -> Approvals {
        Approvals {
            wildcards: self.approved_wildcards(world),
            opted_out: self.approved_opt_outs(world),
        }
    }

    /// Namespaces that `OptOutDefaultDeny` lets run without the default-deny baseline:
    /// asked for every namespace the world declares or uses, with whether it asked.
    fn approved_opt_outs(&self, world: &World) -> BTreeSet<String> {
        let (cluster, _) = root_cluster(world);
        namespaces(world)
            .into_iter()
            .filter(|(ns, requested)| {
                // An error keeps the baseline (fail closed).
                self.decide(&opt_out_query(&cluster, ns, *requested))
                    .is_ok_and(|d| d.allowed)
            })
            .map(|(ns, _)| ns)
            .collect()
    }

    /// Declared wildcards that `AllowWildcard` allows: service uid id → (outbound, inbound).
    fn approved_wildcards(&self, world: &World) -> HashMap<String, (bool, bool)> {
        let mut out = HashMap::new();
        for (key, object) in world.objects() {
            let (outbound, inbound) = declared_wildcards(object);
            if !(outbound || inbound) {
                continue;
            }
            let id = format!(
                "{}/{}",
                key.namespace.as_deref().unwrap_or("default"),
                key.name
            );
            let ask = |direction: &str| {
                let q = Query::new(
                    uid("Service", &id),
                    action(crate::slice::ALLOW_WILDCARD),
                    uid("Mesh", direction),
                )
                .with_context(
                    Context::from_json_value(
                        serde_json::json!({"raisedBy": "*", "workloadKind": object.kind_name()}),
                        None,
                    )
                    .unwrap_or_else(|_| Context::empty()),
                );
                self.decide(&q).is_ok_and(|d| d.allowed)
            };
            let approved = (outbound && ask("outbound"), inbound && ask("inbound"));
            if approved.0 || approved.1 {
                out.insert(id, approved);
            }
        }
        out
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The wildcards of a service (`namespace/name`) that AllowWildcard approved:
    /// (outbound, inbound).
    pub fn wildcards_approved(&self, service: &str) -> (bool, bool) {
        self.approved
            .wildcards
            .get(service)
            .copied()
            .unwrap_or_default()
    }

    /// Whether `OptOutDefaultDeny` let namespace `ns` run without the default-deny
    /// baseline. The decision alone: whether the baseline is also on a cluster is a live
    /// fact (`Namespace.defaultDeny`).
    pub fn opted_out(&self, ns: &str) -> bool {
        self.approved.opted_out.contains(ns)
    }

    /// The entities decisions read: for a snapshot over a slice, only the slice's.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// The digest verification resolved `image` to (`Image.resolvedDigest`, or the digest
    /// the reference itself names), or `None` when nothing was resolved: what a derived pod
    /// template pins, so that what was decided on is what runs.
    pub fn resolved_digest(&self, image: &str) -> Option<String> {
        let uid = uid("Image", &crate::project::image_uid_text(image));
        match self.entities.get(&uid)?.attr("resolvedDigest")? {
            Ok(cedar_policy::EvalResult::String(d)) if d.starts_with("sha256:") => Some(d),
            _ => None,
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The enforce-mode policies.
    pub fn enforce_index(&self) -> &PolicyIndex {
        &self.enforce
    }

    /// Evidence about a stored policy.
    pub fn policy_info(&self, id: &PolicyId) -> Option<&Arc<PolicyInfo>> {
        self.policies.get(id).map(|p| &p.info)
    }

    /// A schema-checked Cedar request for a query (checked by Cedar, or of a shape Cedar's
    /// check passed on this snapshot's schema: [`CheckedRequests`]).
    pub fn request(&self, q: &Query) -> Result<Request, QueryError> {
        self.requests
            .request(
                &self.schema,
                &q.principal,
                &q.action,
                &q.resource,
                &q.context,
            )
            .map_err(QueryError)
    }

    /// How many request shapes this snapshot remembers as passing the schema check.
    pub fn remembered_requests(&self) -> usize {
        self.requests.len()
    }

    /// Evaluates a query on the enforce policies through the index, in Cedar's terms.
    pub fn evaluate(&self, q: &Query) -> Result<RawOutcome, QueryError> {
        self.admits(q)?;
        let request = self.request(q)?;
        Ok(self.enforce.evaluate(
            &request,
            &q.principal,
            &q.action,
            &q.resource,
            &self.entities,
        ))
    }

    /// This snapshot's policies over request-scoped entities: `extra` (a user named by an
    /// AdmissionReview with its groups, or an object not yet in the world, projected), joined
    /// by the snapshot's entities for `also` and their ancestors. Nothing else of the world
    /// is there: a policy reaching for any other entity errors, and errors fail closed.
    /// Everything but the entities is shared, so this costs the size of `extra`.
    pub fn scoped(&self, extra: Vec<Entity>, also: &[EntityUid]) -> Result<Snapshot, QueryError> {
        let mut scoped = extra;
        let mut have: std::collections::HashSet<EntityUid> =
            scoped.iter().map(Entity::uid).collect();
        let mut wanted: Vec<EntityUid> = Vec::new();
        for u in also {
            wanted.push(u.clone());
            wanted.extend(self.entities.ancestors(u).into_iter().flatten().cloned());
        }
        for u in wanted {
            if !have.contains(&u)
                && let Some(e) = self.entities.get(&u)
            {
                have.insert(u);
                scoped.push(e.clone());
            }
        }
        let entities = Entities::from_entities(scoped, Some(&self.schema))
            .map_err(|e| QueryError(format!("request entities: {e:?}")))?;
        Ok(Snapshot {
            schema: self.schema.clone(),
            requests: self.requests.clone(),
            entities: Arc::new(entities),
            approved: self.approved.clone(),
            world_digest: self.world_digest,
            enforce: self.enforce.clone(),
            audit: self.audit.clone(),
            policies: self.policies.clone(),
            quotas: self.quotas.clone(),
            slice: self.slice.clone(),
            digest: self.digest.clone(),
        })
    }

    /// Decides a query (DESIGN §2): default deny; an erroring forbid denies; an erroring
    /// permit permits nothing; audit policies are reported and never change the answer.
    pub fn decide(&self, q: &Query) -> Result<Decision, QueryError> {
        self.admits(q)?;
        let request = self.request(q)?;
        self.decide_request(q, request)
    }

    /// [`Snapshot::decide`] for a query whose context is built by code from typed values in
    /// one fixed shape, which a test checks against the schema (the compliance scan's
    /// `Comply` questions, tens of thousands a scan): the request is not validated again
    /// each time. A context that did not fit would still fail closed, as an evaluation
    /// error of every policy that reads it.
    pub fn decide_prechecked(&self, q: &Query) -> Result<Decision, QueryError> {
        self.admits(q)?;
        let request = Request::new(
            q.principal.clone(),
            q.action.clone(),
            q.resource.clone(),
            q.context.clone(),
            None,
        )
        .map_err(|e| QueryError(e.to_string()))?;
        self.decide_request(q, request)
    }

    /// Refuses a query this snapshot's slice of the entities was not taken for.
    fn admits(&self, q: &Query) -> Result<(), QueryError> {
        match &self.slice {
            Some(slice) => slice
                .admits(&q.principal, &q.action, &q.resource)
                .map_err(QueryError),
            None => Ok(()),
        }
    }

    fn decide_request(&self, q: &Query, request: Request) -> Result<Decision, QueryError> {
        let raw = self.enforce.evaluate(
            &request,
            &q.principal,
            &q.action,
            &q.resource,
            &self.entities,
        );
        let errors: Vec<PolicyFault> = raw
            .errors
            .iter()
            .filter_map(|(id, m)| self.fault(id, m))
            .collect();
        let erroring_forbids: Vec<Arc<PolicyInfo>> = errors
            .iter()
            .filter(|f| f.policy.effect == Effect::Forbid)
            .map(|f| f.policy.clone())
            .collect();
        let (allowed, determining) = if !erroring_forbids.is_empty() {
            // Fail closed: the satisfied forbids (if any) and the erroring ones decide.
            let mut d: Vec<Arc<PolicyInfo>> = match raw.decision {
                CedarDecision::Deny => self.infos(&raw.reasons),
                CedarDecision::Allow => Vec::new(),
            };
            d.extend(erroring_forbids);
            (false, d)
        } else {
            (
                raw.decision == CedarDecision::Allow,
                self.infos(&raw.reasons),
            )
        };
        let audit_raw = self.audit.evaluate(
            &request,
            &q.principal,
            &q.action,
            &q.resource,
            &self.entities,
        );
        Ok(Decision {
            allowed,
            determining,
            errors,
            audit: self.infos(&audit_raw.reasons),
            audit_errors: audit_raw
                .errors
                .iter()
                .filter_map(|(id, m)| self.fault(id, m))
                .collect(),
            digest: self.digest.clone(),
        })
    }

    /// Decides many queries on this one snapshot.
    pub fn decide_batch(&self, queries: &[Query]) -> Vec<Result<Decision, QueryError>> {
        queries.iter().map(|q| self.decide(q)).collect()
    }

    fn infos(&self, ids: &std::collections::BTreeSet<PolicyId>) -> Vec<Arc<PolicyInfo>> {
        ids.iter()
            .filter_map(|id| self.policy_info(id).cloned())
            .collect()
    }

    fn fault(&self, id: &PolicyId, message: &str) -> Option<PolicyFault> {
        self.policy_info(id).map(|p| PolicyFault {
            policy: p.clone(),
            message: message.to_owned(),
        })
    }
}

/// `entities` with one workload's change taken in, without recomputing the hierarchy's
/// closure over every entity.
///
/// Why cedar-policy-core beside cedar-policy: the public `Entities::upsert_entities`
/// recomputes the closure by visiting every entity (about 40 ms at 20,000 entities, most
/// of what one service's change would cost). The closure of what a workload adds is known
/// here: a new entity's ancestors are its parents and their ancestors, which the snapshot
/// already holds closed. So the new entities are checked against the schema through the
/// public API, given their closed ancestors, and taken in by the core crate's own upsert
/// with `AssumeAlreadyComputed`. The core crate is pinned to cedar-policy's exact version,
/// and a differential test holds the result to a rebuild.
///
/// `delta` holds every descendant of each entity it replaces (a workload's group holds its
/// own hierarchy: a Service and its Containers), since replacing an entity strips the
/// ancestors it gave its descendants.
fn take_in(
    entities: &Entities,
    schema: &Schema,
    delta: crate::project::EntityDelta,
) -> Result<Entities, SnapshotError> {
    use cedar_policy_core::entities::TCComputation;
    let error = |e: &dyn std::fmt::Display| SnapshotError::Entities(e.to_string());
    Entities::from_entities(delta.upsert.iter().cloned(), Some(schema)).map_err(|e| error(&e))?;
    let new: HashMap<EntityUid, &Entity> = delta.upsert.iter().map(|e| (e.uid(), e)).collect();
    let mut closed: HashMap<EntityUid, BTreeSet<EntityUid>> = HashMap::new();
    for e in &delta.upsert {
        close(&e.uid(), &new, entities, &mut closed, 0)?;
    }
    let mut upsert: Vec<(usize, std::sync::Arc<cedar_policy_core::ast::Entity>)> = delta
        .upsert
        .iter()
        .map(|e| {
            let ancestors = &closed[&e.uid()];
            let mut core: cedar_policy_core::ast::Entity = e.as_ref().clone();
            let parents: HashSet<&cedar_policy_core::ast::EntityUID> = core.parents().collect();
            let indirect: Vec<cedar_policy_core::ast::EntityUID> = ancestors
                .iter()
                .map(|a| a.as_ref())
                .filter(|a| !parents.contains(a))
                .cloned()
                .collect();
            for a in indirect {
                core.add_indirect_ancestor(a);
            }
            (ancestors.len(), std::sync::Arc::new(core))
        })
        .collect();
    // Ancestors before descendants: replacing an entity strips what it gave its
    // descendants, so those come after it.
    upsert.sort_by_key(|(depth, _)| *depth);
    let mut core = entities.as_ref().clone();
    if !delta.remove.is_empty() {
        core = core
            .remove_entities(
                delta.remove.into_iter().map(Into::into),
                TCComputation::AssumeAlreadyComputed,
            )
            .map_err(|e| error(&e))?;
    }
    core = core
        .upsert_entities(
            upsert.into_iter().map(|(_, e)| e),
            None::<&cedar_policy_core::entities::NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            cedar_policy_core::extensions::Extensions::all_available(),
        )
        .map_err(|e| error(&e))?;
    Ok(Entities::from(core))
}

/// The closed ancestors of `u`: of a new entity, its parents and theirs; of one already
/// held, what `entities` (closed) says.
fn close(
    u: &EntityUid,
    new: &HashMap<EntityUid, &Entity>,
    entities: &Entities,
    closed: &mut HashMap<EntityUid, BTreeSet<EntityUid>>,
    depth: usize,
) -> Result<BTreeSet<EntityUid>, SnapshotError> {
    if let Some(done) = closed.get(u) {
        return Ok(done.clone());
    }
    // The schema's hierarchy is a few levels deep; deeper is a cycle.
    if depth > 32 {
        return Err(SnapshotError::Entities(format!(
            "the hierarchy above {u} has a cycle"
        )));
    }
    let out = match new.get(u) {
        Some(e) => {
            let mut out = BTreeSet::new();
            let parents: Vec<EntityUid> = e
                .as_ref()
                .parents()
                .map(|p| EntityUid::from(p.clone()))
                .collect();
            for p in parents {
                out.extend(close(&p, new, entities, closed, depth + 1)?);
                out.insert(p);
            }
            out
        }
        None => entities
            .ancestors(u)
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    };
    closed.insert(u.clone(), out.clone());
    Ok(out)
}

/// What a snapshot's digest covers: the schema, the world, the policies, what a running
/// cluster observed, and what verifying the images established.
fn snapshot_digest(
    world_digest: &[u8; 32],
    store: &PolicyStore,
    live: &crate::project::LiveFacts,
) -> String {
    let mut h = Sha256::new();
    h.update(Sha256::digest(
        lattice_schemas::cedar::SCHEMA_TEXT.as_bytes(),
    ));
    h.update(world_digest);
    h.update(store.digest());
    live.hash_into(&mut h);
    format!("sha256:{}", hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Holds the current snapshot. Readers take an `Arc` and keep deciding on it while a new
/// snapshot is built; swapping is a pointer store.
pub struct Engine {
    current: RwLock<Arc<Snapshot>>,
}

impl Engine {
    pub fn new(snapshot: Snapshot) -> Engine {
        Engine {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // The lock only guards the pointer; a poisoned lock still holds a valid one.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `snapshot` current; returns the previous one.
    pub fn swap(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *guard, Arc::new(snapshot))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn action_names_are_taken_as_they_are() {
        for name in ["Connect", "a \"quoted\" name", "\u{1}\n", ""] {
            assert_eq!(super::action(name).id().unescaped(), name);
        }
    }
}
