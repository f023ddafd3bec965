//! The real schemas of the reference material as validators, made strict so an unknown
//! field fails as it would under `kubectl apply --validate=strict`. CEL rules
//! (`x-kubernetes-validations`) are the API server's: tests that need them apply to a real
//! one.

use std::path::Path;

use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

/// The documents of a YAML stream as JSON (the CRD files are plain YAML: no anchors or
/// tags that JSON cannot hold).
pub(crate) fn yaml_documents(text: &str) -> Vec<Value> {
    fn json(y: &Yaml) -> Value {
        match y {
            Yaml::Real(r) => r.parse::<f64>().map_or(Value::Null, |f| json!(f)),
            Yaml::Integer(i) => json!(i),
            Yaml::String(s) => json!(s),
            Yaml::Boolean(b) => json!(b),
            Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Yaml::String(s) => s.clone(),
                            Yaml::Integer(i) => i.to_string(),
                            Yaml::Boolean(b) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (key, json(v))
                    })
                    .collect::<Map<String, Value>>(),
            ),
            _ => Value::Null,
        }
    }
    YamlLoader::load_from_str(text)
        .expect("reference YAML parses")
        .iter()
        .map(json)
        .collect()
}

/// Objects with declared properties reject any other (as `kubectl --validate=strict`);
/// OpenAPI `nullable` becomes a null type.
fn strictify(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = m.get("type").cloned()
            {
                m.insert("type".into(), json!([t, "null"]));
            }
            let preserve =
                m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            // Only object schemas: `anyOf`/`oneOf` branches name properties just to require them.
            let object = m.get("type") == Some(&json!("object"));
            if object
                && m.contains_key("properties")
                && !m.contains_key("additionalProperties")
                && !preserve
            {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            m.values_mut().for_each(strictify);
        }
        Value::Array(a) => a.iter_mut().for_each(strictify),
        _ => {}
    }
}

/// The reference schemas, by kind: Kubernetes' OpenAPI (core and apps) and every CRD.
pub struct Validators {
    kube: Vec<(String, Value)>,
    /// (apiVersion, kind) → schema, from every reference CRD.
    crds: Vec<(String, String, Value)>,
}

impl Validators {
    /// Reads every schema under `dir` (the reference material). Panics on a file that is
    /// not there or not readable: the reference material is the tests' ground truth.
    pub fn load(dir: &Path) -> Validators {
        let mut kube = Vec::new();
        for file in [
            "k8s-openapi/api__v1_openapi.k8s-1.31.json",
            "k8s-openapi/apis__apps__v1_openapi.k8s-1.31.json",
        ] {
            let mut doc: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            strictify(&mut doc["components"]);
            kube.push((file.to_owned(), doc["components"].clone()));
        }
        let mut crds = Vec::new();
        let mut stack = vec![dir.join("crds")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "yaml") {
                    continue;
                }
                for doc in yaml_documents(&std::fs::read_to_string(&p).unwrap()) {
                    let spec = &doc["spec"];
                    let (Some(group), Some(kind)) =
                        (spec["group"].as_str(), spec["names"]["kind"].as_str())
                    else {
                        continue;
                    };
                    for v in spec["versions"].as_array().into_iter().flatten() {
                        let mut schema = v["schema"]["openAPIV3Schema"].clone();
                        // The API server checks these itself; some CRDs leave them out.
                        for (field, ty) in [
                            ("apiVersion", "string"),
                            ("kind", "string"),
                            ("metadata", "object"),
                        ] {
                            if schema["properties"].get(field).is_none() {
                                schema["properties"][field] = json!({"type": ty});
                            }
                        }
                        strictify(&mut schema);
                        crds.push((
                            format!("{group}/{}", v["name"].as_str().unwrap()),
                            kind.to_owned(),
                            schema,
                        ));
                    }
                }
            }
        }
        // Cilium's schemas come as plain JSON Schemas.
        let mut cnp: Value = serde_json::from_str(
            &std::fs::read_to_string(
                dir.join("crds/cilium/ciliumnetworkpolicy_v2.jsonschema.json"),
            )
            .unwrap(),
        )
        .unwrap();
        strictify(&mut cnp);
        crds.push(("cilium.io/v2".into(), "CiliumNetworkPolicy".into(), cnp));
        Validators { kube, crds }
    }

    /// Validation errors of one object (`None` when its kind has no reference schema).
    pub fn check(&self, object: &Value) -> Option<Vec<String>> {
        let kind = object["kind"].as_str().unwrap();
        let api_version = object["apiVersion"].as_str().unwrap();
        let schema = match api_version {
            "v1" => self.component(&format!("io.k8s.api.core.v1.{kind}"))?,
            "apps/v1" => self.component(&format!("io.k8s.api.apps.v1.{kind}"))?,
            _ => self
                .crds
                .iter()
                .find(|(v, k, _)| v == api_version && k == kind)
                .map(|(_, _, s)| s.clone())?,
        };
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .unwrap();
        Some(
            validator
                .iter_errors(object)
                .map(|e| format!("{} at {}", e, e.instance_path().as_str()))
                .collect(),
        )
    }

    /// A Kubernetes OpenAPI component (`io.k8s.api.core.v1.PodTemplateSpec`) as a schema.
    pub fn component(&self, name: &str) -> Option<Value> {
        let (_, components) = self
            .kube
            .iter()
            .find(|(_, c)| c["schemas"].get(name).is_some())?;
        let mut root = components["schemas"][name].clone();
        root["components"] = components.clone();
        Some(root)
    }
}
