//! Test support: the real schemas of `../shared/reference/` as validators, made strict so an
//! unknown field fails as it would under `kubectl apply --validate=strict`.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

pub use lattice_testkit::schemas::Validators;

pub fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

/// The reference material (see `lattice_testkit::reference_dir`).
pub fn reference_dir() -> Option<PathBuf> {
    lattice_testkit::reference_dir()
}

/// Every problem of one derived object, beyond what the reference schemas check.
pub trait Problems {
    fn problems(&self, o: &Value) -> Vec<String>;
}

impl Problems for Validators {
    /// Every problem of one derived object against its reference schema (the Kubernetes
    /// OpenAPI, or the owning project's CRD: cert-manager's, Volcano's, …). policy/v1
    /// PodDisruptionBudget, which the reference OpenAPI lacks, is read strictly as a typed
    /// object. Volcano's CRDs leave a task's pod template open, so each is also checked
    /// against Kubernetes' PodTemplateSpec.
    fn problems(&self, o: &Value) -> Vec<String> {
        let mut errors = match self.check(o) {
            Some(errors) => errors,
            None => match (o["apiVersion"].as_str(), o["kind"].as_str()) {
                (Some("policy/v1"), Some("PodDisruptionBudget")) => {
                    serde_json::from_value::<k8s_like::Pdb>(o.clone())
                        .err()
                        .map(|e| e.to_string())
                        .into_iter()
                        .collect()
                }
                (v, k) => vec![format!("no schema known for {v:?} {k:?}")],
            },
        };
        let spec = match (o["apiVersion"].as_str(), o["kind"].as_str()) {
            (Some("batch.volcano.sh/v1alpha1"), Some("Job")) => &o["spec"],
            (Some("batch.volcano.sh/v1alpha1"), Some("CronJob")) => {
                &o["spec"]["jobTemplate"]["spec"]
            }
            _ => return errors,
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
    struct Spec {
        max_unavailable: i32,
        selector: serde_json::Value,
    }
}
