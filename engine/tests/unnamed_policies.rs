//! Policies without `@id`, as Cedar itself and upstream Lattice write them: named by their
//! place (`policy0`, `policy1`, …) inside their object's or pack's stable id, with a warning;
//! a rule pack accepts them only when its `pack.yaml` says so.

use lattice_engine::PolicyStore;
use lattice_schemas::crd::CedarPolicy;
use lattice_schemas::crd::policy::CedarPolicySpec;

const UNNAMED: &str = "permit (principal, action == Lattice::Action::\"Connect\", resource);\n\n@id(\"named\")\nforbid (principal, action == Lattice::Action::\"Connect\", resource) when { false };\n\nforbid (principal, action == Lattice::Action::\"Connect\", resource) when { false };\n";

#[test]
fn a_cedar_policy_without_ids_is_accepted_under_cedars_names() {
    let check = lattice_schemas::cedar::check_policies(UNNAMED);
    assert!(!check.has_errors(), "{:?}", check.problems);
    let warnings: Vec<_> = check
        .problems
        .iter()
        .filter(|p| p.warning && p.message.contains("no `@id`"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].message.contains("`policy0`"));
    let mut object = CedarPolicy::new(
        "upstream",
        CedarPolicySpec {
            policies: UNNAMED.into(),
            ..Default::default()
        },
    );
    object.metadata.namespace = Some("shop".into());
    let mut store = PolicyStore::new();
    assert_eq!(store.apply_object(&object).unwrap(), 3);
    let ids: Vec<String> = store.active().map(|p| p.info.id.clone()).collect();
    for id in [
        "shop/upstream/policy0",
        "shop/upstream/named",
        "shop/upstream/policy2",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} in {ids:?}");
    }
    // An explicit id that a generated name would take is still a conflict.
    // (the third policy, unnamed, would be `policy2`)
    let clash = format!("@id(\"policy2\")\n{UNNAMED}");
    assert!(lattice_schemas::cedar::check_policies(&clash).has_errors());
}

#[test]
fn a_rule_pack_accepts_unnamed_policies_only_when_its_pack_yaml_says_so() {
    let dir = std::env::temp_dir().join(format!("lattice-unnamed-{}", std::process::id()));
    let pack = dir.join("upstream");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("rules.cedar"), UNNAMED).unwrap();
    std::fs::write(pack.join("pack.yaml"), "name: upstream\nversion: 0.1.0\n").unwrap();
    let Err(err) = PolicyStore::load_packs(&dir) else {
        panic!("refused without the flag")
    };
    assert!(err.to_string().contains("allowUnnamedPolicies"), "{err}");
    std::fs::write(
        pack.join("pack.yaml"),
        "name: upstream\nversion: 0.1.0\nallowUnnamedPolicies: true\n",
    )
    .unwrap();
    let store = PolicyStore::load_packs(&dir).unwrap();
    assert!(store.active().any(|p| p.info.id == "upstream/policy0"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The packs compiled into the binaries are exactly the repository's `policies/`.
#[test]
fn the_bundled_packs_are_the_repositorys() {
    let root = lattice_testkit::workspace_root().join("policies");
    let on_disk = PolicyStore::load_packs(&root).unwrap();
    let bundled = PolicyStore::bundled().unwrap();
    assert_eq!(bundled.digest(), on_disk.digest());
    assert!(bundled.packs().count() >= 5);
}
