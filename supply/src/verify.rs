//! Verifying images: the TrustPolicies' keys, the registry, and a cache of results by
//! digest.
//!
//! An image is verified only when a TrustPolicy registry prefix covers it (the longest
//! prefix decides, as in the projection): elsewhere there is no key to verify with, and the
//! image is simply not signed. The outcome is a [`Verification`] fact; every way of not
//! getting to "signed" keeps its reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lattice_schemas::crd::trust_policy::TrustPolicySpec;
use lattice_schemas::image::{ImageRef, Verification};
use sha2::{Digest as _, Sha256};

use crate::cosign;
use crate::keys::PublicKey;
use crate::registry::{Registry, RegistryError, RegistryOptions};

/// How many images are verified at once.
const CONCURRENCY: usize = 32;

/// The keys of one TrustPolicy registry prefix.
#[derive(Clone, Debug)]
pub struct TrustedPrefix {
    /// `host[/path]`, without a trailing `/`.
    pub prefix: String,
    pub keys: Vec<PublicKey>,
    /// Keys named but not usable here (unreadable, or keyless), with why.
    pub unusable: Vec<String>,
    /// Identifies the key set, so a cached result is not reused under other keys.
    fingerprint: String,
}

/// What the TrustPolicies of a world trust.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    prefixes: Vec<TrustedPrefix>,
}

impl Trust {
    /// The trust that `policies` declare.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a TrustPolicySpec>) -> Trust {
        let mut prefixes = Vec::new();
        for spec in policies {
            for r in &spec.registries {
                let mut keys = Vec::new();
                let mut unusable = Vec::new();
                let mut fingerprint = Sha256::new();
                for k in &r.keys {
                    match (&k.public_key, &k.keyless) {
                        (Some(pem), _) => match PublicKey::from_pem(&k.name, pem) {
                            Ok(key) => {
                                fingerprint.update(k.name.as_bytes());
                                fingerprint.update([0]);
                                fingerprint.update(pem.trim().as_bytes());
                                fingerprint.update([0]);
                                keys.push(key);
                            }
                            Err(e) => unusable.push(format!("key `{}`: {e}", k.name)),
                        },
                        (None, Some(_)) => unusable.push(format!(
                            "key `{}` is keyless (a certificate identity), which Lattice does \
                             not verify yet",
                            k.name
                        )),
                        (None, None) => unusable.push(format!(
                            "key `{}` has neither publicKey nor keyless",
                            k.name
                        )),
                    }
                }
                prefixes.push(TrustedPrefix {
                    prefix: r.prefix.trim_end_matches('/').to_owned(),
                    keys,
                    unusable,
                    fingerprint: crate::registry::sha256_of(&fingerprint.finalize()),
                });
            }
        }
        Trust { prefixes }
    }

    /// The prefix that governs `image` (the longest that covers it), if any.
    pub fn governing(&self, image: &ImageRef) -> Option<&TrustedPrefix> {
        let full = image.name();
        self.prefixes
            .iter()
            .filter(|p| full == p.prefix || full.starts_with(&format!("{}/", p.prefix)))
            .max_by_key(|p| p.prefix.len())
    }
}

/// Verifies images at their registries, remembering conclusive results by digest.
pub struct Verifier {
    registry: Registry,
    ttl: Duration,
    /// (digest, key set) → when verified, and the outcome.
    cache: Mutex<HashMap<(String, String), (Instant, Verification)>>,
}

impl Verifier {
    /// A verifier that reaches registries with `options` and trusts a result for `ttl`.
    pub fn new(options: &RegistryOptions, ttl: Duration) -> Verifier {
        Verifier {
            registry: Registry::new(options),
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies each of `images` (as workloads write them), keyed by the normalized
    /// reference, as the projection reads them. Images that no prefix governs are left out:
    /// there is nothing to verify them with.
    pub async fn verify_all(
        &self,
        images: impl IntoIterator<Item = String>,
        trust: &Trust,
    ) -> BTreeMap<String, Verification> {
        let wanted: BTreeSet<String> = images
            .into_iter()
            .filter_map(|i| ImageRef::parse(&i).ok())
            .filter(|i| trust.governing(i).is_some())
            .map(|i| i.to_string())
            .collect();
        futures_util::stream::iter(wanted)
            .map(|image| async move {
                let v = self.verify(&image, trust).await;
                (image, v)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }

    /// Verifies one image.
    pub async fn verify(&self, image: &str, trust: &Trust) -> Verification {
        let img = match ImageRef::parse(image) {
            Ok(i) => i,
            Err(e) => return Verification::failed("", e.to_string()),
        };
        let Some(prefix) = trust.governing(&img) else {
            return Verification::failed("", "no TrustPolicy registry covers this image");
        };
        let digest = match self.registry.resolve(&img).await {
            Ok(d) => d,
            Err(e) => return Verification::failed("", e.to_string()),
        };
        let key = (digest.clone(), prefix.fingerprint.clone());
        if let Some((at, v)) = self.cache.lock().expect("cache lock").get(&key)
            && at.elapsed() < self.ttl
        {
            return v.clone();
        }
        let outcome = self.check_signatures(&img, &digest, prefix).await;
        tracing::debug!(image, %digest, ?outcome, "verified");
        match outcome {
            Ok(v) => {
                // Conclusive (signed, or signatures that do not count): cached by digest.
                self.cache
                    .lock()
                    .expect("cache lock")
                    .insert(key, (Instant::now(), v.clone()));
                v
            }
            // The registry failed us: asked again next time.
            Err(e) => Verification::failed(digest, e.to_string()),
        }
    }

    /// Forgets every cached result (the TrustPolicies changed, say).
    pub fn forget(&self) {
        self.cache.lock().expect("cache lock").clear();
    }

    /// The cosign signatures of `digest` under `prefix`'s keys. `Err` only when the
    /// registry did not answer.
    async fn check_signatures(
        &self,
        img: &ImageRef,
        digest: &str,
        prefix: &TrustedPrefix,
    ) -> Result<Verification, RegistryError> {
        let tag = match cosign::signature_tag(digest) {
            Ok(t) => t,
            Err(e) => return Ok(Verification::failed(digest, e.to_string())),
        };
        let Some(manifest) = self.registry.manifest(img, &tag).await? else {
            return Ok(Verification::failed(
                digest,
                format!(
                    "no cosign signature: {}:{tag} is not in the registry",
                    img.name()
                ),
            ));
        };
        let layers = match cosign::signature_layers(&manifest) {
            Ok(l) if l.is_empty() => {
                return Ok(Verification::failed(
                    digest,
                    format!(
                        "no cosign signature: {}:{tag} holds no signature layer",
                        img.name()
                    ),
                ));
            }
            Ok(l) => l,
            Err(e) => return Ok(Verification::failed(digest, e.to_string())),
        };
        let mut signers = BTreeSet::new();
        let mut reasons = BTreeSet::new();
        for layer in &layers {
            let payload = match self.registry.payload(img, &layer.payload_digest).await {
                Ok(p) => p,
                Err(e @ RegistryError::Unreachable { .. }) => return Err(e),
                Err(e) => {
                    reasons.insert(e.to_string());
                    continue;
                }
            };
            match cosign::check(layer, &payload, digest, &prefix.keys) {
                Ok(names) => signers.extend(names),
                Err(r) => {
                    reasons.insert(r.to_string());
                }
            }
        }
        if signers.is_empty() {
            let mut why: Vec<String> = reasons.into_iter().collect();
            if prefix.keys.is_empty() {
                why.push(format!("no usable key for {}", prefix.prefix));
            }
            why.extend(prefix.unusable.iter().cloned());
            return Ok(Verification::failed(digest, why.join("; ")));
        }
        Ok(Verification {
            digest: digest.to_owned(),
            signers,
            error: String::new(),
        })
    }
}
