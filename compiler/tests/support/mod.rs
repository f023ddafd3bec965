//! Test support: the real schemas of `../shared/reference/` as validators, made strict so an
//! unknown field fails as it would under `kubectl apply --validate=strict`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

/// The reference material (see `lattice_testkit::reference_dir`).
pub fn reference_dir() -> Option<PathBuf> {
    lattice_testkit::reference_dir()
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

pub struct Validators {
    kube: Vec<(String, Value)>,
    /// (apiVersion, kind) → schema, from every reference CRD.
    crds: Vec<(String, String, Value)>,
}

impl Validators {
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
                let (docs, _) = lattice_schemas::manifest::yaml::parse_documents(
                    &std::fs::read_to_string(&p).unwrap(),
                );
                for doc in docs {
                    let spec = &doc.value["spec"];
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

    fn component(&self, name: &str) -> Option<Value> {
        let (_, components) = self
            .kube
            .iter()
            .find(|(_, c)| c["schemas"].get(name).is_some())?;
        let mut root = components["schemas"][name].clone();
        root["components"] = components.clone();
        Some(root)
    }
}

impl Validators {
    /// Every problem of one derived object. Kinds without a reference schema are read
    /// strictly as typed objects instead (policy/v1 PodDisruptionBudget, cert-manager's
    /// Certificate, Volcano's Job and CronJob, whose pod templates are checked against the
    /// Kubernetes PodTemplateSpec schema).
    pub fn problems(&self, o: &Value) -> Vec<String> {
        if let Some(errors) = self.check(o) {
            return errors;
        }
        let typed = |r: Result<(), serde_json::Error>| {
            r.err()
                .map(|e| e.to_string())
                .into_iter()
                .collect::<Vec<_>>()
        };
        match (o["apiVersion"].as_str(), o["kind"].as_str()) {
            (Some("policy/v1"), Some("PodDisruptionBudget")) => {
                typed(serde_json::from_value::<k8s_like::Pdb>(o.clone()).map(drop))
            }
            (Some("cert-manager.io/v1"), Some("Certificate")) => {
                typed(serde_json::from_value::<k8s_like::Certificate>(o.clone()).map(drop))
            }
            (Some("batch.volcano.sh/v1alpha1"), Some(kind @ ("Job" | "CronJob"))) => {
                let spec = if kind == "Job" {
                    &o["spec"]
                } else {
                    &o["spec"]["jobTemplate"]["spec"]
                };
                let mut errors = if kind == "Job" {
                    typed(serde_json::from_value::<k8s_like::VolcanoJob>(o.clone()).map(drop))
                } else {
                    typed(serde_json::from_value::<k8s_like::VolcanoCronJob>(o.clone()).map(drop))
                };
                let template = self
                    .component("io.k8s.api.core.v1.PodTemplateSpec")
                    .expect("PodTemplateSpec schema");
                let validator = jsonschema::options()
                    .should_validate_formats(false)
                    .build(&template)
                    .unwrap();
                for task in spec["tasks"].as_array().into_iter().flatten() {
                    errors.extend(validator.iter_errors(&task["template"]).map(|e| {
                        format!(
                            "task {}: {} at {}",
                            task["name"],
                            e,
                            e.instance_path().as_str()
                        )
                    }));
                }
                errors
            }
            (v, k) => vec![format!("no schema known for {v:?} {k:?}")],
        }
    }
}

/// A strict reading of policy/v1 PodDisruptionBudget's fields used here.
#[allow(dead_code)]
pub mod k8s_like {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Pdb {
        api_version: String,
        kind: String,
        metadata: serde_json::Value,
        spec: Spec,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Certificate {
        api_version: String,
        kind: String,
        metadata: serde_json::Value,
        spec: CertificateSpec,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct CertificateSpec {
        secret_name: String,
        dns_names: Vec<String>,
        issuer_ref: IssuerRef,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct IssuerRef {
        name: String,
        kind: String,
        group: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Spec {
        max_unavailable: i32,
        selector: serde_json::Value,
    }

    /// Volcano's `batch.volcano.sh/v1alpha1` Job, the fields Lattice writes.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct VolcanoJob {
        api_version: String,
        kind: String,
        metadata: serde_json::Value,
        spec: VolcanoJobSpec,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct VolcanoCronJob {
        api_version: String,
        kind: String,
        metadata: serde_json::Value,
        spec: CronSpec,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct CronSpec {
        schedule: String,
        concurrency_policy: String,
        job_template: JobTemplate,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct JobTemplate {
        spec: VolcanoJobSpec,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct VolcanoJobSpec {
        scheduler_name: String,
        min_available: i32,
        queue: String,
        max_retry: i32,
        plugins: std::collections::BTreeMap<String, Vec<String>>,
        policies: Vec<LifecyclePolicy>,
        tasks: Vec<Task>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LifecyclePolicy {
        event: String,
        action: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Task {
        name: String,
        replicas: i32,
        template: serde_json::Value,
    }
}
