//! Transparency-log entries: when a keyless signature was made, as a log (Rekor) promises.
//!
//! Fulcio's certificates live ten minutes, so "was the certificate valid?" must be asked at
//! the time of signing, and only a trusted log can say when that was. A log entry comes
//! with the signature (cosign's `dev.sigstore.cosign/bundle` annotation in the tag form, a
//! bundle's `tlogEntries`) and carries the log's *signed entry timestamp*: the log's
//! signature over the entry's body, integration time, log index and log ID (canonical
//! JSON). An entry counts when
//!
//! 1. its log ID is the SHA-256 of the trusted log key and that key verifies the signed
//!    entry timestamp (the log promised to include this body at this time);
//! 2. its body is about this signature: a `hashedrekord` (the artifact's SHA-256, the
//!    signature, the certificate) or a `dsse` entry (the payload's SHA-256, one of its
//!    signatures with its certificate) naming exactly the signature and certificate checked.
//!
//! Then the certificate is checked at the integration time. Inclusion proofs against a
//! signed checkpoint are not checked: the signed entry timestamp is the log's promise, as
//! cosign's offline verification takes it. Written here because the `sigstore` crate's
//! verification brings a second crypto stack (see [`crate::cosign`]).

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::certs::{CertChain, certificates};
use crate::keys::PublicKey;

/// The annotation holding a tag-form signature's log entry.
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// The largest entry body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a log entry does not vouch for a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    #[error("the transparency-log entry is unreadable: {0}")]
    Entry(String),
    #[error("the transparency-log entry is from another log ({0})")]
    OtherLog(String),
    #[error("the transparency log's signed entry timestamp does not verify")]
    Promise,
    #[error("the transparency-log entry is about another {0}")]
    OtherSignature(&'static str),
    #[error("the trusted transparency-log key is unusable: {0}")]
    Key(String),
}

/// A log entry as it travels with a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The body, base64, exactly as signed.
    pub body: String,
    pub integrated_time: i64,
    pub log_index: i64,
    /// Hex SHA-256 of the log's public key.
    pub log_id: String,
    /// The signed entry timestamp.
    pub promise: Vec<u8>,
}

fn b64(text: &str, what: &str) -> Result<Vec<u8>, TlogError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| TlogError::Entry(format!("`{what}` is not base64: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LogEntry {
    /// Reads cosign's `dev.sigstore.cosign/bundle` annotation.
    pub fn from_cosign_annotation(text: &str) -> Result<LogEntry, TlogError> {
        let bad = |m: &str| TlogError::Entry(m.to_owned());
        let doc: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let payload = doc.get("Payload").ok_or_else(|| bad("no `Payload`"))?;
        let str_at = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("no `Payload.{k}`")))
        };
        let int_at = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_i64)
                .ok_or_else(|| bad(&format!("no `Payload.{k}`")))
        };
        Ok(LogEntry {
            body: str_at("body")?.to_owned(),
            integrated_time: int_at("integratedTime")?,
            log_index: int_at("logIndex")?,
            log_id: str_at("logID")?.to_ascii_lowercase(),
            promise: b64(
                doc.get("SignedEntryTimestamp")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("no `SignedEntryTimestamp`"))?,
                "SignedEntryTimestamp",
            )?,
        })
    }

    /// Reads one of a Sigstore bundle's `verificationMaterial.tlogEntries`.
    pub fn from_bundle_entry(entry: &Value) -> Result<LogEntry, TlogError> {
        let bad = |m: &str| TlogError::Entry(m.to_owned());
        let str_at = |p: &str| {
            entry
                .pointer(p)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("no `{}`", &p[1..].replace('/', "."))))
        };
        // Protobuf JSON writes 64-bit integers as strings.
        let int_at = |p: &str| {
            str_at(p)?
                .parse::<i64>()
                .map_err(|e| bad(&format!("`{}`: {e}", &p[1..])))
        };
        Ok(LogEntry {
            body: str_at("/canonicalizedBody")?.to_owned(),
            integrated_time: int_at("/integratedTime")?,
            log_index: int_at("/logIndex")?,
            log_id: hex(&b64(str_at("/logId/keyId")?, "logId.keyId")?),
            promise: b64(
                str_at("/inclusionPromise/signedEntryTimestamp")?,
                "inclusionPromise.signedEntryTimestamp",
            )?,
        })
    }

    /// What the log signed: the entry's canonical JSON (keys sorted, no spaces).
    pub fn promised(&self) -> Vec<u8> {
        format!(
            r#"{{"body":{},"integratedTime":{},"logID":{},"logIndex":{}}}"#,
            Value::from(self.body.as_str()),
            self.integrated_time,
            Value::from(self.log_id.as_str()),
            self.log_index
        )
        .into_bytes()
    }
}

/// A transparency log trusted by its public key.
#[derive(Clone, Debug)]
pub struct TransparencyLog {
    key: PublicKey,
    /// Hex SHA-256 of the key's DER SubjectPublicKeyInfo.
    log_id: String,
}

impl TransparencyLog {
    /// The log whose public key (PEM `PUBLIC KEY`) is `pem`.
    pub fn from_pem(pem_text: &str) -> Result<TransparencyLog, TlogError> {
        let key = PublicKey::from_pem("transparency log", pem_text)
            .map_err(|e| TlogError::Key(e.to_string()))?;
        let der = pem::parse(pem_text.trim())
            .map_err(|e| TlogError::Key(e.to_string()))?
            .into_contents();
        Ok(TransparencyLog {
            key,
            log_id: hex(&Sha256::digest(&der)),
        })
    }

    /// The log's ID: the hex SHA-256 of its key.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// When `entry` says `signature` (of an artifact whose SHA-256 is `artifact`, by the
    /// certificate of `chain`) was logged, in seconds since the epoch, if this log promised
    /// it.
    pub fn signed_at(
        &self,
        entry: &LogEntry,
        signature: &[u8],
        chain: &CertChain,
        artifact: &[u8; 32],
    ) -> Result<i64, TlogError> {
        if entry.log_id != self.log_id {
            return Err(TlogError::OtherLog(entry.log_id.clone()));
        }
        if !self.key.verifies(&entry.promised(), &entry.promise) {
            return Err(TlogError::Promise);
        }
        let body = b64(&entry.body, "body")?;
        if body.len() > MAX_BODY_BYTES {
            return Err(TlogError::Entry(format!(
                "a body over {MAX_BODY_BYTES} bytes"
            )));
        }
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| TlogError::Entry(format!("the body: {e}")))?;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let spec = doc.get("spec").unwrap_or(&Value::Null);
        let text = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (hash, signed) = match kind {
            "hashedrekord" => (
                text("/data/hash/value"),
                vec![(
                    text("/signature/content"),
                    text("/signature/publicKey/content"),
                )],
            ),
            "dsse" => (
                text("/payloadHash/value"),
                spec.get("signatures")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        (
                            s.get("signature").and_then(Value::as_str).unwrap_or(""),
                            s.get("verifier").and_then(Value::as_str).unwrap_or(""),
                        )
                    })
                    .collect(),
            ),
            other => {
                return Err(TlogError::Entry(format!(
                    "a `{other}` entry (hashedrekord and dsse are read)"
                )));
            }
        };
        if !hash.eq_ignore_ascii_case(&hex(artifact)) {
            return Err(TlogError::OtherSignature("artifact"));
        }
        let ours = signed.iter().any(|(sig, cert)| {
            let same_sig = base64::engine::general_purpose::STANDARD
                .decode(sig)
                .is_ok_and(|s| s == signature);
            let same_cert = base64::engine::general_purpose::STANDARD
                .decode(cert)
                .ok()
                .and_then(|pem| String::from_utf8(pem).ok())
                .and_then(|pem| certificates(&pem).ok())
                .is_some_and(|certs| certs.first() == Some(&chain.leaf));
            same_sig && same_cert
        });
        if !ours {
            return Err(TlogError::OtherSignature("signature or certificate"));
        }
        Ok(entry.integrated_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_in_both_forms_sign_the_same_canonical_json() {
        let annotation = r#"{"SignedEntryTimestamp":"AAEC","Payload":{"body":"e30=","integratedTime":1700000000,"logIndex":7,"logID":"C0D2"}}"#;
        let a = LogEntry::from_cosign_annotation(annotation).unwrap();
        let bundle: Value = serde_json::from_str(
            r#"{"logIndex":"7","logId":{"keyId":"wNI="},"integratedTime":"1700000000",
                "inclusionPromise":{"signedEntryTimestamp":"AAEC"},"canonicalizedBody":"e30="}"#,
        )
        .unwrap();
        let b = LogEntry::from_bundle_entry(&bundle).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a.promised()).unwrap(),
            r#"{"body":"e30=","integratedTime":1700000000,"logID":"c0d2","logIndex":7}"#
        );
        assert!(LogEntry::from_cosign_annotation("{}").is_err());
        assert!(LogEntry::from_cosign_annotation("[").is_err());
        assert!(LogEntry::from_bundle_entry(&serde_json::json!({"logIndex": "x"})).is_err());
    }
}
