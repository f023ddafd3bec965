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
    /// Every problem of one derived object. Kinds without a reference schema are read
    /// strictly as typed objects instead (policy/v1 PodDisruptionBudget, cert-manager's
    /// Certificate, Volcano's Job and CronJob, whose pod templates are checked against the
    /// Kubernetes PodTemplateSpec schema).
    fn problems(&self, o: &Value) -> Vec<String> {
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
