//! Public keys of a TrustPolicy, and checking a signature with one.
//!
//! Keys are PEM `PUBLIC KEY` blocks (a SubjectPublicKeyInfo), as `cosign generate-key-pair`
//! writes `cosign.pub`. Supported: ECDSA P-256 and P-384 (ASN.1 DER signatures, SHA-256 and
//! SHA-384), Ed25519, and RSA 2048–8192 bits (PKCS#1 v1.5 or PSS, SHA-256). ring checks the
//! signature; x509-parser reads the key's algorithm and bits.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// Why a key cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the public key is not a PEM `PUBLIC KEY` block: {0}")]
    Pem(String),
    #[error("the public key is not a SubjectPublicKeyInfo: {0}")]
    Der(String),
    #[error(
        "unsupported key algorithm {0} (supported: ECDSA P-256 or P-384, Ed25519, RSA 2048–8192)"
    )]
    Unsupported(String),
}

/// The kind of a public key, which fixes the signature algorithms it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

/// A trusted public key: its name (what policies see in `Image.signers`) and its bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub kind: KeyKind,
    /// The SubjectPublicKeyInfo's key bits: an uncompressed EC point, 32 Ed25519 bytes, or
    /// a PKCS#1 RSAPublicKey.
    bits: Vec<u8>,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY`.
    pub fn from_pem(name: &str, text: &str) -> Result<PublicKey, KeyError> {
        let block = pem::parse(text.trim()).map_err(|e| KeyError::Pem(e.to_string()))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(KeyError::Pem(format!(
                "found `{}`, expected `PUBLIC KEY`",
                block.tag()
            )));
        }
        PublicKey::from_spki_der(name, block.contents())
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(name: &str, der: &[u8]) -> Result<PublicKey, KeyError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| KeyError::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::Der("trailing bytes after the key".into()));
        }
        let alg = spki.algorithm.algorithm.to_id_string();
        let kind = match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => KeyKind::EcdsaP256,
                    OID_P384 => KeyKind::EcdsaP384,
                    other => return Err(KeyError::Unsupported(format!("EC curve {other}"))),
                }
            }
            OID_ED25519 => KeyKind::Ed25519,
            OID_RSA => KeyKind::Rsa,
            other => return Err(KeyError::Unsupported(other.to_owned())),
        };
        Ok(PublicKey {
            name: name.to_owned(),
            kind,
            bits: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithms: &[&'static dyn VerificationAlgorithm] = match self.kind {
            KeyKind::EcdsaP256 => &[&signature::ECDSA_P256_SHA256_ASN1],
            KeyKind::EcdsaP384 => &[
                &signature::ECDSA_P384_SHA384_ASN1,
                &signature::ECDSA_P384_SHA256_ASN1,
            ],
            KeyKind::Ed25519 => &[&signature::ED25519],
            KeyKind::Rsa => &[
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ],
        };
        algorithms.iter().any(|alg| {
            UnparsedPublicKey::new(*alg, &self.bits)
                .verify(message, signature)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn spki_pem(der: &[u8]) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", der.to_vec()))
    }

    #[test]
    fn p256_signature_verifies_only_its_message() {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let public = PublicKey::from_pem("release", &key.public_key_pem()).unwrap();
        assert_eq!(public.kind, KeyKind::EcdsaP256);
        assert_eq!(public.bits, pair.public_key().as_ref());
        let sig = pair.sign(&rng, b"payload").unwrap();
        assert!(public.verifies(b"payload", sig.as_ref()));
        assert!(!public.verifies(b"payloaD", sig.as_ref()));
        assert!(!public.verifies(b"payload", &sig.as_ref()[1..]));
    }

    #[test]
    fn ed25519_signature_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let public = PublicKey::from_pem("ci", &key.public_key_pem()).unwrap();
        assert_eq!(public.kind, KeyKind::Ed25519);
        let sig = pair.sign(b"payload");
        assert!(public.verifies(b"payload", sig.as_ref()));
        assert!(!public.verifies(b"other", sig.as_ref()));
    }

    #[test]
    fn keys_of_another_kind_or_garbage_are_refused() {
        assert!(matches!(
            PublicKey::from_pem("x", "not pem"),
            Err(KeyError::Pem(_))
        ));
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(matches!(
            PublicKey::from_pem("x", &cert),
            Err(KeyError::Pem(_))
        ));
        assert!(matches!(
            PublicKey::from_pem("x", &spki_pem(&[0x30, 0x03, 0x02, 0x01, 0x00])),
            Err(KeyError::Der(_))
        ));
    }
}
