//! The compliance packs cite real controls: every id is in the reference lists of
//! `../shared/reference/` (NIST SP 800-53 rev5 baselines, CIS Kubernetes 1.10, the SOC 2
//! list), with the reference's titles, and every check says what it evidences.

mod support;

use std::collections::BTreeSet;

use lattice_compliance::frameworks;
use lattice_engine::PolicyStore;
use serde_json::Value;
use support::{reference_dir, root};

fn store() -> PolicyStore {
    PolicyStore::load_packs(&root().join("policies")).expect("the packs load")
}

fn json(path: std::path::PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("JSON")
}

#[test]
fn packs_hold_at_least_forty_checks_each_with_controls_title_severity_and_remediation() {
    let all = frameworks(&store(), &[]).expect("catalog");
    let ids: Vec<&str> = all.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids,
        ["nist-800-53", "soc2", "cis-kubernetes", "pod-security"]
    );
    let total: usize = all.iter().map(|f| f.checks.len()).sum();
    assert!(total >= 40, "{total} checks");
    for fw in &all {
        for c in &fw.checks {
            assert!(!c.title.is_empty() && c.title != c.id(), "{}", c.id());
            assert!(!c.remediation.is_empty(), "{} has no remediation", c.id());
            assert!(!c.applies_to.is_empty(), "{}", c.id());
            for control in &c.controls {
                assert!(
                    fw.controls.contains_key(control),
                    "{} cites {control}, which {}'s pack.yaml does not title",
                    c.id(),
                    fw.id
                );
                assert!(
                    !fw.not_assessed.contains_key(control),
                    "{} evidences {control}, which the pack says Lattice cannot assess",
                    c.id()
                );
            }
        }
        for control in fw.controls.keys().chain(fw.not_assessed.keys()) {
            let family = lattice_compliance::catalog::family_of(control);
            assert!(
                fw.families.contains_key(&family),
                "{}: no family title for {family}",
                fw.id
            );
        }
    }
}

/// `SC-7(5)` → `sc-7.5`, the catalog's id.
fn nist_catalog_id(id: &str) -> String {
    id.to_ascii_lowercase().replace('(', ".").replace(')', "")
}

#[test]
fn nist_controls_are_real_baseline_controls_with_their_titles() {
    let Some(dir) = reference_dir() else { return };
    let reference = json(dir.join("oscal/sp800-53r5-baseline-control-ids.json"));
    let controls = &reference["controls"];
    let all = frameworks(&store(), &["nist-800-53".into()]).unwrap();
    let fw = &all[0];
    for (id, title) in &fw.controls {
        let entry = &controls[nist_catalog_id(id)];
        assert!(
            entry.is_object(),
            "{id} is not in the NIST SP 800-53 rev5 baselines"
        );
        assert_eq!(entry["title"].as_str(), Some(title.as_str()), "{id}");
    }
    for id in fw.not_assessed.keys() {
        assert!(controls[nist_catalog_id(id)].is_object(), "{id}");
    }
}

#[test]
fn cis_controls_are_real_benchmark_recommendations_with_their_text() {
    let Some(dir) = reference_dir() else { return };
    let reference = json(dir.join("frameworks/cis-control-ids.json"));
    let checks = reference["cis-1.10"]["checks"].as_array().unwrap();
    let all = frameworks(&store(), &["cis-kubernetes".into()]).unwrap();
    let fw = &all[0];
    for (id, title) in &fw.controls {
        let entry = checks
            .iter()
            .find(|c| c["id"].as_str() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} is not in CIS Kubernetes 1.10"));
        let text = entry["text"].as_str().unwrap();
        let text = text
            .trim_end_matches(" (Manual)")
            .trim_end_matches(" (Automated)");
        assert_eq!(text, title, "{id}");
    }
}

#[test]
fn soc2_criteria_are_trust_services_criteria() {
    let criteria = support::tsc_2017();
    let all = frameworks(&store(), &["soc2".into()]).unwrap();
    for id in all[0].controls.keys().chain(all[0].not_assessed.keys()) {
        assert!(
            criteria.contains(id),
            "{id} is not a 2017 Trust Services Criterion"
        );
    }
    let Some(dir) = reference_dir() else { return };
    let reference = json(dir.join("frameworks/kubescape-soc2.json"));
    let named: BTreeSet<String> = reference["activeControls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["patch"]["name"].as_str())
        .filter_map(|n| n.rsplit_once('(').map(|(_, ids)| ids.trim_end_matches(')')))
        .flat_map(|ids| ids.split(',').map(|s| s.trim().to_owned()))
        .collect();
    assert!(!named.is_empty());
    for id in &named {
        assert!(criteria.contains(id), "the reference names {id}");
    }
}

#[test]
fn a_check_must_cite_its_frameworks_controls() {
    use lattice_compliance::catalog::CatalogError;
    let mut store = store();
    let bad = r#"
@id("uncited")
@title("No control")
@severity("high")
forbid (
  principal is Lattice::Namespace,
  action == Lattice::Action::"Comply",
  resource == Lattice::Framework::"soc2"
);
"#;
    let policies = lattice_engine::policies::parse_checked(
        bad,
        "team/checks",
        lattice_schemas::crd::EnforcementMode::Enforce,
        &lattice_engine::PolicySource::Object {
            namespace: "team".into(),
            name: "checks".into(),
        },
    )
    .expect("valid Cedar");
    store.insert_pack(lattice_engine::policies::Pack {
        meta: lattice_engine::policies::PackMeta {
            name: "team".into(),
            version: "0".into(),
            ..Default::default()
        },
        policies,
    });
    match frameworks(&store, &[]) {
        Err(CatalogError::BadCheck { check, message }) => {
            assert_eq!(check, "team/checks/uncited");
            assert!(message.contains("@control"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        frameworks(&self::store(), &["iso-27001".into()]),
        Err(CatalogError::UnknownFramework(..))
    ));
}

#[test]
fn a_partial_entry_must_name_one_of_the_packs_controls() {
    use lattice_compliance::catalog::CatalogError;
    let pack = |partial: &[(&str, &str)]| lattice_engine::policies::Pack {
        meta: lattice_engine::policies::PackMeta {
            name: "org-nist".into(),
            version: "0".into(),
            framework: Some("org-nist".into()),
            controls: [("AC-6".to_owned(), "Least Privilege".to_owned())].into(),
            partial: partial
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        },
        policies: Vec::new(),
    };
    let mut ok = store();
    ok.insert_pack(pack(&[("AC-6", "workloads only")]));
    let all = frameworks(&ok, &["org-nist".into()]).expect("a known control is accepted");
    assert_eq!(all[0].partial["AC-6"], "workloads only");

    // A typo would leave the control it meant reading "satisfied": refused, naming both.
    let mut bad = store();
    bad.insert_pack(pack(&[("AC-66", "workloads only")]));
    match frameworks(&bad, &[]) {
        Err(e @ CatalogError::UnknownPartial { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("org-nist") && message.contains("AC-66"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_shipped_packs_partial_entries_are_their_controls() {
    // The loader would refuse them; this says which pack is wrong if one ever is.
    for fw in frameworks(&store(), &[]).expect("the shipped packs load") {
        for id in fw.partial.keys() {
            assert!(fw.controls.contains_key(id), "{} partial {id}", fw.id);
            assert!(
                !fw.not_assessed.contains_key(id),
                "{} {id} is both partial and not assessed",
                fw.id
            );
        }
    }
}

#[test]
fn loading_a_pack_whose_partial_names_no_control_is_an_error_at_that_line() {
    let dir = std::env::temp_dir().join(format!("lattice-partial-{}", std::process::id()));
    let pack = dir.join("org-nist");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(
        pack.join("pack.yaml"),
        "name: org-nist\nversion: 0.1.0\nframework: org-nist\ncontrols:\n  AC-6: Least Privilege\npartial:\n  AC-66: workloads only\n",
    )
    .unwrap();
    let result = PolicyStore::load_packs(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Err(lattice_engine::policies::PolicyError::Packs(report)) => {
            let said = format!("{report:?}");
            assert!(
                said.contains("`partial` names AC-66, which is not one of the pack's `controls`"),
                "{said}"
            );
        }
        other => panic!(
            "expected the pack to be refused, got {:?}",
            other.map(|_| ())
        ),
    }
}
