//! Sigstore bundles stored as OCI 1.1 referrers: cosign's newer signature form.
//!
//! `cosign sign --new-bundle-format` stores a signature as an artifact that *refers* to the
//! image: a manifest whose `subject` is the signed digest and whose one layer is a Sigstore
//! bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`). Registries list such
//! manifests under the referrers API, or, where they lack it, in an index tagged
//! `sha256-<hex>` (the referrers tag schema). The bundle holds a DSSE envelope: an in-toto
//! statement whose subject is the image digest and whose predicate type is cosign's
//! signature (`https://sigstore.dev/cosign/sign/v1`), signed over DSSE's pre-authentication
//! encoding; and the verification material, a public key hint or the signing certificate.
//!
//! A bundle signature counts only when a trusted signer verifies it, the statement names
//! exactly the digest, and it is a signature rather than another attestation (a provenance
//! or SBOM statement about the image signs nothing). Transparency-log entries and
//! timestamps in the bundle are not checked (see [`crate::keyless`]). Written here for the
//! reason [`crate::cosign`] gives; pure, and fuzzed.

use base64::Engine as _;
use serde_json::Value;

use crate::cosign::{CosignError, MAX_PAYLOAD_BYTES};
use crate::keyless::{CertChain, Certified};
use crate::signers::{Rejected, Signers};
use crate::tlog::{LogEntry, TlogError};
use sha2::Digest as _;

/// The media types of Sigstore bundles start so (v0.1 and v0.2 carry `;version=`).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The predicate type of a cosign image signature.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The most referrers of one image looked at.
pub const MAX_REFERRERS: usize = 64;

/// A bundle layer that a referrer manifest holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleLayer {
    pub digest: String,
    pub size: u64,
}

/// The bundle layer of a referrer manifest about `subject`; `None` when the manifest is
/// another kind of artifact (an SBOM, say) or refers to another image.
pub fn bundle_layer(manifest: &[u8], subject: &str) -> Result<Option<BundleLayer>, CosignError> {
    let bad = |m: &str| CosignError::Manifest(m.to_owned());
    let doc: Value = serde_json::from_slice(manifest).map_err(|e| bad(&e.to_string()))?;
    let is_bundle = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|t| t.starts_with(BUNDLE_MEDIA_TYPE))
    };
    if !is_bundle(doc.get("artifactType")) && !is_bundle(doc.pointer("/config/mediaType")) {
        return Ok(None);
    }
    let refers_to = doc.pointer("/subject/digest").and_then(Value::as_str);
    if refers_to.map(str::to_ascii_lowercase) != Some(subject.to_ascii_lowercase()) {
        return Ok(None);
    }
    let layer = doc
        .get("layers")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|l| is_bundle(l.get("mediaType"))))
        .ok_or_else(|| bad("a Sigstore bundle artifact with no bundle layer"))?;
    let digest = layer
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the bundle layer has no `digest`"))?;
    crate::cosign::signature_tag(digest).map_err(|e| bad(&e.to_string()))?;
    let size = layer
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("the bundle layer has no `size`"))?;
    if size > MAX_PAYLOAD_BYTES {
        return Err(bad(&format!(
            "a bundle of {size} bytes (at most {MAX_PAYLOAD_BYTES})"
        )));
    }
    Ok(Some(BundleLayer {
        digest: digest.to_ascii_lowercase(),
        size,
    }))
}

/// The manifest digests a referrers index lists (at most [`MAX_REFERRERS`]).
pub fn referrer_digests(index: &[u8]) -> Result<Vec<String>, CosignError> {
    let bad = |m: &str| CosignError::Manifest(format!("the referrers index: {m}"));
    let doc: Value = serde_json::from_slice(index).map_err(|e| bad(&e.to_string()))?;
    let manifests = doc
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `manifests` list"))?;
    Ok(manifests
        .iter()
        .filter_map(|m| m.get("digest").and_then(Value::as_str))
        .filter(|d| crate::cosign::signature_tag(d).is_ok())
        .take(MAX_REFERRERS)
        .map(str::to_ascii_lowercase)
        .collect())
}

/// A Sigstore bundle's DSSE envelope and the certificate that came with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Vec<u8>>,
    pub certificate: Option<CertChain>,
    /// `verificationMaterial.tlogEntries`, each read or why not.
    pub log_entries: Vec<Result<LogEntry, TlogError>>,
}

/// Reads a Sigstore bundle (v0.1 to v0.3, JSON) holding a DSSE envelope.
pub fn parse(bytes: &[u8]) -> Result<Bundle, CosignError> {
    let bad = |m: &str| CosignError::Payload(format!("the Sigstore bundle: {m}"));
    let b64 = |v: Option<&Value>, what: &str| {
        let text = v
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("no `{what}`")))?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| bad(&format!("`{what}` is not base64: {e}")))
    };
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let media = doc.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if !media.starts_with(BUNDLE_MEDIA_TYPE) {
        return Err(bad(&format!("media type `{media}`")));
    }
    let Some(envelope) = doc.get("dsseEnvelope") else {
        return Err(bad(
            "no `dsseEnvelope` (a message signature signs a blob, not an image)",
        ));
    };
    let payload = b64(envelope.get("payload"), "dsseEnvelope.payload")?;
    let payload_type = envelope
        .get("payloadType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `dsseEnvelope.payloadType`"))?
        .to_owned();
    let signatures = envelope
        .get("signatures")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `dsseEnvelope.signatures`"))?
        .iter()
        .take(crate::cosign::MAX_SIGNATURES)
        .map(|s| b64(s.get("sig"), "dsseEnvelope.signatures[].sig"))
        .collect::<Result<Vec<_>, _>>()?;
    let material = doc.get("verificationMaterial");
    let certificate = if let Some(c) = material.and_then(|m| m.get("certificate")) {
        Some(CertChain {
            leaf: b64(c.get("rawBytes"), "certificate.rawBytes")?,
            intermediates: Vec::new(),
        })
    } else if let Some(chain) = material
        .and_then(|m| m.pointer("/x509CertificateChain/certificates"))
        .and_then(Value::as_array)
    {
        let mut certs = chain
            .iter()
            .take(16)
            .map(|c| {
                b64(
                    c.get("rawBytes"),
                    "x509CertificateChain.certificates[].rawBytes",
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if certs.is_empty() {
            return Err(bad("an empty `x509CertificateChain`"));
        }
        let leaf = certs.remove(0);
        Some(CertChain {
            leaf,
            intermediates: certs,
        })
    } else {
        None
    };
    let log_entries = material
        .and_then(|m| m.get("tlogEntries"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(16)
        .map(LogEntry::from_bundle_entry)
        .collect();
    Ok(Bundle {
        payload_type,
        payload,
        signatures,
        certificate,
        log_entries,
    })
}

/// DSSE's pre-authentication encoding: what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// What an in-toto statement is about: its predicate type and its subjects' sha256
/// digests (`sha256:<hex>`).
pub fn statement(payload: &[u8]) -> Result<(String, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let kind = doc.get("_type").and_then(Value::as_str).unwrap_or("");
    if !kind.starts_with("https://in-toto.io/Statement/") {
        return Err(format!("`_type` is `{kind}`, not an in-toto statement"));
    }
    let predicate = doc
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or("no `predicateType`")?;
    let subjects = doc
        .get("subject")
        .and_then(Value::as_array)
        .ok_or("no `subject` list")?
        .iter()
        .filter_map(|s| s.pointer("/digest/sha256").and_then(Value::as_str))
        .map(|h| format!("sha256:{}", h.to_ascii_lowercase()))
        .collect();
    Ok((predicate.to_owned(), subjects))
}

/// The trusted signers of `bundle` (at `now`, for certificates), when it is a cosign
/// signature of exactly `digest`.
pub fn check(
    bundle: &Bundle,
    digest: &str,
    trusted: &Signers,
    now: pki_types::UnixTime,
) -> Result<Vec<String>, Rejected> {
    let message = pae(&bundle.payload_type, &bundle.payload);
    let certified = bundle.certificate.clone().map(|chain| Certified {
        chain,
        entries: bundle.log_entries.clone(),
        // A DSSE log entry records the payload's hash.
        artifact: sha2::Sha256::digest(&bundle.payload).into(),
    });
    let mut last = Rejected::NoTrustedKey {
        keyless: Vec::new(),
    };
    let mut signers = None;
    for sig in &bundle.signatures {
        match trusted.signed_by(&message, sig, certified.as_ref(), now) {
            Ok(names) => {
                signers = Some(names);
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some(signers) = signers else {
        return Err(last);
    };
    let key = signers[0].clone();
    if bundle.payload_type != IN_TOTO {
        return Err(Rejected::NotASignature {
            key,
            reason: format!("payload type `{}`", bundle.payload_type),
        });
    }
    let (predicate, subjects) = statement(&bundle.payload).map_err(|reason| Rejected::Payload {
        key: key.clone(),
        reason,
    })?;
    if predicate != SIGN_PREDICATE {
        return Err(Rejected::NotASignature {
            key,
            reason: format!("a `{predicate}` statement"),
        });
    }
    let digest = digest.to_ascii_lowercase();
    if !subjects.contains(&digest) {
        return Err(Rejected::OtherDigest {
            key,
            named: subjects.join(", "),
            digest,
        });
    }
    Ok(signers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:d57e7dbb9e1111659f1073026359eda54d79b8f0747f33a25d0016dca80bc243";

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("application/vnd.in-toto+json", b"{}"),
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
        );
    }

    #[test]
    fn referrer_manifests_are_bundles_about_their_subject_or_not_ours() {
        let manifest = |artifact: &str, subject: &str| {
            format!(
                r#"{{"schemaVersion":2,"artifactType":"{artifact}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D}","size":2}},
                "layers":[{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","digest":"{D}","size":615}}],
                "subject":{{"digest":"{subject}"}}}}"#
            )
        };
        let b = "application/vnd.dev.sigstore.bundle.v0.3+json";
        assert_eq!(
            bundle_layer(manifest(b, D).as_bytes(), D).unwrap(),
            Some(BundleLayer {
                digest: D.into(),
                size: 615
            })
        );
        let other = D.replace("d57e", "0000");
        assert_eq!(
            bundle_layer(manifest(b, &other).as_bytes(), D).unwrap(),
            None
        );
        assert_eq!(
            bundle_layer(manifest("application/spdx+json", D).as_bytes(), D).unwrap(),
            None
        );
        assert!(bundle_layer(b"[", D).is_err());
        let index = format!(r#"{{"manifests":[{{"digest":"{D}"}},{{"digest":"md5:x"}}]}}"#);
        assert_eq!(
            referrer_digests(index.as_bytes()).unwrap(),
            vec![D.to_owned()]
        );
        assert!(referrer_digests(b"{}").is_err());
    }

    #[test]
    fn bundles_without_an_envelope_or_with_garbage_are_errors() {
        assert!(parse(b"{}").is_err());
        assert!(
            parse(br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#).is_err()
        );
        let env = |payload: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"publicKey":{{"hint":"x"}}}},
                "dsseEnvelope":{{"payload":"{payload}","payloadType":"application/vnd.in-toto+json","signatures":[{{"sig":"AAEC"}}]}}}}"#
            )
        };
        let b = parse(env("e30=").as_bytes()).unwrap();
        assert_eq!(
            (
                b.payload.as_slice(),
                b.signatures,
                b.certificate,
                b.log_entries
            ),
            (b"{}".as_slice(), vec![vec![0, 1, 2]], None, vec![])
        );
        assert!(parse(env("!!").as_bytes()).is_err());
        assert!(statement(b"{}").is_err());
        let s = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{}"}}}}],"predicateType":"{SIGN_PREDICATE}"}}"#,
            D.trim_start_matches("sha256:")
        );
        assert_eq!(
            statement(s.as_bytes()).unwrap(),
            (SIGN_PREDICATE.to_owned(), vec![D.to_owned()])
        );
    }
}
