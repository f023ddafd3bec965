//! The command line's cache of projected entities as `entity_codec::decode` reads it:
//! whatever bytes an entry holds, decoding answers entities or an error and never panics
//! (counts larger than the entry, indexes that name nothing, values nested without end,
//! texts that are not UTF-8 or not Cedar). What does decode encodes and decodes to the
//! same entities again.
#![no_main]

use lattice_engine::entity_codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let schema = lattice_schemas::cedar::schema();
    if let Ok(entities) = decode(data, schema) {
        let again = encode(&entities).expect("decoded entities hold no residual");
        let back = decode(&again, schema).expect("what was encoded decodes");
        assert!(back.deep_eq(&entities), "a round trip keeps the entities");
    }
});
