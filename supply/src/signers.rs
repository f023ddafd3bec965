//! Who may sign under a TrustPolicy prefix, and whom a signature is by.
//!
//! A prefix trusts public keys ([`crate::keys`]) and keyless identities
//! ([`crate::keyless`]). A signature is by every public key that verifies it, and by every
//! keyless identity whose certificate came with it and passes. The signature forms (cosign's
//! tag form, Sigstore bundles) differ only in what message is signed and where the
//! certificate travels; they ask here who signed.

use pki_types::UnixTime;

use crate::keyless::{Certified, KeylessError, KeylessSigner};
use crate::keys::PublicKey;

/// The signers one prefix trusts.
#[derive(Clone, Debug, Default)]
pub struct Signers {
    pub keys: Vec<PublicKey>,
    pub keyless: Vec<KeylessSigner>,
}

/// Why one signature does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("a signature verifies under no trusted key{}", because(.keyless))]
    NoTrustedKey {
        /// Why each keyless identity refused the signature's certificate.
        keyless: Vec<String>,
    },
    #[error("a signature by `{key}` names digest {named}, not {digest}")]
    OtherDigest {
        key: String,
        named: String,
        digest: String,
    },
    #[error("a signature by `{key}` has an unreadable payload: {reason}")]
    Payload { key: String, reason: String },
    #[error("a signature by `{key}` is not an image signature: {reason}")]
    NotASignature { key: String, reason: String },
}

fn because(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    }
}

impl Signers {
    /// Whether nothing could ever verify here.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.keyless.is_empty()
    }

    /// The names of the trusted signers of `message` by `signature` (with `certificate`,
    /// when one came with it), checked at `now`; at least one, or why none.
    pub fn signed_by(
        &self,
        message: &[u8],
        signature: &[u8],
        certificate: Option<&Certified>,
        now: UnixTime,
    ) -> Result<Vec<String>, Rejected> {
        let mut names: Vec<String> = self
            .keys
            .iter()
            .filter(|k| k.verifies(message, signature))
            .map(|k| k.name.clone())
            .collect();
        let mut refused = Vec::new();
        if let Some(chain) = certificate {
            for signer in &self.keyless {
                match signer.check(chain, message, signature, now) {
                    Ok(()) => names.push(signer.name.clone()),
                    // Said once, however many identities refused it.
                    Err(e @ KeylessError::Certificate(_)) => {
                        refused = vec![e.to_string()];
                        break;
                    }
                    Err(e) => refused.push(e.to_string()),
                }
            }
        }
        if certificate.is_none() && !self.keyless.is_empty() {
            refused.push("it carries no certificate for the keyless keys".to_owned());
        }
        if names.is_empty() {
            return Err(Rejected::NoTrustedKey { keyless: refused });
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}
