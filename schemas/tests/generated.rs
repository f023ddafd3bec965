//! The checked-in CRDs and JSON Schemas must be what the Rust types generate.

use std::path::Path;

use lattice_schemas::generate::{REGENERATE_COMMAND, artifacts};

#[test]
fn generated_artifacts_are_fresh() {
    let root = lattice_testkit::workspace_root().join("schemas");
    let update = std::env::var_os("LATTICE_UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    let expected: Vec<_> = artifacts();
    for artifact in &expected {
        let path = root.join(&artifact.path);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != artifact.contents {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &artifact.contents).unwrap();
            } else {
                stale.push(artifact.path.display().to_string());
            }
        }
    }
    // Files that no kind generates any more are stale too.
    for dir in ["crds", "jsonschema"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let rel = Path::new(dir).join(entry.file_name());
            if !expected.iter().any(|a| a.path == rel) {
                if update {
                    std::fs::remove_file(entry.path()).unwrap();
                } else {
                    stale.push(format!("{} (no longer generated)", rel.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are stale: {}\nregenerate them with:\n    {REGENERATE_COMMAND}",
        stale.join(", ")
    );
}

/// Every CRD reads back as a `CustomResourceDefinition` and is structural where the API
/// server insists: no object declares both `properties` and `additionalProperties`.
#[test]
fn crds_are_well_formed_and_structural() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use lattice_schemas::crd::Kind;
    fn walk(v: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
        if let Some(m) = v.as_object() {
            if m.contains_key("properties") && m.contains_key("additionalProperties") {
                problems.push(path.to_owned());
            }
            for (k, v) in m {
                walk(v, &format!("{path}/{k}"), problems);
            }
        }
    }
    for kind in Kind::ALL {
        let json = lattice_schemas::generate::crd_json(kind);
        let crd: CustomResourceDefinition = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(crd.spec.group, "lattice.dev");
        assert_eq!(crd.spec.names.kind, kind.name());
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{kind} has no short name"
        );
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} has no status subresource"
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| !c.is_empty()),
            "{kind} has no printer columns"
        );
        let mut problems = Vec::new();
        walk(&json, "", &mut problems);
        assert!(
            problems.is_empty(),
            "{kind}: non-structural schema at {problems:?}"
        );
    }
}

/// The JSON Schemas are strict at every depth and accept a full object.
#[test]
fn json_schemas_reject_unknown_fields_at_any_depth() {
    use lattice_schemas::crd::Kind;
    use serde_json::json;
    let v = jsonschema::validator_for(lattice_schemas::generate::json_schema(Kind::LatticeService))
        .unwrap();
    let ok = json!({"apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
        "metadata": {"name": "a", "namespace": "b"},
        "spec": {"containers": {"main": {"image": "nginx", "security": {"capabilities": ["NET_ADMIN"]}}},
                 "resources": {"db": {"type": "postgres", "params": {"anything": {"goes": [1]}}}}}});
    assert!(
        v.is_valid(&ok),
        "{:?}",
        v.iter_errors(&ok)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    let mut deep = ok.clone();
    deep["spec"]["containers"]["main"]["security"]["capabilitiez"] = json!([]);
    assert!(!v.is_valid(&deep));
    let mut meta = ok.clone();
    meta["metadata"]["labelz"] = json!({});
    assert!(!v.is_valid(&meta));
    let mut kind = ok;
    kind["kind"] = json!("LatticeJob");
    assert!(!v.is_valid(&kind));
}
