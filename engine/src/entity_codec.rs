//! A compact binary form of a projection's closed entities, for the command line's cache of
//! projected worlds: reading it back skips projecting the world, checking every entity
//! against the schema and closing the hierarchy, which were most of a warm `mesh` or
//! `plan` at estate scale.
//!
//! What it holds is exactly what [`Projection::into_entities`](crate::Projection) made:
//! every entity but the schema's actions, with its attributes, tags, parents and the rest
//! of its ancestors. [`decode`] gives the same `Entities` back (a test holds it to
//! `deep_eq`), with the schema's actions added and the closure taken as stored. Each chunk
//! holds entities of one type, so a command that reads only some types
//! ([`EntitySlice`](crate::slice::EntitySlice)) skips the other chunks unread.
//!
//! Hand-written because nothing else reads or writes Cedar's core entities but Cedar's own
//! JSON, whose reader is what this replaces. The form is only ever read by the binary that
//! wrote it (the cache's key names the executable), yet [`decode`] trusts nothing: every
//! length and index is checked, and a malformed form is an error, never a panic.
//!
//! Layout (integers are LEB128; signed ones zigzag-encoded):
//!
//! ```text
//! magic "lattice-entities" version
//! strings  n { len bytes }          every distinct text: types, ids, names, values
//! types    n { string }             entity type names
//! uids     n { type string }        every uid an entity is or names
//! chunks   n { len }                byte lengths, then the chunks back to back
//! chunk    type n { entity }        entities of one type, decoded on every core
//! entity   uid attrs parents indirect tags
//!   attrs, tags:        n { string value }
//!   parents, indirect:  n { uid }
//! value    0 false | 1 true | 2 long | 3 string | 4 uid | 5 set n {value}
//!          | 6 record n {string value} | 7 extension string (its restricted expression)
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::{Entities, Schema};
use cedar_policy_core::ast::{
    self, EntityType, EntityUID, Literal, PartialValue, RestrictedExpr, Value, ValueKind,
};
use cedar_policy_core::evaluator::RestrictedEvaluator;
use cedar_policy_core::extensions::Extensions;
use foldhash::HashMap;
use rayon::prelude::*;
use smol_str::SmolStr;

const MAGIC: &[u8] = b"lattice-entities";
/// Bump when the layout changes.
const VERSION: u64 = 2;
/// Entities per chunk: enough to keep a core busy, few enough to share the work.
const CHUNK: usize = 2048;
/// Sets and records nest no deeper than this; a deeper form is refused (Lattice's
/// entities nest three levels at most).
const MAX_DEPTH: usize = 32;

/// Why a form could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the stored entities cannot be read: {0}")]
pub struct DecodeError(String);

fn bad(why: impl Into<String>) -> DecodeError {
    DecodeError(why.into())
}

/// The form of `entities`, leaving out the schema's actions; `None` when an entity holds
/// what the form cannot (a residual, which projection never makes).
pub fn encode(entities: &Entities) -> Option<Vec<u8>> {
    let all: Vec<&ast::Entity> = entities
        .iter()
        .map(|e| e.as_ref())
        .filter(|e| !e.uid().is_action())
        .collect();
    encode_all(&all)
}

/// The form of exactly `all`.
fn encode_all(all: &[&ast::Entity]) -> Option<Vec<u8>> {
    let mut table = Table::default();
    for e in all {
        table.entity(e)?;
    }
    // Grouped by type (in first-seen order, otherwise as given), each type's run cut into
    // chunks of its own.
    let mut by_type: Vec<&ast::Entity> = all.to_vec();
    // Each type looked up once, not once per comparison (hashing a type's name twice on
    // every comparison): about a tenth of storing an estate's entities.
    by_type.sort_by_cached_key(|e| table.type_ids[e.uid().entity_type()]);
    let runs: Vec<&[&ast::Entity]> = by_type
        .chunk_by(|a, b| a.uid().entity_type() == b.uid().entity_type())
        .flat_map(|run| run.chunks(CHUNK))
        .collect();
    let chunks: Vec<Vec<u8>> = runs
        .par_iter()
        .map(|chunk| {
            let mut out = Vec::new();
            put(
                &mut out,
                u64::from(table.type_ids[chunk[0].uid().entity_type()]),
            );
            put(&mut out, chunk.len() as u64);
            for e in chunk.iter() {
                table.put_entity(&mut out, e);
            }
            out
        })
        .collect();
    let mut out = Vec::with_capacity(chunks.iter().map(Vec::len).sum::<usize>() + 64);
    out.extend_from_slice(MAGIC);
    put(&mut out, VERSION);
    put(&mut out, table.strings.len() as u64);
    for s in &table.strings {
        put(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    put(&mut out, table.types.len() as u64);
    for t in &table.types {
        put(&mut out, u64::from(*t));
    }
    put(&mut out, table.uids.len() as u64);
    for (t, eid) in &table.uids {
        put(&mut out, u64::from(*t));
        put(&mut out, u64::from(*eid));
    }
    put(&mut out, chunks.len() as u64);
    for c in &chunks {
        put(&mut out, c.len() as u64);
    }
    for c in chunks {
        out.extend_from_slice(&c);
    }
    Some(out)
}

/// The entities `bytes` hold, with `schema`'s actions, closed as they were stored.
pub fn decode(bytes: &[u8], schema: &Schema) -> Result<Entities, DecodeError> {
    decode_slice(bytes, schema, None)
}

/// [`decode`], keeping only the entities of the types `slice` holds (all without one):
/// the other types' chunks are skipped unread. The ancestors of what is kept are kept as
/// stored, whether or not the slice holds them.
pub fn decode_slice(
    bytes: &[u8],
    schema: &Schema,
    slice: Option<&crate::slice::EntitySlice>,
) -> Result<Entities, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("not a stored entity set"));
    }
    if r.int()? != VERSION {
        return Err(bad("another version of the form"));
    }
    let n = r.count()?;
    let mut strings: Vec<SmolStr> = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.count()?;
        let text = std::str::from_utf8(r.take(len)?).map_err(|_| bad("a text is not UTF-8"))?;
        strings.push(SmolStr::new(text));
    }
    let n = r.count()?;
    let mut types: Vec<EntityType> = Vec::with_capacity(n);
    for _ in 0..n {
        let name = lookup(&strings, r.int()?)?;
        types.push(
            EntityType::from_normalized_str(name)
                .map_err(|e| bad(format!("`{name}` is not a type: {e}")))?,
        );
    }
    let n = r.count()?;
    let mut uids: Vec<Arc<EntityUID>> = Vec::with_capacity(n);
    for _ in 0..n {
        let ty = lookup(&types, r.int()?)?.clone();
        let eid = lookup(&strings, r.int()?)?.clone();
        uids.push(Arc::new(EntityUID::from_components(
            ty,
            ast::Eid::new(eid),
            None,
        )));
    }
    let n = r.count()?;
    let mut lengths = Vec::with_capacity(n);
    for _ in 0..n {
        lengths.push(r.count()?);
    }
    let mut chunks = Vec::with_capacity(n);
    for len in lengths {
        chunks.push(r.take(len)?);
    }
    if r.at != bytes.len() {
        return Err(bad("bytes after the last chunk"));
    }
    let table = Decoded {
        strings: &strings,
        types: &types,
        uids: &uids,
        slice,
    };
    let decoded: Vec<Vec<ast::Entity>> = chunks
        .par_iter()
        .map(|chunk| table.chunk(chunk))
        .collect::<Result<_, _>>()?;
    let actions = schema
        .action_entities()
        .map_err(|e| bad(format!("the schema's actions: {e}")))?;
    crate::closure::assume_closed(decoded.into_iter().flatten(), actions).map_err(bad)
}

/// Every distinct text, type and uid of an entity set, numbered in first-seen order.
#[derive(Default)]
struct Table {
    strings: Vec<SmolStr>,
    string_ids: HashMap<SmolStr, u32>,
    types: Vec<u32>,
    type_ids: HashMap<EntityType, u32>,
    uids: Vec<(u32, u32)>,
    uid_ids: HashMap<EntityUID, u32>,
}

impl Table {
    fn string(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(SmolStr::new(s));
        self.string_ids.insert(SmolStr::new(s), i);
        i
    }

    fn uid(&mut self, u: &EntityUID) -> u32 {
        if let Some(&i) = self.uid_ids.get(u) {
            return i;
        }
        let ty = match self.type_ids.get(u.entity_type()) {
            Some(&t) => t,
            None => {
                let name = self.string(&u.entity_type().to_string());
                let t = self.types.len() as u32;
                self.types.push(name);
                self.type_ids.insert(u.entity_type().clone(), t);
                t
            }
        };
        let eid = self.string(u.eid().as_ref());
        let i = self.uids.len() as u32;
        self.uids.push((ty, eid));
        self.uid_ids.insert(u.clone(), i);
        i
    }

    /// Numbers everything `e` names; `None` on a residual.
    fn entity(&mut self, e: &ast::Entity) -> Option<()> {
        self.uid(e.uid());
        for (k, v) in e.attrs().chain(e.tags()) {
            self.string(k);
            let PartialValue::Value(v) = v else {
                return None;
            };
            self.value(v);
        }
        for u in e.parents().chain(e.indirect_ancestors()) {
            self.uid(u);
        }
        Some(())
    }

    fn value(&mut self, v: &Value) {
        match v.value_kind() {
            ValueKind::Lit(Literal::String(s)) => {
                self.string(s);
            }
            ValueKind::Lit(Literal::EntityUID(u)) => {
                self.uid(u);
            }
            ValueKind::Lit(_) => {}
            ValueKind::Set(set) => set.iter().for_each(|v| self.value(v)),
            ValueKind::Record(fields) => {
                for (k, v) in fields.iter() {
                    self.string(k);
                    self.value(v);
                }
            }
            ValueKind::ExtensionValue(x) => {
                self.string(&RestrictedExpr::from((**x).clone()).to_string());
            }
        }
    }

    fn put_entity(&self, out: &mut Vec<u8>, e: &ast::Entity) {
        put(out, u64::from(self.uid_ids[e.uid()]));
        self.put_fields(out, e.attrs_len(), e.attrs());
        for set in [
            e.parents().collect::<Vec<_>>(),
            e.indirect_ancestors().collect(),
        ] {
            put(out, set.len() as u64);
            for u in set {
                put(out, u64::from(self.uid_ids[u]));
            }
        }
        self.put_fields(out, e.tags_len(), e.tags());
    }

    fn put_fields<'a>(
        &self,
        out: &mut Vec<u8>,
        n: usize,
        fields: impl Iterator<Item = (&'a SmolStr, &'a PartialValue)>,
    ) {
        put(out, n as u64);
        for (k, v) in fields {
            put(out, u64::from(self.string_ids[k]));
            // Numbered first: a residual was refused before anything was written.
            if let PartialValue::Value(v) = v {
                self.put_value(out, v);
            }
        }
    }

    fn put_value(&self, out: &mut Vec<u8>, v: &Value) {
        match v.value_kind() {
            ValueKind::Lit(Literal::Bool(b)) => out.push(u8::from(*b)),
            ValueKind::Lit(Literal::Long(n)) => {
                out.push(2);
                put(out, ((n << 1) ^ (n >> 63)) as u64);
            }
            ValueKind::Lit(Literal::String(s)) => {
                out.push(3);
                put(out, u64::from(self.string_ids[s]));
            }
            ValueKind::Lit(Literal::EntityUID(u)) => {
                out.push(4);
                put(out, u64::from(self.uid_ids[&**u]));
            }
            ValueKind::Set(set) => {
                out.push(5);
                put(out, set.len() as u64);
                for v in set.iter() {
                    self.put_value(out, v);
                }
            }
            ValueKind::Record(fields) => {
                out.push(6);
                put(out, fields.len() as u64);
                for (k, v) in fields.iter() {
                    put(out, u64::from(self.string_ids[k]));
                    self.put_value(out, v);
                }
            }
            ValueKind::ExtensionValue(x) => {
                out.push(7);
                let text = RestrictedExpr::from((**x).clone()).to_string();
                put(out, u64::from(self.string_ids[text.as_str()]));
            }
        }
    }
}

fn put(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| bad("the form ends early"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn int(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .filter(|v| v >> shift == u64::from(b & 0x7f))
                .ok_or_else(|| bad("an integer overflows"))?;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(bad("an integer overflows"))
    }

    /// A count of things still to read, each at least one byte: a count larger than what
    /// is left is refused before anything is allocated for it.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.int()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.at)
            .ok_or_else(|| bad("a count exceeds what is left"))
    }
}

fn lookup<T>(table: &[T], i: u64) -> Result<&T, DecodeError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| bad("an index names nothing"))
}

/// The tables a chunk's entities are read against, and the types kept.
struct Decoded<'a> {
    strings: &'a [SmolStr],
    types: &'a [EntityType],
    uids: &'a [Arc<EntityUID>],
    slice: Option<&'a crate::slice::EntitySlice>,
}

impl Decoded<'_> {
    fn chunk(&self, bytes: &[u8]) -> Result<Vec<ast::Entity>, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let ty = lookup(self.types, r.int()?)?;
        if self.slice.is_some_and(|s| !s.holds(ty)) {
            return Ok(Vec::new());
        }
        let n = r.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let e = self.entity(&mut r)?;
            if e.uid().entity_type() != ty {
                return Err(bad(format!("{} in a chunk of {ty}", e.uid())));
            }
            out.push(e);
        }
        if r.at != bytes.len() {
            return Err(bad("bytes after a chunk's last entity"));
        }
        Ok(out)
    }

    fn entity(&self, r: &mut Reader<'_>) -> Result<ast::Entity, DecodeError> {
        let uid = self.uid(r)?;
        // The form never holds an action (they are the schema's, added on decoding): one
        // that names itself an action is not a form `encode` wrote.
        if uid.is_action() {
            return Err(bad(format!("{uid} is an action")));
        }
        let attrs = self.fields(r)?;
        let parents = self.uid_set(r)?;
        let indirect = self.uid_set(r)?;
        let tags = self.fields(r)?;
        Ok(ast::Entity::new_with_attr_partial_value(
            uid, attrs, indirect, parents, tags,
        ))
    }

    fn uid(&self, r: &mut Reader<'_>) -> Result<EntityUID, DecodeError> {
        Ok((**lookup(self.uids, r.int()?)?).clone())
    }

    fn uid_set(&self, r: &mut Reader<'_>) -> Result<HashSet<EntityUID>, DecodeError> {
        let n = r.count()?;
        let mut set = HashSet::with_capacity(n);
        for _ in 0..n {
            set.insert(self.uid(r)?);
        }
        Ok(set)
    }

    /// An entity's attributes or tags, as stored (in name order): Cedar builds its map of
    /// them from the list in one pass, where a map built here would be built twice.
    fn fields(&self, r: &mut Reader<'_>) -> Result<Vec<(SmolStr, PartialValue)>, DecodeError> {
        let n = r.count()?;
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            let k = lookup(self.strings, r.int()?)?.clone();
            fields.push((k, PartialValue::Value(self.value(r, 0)?)));
        }
        Ok(fields)
    }

    fn value(&self, r: &mut Reader<'_>, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(bad("values nest too deep"));
        }
        Ok(match r.byte()? {
            0 => Value::from(false),
            1 => Value::from(true),
            2 => {
                let z = r.int()?;
                Value::from(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            3 => Value::from(lookup(self.strings, r.int()?)?.clone()),
            4 => Value::from(Literal::EntityUID(lookup(self.uids, r.int()?)?.clone())),
            5 => {
                let n = r.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(r, depth + 1)?);
                }
                Value::set(items, None)
            }
            6 => {
                let n = r.count()?;
                let mut fields = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = lookup(self.strings, r.int()?)?.clone();
                    fields.push((k, self.value(r, depth + 1)?));
                }
                Value::record(fields, None)
            }
            7 => {
                let text = lookup(self.strings, r.int()?)?;
                let expr: RestrictedExpr = text
                    .parse()
                    .map_err(|e| bad(format!("`{text}` is not a restricted expression: {e}")))?;
                RestrictedEvaluator::new(Extensions::all_available())
                    .interpret(expr.as_borrowed())
                    .map_err(|e| bad(format!("`{text}` does not evaluate: {e}")))?
            }
            tag => return Err(bad(format!("no value is tagged {tag}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (crate::World, Schema) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/world");
        let world = crate::World::load(&[dir]).expect("the example world loads");
        (world, lattice_schemas::cedar::schema().clone())
    }

    #[test]
    fn decoding_gives_back_the_entities_projection_made() {
        let (world, schema) = example();
        let entities = crate::Projection::of(&world)
            .into_entities(&world, &schema)
            .unwrap();
        let bytes = encode(&entities).expect("projection makes no residual");
        let back = decode(&bytes, &schema).unwrap();
        assert!(
            back.deep_eq(&entities),
            "the same entities, ancestors and actions"
        );
        // Decimals (quota requests) and records are among them.
        let mut json = Vec::new();
        back.write_to_json(&mut json).unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(json.contains("decimal"), "an extension value went through");
    }

    #[test]
    fn a_slice_reads_back_exactly_the_entities_of_its_types() {
        let (world, schema) = example();
        let entities = crate::Projection::of(&world)
            .into_entities(&world, &schema)
            .unwrap();
        let bytes = encode(&entities).unwrap();
        let store = crate::PolicyStore::bundled().unwrap();
        let slice = crate::EntitySlice::for_actions(&schema, &store, &["Connect"]).unwrap();
        let back = decode_slice(&bytes, &schema, Some(&slice)).unwrap();
        let (mut kept, mut left) = (0, 0);
        for e in entities.iter() {
            let e: &ast::Entity = e.as_ref();
            let read = back.get(&e.uid().clone().into());
            if e.uid().is_action() || slice.holds(e.uid().entity_type()) {
                let read: &ast::Entity = read.expect("a held entity is read back").as_ref();
                assert!(read.deep_eq(e), "{} as stored", e.uid());
                kept += 1;
            } else {
                assert!(
                    read.is_none(),
                    "{} is of a type the slice leaves out",
                    e.uid()
                );
                left += 1;
            }
        }
        assert_eq!(back.iter().count(), kept, "nothing else");
        assert!(
            kept > 0 && left > 0,
            "the example world has both ({kept}, {left})"
        );
    }

    #[test]
    fn every_damaged_form_is_an_error_not_a_panic() {
        let (world, schema) = example();
        let entities = crate::Projection::of(&world)
            .into_entities(&world, &schema)
            .unwrap();
        let bytes = encode(&entities).unwrap();
        // Cut short anywhere, or with any one byte changed at a spread of places: never a
        // panic, and never silently the same set when a cut removed anything.
        for cut in (0..bytes.len()).step_by(97) {
            assert!(decode(&bytes[..cut], &schema).is_err(), "cut at {cut}");
        }
        // A changed byte may still make a well-formed set (another text or number): that
        // is what the cache's body digest catches. Here, only that it never panics.
        for at in (0..bytes.len()).step_by(31) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xa5;
            let _ = decode(&damaged, &schema);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, &schema).is_err(), "trailing bytes");
        // An entity typed as an action (which `encode` leaves out) is refused.
        let action = ast::Entity::with_uid("Other::Action::\"x\"".parse().unwrap());
        let mut all: Vec<&ast::Entity> = entities
            .iter()
            .map(|e| e.as_ref())
            .filter(|e| !e.uid().is_action())
            .collect();
        all.push(&action);
        let forged = encode_all(&all).unwrap();
        let err = decode(&forged, &schema).unwrap_err().to_string();
        assert!(err.contains("is an action"), "{err}");
    }

    /// The fuzz target's seed is the current form of a one-namespace world (regenerate with
    /// `LATTICE_UPDATE_GENERATED=1` after a change of layout).
    #[test]
    fn the_fuzz_seed_is_a_current_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: web\n",
        )
        .unwrap();
        let world = crate::World::load(&[dir.path().to_path_buf()]).unwrap();
        let schema = lattice_schemas::cedar::schema();
        let entities = crate::Projection::of(&world)
            .into_entities(&world, schema)
            .unwrap();
        let bytes = encode(&entities).unwrap();
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/stored_entities/namespace.bin");
        if std::env::var_os("LATTICE_UPDATE_GENERATED").is_some() {
            std::fs::create_dir_all(seed.parent().unwrap()).unwrap();
            std::fs::write(&seed, &bytes).unwrap();
        }
        let stored = std::fs::read(&seed).expect("the seed is committed");
        assert!(decode(&stored, schema).unwrap().deep_eq(&entities));
    }
}
