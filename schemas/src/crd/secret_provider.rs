//! `SecretProvider`: a secret backend that workloads reach through External Secrets.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BasicStatus, FreeForm, free_form_schema};

/// A secret backend (derived as an External Secrets `ClusterSecretStore`). Workloads name
/// it in `params.provider` of their `secret` resources; each path they read is an
/// `AccessSecret` gate on `SecretPath::"<provider>:<path>"`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "SecretProvider",
    status = "BasicStatus",
    shortname = "lsp",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A secret backend reached through the External Secrets Operator.",
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderSpec {
    /// The backend kind: `vault`, `aws`, `gcp`, `azure`, `kubernetes`, … Without it,
    /// `provider` is read the way External Secrets (and upstream Lattice) write it: one key
    /// naming the backend, holding its block (`provider: {vault: {server: …}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub backend: Option<String>,
    /// The External Secrets provider block for this backend, passed through as written; or,
    /// without `backend`, a mapping with the backend's name as its only key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub provider: Option<FreeForm>,
    /// Default refresh interval for secrets read through this provider, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
}

impl SecretProviderSpec {
    /// The backend: `backend`, or the one key of an External Secrets-shaped `provider`.
    /// `None` when neither names one (validation reports it).
    pub fn backend(&self) -> Option<&str> {
        match (&self.backend, self.eso_shaped()) {
            (Some(b), _) => Some(b.as_str()),
            (None, Some((name, _))) => Some(name.as_str()),
            (None, None) => None,
        }
    }

    /// The backend's block: `provider` as written beside `backend`, or the value under the
    /// one key of an External Secrets-shaped `provider`.
    pub fn provider_block(&self) -> Option<serde_json::Value> {
        match (&self.backend, self.eso_shaped()) {
            (Some(_), _) => self
                .provider
                .as_ref()
                .map(|p| serde_json::Value::Object(p.clone().into_iter().collect())),
            (None, Some((_, block))) => Some(block.clone()),
            (None, None) => None,
        }
    }

    fn eso_shaped(&self) -> Option<(&String, &serde_json::Value)> {
        let map = self.provider.as_ref()?;
        let mut entries = map.iter();
        let one = entries.next()?;
        entries.next().is_none().then_some(one)
    }
}
