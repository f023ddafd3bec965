//! `OIDCProvider`: an OpenID Connect issuer whose ID tokens the Kubernetes API proxy
//! accepts, mapped to a user and groups that Cedar then decides for.
//!
//! The shape is upstream Lattice's (`issuerUrl`, `clientId`, claims and prefixes,
//! `audiences`, `requiredClaims`, `caBundle`, `jwksRefreshIntervalSeconds`, `propagate`,
//! `allowChildOverride`), plus `discoveryUrl` from Kubernetes' own structured
//! authentication configuration, for an issuer whose discovery document is served
//! somewhere other than `<issuerUrl>/.well-known/openid-configuration`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::BasicStatus;

/// An identity provider for the API proxy. Tokens it signed (checked against its JWKS,
/// found through OIDC discovery) name a user and groups; every proxied call is then one
/// Cedar request for that `User`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "OIDCProvider",
    status = "BasicStatus",
    shortname = "loidc",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "An OpenID Connect issuer whose ID tokens the Kubernetes API proxy accepts.",
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.issuerUrl"),
    printcolumn(name = "Client", type_ = "string", json_path = ".spec.clientId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct OIDCProviderSpec {
    /// The issuer, exactly as tokens name it in `iss` (an `https` URL).
    #[schemars(length(min = 1))]
    pub issuer_url: String,
    /// Where the discovery document is fetched from, when not at
    /// `<issuerUrl>/.well-known/openid-configuration`. The document must still name
    /// `issuerUrl` as its issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// The client the tokens were issued to; the accepted audience when `audiences` is
    /// empty.
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// Upstream's client secret (for token introspection). Accepted and not used: the
    /// proxy validates tokens itself, against the issuer's published keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ClientSecretRef>,
    /// The claim that names the user (default `sub`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim that lists the user's groups (default `groups`); a string or a list of
    /// strings.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Prepended to every user name, e.g. `oidc:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_prefix: Option<String>,
    /// Prepended to every group, e.g. `oidc:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_prefix: Option<String>,
    /// Audiences a token may be for (one is enough); empty: `clientId` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Claims a token must carry, and with `value`, carry with that value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<RequiredClaim>,
    /// PEM certificates the issuer's TLS certificate is checked against; without it, the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// How often the issuer's keys are fetched again, in seconds (default 3600, at least
    /// 60). A token signed by a key not yet seen fetches them sooner.
    #[serde(default = "default_refresh")]
    #[schemars(range(min = 60))]
    pub jwks_refresh_interval_seconds: u32,
    /// Whether the provider is distributed to every cluster below (default `true`, as
    /// upstream); a distributed provider is read-only there.
    #[serde(default = "default_true")]
    pub propagate: bool,
    /// Whether a cluster that inherits this provider may also have providers of its own
    /// (default `false`: it authenticates only with what it inherits).
    #[serde(default)]
    pub allow_child_override: bool,
}

/// A claim a token must carry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredClaim {
    /// The claim's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The value it must have (a string, or the JSON text of a number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Where upstream keeps the client secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Default for OIDCProviderSpec {
    fn default() -> OIDCProviderSpec {
        OIDCProviderSpec {
            issuer_url: String::new(),
            discovery_url: None,
            client_id: String::new(),
            client_secret: None,
            username_claim: default_username_claim(),
            groups_claim: default_groups_claim(),
            username_prefix: None,
            groups_prefix: None,
            audiences: Vec::new(),
            required_claims: Vec::new(),
            ca_bundle: None,
            jwks_refresh_interval_seconds: default_refresh(),
            propagate: true,
            allow_child_override: false,
        }
    }
}

impl OIDCProviderSpec {
    /// The audiences a token may be for: `audiences`, or `clientId` alone.
    pub fn accepted_audiences(&self) -> Vec<String> {
        if self.audiences.is_empty() {
            vec![self.client_id.clone()]
        } else {
            self.audiences.clone()
        }
    }

    /// Where the discovery document is: `discoveryUrl`, or the issuer's well-known path.
    pub fn discovery(&self) -> String {
        self.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.issuer_url.trim_end_matches('/')
            )
        })
    }
}

fn default_username_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_refresh() -> u32 {
    3600
}

fn default_true() -> bool {
    true
}
