//! A cluster's identity in the hierarchy: `spiffe://<trust-domain>/cluster/<name>`, carried
//! as the only URI SAN of its tunnel certificate. Every message on a stream is checked
//! against the identity of the certificate that opened it, so cluster A's certificate can
//! never speak for B.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Who a tunnel peer is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterIdentity {
    /// The hierarchy's trust domain (e.g. `lattice.example.com`).
    pub trust_domain: String,
    /// The LatticeCluster's name.
    pub cluster: String,
}

/// Why an identity or a certificate's identity is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a cluster identity: {0}")]
    Malformed(String),
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the certificate carries {0} URI SANs; a tunnel certificate carries exactly one")]
    UriSans(usize),
    #[error("the certificate is for trust domain {found:?}, not {expected:?}")]
    TrustDomain { expected: String, found: String },
    #[error("the certificate speaks for cluster {certified:?}, not {claimed:?}")]
    Mismatch { certified: String, claimed: String },
}

/// Whether `s` is a DNS-1123 label or subdomain (what Kubernetes names and trust domains
/// are made of), at most 253 bytes.
pub(crate) fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `name` can name a cluster: a DNS-1123 label (a LatticeCluster's name).
pub fn is_cluster_name(name: &str) -> bool {
    dns_name(name) && !name.contains('.')
}

impl ClusterIdentity {
    /// The identity of `cluster` in `trust_domain`; both must be DNS names (a cluster name
    /// is a LatticeCluster's, so always one).
    pub fn new(trust_domain: &str, cluster: &str) -> Result<ClusterIdentity, IdentityError> {
        if !dns_name(trust_domain) || !is_cluster_name(cluster) {
            return Err(IdentityError::Malformed(format!(
                "trust domain {trust_domain:?}, cluster {cluster:?}"
            )));
        }
        Ok(ClusterIdentity {
            trust_domain: trust_domain.to_owned(),
            cluster: cluster.to_owned(),
        })
    }

    /// The SPIFFE URI.
    pub fn uri(&self) -> String {
        format!("spiffe://{}/cluster/{}", self.trust_domain, self.cluster)
    }

    /// Reads a SPIFFE URI of the form [`ClusterIdentity::uri`] writes; anything else
    /// (another path, a query, a port, upper case) is refused.
    pub fn parse(uri: &str) -> Result<ClusterIdentity, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::Malformed(uri.to_owned()))?;
        let (domain, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::Malformed(uri.to_owned()))?;
        let cluster = path
            .strip_prefix("cluster/")
            .ok_or_else(|| IdentityError::Malformed(uri.to_owned()))?;
        ClusterIdentity::new(domain, cluster).map_err(|_| IdentityError::Malformed(uri.to_owned()))
    }

    /// Whether a message from this peer may speak for `claimed`: only for itself.
    pub fn speaks_for(&self, claimed: &str) -> Result<(), IdentityError> {
        if self.cluster == claimed {
            Ok(())
        } else {
            Err(IdentityError::Mismatch {
                certified: self.cluster.clone(),
                claimed: claimed.to_owned(),
            })
        }
    }
}

impl fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The identity a peer's (already chain-verified) DER certificate carries in
/// `trust_domain`: its one URI SAN, a cluster identity of that domain.
pub fn peer_identity(der: &[u8], trust_domain: &str) -> Result<ClusterIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let uris: Vec<&str> = match cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Certificate(e.to_string()))?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    if uris.len() != 1 {
        return Err(IdentityError::UriSans(uris.len()));
    }
    let identity = ClusterIdentity::parse(uris[0])?;
    if identity.trust_domain != trust_domain {
        return Err(IdentityError::TrustDomain {
            expected: trust_domain.to_owned(),
            found: identity.trust_domain,
        });
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_refuse_anything_else() {
        let id = ClusterIdentity::new("lattice.example.com", "edge-1").unwrap();
        assert_eq!(id.uri(), "spiffe://lattice.example.com/cluster/edge-1");
        assert_eq!(ClusterIdentity::parse(&id.uri()).unwrap(), id);
        for bad in [
            "spiffe://lattice.example.com/cluster/Edge",
            "spiffe://lattice.example.com/cluster/edge/extra",
            "spiffe://lattice.example.com/ns/edge",
            "spiffe://lattice.example.com:443/cluster/edge",
            "https://lattice.example.com/cluster/edge",
            "spiffe:///cluster/edge",
            "spiffe://lattice.example.com/cluster/",
            "spiffe://lattice.example.com/cluster/a.b",
        ] {
            assert!(ClusterIdentity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_peer_speaks_only_for_itself() {
        let a = ClusterIdentity::new("t", "a").unwrap();
        assert!(a.speaks_for("a").is_ok());
        assert_eq!(
            a.speaks_for("b"),
            Err(IdentityError::Mismatch {
                certified: "a".into(),
                claimed: "b".into()
            })
        );
    }
}
