//! Rust types for every Lattice custom resource (group `lattice.dev`, version `v1alpha1`).

// `printcolumn(…, type_ = "string", …)` repeats attribute names across columns by design.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod cluster;
pub mod common;
pub mod compliance_profile;
pub mod image_provider;
pub mod infra_provider;
pub mod issuer;
pub mod job;
pub mod mesh_member;
pub mod model;
pub mod oidc_provider;
pub mod package;
pub mod policy;
pub mod quota;
pub mod secret_provider;
pub mod service;
pub mod trust_policy;
pub mod workload;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use backup::{LatticeClusterBackup, LatticeRestore};
pub use cluster::LatticeCluster;
pub use common::{
    API_VERSION, Condition, ConditionStatus, EnforcementMode, GROUP, PodSecurityLevel, VERSION,
};
pub use compliance_profile::LatticeComplianceProfile;
pub use image_provider::ImageProvider;
pub use infra_provider::InfraProvider;
pub use issuer::{CertIssuer, DNSProvider};
pub use job::LatticeJob;
pub use mesh_member::LatticeMeshMember;
pub use model::LatticeModel;
pub use oidc_provider::OIDCProvider;
pub use package::LatticePackage;
pub use policy::CedarPolicy;
pub use quota::LatticeQuota;
pub use secret_provider::SecretProvider;
pub use service::LatticeService;
pub use trust_policy::TrustPolicy;

/// Every Lattice kind. The order is the order CRDs are generated and documented in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    LatticeService,
    LatticeJob,
    LatticeModel,
    LatticeMeshMember,
    LatticeCluster,
    CedarPolicy,
    SecretProvider,
    ImageProvider,
    TrustPolicy,
    InfraProvider,
    LatticePackage,
    LatticeComplianceProfile,
    OIDCProvider,
    LatticeQuota,
    LatticeClusterBackup,
    LatticeRestore,
    CertIssuer,
    DNSProvider,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 18] = [
        Kind::LatticeService,
        Kind::LatticeJob,
        Kind::LatticeModel,
        Kind::LatticeMeshMember,
        Kind::LatticeCluster,
        Kind::CedarPolicy,
        Kind::SecretProvider,
        Kind::ImageProvider,
        Kind::TrustPolicy,
        Kind::InfraProvider,
        Kind::LatticePackage,
        Kind::LatticeComplianceProfile,
        Kind::OIDCProvider,
        Kind::LatticeQuota,
        Kind::LatticeClusterBackup,
        Kind::LatticeRestore,
        Kind::CertIssuer,
        Kind::DNSProvider,
    ];

    /// The kind as written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::LatticeService => "LatticeService",
            Kind::LatticeJob => "LatticeJob",
            Kind::LatticeModel => "LatticeModel",
            Kind::LatticeMeshMember => "LatticeMeshMember",
            Kind::LatticeCluster => "LatticeCluster",
            Kind::CedarPolicy => "CedarPolicy",
            Kind::SecretProvider => "SecretProvider",
            Kind::ImageProvider => "ImageProvider",
            Kind::TrustPolicy => "TrustPolicy",
            Kind::InfraProvider => "InfraProvider",
            Kind::LatticePackage => "LatticePackage",
            Kind::LatticeComplianceProfile => "LatticeComplianceProfile",
            Kind::OIDCProvider => "OIDCProvider",
            Kind::LatticeQuota => "LatticeQuota",
            Kind::LatticeClusterBackup => "LatticeClusterBackup",
            Kind::LatticeRestore => "LatticeRestore",
            Kind::CertIssuer => "CertIssuer",
            Kind::DNSProvider => "DNSProvider",
        }
    }

    /// Looks a kind up by its `kind:` name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The generated CustomResourceDefinition.
    pub fn crd(self) -> CustomResourceDefinition {
        match self {
            Kind::LatticeService => LatticeService::crd(),
            Kind::LatticeJob => LatticeJob::crd(),
            Kind::LatticeModel => LatticeModel::crd(),
            Kind::LatticeMeshMember => LatticeMeshMember::crd(),
            Kind::LatticeCluster => LatticeCluster::crd(),
            Kind::CedarPolicy => CedarPolicy::crd(),
            Kind::SecretProvider => SecretProvider::crd(),
            Kind::ImageProvider => ImageProvider::crd(),
            Kind::TrustPolicy => TrustPolicy::crd(),
            Kind::InfraProvider => InfraProvider::crd(),
            Kind::LatticePackage => LatticePackage::crd(),
            Kind::LatticeComplianceProfile => LatticeComplianceProfile::crd(),
            Kind::OIDCProvider => OIDCProvider::crd(),
            Kind::LatticeQuota => LatticeQuota::crd(),
            Kind::LatticeClusterBackup => LatticeClusterBackup::crd(),
            Kind::LatticeRestore => LatticeRestore::crd(),
            Kind::CertIssuer => CertIssuer::crd(),
            Kind::DNSProvider => DNSProvider::crd(),
        }
    }

    /// Whether objects of this kind live in a namespace (as its CRD says; a test checks).
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::LatticeCluster
                | Kind::SecretProvider
                | Kind::ImageProvider
                | Kind::TrustPolicy
                | Kind::InfraProvider
                | Kind::LatticeComplianceProfile
                | Kind::OIDCProvider
                | Kind::LatticeQuota
                | Kind::LatticeClusterBackup
                | Kind::LatticeRestore
                | Kind::CertIssuer
                | Kind::DNSProvider
        )
    }

    /// The resource name in API paths (as its CRD says; a test checks). Cheap, unlike
    /// generating the CRD.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::LatticeService => "latticeservices",
            Kind::LatticeJob => "latticejobs",
            Kind::LatticeModel => "latticemodels",
            Kind::LatticeMeshMember => "latticemeshmembers",
            Kind::LatticeCluster => "latticeclusters",
            Kind::CedarPolicy => "cedarpolicies",
            Kind::SecretProvider => "secretproviders",
            Kind::ImageProvider => "imageproviders",
            Kind::TrustPolicy => "trustpolicies",
            Kind::InfraProvider => "infraproviders",
            Kind::LatticePackage => "latticepackages",
            Kind::LatticeComplianceProfile => "latticecomplianceprofiles",
            Kind::OIDCProvider => "oidcproviders",
            Kind::LatticeQuota => "latticequotas",
            Kind::LatticeClusterBackup => "latticeclusterbackups",
            Kind::LatticeRestore => "latticerestores",
            Kind::CertIssuer => "certissuers",
            Kind::DNSProvider => "dnsproviders",
        }
    }

    /// Whether this kind is a workload: it raises derivation gates and derives objects. A
    /// `LatticePackage` is one (Flux installs its chart; its secrets pass the same gates).
    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Kind::LatticeService
                | Kind::LatticeJob
                | Kind::LatticeModel
                | Kind::LatticeMeshMember
                | Kind::LatticePackage
        )
    }

    /// Whether objects of this kind derive Kubernetes objects the operator applies: the
    /// workloads, the backups and restores (Velero's objects), the certificate issuers
    /// (cert-manager's) and the DNS providers (external-dns instances).
    pub fn derives(self) -> bool {
        self.is_workload()
            || matches!(
                self,
                Kind::LatticeClusterBackup
                    | Kind::LatticeRestore
                    | Kind::CertIssuer
                    | Kind::DNSProvider
            )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn scope_and_plural_tables_match_the_crds() {
        for k in Kind::ALL {
            assert_eq!(k.namespaced(), k.crd().spec.scope == "Namespaced", "{k}");
            assert_eq!(k.plural(), k.crd().spec.names.plural, "{k}");
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }

    /// Two CRDs claiming one short name are both refused by the API server (names not
    /// accepted, never established).
    #[test]
    fn short_names_are_unique() {
        let mut seen = std::collections::BTreeMap::new();
        for k in Kind::ALL {
            for short in k.crd().spec.names.short_names.unwrap_or_default() {
                if let Some(other) = seen.insert(short.clone(), k) {
                    panic!("{other} and {k} both claim the short name {short}");
                }
            }
        }
    }
}
