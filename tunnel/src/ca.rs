//! The parent's cluster CA and the agent's key. The agent makes its key pair and a CSR; the
//! key never leaves it. The cell, once the agent's bootstrap token is redeemed, signs a
//! certificate for the identity the token was minted for, whatever the CSR asks: only the
//! CSR's public key (its signature checked) is taken from it. Certificates are short-lived
//! (24 hours by default) and renewed at two-thirds of their life; a deleted cluster's are
//! revoked.

use std::collections::{BTreeMap, BTreeSet};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{ClusterIdentity, IdentityError, peer_identity};

/// How long an agent's certificate lives by default.
pub const DEFAULT_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// How long the CA's own certificate lives.
pub const CA_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 365);

/// Clock skew tolerated between parent and child: certificates start this much earlier.
pub const SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Why the CA refuses to sign, or a certificate is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("the certificate signing request is not valid: {0}")]
    Csr(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    #[error("the certificate was revoked")]
    Revoked,
    #[error("the revocation list cannot be read: {0}")]
    Revocations(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

fn offset(t: jiff::Timestamp) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| CaError::Sign(format!("time {t}: {e}")))
}

/// The DER of the one certificate in `pem`.
fn certificate_der(pem: &str) -> Result<Vec<u8>, CaError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CaError::Certificate(e.to_string()))?;
    if parsed.label != "CERTIFICATE" {
        return Err(CaError::Certificate(format!(
            "a {} is not a certificate",
            parsed.label
        )));
    }
    Ok(parsed.contents)
}

fn random_serial() -> Result<Vec<u8>, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Sign("the system random number generator failed".into()))?;
    // Positive, as DER INTEGER serials must be.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(bytes.to_vec())
}

/// A certificate the CA issued.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub pem: String,
    pub der: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
}

impl IssuedCert {
    /// When the holder renews it: two-thirds of the way from issuance (the start of its
    /// validity, less the skew allowance) to its end.
    pub fn renew_at(&self) -> jiff::Timestamp {
        let issued = self.not_before.checked_add(SKEW).unwrap_or(self.not_before);
        let life = self.not_after.duration_since(issued);
        issued.checked_add(life * 2 / 3).unwrap_or(self.not_after)
    }
}

/// A hierarchy's cluster CA (held by a parent's cell).
pub struct ClusterCa {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    revoked: Revocations,
}

/// What the CA refuses besides expired certificates: single certificates by serial, and
/// every certificate issued to a deleted cluster before it was deleted (so revocation
/// needs no list of what was issued, and survives a restart as two short lists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    pub serials: BTreeSet<Vec<u8>>,
    /// Cluster → when it was deleted.
    pub clusters: BTreeMap<String, jiff::Timestamp>,
}

impl Revocations {
    /// One line each: `serial <hex>` or `cluster <name> <RFC 3339 time>`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for serial in &self.serials {
            out.push_str("serial ");
            for b in serial {
                out.push_str(&format!("{b:02x}"));
            }
            out.push('\n');
        }
        for (cluster, at) in &self.clusters {
            out.push_str(&format!("cluster {cluster} {at}\n"));
        }
        out
    }

    /// Reads [`Revocations::to_text`]; anything else is an error (a CA that cannot read
    /// its revocations does not start).
    pub fn parse(text: &str) -> Result<Revocations, CaError> {
        let mut r = Revocations::default();
        for (n, line) in text.lines().enumerate() {
            let bad = || CaError::Revocations(format!("line {}: {line:?}", n + 1));
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (None, ..) => {}
                (Some("serial"), Some(hex), None, None) => {
                    if hex.len() % 2 != 0 || hex.len() > 64 {
                        return Err(bad());
                    }
                    let bytes = (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|_| bad())?;
                    r.serials.insert(bytes);
                }
                (Some("cluster"), Some(name), Some(at), None) => {
                    r.clusters
                        .insert(name.to_owned(), at.parse().map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }
}

impl ClusterCa {
    /// A new CA for `trust_domain`, valid from `now` for [`CA_LIFETIME`].
    pub fn generate(trust_domain: &str, now: jiff::Timestamp) -> Result<ClusterCa, CaError> {
        // Validates the domain the same way identities are.
        ClusterIdentity::new(trust_domain, "ca")?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("lattice cluster CA {trust_domain}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = offset(now.checked_sub(SKEW).unwrap_or(now))?;
        params.not_after = offset(now.checked_add(CA_LIFETIME).unwrap_or(now))?;
        params.serial_number = Some(SerialNumber::from(random_serial()?));
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(ClusterCa {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            revoked: Revocations::default(),
        })
    }

    /// The CA stored as [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`] wrote it (a
    /// parent that restarts keeps signing with the same CA), with the serials it revoked.
    pub fn from_pem(
        trust_domain: &str,
        cert_pem: &str,
        key_pem: &str,
        revoked: Revocations,
    ) -> Result<ClusterCa, CaError> {
        ClusterIdentity::new(trust_domain, "ca")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Certificate(e.to_string()))?;
        let cert_der = certificate_der(cert_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        Ok(ClusterCa {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key_pem: key_pem.to_owned(),
            issuer,
            revoked,
        })
    }

    /// The CA's private key, PEM (for the parent's Secret; never logged).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// What it revoked (to store beside the CA).
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// The trust domain its certificates are for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA certificate, PEM (what agents and the cell trust).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// Signs a certificate for `identity` over the public key of `csr_pem`, valid from
    /// `now` (less [`SKEW`]) for `lifetime`, for TLS client and server use. Nothing else of
    /// the CSR is taken: names it asks for are ignored.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &ClusterIdentity,
        now: jiff::Timestamp,
        lifetime: jiff::SignedDuration,
    ) -> Result<IssuedCert, CaError> {
        self.sign_csr_at(csr_pem, identity, &[], now, lifetime)
    }

    /// [`ClusterCa::sign_csr`] for a cell: its certificate also names the `addresses` (DNS
    /// names or IP addresses) agents dial it at, which they check as any TLS client does.
    pub fn sign_csr_at(
        &self,
        csr_pem: &str,
        identity: &ClusterIdentity,
        addresses: &[String],
        now: jiff::Timestamp,
        lifetime: jiff::SignedDuration,
    ) -> Result<IssuedCert, CaError> {
        if identity.trust_domain != self.trust_domain {
            return Err(CaError::Identity(IdentityError::TrustDomain {
                expected: self.trust_domain.clone(),
                found: identity.trust_domain.clone(),
            }));
        }
        // Checks the CSR's own signature: the requester holds the key.
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(e.to_string()))?;
        let not_before = now.checked_sub(SKEW).unwrap_or(now);
        let not_after = now
            .checked_add(lifetime)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.cluster.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            identity
                .uri()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Sign(e.to_string()))?,
        )];
        for a in addresses {
            params
                .subject_alt_names
                .push(match a.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        a.clone()
                            .try_into()
                            .map_err(|e: rcgen::Error| CaError::Sign(format!("{a}: {e}")))?,
                    ),
                });
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_before = offset(not_before)?;
        params.not_after = offset(not_after)?;
        params.serial_number = Some(SerialNumber::from(serial.clone()));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(IssuedCert {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            serial,
            not_before: jiff::Timestamp::from_second(not_before.as_second())
                .map_err(|e| CaError::Sign(e.to_string()))?,
            not_after,
        })
    }

    /// Revokes a certificate by serial (its cluster was deleted, or its key exposed).
    pub fn revoke(&mut self, serial: &[u8]) {
        self.revoked.serials.insert(serial.to_vec());
    }

    /// Refuses every certificate issued to `cluster` up to `at` (it was deleted then); one
    /// issued later, to a cluster created again under the name, is not refused.
    pub fn revoke_cluster(&mut self, cluster: &str, at: jiff::Timestamp) {
        self.revoked.clusters.insert(cluster.to_owned(), at);
    }

    /// What the cell checks of a peer certificate the TLS handshake verified against this
    /// CA: not revoked, within its validity at `now`, and one cluster identity of this
    /// trust domain, which it returns.
    pub fn check_peer(&self, der: &[u8], now: jiff::Timestamp) -> Result<ClusterIdentity, CaError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CaError::Certificate(e.to_string()))?;
        if self.revoked.serials.contains(cert.raw_serial()) {
            return Err(CaError::Revoked);
        }
        let validity = cert.validity();
        let second = now.as_second();
        if second < validity.not_before.timestamp() {
            return Err(CaError::NotYetValid(validity.not_before.to_string()));
        }
        if second > validity.not_after.timestamp() {
            return Err(CaError::Expired(validity.not_after.to_string()));
        }
        let identity = peer_identity(der, &self.trust_domain)?;
        if let Some(deleted) = self.revoked.clusters.get(&identity.cluster) {
            let issued = validity.not_before.timestamp() + SKEW.as_secs();
            if issued <= deleted.as_second() {
                return Err(CaError::Revoked);
            }
        }
        Ok(identity)
    }
}

/// The agent's key pair: made on the child, never sent anywhere.
pub struct AgentKey {
    key: KeyPair,
}

impl AgentKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<AgentKey, CaError> {
        Ok(AgentKey {
            key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| CaError::Sign(e.to_string()))?,
        })
    }

    /// A CSR for `identity`, signed with the key.
    pub fn csr_pem(&self, identity: &ClusterIdentity) -> Result<String, CaError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            identity
                .uri()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Csr(e.to_string()))?,
        )];
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(|e| CaError::Csr(e.to_string()))
    }

    /// The private key, PKCS#8 DER, for the agent's own TLS configuration.
    pub fn private_key_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_ca_signs_the_tokens_identity_not_what_the_csr_asks() {
        let now = at("2026-12-01T12:00:00Z");
        let ca = ClusterCa::generate("lattice.test", now).unwrap();
        let edge = ClusterIdentity::new("lattice.test", "edge").unwrap();
        let prod = ClusterIdentity::new("lattice.test", "prod").unwrap();
        let key = AgentKey::generate().unwrap();
        // The agent asks to be prod; its token was minted for edge.
        let csr = key.csr_pem(&prod).unwrap();
        let issued = ca.sign_csr(&csr, &edge, now, DEFAULT_LIFETIME).unwrap();
        assert_eq!(ca.check_peer(&issued.der, now).unwrap(), edge);
        assert_eq!(
            issued.not_after.duration_since(issued.not_before),
            DEFAULT_LIFETIME + SKEW
        );
        assert_eq!(issued.renew_at(), at("2026-12-02T04:00:00Z"));
    }

    #[test]
    fn a_deleted_cluster_loses_its_certificates_but_a_new_one_of_the_name_does_not() {
        let then = at("2026-12-01T12:00:00Z");
        let mut ca = ClusterCa::generate("lattice.test", then).unwrap();
        let edge = ClusterIdentity::new("lattice.test", "edge").unwrap();
        let key = AgentKey::generate().unwrap();
        let old = ca
            .sign_csr(&key.csr_pem(&edge).unwrap(), &edge, then, DEFAULT_LIFETIME)
            .unwrap();
        ca.revoke_cluster("edge", at("2026-12-01T13:00:00Z"));
        let later = at("2026-12-01T14:00:00Z");
        assert_eq!(ca.check_peer(&old.der, later), Err(CaError::Revoked));
        let new = ca
            .sign_csr(&key.csr_pem(&edge).unwrap(), &edge, later, DEFAULT_LIFETIME)
            .unwrap();
        assert_eq!(ca.check_peer(&new.der, later).unwrap(), edge);

        // Stored and read back, the CA refuses the same.
        ca.revoke(&new.serial);
        let text = ca.revocations().to_text();
        let back = ClusterCa::from_pem(
            "lattice.test",
            &ca.cert_pem(),
            ca.key_pem(),
            Revocations::parse(&text).unwrap(),
        )
        .unwrap();
        assert_eq!(back.revocations(), ca.revocations());
        assert_eq!(back.check_peer(&new.der, later), Err(CaError::Revoked));
        for bad in ["serial zz", "cluster edge", "serial 0", "crl x"] {
            assert!(Revocations::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expired_revoked_and_foreign_certificates_are_refused() {
        let now = at("2026-12-01T12:00:00Z");
        let mut ca = ClusterCa::generate("lattice.test", now).unwrap();
        let edge = ClusterIdentity::new("lattice.test", "edge").unwrap();
        let key = AgentKey::generate().unwrap();
        let issued = ca
            .sign_csr(&key.csr_pem(&edge).unwrap(), &edge, now, DEFAULT_LIFETIME)
            .unwrap();
        assert!(matches!(
            ca.check_peer(&issued.der, at("2026-12-02T12:01:00Z")),
            Err(CaError::Expired(_))
        ));
        assert!(matches!(
            ca.check_peer(&issued.der, at("2026-12-01T11:00:00Z")),
            Err(CaError::NotYetValid(_))
        ));
        ca.revoke(&issued.serial);
        assert_eq!(ca.check_peer(&issued.der, now), Err(CaError::Revoked));

        let foreign = ClusterIdentity::new("other.test", "edge").unwrap();
        assert!(matches!(
            ca.sign_csr(
                &key.csr_pem(&foreign).unwrap(),
                &foreign,
                now,
                DEFAULT_LIFETIME
            ),
            Err(CaError::Identity(IdentityError::TrustDomain { .. }))
        ));
        assert!(matches!(
            ca.sign_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &edge,
                now,
                DEFAULT_LIFETIME
            ),
            Err(CaError::Csr(_))
        ));
    }
}
