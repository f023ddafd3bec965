//! Requests checked against the schema, remembered by what the check reads.
//!
//! Cedar's check of a request (`Request::new` with a schema) reads the principal's and the
//! resource's types, the action, and the context's contents, and it is most of a decision's
//! cost: 2.1 µs of a 7 µs decision, converting the context to an expression to typecheck
//! it. The same shapes recur: every `Connect` question to one callee carries the same
//! ports, and every gate of a workload kind the same context. So a check that passed is
//! remembered by exactly those inputs (a pure function of them, for one schema), and the
//! next request with them is built unchecked. A request not remembered, or one that fails,
//! goes through Cedar's check every time, so every refusal is Cedar's own, word for word.
//!
//! Two limits keep it exact and small. A schema with an enumerated entity type is never
//! remembered (there the check reads the entity's id, not only its type). And at most
//! [`CAPACITY`] shapes are kept per snapshot (a shape once for each thread that met it);
//! past that, requests are checked by Cedar as before, so input an attacker shapes costs
//! time, never memory.

use std::collections::BTreeSet;
use std::sync::RwLock;

use cedar_policy::{Context, EntityUid, Request, Schema};
use cedar_policy_core::ast;
use cedar_policy_core::validator::ValidatorEntityTypeKind;

/// How many request shapes one snapshot remembers.
pub const CAPACITY: usize = 1 << 16;

/// What Cedar's check reads: principal type, action, resource type, context.
/// (The context as a record value: that is how Cedar orders and compares it.)
type Shape = (ast::EntityType, ast::EntityUID, ast::EntityType, ast::Value);

/// Shards of the memory: each thread reads its own, so threads deciding at once (a mesh
/// plan on every core) do not contend for one lock's cache line on every request. A shape
/// is remembered per shard, so each thread has Cedar check it once.
const SHARDS: usize = 8;

/// One shard, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(RwLock<BTreeSet<Shape>>);

/// The shapes of the requests that passed the check, for one schema.
#[derive(Debug)]
pub struct CheckedRequests {
    /// False when the schema has an enumerated entity type.
    remembers: bool,
    shards: [Shard; SHARDS],
}

/// This thread's shard.
fn shard() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl CheckedRequests {
    /// An empty memory for requests checked against `schema`.
    pub fn new(schema: &Schema) -> CheckedRequests {
        let core: &cedar_policy_core::validator::ValidatorSchema = schema.as_ref();
        let remembers = !core
            .entity_types()
            .any(|t| matches!(t.kind, ValidatorEntityTypeKind::Enum(_)));
        CheckedRequests {
            remembers,
            shards: Default::default(),
        }
    }

    /// The request, checked against `schema` (for which this memory was made) unless a
    /// request of the same shape passed before. Cedar's message on a failure.
    pub fn request(
        &self,
        schema: &Schema,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: &Context,
    ) -> Result<Request, String> {
        let checked = || {
            Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context.clone(),
                Some(schema),
            )
            .map_err(|e| e.to_string())
        };
        if !self.remembers {
            return checked();
        }
        let unchecked = Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context.clone(),
            None,
        )
        .map_err(|e| e.to_string())?;
        let Some(shape) = shape(&unchecked) else {
            return checked();
        };
        let passed = &self.shards[shard()].0;
        if passed.read().is_ok_and(|p| p.contains(&shape)) {
            return Ok(unchecked);
        }
        let request = checked()?;
        if let Ok(mut passed) = passed.write()
            && passed.len() < CAPACITY / SHARDS
        {
            passed.insert(shape);
        }
        Ok(request)
    }

    /// How many shapes are remembered (in every shard: a shape each thread met).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.read().map_or(0, |p| p.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shape(request: &Request) -> Option<Shape> {
    let core: &ast::Request = request.as_ref();
    let principal = core.principal().uid()?.entity_type().clone();
    let action = core.action().uid()?.clone();
    let resource = core.resource().uid()?.entity_type().clone();
    match core.context()? {
        ast::Context::Value(values) => {
            let record = ast::Value::new(ast::ValueKind::Record(values.clone()), None);
            Some((principal, action, resource, record))
        }
        ast::Context::RestrictedResidual(_) => None,
    }
}
