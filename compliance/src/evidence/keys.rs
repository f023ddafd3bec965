//! Ed25519 keys for signing evidence records and checking their signatures.
//!
//! A signing key is a PEM `PRIVATE KEY` (PKCS#8, as `openssl genpkey -algorithm ed25519` or
//! `lattice-policy compliance keygen` writes it). A trusted key is the matching PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo). Signing and verification are `ring`'s; the
//! SubjectPublicKeyInfo of an Ed25519 key is a fixed 12-byte header before the 32-byte key
//! (RFC 8410 §4), so it is written and read here rather than through an ASN.1 crate.
//!
//! A key is named by its id: the first 16 hex digits of the SHA-256 of the raw public key.
//! Each signature names the key that made it, so a verifier can hold several trusted keys
//! (a rotation) and says which one is missing when none matches.

use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The DER header of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): SEQUENCE, AlgorithmIdentifier
/// id-Ed25519 (1.3.101.112), BIT STRING of 33 bytes with no unused bits.
const SPKI_HEADER: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The id of a raw Ed25519 public key.
fn key_id(public: &[u8]) -> String {
    Sha256::digest(public)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A key that signs evidence records.
pub struct Signer {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for Signer {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("id", &self.id).finish()
    }
}

impl Signer {
    /// A signer from PEM text holding a PKCS#8 Ed25519 private key.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text.trim())
            .map_err(|e| KeyError::Invalid(format!("the signing key is not PEM: {e}")))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(KeyError::Invalid(format!(
                "the signing key is a PEM `{}`; an Ed25519 `PRIVATE KEY` (PKCS#8) is needed",
                block.tag()
            )));
        }
        // `maybe_unchecked`: OpenSSL writes PKCS#8 v1, which carries no public key to check.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents()).map_err(|e| {
            KeyError::Invalid(format!(
                "the signing key is not an Ed25519 PKCS#8 private key: {e}"
            ))
        })?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    /// A signer from a PEM file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?)
    }

    /// A new random key: its private key as PKCS#8 PEM, and the signer.
    pub fn generate() -> Result<(String, Self), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyError::Invalid("the system random source failed".into()))?;
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        let signer = Self::from_pem(&text)?;
        Ok((text, signer))
    }

    /// The key's id, written beside each signature.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half, to give verifiers.
    pub fn public(&self) -> TrustedKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        TrustedKey {
            id: self.id.clone(),
            raw,
        }
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// A public key whose signatures a verifier accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    id: String,
    raw: [u8; 32],
}

impl TrustedKey {
    /// A trusted key from PEM text holding an Ed25519 `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text.trim())
            .map_err(|e| KeyError::Invalid(format!("the trusted key is not PEM: {e}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(KeyError::Invalid(format!(
                "the trusted key is a PEM `{}`; an Ed25519 `PUBLIC KEY` is needed (never hand a verifier the private key)",
                block.tag()
            )));
        }
        let der = block.contents();
        let raw: [u8; 32] = der
            .strip_prefix(&SPKI_HEADER)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| {
                KeyError::Invalid("the trusted key is not an Ed25519 public key".into())
            })?;
        Ok(Self {
            id: key_id(&raw),
            raw,
        })
    }

    /// A trusted key from a PEM file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_HEADER.to_vec();
        der.extend_from_slice(&self.raw);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{Signer, TrustedKey};

    #[test]
    fn a_generated_key_signs_and_only_its_public_half_verifies() {
        let (private, signer) = Signer::generate().unwrap();
        let again = Signer::from_pem(&private).unwrap();
        assert_eq!(again.id(), signer.id());
        let public = TrustedKey::from_pem(&signer.public().to_pem()).unwrap();
        assert_eq!(public.id(), signer.id());
        let sig = signer.sign(b"record");
        assert!(public.verifies(b"record", &sig));
        assert!(!public.verifies(b"recorD", &sig));
        let (_, other) = Signer::generate().unwrap();
        assert!(!other.public().verifies(b"record", &sig));
        assert_ne!(other.id(), signer.id());
    }

    #[test]
    fn an_openssl_key_pair_loads() {
        // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`: PKCS#8 v1 and
        // SubjectPublicKeyInfo, the forms an operator's tooling produces.
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICg0Bug+bRTcG46xFqxJQWdcO1lk7ZhkH3Ih3/0w0ArV\n-----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA0sd+ltk3WUdnzDB9QESSe0BeQdpKXP9lYr5TGGpOtaA=\n-----END PUBLIC KEY-----\n";
        let signer = Signer::from_pem(private).unwrap();
        let trusted = TrustedKey::from_pem(public).unwrap();
        assert_eq!(signer.public(), trusted);
        assert!(trusted.verifies(b"x", &signer.sign(b"x")));
    }

    #[test]
    fn the_wrong_kind_of_key_is_refused_with_a_reason() {
        let (private, _) = Signer::generate().unwrap();
        let e = TrustedKey::from_pem(&private).unwrap_err().to_string();
        assert!(e.contains("never hand a verifier the private key"), "{e}");
        assert!(Signer::from_pem("not pem").is_err());
        let rsa_spki = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAN3voUpHlvPzvcfwNrF9u4foWHf/t+1L\nwNzHjEBqsuPIzMH4VTvZ+2eKu6fMM/mS5hxvvadCY++9pD9TjK9LMv0CAwEAAQ==\n-----END PUBLIC KEY-----\n";
        assert!(TrustedKey::from_pem(rsa_spki).is_err());
    }
}
