//! `CertIssuer` and `DNSProvider`: the certificate issuers and DNS zones ingress hosts use.
//! A CertIssuer derives a cert-manager `ClusterIssuer` of its name, which a service's
//! `ingress.tls.issuerRef` names; a DNSProvider derives an external-dns instance that keeps
//! the records of the hosts in its zone, and lends its credentials to ACME DNS-01
//! challenges. Both are cluster-scoped platform kinds, and their credentials come from a
//! SecretProvider through External Secrets, never inline.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::WorkloadStatus;

/// The namespace cert-manager reads a ClusterIssuer's secrets from (its cluster resource
/// namespace).
pub const CERT_MANAGER_NAMESPACE: &str = "cert-manager";

/// The namespace external-dns instances run in.
pub const EXTERNAL_DNS_NAMESPACE: &str = "external-dns";

/// Credentials: a secret in a SecretProvider, synced by External Secrets into the
/// namespace of what reads it (upstream's `{id, provider, keys}` shape).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The SecretProvider (a ClusterSecretStore).
    #[schemars(length(min = 1))]
    pub provider: String,
    /// The secret's path in the provider.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The keys copied; every key of the secret when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// A certificate issuer: a cert-manager `ClusterIssuer` of this name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "CertIssuer",
    status = "WorkloadStatus",
    shortname = "lissuer",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A certificate issuer, derived into a cert-manager ClusterIssuer of its name.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct CertIssuerSpec {
    /// `acme`, `ca`, `selfSigned` or `vault`; the block of that name configures it.
    #[serde(rename = "type")]
    pub type_: IssuerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeIssuer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaIssuer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultIssuer>,
}

/// An issuer type, as cert-manager names its issuer blocks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IssuerType {
    #[default]
    Acme,
    Ca,
    SelfSigned,
    Vault,
}

impl IssuerType {
    /// As written (`acme`, `ca`, `selfSigned`, `vault`).
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerType::Acme => "acme",
            IssuerType::Ca => "ca",
            IssuerType::SelfSigned => "selfSigned",
            IssuerType::Vault => "vault",
        }
    }
}

/// An ACME issuer (Let's Encrypt and the like).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuer {
    /// The account's contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The directory URL, `https://…`.
    pub server: String,
    /// A DNSProvider whose zone answers DNS-01 challenges with its credentials. Exactly one
    /// of `dnsProviderRef` and `http01Gateway` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider_ref: Option<String>,
    /// A Gateway serving HTTP on port 80 for every host it certifies: HTTP-01 challenges
    /// are answered by HTTPRoutes cert-manager attaches to it. (Each service's own Gateway
    /// serves only its TLS port, so it cannot.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01_gateway: Option<GatewayRef>,
}

/// A Gateway by name and namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    pub name: String,
    pub namespace: String,
}

/// An issuer signing with a CA whose certificate and key a SecretProvider holds (keys
/// `tls.crt` and `tls.key`; `keys` may list just those).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaIssuer {
    pub credentials: Credentials,
}

/// An issuer backed by Vault's PKI engine, authenticated with a token a SecretProvider
/// holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultIssuer {
    /// Vault's address, `https://…`.
    pub server: String,
    /// The PKI engine's signing path, e.g. `pki/sign/web`.
    pub path: String,
    /// The token's secret: its one key (`token` when `keys` is left out).
    pub auth_credentials: Credentials,
}

/// A DNS zone and the account that manages it: external-dns keeps the records of the
/// ingress hosts in it, and ACME issuers may answer DNS-01 challenges through it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "DNSProvider",
    status = "WorkloadStatus",
    shortname = "ldns",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A DNS zone whose records external-dns keeps for the ingress hosts in it.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct DNSProviderSpec {
    /// `route53`, `cloudflare`, `google`, `azure`, `designate` or `pihole`.
    #[serde(rename = "type")]
    pub type_: DnsProviderType,
    /// The zone, e.g. `example.com`: hosts in it (and its subdomains) are this provider's.
    pub zone: String,
    /// The account's credentials: a secret whose keys are what external-dns reads
    /// (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, `CF_API_TOKEN`, OpenStack's `OS_*`,
    /// `EXTERNAL_DNS_PIHOLE_PASSWORD`; `credentials.json` for Google, `azure.json` for
    /// Azure). Without them, the identity of the pod (IRSA, workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Only create and update records, never delete them (external-dns `upsert-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upsert_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route53: Option<Route53>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<Cloudflare>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleDns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureDns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pihole: Option<Pihole>,
    /// The external-dns image; the version this build was tested with when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A DNS provider type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsProviderType {
    #[default]
    Route53,
    Cloudflare,
    Google,
    Azure,
    Designate,
    Pihole,
}

impl DnsProviderType {
    /// As written (`route53`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DnsProviderType::Route53 => "route53",
            DnsProviderType::Cloudflare => "cloudflare",
            DnsProviderType::Google => "google",
            DnsProviderType::Azure => "azure",
            DnsProviderType::Designate => "designate",
            DnsProviderType::Pihole => "pihole",
        }
    }
}

/// Route53 settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route53 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The hosted zone's id (looked up by the zone's name when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
}

/// Cloudflare settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cloudflare {
    /// Records go through Cloudflare's proxy.
    #[serde(default)]
    pub proxied: bool,
}

/// Google Cloud DNS settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleDns {
    pub project: String,
}

/// Azure DNS settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureDns {
    pub subscription_id: String,
    pub resource_group: String,
}

/// Pi-hole settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pihole {
    /// The server, `https://…` (or `http://` on a trusted network: a warning).
    pub url: String,
}

impl DNSProviderSpec {
    /// Whether `host` is in this provider's zone (the zone itself or a name under it).
    pub fn covers(&self, host: &str) -> bool {
        let zone = self.zone.trim_end_matches('.').to_ascii_lowercase();
        let host = host
            .trim_start_matches("*.")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        !zone.is_empty() && (host == zone || host.ends_with(&format!(".{zone}")))
    }
}
