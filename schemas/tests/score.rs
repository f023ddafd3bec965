//! Score compatibility: every Score document loads as a LatticeService body, field for
//! field, with no unknown-field error.

mod common;

use lattice_schemas::diagnostics::SourceFile;
use lattice_schemas::manifest::{Object, load_source, score};
use serde_json::Value;

fn fixtures() -> Vec<std::path::PathBuf> {
    let files = common::files_with_ext(&common::workspace().join("examples/score"), "yaml");
    assert!(files.len() >= 4, "Score fixtures missing");
    files
}

/// The fixtures really are Score: they validate against the official Score schema.
#[test]
fn fixtures_are_valid_score() {
    let Some(reference) = common::reference_dir() else {
        return;
    };
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(reference.join("score/score-v1b1.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).unwrap();
        let (docs, err) = lattice_schemas::manifest::yaml::parse_documents(&text);
        assert!(err.is_empty(), "{}: {err:?}", path.display());
        for doc in docs {
            let errors: Vec<String> = validator
                .iter_errors(&doc.value)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{} is not valid Score: {errors:?}",
                path.display()
            );
        }
    }
}

/// Every fixture loads with no finding, and nothing is lost on the way: the typed
/// LatticeService serializes back to exactly the imported document.
#[test]
fn fixtures_load_as_lattice_services_losslessly() {
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = SourceFile::new(path.display().to_string(), text.clone());
        let loaded = load_source(&file);
        let findings: Vec<String> = loaded.findings.iter().map(|f| f.message.clone()).collect();
        assert!(findings.is_empty(), "{}: {findings:?}", path.display());
        let (docs, _) = lattice_schemas::manifest::yaml::parse_documents(&text);
        assert_eq!(loaded.manifests.len(), docs.len());
        for (m, doc) in loaded.manifests.iter().zip(docs) {
            let Object::Service(svc) = &m.object else {
                panic!("{} did not load as a LatticeService", path.display())
            };
            let imported = score::to_lattice_service(&doc.value).unwrap();
            let round_trip = serde_json::to_value(svc).unwrap();
            assert_eq!(
                round_trip,
                imported,
                "{}: fields were lost or changed",
                path.display()
            );
            assert_eq!(
                Some(svc.metadata.name.as_deref().unwrap()),
                doc.value["metadata"]["name"].as_str()
            );
        }
    }
}

/// Every property the Score schema defines for a container and a resource is used by some
/// fixture, so the tests above cover the whole specification.
#[test]
fn fixtures_cover_every_score_field() {
    let Some(reference) = common::reference_dir() else {
        return;
    };
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(reference.join("score/score-v1b1.json")).unwrap(),
    )
    .unwrap();
    let mut used = std::collections::BTreeSet::new();
    for path in fixtures() {
        let (docs, _) = lattice_schemas::manifest::yaml::parse_documents(
            &std::fs::read_to_string(&path).unwrap(),
        );
        for d in docs {
            collect_keys(&d.value, &mut used);
        }
    }
    let mut missing = Vec::new();
    for (def, props) in schema["$defs"].as_object().unwrap() {
        for key in props
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !used.contains(key.as_str()) {
                missing.push(format!("{def}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "no fixture uses: {missing:?}");
}

fn collect_keys(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                collect_keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_keys(v, out)),
        _ => {}
    }
}

#[test]
fn deprecated_list_forms_become_maps_keyed_by_target() {
    let doc = serde_json::json!({
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "legacy", "team": "payments"},
        "containers": {"main": {
            "image": "busybox",
            "files": [{"target": "/etc/app.conf", "content": "x"}],
            "volumes": [{"target": "/data", "source": "${resources.data}"}]
        }}
    });
    let svc = score::to_lattice_service(&doc).unwrap();
    assert_eq!(
        svc["spec"]["containers"]["main"]["files"]["/etc/app.conf"]["content"],
        "x"
    );
    assert_eq!(
        svc["spec"]["containers"]["main"]["volumes"]["/data"]["source"],
        "${resources.data}"
    );
    assert_eq!(
        svc["metadata"]["annotations"][score::SCORE_METADATA_ANNOTATION],
        r#"{"team":"payments"}"#
    );
    let bad = serde_json::json!({"apiVersion": "score.dev/v1b1", "metadata": {"name": "x"},
        "containers": {"main": {"image": "busybox", "files": [{"content": "x"}]}}});
    let err = score::to_lattice_service(&bad).unwrap_err();
    assert_eq!(err.pointer, "/containers/main/files/0");
}
