//! `TrustPolicy`: which registries are trusted and which keys sign their images.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::BasicStatus;

/// Trusted registries and their signing keys. Lattice verifies each image's cosign
/// signatures under these keys at its registry (`lattice-supply`); the facts that yields
/// (`Image.signed`, `Image.signers`) are what `DeployImage` policies decide on.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "TrustPolicy",
    status = "BasicStatus",
    shortname = "ltp",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Trusted image registries and the keys that sign their images.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicySpec {
    pub registries: Vec<TrustedRegistry>,
}

/// A registry (or a repository prefix within one) and its signers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustedRegistry {
    /// A registry host or repository prefix, e.g. `ghcr.io/myorg`.
    #[schemars(length(min = 1))]
    pub prefix: String,
    /// Keys whose signatures are accepted for images under `prefix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<SigningKey>,
    /// Images under `prefix` must carry a signature by one of `keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<bool>,
    /// Deprecated and ignored (validation warns): signatures are verified at the registry,
    /// never declared. Still read so that older TrustPolicies load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<VerifiedImage>,
}

/// A signing key: a PEM public key or a keyless (Fulcio) identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    /// The signer's name, as policies see it in `Image.signers`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessIdentity>,
}

/// A keyless signing identity: a short-lived certificate (Fulcio's, or a private CA's) that
/// names who signed. A signature counts for this key when its certificate chains to
/// `trustRoot`, is valid for code signing, and names exactly `issuer` and `subject`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeylessIdentity {
    /// The OIDC issuer that vouched for the signer, as the certificate's Fulcio issuer
    /// extension names it (e.g. `https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// The signer's identity, as the certificate's subject alternative name gives it: an
    /// email address, a URI (a CI workflow), or a Fulcio username.
    pub subject: String,
    /// The CA certificates (PEM) that certificates must chain to: the Fulcio root and
    /// intermediates of your Sigstore instance, or your own CA. Without it nothing verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<String>,
    /// The public key (PEM) of the transparency log (Rekor) signatures must be logged in.
    /// With it, a signature counts only with an entry that log promised, and the
    /// certificate is judged at the entry's time, as Fulcio's ten-minute certificates need;
    /// without it, at the time of verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparency_log_key: Option<String>,
}

/// A verification once declared by hand for an image. Deprecated and ignored.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedImage {
    /// The image reference as written in workloads.
    pub image: String,
    /// Names of the keys whose signatures verified.
    pub signers: Vec<String>,
}
