//! `ImageProvider`: a registry's pull credentials, kept in a secret backend and derived into
//! each workload's image pull secret.
//!
//! The shape is upstream Lattice's, where its meaning is the same: `type`, `registry`,
//! `credentials` (the remote secret, read through a SecretProvider) and `credentialData`
//! (templates of the Docker config, `${secret.credentials.KEY}` naming the remote keys).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::BasicStatus;

/// Pull credentials for one registry. A workload names the provider in `imagePullSecrets`;
/// using it is a `UseImageProvider` decision, and an allowed use derives an ExternalSecret
/// of type `kubernetes.io/dockerconfigjson` in the workload's namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "ImageProvider",
    status = "BasicStatus",
    shortname = "limg",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Pull credentials for one registry, derived into workloads' image pull secrets.",
    printcolumn(name = "Registry", type_ = "string", json_path = ".spec.registry"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct ImageProviderSpec {
    /// What kind of registry: `ghcr`, `dockerhub`, `ecr`, `gar`, `acr`, `harbor` or
    /// `generic`. Informational; every type is read the same way.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<RegistryType>,
    /// The registry host (and port), as image references name it: `ghcr.io`.
    #[schemars(length(min = 1))]
    pub registry: String,
    /// Where the credentials are kept. Without them the registry is pulled from
    /// anonymously (or with the node's own identity), and no pull secret is derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RegistryCredentials>,
    /// The pull secret's keys as templates of the remote keys, e.g.
    /// `.dockerconfigjson: '{"auths":{"ghcr.io":{"auth":"${secret.credentials.auth}"}}}'`.
    /// Without it: the remote keys `username` and `password` (or `token`) make the Docker
    /// config, and a remote secret with no keys listed must hold `.dockerconfigjson` itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credential_data: BTreeMap<String, String>,
}

/// The registry types upstream Lattice names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistryType {
    Ghcr,
    Dockerhub,
    Ecr,
    Gar,
    Acr,
    Harbor,
    Generic,
}

/// A secret in a backend, as workloads' `secret` resources name one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentials {
    /// The SecretProvider it is read through.
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Its path in the backend.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The keys to read; none reads the whole secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// How often it is read again, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
}
