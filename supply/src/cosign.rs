//! Cosign signatures in the tag form: what the signature manifest and its payload say, and
//! whether a signature counts.
//!
//! `cosign sign` stores the signatures of `repo@sha256:H` as the image `repo:sha256-H.sig`.
//! Each of its layers is a *simple signing* payload (JSON naming the signed manifest's
//! digest) with the signature of those payload bytes in the layer's
//! `dev.cosignproject.cosign/signature` annotation (base64). A signature counts only when a
//! trusted key verifies it *and* the payload names exactly the digest being verified: a
//! valid signature copied from another image is refused.
//!
//! Written here rather than taken from the `sigstore` crate: its cosign feature brings the
//! Fulcio, Rekor and OIDC clients and a second TLS and crypto stack (aws-lc-rs or OpenSSL,
//! some 350 crates), while the check itself is these few functions over ring. Everything
//! here is pure (bytes in, verdict out), so it is fuzzed directly.

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;

use crate::keyless::{CertChain, Certified};
use crate::signers::{Rejected, Signers};
use crate::tlog::{BUNDLE_ANNOTATION, LogEntry};

/// The media type of a simple signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The annotation holding a keyless signature's certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The annotation holding the CA certificates (PEM) that came with the certificate.
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// `critical.type` of a cosign image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The largest payload read: a simple signing payload is a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;
/// The most signature layers looked at on one image.
pub const MAX_SIGNATURES: usize = 64;

/// Why a signature manifest or payload cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CosignError {
    #[error("`{0}` is not a `sha256:<64 hex>` digest")]
    Digest(String),
    #[error("the signature manifest is not an OCI image manifest: {0}")]
    Manifest(String),
    #[error("the signature payload is not a cosign image signature: {0}")]
    Payload(String),
}

/// The tag under which cosign stores the signatures of `digest`.
pub fn signature_tag(digest: &str) -> Result<String, CosignError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| CosignError::Digest(digest.to_owned()))?;
    Ok(format!("sha256-{}.sig", hex.to_ascii_lowercase()))
}

/// One signature layer of a signature manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload blob's digest and size, as the manifest lists them.
    pub payload_digest: String,
    pub payload_size: u64,
    /// The signature of the payload bytes, decoded.
    pub signature: Vec<u8>,
    /// A keyless signature's certificate (PEM), when the layer carries one.
    pub certificate: Option<String>,
    /// The CA certificates (PEM) that came with it.
    pub chain: Option<String>,
    /// Its transparency-log entry (cosign's bundle annotation, JSON), when it was logged.
    pub log_entry: Option<String>,
}

/// The signature layers of a signature manifest (an OCI or Docker v2 image manifest).
/// Layers of other media types are ignored; a simple signing layer without a readable
/// signature or with an oversized payload is an error, since it cannot be checked.
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>, CosignError> {
    let bad = |m: &str| CosignError::Manifest(m.to_owned());
    let doc: Value = serde_json::from_slice(manifest).map_err(|e| bad(&e.to_string()))?;
    let layers = doc
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `layers` list"))?;
    let mut out = Vec::new();
    for layer in layers {
        if layer.get("mediaType").and_then(Value::as_str) != Some(SIMPLE_SIGNING) {
            continue;
        }
        if out.len() == MAX_SIGNATURES {
            return Err(bad(&format!("more than {MAX_SIGNATURES} signature layers")));
        }
        let payload_digest = layer
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a signature layer has no `digest`"))?;
        signature_tag(payload_digest).map_err(|e| bad(&e.to_string()))?;
        let payload_size = layer
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("a signature layer has no `size`"))?;
        if payload_size > MAX_PAYLOAD_BYTES {
            return Err(bad(&format!(
                "a signature payload of {payload_size} bytes (at most {MAX_PAYLOAD_BYTES})"
            )));
        }
        let annotations = layer.get("annotations");
        let encoded = annotations
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad(&format!(
                    "a signature layer has no `{SIGNATURE_ANNOTATION}`"
                ))
            })?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| bad(&format!("the signature is not base64: {e}")))?;
        let pem_annotation = |name: &str| {
            annotations
                .and_then(|a| a.get(name))
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
        };
        out.push(SignatureLayer {
            payload_digest: payload_digest.to_ascii_lowercase(),
            payload_size,
            signature,
            certificate: pem_annotation(CERTIFICATE_ANNOTATION),
            chain: pem_annotation(CHAIN_ANNOTATION),
            log_entry: pem_annotation(BUNDLE_ANNOTATION),
        });
    }
    Ok(out)
}

/// What a simple signing payload says it signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// `critical.image.docker-manifest-digest`.
    pub digest: String,
    /// `critical.identity.docker-reference` (where the image was signed; informative).
    pub reference: String,
}

/// Reads a simple signing payload.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, CosignError> {
    let bad = |m: &str| CosignError::Payload(m.to_owned());
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let critical = doc
        .get("critical")
        .ok_or_else(|| bad("no `critical` section"))?;
    let kind = critical.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != PAYLOAD_TYPE {
        return Err(bad(&format!(
            "`critical.type` is `{kind}`, not `{PAYLOAD_TYPE}`"
        )));
    }
    let digest = critical
        .pointer("/image/docker-manifest-digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `critical.image.docker-manifest-digest`"))?;
    let reference = critical
        .pointer("/identity/docker-reference")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(Payload {
        digest: digest.to_ascii_lowercase(),
        reference: reference.to_owned(),
    })
}

/// The trusted signers by whom `layer`'s signature of `payload` verifies (at `now`, for
/// certificates), when its payload names exactly `digest`. `payload` must be the blob the
/// layer names (the registry client checked its digest).
pub fn check(
    layer: &SignatureLayer,
    payload: &[u8],
    digest: &str,
    trusted: &Signers,
    now: pki_types::UnixTime,
) -> Result<Vec<String>, Rejected> {
    let signers = match layer
        .certificate
        .as_deref()
        .map(|leaf| CertChain::from_pem(leaf, layer.chain.as_deref()))
    {
        None => trusted.signed_by(payload, &layer.signature, None, now)?,
        Some(Ok(chain)) => {
            let certified = Certified {
                chain,
                entries: layer
                    .log_entry
                    .iter()
                    .map(|e| LogEntry::from_cosign_annotation(e))
                    .collect(),
                artifact: sha2::Sha256::digest(payload).into(),
            };
            trusted.signed_by(payload, &layer.signature, Some(&certified), now)?
        }
        // An unreadable certificate vouches for nobody; a public key may still verify.
        Some(Err(e)) => {
            let keys_only = Signers {
                keys: trusted.keys.clone(),
                keyless: Vec::new(),
            };
            keys_only
                .signed_by(payload, &layer.signature, None, now)
                .map_err(|_| Rejected::NoTrustedKey {
                    keyless: vec![e.to_string()],
                })?
        }
    };
    let first = &signers[0];
    // The signature is a trusted key's; now it must be about this image.
    let named = parse_payload(payload).map_err(|e| Rejected::Payload {
        key: first.clone(),
        reason: e.to_string(),
    })?;
    if named.digest != digest.to_ascii_lowercase() {
        return Err(Rejected::OtherDigest {
            key: first.clone(),
            named: named.digest,
            digest: digest.to_owned(),
        });
    }
    Ok(signers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn signature_tag_is_cosigns_convention() {
        assert_eq!(
            signature_tag(D).unwrap(),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
        assert!(signature_tag("sha512:00").is_err());
        assert!(signature_tag("sha256:xyz").is_err());
    }

    #[test]
    fn payloads_name_their_digest_or_are_refused() {
        let p = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/app"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let parsed = parse_payload(p.as_bytes()).unwrap();
        assert_eq!(
            (parsed.digest.as_str(), parsed.reference.as_str()),
            (D, "r/app")
        );
        let wrong_type = p.replace("cosign container image signature", "attestation");
        assert!(parse_payload(wrong_type.as_bytes()).is_err());
        assert!(parse_payload(b"{}").is_err());
        assert!(parse_payload(b"\xff").is_err());
    }

    #[test]
    fn manifests_without_readable_signatures_are_errors() {
        let layer = |annotations: &str, size: u64| {
            format!(
                r#"{{"schemaVersion":2,"layers":[{{"mediaType":"{SIMPLE_SIGNING}","digest":"{D}","size":{size},"annotations":{annotations}}}]}}"#
            )
        };
        let ok = layer(r#"{"dev.cosignproject.cosign/signature":"AAEC"}"#, 10);
        let layers = signature_layers(ok.as_bytes()).unwrap();
        assert_eq!(layers[0].signature, vec![0, 1, 2]);
        assert!(signature_layers(layer("{}", 10).as_bytes()).is_err());
        assert!(
            signature_layers(
                layer(r#"{"dev.cosignproject.cosign/signature":"!!"}"#, 10).as_bytes()
            )
            .is_err()
        );
        assert!(
            signature_layers(
                layer(r#"{"dev.cosignproject.cosign/signature":"AAEC"}"#, 1 << 20).as_bytes()
            )
            .is_err()
        );
        assert!(signature_layers(b"[]").is_err());
        // Other layers (an attestation, say) are not signatures.
        let other = r#"{"layers":[{"mediaType":"application/vnd.in-toto+json","digest":"x"}]}"#;
        assert!(signature_layers(other.as_bytes()).unwrap().is_empty());
    }
}
