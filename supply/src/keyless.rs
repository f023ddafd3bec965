//! Keyless signatures: a certificate that names its signer, chained to a trust root.
//!
//! Sigstore's keyless signing binds a short-lived key to an identity: Fulcio (or any CA)
//! issues a code-signing certificate whose subject alternative name is the signer (an
//! email, a CI workflow URI, a username) and whose Fulcio issuer extension names the OIDC
//! issuer that vouched for it. A signature counts for a TrustPolicy's keyless key when
//!
//! 1. its certificate chains to one of the key's `trustRoot` certificates, is valid now and
//!    is valid for code signing (rustls-webpki builds and checks the path: signatures,
//!    validity, basic constraints, extended key usage);
//! 2. the certificate names exactly the key's `issuer` and `subject` (x509-parser reads
//!    the extensions, since webpki checks no code-signing identities);
//! 3. the certificate's key verifies the signature ([`crate::keys`]).
//!
//! Validity is judged at the time of signing when the key names a transparency log: then a
//! signature counts only with an entry that log promised ([`crate::tlog`]), and the
//! certificate must have been valid at the entry's time, which is how Fulcio's ten-minute
//! certificates verify. Without a log, validity is judged at the time of verification (a
//! private CA's certificates, valid while their images are deployed).

use pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

pub use crate::certs::{CertChain, certificates};
use crate::keys::PublicKey;
use crate::tlog::{LogEntry, TlogError, TransparencyLog};

/// The Fulcio issuer extension (DER UTF8String), and its deprecated raw-string form.
const OID_ISSUER: &str = "1.3.6.1.4.1.57264.1.8";
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// A Fulcio `otherName` subject alternative name (a username).
const OID_USERNAME: &str = "1.3.6.1.4.1.57264.1.7";
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), as the DER contents of the OID.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Why a keyless key or certificate cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeylessError {
    #[error("its trustRoot is unusable: {0}")]
    TrustRoot(String),
    #[error("the signature's certificate is unreadable: {0}")]
    Certificate(String),
    #[error("the certificate does not chain to the trustRoot of `{key}`: {reason}")]
    Chain { key: String, reason: String },
    #[error(
        "the certificate names {found}, not the identity of `{key}` (subject `{subject}` from issuer `{issuer}`)"
    )]
    Identity {
        key: String,
        found: String,
        subject: String,
        issuer: String,
    },
    #[error("the signature does not verify under its certificate's key (`{key}`)")]
    Signature { key: String },
    #[error("`{key}` needs the signature in its transparency log: {reason}")]
    Log { key: String, reason: String },
}

/// What came with a keyless signature: its certificate, and the transparency-log entries
/// that say when it was made, with the SHA-256 of what the log recorded as signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certified {
    pub chain: CertChain,
    pub entries: Vec<Result<LogEntry, TlogError>>,
    pub artifact: [u8; 32],
}

impl Certified {
    /// A certificate chain with no log entry.
    pub fn unlogged(chain: CertChain) -> Certified {
        Certified {
            chain,
            entries: Vec::new(),
            artifact: [0; 32],
        }
    }
}

impl CertChain {
    /// A chain from PEM: the certificate and, optionally, the CA certificates cosign
    /// attaches (`dev.sigstore.cosign/chain`: intermediates, then the root).
    pub fn from_pem(leaf: &str, chain: Option<&str>) -> Result<CertChain, KeylessError> {
        let mut leaves = certificates(leaf).map_err(KeylessError::Certificate)?;
        if leaves.len() != 1 {
            return Err(KeylessError::Certificate(format!(
                "{} certificates where one was expected",
                leaves.len()
            )));
        }
        let intermediates = match chain {
            Some(c) => certificates(c).map_err(KeylessError::Certificate)?,
            None => Vec::new(),
        };
        Ok(CertChain {
            leaf: leaves.remove(0),
            intermediates,
        })
    }
}

/// Who a certificate says signed: its Fulcio issuer and its subject alternative names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub issuer: Option<String>,
    pub subjects: Vec<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subjects = if self.subjects.is_empty() {
            "no subject".to_owned()
        } else {
            self.subjects
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.issuer {
            Some(i) => write!(f, "subject {subjects} from issuer `{i}`"),
            None => write!(f, "subject {subjects} and no issuer"),
        }
    }
}

/// The identity a certificate (DER) names.
pub fn identity(der: &[u8]) -> Result<Identity, KeylessError> {
    let bad = |e: String| KeylessError::Certificate(e);
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let mut id = Identity::default();
    let mut issuer_v1 = None;
    for ext in cert.extensions() {
        match ext.oid.to_id_string().as_str() {
            OID_ISSUER => {
                let (_, s) = asn1_utf8(ext.value).map_err(bad)?;
                id.issuer = Some(s);
            }
            OID_ISSUER_V1 => {
                issuer_v1 = Some(
                    std::str::from_utf8(ext.value)
                        .map_err(|e| bad(format!("the issuer extension: {e}")))?
                        .to_owned(),
                );
            }
            _ => {}
        }
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        id.subjects.push((*s).to_owned())
                    }
                    GeneralName::OtherName(oid, value) if oid.to_id_string() == OID_USERNAME => {
                        // [0] EXPLICIT UTF8String
                        if let Ok((_, any)) = x509_parser::der_parser::der::parse_der(value)
                            && let Ok(inner) = any.as_slice()
                            && let Ok((_, s)) = asn1_utf8(inner)
                        {
                            id.subjects.push(s);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if id.issuer.is_none() {
        id.issuer = issuer_v1;
    }
    Ok(id)
}

/// A DER UTF8String's text.
fn asn1_utf8(der: &[u8]) -> Result<(&[u8], String), String> {
    let (rest, obj) =
        x509_parser::der_parser::der::parse_der_utf8string(der).map_err(|e| e.to_string())?;
    let s = obj.as_str().map_err(|e| e.to_string())?;
    Ok((rest, s.to_owned()))
}

/// A TrustPolicy's keyless key, ready to check certificates.
#[derive(Clone, Debug)]
pub struct KeylessSigner {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    anchors: Vec<TrustAnchor<'static>>,
    log: Option<TransparencyLog>,
}

impl KeylessSigner {
    /// The keyless key `name` with `identity`, trusting the certificates of `trust_root`
    /// and, when given, requiring entries of the transparency log whose key is `log_key`.
    pub fn new(
        name: &str,
        issuer: &str,
        subject: &str,
        trust_root: &str,
        log_key: Option<&str>,
    ) -> Result<KeylessSigner, KeylessError> {
        let log = log_key
            .map(TransparencyLog::from_pem)
            .transpose()
            .map_err(|e| KeylessError::Log {
                key: name.to_owned(),
                reason: e.to_string(),
            })?;
        let roots = certificates(trust_root).map_err(KeylessError::TrustRoot)?;
        let anchors = roots
            .into_iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|e| KeylessError::TrustRoot(format!("{e:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeylessSigner {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            anchors,
            log,
        })
    }

    /// Whether `signature` of `message` is this identity's, by `certified`'s certificate,
    /// valid when the log says it was made (or at `now`, with no log).
    pub fn check(
        &self,
        certified: &Certified,
        message: &[u8],
        signature: &[u8],
        now: UnixTime,
    ) -> Result<(), KeylessError> {
        let chain = &certified.chain;
        let at = match &self.log {
            None => now,
            Some(log) => {
                let mut why = "no transparency-log entry came with it".to_owned();
                let mut logged = None;
                for entry in &certified.entries {
                    match entry
                        .as_ref()
                        .map_err(Clone::clone)
                        .and_then(|e| log.signed_at(e, signature, chain, &certified.artifact))
                    {
                        Ok(t) => {
                            logged = Some(t);
                            break;
                        }
                        Err(e) => why = e.to_string(),
                    }
                }
                let Some(t) = logged.and_then(|t| u64::try_from(t).ok()) else {
                    return Err(KeylessError::Log {
                        key: self.name.clone(),
                        reason: why,
                    });
                };
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(t))
            }
        };
        let leaf = CertificateDer::from(chain.leaf.as_slice());
        let cert = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| KeylessError::Certificate(format!("{e:?}")))?;
        let intermediates: Vec<CertificateDer<'_>> = chain
            .intermediates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            at,
            webpki::KeyUsage::required(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| KeylessError::Chain {
            key: self.name.clone(),
            reason: chain_reason(&e),
        })?;
        let found = identity(&chain.leaf)?;
        if found.issuer.as_deref() != Some(self.issuer.as_str())
            || !found.subjects.contains(&self.subject)
        {
            return Err(KeylessError::Identity {
                key: self.name.clone(),
                found: found.to_string(),
                subject: self.subject.clone(),
                issuer: self.issuer.clone(),
            });
        }
        let (_, parsed) = X509Certificate::from_der(&chain.leaf)
            .map_err(|e| KeylessError::Certificate(e.to_string()))?;
        let key = PublicKey::from_spki_der(&self.name, parsed.public_key().raw)
            .map_err(|e| KeylessError::Certificate(e.to_string()))?;
        if !key.verifies(message, signature) {
            return Err(KeylessError::Signature {
                key: self.name.clone(),
            });
        }
        Ok(())
    }
}

/// webpki's error, said for people.
fn chain_reason(e: &webpki::Error) -> String {
    match e {
        webpki::Error::CertExpired { .. } => "the certificate has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "the certificate is not valid yet".into(),
        webpki::Error::UnknownIssuer => "it is issued by no certificate of the trustRoot".into(),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for code signing".into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, SanType,
    };

    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const SUBJECT: &str =
        "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main";

    fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let pem = p.self_signed(&key).unwrap().pem();
        (p, key, pem)
    }

    fn leaf(issuer: &Issuer<'_, KeyPair>, subject: &str, eku: bool) -> (KeyPair, String) {
        leaf_valid(issuer, subject, eku, (2000, 2100))
    }

    /// A leaf valid from the first day of one year to the first of the other.
    fn leaf_valid(
        issuer: &Issuer<'_, KeyPair>,
        subject: &str,
        eku: bool,
        (from, to): (i32, i32),
    ) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names
            .push(SanType::URI(subject.try_into().unwrap()));
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        if eku {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::CodeSigning);
        }
        // The Fulcio issuer (v2): a DER UTF8String.
        let mut value = vec![0x0c, ISSUER.len() as u8];
        value.extend_from_slice(ISSUER.as_bytes());
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
            value,
        ));
        let pem = p.signed_by(&key, issuer).unwrap().pem();
        (key, pem)
    }

    fn sign(key: &KeyPair, message: &[u8]) -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        pair.sign(&rng, message).unwrap().as_ref().to_vec()
    }

    #[test]
    fn a_certificate_counts_only_chained_named_and_signing() {
        let (params, ca_key, root_pem) = ca("root");
        let issuer = Issuer::new(params, ca_key);
        let (key, cert) = leaf(&issuer, SUBJECT, true);
        let chain = Certified::unlogged(CertChain::from_pem(&cert, None).unwrap());
        let signer = KeylessSigner::new("release", ISSUER, SUBJECT, &root_pem, None).unwrap();
        let now = UnixTime::now();
        let sig = sign(&key, b"payload");
        assert_eq!(signer.check(&chain, b"payload", &sig, now), Ok(()));
        assert_eq!(
            identity(&chain.chain.leaf).unwrap().to_string(),
            format!("subject `{SUBJECT}` from issuer `{ISSUER}`")
        );
        // Another message.
        assert!(matches!(
            signer.check(&chain, b"payloaD", &sig, now),
            Err(KeylessError::Signature { .. })
        ));
        // Another subject.
        let other = KeylessSigner::new(
            "release",
            ISSUER,
            "https://github.com/evil",
            &root_pem,
            None,
        )
        .unwrap();
        let e = other.check(&chain, b"payload", &sig, now).unwrap_err();
        assert!(e.to_string().contains(SUBJECT), "{e}");
        // Another issuer.
        let other = KeylessSigner::new(
            "release",
            "https://accounts.google.com",
            SUBJECT,
            &root_pem,
            None,
        )
        .unwrap();
        assert!(matches!(
            other.check(&chain, b"payload", &sig, now),
            Err(KeylessError::Identity { .. })
        ));
        // Another root.
        let (_, _, stranger_root) = ca("stranger");
        let other = KeylessSigner::new("release", ISSUER, SUBJECT, &stranger_root, None).unwrap();
        let e = other.check(&chain, b"payload", &sig, now).unwrap_err();
        assert!(e.to_string().contains("issued by no certificate"), "{e}");
        // Expired by the time of checking.
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(7_300_000_000));
        let e = signer.check(&chain, b"payload", &sig, later).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // Not a code-signing certificate.
        let (key, cert) = leaf(&issuer, SUBJECT, false);
        let chain = Certified::unlogged(CertChain::from_pem(&cert, None).unwrap());
        let e = signer
            .check(&chain, b"payload", &sign(&key, b"payload"), now)
            .unwrap_err();
        assert!(e.to_string().contains("code signing"), "{e}");
    }

    /// A transparency log simulated here (its key is the test's; no Rekor runs): it signs
    /// entries exactly as Rekor's signed entry timestamps are made.
    struct SimulatedLog {
        key: KeyPair,
    }

    impl SimulatedLog {
        fn entry(&self, body: &Value, at: i64) -> LogEntry {
            use base64::Engine as _;
            use sha2::Digest as _;
            let der = pem::parse(self.key.public_key_pem())
                .unwrap()
                .into_contents();
            let mut e = LogEntry {
                body: base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(body).unwrap()),
                integrated_time: at,
                log_index: 42,
                log_id: sha2::Sha256::digest(&der)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                promise: Vec::new(),
            };
            e.promise = sign(&self.key, &e.promised());
            e
        }
    }

    use serde_json::{Value, json};

    fn hashedrekord(artifact: &[u8; 32], sig: &[u8], cert_pem: &str) -> Value {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let hex: String = artifact.iter().map(|b| format!("{b:02x}")).collect();
        json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex}},
            "signature": {"content": b64(sig), "publicKey": {"content": b64(cert_pem.as_bytes())}}}})
    }

    #[test]
    fn with_a_log_a_certificate_is_judged_when_the_log_says_it_signed() {
        use sha2::Digest as _;
        let (params, ca_key, root_pem) = ca("root");
        let issuer = Issuer::new(params, ca_key);
        // Valid through 2024 only, like a Fulcio certificate long expired by now.
        let (key, cert) = leaf_valid(&issuer, SUBJECT, true, (2024, 2025));
        let log = SimulatedLog {
            key: KeyPair::generate().unwrap(),
        };
        let log_pem = log.key.public_key_pem();
        let signer =
            KeylessSigner::new("ci", ISSUER, SUBJECT, &root_pem, Some(log_pem.as_str())).unwrap();
        let payload = b"payload";
        let artifact: [u8; 32] = sha2::Sha256::digest(payload).into();
        let sig = sign(&key, payload);
        let in_2024 = 1_720_000_000; // July 2024
        let chain = CertChain::from_pem(&cert, None).unwrap();
        let with = |entries: Vec<LogEntry>| Certified {
            chain: chain.clone(),
            entries: entries.into_iter().map(Ok).collect(),
            artifact,
        };
        let now = UnixTime::now();
        let body = hashedrekord(&artifact, &sig, &cert);

        // Logged while valid: counts, though the certificate has expired since.
        let logged = with(vec![log.entry(&body, in_2024)]);
        assert_eq!(signer.check(&logged, payload, &sig, now), Ok(()));
        // Without the log, the same certificate is judged now: expired.
        let unlogged = KeylessSigner::new("ci", ISSUER, SUBJECT, &root_pem, None).unwrap();
        let e = unlogged.check(&logged, payload, &sig, now).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");

        // Each way of not being vouched for, with its reason.
        let cases: Vec<(Certified, &str)> = vec![
            (with(vec![]), "no transparency-log entry"),
            // Logged after the certificate expired.
            (with(vec![log.entry(&body, 1_750_000_000)]), "expired"),
            // Another log's promise.
            (
                with(vec![
                    SimulatedLog {
                        key: KeyPair::generate().unwrap(),
                    }
                    .entry(&body, in_2024),
                ]),
                "another log",
            ),
            // The time altered after the log signed.
            (
                with(vec![LogEntry {
                    integrated_time: in_2024 + 1,
                    ..log.entry(&body, in_2024)
                }]),
                "does not verify",
            ),
            // An entry about another artifact.
            (
                with(vec![
                    log.entry(&hashedrekord(&[7; 32], &sig, &cert), in_2024),
                ]),
                "another artifact",
            ),
            // An entry about another signature.
            (
                with(vec![
                    log.entry(&hashedrekord(&artifact, b"other", &cert), in_2024),
                ]),
                "another signature",
            ),
        ];
        for (certified, reason) in cases {
            let e = signer.check(&certified, payload, &sig, now).unwrap_err();
            assert!(e.to_string().contains(reason), "{reason}: {e}");
        }
        // A DSSE entry names the payload's hash and the signature with its certificate.
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let hex: String = artifact.iter().map(|b| format!("{b:02x}")).collect();
        let dsse = json!({"kind": "dsse", "spec": {"payloadHash": {"value": hex},
            "signatures": [{"signature": b64(&sig), "verifier": b64(cert.as_bytes())}]}});
        let logged = with(vec![log.entry(&dsse, in_2024)]);
        assert_eq!(signer.check(&logged, payload, &sig, now), Ok(()));
        // An unusable log key is said when the key is read.
        assert!(matches!(
            KeylessSigner::new("ci", ISSUER, SUBJECT, &root_pem, Some("junk")),
            Err(KeylessError::Log { .. })
        ));
    }

    #[test]
    fn unreadable_roots_and_certificates_are_errors() {
        assert!(matches!(
            KeylessSigner::new("k", ISSUER, SUBJECT, "nothing", None),
            Err(KeylessError::TrustRoot(_))
        ));
        let junk = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x03, 1, 2, 3]));
        assert!(KeylessSigner::new("k", ISSUER, SUBJECT, &junk, None).is_err());
        assert!(identity(&[0x30, 0x03, 1, 2, 3]).is_err());
        assert!(CertChain::from_pem("", None).is_err());
        let two = format!("{junk}{junk}");
        assert!(CertChain::from_pem(&two, None).is_err());
    }
}
