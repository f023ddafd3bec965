//! Nothing a CedarPolicy author writes makes the policy store panic: mangled versions of the
//! shipped rule packs are either stored or rejected with problems, and a rejection leaves
//! the store unchanged.

use lattice_engine::PolicyStore;
use lattice_schemas::crd::CedarPolicy;
use proptest::prelude::*;

fn seeds() -> Vec<String> {
    let root = lattice_testkit::workspace_root().join("policies");
    let mut out = Vec::new();
    for pack in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(pack.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "cedar") {
                out.push(std::fs::read_to_string(f.path()).unwrap());
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mangled_policies_are_stored_or_rejected_never_panic(
        seed in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        insert in prop_oneof![Just(";".to_owned()), Just("\"".to_owned()), Just("@id(\"x\")".to_owned()), Just("//".to_owned()), Just("}".to_owned()), Just("when {".to_owned()), Just("\n".to_owned()), ".{0,6}"],
    ) {
        let seeds = seeds();
        let text = &seeds[seed.index(seeds.len())];
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mangled = format!("{}{insert}{}", &text[..at], &text[at..]);
        let mut object = CedarPolicy::new("fuzz", lattice_schemas::crd::policy::CedarPolicySpec { policies: mangled, ..Default::default() });
        object.metadata.namespace = Some("fuzz".into());
        let mut store = PolicyStore::new();
        let before = store.digest();
        match store.apply_object(&object) {
            Ok(n) => prop_assert_eq!(store.active().count(), n),
            Err(_) => prop_assert_eq!(store.digest(), before),
        }
    }
}
