//! The command line's cache of projected entities as `entity_codec::decode` reads it:
//! whatever bytes an entry holds, decoding answers entities or an error and never panics
//! (counts larger than the entry, indexes that name nothing, values nested without end,
//! texts that are not UTF-8 or not Cedar). What does decode encodes and decodes to the
//! same entities again. Reading only a slice's types (what `mesh` reads) never panics
//! either.
#![no_main]

use std::sync::OnceLock;

use lattice_engine::entity_codec::{decode, decode_slice, encode};
use lattice_engine::{EntitySlice, PolicyStore};
use libfuzzer_sys::fuzz_target;

fn mesh_slice() -> &'static EntitySlice {
    static SLICE: OnceLock<EntitySlice> = OnceLock::new();
    SLICE.get_or_init(|| {
        let store = PolicyStore::bundled().expect("the bundled packs load");
        EntitySlice::for_actions(lattice_schemas::cedar::schema(), &store, &["Connect"])
            .expect("Connect takes a slice")
    })
}

fuzz_target!(|data: &[u8]| {
    let schema = lattice_schemas::cedar::schema();
    let _ = decode_slice(data, schema, Some(mesh_slice()));
    if let Ok(entities) = decode(data, schema) {
        let again = encode(&entities).expect("decoded entities hold no residual");
        let back = decode(&again, schema).expect("what was encoded decodes");
        assert!(back.deep_eq(&entities), "a round trip keeps the entities");
    }
});
