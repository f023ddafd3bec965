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
    /// The backend kind: `vault`, `aws`, `gcp`, `azure`, `kubernetes`, …
    #[schemars(length(min = 1))]
    pub backend: String,
    /// The External Secrets provider block for this backend, passed through as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub provider: Option<FreeForm>,
    /// Default refresh interval for secrets read through this provider, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
}
