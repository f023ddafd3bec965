//! `InfraProvider`: credentials and endpoints for a cloud or hypervisor.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BasicStatus, FreeForm, ObjectRef, free_form_schema};

/// Where clusters are provisioned and the credentials to do it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "InfraProvider",
    status = "BasicStatus",
    shortname = "lip",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A cloud or hypervisor that clusters are provisioned on.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct InfraProviderSpec {
    /// `aws`, `proxmox`, `openstack` or `docker`.
    #[serde(rename = "type")]
    pub type_: ProviderType,
    /// The Secret holding the provider credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// API endpoint, for providers that are not a public cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Provider-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_schema")]
    pub config: Option<FreeForm>,
}

/// The kinds of infrastructure Lattice provisions on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    #[default]
    Aws,
    Proxmox,
    Openstack,
    Docker,
}
