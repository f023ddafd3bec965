//! The operator's watch-object decoding: whatever JSON a watch delivers, under any kind it
//! could arrive as, the index takes it in or refuses it with an error, and never panics; a
//! refused object changes nothing, and the world still snapshots.
#![no_main]

use std::sync::{Arc, OnceLock};

use lattice_controllers::operator::index::Index;
use lattice_controllers::webhook::stamp::AdmissionKey;
use lattice_engine::PolicyStore;
use lattice_schemas::crd::Kind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    static PACKS: OnceLock<PolicyStore> = OnceLock::new();
    let packs = PACKS.get_or_init(|| PolicyStore::bundled().expect("the bundled packs load"));
    let key = Arc::new(AdmissionKey::from_bytes(&[7u8; 32]).expect("a 32-byte key"));
    let mut index = Index::new(packs.clone(), key);
    let kinds = Kind::ALL.iter().map(|k| k.name()).chain(["Namespace"]);
    for kind in kinds {
        let before = index.world().digest();
        if index.apply(kind, &value).is_err() {
            assert_eq!(index.world().digest(), before, "a refused object changed the world");
        }
    }
});
